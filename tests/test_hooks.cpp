// Deploy hooks (docs/hooks.md): once per batch, never overlapping, failures reported.
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/hooks.hpp"
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
