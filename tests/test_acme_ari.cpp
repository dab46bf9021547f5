// What pebble 2.4 cannot show, against a local HTTPS stub of the few ACME endpoints involved
// (tests/support/acme_stub.hpp): renewal information (RFC 9773) turned into the due time, 'replaces'
// and profiles in new orders, and a rate limit's Retry-After in the backoff.
#include <catch2/catch.hpp>

#include <openssl/x509v3.h>

#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "renew/acme_issuer.hpp"
#include "renew/acme_jws.hpp"
#include "renew/renewer.hpp"
#include "renew/scheduler.hpp"
#include "tests/support/acme_stub.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::AcmeStub;
using certfs::test::StubRequest;
using certfs::test::StubResponse;
using certfs::test::TempDir;
using nlohmann::json;

namespace {

// A store whose ACME issuer "stub" points at an AcmeStub, and a domain "ari.test" whose current
// certificate comes from a test CA (the stub issues nothing).
struct StubFixture {
    AcmeStub stub;
    TempDir dir;
    std::string db = (dir / "certfs.db").string();
    std::unique_ptr<store::Store> store =
        store::Store::open(db, {.create = true, .actor = "test", .clock = nullptr}).value();
    test::TestCa ca;
    test::TestLeaf leaf = test::make_leaf(ca, {{"ari.test"}, {}});

    explicit StubFixture(const json& directory_extra, const std::string& profile = "")
    {
        stub.install_acme_basics();
        stub.set_directory_extra(directory_extra);
        AcmeConfig config;
        config.directory = stub.directory_url();
        config.ca_bundle = stub.ca_bundle();
        config.http_listen = "127.0.0.1:0";
        config.profile = profile;
        auto issuer = create_acme_issuer("stub", config, "");
        REQUIRE(issuer.ok());
        REQUIRE(store->add_issuer(*issuer).ok());
        store::DomainConfig d;
        d.name = "ari.test";
        d.issuer = "stub";
        d.dns_names = {"ari.test"};
        REQUIRE(
            store
                ->add_domain(d, store::GenerationInput{leaf.key_pem, leaf.cert_pem, ca.cert_pem, store::Reason::issued})
                .ok());
    }

    // The RFC 9773 id of the leaf, built from the CA's subject key id and the leaf's serial.
    std::string expected_cert_id() const
    {
        const ASN1_OCTET_STRING* ski = X509_get0_subject_key_id(ca.cert.get());
        REQUIRE(ski != nullptr);
        std::string serial;
        for (std::size_t i = 0; i < leaf.serial_hex.size(); i += 2) {
            serial.push_back(static_cast<char>(std::stoi(leaf.serial_hex.substr(i, 2), nullptr, 16)));
        }
        if (leaf.serial_hex.size() % 2 == 1) {
            serial.clear();
            std::string hex = "0" + leaf.serial_hex;
            for (std::size_t i = 0; i < hex.size(); i += 2) {
                serial.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
            }
        }
        if ((static_cast<unsigned char>(serial.front()) & 0x80) != 0) {
            serial.insert(serial.begin(), '\0');
        }
        return acme::base64url(std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(ski)),
                                           static_cast<std::size_t>(ASN1_STRING_length(ski)))) +
               "." + acme::base64url(serial);
    }
};

} // namespace

TEST_CASE("acme ari: the CA's suggested window becomes the due time and its Retry-After the next check")
{
    const auto now = std::chrono::system_clock::now();
    const auto start = std::chrono::time_point_cast<std::chrono::seconds>(now + 1h);
    const auto end = start + 1h;
    StubFixture f(json::object());
    f.stub.set_directory_extra(json{{"renewalInfo", f.stub.base_url() + "/renewal-info"}});
    f.stub.on("GET", "/renewal-info", [&](const StubRequest&) {
        StubResponse r = StubResponse::json(
            200, json{{"suggestedWindow", {{"start", format_rfc3339(start)}, {"end", format_rfc3339(end)}}}});
        r.headers.emplace_back("Retry-After", "3600");
        return r;
    });
    const auto before = f.store->get_domain("ari.test").value();
    REQUIRE(due_at(before).value() > end); // the default: two thirds into 90 days

    SchedulerOptions options;
    options.db_path = f.db;
    options.owner = "test scheduler";
    options.hooks.lock_dir = f.db + ".hooks";
    SystemClock clock;
    Scheduler scheduler(options, clock);
    REQUIRE(scheduler.start(false).ok());
    auto next = scheduler.step();
    REQUIRE(next.ok());
    scheduler.wait_idle();

    auto gets = f.stub.requests("GET", "/renewal-info");
    REQUIRE(gets.size() == 1);
    CHECK(gets[0].path == "/renewal-info/" + f.expected_cert_id());
    auto d = f.store->get_domain("ari.test").value();
    REQUIRE(d.ari_at.has_value());
    CHECK(*d.ari_at >= start);
    CHECK(*d.ari_at <= end);
    CHECK(d.ari_gen == d.current_gen);
    CHECK(due_at(d).value() == *d.ari_at);
    REQUIRE(d.ari_next_check.has_value());
    CHECK(*d.ari_next_check >= now + 3600s);
    CHECK(*d.ari_next_check <= std::chrono::system_clock::now() + 3600s);

    // Asked again only after Retry-After: the next pass fetches nothing.
    REQUIRE(scheduler.step().ok());
    scheduler.wait_idle();
    CHECK(f.stub.requests("GET", "/renewal-info").size() == 1);
    scheduler.stop();
}

