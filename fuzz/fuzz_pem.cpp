// PEM text as certfsctl import and the issuers hand it to core/pki: private keys, certificate
// chains, CSRs, and whatever else a file may hold.
#include "fuzz/support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    certfs::fuzz::parse_everything(certfs::fuzz::as_text(data, size));
    return 0;
}
