#include <catch2/catch.hpp>

#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <set>
#include <tuple>
#include <utility>

#include "core/pki.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::pki;
using namespace std::chrono_literals;
using Catch::Contains;

namespace {

const TimePoint k_not_before = from_unix(1'700'000'000); // 2023: UTCTime
const TimePoint k_not_after = from_unix(2'600'000'000);  // 2052: GeneralizedTime

PKey new_key(KeyType type = KeyType::ec_p256)
{
    auto key = generate_key(type);
    REQUIRE(key.ok());
    return std::move(key).value();
}

std::string new_serial()
{
    auto serial = random_serial_hex();
    REQUIRE(serial.ok());
    return serial.value();
}

struct Ca {
    PKey key;
    Cert cert;
};

Ca new_ca(KeyType type = KeyType::ec_p256, const std::string& subject = "/CN=Test CA")
{
    Ca ca{new_key(type), nullptr};
    auto cert = make_ca_cert(*ca.key, {subject, k_not_before, k_not_after, new_serial()});
    REQUIRE(cert.ok());
    ca.cert = std::move(cert).value();
    return ca;
}

Cert new_leaf(const EVP_PKEY& subject_key, const X509& ca_cert, const EVP_PKEY& ca_key,
              Names names = {{"www.example.com"}, {}}, TimePoint nb = k_not_before, TimePoint na = k_not_after)
{
    auto cert = sign_leaf(subject_key, ca_cert, ca_key, {std::move(names), nb, na, new_serial()});
    REQUIRE(cert.ok());
    return std::move(cert).value();
}

// A certificate built with raw OpenSSL, for shapes pki does not issue itself: intermediates,
// self-signed leaves, CAs without a subject key identifier. issuer == nullptr: self-signed.
Cert raw_cert(const EVP_PKEY& subject_key, const std::string& cn, const X509* issuer, const EVP_PKEY& issuer_key,
              const std::vector<std::pair<int, const char*>>& exts)
{
    Cert cert(X509_new());
    REQUIRE(cert);
    X509_set_version(cert.get(), 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 4242);
    X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
    X509_NAME* name = X509_get_subject_name(cert.get());
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                               0);
    X509_set_issuer_name(cert.get(), issuer != nullptr ? X509_get_subject_name(issuer) : name);
    X509_set_pubkey(cert.get(), const_cast<EVP_PKEY*>(&subject_key));
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer != nullptr ? const_cast<X509*>(issuer) : cert.get(), cert.get(), nullptr, nullptr, 0);
    for (const auto& [nid, value] : exts) {
        X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
        REQUIRE(ext != nullptr);
        X509_add_ext(cert.get(), ext, -1);
        X509_EXTENSION_free(ext);
    }
    REQUIRE(X509_sign(cert.get(), const_cast<EVP_PKEY*>(&issuer_key), EVP_sha256()) > 0);
    return cert;
}

// The certificate with one bit of its signature flipped, re-parsed from DER.
Cert tamper(const X509& cert)
{
    unsigned char* der = nullptr;
    int len = i2d_X509(&cert, &der);
    REQUIRE(len > 0);
    std::vector<unsigned char> bytes(der, der + len);
    OPENSSL_free(der);
    bytes.back() ^= 0x01;
    const unsigned char* p = bytes.data();
    Cert out(d2i_X509(nullptr, &p, len));
    REQUIRE(out);
    return out;
}

std::string pem_of_key(const EVP_PKEY& key, const EVP_CIPHER* cipher, bool traditional)
{
    Bio bio(BIO_new(BIO_s_mem()));
    static const char pass[] = "hunter22";
    auto* kstr = reinterpret_cast<const unsigned char*>(pass);
    int klen = cipher != nullptr ? static_cast<int>(sizeof pass - 1) : 0;
    int ok = traditional ? PEM_write_bio_PrivateKey_traditional(bio.get(), &key, cipher, kstr, klen, nullptr, nullptr)
                         : PEM_write_bio_PrivateKey(bio.get(), &key, cipher, kstr, klen, nullptr, nullptr);
    REQUIRE(ok == 1);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

template <typename T>
void check_invalid(const Result<T>& r, const std::string& why)
{
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::invalid);
    CHECK_THAT(r.status().message(), Contains(why));
    CHECK(ERR_peek_error() == 0); // the OpenSSL error queue was drained
}

void check_invalid(const Status& s, const std::string& why)
{
    REQUIRE_FALSE(s.ok());
    CHECK(s.code() == Code::invalid);
    CHECK_THAT(s.message(), Contains(why));
    CHECK(ERR_peek_error() == 0);
}

// Replaces one character in the middle of the first base64 line after the BEGIN line.
std::string damage_base64(std::string pem, std::size_t begin_at = 0)
{
    std::size_t line = pem.find('\n', pem.find("-----BEGIN", begin_at)) + 1;
    pem.replace(line + 10, 3, "!!!");
    return pem;
}

} // namespace

TEST_CASE("key type names round-trip and unknown names list the valid ones")
{
    for (const std::string& name : key_type_names()) {
        auto type = parse_key_type(name);
        REQUIRE(type.ok());
        CHECK(key_type_name(type.value()) == name);
    }
    CHECK(key_type_names().size() == 6);
    check_invalid(parse_key_type("ec-p521"), "unknown key type 'ec-p521'");
    check_invalid(parse_key_type("rsa"), "rsa-2048, rsa-3072, rsa-4096, ed25519");
}

