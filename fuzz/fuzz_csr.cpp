// CSRs: parse_csr (which checks the CSR's own signature), its public key, its DER and PEM.
#include "core/pki.hpp"
#include "fuzz/support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    if (auto req = certfs::pki::parse_csr(certfs::fuzz::as_text(data, size)); req.ok()) {
        certfs::fuzz::exercise_csr(**req);
    }
    return 0;
}
