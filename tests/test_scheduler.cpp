// The renewal scheduler, driven by a fake clock: due times, jitter, backoff, leases, bundles
// and hooks.
#include <atomic>
#include <fstream>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include "renew/health.hpp"
#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "renew/scheduler.hpp"
#include "store/sqlite.hpp"
#include "store/validate.hpp"
#include "tests/support/fake_issuer.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using Catch::Contains;
using certfs::test::FakeIssuers;
using certfs::test::LogCapture;
using certfs::test::TempDir;
using namespace std::chrono_literals;

namespace {

struct Fixture {
    TempDir dir;
    std::string path = (dir / "certfs.db").string();
    FakeClock clock{std::chrono::system_clock::now()};
    std::unique_ptr<store::Store> store =
        store::Store::open(path, {.create = true, .actor = "test", .clock = &clock}).value();
    Renewer renewer{*store, "test"};

    Fixture() { REQUIRE(store->add_issuer(create_local_ca("ca", {}, clock.now()).value()).ok()); }

    SchedulerOptions options(const std::string& owner = "scheduler A")
    {
        SchedulerOptions o;
        o.db_path = path;
        o.owner = owner;
        o.restart_spread = 0ms;
        o.hooks.lock_dir = path + ".hooks";
        o.hooks.timeout = 10s;
        return o;
    }

    void add(const std::string& name, std::optional<std::string> bundle = std::nullopt,
             std::vector<std::string> hooks = {}, const std::string& issuer = "ca")
    {
        store::DomainConfig c;
        c.name = name;
        c.issuer = issuer;
        c.dns_names = {name};
        c.bundle = std::move(bundle);
        c.deploy_hooks = std::move(hooks);
        REQUIRE(renewer.add_and_issue(c).ok());
    }

    store::Domain domain(const std::string& name) { return store->get_domain(name).value(); }
    std::int64_t gen(const std::string& name) { return domain(name).current_gen.value(); }
    std::size_t generations(const std::string& name) { return store->history(name).value().size(); }