TEST_CASE("acme ari: new orders name the certificate they replace and ask for an offered profile")
{
    StubFixture f(json::object(), "shortlived");
    f.stub.set_directory_extra(json{{"renewalInfo", f.stub.base_url() + "/renewal-info"},
                                    {"meta", {{"profiles", {{"shortlived", "6-day certificates"}}}}}});
    // The first order, with 'replaces', is refused as already replaced; the retry without it
    // is stopped with a refusal so that nothing needs validating.
    f.stub.on("POST", "/new-order", [](const StubRequest& r) {
        if (r.jws_payload.is_object() && r.jws_payload.contains("replaces")) {
            return StubResponse::problem(409, "alreadyReplaced", "already replaced");
        }
        return StubResponse::problem(400, "rejectedIdentifier", "the stub stops here");
    });
    auto renewed = Renewer(*f.store, "test").renew("ari.test", true);
    REQUIRE_FALSE(renewed.ok());
    CHECK(renewed.status().code() == Code::invalid);
    CHECK_THAT(renewed.status().message(), Contains("the stub stops here"));

    auto orders = f.stub.requests("POST", "/new-order");
    REQUIRE(orders.size() == 2);
    CHECK(orders[0].jws_payload["replaces"] == f.expected_cert_id());
    CHECK(orders[0].jws_payload["profile"] == "shortlived");
    CHECK(orders[0].jws_payload["identifiers"] == json::array({{{"type", "dns"}, {"value", "ari.test"}}}));
    CHECK_FALSE(orders[1].jws_payload.contains("replaces"));
    CHECK(orders[1].jws_payload["profile"] == "shortlived");
    CHECK(f.store->get_domain("ari.test")->current_gen == 1); // nothing committed
}

TEST_CASE("acme ari: a profile the CA does not offer is not asked for")
{
    StubFixture f(json{{"meta", {{"profiles", {{"classic", "90-day certificates"}}}}}}, "shortlived");
    f.stub.on("POST", "/new-order",
              [](const StubRequest&) { return StubResponse::problem(400, "rejectedIdentifier", "stop"); });
    REQUIRE_FALSE(Renewer(*f.store, "test").renew("ari.test", true).ok());
    auto orders = f.stub.requests("POST", "/new-order");
    REQUIRE(orders.size() == 1);
    CHECK_FALSE(orders[0].jws_payload.contains("profile"));
    CHECK_FALSE(orders[0].jws_payload.contains("replaces")); // no renewalInfo in this directory
}

TEST_CASE("acme ari: a rate limit's Retry-After holds the next attempt back")
{
    StubFixture f(json::object());
    f.stub.on("POST", "/new-order", [](const StubRequest&) {
        StubResponse r = StubResponse::problem(429, "rateLimited", "too many certificates");
        r.headers.emplace_back("Retry-After", "7200");
        return r;
    });
    const auto now = std::chrono::system_clock::now();
    auto renewed = Renewer(*f.store, "test").renew("ari.test", true);
    REQUIRE_FALSE(renewed.ok());
    CHECK(renewed.status().code() == Code::unavailable);
    auto d = f.store->get_domain("ari.test").value();
    CHECK(d.state == store::DomainState::backoff);
    CHECK_THAT(d.last_error, Contains("rateLimited: too many certificates (retry after 2h)"));
    REQUIRE(d.next_attempt.has_value());
    CHECK(*d.next_attempt >= std::chrono::time_point_cast<std::chrono::seconds>(now) + 7200s);
    CHECK(*d.next_attempt <= std::chrono::system_clock::now() + 7200s + 1s);
}

