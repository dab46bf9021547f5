// A crash costs seconds, not ten minutes: a real daemon on a real mount, SIGKILLed in the middle
// of a renewal (while its CA helper runs, or while its deploy hook runs), then started again.
// The new daemon takes the dead one's lease at once, finishes the renewal, runs the hooks it
// still owes, and leaves the store as `certfsctl check` wants it (README, "At a crash and at a
// restart"). The CA is tests/ca_helpers/slow.sh, a certmonger helper that sleeps before it
// issues; what a SIGKILLed daemon leaves running (the helper, the hook: each leads a process
// group of its own) is stopped here by the pid it wrote.
#include <signal.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/helper.hpp"
#include "renew/renewer.hpp"
#include "store/validate.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pairs.hpp"
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

using certfs::test::quote;

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

// A process's state letter in /proc (R, S, T, Z...), '?' when it has none (it is gone).
char state_of(const std::filesystem::path& stat_file)
{
    const std::string stat = test::file_or_empty(stat_file);
    const auto close = stat.rfind(')');
    return close != std::string::npos && close + 2 < stat.size() ? stat[close + 2] : '?';
}

bool runs(pid_t pid)
{
    const char state = state_of("/proc/" + std::to_string(pid) + "/stat");
    return state != '?' && state != 'Z';
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

// ---- kill -9 at random instants -------------------------------------------------------------
//
// The daemon renews three domains whose certificates last 4 s (tests/programs/short_ca, a CA
// helper that takes 0.4 s), and certfsctl renews a fourth; both are SIGKILLed again and again,
// each time at a random instant or at a random instant of one phase of a renewal: key
// generation, the CA's work, the commit, the flip, or the deploy hooks. Readers read every
// domain's pair through the mount all along. At the end the CA issues long certificates, every
// domain renews once more, and the store, the hooks' records and the readers' counts are
// checked against what the issue asks of a crash.

namespace {

enum class Phase { idle, keygen, issuing, commit, flip, hooks };
constexpr std::array<const char*, 6> k_phase_names{"idle", "key generation", "issuing", "commit", "flip", "hooks"};

// Whether every thread of pid has stopped (SIGSTOP reached them all).
bool all_stopped(pid_t pid)
{
    std::error_code ec;
    bool any = false;
    for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
        any = true;
        const char s = state_of(task.path() / "stat");
        if (s != 'T' && s != 't') {
            return false;
        }
    }
    return any;
}

// The processes whose parent is `parent`: a certfs process's CA helpers and hooks, each the
// leader of a process group of its own.
std::vector<pid_t> children_of(pid_t parent)
{
    std::vector<pid_t> out;
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        const std::string stat = test::file_or_empty(entry.path() / "stat");
        const auto close = stat.rfind(')');
        if (close == std::string::npos) {
            continue;
        }
        std::istringstream rest(stat.substr(close + 2));
        char state = 0;
        pid_t ppid = 0;
        if (rest >> state >> ppid && ppid == parent) {
            out.push_back(static_cast<pid_t>(std::stol(name)));
        }
    }
    return out;
}

// SIGKILL at one instant, with what the process had started: it is stopped first, so that it
// starts nothing more; `frozen` looks at the store while it stands still; then it, and the
// process group of each of its children, get SIGKILL. Returns once the children are gone.
void kill_at_once(pid_t pid, const std::function<void()>& frozen)
{
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    REQUIRE(wait_until([&] { return all_stopped(pid); }, 10s));
    const std::vector<pid_t> children = children_of(pid);
    frozen();
    REQUIRE(::kill(pid, SIGKILL) == 0);
    for (pid_t child : children) {
        ::kill(-child, SIGKILL);
        ::kill(child, SIGKILL);
    }
    for (pid_t child : children) {
        CHECK(wait_until([&] { return !runs(child); }, 10s));
    }
}

