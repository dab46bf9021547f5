// Deploy hooks (docs/hooks.md): once per batch, never overlapping, failures reported; the wait
// for the flip before them (renew/flip.hpp; on a real mount: test_flip).
#include <atomic>
#include <filesystem>
#include <memory>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/flip.hpp"
#include "renew/hooks.hpp"
#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::TempDir;

namespace {

// A hook command that appends one line describing its environment to `log`.
std::string recorder(const std::filesystem::path& log, const std::string& tag)
{
    return "/bin/sh -c 'echo \"" + tag +
           " names=[$CERTFS_NAMES] gens=[$CERTFS_GENERATION] live=[$CERTFS_LIVE_DIR] lineage=[$RENEWED_LINEAGE]"
           " domains=[$RENEWED_DOMAINS]\" >> " +
           log.string() + "'";
}

std::vector<std::string> lines(const std::filesystem::path& path)
{
    std::vector<std::string> out;
    if (!std::filesystem::exists(path)) {
        return out;
    }
    std::istringstream in(test::read_file(path));
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

HookOptions options_in(const TempDir& dir)
{
    HookOptions o;
    o.lock_dir = (dir / "certfs.db.hooks").string();
    o.mountpoint = "/etc/certs";
    return o;
}

} // namespace

TEST_CASE("hooks: a command named by several domains of a batch runs once with all of them")
{
    TempDir dir;
    auto log = dir / "reload.log";
    auto other_log = dir / "other.log";
    std::vector<CommittedDomain> batch = {
        {"a.test", 4, {"a.test", "www.a.test"}, {recorder(log, "reload")}},
        {"b.test", 7, {"b.test", "192.0.2.1"}, {recorder(log, "reload"), recorder(other_log, "other")}},
    };
    auto runs = run_hooks(batch, options_in(dir));
    REQUIRE(runs.size() == 2);
    CHECK(runs[0].domains == std::vector<std::string>{"a.test", "b.test"});
    CHECK(runs[1].domains == std::vector<std::string>{"b.test"});
    for (const auto& r : runs) {
        CHECK(r.status.ok());
    }
    CHECK(lines(log) ==
          std::vector<std::string>{"reload names=[a.test b.test] gens=[4 7] live=[/etc/certs/live/a.test]"
                                   " lineage=[/etc/certs/live/a.test] domains=[a.test www.a.test b.test 192.0.2.1]"});
    CHECK(lines(other_log) == std::vector<std::string>{"other names=[b.test] gens=[7] live=[/etc/certs/live/b.test]"
                                                       " lineage=[/etc/certs/live/b.test] domains=[b.test 192.0.2.1]"});
}

TEST_CASE("hooks: two runs of one command never overlap, even from two batches at once")
{
    TempDir dir;
    auto log = dir / "runs.log";
    // mkdir is atomic: a second run inside the first would find the directory there.
    std::string hook = "/bin/sh -c 'mkdir " + (dir / "inside").string() + " || echo OVERLAP >> " + log.string() +
                       "; sleep 0.3; rmdir " + (dir / "inside").string() + "; echo run >> " + log.string() + "'";
    auto batch_a = std::vector<CommittedDomain>{{"a.test", 1, {"a.test"}, {hook}}};
    auto batch_b = std::vector<CommittedDomain>{{"b.test", 1, {"b.test"}, {hook}}};
    std::vector<HookRun> runs_a;
    std::vector<HookRun> runs_b;
    std::thread t([&] { runs_a = run_hooks(batch_a, options_in(dir)); });
    runs_b = run_hooks(batch_b, options_in(dir));
    t.join();
    CHECK(runs_a.at(0).status.ok());
    CHECK(runs_b.at(0).status.ok());
    CHECK(lines(log) == std::vector<std::string>{"run", "run"});
}

TEST_CASE("hooks: a failing or hanging hook is reported with the reason and its first line of output")
{
    TempDir dir;
    auto options = options_in(dir);
    options.timeout = 300ms;
    std::vector<CommittedDomain> batch = {
        {"a.test",
         2,
         {"a.test"},
         {"/bin/sh -c 'echo reload failed: bad config; exit 3'", "/bin/sleep 30", "/nonexistent/hook"}},
    };
    auto start = std::chrono::steady_clock::now();
    auto runs = run_hooks(batch, options);
    REQUIRE(runs.size() == 3);
    CHECK(runs[0].status.message() == "exit status 3: reload failed: bad config");
    CHECK(runs[1].status.message() == "timed out after 300ms");
    CHECK_FALSE(runs[2].status.ok());
    CHECK_THAT(runs[2].status.message(), Contains("cannot run /nonexistent/hook"));
    CHECK(std::chrono::steady_clock::now() - start < 10s);
    // A command that does not even split is reported too.
    auto bad = run_hooks({{"a.test", 2, {"a.test"}, {"echo 'unterminated"}}}, options);
    CHECK_THAT(bad.at(0).status.message(), Contains("unterminated '"));
}

namespace {

// A store with one domain, w.test, at generation 2, for the waits for the flip.
struct FlipFixture {
    TempDir dir;
    std::unique_ptr<store::Store> store =
        store::Store::open((dir / "certfs.db").string(), {.create = true, .actor = "test", .clock = nullptr}).value();
    std::vector<std::string> warnings; // what the waiter said

