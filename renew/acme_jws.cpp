#include "renew/acme_jws.hpp"

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <array>
#include <vector>

namespace certfs::renew::acme {

namespace {

constexpr std::string_view k_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

using Bignum = std::unique_ptr<BIGNUM, CDeleter<BN_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, CDeleter<EVP_MD_CTX_free>>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, CDeleter<ECDSA_SIG_free>>;

Result<std::string> bn_param(const EVP_PKEY& key, const char* name, int pad)
{
    BIGNUM* raw = nullptr;
    if (EVP_PKEY_get_bn_param(&key, name, &raw) != 1) {
        return Status::Invalid(std::string("the account key has no ") + name);
    }
    Bignum bn(raw);
    const int size = pad > 0 ? pad : BN_num_bytes(bn.get());
    std::string out(static_cast<std::size_t>(size), '\0');
    if (BN_bn2binpad(bn.get(), reinterpret_cast<unsigned char*>(out.data()), size) != size) {
        return Status::Invalid(std::string("the account key's ") + name + " does not fit");
    }
    return out;
}

int ec_size(const EVP_PKEY& key)
{
    return EVP_PKEY_get_bits(&key) <= 256 ? 32 : 48;
}

} // namespace

std::string base64url(std::string_view bytes)
{
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char c : bytes) {
        acc = (acc << 8) | c;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(k_alphabet[(acc >> bits) & 0x3f]);
        }
    }
    if (bits > 0) {
        out.push_back(k_alphabet[(acc << (6 - bits)) & 0x3f]);
    }
    return out;
}

Result<std::string> base64url_decode(std::string_view text)
{
    while (!text.empty() && text.back() == '=') {
        text.remove_suffix(1);
    }
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (const char& c : text) {
        auto v = k_alphabet.find(c);
        if (v == std::string_view::npos) {
            // The position, not the character: the text may be a secret (an EAB HMAC key).
            return Status::Invalid("not base64url: unexpected character at position " +
                                   std::to_string(&c - text.data() + 1));
        }
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    if (text.size() % 4 == 1) {
        return Status::Invalid("not base64url: wrong length");
    }
    return out;
}

std::string sha256(std::string_view bytes)
{
    std::string out(SHA256_DIGEST_LENGTH, '\0');
    SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
           reinterpret_cast<unsigned char*>(out.data()));
    return out;
}

Result<std::string> jws_alg(const EVP_PKEY& key)
{
    if (EVP_PKEY_is_a(&key, "EC")) {
        return std::string(ec_size(key) == 32 ? "ES256" : "ES384");
    }
    if (EVP_PKEY_is_a(&key, "RSA")) {
        return std::string("RS256");
    }
    return Status::Invalid("an ACME account key must be EC P-256, EC P-384 or RSA");
}

Result<nlohmann::json> public_jwk(const EVP_PKEY& key)
{
    ASSIGN_OR_RETURN(std::string alg, jws_alg(key));
    if (alg == "RS256") {
        ASSIGN_OR_RETURN(std::string n, bn_param(key, OSSL_PKEY_PARAM_RSA_N, 0));
        ASSIGN_OR_RETURN(std::string e, bn_param(key, OSSL_PKEY_PARAM_RSA_E, 0));
        return nlohmann::json{{"e", base64url(e)}, {"kty", "RSA"}, {"n", base64url(n)}};
    }
    const int size = ec_size(key);
    ASSIGN_OR_RETURN(std::string x, bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, size));
    ASSIGN_OR_RETURN(std::string y, bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, size));
    return nlohmann::json{
        {"crv", size == 32 ? "P-256" : "P-384"}, {"kty", "EC"}, {"x", base64url(x)}, {"y", base64url(y)}};
}

Result<std::string> jwk_thumbprint(const EVP_PKEY& key)
{
    // nlohmann::json keeps object members sorted, and dump() has no whitespace: RFC 7638's form.
    ASSIGN_OR_RETURN(nlohmann::json jwk, public_jwk(key));
    return base64url(sha256(jwk.dump()));
}

Result<nlohmann::json> sign_jws(const EVP_PKEY& key, nlohmann::json protected_header, std::string_view payload)
{
    ASSIGN_OR_RETURN(protected_header["alg"], jws_alg(key));
    const std::string header64 = base64url(protected_header.dump());
    const std::string payload64 = base64url(payload);
    const std::string input = header64 + "." + payload64;

    MdCtx ctx(EVP_MD_CTX_new());
    const EVP_MD* md = protected_header["alg"] == "ES384" ? EVP_sha384() : EVP_sha256();
    std::size_t length = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, const_cast<EVP_PKEY*>(&key)) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &length, reinterpret_cast<const unsigned char*>(input.data()),
                       input.size()) != 1) {
        return Status::IoError("cannot sign with the account key");
    }
    std::string signature(length, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                       reinterpret_cast<const unsigned char*>(input.data()), input.size()) != 1) {
        return Status::IoError("cannot sign with the account key");
    }
    signature.resize(length);
    if (EVP_PKEY_is_a(&key, "EC")) {
        // JWS wants r || s, each padded to the curve size, not DER.
        const auto* p = reinterpret_cast<const unsigned char*>(signature.data());
        EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(signature.size())));
        if (!sig) {
            return Status::IoError("cannot decode the account key's ECDSA signature");
        }
        const int size = ec_size(key);
        std::string raw(static_cast<std::size_t>(2 * size), '\0');
        auto* out = reinterpret_cast<unsigned char*>(raw.data());
        if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out, size) != size ||
            BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out + size, size) != size) {
            return Status::IoError("cannot encode the account key's ECDSA signature");
        }
        signature = std::move(raw);
    }
    return nlohmann::json{{"protected", header64}, {"payload", payload64}, {"signature", base64url(signature)}};
}

Result<nlohmann::json> sign_hs256(std::string_view mac_key, nlohmann::json protected_header, std::string_view payload)
{
    protected_header["alg"] = "HS256";
    const std::string header64 = base64url(protected_header.dump());
    const std::string payload64 = base64url(payload);
    const std::string input = header64 + "." + payload64;
    std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
    unsigned int length = 0;
    if (HMAC(EVP_sha256(), mac_key.data(), static_cast<int>(mac_key.size()),
             reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac.data(), &length) == nullptr) {
        return Status::IoError("cannot compute the external account binding's HMAC");
    }
    return nlohmann::json{{"protected", header64},
                          {"payload", payload64},
                          {"signature", base64url(std::string_view(reinterpret_cast<char*>(mac.data()), length))}};
}

} // namespace certfs::renew::acme
