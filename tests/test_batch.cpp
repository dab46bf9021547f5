// The batch runner (renew/batch.hpp) that the daemon's scheduler and `certfsctl renew` share:
// one renewal per scope, workers, hooks once per batch after the commit, results per scope.
// Issuers are the in-process fake (tests/support/fake_issuer.hpp).
#include <algorithm>
#include <filesystem>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/batch.hpp"
#include "renew/local_ca.hpp"
#include "store/mount.hpp"
#include "tests/support/fake_issuer.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using Catch::Contains;
using certfs::test::FakeIssuers;
using certfs::test::TempDir;
using namespace std::chrono_literals;

namespace {

struct Fixture {
    TempDir dir;
    std::string path = (dir / "certfs.db").string();
    std::unique_ptr<store::Store> store =
        store::Store::open(path, {.create = true, .actor = "test", .clock = nullptr}).value();
    FakeIssuers fakes;

    Fixture() { REQUIRE(store->add_issuer(create_local_ca("ca", {}, std::chrono::system_clock::now()).value()).ok()); }

    void add(const std::string& name, std::optional<std::string> bundle = std::nullopt,
             std::vector<std::string> hooks = {})
    {
        store::DomainConfig c;
        c.name = name;
        c.issuer = "ca";
        c.dns_names = {name};
        c.bundle = std::move(bundle);
        c.deploy_hooks = std::move(hooks);
        REQUIRE(Renewer(*store, "test", fakes.factory()).add_and_issue(c).ok());
    }

    BatchOptions options(bool force = true)
    {
        BatchOptions o;
        o.db_path = path;
        o.actor = "test";
        o.owner = "batch";
        o.issuers = fakes.factory();
        o.force = force;
        o.hooks.lock_dir = store::hooks_lock_dir(path);
        o.hooks.timeout = 10s;
        return o;
    }

    std::int64_t gen(const std::string& name) { return store->get_domain(name).value().current_gen.value_or(0); }
};

// Releases slow.test's hang and joins the thread running the batch, also when the test failed.
struct JoinAtEnd {
    FakeIssuers& fakes;
    std::thread& batch;
    ~JoinAtEnd()
    {
        fakes.release("slow.test");
        if (batch.joinable()) {
            batch.join();
        }
    }
};

} // namespace

TEST_CASE("batch: one renewal per scope: a bundle once through its first member named and a name once")
{
    Fixture f;
    f.add("a.test");
    f.add("x.pair.test", "pair");
    f.add("y.pair.test", "pair");
    CHECK(one_per_scope(*f.store, {"y.pair.test", "a.test", "x.pair.test", "a.test", "gone.test"}) ==
          std::vector<std::string>{"y.pair.test", "a.test", "gone.test"});

    auto done = BatchRunner(f.options()).run(*f.store, {"y.pair.test", "a.test", "x.pair.test", "gone.test"});
    REQUIRE(done.size() == 3);
    CHECK(done[0].name == "y.pair.test");
    REQUIRE(done[0].outcomes.ok());
    CHECK(done[0].outcomes->size() == 2); // both members, in one commit
    CHECK(done[1].name == "a.test");
    REQUIRE(done[1].outcomes.ok());
    CHECK(done[1].outcomes->front().message == "renewed: generation 2");
    test::require_error(done[2].outcomes, Code::not_found, "no domain named gone.test");
    for (const char* name : {"a.test", "x.pair.test", "y.pair.test"}) {
        INFO(name);
        CHECK(f.gen(name) == 2);
        CHECK(f.fakes.calls(name) == 2); // the first issue and this renewal: never twice
    }
}

TEST_CASE("batch: an issuer failing with each kind of error fails its scope only and the others commit")
{
    Fixture f;
    const std::vector<std::pair<std::string, Status>> failing = {
        {"down.test", Status::Unavailable("the CA is down")},
        {"refused.test", Status::Invalid("the CA refused the names")},
        {"broken.test", Status::Corrupt("the account key is unreadable")},
        {"busy.test", Status::Conflict("an order for these names is in progress")},
    };
    std::vector<std::string> names = {"fine1.test", "fine2.test"};
    for (const auto& [name, failure] : failing) {
        names.push_back(name);
    }
    for (const auto& n : names) {
        f.add(n);
    }
    for (const auto& [name, failure] : failing) {
        f.fakes.fail(name, failure);
    }
    auto options = f.options();
    options.jobs = 3;
    auto done = BatchRunner(options).run(*f.store, names);
    REQUIRE(done.size() == names.size());
    for (std::size_t i = 2; i < done.size(); ++i) {
        const auto& [name, failure] = failing[i - 2];
        INFO(name);
        CHECK(done[i].name == name);
        test::require_error(done[i].outcomes, failure.code(), "domain " + name + ": issuer ca: " + failure.message());
        CHECK(f.store->get_domain(name)->last_error == "domain " + name + ": issuer ca: " + failure.message());
        CHECK(f.gen(name) == 1);
    }
    for (std::size_t i = 0; i < 2; ++i) {
        INFO(names[i]);
        REQUIRE(done[i].outcomes.ok());
        CHECK(f.gen(names[i]) == 2);
    }
}

