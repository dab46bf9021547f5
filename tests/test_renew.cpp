// The local CA, the renewal pipeline, `check`, and export.
#include <sys/stat.h>
#include <unistd.h>

#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "fs/export.hpp"
#include "renew/health.hpp"
#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using Catch::Contains;
using certfs::test::require_error;
using certfs::test::TempDir;
using namespace std::chrono_literals;

namespace {

struct Fixture {
    TempDir dir;
    std::string path = (dir / "certfs.db").string();
    FakeClock clock{std::chrono::system_clock::now()};
    std::unique_ptr<store::Store> store = open_store(true);
    Renewer renewer{*store, "test renewer"};

    explicit Fixture(LocalCaConfig config = {})
    {
        auto ca = create_local_ca("ca", config, clock.now()).value();
        REQUIRE(store->add_issuer(ca).ok());
    }

    std::unique_ptr<store::Store> open_store(bool create = false)
    {
        return store::Store::open(path, {.create = create, .actor = "test", .clock = &clock}).value();
    }

    store::DomainConfig config(const std::string& name, std::vector<std::string> dns = {})
    {
        store::DomainConfig c;
        c.name = name;
        c.issuer = "ca";
        c.dns_names = dns.empty() ? std::vector<std::string>{name} : dns;
        return c;
    }

    store::Generation current(const std::string& name) { return store->current_generation(name).value(); }
    store::Domain domain(const std::string& name) { return store->get_domain(name).value(); }
};

pki::CertInfo info_of(const std::string& pem) { return pki::cert_info(*pki::parse_cert(pem).value()).value(); }

std::string run_openssl(const std::vector<std::string>& args)
{
    std::vector<std::string> argv{"/usr/bin/openssl"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = test::run(argv);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r.out;
}

} // namespace

TEST_CASE("local CA: a root whose certificate is a CA and with the configured subject and lifetime")
{
    FakeClock clock(std::chrono::system_clock::now());
    LocalCaConfig config;
    config.subject = "/CN=Example Root/O=Example";
    config.ca_validity = 365 * 24h;
    config.key_type = pki::KeyType::ec_p384;
    auto ca = create_local_ca("root", config, clock.now()).value();
    CHECK(ca.kind == "local");
    auto info = info_of(ca.cert_pem);
    CHECK(info.is_ca);
    CHECK(info.subject == "O=Example,CN=Example Root"); // RFC 2253 order: most specific first
    CHECK(info.subject == info.issuer);
    CHECK(to_unix(info.not_after) == to_unix(clock.now() + 365 * 24h));
    auto key = pki::parse_private_key(ca.secret_pem).value();
    CHECK(pki::key_type_of(*key).value() == pki::KeyType::ec_p384);
    CHECK(parse_local_ca_config(ca.config_json).value().ca_validity == Duration(365 * 24h));

    auto unnamed = create_local_ca("corp", {}, clock.now()).value();
    CHECK(info_of(unnamed.cert_pem).subject == "CN=certfs local CA corp");
}

TEST_CASE("local CA: leaves carry the names and the usages and a large random serial: openssl agrees")
{
    Fixture f;
    auto c = f.config("web.test", {"web.test", "*.web.test"});
    c.ip_addresses = {"127.0.0.1", "::1"};
    c.key_type = pki::KeyType::rsa_2048;
    REQUIRE(f.renewer.add_and_issue(c).value().generation == 1);
    auto gen = f.current("web.test");
    auto info = info_of(gen.cert_pem);
    CHECK(info.dns_names == std::vector<std::string>{"web.test", "*.web.test"});
    CHECK(info.ip_addresses == std::vector<std::string>{"127.0.0.1", "::1"});
    CHECK_FALSE(info.is_ca);
    CHECK(info.subject == "CN=web.test");
    CHECK(gen.chain_pem == f.store->get_issuer("ca").value().cert_pem);
    // 159 random bits: fewer than 32 hex digits (128 bits) has odds of 2^-31.
    CHECK(gen.serial_hex.size() >= 32);
    CHECK(to_unix(info.not_after) == to_unix(f.clock.now() + 90 * 24h));

    TempDir out;
    test::write_file(out / "cert.pem", gen.cert_pem);
    test::write_file(out / "chain.pem", gen.chain_pem);
    CHECK_THAT(run_openssl({"verify", "-CAfile", (out / "chain.pem").string(), (out / "cert.pem").string()}),
               Contains(": OK"));
    auto text = run_openssl({"x509", "-noout", "-text", "-in", (out / "cert.pem").string()});
    CHECK_THAT(text, Contains("CA:FALSE"));
    CHECK_THAT(text, Contains("Digital Signature, Key Encipherment"));
    CHECK_THAT(text, Contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    CHECK_THAT(text, Contains("X509v3 Subject Key Identifier"));
    CHECK_THAT(text, Contains("X509v3 Authority Key Identifier"));
    CHECK_THAT(text, Contains("DNS:web.test, DNS:*.web.test, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1"));
}

TEST_CASE("local CA: a leaf never outlives its CA, and an expired CA issues nothing")
{
    LocalCaConfig config;
    config.validity = 90 * 24h;
    config.ca_validity = 30 * 24h;
    Fixture f(config);
    REQUIRE(f.renewer.add_and_issue(f.config("short.test")).ok());
    auto ca_info = info_of(f.store->get_issuer("ca").value().cert_pem);
    CHECK(f.current("short.test").not_after == ca_info.not_after);

    f.clock.advance(31 * 24h);
    require_error(f.renewer.add_and_issue(f.config("late.test")), Code::invalid, "local CA certificate expired");
    CHECK_FALSE(f.store->get_domain("late.test").ok());
}

TEST_CASE("local CA: a serial already used is never reused: another is drawn")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("one.test")).ok());
    const std::string used = f.current("one.test").serial_hex;
    auto ca = LocalCa::load(*f.store, f.store->get_issuer("ca").value()).value();
    std::vector<std::string> draws{used, used, "7a11ce"};
    std::size_t next = 0;
    ca->set_serial_source([&]() -> Result<std::string> { return draws.at(next++); });
    pki::Names names{{"two.test"}, {}};
    auto key = pki::generate_key(pki::KeyType::ec_p256).value();
    auto csr = pki::csr_pem(*pki::make_csr(*key, names).value());
    store::Domain d;
    IssueRequest request{&d, csr, names};
    auto issued = ca->issue(request).value();
    CHECK(info_of(issued.cert_pem).serial_hex == "7a11ce");
    CHECK(next == 3);

    ca->set_serial_source([&]() -> Result<std::string> { return used; });
    require_error(ca->issue(request), Code::conflict, "no unused serial");
}

