// The narrow OpenSSL API that store/ (validation) and renew/ (issuing, ACME) share: the only
// place outside core/handles.hpp that calls OpenSSL.
//
// Every function is thread-safe (OpenSSL 3 is, for independent objects) and never throws.
// On failure it returns a Status whose message names what was wrong in words an admin
// understands, followed by OpenSSL's first queued reason where that helps; the OpenSSL error
// queue is always drained. No function logs, and no message ever contains key material.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/handles.hpp"
#include "core/status.hpp"

namespace certfs::pki {

enum class KeyType { ec_p256, ec_p384, rsa_2048, rsa_3072, rsa_4096, ed25519 };

inline constexpr KeyType k_default_key_type = KeyType::ec_p256;

// "ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519".
std::string_view key_type_name(KeyType type);
Result<KeyType> parse_key_type(std::string_view name); // Invalid, listing the valid names
const std::vector<std::string>& key_type_names();

Result<PKey> generate_key(KeyType type);
// The key type of an existing key; Invalid for kinds we do not issue (e.g. DSA, EC P-521).
Result<KeyType> key_type_of(const EVP_PKEY& key);
bool is_rsa(const EVP_PKEY& key);

// Parses exactly one private key: PKCS#8 ("PRIVATE KEY") or the traditional RSA/EC forms.
// Encrypted keys, public keys, certificates and garbage are Invalid ("no private key found",
// "private key is encrypted").
Result<PKey> parse_private_key(std::string_view pem);
// PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----"), unencrypted, ending in a newline.
Result<std::string> private_key_pem(const EVP_PKEY& key);

// Parses every certificate in a PEM text, in order. Invalid when there is none, when a block
// is damaged, or when the text holds anything but certificates and whitespace (a private key
// pasted into a certificate file is refused, not skipped).
Result<std::vector<Cert>> parse_certs(std::string_view pem);
// Exactly one certificate; Invalid if there are zero or several.
Result<Cert> parse_cert(std::string_view pem);
// Canonical PEM of one certificate, ending in a newline.
std::string cert_pem(const X509& cert);
std::string certs_pem(const std::vector<Cert>& certs);
Result<Cert> clone_cert(const X509& cert);

// What validation and listings need from a certificate.
struct CertInfo {
    std::string serial_hex; // lower-case hex, no leading zeros ("0" for zero)
    std::string subject;    // RFC 2253 one-line form
    std::string issuer;     // RFC 2253 one-line form
    TimePoint not_before;
    TimePoint not_after;
    std::vector<std::string> dns_names;    // subjectAltName DNS entries, lower-cased, in order
    std::vector<std::string> ip_addresses; // subjectAltName IP entries, canonical text form
    bool is_ca = false;                    // basicConstraints CA:TRUE
};
Result<CertInfo> cert_info(const X509& cert);

// True when the certificate's public key is the public half of key.
bool key_matches(const X509& cert, const EVP_PKEY& key);

// Checks that chain links leaf to its issuer: chain[0] issued leaf (names match and leaf's
// signature verifies with chain[0]'s key), chain[i+1] issued chain[i] likewise. An empty
// chain is accepted only for a self-signed leaf (its own signature verifies). Invalid, naming
// the failing link, otherwise. Validity periods are not checked here.
Status verify_chain(const X509& leaf, const std::vector<Cert>& chain);

// Canonical text of an IP address ("192.0.2.1", "2001:db8::1"); Invalid if it is not one.
Result<std::string> canonical_ip(std::string_view text);

struct Names {
    std::vector<std::string> dns; // host names, possibly "*.example.com"
    std::vector<std::string> ip;  // canonical IP text
};

// A CSR over key with subject CN = first DNS name (if any, and if it fits in 64 characters)
// and a subjectAltName extension of every DNS and IP name. Signed with key.
Result<CertReq> make_csr(const EVP_PKEY& key, const Names& names);
std::string csr_pem(const X509_REQ& req);
Result<CertReq> parse_csr(std::string_view pem); // also checks the CSR's own signature
Result<PKey> csr_public_key(const X509_REQ& req);

// Parses a subject as "/CN=x/O=y" or "CN=x, O=y". Invalid on an unknown attribute or an
// empty value.
Result<X509Name> parse_subject(std::string_view text);

// A random positive serial of `bits` bits from the CSPRNG (RAND_bytes), top bit cleared so it
// encodes positive, never zero. Returned as lower-case hex, as CertInfo::serial_hex writes it.
Result<std::string> random_serial_hex(int bits = 159);

struct CaParams {
    std::string subject = "/CN=certfs local CA";
    TimePoint not_before;
    TimePoint not_after;
    std::string serial_hex; // from random_serial_hex()
};
// A self-signed root: basicConstraints critical CA:TRUE, keyUsage critical keyCertSign,
// cRLSign, digitalSignature; SKI; AKI. Digest: SHA-256 (SHA-384 for EC P-384, none for
// Ed25519).
Result<Cert> make_ca_cert(const EVP_PKEY& ca_key, const CaParams& params);

struct LeafParams {
    Names names; // become the subjectAltName; the CN is the first DNS name
    TimePoint not_before;
    TimePoint not_after;
    std::string serial_hex; // from random_serial_hex()
};
// A leaf for subject_key, issued by ca_cert/ca_key: the SANs of params.names, basicConstraints
// critical CA:FALSE, keyUsage critical digitalSignature (+ keyEncipherment for an RSA subject
// key), extendedKeyUsage serverAuth + clientAuth, SKI, AKI (keyid of the CA).
Result<Cert> sign_leaf(const EVP_PKEY& subject_key, const X509& ca_cert, const EVP_PKEY& ca_key,
                       const LeafParams& params);

// --- encodings, digests and MACs ---

// base64url (RFC 4648 §5) without padding.
std::string base64url(std::string_view bytes);
// Decodes base64url, with or without trailing '=' padding. Invalid ("not base64url: ...")
// naming the position of the first character outside the URL alphabet (never the character:
// the text may be a secret, such as an EAB MAC key), or a length no encoding has.
Result<std::string> base64url_decode(std::string_view text);
// The raw 32-byte SHA-256 digest.
std::string sha256(std::string_view bytes);
// The raw 32-byte HMAC-SHA256 (RFC 2104) of data under key (raw bytes, any length).
Result<std::string> hmac_sha256(std::string_view key, std::string_view data);
// `n` bytes from the CSPRNG (RAND_bytes).
Result<std::string> random_bytes(std::size_t n);

// AES-256-GCM (the AEAD that seals secrets in the store). seal() draws a fresh 12-byte nonce
// and returns nonce || ciphertext || 16-byte tag; `aad` is authenticated, not encrypted. open()
// is the inverse: Corrupt ("does not decrypt") when the key, the aad or any byte differs, and
// then nothing of the plaintext is returned. The key is 32 raw bytes (Invalid otherwise).
Result<std::string> aes256gcm_seal(std::string_view key, std::string_view aad, std::string_view plaintext);
Result<std::string> aes256gcm_open(std::string_view key, std::string_view aad, std::string_view sealed);

// Overwrites the bytes of a string that held a secret (OPENSSL_cleanse, which the compiler does
// not drop as a dead store), before its memory is freed. Copies made earlier are not reached.
void cleanse(std::string& secret);

// The DER encoding of a certificate or a CSR.
Result<std::string> cert_der(const X509& cert);
Result<std::string> csr_der(const X509_REQ& req);

// The certificate identifier of ACME renewal information (RFC 9773 §4.1):
// base64url(the authority key identifier's keyIdentifier) "." base64url(the serial number's
// DER content octets). Invalid when the certificate has no authority key identifier.
Result<std::string> ari_cert_id(const X509& cert);

// --- JSON Web Signature (RFC 7515, RFC 7518), for ACME account keys ---

// "ES256" (EC P-256), "ES384" (EC P-384) or "RS256" (RSA); Invalid for another kind of key.
Result<std::string> jws_alg(const EVP_PKEY& key);

// The public numbers of a key's JWK (RFC 7518 §6) as unsigned big-endian bytes, not yet
// base64url: for EC, crv ("P-256", "P-384") and x, y each padded to the field size; for RSA,
// n and e without leading zeros. Members that do not apply to the key type are empty.
struct JwkNumbers {
    std::string kty; // "EC" or "RSA"
    std::string crv;
    std::string x;
    std::string y;
    std::string n;
    std::string e;
};
Result<JwkNumbers> jwk_numbers(const EVP_PKEY& key);

// A private key from its JWK (RFC 7518 §6.2.2, §6.3.2), each member base64url-decoded into
// unsigned big-endian bytes: RSA with n, e and d (p, q, dp, dq and qi too, when given), or EC
// with crv ("P-256", "P-384"), x, y and d. certbot keeps its ACME account key so. Invalid,
// naming the member, when one is missing, and when the numbers do not make a sound key pair.
struct JwkPrivate : JwkNumbers {
    std::string d;
    std::string p;
    std::string q;
    std::string dp;
    std::string dq;
    std::string qi;
};
Result<PKey> private_key_from_jwk(const JwkPrivate& jwk);

// The JWS signature of input under key with the algorithm of jws_alg(key): for ES256/ES384
// the raw r || s, each padded to the curve size (RFC 7518 §3.4), not DER; for RS256
// RSASSA-PKCS1-v1_5 with SHA-256.
Result<std::string> jws_sign(const EVP_PKEY& key, std::string_view input);

} // namespace certfs::pki