TEST_CASE("batch: an issuer that throws fails its scope with the exception's message and the others commit")
{
    Fixture f;
    for (const char* n : {"throws.test", "fine.test"}) {
        f.add(n);
    }
    f.fakes.raise("throws.test", "a bug in an issuer");
    auto options = f.options();
    options.jobs = 2;
    auto done = BatchRunner(options).run(*f.store, {"throws.test", "fine.test"});
    REQUIRE(done.size() == 2);
    test::require_error(done[0].outcomes, Code::io_error, "exception: a bug in an issuer");
    CHECK(done[0].unrecorded);
    CHECK(done[0].runs.empty());
    CHECK(f.gen("throws.test") == 1);
    REQUIRE(done[1].outcomes.ok());
    CHECK_FALSE(done[1].unrecorded);
    CHECK(f.gen("fine.test") == 2);
}

TEST_CASE("batch: a hanging issuer holds one worker and the other scopes finish meanwhile")
{
    Fixture f;
    for (const char* name : {"slow.test", "b.test", "c.test", "d.test"}) {
        f.add(name);
    }
    f.fakes.hang("slow.test");
    auto options = f.options();
    options.jobs = 2;
    const BatchRunner runner(options);
    std::vector<ScopeResult> done;
    std::thread batch([&] { done = runner.run(*f.store, {"slow.test", "b.test", "c.test", "d.test"}); });
    const JoinAtEnd join_at_end{f.fakes, batch};

    REQUIRE(f.fakes.wait_hanging("slow.test"));
    auto other = store::Store::open(f.path, {.create = false, .actor = "test", .clock = nullptr}).value();
    auto gen_of = [&](const char* name) { return other->get_domain(name).value().current_gen.value_or(0); };
    // Each lease is released just after its commit: wait for the commits and the releases.
    CHECK(test::wait_until([&] {
        return gen_of("b.test") == 2 && gen_of("c.test") == 2 && gen_of("d.test") == 2 &&
               other->leases().value().size() == 1;
    }));
    CHECK(gen_of("slow.test") == 1);
    CHECK(other->get_domain("slow.test")->state == store::DomainState::issuing);
    auto leases = other->leases().value();
    REQUIRE(leases.size() == 1);
    CHECK(leases.front().scope == "domain:slow.test");

    f.fakes.release("slow.test");
    batch.join();
    REQUIRE(done.size() == 4);
    for (const auto& r : done) {
        INFO(r.name);
        CHECK(r.outcomes.ok());
    }
    CHECK(gen_of("slow.test") == 2);
    CHECK(other->leases().value().empty());
}

TEST_CASE("batch: a bundle's hook runs once after its commit and none runs for a failed scope")
{
    Fixture f;
    const std::string log = (f.dir / "hook.log").string();
    const std::string hook = "/bin/sh -c 'echo \"$CERTFS_NAMES $CERTFS_GENERATION\" >> " + log + "'";
    f.add("x.web.test", "web", {hook});
    f.add("y.web.test", "web", {hook});
    f.add("failing.test", std::nullopt, {hook});
    f.fakes.fail("failing.test", Status::Unavailable("the CA is down"));
    auto done = BatchRunner(f.options()).run(*f.store, {"x.web.test", "failing.test"});
    REQUIRE(done.size() == 2);
    REQUIRE(done[0].runs.size() == 1);
    CHECK(done[0].runs[0].command == hook);
    CHECK(done[0].runs[0].domains == std::vector<std::string>{"x.web.test", "y.web.test"});
    CHECK(done[0].runs[0].status.ok());
    CHECK(done[1].runs.empty());
    const std::string runs = test::read_file(log); // one line per run
    CHECK(std::count(runs.begin(), runs.end(), '\n') == 1);
    CHECK_THAT(runs, Contains("x.web.test y.web.test 2"));
}

TEST_CASE("batch: without force nothing that is not due is renewed and the outcome says until when")
{
    Fixture f;
    f.add("fresh.test");
    auto done = BatchRunner(f.options(false)).run(*f.store, {"fresh.test"});
    REQUIRE(done.size() == 1);
    REQUIRE(done[0].outcomes.ok());
    CHECK_THAT(done[0].outcomes->front().message, Contains("not due until "));
    CHECK(f.fakes.calls("fresh.test") == 1); // only the first issue
    CHECK(f.gen("fresh.test") == 1);
}