TEST_CASE("renew: nothing before it is due and a new generation with a fresh key when due or forced")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("r.test")).ok());
    auto first = f.current("r.test");
    auto due = due_at(f.domain("r.test")).value();
    CHECK(due <= renew_at(f.domain("r.test")).value());

    auto not_due = f.renewer.renew("r.test", false).value();
    CHECK(not_due.front().message == "not due until " + format_rfc3339(due));
    CHECK_FALSE(not_due.front().generation);
    CHECK(f.current("r.test").gen == 1);

    auto forced = f.renewer.renew("r.test", true).value();
    CHECK(forced.front().generation == 2);
    auto second = f.current("r.test");
    CHECK(second.key_pem != first.key_pem);
    CHECK(second.serial_hex != first.serial_hex);
    CHECK(second.reason == store::Reason::renewed);

    f.clock.set(due_at(f.domain("r.test")).value() - 1s);
    CHECK_FALSE(f.renewer.renew("r.test", false).value().front().generation);
    f.clock.set(due_at(f.domain("r.test")).value());
    CHECK(f.renewer.renew("r.test", false).value().front().generation == 3);
    CHECK(f.store->leases().value().empty());
}

TEST_CASE("renew: --reuse-key keeps the key and changes the serial")
{
    Fixture f;
    auto c = f.config("keep.test");
    c.reuse_key = true;
    REQUIRE(f.renewer.add_and_issue(c).ok());
    auto first = f.current("keep.test");
    REQUIRE(f.renewer.renew("keep.test", true).ok());
    auto second = f.current("keep.test");
    CHECK(second.key_pem == first.key_pem);
    CHECK(second.serial_hex != first.serial_hex);
}