    // Moves the clock to when the last of `names` is due.
    void until_due(const std::vector<std::string>& names)
    {
        TimePoint t = clock.now();
        for (const auto& n : names) {
            t = std::max(t, due_at(domain(n)).value());
        }
        clock.set(t);
    }
};

// Runs one pass and waits for what it started.
TimePoint pass(Scheduler& s)
{
    auto next = s.step();
    REQUIRE(next.ok());
    s.wait_idle();
    return *next;
}

std::vector<std::string> lines_of(const std::string& path)
{
    std::ifstream in(path);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

} // namespace

TEST_CASE("scheduler: due times are pulled earlier by at most a tenth of the window: stable and spread")
{
    Fixture f;
    std::set<std::int64_t> jitters;
    for (int i = 0; i < 12; ++i) {
        auto name = "d" + std::to_string(i) + ".test";
        f.add(name);
        auto d = f.domain(name);
        const auto at = renew_at(d).value();
        const auto window = *d.current_not_after - at; // a third of a 90-day certificate, from its issue
        CHECK(window == std::chrono::duration_cast<Duration>(*d.current_not_after - *issued_at(d)) / 3);
        CHECK(*issued_at(d) == *d.current_created_at); // not the backdated not_before
        const auto due = due_at(d).value();
        CHECK(due <= at);
        CHECK(due >= at - window / 10);
        CHECK(due_at(f.domain(name)) == due); // the same after reading it again (a restart)
        jitters.insert(std::chrono::duration_cast<std::chrono::seconds>(at - due).count());
    }
    CHECK(jitters.size() >= 10); // spread, not lockstep
}

TEST_CASE("scheduler: backoff doubles from one minute to six hours and jitter pulls it earlier by at most a fifth")
{
    const std::vector<Duration> expected = {1min, 2min, 4min, 8min, 16min, 32min, 64min, 128min, 256min, 6h, 6h};
    for (std::size_t i = 0; i < expected.size(); ++i) {
        auto failures = static_cast<std::int64_t>(i + 1);
        CHECK(backoff_delay(failures) == expected[i]);
        CHECK(jittered_backoff(failures, 0.0) == expected[i]);
        CHECK(jittered_backoff(failures, 1.0) == expected[i] - expected[i] / 5);
        auto d = jittered_backoff(failures, random_unit());
        CHECK(d <= expected[i]);
        CHECK(d >= expected[i] - expected[i] / 5);
    }
}

TEST_CASE("scheduler: renews a domain when it is due and not before and sleeps until then")
{
    Fixture f;
    f.add("due.test");
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    auto next = pass(s);
    CHECK(f.gen("due.test") == 1);
    CHECK(next == due_at(f.domain("due.test")).value()); // it sleeps exactly until the due time
    f.clock.set(next - 1s);
    pass(s);
    CHECK(f.gen("due.test") == 1);
    f.clock.set(next);
    pass(s);
    CHECK(f.gen("due.test") == 2);
    CHECK(f.domain("due.test").state == store::DomainState::monitoring);
    CHECK(f.store->leases().value().empty());
}

TEST_CASE("scheduler: a name written into the store by hand is not renewed, nor its bundle, is logged once, the "
          "loop does not spin on it, and the bundle's other members are still warned of before they expire")
{
    LogCapture log;
    Fixture f;
    f.add("fine.test");
    f.add("hand.test");
    f.add("mate-a.test", "pair");
    f.add("mate-b.test", "pair");
    REQUIRE(f.store->db_for_testing().exec("UPDATE domains SET name = '../hand' WHERE name = 'hand.test'").ok());
    REQUIRE(f.store->db_for_testing().exec("UPDATE domains SET name = 'Mate-B.test' WHERE name = 'mate-b.test'").ok());
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    f.until_due({"fine.test", "mate-a.test"});
    f.clock.advance(48h); // every one of them is due
    TimePoint next = pass(s);
    CHECK(f.gen("fine.test") == 2);
    CHECK(f.gen("../hand") == 1);
    CHECK(f.gen("mate-a.test") == 1); // its bundle has a name the mount refuses
    CHECK(f.gen("Mate-B.test") == 1);
    CHECK(next > f.clock.now()); // asleep until fine.test's next due time, not at once again
    for (int i = 0; i < 3; ++i) {
        pass(s);
    }
    CHECK(f.gen("../hand") == 1);
    CHECK(f.domain("../hand").last_error.empty()); // nothing recorded: the row is left as it was
    auto said = log.lines_with("not renewing a domain of the store");
    REQUIRE(said.size() == 2);
    CHECK_THAT(said[0] + said[1], Catch::Contains("error not renewing a domain of the store (nor the rest of its "
                                                  "bundle): invalid domain name '../hand'"));
    CHECK_THAT(said[0] + said[1], Catch::Contains("invalid domain name 'Mate-B.test'"));

    // Not renewed, mate-a.test is still warned of as its certificate nears its end, once a
    // threshold, saying why. (Due with jitter, it may be past the 30-day one already.)
    const std::string why = " and has not been renewed (its bundle holds a name the mount refuses: " +
                            store::check_served_name("Mate-B.test").message() + ")";
    const auto before = log.lines_with("mate-a.test: the certificate expires");
    REQUIRE(before.size() <= 1);
    for (const auto& line : before) {
        CHECK_THAT(line, Catch::StartsWith("warning mate-a.test: the certificate expires in ") && Catch::EndsWith(why));
    }
    const TimePoint expires = f.domain("mate-a.test").current_not_after.value();
    CHECK(next <= expires - std::chrono::days(14)); // the loop wakes for the next threshold
    f.clock.set(expires - std::chrono::days(13));
    pass(s);
    pass(s);
    const auto warned = log.lines_with("mate-a.test: the certificate expires");
    REQUIRE(warned.size() == before.size() + 1);
    CHECK(warned.back() == "warning mate-a.test: the certificate expires in 13d" + why);
    CHECK(f.gen("mate-a.test") == 1);
}

TEST_CASE("scheduler: two schedulers on one store renew each due domain exactly once")
{
    Fixture f;
    std::vector<std::string> names;
    for (int i = 0; i < 6; ++i) {
        names.push_back("twice" + std::to_string(i) + ".test");
        f.add(names.back());
    }
    f.until_due(names);
    Scheduler a(f.options("scheduler A"), f.clock);
    Scheduler b(f.options("scheduler B"), f.clock);
    REQUIRE(a.start(false).ok());
    REQUIRE(b.start(false).ok());
    REQUIRE(a.step().ok());
    REQUIRE(b.step().ok());
    a.wait_idle();
    b.wait_idle();
    // Nothing was left undone, nothing was done twice.
    REQUIRE(a.step().ok());
    REQUIRE(b.step().ok());
    a.wait_idle();
    b.wait_idle();
    for (const auto& n : names) {
        INFO(n);
        CHECK(f.generations(n) == 2);
    }
}

TEST_CASE("scheduler: a lease held from another host blocks until it expires and is then taken over")
{
    Fixture f;
    f.add("lease.test");
    f.until_due({"lease.test"});
    store::LeaseHolder remote = store::this_process();
    remote.machine_id = "0123456789abcdef0123456789abcdef"; // nothing here can tell whether it runs
    REQUIRE(f.store->acquire_lease("domain:lease.test", "certfs pid 999 on host b", 5min, remote).ok());
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    pass(s);
    CHECK(f.gen("lease.test") == 1);
    CHECK(f.domain("lease.test").failures == 0); // someone else's renewal is not a failure
    f.clock.advance(5min + 1s);
    pass(s);
    CHECK(f.gen("lease.test") == 2);
    CHECK(f.store->leases().value().empty());
}

TEST_CASE("scheduler: a due domain whose lease another owner holds waits for its release, a minute at most, not a spin")
{
    Fixture f;
    f.add("held.test");
    f.until_due({"held.test"});
    const std::string holder = "certfsctl on another host";
    REQUIRE(f.store->acquire_lease("domain:held.test", holder, 1h).ok());
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    const TimePoint tried_at = f.clock.now();
    pass(s); // finds the lease held: nothing recorded
    // The passes after it start nothing and sleep until a minute after the try.
    CHECK(pass(s) == tried_at + 1min);
    f.clock.advance(30s);
    CHECK(pass(s) == tried_at + 1min);
    CHECK(f.gen("held.test") == 1);
    CHECK(f.domain("held.test").failures == 0); // someone else's renewal is not a failure
    // A minute later it tries again (its holder may have died), and waits again.
    f.clock.set(tried_at + 1min);
    pass(s);
    CHECK(pass(s) == tried_at + 2min);
    // Released: the next pass renews it, without waiting for the minute.
    REQUIRE(f.store->release_lease("domain:held.test", holder).ok());
    pass(s);
    CHECK(f.gen("held.test") == 2);
}

TEST_CASE("scheduler: a store too busy to start a renewal in, which records nothing, holds the next try a minute")
{
    Fixture f;
    f.add("busy.test");
    f.until_due({"busy.test"});
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    {
        // Another writer holds the store past the busy timeout: the renewal cannot start, and
        // cannot record its failure either.
        auto db = store::Db::open(f.path, false).value();
        auto writer = store::WriteTxn::begin(*db).value();
        pass(s);
    }
    const TimePoint failed_at = f.clock.now();
    CHECK(f.gen("busy.test") == 1);
    CHECK(f.domain("busy.test").failures == 0);
    // The store is free again, but the next try waits a minute after the failed one.
    CHECK(pass(s) == failed_at + 1min);
    CHECK(f.gen("busy.test") == 1);
    f.clock.set(failed_at + 1min);
    pass(s);
    CHECK(f.gen("busy.test") == 2);
}

TEST_CASE("scheduler: a renewal-information fetch that fails before it records anything waits a minute, not a loop")
{
    Fixture f;
    FakeIssuers fakes; // refuses to make an issuer of kind acme: the fetch fails before it asks
    std::atomic<int> loads{0};
    REQUIRE(f.store->add_issuer({"acme", "acme", "{}", "", ""}).ok());
    test::TestCa ca;
    auto leaf = test::make_leaf(ca, {{"ari.test"}, {}});
    store::DomainConfig c;
    c.name = "ari.test";
    c.issuer = "acme";
    c.dns_names = {"ari.test"};
    REQUIRE(f.store->add_domain(c, store::GenerationInput{leaf.key_pem, leaf.cert_pem, ca.cert_pem}).ok());
    auto options = f.options();
    options.issuers = [&loads, inner = fakes.factory()](store::Store& st, const store::Issuer& record) {
        ++loads;
        return inner(st, record);
    };
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    pass(s);
    CHECK(loads == 1);
    CHECK_FALSE(f.domain("ari.test").ari_next_check); // nothing recorded
    const TimePoint failed_at = f.clock.now();
    CHECK(pass(s) <= failed_at + 1min);
    f.clock.advance(59s);
    pass(s);
    CHECK(loads == 1);
    f.clock.set(failed_at + 1min);
    pass(s);
    CHECK(loads == 2);
}

TEST_CASE("scheduler: a bundle switches all of its members in one commit or none of them")
{
    Fixture f;
    LocalCaConfig short_ca;
    short_ca.ca_validity = 40 * 24h;
    short_ca.validity = 30 * 24h;
    REQUIRE(f.store->add_issuer(create_local_ca("short", short_ca, f.clock.now()).value()).ok());
    f.add("a.pair.test", "pair");
    f.add("b.pair.test", "pair", {}, "short");
    f.add("c.ok.test", "ok");
    f.add("d.ok.test", "ok");
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());

