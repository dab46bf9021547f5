// The small parsers of what admins type and settings hold: durations, file modes, domain and
// DNS names, IP addresses, hook and helper command lines, certificate subjects, key types,
// base64url and RFC 3339 times. Each input goes through all of them, and what one accepts must
// come back unchanged through its canonical form.
#include "core/clock.hpp"
#include "core/pki.hpp"
#include "core/process.hpp"
#include "fuzz/support.hpp"
#include "store/validate.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace certfs;
    const std::string_view text = fuzz::as_text(data, size);

    if (auto d = parse_duration(text); d.ok()) {
        auto again = parse_duration(format_duration(*d));
        fuzz::require(again.ok() && *again == *d, "a duration formats back to the same value");
    }
    if (auto mode = store::parse_mode(text); mode.ok()) {
        fuzz::require(*mode <= 07777, "a mode is at most four octal digits");
    }
    if (store::check_domain_name(text).ok()) {
        fuzz::require(text.size() <= 253, "a domain name is at most 253 characters");
    }
    if (auto dns = store::normalize_dns_name(text); dns.ok()) {
        auto again = store::normalize_dns_name(*dns);
        fuzz::require(again.ok() && *again == *dns, "a normalized DNS name is its own normal form");
    }
    if (auto ip = pki::canonical_ip(text); ip.ok()) {
        auto again = pki::canonical_ip(*ip);
        fuzz::require(again.ok() && *again == *ip, "a canonical IP address is its own canonical form");
    }
    if (auto words = split_command(text); words.ok()) {
        fuzz::require(!words->empty(), "a command has a program");
    }
    (void)pki::parse_subject(text);
    if (auto type = pki::parse_key_type(text); type.ok()) {
        fuzz::require(pki::key_type_name(*type) == text, "a key type is named as it was written");
    }
    if (auto bytes = pki::base64url_decode(text); bytes.ok()) {
        auto again = pki::base64url_decode(pki::base64url(*bytes));
        fuzz::require(again.ok() && *again == *bytes, "base64url decodes what it encodes");
    }
    if (auto t = parse_rfc3339(text); t.ok()) {
        (void)format_rfc3339(*t);
    }
    return 0;
}
