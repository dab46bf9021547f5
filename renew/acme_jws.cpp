#include "renew/acme_jws.hpp"

namespace certfs::renew::acme {

namespace {

// The flattened JWS of RFC 7515 §7.2.2 around an already computed signature.
nlohmann::json flattened(const std::string& header64, const std::string& payload64, std::string_view signature)
{
    return nlohmann::json{{"protected", header64}, {"payload", payload64}, {"signature", base64url(signature)}};
}

} // namespace

Result<nlohmann::json> public_jwk(const EVP_PKEY& key)
{
    ASSIGN_OR_RETURN(pki::JwkNumbers jwk, pki::jwk_numbers(key));
    if (jwk.kty == "RSA") {
        return nlohmann::json{{"e", base64url(jwk.e)}, {"kty", "RSA"}, {"n", base64url(jwk.n)}};
    }
    return nlohmann::json{{"crv", jwk.crv}, {"kty", "EC"}, {"x", base64url(jwk.x)}, {"y", base64url(jwk.y)}};
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
    ASSIGN_OR_RETURN(std::string signature, pki::jws_sign(key, header64 + "." + payload64));
    return flattened(header64, payload64, signature);
}

Result<nlohmann::json> sign_hs256(std::string_view mac_key, nlohmann::json protected_header, std::string_view payload)
{
    protected_header["alg"] = "HS256";
    const std::string header64 = base64url(protected_header.dump());
    const std::string payload64 = base64url(payload);
    auto mac = pki::hmac_sha256(mac_key, header64 + "." + payload64);
    if (!mac.ok()) {
        return mac.status().with_context("external account binding");
    }
    return flattened(header64, payload64, *mac);
}

} // namespace certfs::renew::acme
