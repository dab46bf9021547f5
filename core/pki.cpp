#include "core/pki.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <ctime>

#include <arpa/inet.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

namespace certfs::pki {

namespace {

constexpr std::size_t k_max_cn_length = 64; // ub-common-name in RFC 5280

// Empties this thread's OpenSSL error queue; returns " (first reason)", or "" if none.
std::string openssl_reason()
{
    std::string reason;
    while (unsigned long err = ERR_get_error()) {
        if (reason.empty()) {
            const char* text = ERR_reason_error_string(err);
            reason = " (" + std::string(text != nullptr ? text : "unknown OpenSSL error") + ")";
        }
    }
    return reason;
}

// OpenSSL 3.0 lacks const on many read-only calls; they only touch internal, locked caches.
X509* mut(const X509& cert) { return const_cast<X509*>(&cert); }
EVP_PKEY* mut(const EVP_PKEY& key) { return const_cast<EVP_PKEY*>(&key); }
X509_REQ* mut(const X509_REQ& req) { return const_cast<X509_REQ*>(&req); }

Bio mem_bio(std::string_view text) { return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size()))); }

std::string bio_text(BIO* bio)
{
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    return len > 0 ? std::string(data, static_cast<std::size_t>(len)) : std::string();
}

std::string to_lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

std::string_view trim(std::string_view s)
{
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) {
        s.remove_prefix(1);
    }
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) {
        s.remove_suffix(1);
    }
    return s;
}

bool is_blank(std::string_view s) { return trim(s).empty(); }

// Lower-case hex without leading zeros, "0" for zero.
Result<std::string> bn_to_hex(const BIGNUM& bn)
{
    char* raw = BN_bn2hex(&bn);
    if (raw == nullptr) {
        return Status::IoError("cannot format a serial number" + openssl_reason());
    }
    std::string hex = to_lower(raw);
    OPENSSL_free(raw);
    bool negative = !hex.empty() && hex[0] == '-';
    std::size_t digits = negative ? 1 : 0;
    std::size_t first = hex.find_first_not_of('0', digits);
    hex = hex.substr(0, digits) + (first == std::string::npos ? "0" : hex.substr(first));
    return hex;
}

// --- PEM scanning: we split the text ourselves so we can name what does not belong. ---

struct PemBlock {
    std::string type;      // "CERTIFICATE", "PRIVATE KEY", ...
    std::string_view text; // from "-----BEGIN" through the END line
};

struct PemScan {
    std::vector<PemBlock> blocks;
    bool stray_text = false; // non-whitespace outside the blocks
};

Result<PemScan> scan_pem(std::string_view pem)
{
    constexpr std::string_view begin_tag = "-----BEGIN ";
    PemScan scan;
    std::size_t pos = 0;
    while (true) {
        std::size_t begin = pem.find(begin_tag, pos);
        if (!is_blank(pem.substr(pos, begin == std::string_view::npos ? pem.npos : begin - pos))) {
            scan.stray_text = true;
        }
        if (begin == std::string_view::npos) {
            break;
        }
        std::size_t label = begin + begin_tag.size();
        std::size_t label_end = pem.find("-----", label);
        if (label_end == std::string_view::npos ||
            pem.substr(label, label_end - label).find('\n') != std::string_view::npos) {
            return Status::Invalid("malformed PEM: a BEGIN line is not terminated");
        }
        std::string type(pem.substr(label, label_end - label));
        std::string end_tag = "-----END " + type + "-----";
        std::size_t body = label_end + 5;
        std::size_t end = pem.find(end_tag, body);
        if (end == std::string_view::npos || pem.substr(body, end - body).find(begin_tag) != std::string_view::npos) {
            return Status::Invalid("malformed PEM: the " + type + " block has no END line");
        }
        pos = end + end_tag.size();
        scan.blocks.push_back({std::move(type), pem.substr(begin, pos - begin)});
    }
    return scan;
}

// --- building certificates and CSRs ---

// SHA-384 for P-384 (matching strength), none for EdDSA (built in), SHA-256 otherwise.
const EVP_MD* digest_for(const EVP_PKEY& key)
{
    int id = EVP_PKEY_get_base_id(&key);
    if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448) {
        return nullptr;
    }
    if (id == EVP_PKEY_EC && EVP_PKEY_get_bits(&key) >= 384) {
        return EVP_sha384();
    }
    return EVP_sha256();
}

// The subject for a leaf or CSR: CN = first DNS name if it fits, else fallback_ip, else empty.
Result<X509Name> name_subject(const Names& names, bool fallback_ip)
{
    X509Name name(X509_NAME_new());
    if (!name) {
        return Status::IoError("cannot allocate a name" + openssl_reason());
    }
    std::string cn;
    if (!names.dns.empty() && names.dns.front().size() <= k_max_cn_length) {
        cn = names.dns.front();
    } else if (fallback_ip && !names.ip.empty()) {
        cn = names.ip.front();
    }
    if (!cn.empty() && X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                                  reinterpret_cast<const unsigned char*>(cn.data()),
                                                  static_cast<int>(cn.size()), -1, 0) != 1) {
        return Status::Invalid("cannot use '" + cn + "' as the common name" + openssl_reason());
    }
    return name;
}