    // Day 41: b is due and its CA has expired: b cannot be renewed, so a is not either.
    f.clock.set(f.clock.now() + 41 * 24h);
    pass(s);
    for (const char* name : {"a.pair.test", "b.pair.test"}) {
        INFO(name);
        auto d = f.domain(name);
        CHECK(d.current_gen == 1);
        CHECK(d.state == store::DomainState::rejected);
        CHECK_THAT(d.last_error, Contains("expired"));
        CHECK(d.failures == 1);
    }
    CHECK(f.gen("c.ok.test") == 1); // not due yet

    // The bundle "ok" as a whole: both members when the first is due.
    f.clock.set(std::min(due_at(f.domain("c.ok.test")).value(), due_at(f.domain("d.ok.test")).value()));
    pass(s);
    CHECK(f.gen("c.ok.test") == 2);
    CHECK(f.gen("d.ok.test") == 2);
}

TEST_CASE("scheduler: renewals run up to the concurrency limit per pass")
{
    Fixture f;
    std::vector<std::string> names;
    for (int i = 0; i < 5; ++i) {
        names.push_back("c" + std::to_string(i) + ".test");
        f.add(names.back());
    }
    f.until_due(names);
    auto options = f.options();
    options.concurrency = 2;
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    auto renewed = [&] {
        return std::count_if(names.begin(), names.end(), [&](const std::string& n) { return f.gen(n) == 2; });
    };
    pass(s);
    CHECK(renewed() == 2);
    pass(s);
    CHECK(renewed() == 4);
    pass(s);
    CHECK(renewed() == 5);
}