    FlipFixture()
    {
        REQUIRE(store->add_issuer(create_local_ca("ca", {}, std::chrono::system_clock::now()).value()).ok());
        store::DomainConfig c;
        c.name = "w.test";
        c.issuer = "ca";
        c.dns_names = {"w.test"};
        REQUIRE(Renewer(*store, "test").add_and_issue(c).ok());
        REQUIRE(Renewer(*store, "test").renew("w.test", true).ok());
    }

    FlipWaiter waiter(VisibleGeneration visible, Duration fallback, Duration timeout)
    {
        return flip_waiter({.visible = std::move(visible),
                            .source = "the test filesystem",
                            .timeout = timeout,
                            .fallback = fallback,
                            .warn = [this](const std::string& line) { warnings.push_back(line); }});
    }
};

} // namespace

TEST_CASE("flip: hooks wait until the filesystem serves the generation, and not for one the store replaced")
{
    FlipFixture f;
    std::atomic<std::int64_t> served{1};
    auto wait = f.waiter([&](const std::string&) -> Result<std::int64_t> { return served.load(); }, 1s, 10s);
    const auto start = std::chrono::steady_clock::now();
    std::thread flip([&] {
        std::this_thread::sleep_for(300ms);
        served = 2;
    });
    wait(*f.store, {{"w.test", 2}});
    flip.join();
    CHECK(std::chrono::steady_clock::now() - start >= 300ms);
    // Generation 1 is no longer current (a rollback to it would make it so): nothing to wait for.
    served = 3;
    const auto again = std::chrono::steady_clock::now();
    wait(*f.store, {{"w.test", 1}});
    CHECK(std::chrono::steady_clock::now() - again < 1s);
    // Nor for a domain removed meanwhile.
    REQUIRE(f.store->remove_domain("w.test").ok());
    const auto removed = std::chrono::steady_clock::now();
    wait(*f.store, {{"w.test", 2}});
    CHECK(std::chrono::steady_clock::now() - removed < 1s);
    CHECK(f.warnings.empty());
    // No mount: no waiter, the hooks run at once.
    CHECK_FALSE(mount_flip_waiter("", 1s, [](const std::string&) {}));
}

TEST_CASE("flip: a flip that does not come is reported at the timeout, a filesystem that cannot tell once")
{
    FlipFixture f;
    auto stuck = f.waiter([](const std::string&) -> Result<std::int64_t> { return 1; }, 100ms, 400ms);
    auto start = std::chrono::steady_clock::now();
    stuck(*f.store, {{"w.test", 2}});
    CHECK(std::chrono::steady_clock::now() - start >= 400ms);
    REQUIRE(f.warnings.size() == 1);
    CHECK(f.warnings[0] == "w.test: generation 2 is not served to new opens on the test filesystem after 400ms (it "
                           "serves generation 1); running its deploy hooks anyway");

    f.warnings.clear();
    auto blind = f.waiter([](const std::string&) -> Result<std::int64_t> { return Status::IoError("no attribute"); },
                          300ms, 10s);
    for (int i = 0; i < 2; ++i) {
        start = std::chrono::steady_clock::now();
        blind(*f.store, {{"w.test", 2}});
        const auto waited = std::chrono::steady_clock::now() - start;
        CHECK(waited >= 300ms);
        CHECK(waited < 5s);
    }
    REQUIRE(f.warnings.size() == 1); // once, not once per batch
    CHECK(f.warnings[0] == "cannot tell when w.test flips on the test filesystem (no attribute): deploy hooks run "
                           "300ms after the commit instead");

    // A directory that is not a certfs mount tells nothing.
    std::filesystem::create_directories(f.dir / "plain" / "live" / "w.test");
    auto plain = mounted_generation((f.dir / "plain").string(), "w.test");
    test::require_error(plain, Code::io_error, "cannot read user.certfs.generation of ");
    test::require_error(mounted_generation((f.dir / "none").string(), "w.test"), Code::not_found, "cannot open ");
}