TEST_CASE("acme stub: a badNonce answer is retried once with the nonce it carried")
{
    StubFixture f(json::object());
    std::mutex mutex;
    int calls = 0;
    f.stub.on("POST", "/new-order", [&](const StubRequest&) {
        std::lock_guard lock(mutex);
        return ++calls == 1 ? StubResponse::problem(400, "badNonce", "stale nonce")
                            : StubResponse::problem(400, "rejectedIdentifier", "the stub stops here");
    });
    auto renewed = Renewer(*f.store, "test").renew("ari.test", true);
    REQUIRE_FALSE(renewed.ok());
    CHECK_THAT(renewed.status().message(), Contains("rejectedIdentifier: the stub stops here"));
    auto orders = f.stub.requests("POST", "/new-order");
    REQUIRE(orders.size() == 2);
    CHECK(orders[0].jws_protected["nonce"] != orders[1].jws_protected["nonce"]);
}

TEST_CASE("acme stub: polling an order waits as long as Retry-After says and keeps it pending past max-wait")
{
    StubFixture f(json::object());
    std::mutex mutex;
    int polls = 0;
    int retry_after_s = 1;
    f.stub.on("POST", "/order/1", [&](const StubRequest&) {
        std::lock_guard lock(mutex);
        StubResponse r;
        if (++polls == 1) {
            r = StubResponse::json(200, json{{"status", "processing"}});
            r.headers.emplace_back("Retry-After", std::to_string(retry_after_s));
        } else {
            r = StubResponse::json(
                200, json{{"status", "invalid"},
                          {"error", {{"type", "urn:ietf:params:acme:error:caa"}, {"detail", "CAA forbids"}}}});
        }
        return r;
    });
    auto issuer = AcmeIssuer::load(*f.store, f.store->get_issuer("stub").value()).value();
    store::Domain d = f.store->get_domain("ari.test").value();
    IssueRequest request{&d, "", pki::Names{{"ari.test"}, {}}};

    const auto start = std::chrono::steady_clock::now();
    auto first = issuer->poll(request, f.stub.base_url() + "/order/1");
    const auto waited = std::chrono::steady_clock::now() - start;
    REQUIRE_FALSE(first.ok());
    CHECK(first.status().code() == Code::invalid);
    CHECK_THAT(first.status().message(), Contains("caa: CAA forbids"));
    CHECK(waited >= 1s); // not the 5 ms of its own first poll

    // A Retry-After beyond max-wait (2 minutes): kept pending for that long, not slept through.
    {
        std::lock_guard lock(mutex);
        polls = 0;
        retry_after_s = 600;
    }
    auto second = issuer->poll(request, f.stub.base_url() + "/order/1");
    INFO(second.status().message());
    REQUIRE(second.ok());
    REQUIRE(second->pending.has_value());
    CHECK(second->pending->cookie == f.stub.base_url() + "/order/1");
    CHECK(second->pending->retry_after == std::chrono::duration_cast<Duration>(600s));
}

TEST_CASE("acme stub: a kept order that failed for good is dropped and not polled again")
{
    StubFixture f(json::object());
    f.stub.on("POST", "/order/2", [](const StubRequest&) {
        return StubResponse::json(
            200, json{{"status", "invalid"},
                      {"error",
                       {{"type", "urn:ietf:params:acme:error:serverInternal"}, {"detail", "finalization failed"}}}});
    });
    store::PendingRequest kept;
    kept.domain = "ari.test";
    kept.issuer = "stub";
    kept.based_on = 1;
    kept.key_pem = f.leaf.key_pem;
    kept.csr_pem = "unused";
    kept.cookie = f.stub.base_url() + "/order/2";
    kept.created_at = kept.poll_at = std::chrono::system_clock::now();
    REQUIRE(f.store->save_pending(kept).ok());

    auto renewed = Renewer(*f.store, "test").renew("ari.test", true);
    REQUIRE_FALSE(renewed.ok());
    CHECK_THAT(renewed.status().message(), Contains("serverInternal: finalization failed"));
    CHECK(f.store->get_domain("ari.test")->state == store::DomainState::backoff); // the CA's trouble, retried
    CHECK_FALSE(f.store->pending("ari.test").value().has_value());                // with a new order
}