TEST_CASE("every key type generates and round-trips through PEM and is recognised")
{
    for (const std::string& name : key_type_names()) {
        INFO(name);
        KeyType type = parse_key_type(name).value();
        PKey key = new_key(type);
        auto type_of = key_type_of(*key);
        REQUIRE(type_of.ok());
        CHECK(type_of.value() == type);
        CHECK(is_rsa(*key) == (name.rfind("rsa-", 0) == 0));

        auto pem = private_key_pem(*key);
        REQUIRE(pem.ok());
        CHECK(pem->rfind("-----BEGIN PRIVATE KEY-----\n", 0) == 0);
        CHECK(pem->back() == '\n');

        auto back = parse_private_key(pem.value());
        REQUIRE(back.ok());
        CHECK(EVP_PKEY_eq(back->get(), key.get()) == 1);
        CHECK(key_type_of(**back).value() == type);
    }
}

TEST_CASE("key_type_of refuses kinds we do not issue")
{
    PKey p521(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521"));
    REQUIRE(p521);
    check_invalid(key_type_of(*p521), "EC curve secp521r1 is not supported");
    PKey rsa1024(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{1024}));
    REQUIRE(rsa1024);
    check_invalid(key_type_of(*rsa1024), "RSA keys of 1024 bits are not supported");
    PKey x25519(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
    REQUIRE(x25519);
    check_invalid(key_type_of(*x25519), "key type X25519 is not supported");
}

TEST_CASE("traditional RSA and EC private keys are accepted")
{
    PKey rsa = new_key(KeyType::rsa_2048);
    std::string rsa_pem = pem_of_key(*rsa, nullptr, true);
    REQUIRE_THAT(rsa_pem, Contains("-----BEGIN RSA PRIVATE KEY-----"));
    auto rsa_back = parse_private_key(rsa_pem);
    REQUIRE(rsa_back.ok());
    CHECK(EVP_PKEY_eq(rsa_back->get(), rsa.get()) == 1);

    // As `openssl ecparam -genkey` writes it: an EC PARAMETERS block, then the key.
    PKey ec = new_key(KeyType::ec_p384);
    Bio params(BIO_new(BIO_s_mem()));
    REQUIRE(PEM_write_bio_Parameters(params.get(), ec.get()) == 1);
    char* data = nullptr;
    long n = BIO_get_mem_data(params.get(), &data);
    std::string ec_pem = std::string(data, static_cast<std::size_t>(n)) + pem_of_key(*ec, nullptr, true);
    REQUIRE_THAT(ec_pem, Contains("-----BEGIN EC PARAMETERS-----"));
    REQUIRE_THAT(ec_pem, Contains("-----BEGIN EC PRIVATE KEY-----"));
    auto ec_back = parse_private_key(ec_pem);
    REQUIRE(ec_back.ok());
    CHECK(EVP_PKEY_eq(ec_back->get(), ec.get()) == 1);
    CHECK(key_type_of(**ec_back).value() == KeyType::ec_p384);
}

TEST_CASE("encrypted private keys are refused and in both PEM forms")
{
    PKey key = new_key();
    std::string pkcs8 = pem_of_key(*key, EVP_aes_256_cbc(), false);
    REQUIRE_THAT(pkcs8, Contains("ENCRYPTED PRIVATE KEY"));
    check_invalid(parse_private_key(pkcs8), "private key is encrypted");

    std::string traditional = pem_of_key(*key, EVP_aes_256_cbc(), true);
    REQUIRE_THAT(traditional, Contains("Proc-Type: 4,ENCRYPTED"));
    check_invalid(parse_private_key(traditional), "private key is encrypted");
}

TEST_CASE("garbage, empty input, certificates and extra keys are not a private key")
{
    Ca ca = new_ca();
    std::string key_pem = private_key_pem(*ca.key).value();

    check_invalid(parse_private_key(""), "no private key found");
    check_invalid(parse_private_key("not a key at all\n"), "no private key found");
    check_invalid(parse_private_key(cert_pem(*ca.cert)), "found a CERTIFICATE block");
    check_invalid(parse_private_key(key_pem + cert_pem(*ca.cert)), "found a CERTIFICATE block");
    check_invalid(parse_private_key(key_pem + key_pem), "more than one private key");

    Bio bio(BIO_new(BIO_s_mem()));
    REQUIRE(PEM_write_bio_PUBKEY(bio.get(), ca.key.get()) == 1);
    char* data = nullptr;
    long n = BIO_get_mem_data(bio.get(), &data);
    check_invalid(parse_private_key(std::string(data, static_cast<std::size_t>(n))), "found a PUBLIC KEY block");

    std::string damaged = damage_base64(key_pem);
    auto r = parse_private_key(damaged);
    check_invalid(r, "malformed private key");
    // No key material in the message: not even a piece of the base64 body.
    std::size_t body = key_pem.find('\n') + 1;
    CHECK_THAT(r.status().message(), !Contains(key_pem.substr(body, 16)));

    std::string truncated = key_pem.substr(0, key_pem.find("-----END"));
    check_invalid(parse_private_key(truncated), "PRIVATE KEY block has no END line");
}

TEST_CASE("parse_certs reads every certificate in order and refuses anything else")
{
    Ca a = new_ca(KeyType::ec_p256, "/CN=First");
    Ca b = new_ca(KeyType::ec_p256, "/CN=Second");
    std::string two = cert_pem(*a.cert) + "\n" + cert_pem(*b.cert);

    auto certs = parse_certs(two);
    REQUIRE(certs.ok());
    REQUIRE(certs->size() == 2);
    CHECK(cert_info(*certs->at(0)).value().subject == "CN=First");
    CHECK(cert_info(*certs->at(1)).value().subject == "CN=Second");
    CHECK(certs_pem(certs.value()) == cert_pem(*a.cert) + cert_pem(*b.cert));
    CHECK(cert_pem(*a.cert).back() == '\n');

    check_invalid(parse_certs(two + private_key_pem(*a.key).value()),
                  "PEM block 3 is a PRIVATE KEY, expected only certificates");
    check_invalid(parse_certs(cert_pem(*a.cert) + damage_base64(cert_pem(*b.cert))), "certificate 2: malformed PEM (");
    check_invalid(parse_certs(""), "no certificate found");
    check_invalid(parse_certs("  \n\t\n"), "no certificate found");
    check_invalid(parse_certs("subject=CN = First\n" + cert_pem(*a.cert)), "outside the PEM");
    std::string a_pem = cert_pem(*a.cert);
    check_invalid(parse_certs(a_pem.substr(0, a_pem.find("-----END"))), "has no END line");

    REQUIRE(parse_cert(cert_pem(*a.cert)).ok());
    check_invalid(parse_cert(two), "expected one certificate, found 2");

    auto copy = clone_cert(*a.cert);
    REQUIRE(copy.ok());
    CHECK(cert_pem(**copy) == cert_pem(*a.cert));
}

TEST_CASE("cert_info reports what sign_leaf put in")
{
    Ca ca = new_ca();
    PKey key = new_key();
    std::string v6 = canonical_ip("2001:0DB8:0000:0000::0001").value();
    LeafParams params{
        {{"WWW.Example.com", "*.example.com"}, {"192.0.2.1", v6}}, k_not_before, k_not_after, new_serial()};
    auto leaf = sign_leaf(*key, *ca.cert, *ca.key, params);
    REQUIRE(leaf.ok());

    auto info = cert_info(**leaf);
    REQUIRE(info.ok());
    CHECK(info->serial_hex == params.serial_hex);
    CHECK(info->subject == "CN=WWW.Example.com");
    CHECK(info->issuer == "CN=Test CA");
    CHECK(to_unix(info->not_before) == 1'700'000'000);
    CHECK(to_unix(info->not_after) == 2'600'000'000);
    CHECK(info->dns_names == std::vector<std::string>{"www.example.com", "*.example.com"});
    CHECK(info->ip_addresses == std::vector<std::string>{"192.0.2.1", "2001:db8::1"});
    CHECK_FALSE(info->is_ca);

    auto ca_info = cert_info(*ca.cert);
    REQUIRE(ca_info.ok());
    CHECK(ca_info->is_ca);
    CHECK(ca_info->subject == ca_info->issuer);
    CHECK(ca_info->dns_names.empty());
}

TEST_CASE("leaf subject falls back to the first IP and or is empty with a critical SAN")
{
    Ca ca = new_ca();
    PKey key = new_key();
    Cert ip_only = new_leaf(*key, *ca.cert, *ca.key, {{}, {"192.0.2.7"}});
    CHECK(cert_info(*ip_only).value().subject == "CN=192.0.2.7");

    std::string long_name = std::string(60, 'a') + ".example.com";
    Cert long_dns = new_leaf(*key, *ca.cert, *ca.key, {{long_name}, {}});
    auto info = cert_info(*long_dns).value();
    CHECK(info.subject.empty());
    CHECK(info.dns_names == std::vector<std::string>{long_name});
    int idx = X509_get_ext_by_NID(long_dns.get(), NID_subject_alt_name, -1);
    REQUIRE(idx >= 0);
    CHECK(X509_EXTENSION_get_critical(X509_get_ext(long_dns.get(), idx)) == 1);

    Cert short_dns = new_leaf(*key, *ca.cert, *ca.key);
    idx = X509_get_ext_by_NID(short_dns.get(), NID_subject_alt_name, -1);
    REQUIRE(idx >= 0);
    CHECK(X509_EXTENSION_get_critical(X509_get_ext(short_dns.get(), idx)) == 0);
}

TEST_CASE("sign_leaf and make_ca_cert refuse bad parameters")
{
    Ca ca = new_ca();
    PKey key = new_key();
    PKey other = new_key();
    auto leaf = [&](Names names, TimePoint nb, TimePoint na, std::string serial, const EVP_PKEY& ca_key) {
        return sign_leaf(*key, *ca.cert, ca_key, {std::move(names), nb, na, std::move(serial)});
    };
    Names names{{"a.example"}, {}};
    check_invalid(leaf({}, k_not_before, k_not_after, new_serial(), *ca.key), "no names given");
    check_invalid(leaf(names, k_not_after, k_not_before, new_serial(), *ca.key),
                  "not_after must be later than not_before");
    check_invalid(leaf(names, k_not_before, k_not_before, new_serial(), *ca.key),
                  "not_after must be later than not_before");
    check_invalid(leaf(names, k_not_before, k_not_after, new_serial(), *other),
                  "the CA key does not match the CA certificate");
    check_invalid(leaf(names, k_not_before, k_not_after, "xyz", *ca.key), "serial must be");
    check_invalid(leaf(names, k_not_before, k_not_after, "000", *ca.key), "must not be zero");
    check_invalid(leaf({{"a.example"}, {"300.1.1.1"}}, k_not_before, k_not_after, new_serial(), *ca.key),
                  "not an IP address: '300.1.1.1'");
    check_invalid(leaf({{"bad name"}, {}}, k_not_before, k_not_after, new_serial(), *ca.key),
                  "not a DNS name: 'bad name'");

    check_invalid(make_ca_cert(*key, {"/CN=x", k_not_after, k_not_before, new_serial()}),
                  "not_after must be later than not_before");
    check_invalid(make_ca_cert(*key, {"/XX=x", k_not_before, k_not_after, new_serial()}),
                  "unknown subject attribute 'XX'");
}

TEST_CASE("each key type signs with its digest and its certificates verify")
{
    struct Case {
        KeyType type;
        int sig_nid;
    };
    for (Case c : {Case{KeyType::ec_p256, NID_ecdsa_with_SHA256}, Case{KeyType::ec_p384, NID_ecdsa_with_SHA384},
                   Case{KeyType::rsa_2048, NID_sha256WithRSAEncryption}, Case{KeyType::ed25519, NID_ED25519}}) {
        INFO(key_type_name(c.type));
        Ca ca = new_ca(c.type);
        CHECK(X509_get_signature_nid(ca.cert.get()) == c.sig_nid);
        CHECK(verify_chain(*ca.cert, {}).ok());
        PKey key = new_key(KeyType::ec_p256);
        Cert leaf = new_leaf(*key, *ca.cert, *ca.key);
        CHECK(X509_get_signature_nid(leaf.get()) == c.sig_nid);
        std::vector<Cert> chain;
        chain.push_back(clone_cert(*ca.cert).value());
        CHECK(verify_chain(*leaf, chain).ok());
    }
}

TEST_CASE("key_matches tells the certificate's key from another")
{
    Ca ca = new_ca();
    PKey key = new_key();
    Cert leaf = new_leaf(*key, *ca.cert, *ca.key);
    CHECK(key_matches(*leaf, *key));
    CHECK_FALSE(key_matches(*leaf, *ca.key));
    CHECK_FALSE(key_matches(*leaf, *new_key(KeyType::ed25519)));
    CHECK(key_matches(*ca.cert, *ca.key));
    CHECK(ERR_peek_error() == 0);
}

TEST_CASE("verify_chain accepts a linked chain and names the link that fails")
{
    Ca root = new_ca(KeyType::ec_p256, "/CN=Test Root");
    PKey inter_key = new_key();
    Cert inter = raw_cert(*inter_key, "Test Intermediate", root.cert.get(), *root.key,
                          {{NID_basic_constraints, "critical,CA:TRUE"},
                           {NID_key_usage, "critical,keyCertSign,cRLSign"},
                           {NID_subject_key_identifier, "hash"},
                           {NID_authority_key_identifier, "keyid:always"}});
    PKey key = new_key();
    Cert leaf = new_leaf(*key, *inter, *inter_key);
    auto chain_of = [](std::initializer_list<const X509*> certs) {
        std::vector<Cert> chain;
        for (const X509* c : certs) {
            chain.push_back(clone_cert(*c).value());
        }
        return chain;
    };

    SECTION("right order")
    {
        Status s = verify_chain(*leaf, chain_of({inter.get(), root.cert.get()}));
        CHECK(s.ok());
        CHECK(verify_chain(*leaf, chain_of({inter.get()})).ok());
    }
    SECTION("wrong order")
    {
        check_invalid(verify_chain(*leaf, chain_of({root.cert.get(), inter.get()})),
                      "chain does not link: certificate 1 of the chain (CN=Test Root) did not "
                      "issue the leaf (issuer CN=Test Intermediate)");
    }
    SECTION("wrong CA for the leaf")
    {
        Ca other = new_ca(KeyType::ec_p256, "/CN=Other CA");
        check_invalid(verify_chain(*leaf, chain_of({other.cert.get()})),
                      "certificate 1 of the chain (CN=Other CA) did not issue the leaf");
    }
    SECTION("wrong root above the intermediate")
    {
        Ca other = new_ca(KeyType::ec_p256, "/CN=Other Root");
        check_invalid(verify_chain(*leaf, chain_of({inter.get(), other.cert.get()})),
                      "certificate 2 of the chain (CN=Other Root) did not issue certificate 1 "
                      "of the chain (issuer CN=Test Root)");
    }
    SECTION("same CA name, different key")
    {
        Ca impostor = new_ca(KeyType::ec_p256, "/CN=Test Root");
        check_invalid(verify_chain(*inter, chain_of({impostor.cert.get()})),
                      "certificate 1 of the chain (CN=Test Root) did not issue the leaf");
    }
    SECTION("tampered signature")
    {
        Cert bad = tamper(*leaf);
        check_invalid(verify_chain(*bad, chain_of({inter.get(), root.cert.get()})),
                      "chain does not link: the signature of the leaf does not verify with the "
                      "key of certificate 1 of the chain");
        Cert bad_inter = tamper(*inter);
        check_invalid(verify_chain(*leaf, chain_of({bad_inter.get(), root.cert.get()})),
                      "the signature of certificate 1 of the chain does not verify with the key "
                      "of certificate 2 of the chain");
    }
    SECTION("empty chain")
    {
        check_invalid(verify_chain(*leaf, {}), "chain is missing: the leaf is issued by CN=Test Intermediate but no "
                                               "chain was given");
    }
}

TEST_CASE("a self-signed leaf needs no chain and but its signature must verify")
{
    PKey key = new_key();
    // Typical of self-signed server certificates: no keyCertSign.
    Cert self = raw_cert(*key, "self.example", nullptr, *key,
                         {{NID_basic_constraints, "critical,CA:FALSE"}, {NID_key_usage, "critical,digitalSignature"}});
    CHECK(verify_chain(*self, {}).ok());
    check_invalid(verify_chain(*tamper(*self), {}), "the self-signed leaf's signature does not verify");
}

TEST_CASE("a CA without a subject key identifier can still sign leaves")
{
    PKey ca_key = new_key();
    Cert ca = raw_cert(*ca_key, "Old CA", nullptr, *ca_key, {{NID_basic_constraints, "critical,CA:TRUE"}});
    REQUIRE(X509_get_ext_by_NID(ca.get(), NID_subject_key_identifier, -1) < 0);
    PKey key = new_key();
    Cert leaf = new_leaf(*key, *ca, *ca_key);
    CHECK(X509_get_ext_by_NID(leaf.get(), NID_authority_key_identifier, -1) >= 0);
    std::vector<Cert> chain;
    chain.push_back(clone_cert(*ca).value());
    CHECK(verify_chain(*leaf, chain).ok());
}

TEST_CASE("canonical_ip normalises addresses and refuses names")
{
    CHECK(canonical_ip("192.0.2.1").value() == "192.0.2.1");
    CHECK(canonical_ip("2001:0DB8:0000:0000:0000:0000:0000:0001").value() == "2001:db8::1");
    CHECK(canonical_ip("::1").value() == "::1");
    CHECK(canonical_ip("::ffff:192.0.2.1").value() == "::ffff:192.0.2.1");
    check_invalid(canonical_ip("example.com"), "not an IP address: 'example.com'");
    check_invalid(canonical_ip(""), "not an IP address: ''");
    check_invalid(canonical_ip("1.2.3"), "not an IP address: '1.2.3'");
    check_invalid(canonical_ip("192.0.2.1 "), "not an IP address");
}

TEST_CASE("make_csr and parse_csr round-trip the key, the subject and the names")
{
    for (KeyType type : {KeyType::ec_p256, KeyType::ed25519}) {
        INFO(key_type_name(type));
        PKey key = new_key(type);
        auto csr = make_csr(*key, {{"www.example.com", "*.example.com"}, {"2001:db8::1"}});
        REQUIRE(csr.ok());
        std::string pem = csr_pem(**csr);
        CHECK(pem.rfind("-----BEGIN CERTIFICATE REQUEST-----\n", 0) == 0);

        auto parsed = parse_csr(pem);
        REQUIRE(parsed.ok());
        auto pub = csr_public_key(**parsed);
        REQUIRE(pub.ok());
        CHECK(EVP_PKEY_eq(pub->get(), key.get()) == 1);

        Bio bio(BIO_new(BIO_s_mem()));
        X509_NAME_print_ex(bio.get(), X509_REQ_get_subject_name(parsed->get()), 0, XN_FLAG_RFC2253);
        char* data = nullptr;
        long n = BIO_get_mem_data(bio.get(), &data);
        CHECK(std::string(data, static_cast<std::size_t>(n)) == "CN=www.example.com");

        STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(parsed->get());
        REQUIRE(exts != nullptr);
        auto* gens = static_cast<GENERAL_NAMES*>(X509V3_get_d2i(exts, NID_subject_alt_name, nullptr, nullptr));
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
        REQUIRE(gens != nullptr);
        REQUIRE(sk_GENERAL_NAME_num(gens) == 3);
        CHECK(sk_GENERAL_NAME_value(gens, 0)->type == GEN_DNS);
        CHECK(sk_GENERAL_NAME_value(gens, 1)->type == GEN_DNS);
        const GENERAL_NAME* ip = sk_GENERAL_NAME_value(gens, 2);
        CHECK(ip->type == GEN_IPADD);
        CHECK(ASN1_STRING_length(ip->d.iPAddress) == 16);
        GENERAL_NAMES_free(gens);
    }
}

TEST_CASE("parse_csr refuses garbage and a CSR whose signature does not verify")
{
    PKey key = new_key();
    check_invalid(parse_csr("not a CSR"), "no certificate request found");
    check_invalid(make_csr(*key, {}), "no names given");

    CertReq csr = std::move(make_csr(*key, {{"www.example.com"}, {}})).value();
    unsigned char* der = nullptr;
    int len = i2d_X509_REQ(csr.get(), &der);
    REQUIRE(len > 0);
    der[len - 1] ^= 0x01;
    const unsigned char* p = der;
    CertReq bad(d2i_X509_REQ(nullptr, &p, len));
    OPENSSL_free(der);
    REQUIRE(bad);
    check_invalid(parse_csr(csr_pem(*bad)), "CSR signature does not verify");
}

TEST_CASE("random_serial_hex draws distinct positive serials of the asked size")
{
    std::set<std::string> seen;
    std::size_t long_ones = 0;
    for (int i = 0; i < 1000; ++i) {
        std::string s = random_serial_hex().value();
        REQUIRE(!s.empty());
        REQUIRE(s.size() <= 40);
        REQUIRE(s.find_first_not_of("0123456789abcdef") == std::string::npos);
        REQUIRE(s[0] != '0');
        if (s.size() == 40) {
            REQUIRE(s[0] <= '7'); // below 2^159: the top bit of 20 octets is clear
        }
        if (s.size() >= 39) {
            ++long_ones;
        }
        seen.insert(s);
    }
    CHECK(seen.size() == 1000);
    CHECK(long_ones > 900); // all but ~1 in 128 draws have 39 or 40 digits

    for (int i = 0; i < 100; ++i) {
        std::string s = random_serial_hex(64).value();
        REQUIRE(s.size() <= 16);
    }
    check_invalid(random_serial_hex(63), "serial size must be 64 to 159 bits, got 63");
    check_invalid(random_serial_hex(160), "got 160");
}

TEST_CASE("parse_subject accepts both notations and refuses bad parts")
{
    auto entries = [](const X509_NAME& name) {
        std::vector<std::string> out;
        for (int i = 0; i < X509_NAME_entry_count(&name); ++i) {
            const X509_NAME_ENTRY* e = X509_NAME_get_entry(&name, i);
            const ASN1_STRING* v = X509_NAME_ENTRY_get_data(e);
            out.push_back(std::string(OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e)))) + "=" +
                          std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(v)),
                                      static_cast<std::size_t>(ASN1_STRING_length(v))));
        }
        return out;
    };
    auto slash = parse_subject("/CN=certfs local CA/O=Example Org");
    REQUIRE(slash.ok());
    CHECK(entries(**slash) == std::vector<std::string>{"CN=certfs local CA", "O=Example Org"});
    auto comma = parse_subject(" CN = certfs local CA ,  O=Example Org ");
    REQUIRE(comma.ok());
    CHECK(entries(**comma) == std::vector<std::string>{"CN=certfs local CA", "O=Example Org"});

    check_invalid(parse_subject("FOO=bar"), "unknown subject attribute 'FOO'");
    check_invalid(parse_subject("CN="), "subject attribute CN has an empty value");
    check_invalid(parse_subject("/CN=x/O="), "subject attribute O has an empty value");
    check_invalid(parse_subject("  "), "empty subject");
    check_invalid(parse_subject("just text"), "'just text' is not of the form ATTRIBUTE=value");
}