// subjectAltName of every DNS and IP name; critical when the subject is empty (RFC 5280).
Result<X509Extension> san_extension(const Names& names, bool critical)
{
    if (names.dns.empty() && names.ip.empty()) {
        return Status::Invalid("no names given: a certificate needs at least one DNS name or IP");
    }
    GeneralNames gens(sk_GENERAL_NAME_new_null());
    if (!gens) {
        return Status::IoError("cannot allocate subjectAltName" + openssl_reason());
    }
    auto add = [&](int type, ASN1_STRING* value, const void* data, std::size_t size) {
        GENERAL_NAME* gen = GENERAL_NAME_new();
        if (value == nullptr || gen == nullptr || ASN1_STRING_set(value, data, static_cast<int>(size)) != 1) {
            ASN1_STRING_free(value);
            GENERAL_NAME_free(gen);
            return false;
        }
        GENERAL_NAME_set0_value(gen, type, value);
        if (sk_GENERAL_NAME_push(gens.get(), gen) <= 0) {
            GENERAL_NAME_free(gen);
            return false;
        }
        return true;
    };
    for (const std::string& dns : names.dns) {
        bool printable =
            !dns.empty() && std::all_of(dns.begin(), dns.end(), [](char c) { return c > ' ' && c < 0x7f; });
        if (!printable) {
            return Status::Invalid("not a DNS name: '" + dns + "'");
        }
        if (!add(GEN_DNS, ASN1_IA5STRING_new(), dns.data(), dns.size())) {
            return Status::IoError("cannot build subjectAltName" + openssl_reason());
        }
    }
    for (const std::string& ip : names.ip) {
        std::array<unsigned char, 16> bytes{};
        std::size_t size = 0;
        if (inet_pton(AF_INET, ip.c_str(), bytes.data()) == 1) {
            size = 4;
        } else if (inet_pton(AF_INET6, ip.c_str(), bytes.data()) == 1) {
            size = 16;
        } else {
            return Status::Invalid("not an IP address: '" + ip + "'");
        }
        if (!add(GEN_IPADD, ASN1_OCTET_STRING_new(), bytes.data(), size)) {
            return Status::IoError("cannot build subjectAltName" + openssl_reason());
        }
    }
    X509Extension ext(X509V3_EXT_i2d(NID_subject_alt_name, critical ? 1 : 0, gens.get()));
    if (!ext) {
        return Status::IoError("cannot encode subjectAltName" + openssl_reason());
    }
    return ext;
}

Status add_conf_ext(X509& cert, X509V3_CTX& ctx, int nid, const char* value)
{
    X509Extension ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || X509_add_ext(&cert, ext.get(), -1) != 1) {
        return Status::IoError(std::string("cannot add extension ") + OBJ_nid2sn(nid) + openssl_reason());
    }
    return Status::Ok();
}

// AKI keyid of issuer: its own SKI if it has one, else the RFC 5280 SHA-1 of its public key
// (so that CAs made elsewhere without an SKI still work; "keyid:always" would refuse them).
Status add_authority_key_id(X509& cert, const X509& issuer)
{
    AuthorityKeyId akid(AUTHORITY_KEYID_new());
    if (!akid) {
        return Status::IoError("cannot allocate authorityKeyIdentifier" + openssl_reason());
    }
    Asn1OctetString ski(
        static_cast<ASN1_OCTET_STRING*>(X509_get_ext_d2i(&issuer, NID_subject_key_identifier, nullptr, nullptr)));
    ERR_clear_error(); // "not found" is not an error here
    if (!ski) {
        std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
        unsigned int len = 0;
        ski.reset(ASN1_OCTET_STRING_new());
        if (!ski || X509_pubkey_digest(&issuer, EVP_sha1(), md.data(), &len) != 1 ||
            ASN1_OCTET_STRING_set(ski.get(), md.data(), static_cast<int>(len)) != 1) {
            return Status::IoError("cannot compute the issuer key id" + openssl_reason());
        }
    }
    akid->keyid = ski.release();
    X509Extension ext(X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid.get()));
    if (!ext || X509_add_ext(&cert, ext.get(), -1) != 1) {
        return Status::IoError("cannot add authorityKeyIdentifier" + openssl_reason());
    }
    return Status::Ok();
}

Result<Asn1Integer> parse_serial(const std::string& hex)
{
    bool is_hex = !hex.empty() && hex.size() <= 40 && std::all_of(hex.begin(), hex.end(), [](char c) {
        return std::isxdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!is_hex) {
        return Status::Invalid("serial must be 1 to 40 hex digits, got '" + hex + "'");
    }
    BIGNUM* raw = nullptr;
    if (BN_hex2bn(&raw, hex.c_str()) == 0) {
        return Status::IoError("cannot parse serial" + openssl_reason());
    }
    Bignum bn(raw);
    if (BN_is_zero(bn.get())) {
        return Status::Invalid("serial must not be zero");
    }
    Asn1Integer serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    if (!serial) {
        return Status::IoError("cannot encode serial" + openssl_reason());
    }
    return serial;
}

// A v3 certificate with serial, validity, names and public key set, not yet extended or signed.
Result<Cert> new_cert(const EVP_PKEY& subject_key, const X509_NAME& subject, const X509_NAME& issuer,
                      const std::string& serial_hex, TimePoint not_before, TimePoint not_after)
{
    if (not_after <= not_before) {
        return Status::Invalid("not_after must be later than not_before");
    }
    ASSIGN_OR_RETURN(Asn1Integer serial, parse_serial(serial_hex));
    Cert cert(X509_new());
    Asn1Time nb(ASN1_TIME_set(nullptr, static_cast<time_t>(to_unix(not_before))));
    Asn1Time na(ASN1_TIME_set(nullptr, static_cast<time_t>(to_unix(not_after))));
    if (!cert || !nb || !na || X509_set_version(cert.get(), 2) != 1 ||
        X509_set_serialNumber(cert.get(), serial.get()) != 1 || X509_set1_notBefore(cert.get(), nb.get()) != 1 ||
        X509_set1_notAfter(cert.get(), na.get()) != 1 || X509_set_subject_name(cert.get(), &subject) != 1 ||
        X509_set_issuer_name(cert.get(), &issuer) != 1 || X509_set_pubkey(cert.get(), mut(subject_key)) != 1) {
        return Status::IoError("cannot build certificate" + openssl_reason());
    }
    return cert;
}

Status sign_cert(X509& cert, const EVP_PKEY& key)
{
    if (X509_sign(&cert, mut(key), digest_for(key)) <= 0) {
        return Status::IoError("cannot sign certificate" + openssl_reason());
    }
    return Status::Ok();
}

// "the leaf" or "certificate N of the chain" with its subject, for verify_chain messages.
std::string link_name(std::size_t index)
{
    return index == 0 ? "the leaf" : "certificate " + std::to_string(index) + " of the chain";
}

std::string name_text(const X509_NAME* name)
{
    Bio bio(BIO_new(BIO_s_mem()));
    // RFC 2253, but UTF-8 kept readable instead of \XX escapes.
    if (!bio || name == nullptr ||
        X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
        ERR_clear_error();
        return {};
    }
    return bio_text(bio.get());
}

Result<TimePoint> cert_time(const ASN1_TIME* time, const char* which)
{
    std::tm tm{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
        return Status::Invalid(std::string("certificate has an unreadable ") + which + openssl_reason());
    }
    return from_unix(static_cast<std::int64_t>(timegm(&tm)));
}

} // namespace

