// The ACME issuer: the JWS pieces against RFC vectors and OpenSSL, then whole issuances
// against a real ACME server (pebble on loopback, tests/support/pebble.hpp) through the renewal
// pipeline, with the built-in http-01 responder.
#include <catch2/catch.hpp>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>

#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "renew/acme_issuer.hpp"
#include "renew/acme_jws.hpp"
#include "renew/context.hpp"
#include "renew/renewer.hpp"
#include "tests/support/acme_fixture.hpp"
#include "tests/support/pebble.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::require_error;
using certfs::test::TempDir;
using certfs::test::write_file;
using nlohmann::json;

namespace {

std::string bytes(std::initializer_list<int> values)
{
    std::string out;
    for (int v : values) {
        out.push_back(static_cast<char>(v));
    }
    return out;
}

// The RSA public key of RFC 7638 §3.1.
PKey rfc7638_key()
{
    const std::string n = acme::base64url_decode("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK"
                                                 "7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
                                                 "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
                                                 "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
                                                 "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
                                                 "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
                                                 "kEgU8awapJzKnqDKgw")
                              .value();
    BIGNUM* bn_n = BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()), static_cast<int>(n.size()), nullptr);
    BIGNUM* bn_e = BN_new();
    BN_set_word(bn_e, 65537);
    OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e);
    OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr);
    EVP_PKEY* key = nullptr;
    REQUIRE(EVP_PKEY_fromdata_init(ctx) == 1);
    REQUIRE(EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) == 1);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn_n);
    BN_free(bn_e);
    return PKey(key);
}

// Verifies a flattened JWS with the key, as an ACME server does (r || s turned back to DER).
bool verify_jws(const EVP_PKEY& key, const json& jws)
{
    const std::string input = jws["protected"].get<std::string>() + "." + jws["payload"].get<std::string>();
    std::string sig = acme::base64url_decode(jws["signature"].get<std::string>()).value();
    if (EVP_PKEY_is_a(&key, "EC")) {
        const auto half = static_cast<int>(sig.size() / 2);
        ECDSA_SIG* ecdsa = ECDSA_SIG_new();
        ECDSA_SIG_set0(ecdsa, BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()), half, nullptr),
                       BN_bin2bn(reinterpret_cast<const unsigned char*>(sig.data()) + half, half, nullptr));
        unsigned char* der = nullptr;
        int length = i2d_ECDSA_SIG(ecdsa, &der);
        sig.assign(reinterpret_cast<char*>(der), static_cast<std::size_t>(length));
        OPENSSL_free(der);
        ECDSA_SIG_free(ecdsa);
    }
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    bool ok = EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, const_cast<EVP_PKEY*>(&key)) == 1 &&
              EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                               reinterpret_cast<const unsigned char*>(input.data()), input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}

} // namespace

TEST_CASE("acme: base64url encodes without padding and decodes back")
{
    CHECK(acme::base64url("") == "");
    CHECK(acme::base64url("f") == "Zg");
    CHECK(acme::base64url("fo") == "Zm8");
    CHECK(acme::base64url("foo") == "Zm9v");
    CHECK(acme::base64url(bytes({0xfb, 0xff, 0xbf})) == "-_-_");
    CHECK(acme::base64url_decode("-_-_").value() == bytes({0xfb, 0xff, 0xbf}));
    CHECK(acme::base64url_decode("Zm8").value() == "fo");
    CHECK(acme::base64url_decode("Zm8=").value() == "fo");
    require_error(acme::base64url_decode("Zm+v"), Code::invalid, "unexpected character at position 3");
    require_error(acme::base64url_decode("Zm9vY"), Code::invalid, "wrong length");
}