TEST_CASE("the openssl command line accepts what sign_leaf issues")
{
    test::TempDir dir;
    auto now = std::chrono::system_clock::now();
    for (KeyType ca_type : {KeyType::ec_p256, KeyType::ed25519}) {
        INFO(key_type_name(ca_type));
        Ca ca{new_key(ca_type), nullptr};
        ca.cert = make_ca_cert(*ca.key, {"/CN=certfs test CA", now - 1h, now + 24h, new_serial()}).value();
        PKey rsa_key = new_key(KeyType::rsa_2048);
        PKey ec_key = new_key(KeyType::ec_p256);
        Names names{{"www.example.com"}, {"192.0.2.1"}};
        Cert rsa_leaf = new_leaf(*rsa_key, *ca.cert, *ca.key, names, now - 1h, now + 1h);
        Cert ec_leaf = new_leaf(*ec_key, *ca.cert, *ca.key, names, now - 1h, now + 1h);
        test::write_file(dir / "ca.pem", cert_pem(*ca.cert));
        test::write_file(dir / "rsa.pem", cert_pem(*rsa_leaf));
        test::write_file(dir / "ec.pem", cert_pem(*ec_leaf));

        for (const char* leaf : {"rsa.pem", "ec.pem"}) {
            auto verify =
                test::run({"/usr/bin/openssl", "verify", "-CAfile", (dir / "ca.pem").string(), (dir / leaf).string()});
            INFO(verify.out << verify.err);
            CHECK(verify.exit_code == 0);
            CHECK_THAT(verify.out, Contains(": OK"));
        }

        auto rsa_text = test::run({"/usr/bin/openssl", "x509", "-noout", "-text", "-in", (dir / "rsa.pem").string()});
        REQUIRE(rsa_text.exit_code == 0);
        for (const char* want :
             {"CA:FALSE", "TLS Web Server Authentication", "TLS Web Client Authentication",
              "X509v3 Subject Key Identifier", "X509v3 Authority Key Identifier", "Digital Signature, Key Encipherment",
              "DNS:www.example.com", "IP Address:192.0.2.1", "Subject: CN = www.example.com"}) {
            CHECK_THAT(rsa_text.out, Contains(want));
        }
        auto ec_text = test::run({"/usr/bin/openssl", "x509", "-noout", "-text", "-in", (dir / "ec.pem").string()});
        REQUIRE(ec_text.exit_code == 0);
        CHECK_THAT(ec_text.out, Contains("Digital Signature"));
        CHECK_THAT(ec_text.out, !Contains("Key Encipherment"));

        auto ca_text = test::run({"/usr/bin/openssl", "x509", "-noout", "-text", "-in", (dir / "ca.pem").string()});
        REQUIRE(ca_text.exit_code == 0);
        CHECK_THAT(ca_text.out, Contains("CA:TRUE"));
        CHECK_THAT(ca_text.out, Contains("Certificate Sign, CRL Sign"));
        CHECK_THAT(ca_text.out, Contains("X509v3 Authority Key Identifier"));
    }
}

