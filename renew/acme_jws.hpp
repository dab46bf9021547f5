// The JSON Web Signature pieces ACME (RFC 8555 §6.2) needs: base64url, the account key's JWK
// and thumbprint (RFC 7638), flattened JWS signed with ES256/ES384 or RS256, and the HS256
// signature of an external account binding.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/handles.hpp"
#include "core/status.hpp"

namespace certfs::renew::acme {

std::string base64url(std::string_view bytes); // no padding
Result<std::string> base64url_decode(std::string_view text); // Invalid on a bad character
std::string sha256(std::string_view bytes);                 // the raw 32-byte digest

// The public JWK of an EC P-256/P-384 or RSA key, with only the required members.
Result<nlohmann::json> public_jwk(const EVP_PKEY& key);
// base64url(SHA-256(the JWK's canonical JSON)): the suffix of every key authorization.
Result<std::string> jwk_thumbprint(const EVP_PKEY& key);
// "ES256", "ES384" or "RS256"; Invalid for another kind of key.
Result<std::string> jws_alg(const EVP_PKEY& key);

// A flattened JWS over `payload` (already JSON text, or empty for POST-as-GET) with the
// protected header given; its "alg" is set from the key.
Result<nlohmann::json> sign_jws(const EVP_PKEY& key, nlohmann::json protected_header, std::string_view payload);
// The same with HS256 under a MAC key (raw bytes), for external account binding.
Result<nlohmann::json> sign_hs256(std::string_view mac_key, nlohmann::json protected_header, std::string_view payload);

} // namespace certfs::renew::acme