// --- key types ---

std::string_view key_type_name(KeyType type)
{
    switch (type) {
    case KeyType::ec_p256:
        return "ec-p256";
    case KeyType::ec_p384:
        return "ec-p384";
    case KeyType::rsa_2048:
        return "rsa-2048";
    case KeyType::rsa_3072:
        return "rsa-3072";
    case KeyType::rsa_4096:
        return "rsa-4096";
    case KeyType::ed25519:
        return "ed25519";
    }
    return "unknown";
}

const std::vector<std::string>& key_type_names()
{
    static const std::vector<std::string> names = {"ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096", "ed25519"};
    return names;
}

Result<KeyType> parse_key_type(std::string_view name)
{
    for (KeyType type : {KeyType::ec_p256, KeyType::ec_p384, KeyType::rsa_2048, KeyType::rsa_3072, KeyType::rsa_4096,
                         KeyType::ed25519}) {
        if (key_type_name(type) == name) {
            return type;
        }
    }
    std::string valid;
    for (const std::string& n : key_type_names()) {
        valid += (valid.empty() ? "" : ", ") + n;
    }
    return Status::Invalid("unknown key type '" + std::string(name) + "' (valid: " + valid + ")");
}

Result<PKey> generate_key(KeyType type)
{
    // RSA keys get OpenSSL's default public exponent, 65537.
    auto rsa = [](std::size_t bits) { return EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits); };
    EVP_PKEY* key = nullptr;
    switch (type) {
    case KeyType::ec_p256:
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
        break;
    case KeyType::ec_p384:
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
        break;
    case KeyType::rsa_2048:
        key = rsa(2048);
        break;
    case KeyType::rsa_3072:
        key = rsa(3072);
        break;
    case KeyType::rsa_4096:
        key = rsa(4096);
        break;
    case KeyType::ed25519:
        key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
        break;
    }
    if (key == nullptr) {
        return Status::IoError("cannot generate a " + std::string(key_type_name(type)) + " key" + openssl_reason());
    }
    return PKey(key);
}

Result<KeyType> key_type_of(const EVP_PKEY& key)
{
    switch (EVP_PKEY_get_base_id(&key)) {
    case EVP_PKEY_RSA:
        switch (EVP_PKEY_get_bits(&key)) {
        case 2048:
            return KeyType::rsa_2048;
        case 3072:
            return KeyType::rsa_3072;
        case 4096:
            return KeyType::rsa_4096;
        default:
            return Status::Invalid("RSA keys of " + std::to_string(EVP_PKEY_get_bits(&key)) +
                                   " bits are not supported (use 2048, 3072 or 4096)");
        }
    case EVP_PKEY_EC: {
        std::array<char, 80> group{};
        std::size_t len = 0;
        if (EVP_PKEY_get_utf8_string_param(&key, OSSL_PKEY_PARAM_GROUP_NAME, group.data(), group.size(), &len) != 1) {
            return Status::Invalid("EC key without a named curve is not supported" + openssl_reason());
        }
        std::string_view name(group.data(), len);
        if (name == "prime256v1" || name == "P-256") {
            return KeyType::ec_p256;
        }
        if (name == "secp384r1" || name == "P-384") {
            return KeyType::ec_p384;
        }
        return Status::Invalid("EC curve " + std::string(name) + " is not supported (use P-256 or P-384)");
    }
    case EVP_PKEY_ED25519:
        return KeyType::ed25519;
    default: {
        const char* name = EVP_PKEY_get0_type_name(&key);
        return Status::Invalid("key type " + std::string(name != nullptr ? name : "unknown") + " is not supported");
    }
    }
}

bool is_rsa(const EVP_PKEY& key) { return EVP_PKEY_get_base_id(&key) == EVP_PKEY_RSA; }

// --- private keys ---

Result<PKey> parse_private_key(std::string_view pem)
{
    ASSIGN_OR_RETURN(PemScan scan, scan_pem(pem));
    std::vector<std::string_view> keys;
    for (const PemBlock& block : scan.blocks) {
        bool encrypted = block.type == "ENCRYPTED PRIVATE KEY" ||
                         block.text.find("Proc-Type: 4,ENCRYPTED") != std::string_view::npos;
        if (encrypted) {
            return Status::Invalid("private key is encrypted");
        }
        if (block.type == "PRIVATE KEY" || block.type == "RSA PRIVATE KEY" || block.type == "EC PRIVATE KEY") {
            keys.push_back(block.text);
        } else if (block.type != "EC PARAMETERS") {
            return Status::Invalid("expected only a private key, found a " + block.type + " block");
        }
    }
    if (keys.empty()) {
        return Status::Invalid("no private key found");
    }
    if (scan.stray_text) {
        return Status::Invalid("unexpected text outside the PEM blocks");
    }
    if (keys.size() > 1) {
        return Status::Invalid("more than one private key found");
    }
    Bio bio = mem_bio(keys.front());
    // A callback that refuses to supply a password: never prompt on a terminal.
    auto no_password = [](char*, int, int, void*) -> int { return -1; };
    PKey key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_password, nullptr) : nullptr);
    if (!key) {
        return Status::Invalid("malformed private key" + openssl_reason());
    }
    ERR_clear_error(); // decoders may queue errors from the formats they tried first
    return key;
}

Result<std::string> private_key_pem(const EVP_PKEY& key)
{
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), &key, nullptr, nullptr, 0, nullptr, nullptr) != 1) {
        return Status::IoError("cannot write the private key as PEM" + openssl_reason());
    }
    return bio_text(bio.get());
}

// --- certificates ---

