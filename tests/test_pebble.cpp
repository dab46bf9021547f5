// The pebble harness itself: it starts a working private ACME CA, keeps instances apart and
// leaves no process behind.
#include <cerrno>
#include <csignal>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/support/pebble.hpp"

using namespace certfs;
using namespace certfs::test;
using Catch::Contains;

TEST_CASE("pebble's directory answers over HTTPS with the ACME endpoints")
{
    Pebble pebble;
    INFO(pebble.log());
    auto reply = http_request(pebble.directory_url(), pebble.ca_bundle());
    INFO(reply.error);
    REQUIRE(reply.status == 200);
    auto dir = nlohmann::json::parse(reply.body);
    for (const char* key : {"newNonce", "newAccount", "newOrder", "revokeCert", "keyChange"}) {
        INFO(key);
        REQUIRE(dir.contains(key));
        CHECK_THAT(dir[key].get<std::string>(), Catch::StartsWith("https://127.0.0.1:"));
    }
    CHECK(dir["meta"]["externalAccountRequired"] == false);
    CHECK_THAT(pebble.directory_url(), Catch::Matches(R"(https://127\.0\.0\.1:[0-9]+/dir)"));
    CHECK_THAT(pebble.challtestsrv_management(), Catch::Matches(R"(http://127\.0\.0\.1:[0-9]+)"));

    // The HTTPS certificate is the harness's own: without its CA the client refuses pebble.
    auto other_ca = TempDir();
    write_file(other_ca / "ca.pem", TestCa("/CN=some other CA").cert_pem);
    auto untrusted = http_request(pebble.directory_url(), (other_ca / "ca.pem").string());
    CHECK(untrusted.status == 0);
    CHECK_THAT(untrusted.error, Contains("certificate"));
}

TEST_CASE("the issuing root comes from pebble's management interface and is a CA certificate")
{
    Pebble pebble;
    INFO(pebble.log());
    auto root = pki::parse_cert(pebble.issuing_root_pem());
    INFO(root.status().message());
    REQUIRE(root.ok());
    auto info = pki::cert_info(**root).value();
    CHECK(info.is_ca);
    CHECK(info.subject == info.issuer);
    CHECK_THAT(info.subject, Contains("Pebble Root CA"));
    // It is not the CA of pebble's HTTPS certificate.
    auto tls_ca = pki::parse_cert(read_file(pebble.ca_bundle())).value();
    CHECK(pki::cert_info(*tls_ca).value().subject != info.subject);

    std::string intermediate;
    CHECK(pebble.management_get("/intermediates/0", &intermediate) == 200);
    CHECK(pki::parse_cert(intermediate).ok());
}

TEST_CASE("challtestsrv takes and drops TXT records and refuses a malformed request")
{
    Pebble pebble;
    INFO(pebble.log());
    pebble.set_txt("_acme-challenge.a.test", "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0");
    pebble.set_txt("_acme-challenge.b.test.", "second");
    pebble.clear_txt("_acme-challenge.a.test");
    std::string body;
    CHECK(pebble.challtestsrv_post("/set-txt", R"({"host": "_acme-challenge.c.test."})", &body) == 400);
    CHECK_THAT(pebble.log(), Contains(R"(Added DNS-01 TXT challenge for Host "_acme-challenge.a.test.")"));
    CHECK_THAT(pebble.log(), Contains(R"(Removed DNS-01 TXT challenge for Host "_acme-challenge.a.test.")"));
}

TEST_CASE("the options reach pebble")
{
    PebbleOptions options;
    options.nonce_reject_percent = 30;
    options.require_eab = true;
    options.eab_keys = {{"kid-1", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"}};
    options.blocked_domains = {"blocked.test"};
    options.certificate_validity_s = 3600;
    Pebble pebble(options);
    const std::string log = pebble.log();
    INFO(log);
    CHECK_THAT(log, Contains("Configured to reject 30% of good nonces"));
    CHECK_THAT(log, Contains("Configured to attempt authz reuse for each identifier 0% of the time"));
    CHECK_THAT(log, Contains("Disabling random VA sleeps"));
    CHECK_THAT(log, Contains("Using certificate validity period of 3600 seconds"));
    CHECK_THAT(
        log, Contains("Using custom DNS resolver for ACME challenges: 127.0.0.1:" + std::to_string(pebble.dns_port())));
    CHECK_THAT(log, Contains("Answering A queries with 127.0.0.1 by default"));
    CHECK_THAT(log, !Contains("Answering AAAA queries"));
    // challtestsrv runs no challenge responder of its own: the client under test does.
    CHECK_THAT(log, !Contains("Creating HTTP-01 challenge server"));
    CHECK_THAT(log, !Contains("Creating TLS-ALPN-01 challenge server"));

    auto reply = http_request(pebble.directory_url(), pebble.ca_bundle());
    REQUIRE(reply.status == 200);
    CHECK(nlohmann::json::parse(reply.body)["meta"]["externalAccountRequired"] == true);
    auto config = nlohmann::json::parse(read_file(pebble.dir() / "pebble-config.json"));
    CHECK(config["pebble"]["domainBlocklist"] == nlohmann::json::array({"blocked.test"}));
}

TEST_CASE("two instances at once use their own ports and directories")
{
    Pebble first;
    Pebble second;
    INFO(first.log() << second.log());
    CHECK(first.directory_url() != second.directory_url());
    CHECK(first.management_url() != second.management_url());
    CHECK(first.challtestsrv_management() != second.challtestsrv_management());
    CHECK(first.http01_port() != second.http01_port());
    CHECK(first.tlsalpn01_port() != second.tlsalpn01_port());
    CHECK(first.dns_port() != second.dns_port());
    CHECK(first.dir() != second.dir());
    CHECK(first.issuing_root_pem() != second.issuing_root_pem());
    CHECK(http_request(first.directory_url(), first.ca_bundle()).status == 200);
    CHECK(http_request(second.directory_url(), second.ca_bundle()).status == 200);
}

TEST_CASE("both processes are gone once the harness is destroyed")
{
    pid_t pebble_pid = -1;
    pid_t challtestsrv_pid = -1;
    std::filesystem::path dir;
    {
        Pebble pebble;
        pebble_pid = pebble.pebble_pid();
        challtestsrv_pid = pebble.challtestsrv_pid();
        dir = pebble.dir();
        REQUIRE(pebble_pid > 0);
        REQUIRE(challtestsrv_pid > 0);
        CHECK(kill(pebble_pid, 0) == 0);
        CHECK(kill(challtestsrv_pid, 0) == 0);
    }
    errno = 0;
    CHECK(kill(pebble_pid, 0) == -1);
    CHECK(errno == ESRCH);
    errno = 0;
    CHECK(kill(challtestsrv_pid, 0) == -1);
    CHECK(errno == ESRCH);
    CHECK_FALSE(std::filesystem::exists(dir));
}
