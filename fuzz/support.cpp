#include "fuzz/support.hpp"

#include <cstdio>
#include <cstdlib>

#include "core/pki.hpp"

namespace certfs::fuzz {

std::vector<std::string_view> fields(std::string_view input, std::size_t n)
{
    constexpr std::string_view k_separator = "\n====\n";
    std::vector<std::string_view> out;
    while (out.size() + 1 < n) {
        auto cut = input.find(k_separator);
        if (cut == std::string_view::npos) {
            break;
        }
        out.push_back(input.substr(0, cut));
        input.remove_prefix(cut + k_separator.size());
    }
    out.push_back(input);
    out.resize(n);
    return out;
}

std::string pem_of(std::string_view label, std::string_view der)
{
    static constexpr char k_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string b64;
    for (std::size_t i = 0; i < der.size(); i += 3) {
        std::uint32_t chunk = static_cast<std::uint32_t>(static_cast<unsigned char>(der[i])) << 16;
        if (i + 1 < der.size()) {
            chunk |= static_cast<std::uint32_t>(static_cast<unsigned char>(der[i + 1])) << 8;
        }
        if (i + 2 < der.size()) {
            chunk |= static_cast<unsigned char>(der[i + 2]);
        }
        b64 += k_alphabet[(chunk >> 18) & 63];
        b64 += k_alphabet[(chunk >> 12) & 63];
        b64 += i + 1 < der.size() ? k_alphabet[(chunk >> 6) & 63] : '=';
        b64 += i + 2 < der.size() ? k_alphabet[chunk & 63] : '=';
    }
    std::string pem = "-----BEGIN " + std::string(label) + "-----\n";
    for (std::size_t i = 0; i < b64.size(); i += 64) {
        pem += b64.substr(i, 64) + "\n";
    }
    return pem + "-----END " + std::string(label) + "-----\n";
}

void require(bool ok, const char* what)
{
    if (!ok) {
        std::fprintf(stderr, "fuzz: broken promise: %s\n", what);
        std::abort();
    }
}

void exercise_key(const EVP_PKEY& key)
{
    (void)pki::key_type_of(key);
    (void)pki::is_rsa(key);
    if (auto alg = pki::jws_alg(key); alg.ok()) {
        (void)pki::jwk_numbers(key);
    }
    auto pem = pki::private_key_pem(key);
    require(pem.ok(), "a parsed private key writes as PEM");
    auto again = pki::parse_private_key(*pem);
    require(again.ok(), "the PEM written for a key parses back");
}

void exercise_certs(const std::vector<Cert>& certs)
{
    for (const Cert& cert : certs) {
        (void)pki::cert_info(*cert);
        (void)pki::ari_cert_id(*cert);
        (void)pki::cert_der(*cert);
        (void)pki::clone_cert(*cert);
    }
    const std::vector<Cert> chain_of_rest = [&] {
        std::vector<Cert> rest;
        for (std::size_t i = 1; i < certs.size(); ++i) {
            auto copy = pki::clone_cert(*certs[i]);
            if (copy.ok()) {
                rest.push_back(std::move(*copy));
            }
        }
        return rest;
    }();
    (void)pki::verify_chain(*certs.front(), chain_of_rest);
    (void)pki::verify_chain(*certs.front(), {});
    const std::string pem = pki::certs_pem(certs);
    if (!pem.empty()) {
        auto again = pki::parse_certs(pem);
        require(again.ok() && again->size() == certs.size(), "the PEM written for certificates parses back");
    }
}

void exercise_csr(const X509_REQ& req)
{
    (void)pki::csr_der(req);
    if (auto key = pki::csr_public_key(req); key.ok()) {
        (void)pki::key_type_of(**key);
    }
    const std::string pem = pki::csr_pem(req);
    if (!pem.empty()) {
        require(pki::parse_csr(pem).ok(), "the PEM written for a CSR parses back");
    }
}

void parse_everything(std::string_view text)
{
    auto key = pki::parse_private_key(text);
    if (key.ok()) {
        exercise_key(**key);
    }
    if (auto certs = pki::parse_certs(text); certs.ok()) {
        require(!certs->empty(), "parse_certs accepts no empty list");
        exercise_certs(*certs);
        if (key.ok()) {
            (void)pki::key_matches(*certs->front(), **key);
        }
    }
    (void)pki::parse_cert(text);
    if (auto req = pki::parse_csr(text); req.ok()) {
        exercise_csr(**req);
    }
}

} // namespace certfs::fuzz