TEST_CASE("scheduler: with more due than it has room for, the longest overdue go first, not the first names")
{
    // Added five days apart, the last name first: e.test is due first, a.test last (90-day
    // leaves: the jitter is at most a tenth of their 30-day window, 3 days).
    Fixture f;
    const std::vector<std::string> names = {"e.test", "d.test", "c.test", "b.test", "a.test"};
    for (const auto& n : names) {
        f.add(n);
        f.clock.advance(std::chrono::days(5));
    }
    f.until_due(names);
    auto options = f.options();
    options.concurrency = 1;
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    for (const auto& n : names) {
        pass(s);
        INFO("after the pass that should renew " << n);
        CHECK(f.gen(n) == 2);
    }
}

TEST_CASE("scheduler: a hook named by every member of a bundle runs once for the batch")
{
    Fixture f;
    const std::string log = (f.dir / "hook.log").string();
    const std::string hook = "/bin/sh -c 'echo \"$CERTFS_NAMES $CERTFS_GENERATION\" >> " + log + "'";
    const std::string other = "/bin/sh -c 'echo other >> " + log + ".other'";
    f.add("x.web.test", "web", {hook});
    f.add("y.web.test", "web", {hook, other});
    f.add("z.web.test", "web", {hook});
    f.until_due({"x.web.test", "y.web.test", "z.web.test"});
    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    pass(s);
    auto runs = lines_of(log);
    REQUIRE(runs.size() == 1);
    CHECK_THAT(runs[0], Contains("x.web.test") && Contains("y.web.test") && Contains("z.web.test"));
    CHECK(lines_of(log + ".other").size() == 1);
    for (const char* name : {"x.web.test", "y.web.test", "z.web.test"}) {
        CHECK(f.domain(name).hook_error.empty());
        CHECK(f.domain(name).state == store::DomainState::monitoring);
    }
}

