// Validation of a generation before it may become current, and of the names the admin
// configures. These rules are the store's invariants; they live here and only here.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/pki.hpp"
#include "store/model.hpp"

namespace certfs::store {

// `name` quoted for an error message or a log: in single quotes, with every byte outside
// printable ASCII (and the quote and backslash) written \xNN, so a control character or an
// escape sequence never reaches a terminal; past 64 bytes it is cut, and its length given.
std::string quote_name(std::string_view name);
// `name` as it is when it is printable ASCII of at most 64 bytes, else quote_name(name): for
// messages about a name the user gave that matched nothing.
std::string shown_name(std::string_view name);

// A domain name is a directory name and a host name: ASCII lower-case [a-z0-9.-], labels of
// 1..63 characters not starting or ending with '-', no leading or trailing '.', at most 253
// characters. Unicode is refused (an internationalized name is written in its xn-- form), so a
// homograph cannot pass for another name. Invalid with the rule that was broken. Issuer and
// bundle names follow the same rules; `what` names the kind in the message.

Status check_domain_name(std::string_view name, std::string_view what = "domain name");
// The rule the mount serves by: what every version of certfs accepted as a domain name
// (ASCII [a-z0-9.-], not starting with '.' or '-', no "..", at most 253 characters), so that a
// store made by an older version keeps its names, and a row written by hand with '/', "..",
// a control character, upper case or Unicode is not served.
Status check_served_name(std::string_view name);
// A DNS SAN: lower-case host name labels of [a-z0-9-] (1..63 each, not starting or ending
// with '-'), an optional leading "*." wildcard, at most 253 characters. Returns it
// lower-cased.
Result<std::string> normalize_dns_name(std::string_view name);

// True when the certificate name `san` (possibly "*.x") covers the configured name.
// A wildcard covers exactly one label: "*.example.com" covers "a.example.com", not
// "example.com" or "a.b.example.com". A configured wildcard needs the same wildcard.
bool san_covers(std::string_view san, std::string_view name);

// A file mode as the admin writes it: 1 to 4 octal digits ("0640", "600"). Invalid otherwise.
// normalize_config then refuses anything above 0777.
Result<std::uint32_t> parse_mode(std::string_view text);

// Checks a domain's configuration and returns it in canonical form: a valid name, DNS names
// lower-cased and de-duplicated, IP addresses canonical, at least one name, mode within 0777,
// a valid bundle name, one-line non-empty hook commands.
Result<DomainConfig> normalize_config(DomainConfig config);

// A generation that passed every check, in canonical form.
struct ValidGeneration {
    std::string key_pem;
    std::string cert_pem;
    std::string chain_pem;
    pki::CertInfo leaf;
};

// Parses and checks a generation against the names it must cover at time `now`:
//   1. every file parses (messages name the file: "privkey: ...", "cert: ...", "chain: ..."),
//      and the key is of a type certfs serves (key_type_of);
//   2. the key matches the leaf's public key;
//   3. the chain links the leaf to its issuer, signatures checked;
//   4. now is within the leaf's validity period;
//   5. the leaf's SANs cover every configured DNS name and IP address.
// Invalid, naming the failed check, on the first failure.
Result<ValidGeneration> validate_generation(const GenerationInput& input, const pki::Names& required, TimePoint now);

} // namespace certfs::store