Result<std::vector<Cert>> parse_certs(std::string_view pem)
{
    ASSIGN_OR_RETURN(PemScan scan, scan_pem(pem));
    for (std::size_t i = 0; i < scan.blocks.size(); ++i) {
        if (scan.blocks[i].type != "CERTIFICATE") {
            return Status::Invalid("PEM block " + std::to_string(i + 1) + " is a " + scan.blocks[i].type +
                                   ", expected only certificates");
        }
    }
    if (scan.stray_text) {
        return Status::Invalid("unexpected text outside the PEM blocks");
    }
    if (scan.blocks.empty()) {
        return Status::Invalid("no certificate found");
    }
    std::vector<Cert> certs;
    for (std::size_t i = 0; i < scan.blocks.size(); ++i) {
        Bio bio = mem_bio(scan.blocks[i].text);
        Cert cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
        if (!cert) {
            return Status::Invalid("certificate " + std::to_string(i + 1) + ": malformed PEM" + openssl_reason());
        }
        certs.push_back(std::move(cert));
    }
    return certs;
}

Result<Cert> parse_cert(std::string_view pem)
{
    ASSIGN_OR_RETURN(std::vector<Cert> certs, parse_certs(pem));
    if (certs.size() != 1) {
        return Status::Invalid("expected one certificate, found " + std::to_string(certs.size()));
    }
    return std::move(certs.front());
}

std::string cert_pem(const X509& cert)
{
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), &cert) != 1) {
        ERR_clear_error();
        return {};
    }
    return bio_text(bio.get());
}

std::string certs_pem(const std::vector<Cert>& certs)
{
    std::string out;
    for (const Cert& cert : certs) {
        out += cert_pem(*cert);
    }
    return out;
}

Result<Cert> clone_cert(const X509& cert)
{
    Cert copy(X509_dup(&cert));
    if (!copy) {
        return Status::IoError("cannot copy a certificate" + openssl_reason());
    }
    return copy;
}

Result<CertInfo> cert_info(const X509& cert)
{
    CertInfo info;
    Bignum serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(&cert), nullptr));
    if (!serial) {
        return Status::Invalid("certificate has an unreadable serial number" + openssl_reason());
    }
    ASSIGN_OR_RETURN(info.serial_hex, bn_to_hex(*serial));
    info.subject = name_text(X509_get_subject_name(&cert));
    info.issuer = name_text(X509_get_issuer_name(&cert));
    ASSIGN_OR_RETURN(info.not_before, cert_time(X509_get0_notBefore(&cert), "notBefore"));
    ASSIGN_OR_RETURN(info.not_after, cert_time(X509_get0_notAfter(&cert), "notAfter"));

    // crit: -1 absent, -2 duplicated, >= 0 present (then nullptr means undecodable).
    int crit = -1;
    GeneralNames gens(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(&cert, NID_subject_alt_name, &crit, nullptr)));
    if (!gens && crit != -1) {
        return Status::Invalid("certificate has a malformed or repeated subjectAltName" + openssl_reason());
    }
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens.get()); ++i) {
        const GENERAL_NAME* gen = sk_GENERAL_NAME_value(gens.get(), i);
        if (gen->type == GEN_DNS) {
            const ASN1_IA5STRING* dns = gen->d.dNSName;
            info.dns_names.push_back(to_lower(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                                                          static_cast<std::size_t>(ASN1_STRING_length(dns)))));
        } else if (gen->type == GEN_IPADD) {
            const ASN1_OCTET_STRING* ip = gen->d.iPAddress;
            int len = ASN1_STRING_length(ip);
            std::array<char, INET6_ADDRSTRLEN> text{};
            if ((len != 4 && len != 16) || inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(ip),
                                                     text.data(), text.size()) == nullptr) {
                return Status::Invalid("certificate has a subjectAltName IP address of " + std::to_string(len) +
                                       " bytes");
            }
            info.ip_addresses.emplace_back(text.data());
        }
    }

    crit = -1;
    BasicConstraints bc(
        static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(&cert, NID_basic_constraints, &crit, nullptr)));
    if (!bc && crit != -1) {
        return Status::Invalid("certificate has a malformed or repeated basicConstraints" + openssl_reason());
    }
    info.is_ca = bc && bc->ca != 0;
    ERR_clear_error();
    return info;
}

bool key_matches(const X509& cert, const EVP_PKEY& key)
{
    const EVP_PKEY* pub = X509_get0_pubkey(&cert);
    bool same = pub != nullptr && EVP_PKEY_eq(pub, &key) == 1;
    ERR_clear_error(); // comparing different key kinds queues errors
    return same;
}

Status verify_chain(const X509& leaf, const std::vector<Cert>& chain)
{
    if (chain.empty()) {
        int rc = X509_check_issued(mut(leaf), mut(leaf));
        // A self-signed end-entity certificate often lacks keyCertSign; that is fine here.
        bool self_issued = rc == X509_V_OK || rc == X509_V_ERR_KEYUSAGE_NO_CERTSIGN;
        if (!self_issued) {
            ERR_clear_error();
            return Status::Invalid("chain is missing: the leaf is issued by " + name_text(X509_get_issuer_name(&leaf)) +
                                   " but no chain was given");
        }
        if (X509_verify(mut(leaf), X509_get0_pubkey(&leaf)) != 1) {
            return Status::Invalid("the self-signed leaf's signature does not verify" + openssl_reason());
        }
        return Status::Ok();
    }
    for (std::size_t i = 0; i < chain.size(); ++i) {
        const X509& subject = i == 0 ? leaf : static_cast<const X509&>(*chain[i - 1]);
        const X509& issuer = *chain[i];
        std::string subject_name = link_name(i);
        std::string issuer_name = link_name(i + 1);
        int rc = X509_check_issued(mut(issuer), mut(subject));
        if (rc != X509_V_OK) {
            ERR_clear_error();
            return Status::Invalid("chain does not link: " + issuer_name + " (" +
                                   name_text(X509_get_subject_name(&issuer)) + ") did not issue " + subject_name +
                                   " (issuer " + name_text(X509_get_issuer_name(&subject)) +
                                   "): " + X509_verify_cert_error_string(rc));
        }
        EVP_PKEY* issuer_key = X509_get0_pubkey(&issuer);
        if (issuer_key == nullptr || X509_verify(mut(subject), issuer_key) != 1) {
            return Status::Invalid("chain does not link: the signature of " + subject_name +
                                   " does not verify with the key of " + issuer_name + openssl_reason());
        }
    }
    return Status::Ok();
}