TEST_CASE("renew: every key type issues and renews")
{
    Fixture f;
    for (auto type : {pki::KeyType::ec_p256, pki::KeyType::ec_p384, pki::KeyType::rsa_2048, pki::KeyType::ed25519}) {
        std::string name = std::string(pki::key_type_name(type)) + ".test";
        auto c = f.config(name);
        c.key_type = type;
        REQUIRE(f.renewer.add_and_issue(c).ok());
        REQUIRE(f.renewer.renew(name, true).ok());
        auto key = pki::parse_private_key(f.current(name).key_pem).value();
        CHECK(pki::key_type_of(*key).value() == type);
    }
}

TEST_CASE("renew: a bundle's members renew together in one commit")
{
    Fixture f;
    for (auto name : {"rsa.site.test", "ec.site.test"}) {
        auto c = f.config(name);
        c.bundle = "site";
        REQUIRE(f.renewer.add_and_issue(c).ok());
    }
    REQUIRE(f.renewer.add_and_issue(f.config("alone.test")).ok());
    auto outcomes = f.renewer.renew("rsa.site.test", true).value();
    REQUIRE(outcomes.size() == 2);
    CHECK(f.current("rsa.site.test").gen == 2);
    CHECK(f.current("ec.site.test").gen == 2);
    CHECK(f.current("alone.test").gen == 1);
    // Both commits landed in one transaction: one event sequence, no other writer between.
    auto events = f.store->events(std::nullopt, 3).value();
    CHECK(events[1].action == "renewed");
    CHECK(events[2].action == "renewed");
}

TEST_CASE("renew: a held lease refuses a second renewal and nothing is committed")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("busy.test")).ok());
    auto other = f.open_store();
    // The daemon of another host sharing the store: nothing here can tell whether it runs.
    store::LeaseHolder remote = store::this_process();
    remote.machine_id = "0123456789abcdef0123456789abcdef";
    REQUIRE(other->acquire_lease("domain:busy.test", "the daemon", k_lease_ttl, remote).ok());
    require_error(f.renewer.renew("busy.test", true), Code::conflict,
                  "renewal already in progress (domain:busy.test is held by the daemon");
    CHECK(f.current("busy.test").gen == 1);
    // A holder there that died lets its lease expire; then the renewal proceeds.
    f.clock.advance(k_lease_ttl + 1s);
    CHECK(f.renewer.renew("busy.test", true).value().front().generation == 2);
}

TEST_CASE("renew: concurrent renewals on one store never tear or duplicate a generation")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("race.test")).ok());
    constexpr int k_threads = 4;
    std::vector<Result<std::vector<RenewOutcome>>> results(k_threads, Status::IoError("not run"));
    std::vector<std::thread> threads;
    for (int i = 0; i < k_threads; ++i) {
        threads.emplace_back([&, i] {
            auto store = f.open_store();
            Renewer renewer(*store, "thread " + std::to_string(i));
            results[static_cast<std::size_t>(i)] = renewer.renew("race.test", true);
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    std::set<std::int64_t> gens;
    int successes = 0;
    for (const auto& r : results) {
        if (r.ok()) {
            ++successes;
            gens.insert(r->front().generation.value());
        } else {
            INFO(r.status().message());
            CHECK((r.status().code() == Code::conflict || r.status().code() == Code::unavailable));
        }
    }
    CHECK(successes >= 1);
    CHECK(gens.size() == static_cast<std::size_t>(successes)); // no number handed out twice
    CHECK(f.store->history("race.test").value().size() == static_cast<std::size_t>(1 + successes));
    CHECK(f.current("race.test").gen == *gens.rbegin());
}

TEST_CASE("renew: a failure backs off and records the error while the current generation keeps serving")
{
    LocalCaConfig config;
    config.ca_validity = 100 * 24h;
    config.validity = 60 * 24h;
    Fixture f(config);
    REQUIRE(f.renewer.add_and_issue(f.config("fail.test")).ok());
    f.clock.advance(101 * 24h); // the CA expired; the leaf too, but it is what is served
    require_error(f.renewer.renew("fail.test", true), Code::invalid, "local CA certificate expired");
    auto d = f.domain("fail.test");
    CHECK(d.state == store::DomainState::rejected); // the CA refused: the admin must act
    CHECK_THAT(d.last_error, Contains("local CA certificate expired"));
    // One minute, pulled earlier by a jitter of up to a fifth.
    CHECK(d.next_attempt.value() <= f.clock.now() + 1min);
    CHECK(d.next_attempt.value() >= f.clock.now() + 48s - 1s);
    CHECK(d.failures == 1);
    CHECK(d.current_gen == 1);
    CHECK(f.store->leases().value().empty());

    // Not retried before the backoff has passed, unless forced.
    CHECK_FALSE(f.renewer.renew("fail.test", false).value().front().generation);
    f.clock.advance(1min);
    REQUIRE_FALSE(f.renewer.renew("fail.test", false).ok());
    CHECK(f.domain("fail.test").failures == 2);
    CHECK(f.domain("fail.test").next_attempt.value() <= f.clock.now() + 2min);
    CHECK(f.domain("fail.test").next_attempt.value() >= f.clock.now() + 96s - 1s);
}

TEST_CASE("renew: imported domains and unknown names are refused without a state change")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("src.test")).ok());
    auto gen = f.current("src.test");
    REQUIRE(f.store->import_generation("imported.test", {gen.key_pem, gen.cert_pem, gen.chain_pem}).status().code() ==
            Code::conflict); // same serial: refused
    test::TestCa other;
    auto leaf = test::make_leaf(other, {{"imported.test"}, {}});
    REQUIRE(f.store->import_generation("imported.test", {leaf.key_pem, leaf.cert_pem, other.cert_pem}).ok());
    require_error(f.renewer.renew("imported.test", true), Code::invalid, "has no issuer");
    CHECK(f.domain("imported.test").state == store::DomainState::monitoring);
    require_error(f.renewer.renew("nope.test", true), Code::not_found, "no domain named nope.test");
}