TEST_CASE("scheduler: a failing or hanging hook is shown on its domain and the commit stays")
{
    Fixture f;
    f.add("fails.test", std::nullopt, {"/bin/false"});
    f.add("hangs.test", std::nullopt, {"/bin/sleep 30"});
    f.until_due({"fails.test", "hangs.test"});
    auto options = f.options();
    options.hooks.timeout = 300ms;
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    auto started = std::chrono::steady_clock::now();
    pass(s);
    CHECK(std::chrono::steady_clock::now() - started < 20s); // the hanging hook was ended
    CHECK(f.gen("fails.test") == 2);
    CHECK(f.gen("hangs.test") == 2);
    CHECK_THAT(f.domain("fails.test").hook_error, Contains("/bin/false") && Contains("exit status 1"));
    CHECK_THAT(f.domain("hangs.test").hook_error, Contains("timed out"));
}

TEST_CASE("scheduler: after a restart overdue retries are spread and not all run at once")
{
    Fixture f;
    LocalCaConfig short_ca;
    short_ca.ca_validity = 40 * 24h;
    short_ca.validity = 30 * 24h;
    REQUIRE(f.store->add_issuer(create_local_ca("short", short_ca, f.clock.now()).value()).ok());
    std::vector<std::string> names;
    for (int i = 0; i < 10; ++i) {
        names.push_back("r" + std::to_string(i) + ".test");
        f.add(names.back(), std::nullopt, {}, "short");
    }
    // Every renewal fails (the CA expired) and is then long overdue when a new daemon starts.
    f.clock.set(f.clock.now() + 41 * 24h);
    {
        auto options = f.options();
        options.concurrency = 10;
        Scheduler first(options, f.clock);
        REQUIRE(first.start(false).ok());
        pass(first);
    }
    for (const auto& n : names) {
        REQUIRE(f.domain(n).failures == 1);
    }
    f.clock.advance(2h);
    auto options = f.options();
    options.restart_spread = 1h;
    options.concurrency = 10;
    Scheduler restarted(options, f.clock);
    REQUIRE(restarted.start(false).ok());
    auto next = pass(restarted);
    auto tried = [&] {
        return std::count_if(names.begin(), names.end(),
                             [&](const std::string& n) { return f.domain(n).failures == 2; });
    };
    CHECK(tried() < 10);
    CHECK(next <= f.clock.now() + 1h);
    f.clock.advance(1h);
    pass(restarted);
    CHECK(tried() == 10);
}

TEST_CASE("scheduler: expiry warnings come 30, 14, 7, 3 and 1 days before the end")
{
    store::Domain d;
    const TimePoint end = std::chrono::system_clock::now();
    d.current_not_after = end;
    CHECK_FALSE(expiry_warning_days(d, end - 31 * 24h));
    CHECK(expiry_warning_days(d, end - 30 * 24h) == 30);
    CHECK(expiry_warning_days(d, end - 15 * 24h) == 30);
    CHECK(expiry_warning_days(d, end - 14 * 24h) == 14);
    CHECK(expiry_warning_days(d, end - 7 * 24h) == 7);
    CHECK(expiry_warning_days(d, end - 3 * 24h) == 3);
    CHECK(expiry_warning_days(d, end - 1h) == 1);
    CHECK(expiry_warning_days(d, end) == 0);
    CHECK(expiry_warning_days(d, end + 24h) == 0);
}