// The lines of a log that a killed process may have left without its newline: only whole ones.
std::vector<std::string> whole_lines(const std::filesystem::path& file)
{
    std::string text = test::file_or_empty(file);
    text.erase(text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1);
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

std::string last_line(const std::filesystem::path& file)
{
    const auto lines = whole_lines(file);
    return lines.empty() ? std::string() : lines.back();
}

// The word after `prefix` ("issued 0a1b" -> "0a1b"), "" if the line does not start with it.
std::string after(const std::string& line, const std::string& prefix)
{
    return line.rfind(prefix, 0) == 0 ? line.substr(prefix.size()) : std::string();
}

// What one reader thread saw.
struct ReaderCounts {
    std::atomic<long> pairs{0};      // both files read, in one daemon's life
    std::atomic<long> mismatches{0}; // of those, a key that is not the certificate's
    std::atomic<long> spanning{0};   // pairs whose two reads a kill of the daemon fell between
    std::atomic<long> spanning_mismatches{0};
    std::atomic<long> not_connected{0}; // ENOTCONN: the daemon is dead, its mount not yet gone
    std::atomic<long> aborted{0};       // ECONNABORTED: a request in flight when the daemon died
    std::atomic<long> not_found{0};     // ENOENT: no mount on the mount point, or not yet the name
    std::atomic<long> other_errors{0};
    std::mutex mutex;
    std::string first_other; // the first other error, for the message
};

class KillFixture {
public:
    static constexpr const char* k_validity_short = "4000";    // ms: renewed every 2 s or so
    static constexpr const char* k_validity_long = "86400000"; // a day
    const std::vector<std::string> daemon_names{"a.kill.test", "b.kill.test", "c.kill.test"};
    const std::string ctl_name = "ctl.kill.test";

    TempDir dir;
    std::filesystem::path db = dir / "certfs.db";
    std::filesystem::path mnt = dir / "mnt";
    test::TestCa ca{"/CN=certfs kill test CA"};
    std::unique_ptr<Daemon> daemon;
    int lives = 0; // daemons started
    std::unique_ptr<store::Store> st;

    KillFixture()
    {
        std::filesystem::create_directory(mnt);
        test::write_file(dir / "ca.pem", ca.cert_pem);
        test::write_file(dir / "ca.key", pki::private_key_pem(*ca.key).value());
        test::write_file(dir / "short.validity", k_validity_short);
        test::write_file(dir / "ctl.validity", k_validity_long);
        st = store::Store::open(db.string(), {.create = true, .actor = "test", .clock = nullptr}).value();
        add_issuer("short", "short.validity");
        add_issuer("ctl", "ctl.validity");
        renew::Renewer renewer(*st, "test");
        for (const auto& name : all_names()) {
            store::DomainConfig c;
            c.name = name;
            c.issuer = name == ctl_name ? "ctl" : "short";
            c.dns_names = {name};
            // One RSA key, for a key generation that takes a while.
            c.key_type = name == daemon_names[0] ? pki::KeyType::rsa_3072 : pki::KeyType::ec_p256;
            c.renew_before = 3s;
            const std::string log = (dir / (name + ".hook.log")).string();
            // Records that it started and, after a while, the serial it reads through the
            // mount; "unreadable" when it cannot (the mount died under it).
            const std::string script = "echo \"start $CERTFS_GENERATION\" >> " + log +
                                       "; sleep 0.3; if s=$(openssl x509 -noout -serial -in "
                                       "\"$RENEWED_LINEAGE/cert.pem\" 2>/dev/null); then echo \"done "
                                       "$CERTFS_GENERATION $s\" >> " +
                                       log + "; else echo \"unreadable $CERTFS_GENERATION\" >> " + log + "; fi";
            c.deploy_hooks = {"/bin/sh -c " + quote(script)};
            REQUIRE(renewer.add_and_issue(c).ok());
        }
    }

    ~KillFixture()
    {
        daemon.reset();
        test::run({"/usr/bin/fusermount3", "-uz", mnt.string()}); // a dead mount a failed test left
    }

    std::vector<std::string> all_names() const
    {
        auto names = daemon_names;
        names.push_back(ctl_name);
        return names;
    }
    std::filesystem::path ca_log(const std::string& name) const { return dir / (name + ".ca.log"); }
    std::filesystem::path hook_log(const std::string& name) const { return dir / (name + ".hook.log"); }
    std::filesystem::path daemon_log(int life) const { return dir / ("certfs." + std::to_string(life) + ".log"); }

    void start_daemon()
    {
        ++lives;
        daemon = std::make_unique<Daemon>(db, mnt, daemon_log(lives), k_pin_window);
    }

    // The phase of the renewal of `name` now, from the store and the CA's and hooks' records.
    Phase phase_of(const std::string& name) const
    {
        const store::Domain d = st->get_domain(name).value();
        const std::string hook = last_line(hook_log(name));
        if (hook.rfind("start ", 0) == 0) {
            return Phase::hooks;
        }
        if (d.hooks_owed) {
            return hook == "done " + std::to_string(d.current_gen.value_or(0)) ? Phase::hooks : Phase::flip;
        }
        if (d.state != store::DomainState::issuing) {
            return Phase::idle;
        }
        const std::string ca_said = last_line(ca_log(name));
        if (ca_said.rfind("start ", 0) == 0) {
            return Phase::issuing;
        }
        const std::string issued = after(ca_said, "issued ");
        if (!issued.empty() && normal_serial(issued) != normal_serial(d.current_serial)) {
            return Phase::commit; // the CA answered; the certificate is not committed yet
        }
        return Phase::keygen;
    }

    // After a kill: a line that ends what the killed processes' records were in.
    void mark_killed(const std::vector<std::string>& names) const
    {
        for (const auto& name : names) {
            std::ofstream(ca_log(name), std::ios::app) << "-- killed\n";
            std::ofstream(hook_log(name), std::ios::app) << "-- killed\n";
        }
    }

private:
    void add_issuer(const std::string& name, const std::string& validity_file)
    {
        renew::HelperConfig helper;
        helper.command = quote(SHORT_CA_PATH) + " " + quote((dir / "ca.pem").string()) + " " +
                         quote((dir / "ca.key").string()) + " " + quote(dir.path().string()) + " " +
                         quote((dir / validity_file).string()) + " 400";
        REQUIRE(st->add_issuer(renew::create_helper_issuer(name, helper).value().issuer).ok());
    }
};

// "NAME: renewed: generation N" lines of a daemon's log or certfsctl's output: name -> gens.
void collect_acknowledged(const std::string& text, std::map<std::string, std::set<std::int64_t>>& out)
{
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        const auto at = line.find(": renewed: generation ");
        if (at == std::string::npos) {
            continue;
        }
        auto start = line.rfind(' ', at);
        start = start == std::string::npos ? 0 : start + 1;
        out[line.substr(start, at - start)].insert(std::stoll(line.substr(at + 22)));
    }
}

} // namespace

