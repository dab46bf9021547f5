// The JSON Web Signature pieces ACME (RFC 8555 §6.2) needs: the account key's JWK and
// thumbprint (RFC 7638), flattened JWS signed with ES256/ES384 or RS256, and the HS256
// signature of an external account binding. The JSON is built here; the encodings and every
// signature come from core/pki.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/handles.hpp"
#include "core/pki.hpp"
#include "core/status.hpp"

namespace certfs::renew::acme {

// base64url (no padding), its decoder and SHA-256, which every JWS piece uses: core/pki's.
using pki::base64url;
using pki::base64url_decode;
using pki::jws_alg; // "ES256", "ES384" or "RS256"; Invalid for another kind of key
using pki::sha256;

// The public JWK of an EC P-256/P-384 or RSA key, with only the required members.
Result<nlohmann::json> public_jwk(const EVP_PKEY& key);
// base64url(SHA-256(the JWK's canonical JSON)): the suffix of every key authorization.
Result<std::string> jwk_thumbprint(const EVP_PKEY& key);

// A flattened JWS over `payload` (already JSON text, or empty for POST-as-GET) with the
// protected header given; its "alg" is set from the key.
Result<nlohmann::json> sign_jws(const EVP_PKEY& key, nlohmann::json protected_header, std::string_view payload);
// The same with HS256 under a MAC key (raw bytes), for external account binding.
Result<nlohmann::json> sign_hs256(std::string_view mac_key, nlohmann::json protected_header, std::string_view payload);

} // namespace certfs::renew::acme