Result<std::string> canonical_ip(std::string_view text)
{
    std::string s(text);
    std::array<unsigned char, 16> bytes{};
    std::array<char, INET6_ADDRSTRLEN> out{};
    int family = AF_INET;
    if (inet_pton(AF_INET, s.c_str(), bytes.data()) != 1) {
        family = AF_INET6;
        if (inet_pton(AF_INET6, s.c_str(), bytes.data()) != 1) {
            return Status::Invalid("not an IP address: '" + s + "'");
        }
    }
    if (inet_ntop(family, bytes.data(), out.data(), out.size()) == nullptr) {
        return Status::Invalid("not an IP address: '" + s + "'");
    }
    return std::string(out.data());
}

// --- CSRs ---

Result<CertReq> make_csr(const EVP_PKEY& key, const Names& names)
{
    ASSIGN_OR_RETURN(X509Name subject, name_subject(names, false));
    bool empty_subject = X509_NAME_entry_count(subject.get()) == 0;
    ASSIGN_OR_RETURN(X509Extension san, san_extension(names, empty_subject));
    CertReq req(X509_REQ_new());
    X509Extensions exts(sk_X509_EXTENSION_new_null());
    if (!req || !exts || X509_REQ_set_version(req.get(), 0) != 1 ||
        X509_REQ_set_subject_name(req.get(), subject.get()) != 1 || X509_REQ_set_pubkey(req.get(), mut(key)) != 1 ||
        sk_X509_EXTENSION_push(exts.get(), san.get()) <= 0 || X509_REQ_add_extensions(req.get(), exts.get()) != 1) {
        return Status::IoError("cannot build a CSR" + openssl_reason());
    }
    if (X509_REQ_sign(req.get(), mut(key), digest_for(key)) <= 0) {
        return Status::IoError("cannot sign the CSR" + openssl_reason());
    }
    return req;
}

std::string csr_pem(const X509_REQ& req)
{
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509_REQ(bio.get(), &req) != 1) {
        ERR_clear_error();
        return {};
    }
    return bio_text(bio.get());
}

Result<CertReq> parse_csr(std::string_view pem)
{
    Bio bio = mem_bio(pem);
    CertReq req(bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr) : nullptr);
    if (!req) {
        return Status::Invalid("no certificate request found" + openssl_reason());
    }
    EVP_PKEY* pub = X509_REQ_get0_pubkey(req.get());
    if (pub == nullptr || X509_REQ_verify(req.get(), pub) != 1) {
        return Status::Invalid("CSR signature does not verify" + openssl_reason());
    }
    return req;
}

Result<PKey> csr_public_key(const X509_REQ& req)
{
    PKey key(X509_REQ_get_pubkey(mut(req)));
    if (!key) {
        return Status::Invalid("CSR has no usable public key" + openssl_reason());
    }
    return key;
}

// --- issuing ---

Result<X509Name> parse_subject(std::string_view text)
{
    text = trim(text);
    if (text.empty()) {
        return Status::Invalid("empty subject");
    }
    // "/CN=x/O=y" (as openssl -subj) or "CN=x, O=y"; entries are added in written order.
    char sep = text.front() == '/' ? '/' : ',';
    if (sep == '/') {
        text.remove_prefix(1);
    }
    X509Name name(X509_NAME_new());
    if (!name) {
        return Status::IoError("cannot allocate a name" + openssl_reason());
    }
    while (true) {
        std::size_t cut = text.find(sep);
        std::string_view part = trim(text.substr(0, cut));
        std::size_t eq = part.find('=');
        std::string attr(trim(part.substr(0, eq)));
        if (eq == std::string_view::npos || attr.empty()) {
            return Status::Invalid("subject part '" + std::string(part) + "' is not of the form ATTRIBUTE=value");
        }
        std::string_view value = trim(part.substr(eq + 1));
        if (OBJ_txt2nid(attr.c_str()) == NID_undef) {
            ERR_clear_error();
            return Status::Invalid("unknown subject attribute '" + attr + "'");
        }
        if (value.empty()) {
            return Status::Invalid("subject attribute " + attr + " has an empty value");
        }
        if (X509_NAME_add_entry_by_txt(name.get(), attr.c_str(), MBSTRING_UTF8,
                                       reinterpret_cast<const unsigned char*>(value.data()),
                                       static_cast<int>(value.size()), -1, 0) != 1) {
            return Status::Invalid("subject attribute " + attr + " cannot hold '" + std::string(value) + "'" +
                                   openssl_reason());
        }
        if (cut == std::string_view::npos) {
            break;
        }
        text.remove_prefix(cut + 1);
    }
    return name;
}

Result<std::string> random_serial_hex(int bits)
{
    if (bits < 64 || bits > 159) {
        return Status::Invalid("serial size must be 64 to 159 bits, got " + std::to_string(bits));
    }
    int nbytes = (bits + 7) / 8;
    std::array<unsigned char, 20> bytes{};
    // Clearing the excess high bits keeps the value below 2^bits, so it stays positive
    // and fits the 20 octets RFC 5280 allows.
    auto mask = static_cast<unsigned char>(0xff >> (nbytes * 8 - bits));
    while (true) {
        if (RAND_bytes(bytes.data(), nbytes) != 1) {
            return Status::IoError("random number generator failed" + openssl_reason());
        }
        bytes[0] &= mask;
        Bignum bn(BN_bin2bn(bytes.data(), nbytes, nullptr));
        if (!bn) {
            return Status::IoError("cannot build a serial" + openssl_reason());
        }
        if (!BN_is_zero(bn.get())) {
            return bn_to_hex(*bn);
        }
    }
}