TEST_CASE("crash: kill -9 at random instants of renewals, of the daemon and of certfsctl renew: nothing half-written, "
          "lost or mismatched")
{
    // 30 here; bench/crash.sh runs 200 (CERTFS_RANDOM_KILLS).
    const int kills = static_cast<int>(test::env_number("CERTFS_RANDOM_KILLS", 30));
    const auto seed = static_cast<unsigned>(test::env_number("CERTFS_KILL_SEED", std::random_device{}()));
    std::mt19937 random(seed);
    auto uniform_ms = [&](int hi) {
        return std::chrono::milliseconds(std::uniform_int_distribution<int>(0, hi)(random));
    };
    KillFixture f;
    f.start_daemon();

    // Readers: two threads, one key first and one certificate first, over every domain.
    ReaderCounts seen;
    std::atomic<int> life{0}; // raised as a kill of the daemon starts
    std::atomic<bool> stopping{false};
    std::vector<std::thread> readers;
    for (int r = 0; r < 2; ++r) {
        readers.emplace_back([&, r] {
            std::map<std::string, std::string> verified;
            auto count_error = [&](const std::string& what) {
                if (errno == ENOTCONN) {
                    ++seen.not_connected;
                } else if (errno == ECONNABORTED) {
                    ++seen.aborted;
                } else if (errno == ENOENT) {
                    ++seen.not_found;
                } else {
                    ++seen.other_errors;
                    std::lock_guard lock(seen.mutex);
                    if (seen.first_other.empty()) {
                        seen.first_other = what + ": " + std::strerror(errno);
                    }
                }
            };
            while (!stopping) {
                // Both threads read for 400 ms of each second and stay away for 600 ms, three
                // pin windows: the process moves to the generations the renewals make.
                if (std::chrono::steady_clock::now().time_since_epoch() % 1000ms > 400ms) {
                    std::this_thread::sleep_for(5ms);
                    continue;
                }
                for (const auto& name : f.all_names()) {
                    const auto live = f.mnt / "live" / name;
                    const auto first = live / (r == 0 ? "privkey.pem" : "cert.pem");
                    const auto second = live / (r == 0 ? "cert.pem" : "privkey.pem");
                    const int life_before = life;
                    auto a = test::slurp(first);
                    if (!a) {
                        count_error(first.string());
                        continue;
                    }
                    auto b = test::slurp(second);
                    if (!b) {
                        count_error(second.string());
                        continue;
                    }
                    const auto& key = r == 0 ? *a : *b;
                    const auto& cert = r == 0 ? *b : *a;
                    if (life != life_before) {
                        ++seen.spanning;
                        if (!test::pair_matches(key, cert)) {
                            ++seen.spanning_mismatches;
                        }
                        continue;
                    }
                    ++seen.pairs;
                    std::string both = key + cert;
                    if (verified[name] != both) {
                        if (!test::pair_matches(key, cert)) {
                            ++seen.mismatches;
                        }
                        verified[name] = std::move(both);
                    }
                }
                std::this_thread::sleep_for(5ms);
            }
        });
    }
    struct StopReaders {
        std::atomic<bool>& stopping;
        std::vector<std::thread>& threads;
        ~StopReaders()
        {
            stopping = true;
            for (auto& t : threads) {
                t.join();
            }
        }
    } stop_readers{stopping, readers};

    std::map<std::string, std::set<std::int64_t>> acknowledged; // commits reported to a user
    std::array<int, 6> interrupted{};                           // renewals by the phase a kill hit
    int daemon_kills = 0;
    int ctl_kills = 0;
    int ctl_finished = 0; // certfsctl runs that ended before their kill
    int ctl_owed = 0;     // certfsctl kills after a commit, before its hooks had run
    double slowest_owed_hooks = 0;
    for (int i = 0; i < kills; ++i) {
        // One kill in three of certfsctl. Of each process's kills, one in six at a random
        // instant ("idle"), the others at a random instant of one phase.
        const bool kill_ctl = i % 3 == 2;
        const auto want = static_cast<Phase>((kill_ctl ? ctl_kills : daemon_kills) % 6);
        const std::vector<std::string> names = kill_ctl ? std::vector<std::string>{f.ctl_name} : f.daemon_names;
        std::unique_ptr<test::Child> ctl;
        auto start_ctl = [&] {
            ctl = std::make_unique<test::Child>(
                std::vector<std::string>{CERTFSCTL_PATH, "--db", f.db.string(), "renew", "--force", f.ctl_name});
        };
        if (kill_ctl) {
            start_ctl();
        }
        INFO("kill " << i + 1 << " of " << kills << " (seed " << seed << "), of "
                     << (kill_ctl ? "certfsctl" : "the daemon") << ", aimed at "
                     << k_phase_names[static_cast<int>(want)] << "; " << f.daemon->log());
        const auto cycle_start = std::chrono::steady_clock::now();
        bool reached = false;
        while (std::chrono::steady_clock::now() - cycle_start < 60s) {
            if (ctl && ctl->wait(0ms)) {
                // It ended before its kill: renewed, or refused while the daemon ran the hooks
                // a killed one owed. Another run, then.
                collect_acknowledged(ctl->output(), acknowledged);
                ++ctl_finished;
                start_ctl();
            }
            if (want == Phase::idle) {
                std::this_thread::sleep_for(uniform_ms(kill_ctl ? 1500 : 2500));
                reached = true;
                break;
            }
            if (std::any_of(names.begin(), names.end(), [&](const auto& n) { return f.phase_of(n) == want; })) {
                reached = true;
                break;
            }
            // The commit takes a few milliseconds: look again at once.
            std::this_thread::sleep_for(want == Phase::commit ? 0ms : 2ms);
        }
        REQUIRE(reached);
        const std::array<int, 6> extra_ms{0, 0, 350, 0, 100, 250};
        std::this_thread::sleep_for(uniform_ms(extra_ms[static_cast<int>(want)]));
        const pid_t target = kill_ctl ? ctl->pid() : f.daemon->pid();
        if (kill_ctl && ctl->wait(0ms)) {
            collect_acknowledged(ctl->output(), acknowledged);
            ++ctl_finished;
            --i; // it finished first: this kill is still to make
            continue;
        }
        bool owed = false;
        kill_at_once(target, [&] {
            if (!kill_ctl) {
                ++life;
            }
            owed = f.st->get_domain(names.front()).value().hooks_owed.has_value();
            for (const auto& n : names) {
                ++interrupted[static_cast<int>(f.phase_of(n))];
            }
        });
        f.mark_killed(names);
        if (kill_ctl) {
            REQUIRE(ctl->wait(10s));
            collect_acknowledged(ctl->output(), acknowledged);
            ++ctl_kills;
            // Hooks a killed certfsctl owed are run by the daemon, at once.
            const auto killed = std::chrono::steady_clock::now();
            REQUIRE(wait_until([&] { return !f.st->get_domain(f.ctl_name).value().hooks_owed; }, 30s));
            if (owed) {
                ++ctl_owed;
                slowest_owed_hooks = std::max(slowest_owed_hooks, seconds_since(killed));
            }
        } else {
            REQUIRE(f.daemon->wait_exit(10s));
            ++daemon_kills;
            collect_acknowledged(f.daemon->log(), acknowledged);
            // The next daemon starts on the dead mount and recovers it.
            f.daemon->leave_dead_mount();
            f.daemon.reset();
            f.start_daemon();
        }
    }

    // The end: long certificates from now on. Every domain renews once more, with its hooks.
    test::write_file(f.dir / "short.validity", KillFixture::k_validity_long);
    {
        INFO(f.daemon->log());
        REQUIRE(wait_until(
            [&] {
                return std::all_of(f.daemon_names.begin(), f.daemon_names.end(), [&](const auto& n) {
                    const auto d = f.st->get_domain(n).value();
                    return d.current_not_after && *d.current_not_after - std::chrono::system_clock::now() > 1h &&
                           !d.hooks_owed && d.state == store::DomainState::monitoring &&
                           last_line(f.hook_log(n)).rfind("done " + std::to_string(*d.current_gen) + " ", 0) == 0;
                });
            },
            60s));
    }
    const auto last_ctl = test::Ctl(f.db)({"renew", "--force", f.ctl_name});
    INFO(last_ctl.out << last_ctl.err);
    REQUIRE(last_ctl.exit_code == 0); // no lease a killed certfsctl left stands in its way
    collect_acknowledged(last_ctl.out, acknowledged);

    stopping = true;
    for (auto& t : readers) {
        t.join();
    }
    readers.clear();
    // What a reader sees now: each domain's current generation, whole. This process stays away
    // from the mount for three pin windows first, so that it holds no generation of its own.
    for (const auto& name : f.all_names()) {
        INFO("live/" << name);
        const std::string serial = normal_serial(f.st->get_domain(name).value().current_serial);
        std::optional<std::string> seen_serial;
        for (int attempt = 0; attempt < 5 && seen_serial != serial; ++attempt) {
            std::this_thread::sleep_for(3 * k_pin_window);
            const auto key = test::slurp(f.mnt / "live" / name / "privkey.pem");
            const auto cert = test::slurp(f.mnt / "live" / name / "cert.pem");
            REQUIRE(key);
            REQUIRE(cert);
            seen_serial = test::matching_serial(*key, *cert);
            REQUIRE(seen_serial);
        }
        CHECK(*seen_serial == serial);
    }
    f.daemon.reset();
    for (int l = 1; l <= f.lives; ++l) {
        collect_acknowledged(test::file_or_empty(f.daemon_log(l)), acknowledged);
    }

    long generations = 0;
    long renewals = 0;
    long unacknowledged = 0;
    long issued_by_ca = 0;
    std::set<std::string> serials;
    for (const auto& name : f.all_names()) {
        INFO("domain " << name);
        const std::vector<store::Generation> history = f.st->history(name).value();
        std::set<std::string> ca_issued;
        for (const auto& line : whole_lines(f.ca_log(name))) {
            if (auto s = after(line, "issued "); !s.empty()) {
                ca_issued.insert(normal_serial(s));
            }
        }
        issued_by_ca += static_cast<long>(ca_issued.size());
        std::map<std::int64_t, std::string> serial_of_gen;
        for (std::size_t k = 0; k < history.size(); ++k) {
            const auto& g = history[k];
            INFO("generation " << g.gen);
            // Numbered one after the other, whole, valid when committed, from this CA.
            CHECK(g.gen == static_cast<std::int64_t>(k + 1));
            const auto d = f.st->get_domain(name).value();
            CHECK(store::validate_generation({g.key_pem, g.cert_pem, g.chain_pem, g.reason},
                                             {d.dns_names, d.ip_addresses}, g.created_at)
                      .ok());
            CHECK(ca_issued.count(normal_serial(g.serial_hex)) == 1);
            CHECK(serials.insert(normal_serial(g.serial_hex)).second);
            serial_of_gen[g.gen] = normal_serial(g.serial_hex);
            ++generations;
            if (g.reason == store::Reason::renewed) {
                ++renewals;
                if (acknowledged[name].count(g.gen) == 0) {
                    ++unacknowledged;
                }
            }
        }
        // Every renewal reported done is in the store.
        for (std::int64_t gen : acknowledged[name]) {
            CHECK(serial_of_gen.count(gen) == 1);
        }
        // No hook ran before its commit: each read the committed certificate of the
        // generation it was told, through the mount. None was lost: every renewal's hooks ran,
        // for it or for a later generation.
        std::int64_t newest_done = 0;
        for (const auto& line : whole_lines(f.hook_log(name))) {
            INFO(line);
            if (auto started = after(line, "start "); !started.empty()) {
                CHECK(serial_of_gen.count(std::stoll(started)) == 1);
            } else if (auto done = after(line, "done "); !done.empty()) {
                const std::int64_t gen = std::stoll(done);
                REQUIRE(serial_of_gen.count(gen) == 1);
                CHECK(hook_serial(done) == serial_of_gen[gen]);
                newest_done = std::max(newest_done, gen);
            }
        }
        CHECK(newest_done == static_cast<std::int64_t>(history.size()));
    }
    const auto check = test::Ctl(f.db)({"check"});
    INFO(check.out << check.err);
    CHECK(check.exit_code == 0);

    std::ostringstream phases;
    for (int p = 1; p < 6; ++p) {
        phases << (p > 1 ? ", " : "") << k_phase_names[p] << " " << interrupted[p];
    }
    WARN(kills << " kills (" << daemon_kills << " of the daemon, " << ctl_kills << " of certfsctl renew; "
               << ctl_finished << " certfsctl runs ended first; seed " << seed
               << "). Renewals they interrupted: " << phases.str() << "; domains idle at a kill " << interrupted[0]
               << ". " << generations << " generations, " << renewals << " of them renewals, " << unacknowledged
               << " committed but not yet reported when a kill came; the CA issued " << issued_by_ca
               << ". Readers: " << seen.pairs << " pairs, " << seen.mismatches << " mismatched; " << seen.not_connected
               << " ENOTCONN, " << seen.aborted << " ECONNABORTED and " << seen.not_found
               << " ENOENT while a daemon was dead; " << seen.spanning << " pairs a kill fell between ("
               << seen.spanning_mismatches << " mismatched). The daemon ran the "
               << "hooks " << ctl_owed << " killed certfsctl runs owed within " << slowest_owed_hooks << " s.");
    CHECK(seen.mismatches == 0);
    CHECK(seen.other_errors == 0);
    INFO(seen.first_other);
    CHECK(seen.pairs > 0);
    CHECK(unacknowledged <= kills);
    for (int p = 1; p < 6; ++p) {
        INFO(k_phase_names[p]);
        CHECK(interrupted[p] > 0);
    }
}