TEST_CASE("acme: the JWK thumbprint of RFC 7638's example key")
{
    PKey key = rfc7638_key();
    CHECK(acme::jwk_thumbprint(*key).value() == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    CHECK(acme::public_jwk(*key).value()["e"] == "AQAB");
}

TEST_CASE("acme: signatures verify with the account key for ES256 and RS256")
{
    for (auto type : {pki::KeyType::ec_p256, pki::KeyType::rsa_2048}) {
        PKey key = pki::generate_key(type).value();
        json jws =
            acme::sign_jws(*key, json{{"url", "https://ca.test/new-order"}, {"nonce", "abc"}}, "{\"a\":1}").value();
        json header = json::parse(acme::base64url_decode(jws["protected"].get<std::string>()).value());
        CHECK(header["alg"] == (type == pki::KeyType::ec_p256 ? "ES256" : "RS256"));
        CHECK(header["nonce"] == "abc");
        CHECK(acme::base64url_decode(jws["payload"].get<std::string>()).value() == "{\"a\":1}");
        if (type == pki::KeyType::ec_p256) {
            CHECK(acme::base64url_decode(jws["signature"].get<std::string>()).value().size() == 64);
        }
        CHECK(verify_jws(*key, jws));
        // A changed payload does not verify.
        jws["payload"] = acme::base64url("{\"a\":2}");
        CHECK_FALSE(verify_jws(*key, jws));
    }
    require_error(acme::jws_alg(*pki::generate_key(pki::KeyType::ed25519).value()), Code::invalid, "EC P-256");
}

TEST_CASE("acme: problem documents become a status with the code the renewer maps to a state")
{
    const json rejected = {
        {"type", "urn:ietf:params:acme:error:rejectedIdentifier"},
        {"detail", "Error creating new order"},
        {"subproblems", json::array({{{"type", "urn:ietf:params:acme:error:rejectedIdentifier"},
                                      {"detail", "forbidden by policy"},
                                      {"identifier", {{"type", "dns"}, {"value", "blocked.test"}}}}})}};
    Status s = acme::problem_status(rejected, 400, "new order");
    CHECK(s.code() == Code::invalid);
    CHECK(s.message() == "new order: rejectedIdentifier: Error creating new order [blocked.test: rejectedIdentifier: "
                         "forbidden by policy]");
    Status limited = acme::problem_status({{"type", "urn:ietf:params:acme:error:rateLimited"}, {"detail", "slow down"}},
                                          429, "new order", 90s);
    CHECK(limited.code() == Code::unavailable);
    CHECK(limited.message() == "new order: rateLimited: slow down (retry after 1m30s)");
    CHECK(acme::problem_status(json(nullptr), 503, "directory").code() == Code::unavailable);
    CHECK(acme::problem_status({{"type", "urn:ietf:params:acme:error:malformed"}}, 400, "x").code() == Code::corrupt);
    CHECK(acme::problem_status({{"type", "urn:ietf:params:acme:error:caa"}}, 403, "x").code() == Code::invalid);
}

// Found by fuzz_acme_json (fuzz/regressions/problem-detail-not-a-string): a member of the wrong
// type made nlohmann::json throw out of problem_status, which revoke and rekey do not catch.
TEST_CASE("acme: a problem document of the wrong shape is still a status and never an exception")
{
    const json detail_array = {{"type", "urn:ietf:params:acme:error:rejectedIdentifier"},
                               {"detail", json::array({{{"type", "urn:ietf:params:acme:error:caa"}}})}};
    Status s;
    REQUIRE_NOTHROW(s = acme::problem_status(detail_array, 400, "new order"));
    CHECK(s.code() == Code::invalid);
    CHECK(s.message() == "new order: rejectedIdentifier");

    Status typeless;
    REQUIRE_NOTHROW(typeless = acme::problem_status({{"type", 5}, {"detail", "x"}}, 400, "new order"));
    CHECK(typeless.code() == Code::corrupt);
    CHECK(typeless.message() == "new order: HTTP status 400");

    const json odd_subproblems = {
        {"type", "urn:ietf:params:acme:error:malformed"},
        {"detail", "bad"},
        {"subproblems", json::array({1,
                                     "two",
                                     {{"identifier", {{"value", 7}}}, {"detail", "seven"}},
                                     {{"identifier", {{"value", "a.test"}}}, {"type", true}}})}};
    Status sub;
    REQUIRE_NOTHROW(sub = acme::problem_status(odd_subproblems, 400, "x"));
    CHECK(sub.message() == "x: malformed: bad [error; error; error: seven; a.test: error]");
}

// Found by fuzz_acme_json (fuzz/regressions/acme-settings-float-milliseconds): max_wait_ms
// written as a float was cast to an integer, which is undefined beyond its range.
TEST_CASE("acme: settings whose max_wait_ms is not whole milliseconds are refused as corrupt")
{
    for (const char* text : {R"({"directory":"https://ca.test/dir","max_wait_ms":1.2e59})",
                             R"({"directory":"https://ca.test/dir","max_wait_ms":2.5})"}) {
        INFO(text);
        require_error(parse_acme_config(text), Code::corrupt, "whole number of milliseconds");
    }
    auto ok = parse_acme_config(R"({"directory":"https://ca.test/dir","max_wait_ms":2500})");
    REQUIRE(ok.ok());
    CHECK(ok->max_wait == std::chrono::milliseconds(2500));
}

// ---- against pebble ------------------------------------------------------------------------

using certfs::test::AcmeFixture;

TEST_CASE("acme: two DNS names and an IP address issued over http-01 with the built-in responder")
{
    AcmeFixture f;
    f.add_issuer(f.config());
    Renewer renewer(*f.store, "test");
    auto added = renewer.add_and_issue(f.domain("site.test", {"site.test", "www.site.test"}, {"127.0.0.1"}));
    INFO(added.status().message() << "\n" << f.pebble.log());
    REQUIRE(added.ok());
    CHECK(added->generation == 1);
    f.verify_served("site.test");
    auto info = pki::cert_info(*pki::parse_cert(f.store->current_generation("site.test")->cert_pem).value()).value();
    CHECK(info.dns_names == std::vector<std::string>{"site.test", "www.site.test"});
    CHECK(info.ip_addresses == std::vector<std::string>{"127.0.0.1"});

    // The account is recorded and reused by the renewal.
    auto account = parse_acme_config(f.store->get_issuer("pebble")->config_json).value().account_url;
    CHECK_THAT(account, Contains("/my-account/"));
    auto renewed = renewer.renew("site.test", true);
    INFO(renewed.status().message());
    REQUIRE(renewed.ok());
    CHECK(renewed->front().generation == 2);
    CHECK(parse_acme_config(f.store->get_issuer("pebble")->config_json).value().account_url == account);
    f.verify_served("site.test");
}

TEST_CASE("acme: revocation at the CA and account key rollover")
{
    AcmeFixture f;
    f.add_issuer(f.config());
    Renewer renewer(*f.store, "test");
    REQUIRE(renewer.add_and_issue(f.domain("gone.test", {"gone.test"})).ok());
    auto gen = f.store->current_generation("gone.test").value();
    auto issuer = AcmeIssuer::load(*f.store, f.store->get_issuer("pebble").value()).value();

    std::string body;
    REQUIRE(f.pebble.management_get("/cert-status-by-serial/" + gen.serial_hex, &body) == 200);
    CHECK(json::parse(body).value("Status", "") == "Valid");
    Status revoked = issuer->revoke(gen.cert_pem, 4);
    INFO(revoked.message());
    REQUIRE(revoked.ok());
    REQUIRE(f.pebble.management_get("/cert-status-by-serial/" + gen.serial_hex, &body) == 200);
    CHECK(json::parse(body).value("Status", "") == "Revoked");
    require_error(issuer->revoke(gen.cert_pem, 4), Code::corrupt, "alreadyRevoked");

    // Rollover: a new key in the store, the same account, and renewals keep working with it.
    const std::string account = parse_acme_config(f.store->get_issuer("pebble")->config_json)->account_url;
    const std::string old_secret = f.store->issuer_secret("pebble").value();
    Status rekeyed = issuer->rekey();
    INFO(rekeyed.message());
    REQUIRE(rekeyed.ok());
    CHECK(f.store->issuer_secret("pebble").value() != old_secret);
    auto renewed = Renewer(*f.store, "test").renew("gone.test", true);
    INFO(renewed.status().message());
    REQUIRE(renewed.ok());
    CHECK(renewed->front().generation == 2);
    CHECK(parse_acme_config(f.store->get_issuer("pebble")->config_json)->account_url == account);
    // A rollover cut short after the CA switched (the store still names the old key first):
    // the next use keeps the key the CA knows.
    const std::string new_secret = f.store->issuer_secret("pebble").value();
    const json new_j = json::parse(new_secret);
    const std::string config_json = f.store->get_issuer("pebble")->config_json;
    const std::string old_pem = json::parse(old_secret)["account_key"].get<std::string>();
    const std::string new_pem = new_j["account_key"].get<std::string>();
    REQUIRE(
        f.store
            ->update_issuer("pebble", config_json,
                            json{{"account_key", old_pem}, {"eab_hmac_key", ""}, {"next_account_key", new_pem}}.dump())
            .ok());
    auto settled = Renewer(*f.store, "test").renew("gone.test", true);
    INFO(settled.status().message());
    REQUIRE(settled.ok());
    json after = json::parse(f.store->issuer_secret("pebble").value());
    CHECK(after["account_key"] == new_pem);
    CHECK_FALSE(after.contains("next_account_key"));
    // Cut short before the CA heard of it: the old key stays, the stray one goes.
    const std::string stray = pki::private_key_pem(*pki::generate_key(pki::KeyType::ec_p256).value()).value();
    REQUIRE(
        f.store
            ->update_issuer("pebble", config_json,
                            json{{"account_key", new_pem}, {"eab_hmac_key", ""}, {"next_account_key", stray}}.dump())
            .ok());
    REQUIRE(Renewer(*f.store, "test").renew("gone.test", true).ok());
    after = json::parse(f.store->issuer_secret("pebble").value());
    CHECK(after["account_key"] == new_pem);
    CHECK_FALSE(after.contains("next_account_key"));

    // The old key no longer speaks for the account.
    PKey old_key = pki::parse_private_key(json::parse(old_secret)["account_key"].get<std::string>()).value();
    SystemClock clock;
    acme::Client old_client({f.pebble.directory_url(), {.ca_bundle = f.pebble.ca_bundle()}}, *old_key, account, clock);
    auto refused = old_client.fetch(account);
    REQUIRE_FALSE(refused.ok());
    INFO(refused.status().message());
    CHECK(refused.status().code() != Code::unavailable);
}

TEST_CASE("acme: eight renewals at once share the built-in responder and each commits once")
{
    AcmeFixture f;
    f.add_issuer(f.config());
    constexpr int k_domains = 8;
    for (int i = 0; i < k_domains; ++i) {
        REQUIRE(f.store
                    ->add_domain(f.domain("d" + std::to_string(i) + ".test", {"d" + std::to_string(i) + ".test"}),
                                 std::nullopt)
                    .ok());
    }
    std::vector<std::string> errors(k_domains);
    std::vector<std::thread> threads;
    const IssuerFactory issuers = builtin_issuers(std::make_shared<RenewContext>()); // one responder
    for (int i = 0; i < k_domains; ++i) {
        threads.emplace_back([&, i] {
            auto own = store::Store::open(f.db, {.create = false, .actor = "test", .clock = nullptr});
            if (!own.ok()) {
                errors[i] = own.status().message();
                return;
            }
            auto r =
                Renewer(**own, "worker " + std::to_string(i), issuers).renew("d" + std::to_string(i) + ".test", false);
            if (!r.ok()) {
                errors[i] = r.status().message();
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    for (int i = 0; i < k_domains; ++i) {
        INFO("d" << i << ".test: " << errors[i]);
        CHECK(errors[i].empty());
        CHECK(f.store->get_domain("d" + std::to_string(i) + ".test")->current_gen == 1);
    }
}

TEST_CASE("acme: an RS256 account bound to an external account issues")
{
    const std::string mac = acme::base64url("certfs test EAB key, 32 bytes!!!");
    test::PebbleOptions options;
    options.require_eab = true;
    options.eab_keys = {{"kid-7", mac}};
    AcmeFixture f(options);
    AcmeConfig config = f.config();
    config.account_key_type = pki::KeyType::rsa_2048;
    config.eab_kid = "kid-7";
    f.add_issuer(config, mac);
    auto added = Renewer(*f.store, "test").add_and_issue(f.domain("bound.test", {"bound.test"}));
    INFO(added.status().message() << "\n" << f.pebble.log());
    REQUIRE(added.ok());
    CHECK(added->generation == 1);
    f.verify_served("bound.test");
    CHECK_THAT(parse_acme_config(f.store->get_issuer("pebble")->config_json)->account_url, Contains("/my-account/"));
    // Without the binding, the same CA refuses a new account.
    AcmeConfig unbound = f.config();
    f.add_issuer(unbound, "", "unbound");
    auto refused = AcmeIssuer::load(*f.store, f.store->get_issuer("unbound").value()).value()->describe();
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(refused.status().message(), Contains("externalAccountRequired"));
}