Result<Cert> make_ca_cert(const EVP_PKEY& ca_key, const CaParams& params)
{
    ASSIGN_OR_RETURN(X509Name subject, parse_subject(params.subject));
    ASSIGN_OR_RETURN(Cert cert,
                     new_cert(ca_key, *subject, *subject, params.serial_hex, params.not_before, params.not_after));
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, cert.get(), cert.get(), nullptr, nullptr, 0);
    TRY(add_conf_ext(*cert, ctx, NID_basic_constraints, "critical,CA:TRUE"));
    TRY(add_conf_ext(*cert, ctx, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature"));
    TRY(add_conf_ext(*cert, ctx, NID_subject_key_identifier, "hash"));
    TRY(add_authority_key_id(*cert, *cert));
    TRY(sign_cert(*cert, ca_key));
    return cert;
}

Result<Cert> sign_leaf(const EVP_PKEY& subject_key, const X509& ca_cert, const EVP_PKEY& ca_key,
                       const LeafParams& params)
{
    if (!key_matches(ca_cert, ca_key)) {
        return Status::Invalid("the CA key does not match the CA certificate");
    }
    ASSIGN_OR_RETURN(X509Name subject, name_subject(params.names, true));
    bool empty_subject = X509_NAME_entry_count(subject.get()) == 0;
    ASSIGN_OR_RETURN(X509Extension san, san_extension(params.names, empty_subject));
    ASSIGN_OR_RETURN(Cert cert, new_cert(subject_key, *subject, *X509_get_subject_name(&ca_cert), params.serial_hex,
                                         params.not_before, params.not_after));
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, mut(ca_cert), cert.get(), nullptr, nullptr, 0);
    TRY(add_conf_ext(*cert, ctx, NID_basic_constraints, "critical,CA:FALSE"));
    TRY(add_conf_ext(*cert, ctx, NID_key_usage,
                     is_rsa(subject_key) ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature"));
    TRY(add_conf_ext(*cert, ctx, NID_ext_key_usage, "serverAuth,clientAuth"));
    TRY(add_conf_ext(*cert, ctx, NID_subject_key_identifier, "hash"));
    TRY(add_authority_key_id(*cert, ca_cert));
    if (X509_add_ext(cert.get(), san.get(), -1) != 1) {
        return Status::IoError("cannot add subjectAltName" + openssl_reason());
    }
    TRY(sign_cert(*cert, ca_key));
    return cert;
}

// --- encodings, digests and MACs ---

namespace {

// EVP_EncodeBlock and EVP_DecodeBlock take an int length: long input goes in whole groups.
constexpr std::size_t k_base64_chunk = 3 * 4 * 4096; // bytes in, a multiple of 3 and of 4

const unsigned char* bytes_of(std::string_view s) { return reinterpret_cast<const unsigned char*>(s.data()); }
unsigned char* bytes_of(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

// A DER encoder of OpenSSL's i2d form; what names the object in the message.
template <typename Encode>
Result<std::string> der_of(Encode encode, const char* what)
{
    unsigned char* der = nullptr;
    const int length = encode(&der);
    if (length <= 0) {
        return Status::IoError(std::string("cannot encode ") + what + openssl_reason());
    }
    std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length));
    OPENSSL_free(der);
    return out;
}

// An EC key's field size in bytes: 32 for P-256, 48 for P-384, 0 for any other curve.
int ec_field_size(const EVP_PKEY& key)
{
    const int bits = EVP_PKEY_get_bits(&key);
    return bits == 256 ? 32 : bits == 384 ? 48 : 0;
}

// A big-number parameter of key as unsigned big-endian bytes, padded to pad bytes (pad 0: none).
Result<std::string> bn_param(const EVP_PKEY& key, const char* name, int pad)
{
    BIGNUM* raw = nullptr;
    if (EVP_PKEY_get_bn_param(&key, name, &raw) != 1) {
        return Status::Invalid(std::string("the account key has no ") + name + openssl_reason());
    }
    Bignum bn(raw);
    const int size = pad > 0 ? pad : BN_num_bytes(bn.get());
    std::string out(static_cast<std::size_t>(size), '\0');
    if (BN_bn2binpad(bn.get(), bytes_of(out), size) != size) {
        return Status::Invalid(std::string("the account key's ") + name + " does not fit" + openssl_reason());
    }
    return out;
}

} // namespace

std::string base64url(std::string_view bytes)
{
    // 4 characters per started group of 3 bytes, and room for the NUL EVP_EncodeBlock adds.
    std::string out((bytes.size() + 2) / 3 * 4 + 1, '\0');
    std::size_t written = 0;
    for (std::size_t pos = 0; pos < bytes.size(); pos += k_base64_chunk) {
        const std::string_view part = bytes.substr(pos, k_base64_chunk);
        written += static_cast<std::size_t>(
            EVP_EncodeBlock(bytes_of(out) + written, bytes_of(part), static_cast<int>(part.size())));
    }
    out.resize(written);
    while (!out.empty() && out.back() == '=') {
        out.pop_back();
    }
    std::replace(out.begin(), out.end(), '+', '-');
    std::replace(out.begin(), out.end(), '/', '_');
    return out;
}

Result<std::string> base64url_decode(std::string_view text)
{
    while (!text.empty() && text.back() == '=') {
        text.remove_suffix(1);
    }
    // EVP_DecodeBlock would skip whitespace and read '+' and '/': check the alphabet first.
    std::string standard(text);
    for (std::size_t i = 0; i < standard.size(); ++i) {
        char& c = standard[i];
        if (c == '-') {
            c = '+';
        } else if (c == '_') {
            c = '/';
        } else if (std::isalnum(static_cast<unsigned char>(c)) == 0) {
            // The position, not the character: the text may be a secret (an EAB MAC key).
            return Status::Invalid("not base64url: unexpected character at position " + std::to_string(i + 1));
        }
    }
    if (standard.size() % 4 == 1) {
        return Status::Invalid("not base64url: wrong length");
    }
    const std::size_t padding = (4 - standard.size() % 4) % 4;
    standard.append(padding, '=');
    std::string out(standard.size() / 4 * 3, '\0');
    std::size_t written = 0;
    for (std::size_t pos = 0; pos < standard.size(); pos += k_base64_chunk) {
        const std::string_view part = std::string_view(standard).substr(pos, k_base64_chunk);
        const int n = EVP_DecodeBlock(bytes_of(out) + written, bytes_of(part), static_cast<int>(part.size()));
        if (n < 0) {
            return Status::Invalid("not base64url" + openssl_reason());
        }
        written += static_cast<std::size_t>(n);
    }
    out.resize(written - padding); // EVP_DecodeBlock writes a zero byte for each '='
    return out;
}

std::string sha256(std::string_view bytes)
{
    std::string out(SHA256_DIGEST_LENGTH, '\0');
    SHA256(bytes_of(bytes), bytes.size(), bytes_of(out));
    return out;
}

void cleanse(std::string& secret) { OPENSSL_cleanse(secret.data(), secret.size()); }

Result<std::string> random_bytes(std::size_t n)
{
    std::string out(n, '\0');
    if (n > 0 && RAND_bytes(bytes_of(out), static_cast<int>(n)) != 1) {
        return Status::IoError("random number generator failed" + openssl_reason());
    }
    return out;
}

namespace {

constexpr std::size_t k_gcm_nonce = 12;
constexpr std::size_t k_gcm_tag = 16;

struct CipherCtxFree {
    void operator()(EVP_CIPHER_CTX* c) const { EVP_CIPHER_CTX_free(c); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

Status check_aes256_key(std::string_view key)
{
    if (key.size() != 32) {
        return Status::Invalid("an AES-256 key is 32 bytes, not " + std::to_string(key.size()));
    }
    return Status::Ok();
}

} // namespace

Result<std::string> aes256gcm_seal(std::string_view key, std::string_view aad, std::string_view plaintext)
{
    TRY(check_aes256_key(key));
    ASSIGN_OR_RETURN(std::string out, random_bytes(k_gcm_nonce));
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes_of(key), bytes_of(out)) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes_of(aad), static_cast<int>(aad.size())) != 1) {
        return Status::IoError("cannot start AES-256-GCM" + openssl_reason());
    }
    out.resize(k_gcm_nonce + plaintext.size() + k_gcm_tag);
    auto* at = bytes_of(out) + k_gcm_nonce;
    if (EVP_EncryptUpdate(ctx.get(), at, &len, bytes_of(plaintext), static_cast<int>(plaintext.size())) != 1) {
        return Status::IoError("cannot encrypt with AES-256-GCM" + openssl_reason());
    }
    int tail = 0;
    if (EVP_EncryptFinal_ex(ctx.get(), at + len, &tail) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(k_gcm_tag),
                            bytes_of(out) + k_gcm_nonce + plaintext.size()) != 1) {
        return Status::IoError("cannot finish AES-256-GCM" + openssl_reason());
    }
    return out;
}

