// Running hooks and helpers: quoting without a shell, timeouts, output, environment.
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "core/process.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;

namespace {

std::vector<std::string> words(std::string_view command) { return split_command(command).value(); }

RunResult run(const std::vector<std::string>& argv, RunOptions options = {})
{
    return run_program(argv, options).value();
}

} // namespace

TEST_CASE("commands split like a shell would quote them: without any expansion")
{
    CHECK(words("systemctl reload nginx") == std::vector<std::string>{"systemctl", "reload", "nginx"});
    CHECK(words("  a   b\tc ") == std::vector<std::string>{"a", "b", "c"});
    CHECK(words("echo 'two words' \"and three words\"") ==
          std::vector<std::string>{"echo", "two words", "and three words"});
    CHECK(words(R"(printf "a \"quoted\" \\ $HOME")") == std::vector<std::string>{"printf", R"(a "quoted" \ $HOME)"});
    CHECK(words(R"(a\ b 'c\d')") == std::vector<std::string>{"a b", R"(c\d)"});
    CHECK(words("x''y \"\"") == std::vector<std::string>{"xy", ""});
    CHECK(words("echo $HOME *.pem; rm -rf /") == std::vector<std::string>{"echo", "$HOME", "*.pem;", "rm", "-rf", "/"});
}

TEST_CASE("bad commands are refused with the reason")
{
    auto check = [](std::string_view command, const std::string& why) {
        auto r = split_command(command);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().code() == Code::invalid);
        CHECK_THAT(r.status().message(), Contains(why));
    };
    check("", "empty command");
    check("   ", "empty command");
    check("echo 'open", "unterminated '");
    check("echo \"open", "unterminated \"");
    check("echo \\", "backslash");
}

TEST_CASE("a program's exit status and output are captured and stdin is /dev/null")
{
    auto r = run({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
    CHECK(r.exit_code == 3);
    CHECK_FALSE(r.succeeded());
    CHECK(r.output == "out\n");
    CHECK(r.errors == "err\n");
    CHECK(r.describe(5min) == "exit status 3");
    // cat would wait for input forever on a terminal or an inherited pipe.
    auto cat = run(
        {"cat"}, {.env = {}, .inherit_env = true, .unset = {}, .timeout = 10s, .kill_grace = 1s, .max_output = 65536});
    CHECK(cat.succeeded());
    CHECK(cat.output.empty());
}

TEST_CASE("the environment is added to and or replaced when asked")
{
    RunOptions added;
    added.env = {"CERTFS_NAMES=a.test b.test"};
    auto r = run({"/bin/sh", "-c", "echo \"$CERTFS_NAMES|${PATH:+has-path}\""}, added);
    CHECK(r.output == "a.test b.test|has-path\n");
    RunOptions clean;
    clean.inherit_env = false;
    clean.env = {"ONLY=1"};
    r = run({"/usr/bin/env"}, clean);
    CHECK(r.output == "ONLY=1\n");
}

TEST_CASE("an inherited variable that env sets or unset names is not passed on: none is given twice")
{
    ::setenv("CERTFS_TEST_GIVEN", "stale", 1);
    ::setenv("CERTFS_TEST_PREFIXED", "stale", 1);
    ::setenv("CERTFS_TEST_NAMED", "stale", 1);
    ::setenv("CERTFS_TEST_KEPT", "inherited", 1);
    RunOptions options;
    options.env = {"CERTFS_TEST_GIVEN=ours"};
    options.unset = {"CERTFS_TEST_PREF*", "CERTFS_TEST_NAMED"};
    auto r = run({"/usr/bin/env"}, options);
    for (const char* name : {"CERTFS_TEST_GIVEN", "CERTFS_TEST_PREFIXED", "CERTFS_TEST_NAMED", "CERTFS_TEST_KEPT"}) {
        ::unsetenv(name);
    }
    std::istringstream lines(r.output);
    std::vector<std::string> ours;
    for (std::string line; std::getline(lines, line);) {
        if (line.rfind("CERTFS_TEST_", 0) == 0) {
            ours.push_back(line);
        }
    }
    std::sort(ours.begin(), ours.end());
    CHECK(ours == std::vector<std::string>{"CERTFS_TEST_GIVEN=ours", "CERTFS_TEST_KEPT=inherited"});
}

TEST_CASE("a missing program is NotFound and not a failed run")
{
    auto r = run_program({"/nonexistent/hook"}, {});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::not_found);
    CHECK_THAT(r.status().message(), Contains("cannot run /nonexistent/hook"));
    auto in_path = run_program({"certfs-no-such-program"}, {});
    CHECK(in_path.status().code() == Code::not_found);
}

TEST_CASE("a program that outlives its timeout is stopped: with its children and even if it ignores SIGTERM")
{
    RunOptions options;
    options.timeout = 200ms;
    options.kill_grace = 300ms;
    auto start = std::chrono::steady_clock::now();
    auto r = run({"/bin/sh", "-c", "sleep 30 & sleep 30; wait"}, options);
    CHECK(r.timed_out);
    CHECK(r.exit_code == -1);
    CHECK(r.signal == SIGTERM);
    CHECK(r.describe(options.timeout) == "timed out after 200ms");
    auto stubborn = run({"/bin/sh", "-c", "trap '' TERM; sleep 30 & wait"}, options);
    CHECK(stubborn.timed_out);
    CHECK(stubborn.signal == SIGKILL);
    // Both returned long before their sleeps would have ended.
    CHECK(std::chrono::steady_clock::now() - start < 10s);
}

TEST_CASE("output beyond the limit is cut and the program still finishes")
{
    RunOptions options;
    options.max_output = 1000;
    auto r = run({"/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; echo done >&2"}, options);
    CHECK(r.succeeded());
    CHECK(r.output.size() == 1000);
    CHECK(r.errors == "done\n");
}

TEST_CASE("a program that leaves a background process holding its output is done when it exits")
{
    RunOptions options;
    options.timeout = 20s;
    auto start = std::chrono::steady_clock::now();
    auto r = run({"/bin/sh", "-c", "echo started; sleep 5 & exit 0"}, options);
    CHECK(r.succeeded());
    CHECK_FALSE(r.timed_out);
    CHECK(r.output == "started\n");
    CHECK(std::chrono::steady_clock::now() - start < 4s);
}
