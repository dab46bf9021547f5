// What a certmonger CA helper prints: certificate listings (SUBMIT, FETCH-ROOTS), the
// "SECONDS\nCOOKIE" of exit status 5, and the issuer's stored settings.
#include "core/pki.hpp"
#include "fuzz/support.hpp"
#include "renew/helper.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    using namespace certfs;
    const std::string_view text = fuzz::as_text(data, size);
    if (auto certs = renew::parse_helper_certs(text); certs.ok()) {
        for (const auto& cert : *certs) {
            fuzz::require(pki::parse_cert(cert.pem).ok(), "a listed certificate's canonical PEM parses");
        }
    }
    if (auto wait = renew::parse_helper_wait(text); wait.ok()) {
        fuzz::require(wait->delay >= renew::k_helper_min_delay && wait->delay <= renew::k_helper_max_delay,
                      "a helper's delay is kept within bounds");
    }
    (void)renew::parse_helper_config(std::string(text));
    return 0;
}