TEST_CASE("batch: run_one reports its scope's outcomes before the hooks and a store it cannot open")
{
    Fixture f;
    const std::string ran = (f.dir / "hook.ran").string();
    f.add("one.test", std::nullopt, {"/bin/touch " + ran});
    const BatchRunner runner(f.options());
    bool reported_before_hooks = false;
    auto result = runner.run_one("one.test", [&](const Result<std::vector<RenewOutcome>>& outcomes) {
        reported_before_hooks = outcomes.ok() && outcomes->front().generation == 2 && !std::filesystem::exists(ran);
    });
    REQUIRE(result.outcomes.ok());
    CHECK(reported_before_hooks);
    CHECK(std::filesystem::exists(ran));
    REQUIRE(result.runs.size() == 1);
    CHECK(result.runs[0].status.ok());

    auto options = f.options();
    options.db_path = (f.dir / "missing.db").string();
    std::string reported;
    auto missing =
        BatchRunner(options).run_one("one.test", [&](const auto& outcomes) { reported = outcomes.status().message(); });
    CHECK_FALSE(missing.outcomes.ok());
    CHECK(missing.unrecorded); // nothing could record it: the scheduler sets the next attempt
    CHECK(reported == missing.outcomes.status().message());
    CHECK_THAT(reported, Contains("missing.db"));
}

// certfsctl renew runs through run(): its renewals keep their leases however slow the CA is, as
// the daemon's do, so that no second renewer asks the CA for the same certificate.
TEST_CASE("batch: run() heartbeats its leases: a renewal that outlives the lease ttl keeps its scope")
{
    Fixture f;
    f.add("slow.test");
    f.fakes.hang("slow.test");
    auto options = f.options();
    options.lease_ttl = 1s; // the issuer outlives it three times over
    options.heartbeat = 200ms;
    const BatchRunner runner(options);
    std::vector<ScopeResult> done;
    std::thread batch([&] { done = runner.run(*f.store, {"slow.test"}); });
    const JoinAtEnd join_at_end{f.fakes, batch};

    REQUIRE(f.fakes.wait_hanging("slow.test"));
    auto other = store::Store::open(f.path, {.create = false, .actor = "test", .clock = nullptr}).value();
    const auto until = std::chrono::steady_clock::now() + 3s;
    int refused = 0;
    while (std::chrono::steady_clock::now() < until) {
        // A second renewer (certfsctl started again, or the daemon) is refused throughout.
        auto second = store::LeaseGuard::acquire(*other, "domain:slow.test", "second renewer", 1s);
        if (second.ok()) {
            FAIL_CHECK("the second renewer took the scope after " << refused << " refusals");
            break;
        }
        CHECK_THAT(second.status().message(), Contains("held by batch"));
        auto leases = other->leases().value();
        REQUIRE(leases.size() == 1);
        CHECK(leases.front().expires_at > std::chrono::system_clock::now());
        ++refused;
        std::this_thread::sleep_for(100ms); // the pace of the probe, not a wait for a result
    }
    f.fakes.release("slow.test");
    batch.join();
    REQUIRE(done.size() == 1);
    REQUIRE(done[0].outcomes.ok());
    CHECK(done[0].outcomes->front().generation == 2);
    CHECK(f.fakes.calls("slow.test") == 2); // once for the first generation, once for this renewal
    CHECK(other->leases().value().empty());
}

// A renewal that died between its commit and its hooks (here: Renewer::renew, which commits and
// runs none) leaves them owed; the next batch that takes the scope runs them, for the generation
// current then, even when nothing is due; one that cannot take the scope leaves them owed.
TEST_CASE("batch: hooks a crashed renewal still owes run when the scope is next taken")
{
    Fixture f;
    const std::string log = (f.dir / "hook.log").string();
    f.add("owed.test", std::nullopt, {"/bin/sh -c 'echo \"$CERTFS_NAMES $CERTFS_GENERATION\" >> " + log + "'"});
    REQUIRE(Renewer(*f.store, "crashed", f.fakes.factory()).renew("owed.test", true).ok());
    CHECK(f.store->get_domain("owed.test").value().hooks_owed == 2);
    CHECK_FALSE(std::filesystem::exists(log));

    // Another live process holds the scope: its hooks are its holder's to run.
    auto other = store::Store::open(f.path, {.create = false, .actor = "test", .clock = nullptr}).value();
    {
        auto held = store::LeaseGuard::acquire(*other, "domain:owed.test", "certfs pid 1", 10min).value();
        auto done = BatchRunner(f.options(false)).run(*f.store, {"owed.test"});
        REQUIRE(done.size() == 1);
        CHECK(done[0].runs.empty());
        CHECK(f.store->get_domain("owed.test").value().hooks_owed == 2);
    }

    auto done = BatchRunner(f.options(false)).run(*f.store, {"owed.test"});
    REQUIRE(done.size() == 1);
    REQUIRE(done[0].outcomes.ok());
    CHECK_THAT(done[0].outcomes->front().message, Contains("not due until"));
    REQUIRE(done[0].runs.size() == 1);
    CHECK(done[0].runs[0].status.ok());
    CHECK(test::read_file(log) == "owed.test 2\n");
    auto d = f.store->get_domain("owed.test").value();
    CHECK_FALSE(d.hooks_owed);
    CHECK(d.state == store::DomainState::monitoring);
    CHECK(f.store->leases().value().empty());

    // Paid: the next batch runs nothing.
    done = BatchRunner(f.options(false)).run(*f.store, {"owed.test"});
    CHECK(done[0].runs.empty());
    CHECK(test::read_file(log) == "owed.test 2\n");
}
