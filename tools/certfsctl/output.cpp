#include "tools/certfsctl/output.hpp"

#include <grp.h>
#include <pwd.h>

#include <cstdio>
#include <iostream>

#include "core/pki.hpp"
#include "renew/renewer.hpp"
#include "tools/certfsctl/commands.hpp"

namespace certfs::ctl {

std::string terminal_safe(std::string_view text)
{
    static constexpr char k_hex[] = "0123456789abcdef";
    std::string out;
    auto escape = [&](unsigned char b) { out += {'\\', 'x', k_hex[b >> 4], k_hex[b & 0xf]}; };
    for (std::size_t i = 0; i < text.size();) {
        const auto b = static_cast<unsigned char>(text[i]);
        if (b < 0x80) {
            if (b < 0x20 || b == 0x7f) {
                escape(b);
            } else {
                out += static_cast<char>(b);
            }
            ++i;
            continue;
        }
        // A UTF-8 sequence: its length from the lead byte, each continuation byte 10xxxxxx.
        const std::size_t length = b >= 0xc2 && b <= 0xdf   ? 2
                                   : b >= 0xe0 && b <= 0xef ? 3
                                   : b >= 0xf0 && b <= 0xf4 ? 4
                                                            : 0;
        bool whole = length != 0 && i + length <= text.size();
        for (std::size_t k = 1; whole && k < length; ++k) {
            whole = (static_cast<unsigned char>(text[i + k]) & 0xc0) == 0x80;
        }
        // U+0080..U+009F, the C1 controls (CSI among them), are written out like C0.
        const bool c1 = whole && b == 0xc2 && static_cast<unsigned char>(text[i + 1]) <= 0x9f;
        if (!whole || c1) {
            escape(b);
            ++i;
            continue;
        }
        out.append(text.substr(i, length));
        i += length;
    }
    return out;
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& raw_rows)
{
    std::vector<std::vector<std::string>> rows;
    for (const auto& raw : raw_rows) {
        auto& row = rows.emplace_back();
        for (const auto& cell : raw) {
            row.push_back(terminal_safe(cell));
        }
    }
    std::vector<std::size_t> width(header.size());
    for (std::size_t c = 0; c < header.size(); ++c) {
        width[c] = header[c].size();
        for (const auto& row : rows) {
            width[c] = std::max(width[c], row[c].size());
        }
    }
    auto print_row = [&](const std::vector<std::string>& row) {
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c) {
            line += row[c];
            if (c + 1 < row.size()) {
                line += std::string(width[c] - row[c].size() + 2, ' ');
            }
        }
        line.erase(line.find_last_not_of(' ') + 1);
        std::cout << line << '\n';
    };
    print_row(header);
    for (const auto& row : rows) {
        print_row(row);
    }
}

std::string time_or_dash(const std::optional<TimePoint>& t) { return t ? format_rfc3339(*t) : "-"; }

nlohmann::json time_or_null(const std::optional<TimePoint>& t)
{
    return t ? nlohmann::json(format_rfc3339(*t)) : nlohmann::json(nullptr);
}

std::string user_name(std::uint32_t uid)
{
    passwd pw{};
    passwd* found = nullptr;
    char buf[4096];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr) {
        return found->pw_name;
    }
    return std::to_string(uid);
}

std::string group_name(std::uint32_t gid)
{
    group gr{};
    group* found = nullptr;
    char buf[4096];
    if (getgrgid_r(gid, &gr, buf, sizeof buf, &found) == 0 && found != nullptr) {
        return found->gr_name;
    }
    return std::to_string(gid);
}

std::string mode_text(std::uint32_t mode)
{
    char buf[8];
    std::snprintf(buf, sizeof buf, "%04o", mode);
    return buf;
}

nlohmann::json domain_json(const store::Domain& d)
{
    nlohmann::json sans = d.dns_names;
    for (const auto& ip : d.ip_addresses) {
        sans.push_back(ip);
    }
    return {
        {"name", d.name},
        {"generation", d.current_gen ? nlohmann::json(*d.current_gen) : nlohmann::json(nullptr)},
        {"state", store::state_name(renew::shown_state(d, std::chrono::system_clock::now()))},
        {"not_after", time_or_null(d.current_not_after)},
        {"renew_at", time_or_null(renew::renew_at(d))},
        {"issuer", d.issuer ? nlohmann::json(*d.issuer) : nlohmann::json(nullptr)},
        {"sans", sans},
        {"dns_names", d.dns_names},
        {"ip_addresses", d.ip_addresses},
        {"last_error", d.last_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.last_error)},
        {"hook_error", d.hook_error.empty() ? nlohmann::json(nullptr) : nlohmann::json(d.hook_error)},
        {"due_at", time_or_null(renew::due_at(d))},
        {"next_attempt", time_or_null(d.next_attempt)},
        // The time picked in the CA's suggested renewal window (ACME ARI) for this certificate.
        {"ari_at", time_or_null(d.ari_gen && d.ari_gen == d.current_gen ? d.ari_at : std::nullopt)},
        {"key_type", pki::key_type_name(d.key_type)},
        {"reuse_key", d.reuse_key},
        {"renew_before", d.renew_before ? nlohmann::json(format_duration(*d.renew_before)) : nlohmann::json(nullptr)},
        {"owner", user_name(d.owner_uid)},
        {"group", group_name(d.group_gid)},
        {"mode", mode_text(d.mode)},
        {"bundle", d.bundle ? nlohmann::json(*d.bundle) : nlohmann::json(nullptr)},
        {"deploy_hooks", d.deploy_hooks},
    };
}

nlohmann::json generation_json(const store::Generation& g)
{
    return {
        {"generation", g.gen},
        {"serial", g.serial_hex},
        {"issuer", g.issuer_dn},
        {"not_before", format_rfc3339(g.not_before)},
        {"not_after", format_rfc3339(g.not_after)},
        {"created_at", format_rfc3339(g.created_at)},
        {"reason", store::reason_name(g.reason)},
        {"current", g.current},
    };
}

nlohmann::json issuer_json(const store::Issuer& i)
{
    nlohmann::json j = {
        {"name", i.name},
        {"kind", i.kind},
        {"domains", i.domains},
        {"created_at", format_rfc3339(i.created_at)},
        {"settings", nlohmann::json::parse(i.config_json, nullptr, false)},
    };
    if (auto cert = pki::parse_cert(i.cert_pem); cert.ok()) {
        if (auto info = pki::cert_info(**cert); info.ok()) {
            j["subject"] = info->subject;
            j["not_after"] = format_rfc3339(info->not_after);
        }
    }
    return j;
}

int fail(const Status& status)
{
    std::cerr << "certfsctl: " << terminal_safe(status.message()) << '\n';
    return k_exit_failure;
}

std::string join(const std::vector<std::string>& items, const char* sep)
{
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : sep) + item;
    }
    return out.empty() ? "-" : out;
}

// Bytes that are not UTF-8 (a name or an error written into the store by hand) become U+FFFD
// rather than an exception.
void print_json(const nlohmann::json& j)
{
    std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

// What --now means, said where it takes effect.
std::string moved_now_note(const std::string& domain, std::int64_t gen)
{
    return domain + ": every reader moves to generation " + std::to_string(gen) +
           " at once (--now); one reading its key and certificate at that moment may pair them wrongly once";
}

} // namespace certfs::ctl
