// Raw DER, so that mutations reach OpenSSL's decoders and our reading of what they decode
// (serials, names, validity, subjectAltNames, basicConstraints) instead of breaking the
// base64. The first byte chooses the PEM label the rest is wrapped in.
#include <array>

#include "fuzz/support.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size)
{
    static constexpr std::array<const char*, 5> k_labels = {"CERTIFICATE", "PRIVATE KEY", "CERTIFICATE REQUEST",
                                                            "EC PRIVATE KEY", "RSA PRIVATE KEY"};
    if (size == 0) {
        return 0;
    }
    const char* label = k_labels[data[0] % k_labels.size()];
    certfs::fuzz::parse_everything(certfs::fuzz::pem_of(label, certfs::fuzz::as_text(data + 1, size - 1)));
    return 0;
}