TEST_CASE("due time: a third of the lifetime and half under 10 days and or as configured")
{
    store::Domain d;
    auto start = from_unix(1'800'000'000);
    d.current_not_before = start;
    d.current_not_after = start + 90 * 24h;
    CHECK(renew_at(d) == start + 60 * 24h);
    d.current_not_after = start + 6 * 24h;
    CHECK(renew_at(d) == start + 3 * 24h);
    d.renew_before = 1h;
    CHECK(renew_at(d) == start + 6 * 24h - 1h);
    d.current_not_after.reset();
    CHECK_FALSE(renew_at(d));
}

TEST_CASE("due time: measured from the issue, not a backdated not_before, and never before a quarter of the lifetime")
{
    store::Domain d;
    d.issuer = "ca";
    const auto issued = from_unix(1'800'000'000);
    d.current_not_before = issued - 5min; // backdated, as the local CA does
    d.current_created_at = issued;
    d.current_reason = store::Reason::renewed;
    d.current_not_after = issued + 20s;
    CHECK(issued_at(d) == issued);
    // The default: half of the 20 s from the issue, not of the 5 min 20 s from not_before.
    CHECK(renew_at(d) == issued + 10s);
    CHECK(due_at(d).value() > issued);
    // An explicit renew_before that fits is kept: 12 s leaves renewed 8 s before expiry.
    d.current_not_after = issued + 12s;
    d.renew_before = 8s;
    CHECK(renew_at(d) == issued + 4s);
    CHECK(due_at(d).value() >= issued + 3s);
    // One longer than the lifetime stops at the floor, a quarter of it, and the jitter does not
    // pull the due time below it: the new generation is not due when it is born.
    d.renew_before = 2h;
    CHECK(renewal_floor(d) == issued + 3s);
    CHECK(renew_at(d) == issued + 3s);
    CHECK(due_at(d) == issued + 3s);
    // A certificate that lives (almost) not at all still waits a second.
    d.current_not_after = issued;
    CHECK(due_at(d) == issued + k_min_renewal_gap);
    // The CA's renewal information may ask for sooner than the floor (a revoked certificate),
    // but not sooner than an hour after the issue.
    d.renew_before.reset();
    d.current_not_after = issued + 90 * 24h;
    d.current_gen = 4;
    d.ari_gen = 4;
    d.ari_at = issued - 1h;
    CHECK(due_at(d) == issued + 1h);
    d.ari_at.reset();
    // A later not_before than the commit (a CA's clock ahead): the lifetime starts there.
    d.current_not_before = issued + 1min;
    CHECK(issued_at(d) == issued + 1min);
    // An imported certificate was issued elsewhere, at its not_before: no floor applies.
    d.current_reason = store::Reason::imported;
    d.current_not_before = issued - 1h;
    d.current_not_after = issued + 1h;
    CHECK(issued_at(d) == issued - 1h);
    CHECK_FALSE(renewal_floor(d));
    CHECK(renew_at(d) == issued);
}

TEST_CASE("renew: a generation from a CA that backdates, with a long renew_before, is not due when committed")
{
    LocalCaConfig short_lived;
    short_lived.validity = 20s; // not_before is 5 minutes back
    Fixture f(short_lived);
    auto c = f.config("short.test");
    c.renew_before = 1h;
    REQUIRE(f.renewer.add_and_issue(c).ok());
    for (int i = 0; i < 3; ++i) {
        const auto d = f.domain("short.test");
        CHECK(d.current_not_before.value() < f.clock.now() - 4min);
        // A quarter of the 20 s it lives (its not_after is in whole seconds).
        CHECK(due_at(d).value() > f.clock.now() + 4s);
        CHECK(due_at(d).value() <= f.clock.now() + 5s);
        auto not_due = f.renewer.renew("short.test", false).value();
        CHECK_FALSE(not_due.front().generation);
        f.clock.set(due_at(d).value());
        CHECK(f.renewer.renew("short.test", false).value().front().generation == i + 2);
    }
}

TEST_CASE("backoff: one minute doubling up to six hours")
{
    CHECK(backoff_delay(1) == 1min);
    CHECK(backoff_delay(2) == 2min);
    CHECK(backoff_delay(3) == 4min);
    CHECK(backoff_delay(9) == 256min);
    CHECK(backoff_delay(10) == 6h);
    CHECK(backoff_delay(1000) == 6h);
}

TEST_CASE("check: a healthy store has no problems: each kind of problem is one line")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("fine.test")).ok());
    CHECK(check_store(*f.store).value().empty());

    auto bare = f.config("bare.test");
    REQUIRE(f.store->add_domain(bare, std::nullopt).ok());
    REQUIRE(f.store->acquire_lease("domain:fine.test", "a dead daemon", 1min).ok());
    f.clock.advance(61 * 24h); // fine.test is inside its renew window now
    auto problems = check_store(*f.store).value();
    REQUIRE(problems.size() == 3);
    // Its holder is this test process: past its expiry it still keeps everyone out, and says so.
    CHECK_THAT(problems[0], Contains("stuck renewal: the lease on domain:fine.test held by a dead daemon expired"));
    CHECK_THAT(problems[0],
               Contains("still runs: it no longer heartbeats, and nobody else may renew this until it ends"));
    CHECK_THAT(problems[1], Contains("domain bare.test: has no certificate"));
    CHECK_THAT(problems[2], Contains("domain fine.test: due for renewal since"));

    f.clock.advance(30 * 24h); // and now expired
    problems = check_store(*f.store).value();
    CHECK_THAT(problems.back(), Contains("domain fine.test: current generation 1: validation failed (validity)"));
}