Result<std::string> aes256gcm_open(std::string_view key, std::string_view aad, std::string_view sealed)
{
    TRY(check_aes256_key(key));
    if (sealed.size() < k_gcm_nonce + k_gcm_tag) {
        return Status::Corrupt("does not decrypt: " + std::to_string(sealed.size()) +
                               " bytes are too few for AES-256-GCM");
    }
    const std::size_t n = sealed.size() - k_gcm_nonce - k_gcm_tag;
    CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes_of(key), bytes_of(sealed)) != 1 ||
        EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes_of(aad), static_cast<int>(aad.size())) != 1) {
        return Status::IoError("cannot start AES-256-GCM" + openssl_reason());
    }
    std::string out(n, '\0');
    if (EVP_DecryptUpdate(ctx.get(), bytes_of(out), &len, bytes_of(sealed.substr(k_gcm_nonce, n)),
                          static_cast<int>(n)) != 1) {
        cleanse(out);
        return Status::IoError("cannot decrypt with AES-256-GCM" + openssl_reason());
    }
    std::string tag(sealed.substr(k_gcm_nonce + n));
    int tail = 0;
    if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(k_gcm_tag), tag.data()) != 1 ||
        EVP_DecryptFinal_ex(ctx.get(), bytes_of(out) + len, &tail) != 1) {
        ERR_clear_error();
        cleanse(out);
        return Status::Corrupt("does not decrypt (another key, or the bytes or their place were changed)");
    }
    return out;
}

Result<std::string> hmac_sha256(std::string_view key, std::string_view data)
{
    std::string out(EVP_MAX_MD_SIZE, '\0');
    unsigned int length = 0;
    if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), bytes_of(data), data.size(), bytes_of(out),
             &length) == nullptr) {
        return Status::IoError("cannot compute an HMAC-SHA256" + openssl_reason());
    }
    out.resize(length);
    return out;
}

Result<std::string> cert_der(const X509& cert)
{
    return der_of([&](unsigned char** der) { return i2d_X509(&cert, der); }, "the certificate");
}

Result<std::string> csr_der(const X509_REQ& req)
{
    return der_of([&](unsigned char** der) { return i2d_X509_REQ(&req, der); }, "the CSR");
}

Result<std::string> ari_cert_id(const X509& cert)
{
    const ASN1_OCTET_STRING* keyid = X509_get0_authority_key_id(mut(cert));
    if (keyid == nullptr) {
        ERR_clear_error();
        return Status::Invalid("the certificate has no authority key identifier");
    }
    Bignum serial(ASN1_INTEGER_to_BN(X509_get0_serialNumber(&cert), nullptr));
    if (!serial) {
        return Status::Invalid("the certificate's serial number is unreadable" + openssl_reason());
    }
    std::string octets(static_cast<std::size_t>(BN_num_bytes(serial.get())), '\0');
    BN_bn2bin(serial.get(), bytes_of(octets));
    if (octets.empty() || (static_cast<unsigned char>(octets.front()) & 0x80) != 0) {
        octets.insert(octets.begin(), '\0'); // DER: a positive INTEGER never starts with a set bit
    }
    const std::string aki(reinterpret_cast<const char*>(ASN1_STRING_get0_data(keyid)),
                          static_cast<std::size_t>(ASN1_STRING_length(keyid)));
    return base64url(aki) + "." + base64url(octets);
}

// --- JSON Web Signature ---