// --- encodings, digests, MACs and JSON Web Signatures ---

namespace {

std::string unhex(std::string_view hex)
{
    std::string out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
    }
    return out;
}

// Verifies a JWS signature as an ACME server does: r || s turned back into DER for ECDSA.
bool jws_verifies(const EVP_PKEY& key, std::string_view input, std::string signature)
{
    const EVP_MD* md = EVP_sha256();
    if (EVP_PKEY_is_a(&key, "EC")) {
        md = signature.size() == 96 ? EVP_sha384() : EVP_sha256();
        const auto half = static_cast<int>(signature.size() / 2);
        const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
        ECDSA_SIG* sig = ECDSA_SIG_new();
        REQUIRE(ECDSA_SIG_set0(sig, BN_bin2bn(raw, half, nullptr), BN_bin2bn(raw + half, half, nullptr)) == 1);
        unsigned char* der = nullptr;
        const int length = i2d_ECDSA_SIG(sig, &der);
        REQUIRE(length > 0);
        signature.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(length));
        OPENSSL_free(der);
        ECDSA_SIG_free(sig);
    }
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const bool ok = EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, const_cast<EVP_PKEY*>(&key)) == 1 &&
                    EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                     reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok;
}

} // namespace

TEST_CASE("base64url encodes RFC 4648's test vectors in the URL alphabet without padding")
{
    const std::vector<std::pair<std::string, std::string>> vectors = {{"", ""},
                                                                      {"f", "Zg"},
                                                                      {"fo", "Zm8"},
                                                                      {"foo", "Zm9v"},
                                                                      {"foob", "Zm9vYg"},
                                                                      {"fooba", "Zm9vYmE"},
                                                                      {"foobar", "Zm9vYmFy"},
                                                                      {unhex("fbff"), "-_8"},
                                                                      {unhex("fbffbf"), "-_-_"},
                                                                      {unhex("03e0"), "A-A"},
                                                                      {unhex("3fff"), "P_8"}};
    for (const auto& [bytes, text] : vectors) {
        INFO(text);
        CHECK(base64url(bytes) == text);
        CHECK(base64url_decode(text).value() == bytes);
    }
    // Trailing padding, as standard base64 writes it, is accepted.
    CHECK(base64url_decode("Zm8=").value() == "fo");
    CHECK(base64url_decode("Zg==").value() == "f");
    CHECK(base64url_decode("-_8=").value() == unhex("fbff"));
}