TEST_CASE("check: a lease of a dead process, a state it left and hooks it still owes are problems")
{
    Fixture f;
    auto c = f.config("hooked.test");
    c.deploy_hooks = {"true"};
    REQUIRE(f.renewer.add_and_issue(c).ok());
    REQUIRE(f.renewer.renew("hooked.test", true).ok()); // committed; its hooks are owed until deploy()
    store::LeaseHolder dead = store::this_process();
    dead.start_time -= 1; // our pid in an earlier process: it runs no more
    REQUIRE(f.store->acquire_lease("domain:hooked.test", "certfs pid 7", 10min, dead).ok());
    REQUIRE(f.store->set_state("hooked.test", store::DomainState::hooks, "", std::nullopt, false).ok());
    auto problems = check_store(*f.store).value();
    REQUIRE(problems.size() == 3);
    CHECK_THAT(problems[0], Contains("stuck renewal: the lease on domain:hooked.test is held by certfs pid 7 (pid " +
                                     std::to_string(::getpid()) + " on this host), which no longer runs"));
    CHECK_THAT(problems[1], Contains("domain hooked.test: stuck renewal: state hooks but no running renewal"));
    CHECK_THAT(problems[2], Contains("domain hooked.test: the deploy hooks of generation 2 have not run"));

    // Recovery frees the lease and resets the state; the hooks stay owed until they run.
    REQUIRE(f.store->recover_abandoned().ok());
    problems = check_store(*f.store).value();
    REQUIRE(problems.size() == 1);
    CHECK_THAT(problems[0], Contains("the deploy hooks of generation 2 have not run"));
}