TEST_CASE("scheduler: a CA down for 60 days: the certificate stays current until it expires and after, warnings "
          "come at 30, 14, 7, 3 and 1 days and at the end, tries come 6 hours apart at most, check says why")
{
    Fixture f;
    LogCapture log;
    FakeIssuers fakes;
    const std::string name = "down.test";
    {
        store::DomainConfig c;
        c.name = name;
        c.issuer = "ca";
        c.dns_names = {name};
        c.renew_before = std::chrono::days(40); // due 50 days into the 90, before the first warning
        REQUIRE(f.renewer.add_and_issue(c).ok());
    }
    const TimePoint expires = *f.domain(name).current_not_after;
    f.until_due({name});
    const TimePoint down_from = f.clock.now();
    fakes.fail(name, Status::Unavailable("cannot connect to ca.example.test:443"));
    auto options = f.options();
    options.issuers = fakes.factory();
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());

    // The daemon's loop, with the clock moved to each time it asks to be woken at, and to the
    // two instants the admin runs `certfsctl check`.
    const TimePoint back = down_from + std::chrono::days(60); // 20 days after the expiry
    std::vector<TimePoint> checks = {expires - 12h, expires + 1h};
    std::vector<std::vector<std::string>> checked;
    int passes = 0;
    while (f.clock.now() < back) {
        const TimePoint now = f.clock.now();
        const int before = fakes.calls(name);
        pass(s); // what is due runs
        // The renewal's end wakes the loop, which plans its next wake: never now again.
        const TimePoint next = pass(s);
        passes += 2;
        REQUIRE(fakes.calls(name) - before <= 1);
        REQUIRE(next > now);
        CHECK(f.gen(name) == 1);
        if (!checks.empty() && checks.front() <= next) {
            f.clock.set(checks.front());
            checks.erase(checks.begin());
            checked.push_back(check_store(*f.store).value());
            continue;
        }
        f.clock.set(next);
    }
    const int tries = fakes.calls(name);
    std::printf("CA down for 60 days: %d tries, %d passes of the scheduler\n", tries, passes);

    // Kept current all along, expired or not: nothing else is there to serve.
    CHECK(f.gen(name) == 1);
    CHECK(f.generations(name) == 1);
    auto d = f.domain(name);
    CHECK(d.state == store::DomainState::backoff);
    CHECK(d.last_error == "domain down.test: issuer ca: cannot connect to ca.example.test:443");
    // Backoff from a minute to 6 hours: over 60 days, four tries a day and a few more at first.
    CHECK(tries >= 4 * 59);
    CHECK(tries <= 5 * 60 + 12);              // jitter pulls each try earlier by up to a fifth
    CHECK(passes <= 2 * (tries + 5 + 1 + 2)); // a wake for each try, warning and check

    const auto warnings = log.lines_with("down.test: the certificate expires in");
    REQUIRE(warnings.size() == 5);
    const char* lefts[] = {"30d", "14d", "7d", "3d", "1d"};
    for (std::size_t i = 0; i < warnings.size(); ++i) {
        CHECK(warnings[i] == "warning down.test: the certificate expires in " + std::string(lefts[i]) +
                                 " and has not been renewed (last error: " + d.last_error + ")");
    }
    const auto errors = log.lines_with("down.test: the certificate expired");
    REQUIRE(errors.size() == 1);
    CHECK(errors[0] == "error down.test: the certificate expired at " + format_rfc3339(expires) +
                           " and has not been renewed (last error: " + d.last_error + "); it is still served");

    REQUIRE(checked.size() == 2);
    REQUIRE(checked[0].size() == 1);
    CHECK_THAT(checked[0][0], Contains("domain down.test: due for renewal since") &&
                                  Contains("but not renewed (expires " + format_rfc3339(expires) +
                                           "; last error: " + d.last_error + ")"));
    REQUIRE(checked[1].size() == 1);
    CHECK_THAT(checked[1][0], Contains("domain down.test: current generation 1: validation failed (validity): "
                                       "the certificate expired at"));

    // The CA answers again: the next try renews, and nothing more is said.
    fakes.succeed(name);
    f.clock.set(*f.domain(name).next_attempt);
    pass(s);
    CHECK(f.gen(name) == 2);
    CHECK(f.domain(name).state == store::DomainState::monitoring);
    CHECK(check_store(*f.store).value().empty());
    CHECK(log.lines_with("down.test: the certificate expire").size() == 6);
}

TEST_CASE("check: a domain past its jittered due time, renewing or about to, is no problem before its renewal time")
{
    Fixture f;
    f.add("healthy.test");
    const auto d = f.domain("healthy.test");
    REQUIRE(*due_at(d) < *renew_at(d));
    f.clock.set(*due_at(d));
    CHECK(check_store(*f.store).value().empty());
    f.clock.set(*renew_at(d));
    const auto late = check_store(*f.store).value();
    REQUIRE(late.size() == 1);
    CHECK_THAT(late[0], Contains("domain healthy.test: due for renewal since " + format_rfc3339(*renew_at(d))));
}

