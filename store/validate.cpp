#include "store/validate.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <optional>
#include <string>

namespace certfs::store {

namespace {

bool is_label_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

std::string lower(std::string_view s)
{
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

} // namespace

std::string quote_name(std::string_view name)
{
    constexpr std::size_t k_shown = 64;
    std::string out = "'";
    for (char c : name.substr(0, k_shown)) {
        auto byte = static_cast<unsigned char>(c);
        if (byte < 0x20 || byte >= 0x7f || c == '\\' || c == '\'') {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", byte);
            out += hex;
        } else {
            out += c;
        }
    }
    out += "'";
    if (name.size() > k_shown) {
        out.insert(out.size() - 1, "...");
        out += " (" + std::to_string(name.size()) + " characters)";
    }
    return out;
}

std::string shown_name(std::string_view name)
{
    const bool plain = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
                           auto byte = static_cast<unsigned char>(c);
                           return byte >= 0x20 && byte < 0x7f;
                       });
    return plain ? std::string(name) : quote_name(name);
}

namespace {

// Why one byte may not be in a name, or nothing if it may.
std::optional<std::string_view> bad_byte(char c)
{
    auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x80) {
        return "not ASCII: write an internationalized name in its IDNA form ('xn--...')";
    }
    if (byte < 0x20 || byte == 0x7f) {
        return "contains a control character";
    }
    return std::nullopt;
}

// Why the labels of `name` (between dots, none empty) are not DNS labels, or nothing.
std::optional<std::string_view> bad_labels(std::string_view name)
{
    std::size_t start = 0;
    while (start <= name.size()) {
        std::size_t dot = name.find('.', start);
        std::string_view label = name.substr(start, dot == std::string_view::npos ? name.npos : dot - start);
        if (label.empty()) {
            return "empty label";
        }
        if (label.size() > 63) {
            return "label longer than 63 characters";
        }
        if (label.front() == '-' || label.back() == '-') {
            return "a label starts or ends with '-'";
        }
        if (dot == std::string_view::npos) {
            break;
        }
        start = dot + 1;
    }
    return std::nullopt;
}

} // namespace

Status check_domain_name(std::string_view name, std::string_view what)
{
    auto bad = [&](std::string_view why) {
        return Status::Invalid("invalid " + std::string(what) + " " + quote_name(name) + ": " + std::string(why));
    };
    if (name.empty()) {
        return bad("empty");
    }
    if (name.size() > 253) {
        return bad("longer than 253 characters");
    }
    for (char c : name) {
        if (auto why = bad_byte(c)) {
            return bad(*why);
        }
    }
    for (char c : name) {
        if (!is_label_char(c) && c != '.') {
            return bad("only lower-case letters, digits, '.' and '-' are allowed");
        }
    }
    if (name.front() == '.') {
        return bad("starts with '.'");
    }
    if (name.front() == '-') {
        return bad("starts with '-'");
    }
    if (name.find("..") != std::string_view::npos) {
        return bad("contains '..'");
    }
    if (name.back() == '.') {
        return bad("ends with '.'");
    }
    if (auto why = bad_labels(name)) {
        return bad(*why);
    }
    return Status::Ok();
}

Status check_served_name(std::string_view name)
{
    auto bad = [&](std::string_view why) {
        return Status::Invalid("invalid domain name " + quote_name(name) + ": " + std::string(why));
    };
    if (name.empty() || name.size() > 253) {
        return bad("empty or longer than 253 characters");
    }
    if (!std::all_of(name.begin(), name.end(), [](char c) { return is_label_char(c) || c == '.'; })) {
        return bad("only lower-case letters, digits, '.' and '-' are allowed");
    }
    if (name.front() == '.' || name.front() == '-' || name.find("..") != std::string_view::npos) {
        return bad("starts with '.' or '-', or contains '..'");
    }
    return Status::Ok();
}

Result<std::string> normalize_dns_name(std::string_view text)
{
    auto bad = [&](std::string_view why) {
        return Status::Invalid("invalid DNS name " + quote_name(text) + ": " + std::string(why));
    };
    for (char c : text) {
        if (auto why = bad_byte(c)) {
            return bad(*why);
        }
    }
    std::string name = lower(text);
    if (name.empty()) {
        return bad("empty");
    }
    if (name.size() > 253) {
        return bad("longer than 253 characters");
    }
    std::string_view rest = name;
    if (rest.starts_with("*.")) {
        rest.remove_prefix(2);
    }
    if (rest.ends_with('.')) {
        return bad("ends with '.'");
    }
    for (char c : rest) {
        if (!is_label_char(c) && c != '.') {
            return bad(c == '*' ? "a wildcard is only allowed as the whole first label ('*.example.com')"
                                : "labels hold only letters, digits and '-'");
        }
    }
    if (auto why = bad_labels(rest)) {
        return bad(*why);
    }
    return name;
}

bool san_covers(std::string_view san, std::string_view name)
{
    if (san == name) {
        return true;
    }
    if (!san.starts_with("*.") || name.starts_with("*.")) {
        return false;
    }
    std::size_t dot = name.find('.');
    return dot != std::string_view::npos && dot > 0 && name.substr(dot) == san.substr(1);
}

