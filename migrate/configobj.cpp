#include "migrate/configobj.hpp"

#include <cctype>

namespace certfs::migrate {

namespace {

std::string_view trim(std::string_view s)
{
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())) != 0) {
        s.remove_prefix(1);
    }
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())) != 0) {
        s.remove_suffix(1);
    }
    return s;
}

bool blank_or_comment(std::string_view rest)
{
    rest = trim(rest);
    return rest.empty() || rest.front() == '#';
}

// A section name or key, trimmed, without the quotes around it if it has them.
std::string unquoted(std::string_view text)
{
    text = trim(text);
    if (text.size() >= 2 && (text.front() == '"' || text.front() == '\'') && text.back() == text.front()) {
        text = text.substr(1, text.size() - 2);
    }
    return std::string(text);
}

class Parser {
public:
    Parser(std::string_view text, std::string_view file) : m_file(file)
    {
        std::size_t start = 0;
        while (start <= text.size()) {
            const std::size_t end = text.find('\n', start);
            std::string_view line = text.substr(start, end == std::string_view::npos ? text.npos : end - start);
            if (!line.empty() && line.back() == '\r') {
                line.remove_suffix(1);
            }
            m_lines.push_back(line);
            if (end == std::string_view::npos) {
                break;
            }
            start = end + 1;
        }
    }

    Result<ConfigSection> parse()
    {
        ConfigSection root;
        // The open sections, outermost first: [0] is the root.
        std::vector<ConfigSection*> open{&root};
        for (m_at = 0; m_at < m_lines.size(); ++m_at) {
            const std::string_view line = trim(m_lines[m_at]);
            if (line.empty() || line.front() == '#') {
                continue;
            }
            if (line.front() == '[') {
                TRY(header(line, open));
                continue;
            }
            TRY(assignment(line, *open.back()));
        }
        return root;
    }

private:
    Status error(const std::string& what) const
    {
        return Status::Invalid(std::string(m_file) + ":" + std::to_string(m_at + 1) + ": " + what);
    }

    Status header(std::string_view line, std::vector<ConfigSection*>& open)
    {
        std::size_t depth = 0;
        while (depth < line.size() && line[depth] == '[') {
            ++depth;
        }
        std::string_view rest = line.substr(depth);
        const std::size_t close = rest.find(']');
        if (close == std::string_view::npos) {
            return error("a section header without ']'");
        }
        std::size_t closing = 0;
        while (close + closing < rest.size() && rest[close + closing] == ']') {
            ++closing;
        }
        if (closing != depth) {
            return error("a section header opens with " + std::to_string(depth) + " '[' and closes with " +
                         std::to_string(closing) + " ']'");
        }
        if (!blank_or_comment(rest.substr(close + closing))) {
            return error("text after a section header");
        }
        const std::string name = unquoted(rest.substr(0, close));
        if (name.empty()) {
            return error("a section without a name");
        }
        if (depth > open.size()) {
            return error("section '" + name + "' is nested " + std::to_string(depth) +
                         " deep under a section that is not");
        }
        open.resize(depth);
        auto [it, added] = open.back()->sections.try_emplace(name);
        if (!added) {
            return error("section '" + name + "' appears twice");
        }
        open.push_back(&it->second);
        return Status::Ok();
    }

    Status assignment(std::string_view line, ConfigSection& section)
    {
        const std::size_t eq = line.find('=');
        if (eq == std::string_view::npos) {
            return error("expected 'key = value'");
        }
        const std::string key = unquoted(line.substr(0, eq));
        if (key.empty()) {
            return error("a value without a key");
        }
        ConfigValue value;
        value.line = static_cast<int>(m_at + 1);
        TRY(parse_value(trim(line.substr(eq + 1)), value));
        if (!section.values.emplace(key, std::move(value)).second) {
            return error("'" + key + "' is set twice");
        }
        return Status::Ok();
    }

    Status parse_value(std::string_view rest, ConfigValue& value)
    {
        if (rest.starts_with("\"\"\"") || rest.starts_with("'''")) {
            return triple_quoted(rest, value);
        }
        while (true) {
            while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.front())) != 0) {
                rest.remove_prefix(1);
            }
            if (rest.empty() || rest.front() == '#') {
                break;
            }
            if (rest.front() == '"' || rest.front() == '\'') {
                const std::size_t close = rest.find(rest.front(), 1);
                if (close == std::string_view::npos) {
                    return error("a quoted value without its closing " + std::string(1, rest.front()));
                }
                value.items.emplace_back(rest.substr(1, close - 1));
                rest.remove_prefix(close + 1);
            } else {
                const std::size_t end = rest.find_first_of(",#");
                value.items.emplace_back(trim(rest.substr(0, end)));
                rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
            }
            rest = trim(rest);
            if (rest.empty() || rest.front() == '#') {
                break;
            }
            if (rest.front() != ',') {
                return error("text after a quoted value (a list needs commas)");
            }
            value.list = true;
            rest.remove_prefix(1);
        }
        if (value.items.empty() && !value.list) {
            value.items.emplace_back(); // key =
        }
        return Status::Ok();
    }

    Status triple_quoted(std::string_view rest, ConfigValue& value)
    {
        const std::string_view quotes = rest.substr(0, 3);
        rest.remove_prefix(3);
        std::string text;
        const std::size_t first = m_at;
        while (true) {
            const std::size_t close = rest.find(quotes);
            if (close != std::string_view::npos) {
                text += rest.substr(0, close);
                if (!blank_or_comment(rest.substr(close + 3))) {
                    return error("text after a triple-quoted value");
                }
                value.items.push_back(std::move(text));
                return Status::Ok();
            }
            text += rest;
            text += '\n';
            if (++m_at == m_lines.size()) {
                m_at = first;
                return error("a triple-quoted value that never ends");
            }
            rest = m_lines[m_at];
        }
    }

    std::string_view m_file;
    std::vector<std::string_view> m_lines;
    std::size_t m_at = 0;
};

} // namespace

std::string ConfigValue::text() const
{
    std::string out;
    for (std::size_t i = 0; i < items.size(); ++i) {
        out += (i == 0 ? "" : ", ") + items[i];
    }
    return out;
}

const ConfigValue* ConfigSection::find(std::string_view key) const
{
    auto it = values.find(std::string(key));
    return it == values.end() ? nullptr : &it->second;
}

std::string ConfigSection::get(std::string_view key, std::string_view fallback) const
{
    const ConfigValue* value = find(key);
    return value != nullptr ? value->text() : std::string(fallback);
}

const ConfigSection* ConfigSection::section(std::string_view name) const
{
    auto it = sections.find(std::string(name));
    return it == sections.end() ? nullptr : &it->second;
}

Result<ConfigSection> parse_configobj(std::string_view text, std::string_view file)
{
    return Parser(text, file).parse();
}

} // namespace certfs::migrate