TEST_CASE("scheduler: an issuer failing with each kind of error marks only its domain and the others commit")
{
    Fixture f;
    FakeIssuers fakes;
    struct Case {
        std::string name;
        Status failure;
        store::DomainState state;
    };
    const std::vector<Case> cases = {
        {"down.test", Status::Unavailable("the CA is down"), store::DomainState::backoff},
        {"busy.test", Status::Conflict("an order for these names is in progress"), store::DomainState::backoff},
        {"refused.test", Status::Invalid("the CA refused the names"), store::DomainState::rejected},
        {"broken.test", Status::Corrupt("the account key is unreadable"), store::DomainState::misconfigured},
        {"io.test", Status::IoError("cannot write the order"), store::DomainState::misconfigured},
    };
    std::vector<std::string> names = {"fine1.test", "fine2.test"};
    for (const auto& c : cases) {
        names.push_back(c.name);
        fakes.fail(c.name, c.failure);
    }
    for (const auto& n : names) {
        f.add(n);
    }
    f.until_due(names);
    auto options = f.options();
    options.concurrency = static_cast<int>(names.size());
    options.issuers = fakes.factory();
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    pass(s);
    for (const auto& c : cases) {
        INFO(c.name);
        auto d = f.domain(c.name);
        CHECK(d.current_gen == 1);
        CHECK(d.state == c.state);
        CHECK(d.last_error == "domain " + c.name + ": issuer ca: " + c.failure.message());
        CHECK(d.failures == 1);
        CHECK(fakes.calls(c.name) == 1);
    }
    for (const char* name : {"fine1.test", "fine2.test"}) {
        INFO(name);
        CHECK(f.gen(name) == 2);
        CHECK(f.domain(name).state == store::DomainState::monitoring);
        CHECK(f.domain(name).last_error.empty());
    }
}

TEST_CASE("scheduler: a failed attempt sets the next one: no retry before it and one at it")
{
    Fixture f;
    FakeIssuers fakes;
    f.add("retry.test");
    f.until_due({"retry.test"});
    fakes.fail("retry.test", Status::Unavailable("rate limited").with_retry_after(10min));
    auto options = f.options();
    options.issuers = fakes.factory();
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    const TimePoint failed_at = f.clock.now();
    pass(s);
    auto d = f.domain("retry.test");
    REQUIRE(d.next_attempt);
    CHECK(*d.next_attempt >= failed_at + 10min); // never sooner than the CA asked
    CHECK(d.last_error == "domain retry.test: issuer ca: rate limited");

    // The next pass sleeps until that attempt (or, if it comes first, until the next expiry
    // warning is due), and passes before it do not spin on the CA.
    TimePoint wake = *d.next_attempt;
    for (int days : {30, 14, 7, 3, 1}) {
        if (const TimePoint warn = *d.current_not_after - std::chrono::days(days); warn > f.clock.now()) {
            wake = std::min(wake, warn);
        }
    }
    auto next = pass(s);
    CHECK(next == wake);
    f.clock.set(*d.next_attempt - 1s);
    pass(s);
    CHECK(fakes.calls("retry.test") == 1);

    f.clock.set(*d.next_attempt);
    pass(s);
    CHECK(fakes.calls("retry.test") == 2);
    CHECK(f.domain("retry.test").failures == 2);
    CHECK(*f.domain("retry.test").next_attempt >= f.clock.now() + 10min);

    fakes.succeed("retry.test");
    f.clock.set(*f.domain("retry.test").next_attempt);
    pass(s);
    CHECK(fakes.calls("retry.test") == 3);
    CHECK(f.gen("retry.test") == 2);
    CHECK(f.domain("retry.test").state == store::DomainState::monitoring);
}

