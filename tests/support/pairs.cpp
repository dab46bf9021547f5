#include "tests/support/pairs.hpp"

#include "core/pki.hpp"

namespace certfs::test {

std::optional<std::string> matching_serial(const std::string& key_pem, const std::string& cert_pem)
{
    auto key = pki::parse_private_key(key_pem);
    auto certs = pki::parse_certs(cert_pem);
    if (!key.ok() || !certs.ok() || !pki::key_matches(*certs->front(), **key)) {
        return std::nullopt;
    }
    auto info = pki::cert_info(*certs->front());
    return info.ok() ? std::optional(info->serial_hex) : std::nullopt;
}

std::string serial_of(const std::string& pem)
{
    auto certs = pki::parse_certs(pem);
    return certs.ok() ? pki::cert_info(*certs->front()).value().serial_hex : "unreadable";
}

} // namespace certfs::test
