// A generation as the store validates it before it may become current: privkey, cert (with
// or without the chain) and chain, cut at "\n====\n", then the names it must cover, one per
// line (an IP address or a DNS name). Checked at a fixed time, 2030-01-01 (the seeds are valid 2026-2126).
#include "core/pki.hpp"
#include "fuzz/support.hpp"
#include "store/validate.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace certfs;
    const auto parts = fuzz::fields(fuzz::as_text(data, size), 4);
    store::GenerationInput input;
    input.key_pem = parts[0];
    input.cert_pem = parts[1];
    input.chain_pem = parts[2];
    pki::Names required;
    std::string_view names = parts[3];
    while (!names.empty()) {
        auto end = names.find('\n');
        std::string_view line = names.substr(0, end);
        names.remove_prefix(end == std::string_view::npos ? names.size() : end + 1);
        if (auto ip = pki::canonical_ip(line); ip.ok()) {
            required.ip.push_back(*ip);
        } else if (auto dns = store::normalize_dns_name(line); dns.ok()) {
            required.dns.push_back(*dns);
        }
    }
    auto valid = store::validate_generation(input, required, from_unix(1893456000));
    if (valid.ok()) {
        // What passed is canonical: it passes again, unchanged.
        store::GenerationInput again{valid->key_pem, valid->cert_pem, valid->chain_pem, input.reason};
        auto second = store::validate_generation(again, required, from_unix(1893456000));
        fuzz::require(second.ok() && second->cert_pem == valid->cert_pem && second->chain_pem == valid->chain_pem &&
                          second->key_pem == valid->key_pem,
                      "a validated generation validates again unchanged");
    }
    return 0;
}
