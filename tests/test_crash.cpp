// A crash costs seconds, not ten minutes: a real daemon on a real mount, SIGKILLed in the middle
// of a renewal (while its CA helper runs, or while its deploy hook runs), then started again.
// The new daemon takes the dead one's lease at once, finishes the renewal, runs the hooks it
// still owes, and leaves the store as `certfsctl check` wants it (README, "At a crash and at a
// restart"). The CA is tests/ca_helpers/slow.sh, a certmonger helper that sleeps before it
// issues; what a SIGKILLed daemon leaves running (the helper, the hook: each leads a process
// group of its own) is stopped here by the pid it wrote.
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include <catch2/catch.hpp>

#include "renew/helper.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using certfs::test::Daemon;
using certfs::test::TempDir;
using certfs::test::wait_until;

namespace {

const std::string k_helpers = CERTFS_TEST_CA_HELPERS_DIR;
constexpr Duration k_pin_window = 200ms;
// A deploy hook's script that records the serial it reads through the mount and the
// generation it was told, one line per run.
constexpr const char* k_record_hook =
    "echo \"$(openssl x509 -noout -serial -in \"$RENEWED_LINEAGE/cert.pem\") $CERTFS_GENERATION\" >> @DIR@/hook.log";

std::string quote(const std::string& word) { return "'" + word + "'"; }

std::vector<std::string> lines_of(const std::filesystem::path& file)
{
    std::vector<std::string> out;
    std::istringstream in(test::file_or_empty(file));
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

// The serial as hooks and the store print it: lower case, no leading zeros.
std::string normal_serial(std::string hex)
{
    std::transform(hex.begin(), hex.end(), hex.begin(), [](unsigned char c) { return std::tolower(c); });
    hex.erase(0, std::min(hex.find_first_not_of('0'), hex.size() - 1));
    return hex;
}

// The serial in a line of k_record_hook's ("serial=0A1B... 2"), as normal_serial gives it.
std::string hook_serial(const std::string& line)
{
    const auto start = line.find('=') + 1;
    return normal_serial(line.substr(start, line.find(' ') - start));
}

bool runs(pid_t pid)
{
    const std::string stat = test::file_or_empty("/proc/" + std::to_string(pid) + "/stat");
    const auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

// A store with a helper issuer "slow" whose CA is a test CA, and one domain, crash.test, whose
// first certificate is due now (valid an hour either side) and whose deploy hook runs
// hook_script (sh; @DIR@ stands for the test's directory) after it wrote its pid to hook.pids.
struct CrashFixture {
    TempDir dir;
    std::filesystem::path db = dir / "certfs.db";
    std::filesystem::path mnt = dir / "mnt";
    std::filesystem::path helper_pids = dir / "helper.pids"; // one line per CA request
    std::filesystem::path hook_pids = dir / "hook.pids";     // one line per hook run
    std::filesystem::path hook_log = dir / "hook.log";
    test::TestCa ca{"/CN=certfs crash test CA"};
    std::unique_ptr<Daemon> daemon;

    CrashFixture(int helper_delay_s, const std::string& hook_script)
    {
        std::filesystem::create_directory(mnt);
        test::write_file(dir / "ca.pem", ca.cert_pem);
        test::write_file(dir / "ca.key", pki::private_key_pem(*ca.key).value());
        auto st = open();
        renew::HelperConfig helper;
        helper.command = quote(k_helpers + "/slow.sh") + " " + quote((dir / "ca.pem").string()) + " " +
                         quote((dir / "ca.key").string()) + " " + quote(helper_pids.string()) + " " +
                         std::to_string(helper_delay_s);
        REQUIRE(st->add_issuer(renew::create_helper_issuer("slow", helper).value().issuer).ok());
        store::DomainConfig c;
        c.name = "crash.test";
        c.issuer = "slow";
        c.dns_names = {"crash.test"};
        std::string script = "echo $$ >> " + hook_pids.string() + "; " + hook_script;
        for (auto at = script.find("@DIR@"); at != std::string::npos; at = script.find("@DIR@")) {
            script.replace(at, 5, dir.path().string());
        }
        c.deploy_hooks = {"/bin/sh -c " + quote(script)};
        // Imported, so that it is due now: an issued generation's window counts from its commit
        // (renew_at()), and it would not be due for half an hour.
        const auto now = std::chrono::system_clock::now();
        auto leaf = test::make_leaf(ca, {c.dns_names, {}}, now - 1h, now + 1h);
        REQUIRE(
            st->add_domain(c, store::GenerationInput{leaf.key_pem, leaf.cert_pem, ca.cert_pem, store::Reason::imported})
                .ok());
    }

    ~CrashFixture() { stop_orphans(false); }

    std::unique_ptr<store::Store> open() const
    {
        return store::Store::open(db.string(), {.create = true, .actor = "test", .clock = nullptr}).value();
    }
    store::Domain domain() const { return open()->get_domain("crash.test").value(); }

    void start() { daemon = std::make_unique<Daemon>(db, mnt, dir / "certfs.log", k_pin_window); }

    // SIGKILL, as the OOM killer or a power cut would; then what it left running is stopped
    // by pid and the dead mount unmounted (the Daemon's destructor).
    void kill_daemon()
    {
        REQUIRE(daemon);
        REQUIRE(::kill(daemon->pid(), SIGKILL) == 0);
        REQUIRE(daemon->wait_exit(10s));
        stop_orphans(true);
        daemon.reset();
    }

    // The helpers and hooks a SIGKILLed daemon left: each leads its own process group.
    void stop_orphans(bool check) const
    {
        for (const auto& file : {helper_pids, hook_pids}) {
            for (const auto& line : lines_of(file)) {
                const pid_t pid = static_cast<pid_t>(std::stol(line));
                ::kill(-pid, SIGKILL);
                const bool stopped = wait_until([&] { return !runs(pid); });
                if (check) {
                    CHECK(stopped);
                }
            }
        }
    }

    std::string log() const { return test::file_or_empty(dir / "certfs.log"); }
    std::string leases() const
    {
        std::string out;
        const auto st = open();
        const std::vector<store::Lease> all = st->leases().value();
        for (const auto& l : all) {
            out += l.scope + " held by " + l.owner + " until " + format_rfc3339(l.expires_at) + "\n";
        }
        return out.empty() ? "no lease\n" : out;
    }
};

double seconds_since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

} // namespace

TEST_CASE("crash: a daemon killed while its CA helper runs, again and again, renews within seconds of each restart")
{
    // 5 here; bench/crash.sh runs 25 (CERTFS_CRASH_KILLS).
    const int kills = static_cast<int>(test::env_number("CERTFS_CRASH_KILLS", 5));
    // The hook records the serial it reads through the mount and the generation it was told.
    CrashFixture f(3, k_record_hook);
    double slowest_restart = 0;
    for (int i = 0; i < kills; ++i) {
        const auto started = std::chrono::steady_clock::now();
        f.start();
        // The renewal is under way: the CA helper runs (its third second is the daemon's last).
        INFO("kill " << i + 1 << " of " << kills << "; " << f.leases() << "daemon log:\n" << f.log());
        REQUIRE(wait_until([&] { return static_cast<int>(lines_of(f.helper_pids).size()) == i + 1; }, 30s));
        slowest_restart = std::max(slowest_restart, seconds_since(started));
        CHECK(f.domain().state == store::DomainState::issuing);
        f.kill_daemon();
        CHECK(f.domain().current_gen == 1);
    }

    const auto started = std::chrono::steady_clock::now();
    f.start();
    INFO(f.leases() << "daemon log:\n" << f.log());
    REQUIRE(wait_until(
        [&] {
            auto d = f.domain();
            return d.current_gen == 2 && !d.hooks_owed && d.state == store::DomainState::monitoring &&
                   !lines_of(f.hook_log).empty();
        },
        60s));
    const double finished = seconds_since(started);
    WARN("after " << kills << " kills: the CA helper started again within " << slowest_restart
                  << " s of each restart; the last renewal finished " << finished << " s after it");
    CHECK(slowest_restart < 10); // not the 10-minute lease
    CHECK(finished < 20);        // the helper's 3 s, the flip, the hook

    // One CA request per daemon life, never two at once; the hook ran once, after the commit,
    // and saw the committed certificate through the mount.
    CHECK(lines_of(f.helper_pids).size() == static_cast<std::size_t>(kills + 1));
    const auto d = f.domain();
    const auto hooks = lines_of(f.hook_log);
    REQUIRE(hooks.size() == 1);
    CHECK_THAT(hooks[0], Catch::EndsWith(" 2"));
    // The hook ran after the flip: it read the committed certificate through the mount.
    CHECK(hook_serial(hooks[0]) == normal_serial(d.current_serial));
    const auto check = test::Ctl(f.db)({"check"});
    INFO(check.out << check.err);
    CHECK(check.exit_code == 0);
}

TEST_CASE("crash: a daemon killed between the commit and its deploy hook runs the hook again after the restart")
{
    // The hook says it started, then blocks until the gate exists, then records what it saw.
    CrashFixture f(0, "echo start $CERTFS_GENERATION >> @DIR@/hook.log; while [ ! -e @DIR@/gate ]; do sleep 0.05; "
                      "done; " +
                          std::string(k_record_hook));
    f.start();
    {
        INFO(f.leases() << "daemon log:\n" << f.log());
        REQUIRE(wait_until([&] { return lines_of(f.hook_log) == std::vector<std::string>{"start 2"}; }, 30s));
    }
    auto d = f.domain();
    CHECK(d.current_gen == 2);
    CHECK(d.hooks_owed == 2); // recorded by the commit, not yet paid
    CHECK(d.state == store::DomainState::hooks);
    f.kill_daemon();
    CHECK(f.domain().state == store::DomainState::hooks); // what the dead daemon left

    test::write_file(f.dir / "gate", "");
    const auto started = std::chrono::steady_clock::now();
    f.start();
    INFO(f.leases() << "daemon log:\n" << f.log());
    REQUIRE(wait_until(
        [&] {
            auto now = f.domain();
            return !now.hooks_owed && now.state == store::DomainState::monitoring && lines_of(f.hook_log).size() == 3;
        },
        30s));
    const double finished = seconds_since(started);
    WARN("the hook the kill interrupted ran again " << finished << " s after the restart");
    CHECK(finished < 20);
    d = f.domain();
    // Run again by the new daemon, which serves the current generation from its start: the hook
    // reads the committed certificate.
    const auto hooks = lines_of(f.hook_log);
    REQUIRE(hooks.size() == 3);
    CHECK(hooks[0] == "start 2");
    CHECK(hooks[1] == "start 2");
    CHECK(hook_serial(hooks[2]) == normal_serial(d.current_serial));
    CHECK_THAT(hooks[2], Catch::EndsWith(" 2"));
    CHECK(d.current_gen == 2);
    CHECK(lines_of(f.helper_pids).size() == 1); // no new CA request: only the hook was owed
    CHECK(d.hook_error.empty());
    const auto check = test::Ctl(f.db)({"check"});
    INFO(check.out << check.err);
    CHECK(check.exit_code == 0);
}