Result<std::string> jws_alg(const EVP_PKEY& key)
{
    if (EVP_PKEY_is_a(&key, "EC") && ec_field_size(key) != 0) {
        return std::string(ec_field_size(key) == 32 ? "ES256" : "ES384");
    }
    if (EVP_PKEY_is_a(&key, "RSA")) {
        return std::string("RS256");
    }
    return Status::Invalid("an ACME account key must be EC P-256, EC P-384 or RSA");
}

Result<JwkNumbers> jwk_numbers(const EVP_PKEY& key)
{
    ASSIGN_OR_RETURN(std::string alg, jws_alg(key));
    JwkNumbers out;
    if (alg == "RS256") {
        out.kty = "RSA";
        ASSIGN_OR_RETURN(out.n, bn_param(key, OSSL_PKEY_PARAM_RSA_N, 0));
        ASSIGN_OR_RETURN(out.e, bn_param(key, OSSL_PKEY_PARAM_RSA_E, 0));
        return out;
    }
    const int size = ec_field_size(key);
    out.kty = "EC";
    out.crv = size == 32 ? "P-256" : "P-384";
    ASSIGN_OR_RETURN(out.x, bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, size));
    ASSIGN_OR_RETURN(out.y, bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, size));
    return out;
}

namespace {

// Pushes `bytes` as a BIGNUM parameter; the builder keeps the number until it is freed.
Status push_bn(OSSL_PARAM_BLD& bld, std::vector<Bignum>& keep, const char* param, std::string_view member,
               const std::string& bytes)
{
    if (bytes.empty()) {
        return Status::Invalid("the JWK has no '" + std::string(member) + "'");
    }
    Bignum bn(BN_bin2bn(bytes_of(bytes), static_cast<int>(bytes.size()), nullptr));
    if (!bn || OSSL_PARAM_BLD_push_BN(&bld, param, bn.get()) != 1) {
        return Status::IoError("cannot build the JWK's key" + openssl_reason());
    }
    keep.push_back(std::move(bn));
    return Status::Ok();
}

} // namespace

Result<PKey> private_key_from_jwk(const JwkPrivate& jwk)
{
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!bld) {
        return Status::IoError("cannot build the JWK's key" + openssl_reason());
    }
    std::vector<Bignum> keep;
    const char* type = nullptr;
    std::string point; // EC: the uncompressed public point, alive until the key is made
    if (jwk.kty == "RSA") {
        type = "RSA";
        TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_N, "n", jwk.n));
        TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_E, "e", jwk.e));
        TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_D, "d", jwk.d));
        // The CRT members go together: all of them, or none (a key without them is slower).
        const bool crt = !jwk.p.empty() || !jwk.q.empty() || !jwk.dp.empty() || !jwk.dq.empty() || !jwk.qi.empty();
        if (crt) {
            TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_FACTOR1, "p", jwk.p));
            TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_FACTOR2, "q", jwk.q));
            TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_EXPONENT1, "dp", jwk.dp));
            TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_EXPONENT2, "dq", jwk.dq));
            TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_RSA_COEFFICIENT1, "qi", jwk.qi));
        }
    } else if (jwk.kty == "EC") {
        type = "EC";
        const std::size_t size = jwk.crv == "P-256" ? 32 : jwk.crv == "P-384" ? 48 : 0;
        if (size == 0) {
            return Status::Invalid("the JWK's curve '" + jwk.crv + "' is not P-256 or P-384");
        }
        if (jwk.x.size() != size || jwk.y.size() != size) {
            return Status::Invalid("the JWK's x and y are not " + std::to_string(size) + " bytes each, as " + jwk.crv +
                                   " needs");
        }
        point = '\x04' + jwk.x + jwk.y;
        const char* group = size == 32 ? "prime256v1" : "secp384r1";
        if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
            OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1) {
            return Status::IoError("cannot build the JWK's key" + openssl_reason());
        }
        TRY(push_bn(*bld, keep, OSSL_PKEY_PARAM_PRIV_KEY, "d", jwk.d));
    } else {
        return Status::Invalid("the JWK's kty '" + jwk.kty + "' is not RSA or EC");
    }
    Params params(OSSL_PARAM_BLD_to_param(bld.get()));
    PKeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
    EVP_PKEY* raw = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params.get()) != 1) {
        for (auto& bn : keep) {
            BN_clear(bn.get());
        }
        return Status::Invalid("the JWK is not a " + std::string(type) + " private key" + openssl_reason());
    }
    PKey key(raw);
    for (auto& bn : keep) {
        BN_clear(bn.get());
    }
    // fromdata takes the numbers as given: check that they make one key pair.
    PKeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
    if (!check || EVP_PKEY_pairwise_check(check.get()) != 1) {
        return Status::Invalid("the JWK's private and public numbers are not one key pair" + openssl_reason());
    }
    return key;
}

Result<std::string> jws_sign(const EVP_PKEY& key, std::string_view input)
{
    ASSIGN_OR_RETURN(std::string alg, jws_alg(key));
    MdCtx ctx(EVP_MD_CTX_new());
    const EVP_MD* md = alg == "ES384" ? EVP_sha384() : EVP_sha256();
    std::size_t length = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, mut(key)) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &length, bytes_of(input), input.size()) != 1) {
        return Status::IoError("cannot sign with the account key" + openssl_reason());
    }
    std::string signature(length, '\0');
    if (EVP_DigestSign(ctx.get(), bytes_of(signature), &length, bytes_of(input), input.size()) != 1) {
        return Status::IoError("cannot sign with the account key" + openssl_reason());
    }
    signature.resize(length);
    if (alg == "RS256") {
        return signature;
    }
    // JWS wants r || s, each padded to the curve size, not DER.
    const unsigned char* p = bytes_of(signature);
    EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(signature.size())));
    if (!sig) {
        return Status::IoError("cannot decode the account key's ECDSA signature" + openssl_reason());
    }
    const int size = ec_field_size(key);
    std::string raw(static_cast<std::size_t>(2 * size), '\0');
    if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), bytes_of(raw), size) != size ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), bytes_of(raw) + size, size) != size) {
        return Status::IoError("cannot encode the account key's ECDSA signature" + openssl_reason());
    }
    return raw;
}

} // namespace certfs::pki
