// A reader of the INI dialect of Python's configobj, which certbot writes its renewal
// configuration in (renewal/<name>.conf):
//
//   # a comment                      a whole-line comment, also after a value: key = v  # why
//   key = value                      a value: the rest of the line, trimmed
//   key = "quoted, # kept"           quoted with " or ': commas and # are kept
//   key = a, b,                      an unquoted comma makes a list (a trailing one too)
//   key = """one line"""             triple quotes, on one line or across several
//   [section]  [[subsection]]        nesting by the number of brackets, one level at a time
//
// Errors are Invalid and name the file and line. Nothing is interpolated or unescaped.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.hpp"

namespace certfs::migrate {

struct ConfigValue {
    std::vector<std::string> items; // one for a plain value
    bool list = false;              // written with a comma
    int line = 0;

    // The value as one string: a list's items joined by ", ".
    std::string text() const;
};

struct ConfigSection {
    std::map<std::string, ConfigValue> values;
    std::map<std::string, ConfigSection> sections;

    // The value of `key`, or nullptr.
    const ConfigValue* find(std::string_view key) const;
    // The text of `key`, or `fallback` when it is not there.
    std::string get(std::string_view key, std::string_view fallback = "") const;
    // The subsection `name`, or nullptr.
    const ConfigSection* section(std::string_view name) const;
};

// `file` names the text in error messages ("renewal/example.com.conf:7: ...").
Result<ConfigSection> parse_configobj(std::string_view text, std::string_view file);

} // namespace certfs::migrate