TEST_CASE("base64url round-trips input longer than OpenSSL encodes in one call")
{
    std::string bytes;
    for (int i = 0; i < 200'001; ++i) {
        bytes.push_back(static_cast<char>(i * 7 % 256));
    }
    const std::string text = base64url(bytes);
    CHECK(text.size() == (bytes.size() * 4 + 2) / 3);
    CHECK(text.find_first_of("+/=") == std::string::npos);
    CHECK(base64url_decode(text).value() == bytes);
}

TEST_CASE("base64url_decode names the position of a bad character and refuses an impossible length")
{
    // Standard base64's '+' and '/', whitespace, and '=' anywhere but at the end are refused.
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"Zm+v", "not base64url: unexpected character at position 3"},
        {"Zm9/", "not base64url: unexpected character at position 4"},
        {"Zm9v Zg", "not base64url: unexpected character at position 5"},
        {"Zm=v", "not base64url: unexpected character at position 3"},
        {"Zm9vY", "not base64url: wrong length"},
        {"Z", "not base64url: wrong length"}};
    for (const auto& [text, why] : bad) {
        INFO(text);
        check_invalid(base64url_decode(text), why);
    }
}

TEST_CASE("sha256 and hmac_sha256 give the digests of their RFC test vectors")
{
    CHECK(sha256("abc") == unhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    // RFC 4231 test case 2: a key shorter than the block, text with spaces.
    CHECK(hmac_sha256("Jefe", "what do ya want for nothing?").value() ==
          unhex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    CHECK(hmac_sha256("", "").value().size() == 32);
}

TEST_CASE("jws_sign gives ES256 and ES384 as r || s and RS256 that verify with the key")
{
    const std::string input = "eyJhbGciOiJFUzI1NiJ9.eyJhIjoxfQ";
    for (auto [type, alg, size] : {std::tuple{KeyType::ec_p256, "ES256", 64}, std::tuple{KeyType::ec_p384, "ES384", 96},
                                   std::tuple{KeyType::rsa_2048, "RS256", 256}}) {
        INFO(alg);
        PKey key = new_key(type);
        CHECK(jws_alg(*key).value() == alg);
        const std::string signature = jws_sign(*key, input).value();
        CHECK(signature.size() == static_cast<std::size_t>(size));
        CHECK(jws_verifies(*key, input, signature));
        CHECK_FALSE(jws_verifies(*key, input + "x", signature));
        CHECK(ERR_peek_error() == 0);
    }
}

TEST_CASE("jws_alg and jws_sign refuse keys that ACME account keys cannot be")
{
    PKey ed25519 = new_key(KeyType::ed25519);
    check_invalid(jws_alg(*ed25519), "an ACME account key must be EC P-256, EC P-384 or RSA");
    check_invalid(jws_sign(*ed25519, "x"), "an ACME account key must be EC P-256, EC P-384 or RSA");
    check_invalid(jwk_numbers(*ed25519), "an ACME account key must be EC P-256, EC P-384 or RSA");
    PKey p521(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521"));
    REQUIRE(p521);
    check_invalid(jws_alg(*p521), "EC P-256, EC P-384 or RSA");
}

TEST_CASE("jwk_numbers gives EC coordinates padded to the field size and RSA's n and e")
{
    PKey ec = new_key(KeyType::ec_p256);
    JwkNumbers p256 = jwk_numbers(*ec).value();
    CHECK(p256.kty == "EC");
    CHECK(p256.crv == "P-256");
    CHECK(p256.x.size() == 32);
    CHECK(p256.y.size() == 32);
    CHECK(p256.n.empty());
    CHECK(jwk_numbers(*new_key(KeyType::ec_p384)).value().x.size() == 48);
    JwkNumbers rsa = jwk_numbers(*new_key(KeyType::rsa_2048)).value();
    CHECK(rsa.kty == "RSA");
    CHECK(rsa.e == unhex("010001"));
    CHECK(rsa.n.size() == 256);
    CHECK(rsa.x.empty());
}

TEST_CASE("cert_der and csr_der give the DER that OpenSSL reads back")
{
    Ca ca = new_ca();
    PKey key = new_key();
    Cert leaf = new_leaf(*key, *ca.cert, *ca.key);
    const std::string der = cert_der(*leaf).value();
    const auto* p = reinterpret_cast<const unsigned char*>(der.data());
    Cert back(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    REQUIRE(back);
    CHECK(X509_cmp(back.get(), leaf.get()) == 0);

    CertReq csr = make_csr(*key, {{"www.example.com"}, {}}).value();
    const std::string csr_bytes = csr_der(*csr).value();
    p = reinterpret_cast<const unsigned char*>(csr_bytes.data());
    CertReq csr_back(d2i_X509_REQ(nullptr, &p, static_cast<long>(csr_bytes.size())));
    REQUIRE(csr_back);
    CHECK(csr_pem(*csr_back) == csr_pem(*csr));
}

TEST_CASE("ari_cert_id is RFC 9773's example id and joins the CA's key id to the leaf's serial")
{
    // RFC 9773 §4.1: keyIdentifier 69:88:5B:...:C8:D4 and serial 0x87654321.
    PKey key = new_key();
    Cert cert = raw_cert(*key, "ari.example", nullptr, *key, {});
    Asn1Integer serial(ASN1_INTEGER_new());
    REQUIRE(ASN1_INTEGER_set_uint64(serial.get(), 0x87654321) == 1);
    REQUIRE(X509_set_serialNumber(cert.get(), serial.get()) == 1);
    AuthorityKeyId akid(AUTHORITY_KEYID_new());
    akid->keyid = ASN1_OCTET_STRING_new();
    const std::string keyid = unhex("69885b6b87464041e1b37b847ba0ae2cde01c8d4");
    REQUIRE(ASN1_OCTET_STRING_set(akid->keyid, reinterpret_cast<const unsigned char*>(keyid.data()),
                                  static_cast<int>(keyid.size())) == 1);
    REQUIRE(X509_add1_ext_i2d(cert.get(), NID_authority_key_identifier, akid.get(), 0, X509V3_ADD_DEFAULT) == 1);
    REQUIRE(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);
    CHECK(ari_cert_id(*cert).value() == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");

    // A leaf of ours: the CA's subject key id, then the serial's DER content octets.
    Ca ca = new_ca();
    Cert leaf = new_leaf(*key, *ca.cert, *ca.key);
    const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(ca.cert.get());
    REQUIRE(ski != nullptr);
    std::string hex = cert_info(*leaf).value().serial_hex;
    hex = (hex.size() % 2 == 1 ? "0" : "") + hex;
    std::string octets = unhex(hex);
    if ((static_cast<unsigned char>(octets.front()) & 0x80) != 0) {
        octets.insert(octets.begin(), '\0');
    }
    CHECK(ari_cert_id(*leaf).value() == base64url(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ski)),
                                                              static_cast<std::size_t>(ASN1_STRING_length(ski)))) +
                                            "." + base64url(octets));

    check_invalid(ari_cert_id(*raw_cert(*key, "no-aki.example", nullptr, *key, {})),
                  "the certificate has no authority key identifier");
}

// A certificate "valid for ever" (RFC 5280 §4.1.2.5 suggests 99991231235959Z): its notAfter
// overflowed the nanoseconds of a TimePoint (found from fuzz_text's and fuzz_acme_json's
// crashes in from_unix; fuzz/regressions/cert-valid-until-9966.pem).
TEST_CASE("a certificate valid until the year 9966 is valid as far as a TimePoint reaches")
{
    auto cert = parse_cert(test::read_file(CERTFS_FUZZ_REGRESSIONS_DIR "/cert-valid-until-9966.pem"));
    REQUIRE(cert.ok());
    auto info = cert_info(**cert);
    REQUIRE(info.ok());
    CHECK(info->not_after == from_unix(to_unix(TimePoint::max())));
    CHECK(format_rfc3339(info->not_after) == "2262-04-11T23:47:15Z");
    CHECK(info->not_before < info->not_after);
}