Result<ValidGeneration> validate_generation(const GenerationInput& input, const pki::Names& required, TimePoint now)
{
    auto failed = [](std::string_view check, const Status& s) {
        return Status::Invalid("validation failed (" + std::string(check) + "): " + s.message());
    };
    auto key = pki::parse_private_key(input.key_pem);
    if (!key.ok()) {
        return failed("privkey", key.status());
    }
    if (auto type = pki::key_type_of(**key); !type.ok()) {
        return failed("privkey", type.status());
    }
    auto certs = pki::parse_certs(input.cert_pem);
    if (!certs.ok()) {
        return failed("cert", certs.status());
    }
    std::vector<Cert> chain;
    for (std::size_t i = 1; i < certs->size(); ++i) {
        chain.push_back(std::move((*certs)[i]));
    }
    if (input.chain_pem.find_first_not_of(" \t\r\n") != std::string::npos) {
        auto more = pki::parse_certs(input.chain_pem);
        if (!more.ok()) {
            return failed("chain", more.status());
        }
        for (auto& c : *more) {
            chain.push_back(std::move(c));
        }
    }
    const X509& leaf = *(*certs)[0];
    auto info = pki::cert_info(leaf);
    if (!info.ok()) {
        return failed("cert", info.status());
    }
    if (info->is_ca) {
        return Status::Invalid("validation failed (leaf): the first certificate is a CA certificate (basicConstraints "
                               "CA:TRUE), not a server's: give the certificate it issued, then its chain");
    }
    if (!pki::key_matches(leaf, **key)) {
        return Status::Invalid("validation failed (key match): the private key does not match the "
                               "certificate's public key");
    }
    if (Status s = pki::verify_chain(leaf, chain); !s.ok()) {
        return failed("chain", s);
    }
    if (now < info->not_before) {
        return Status::Invalid("validation failed (validity): the certificate is not valid before " +
                               format_rfc3339(info->not_before));
    }
    if (now >= info->not_after) {
        return Status::Invalid("validation failed (validity): the certificate expired at " +
                               format_rfc3339(info->not_after));
    }
    for (const auto& name : required.dns) {
        bool covered = std::any_of(info->dns_names.begin(), info->dns_names.end(),
                                   [&](const std::string& san) { return san_covers(san, name); });
        if (!covered) {
            return Status::Invalid("validation failed (names): the certificate does not cover DNS name " + name);
        }
    }
    for (const auto& ip : required.ip) {
        if (std::find(info->ip_addresses.begin(), info->ip_addresses.end(), ip) == info->ip_addresses.end()) {
            return Status::Invalid("validation failed (names): the certificate does not cover IP address " + ip);
        }
    }
    ASSIGN_OR_RETURN(std::string key_pem, pki::private_key_pem(**key));
    return ValidGeneration{std::move(key_pem), pki::cert_pem(leaf), pki::certs_pem(chain), std::move(*info)};
}

namespace {

} // namespace

Result<std::uint32_t> parse_mode(std::string_view text)
{
    if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string_view::npos) {
        return Status::Invalid("invalid mode " + quote_name(text) + ": give octal permission bits such as 0640");
    }
    std::uint32_t mode = 0;
    for (char c : text) {
        mode = mode * 8 + static_cast<std::uint32_t>(c - '0');
    }
    return mode;
}

Result<DomainConfig> normalize_config(DomainConfig config)
{
    TRY(check_domain_name(config.name));
    std::vector<std::string> dns;
    for (const auto& name : config.dns_names) {
        ASSIGN_OR_RETURN(std::string n, normalize_dns_name(name));
        if (std::find(dns.begin(), dns.end(), n) == dns.end()) {
            dns.push_back(std::move(n));
        }
    }
    std::vector<std::string> ips;
    for (const auto& ip : config.ip_addresses) {
        ASSIGN_OR_RETURN(std::string canonical, pki::canonical_ip(ip));
        if (std::find(ips.begin(), ips.end(), canonical) == ips.end()) {
            ips.push_back(std::move(canonical));
        }
    }
    if (dns.empty() && ips.empty()) {
        return Status::Invalid("domain " + config.name + ": no DNS name or IP address to certify");
    }
    config.dns_names = std::move(dns);
    config.ip_addresses = std::move(ips);
    if (config.mode > 0777) {
        char octal[16];
        std::snprintf(octal, sizeof octal, "%04o", config.mode);
        return Status::Invalid(std::string("invalid mode ") + octal + ": only permission bits (0 to 0777) are allowed");
    }
    if (config.renew_before && config.renew_before->count() <= 0) {
        return Status::Invalid("renew-before must be greater than zero");
    }
    if (config.bundle) {
        TRY(check_domain_name(*config.bundle, "bundle name"));
    }
    for (const auto& hook : config.deploy_hooks) {
        if (hook.find_first_not_of(" \t") == std::string::npos) {
            return Status::Invalid("a deploy hook command is empty");
        }
        if (hook.find_first_of("\n\r") != std::string::npos) {
            return Status::Invalid("a deploy hook command must be one line");
        }
    }
    return config;
}

} // namespace certfs::store