TEST_CASE("export: the directory switches from one complete set to the next")
{
    Fixture f;
    auto c = f.config("exp.test");
    c.mode = 0640;
    REQUIRE(f.renewer.add_and_issue(c).ok());
    TempDir out;
    auto dir = out / "exp";
    auto d = f.domain("exp.test");
    REQUIRE(fs::export_generation(d, f.current("exp.test"), dir).ok());
    CHECK(std::filesystem::is_symlink(dir));
    auto gen1 = f.current("exp.test");
    CHECK(test::read_file(dir / "privkey.pem") == gen1.key_pem);
    CHECK(test::read_file(dir / "fullchain.pem") == gen1.fullchain_pem());
    CHECK(test::read_file(dir / "combined.pem") == gen1.combined_pem());
    struct stat st {};
    REQUIRE(::stat((dir / "privkey.pem").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);
    REQUIRE(::stat((dir / "combined.pem").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0640);
    REQUIRE(::stat((dir / "cert.pem").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0644);

    // A reader that resolved the old set keeps a complete old set.
    auto old_set = std::filesystem::canonical(dir);
    REQUIRE(f.renewer.renew("exp.test", true).ok());
    REQUIRE(fs::export_generation(d, f.current("exp.test"), dir).ok());
    CHECK(test::read_file(dir / "cert.pem") == f.current("exp.test").cert_pem);
    CHECK(test::read_file(old_set / "cert.pem") == gen1.cert_pem);
    CHECK(test::read_file(old_set / "privkey.pem") == gen1.key_pem);
    // Older sets than the previous one are let go.
    REQUIRE(f.renewer.renew("exp.test", true).ok());
    REQUIRE(fs::export_generation(d, f.current("exp.test"), dir).ok());
    CHECK_FALSE(std::filesystem::exists(old_set));
    std::size_t sets = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(out / ".exp.certfs")) {
        ++sets;
    }
    CHECK(sets == 2);
}

TEST_CASE("export: refuses to take over a directory that holds other files")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("own.test")).ok());
    TempDir out;
    std::filesystem::create_directory(out / "busy");
    test::write_file(out / "busy" / "mine.txt", "keep me");
    require_error(fs::export_generation(f.domain("own.test"), f.current("own.test"), out / "busy"), Code::invalid,
                  "not empty");
    CHECK(test::read_file(out / "busy" / "mine.txt") == "keep me");
    // An empty directory is taken over.
    std::filesystem::create_directory(out / "empty");
    REQUIRE(fs::export_generation(f.domain("own.test"), f.current("own.test"), out / "empty").ok());
    CHECK(std::filesystem::is_symlink(out / "empty"));
}

TEST_CASE("renew: the CA's suggested renewal time wins when earlier and only for its certificate")
{
    Fixture f;
    REQUIRE(f.renewer.add_and_issue(f.config("ari.test")).ok());
    const auto plain = due_at(f.domain("ari.test")).value();
    const auto gen = *f.domain("ari.test").current_gen;

    // Earlier than the default: it wins.
    REQUIRE(f.store->set_renewal_info("ari.test", gen, plain - 24h, f.clock.now() + 6h).ok());
    CHECK(due_at(f.domain("ari.test")).value() == std::chrono::time_point_cast<Duration>(plain - 24h));
    // Later: the default stays.
    REQUIRE(f.store->set_renewal_info("ari.test", gen, plain + 24h, f.clock.now() + 6h).ok());
    CHECK(due_at(f.domain("ari.test")).value() == plain);
    // For an older certificate it means nothing, and it cannot be recorded for one.
    REQUIRE(f.store->set_renewal_info("ari.test", gen, plain - 24h, f.clock.now() + 6h).ok());
    REQUIRE(f.renewer.renew("ari.test", true).ok());
    const auto renewed = f.domain("ari.test");
    CHECK(due_at(renewed).value() == renew_at(renewed).value() - due_jitter(renewed));
    require_error(f.store->set_renewal_info("ari.test", gen, plain, f.clock.now()), Code::conflict, "is not current");
}