TEST_CASE("scheduler: an issuer that throws fails only its domain, and its next try waits a minute, not a spin")
{
    Fixture f;
    FakeIssuers fakes;
    f.add("throws.test");
    f.add("fine.test");
    f.until_due({"throws.test", "fine.test"});
    fakes.raise("throws.test", "a bug in an issuer");
    auto options = f.options();
    options.issuers = fakes.factory();
    Scheduler s(options, f.clock);
    REQUIRE(s.start(false).ok());
    pass(s); // without the boundary, the exception ends the process here
    CHECK(fakes.calls("throws.test") == 1);
    CHECK(f.gen("fine.test") == 2);
    CHECK(f.gen("throws.test") == 1);
    CHECK(f.store->leases().value().empty()); // the lease guard released it on the way out

    // Nothing recorded the failure in the store, so the scheduler sets the next try itself.
    const TimePoint threw_at = f.clock.now();
    CHECK(pass(s) <= threw_at + 1min);
    CHECK(fakes.calls("throws.test") == 1);
    f.clock.set(threw_at + 59s);
    pass(s);
    CHECK(fakes.calls("throws.test") == 1);
    f.clock.set(threw_at + 1min);
    pass(s);
    CHECK(fakes.calls("throws.test") == 2);

    fakes.succeed("throws.test");
    f.clock.set(threw_at + 2min);
    pass(s);
    CHECK(f.gen("throws.test") == 2);
}

TEST_CASE("scheduler: an issuer that hangs holds up only its own domain and keeps its lease")
{
    Fixture f;
    FakeIssuers fakes;
    f.add("slow.test");
    f.add("fast.test");
    f.until_due({"slow.test", "fast.test"});
    fakes.hang("slow.test");
    auto options = f.options();
    options.issuers = fakes.factory();
    Scheduler s(options, f.clock);
    Scheduler other(f.options("scheduler B"), f.clock); // the built-in issuers: it must not get there
    // Destroyed before the schedulers, whose stop() waits for the hung renewal.
    struct ReleaseAtEnd {
        FakeIssuers& fakes;
        ~ReleaseAtEnd() { fakes.release("slow.test"); }
    } release_at_end{fakes};
    REQUIRE(s.start(false).ok());
    REQUIRE(other.start(false).ok());

    REQUIRE(s.step().ok());
    REQUIRE(fakes.wait_hanging("slow.test"));
    // fast.test's lease is released just after its commit: wait for both.
    CHECK(test::wait_until([&] { return f.gen("fast.test") == 2 && f.store->leases().value().size() == 1; }));
    CHECK(f.domain("slow.test").state == store::DomainState::issuing);
    auto leases = f.store->leases().value();
    REQUIRE(leases.size() == 1);
    CHECK(leases.front().scope == "domain:slow.test");
    CHECK(leases.front().owner == "scheduler A");

    // Another scheduler finds the lease and leaves the domain alone; so does this one.
    pass(other);
    REQUIRE(s.step().ok());
    CHECK(fakes.calls("slow.test") == 1);
    CHECK(f.gen("slow.test") == 1);
    CHECK(f.domain("slow.test").failures == 0);

    fakes.release("slow.test");
    s.wait_idle();
    CHECK(f.gen("slow.test") == 2);
    CHECK(f.generations("fast.test") == 2);
    CHECK(f.store->leases().value().empty());
}

TEST_CASE("scheduler: a domain that falls due while its owed hooks run renews at the next pass, not a minute later")
{
    // Found by the random kills (test_crash): a daemon that started after a crash ran the hooks
    // the dead one owed, the domain fell due meanwhile, and its renewal waited the minute meant
    // for a run that leaves its scope due without recording why.
    Fixture f;
    const std::string started = (f.dir / "hook.started").string();
    const std::string gate = (f.dir / "hook.gate").string();
    f.add("owed.test", std::nullopt,
          {"/bin/sh -c 'touch " + started + "; while [ ! -e " + gate + " ]; do sleep 0.01; done'"});
    // A renewal whose process died before its hooks: generation 2 is committed, its hooks owed.
    REQUIRE(f.renewer.renew("owed.test", true).ok());
    REQUIRE(f.domain("owed.test").hooks_owed == 2);
    const TimePoint due = due_at(f.domain("owed.test")).value();
    REQUIRE(due > f.clock.now());

    Scheduler s(f.options(), f.clock);
    REQUIRE(s.start(false).ok());
    REQUIRE(s.step().ok()); // runs the owed hooks: not due for a renewal yet
    // The hook takes its time; the domain falls due before it ends.
    REQUIRE(test::wait_until([&] { return std::filesystem::exists(started); }));
    f.clock.set(due + 1s);
    test::write_file(gate, "");
    s.wait_idle();
    CHECK_FALSE(f.domain("owed.test").hooks_owed);
    CHECK(f.gen("owed.test") == 2);

    pass(s);
    CHECK(f.gen("owed.test") == 3);
}
