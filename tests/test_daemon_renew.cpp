// The daemon's scheduler left running on a real mount: what it costs over time. Short-lived
// certificates are renewed a bounded number of times, a lease another process holds costs no
// CPU, and hundreds of renewals leave the thread count and the address space flat. The figures
// come from /proc/<pid>/stat and /proc/<pid>/status of the daemon.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pairs.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::quote;
using certfs::test::wait_until;
using Mount = certfs::test::CaMount;

namespace {

const std::string k_helpers = CERTFS_TEST_CA_HELPERS_DIR;

// The CPU time (user and system) the process has used so far.
Duration cpu_time(pid_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // The fields after the command name, which is in parentheses and may hold spaces.
    std::istringstream rest(stat.substr(stat.rfind(')') + 2));
    std::string field;
    long long utime = 0;
    long long stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) { // utime is field 14, stime 15 (proc(5))
        if (i == 14) {
            utime = std::stoll(field);
        } else if (i == 15) {
            stime = std::stoll(field);
        }
    }
    return Duration((utime + stime) * 1000 / sysconf(_SC_CLK_TCK));
}

// A number from /proc/<pid>/status ("Threads:", "VmSize:" in kB); -1 when it is missing.
long status_field(pid_t pid, const std::string& key)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(key, 0) == 0) {
            return std::stol(line.substr(key.size()));
        }
    }
    return -1;
}

void add_issuer(const Mount& m, const std::string& name, Duration validity)
{
    renew::LocalCaConfig config;
    config.validity = validity;
    REQUIRE(m.store()->add_issuer(renew::create_local_ca(name, config, std::chrono::system_clock::now()).value()).ok());
}

void add_domain(const Mount& m, const std::string& name, const std::string& issuer,
                std::optional<Duration> renew_before = std::nullopt)
{
    store::DomainConfig c;
    c.name = name;
    c.issuer = issuer;
    c.dns_names = {name};
    c.renew_before = renew_before;
    auto st = m.store();
    REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
}

std::int64_t current_gen(const Mount& m, const std::string& name)
{
    return m.store()->get_domain(name).value().current_gen.value_or(0);
}

} // namespace

TEST_CASE("daemon: a new generation is never due: 5 domains with 20-second leaves renew a few times, not thousands")
{
    Mount m(200ms);
    add_issuer(m, "short", 20s);
    const std::vector<std::string> names = {"a.test", "b.test", "c.test", "d.test", "e.test"};
    const auto start = std::chrono::steady_clock::now();
    for (const auto& name : names) {
        add_domain(m, name, "short");
    }
    // The daemon renews each of them by itself, a half lifetime (10 s) after its issue...
    const bool renewed = wait_until(
        [&] { return std::all_of(names.begin(), names.end(), [&](const auto& n) { return current_gen(m, n) >= 3; }); },
        30s);
    CHECK(renewed);
    // ... and no sooner: over 30 s, at most 3 renewals per domain and 20 s of lifetime.
    std::this_thread::sleep_until(start + 30s); // the window the rate is measured over
    std::size_t total = 0;
    auto st = m.store();
    for (const auto& name : names) {
        total += st->history(name).value().size();
        // The current generation was not born due: it is due after its own issue.
        CHECK(renew::due_at(st->get_domain(name).value()).value() > st->current_generation(name).value().created_at);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double bound = static_cast<double>(names.size()) * (1 + 3 * seconds / 20);
    INFO(total << " generations in " << seconds << " s (at most " << bound << ")");
    CHECK(static_cast<double>(total) <= bound);
}

TEST_CASE("daemon: a due domain whose lease another process holds costs no CPU and renews once the lease is released")
{
    Mount m(200ms);
    add_issuer(m, "short", 4s); // due 2 s after its issue
    // This process holds the lease, and stays alive while it does.
    auto holder = m.store();
    REQUIRE(holder->acquire_lease("domain:held.test", "this test process", 1h).ok());
    add_domain(m, "held.test", "short");
    // The daemon finds it due and the lease held.
    REQUIRE(wait_until(
        [&] {
            return m.log().find("held.test") != std::string::npos &&
                   m.log().find("renewal already in progress") != std::string::npos;
        },
        15s));
    const Duration before = cpu_time(m.pid());
    std::this_thread::sleep_for(10s); // the window the CPU time is measured over
    const Duration used = cpu_time(m.pid()) - before;
    INFO("the daemon used " << used.count() << " ms of CPU in 10 s; it said:\n" << m.log());
    CHECK(used < 100ms); // under 1% of a core
    CHECK(current_gen(m, "held.test") == 1);

    // Released: the daemon renews it without waiting for the lease's expiry.
    REQUIRE(holder->release_lease("domain:held.test", "this test process").ok());
    CHECK(wait_until([&] { return current_gen(m, "held.test") >= 2; }, 15s));
}

TEST_CASE("daemon: hundreds of renewals leave its thread count and its address space flat")
{
    Mount m(50ms);
    add_issuer(m, "short", 3s);
    std::vector<std::string> names;
    for (int i = 0; i < 16; ++i) {
        names.push_back("t" + std::to_string(i) + ".test");
        add_domain(m, names.back(), "short", 2s); // renewed every second
    }
    auto renewals = [&] {
        std::int64_t n = 0;
        const auto domains = m.store()->list_domains().value();
        for (const auto& d : domains) {
            n += d.current_gen.value_or(1) - 1;
        }
        return n;
    };
    REQUIRE(wait_until([&] { return renewals() >= 20; }, 30s));
    const long threads_before = status_field(m.pid(), "Threads:");
    const long vm_before = status_field(m.pid(), "VmSize:");
    REQUIRE(wait_until([&] { return renewals() >= 520; }, 120s)); // about 35 s on 2 busy cores
    const long threads_after = status_field(m.pid(), "Threads:");
    const long vm_after = status_field(m.pid(), "VmSize:");
    INFO("threads " << threads_before << " -> " << threads_after << ", VmSize " << vm_before / 1024 << " MB -> "
                    << vm_after / 1024 << " MB over " << renewals() << " renewals");
    // At most a worker per renewal running at once (4) and per ARI fetch (2) more. A thread that
    // ended and was never joined is not counted in Threads, but its stack stays mapped: VmSize
    // grows by 8 MB or more for each.
    CHECK(threads_after <= threads_before + 6);
    CHECK(vm_after - vm_before < 1024 * 1024); // kB: under 1 GB
}

namespace {

// A tmpfs of a few MiB, mounted for one test and lazily unmounted by the destructor.
class SmallDisk {
public:
    explicit SmallDisk(const std::filesystem::path& dir) : m_dir(dir)
    {
        std::filesystem::create_directory(m_dir);
        auto r = test::run({"/bin/mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "certfs-small", m_dir.string()});
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
    }
    ~SmallDisk() { (void)test::run({"/bin/umount", "-l", m_dir.string()}); }
    SmallDisk(const SmallDisk&) = delete;
    SmallDisk& operator=(const SmallDisk&) = delete;

    // Writes a file until the disk is full; returns the bytes written.
    std::size_t fill()
    {
        int fd = ::open((m_dir / "filler").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        REQUIRE(fd >= 0);
        const std::string chunk(4096, 'x');
        std::size_t written = 0;
        errno = 0;
        while (::write(fd, chunk.data(), chunk.size()) == static_cast<ssize_t>(chunk.size())) {
            written += chunk.size();
        }
        const int err = errno;
        ::close(fd);
        REQUIRE(err == ENOSPC);
        return written;
    }
    void free() { std::filesystem::remove(m_dir / "filler"); }

private:
    std::filesystem::path m_dir;
};

// An ext4 filesystem in an image file, loop-mounted with errors=remount-ro on `dir` for one
// test. fail() makes the kernel meet an error on it, as a failing disk does: it turns read-only
// under the files open on it. repair() unmounts it, runs e2fsck and mounts it again. The
// destructor unmounts it (the loop device goes with it).
class LoopDisk {
public:
    LoopDisk(const std::filesystem::path& image, const std::filesystem::path& dir) : m_image(image), m_dir(dir)
    {
        std::filesystem::create_directory(m_dir);
        {
            std::ofstream(m_image.string());
        }
        std::filesystem::resize_file(m_image, 32 << 20);
        require_ok({"/sbin/mkfs.ext4", "-q", "-F", m_image.string()});
        mount();
    }
    ~LoopDisk() { (void)test::run({"/bin/umount", "-l", m_dir.string()}); }
    LoopDisk(const LoopDisk&) = delete;
    LoopDisk& operator=(const LoopDisk&) = delete;

    void fail()
    {
        auto source = test::run({"/bin/findmnt", "-n", "-o", "SOURCE", m_dir.string()});
        REQUIRE(source.exit_code == 0);
        const std::string device = std::filesystem::path(source.out.substr(0, source.out.find('\n'))).filename();
        std::ofstream("/sys/fs/ext4/" + device + "/trigger_fs_error") << "certfs test: a disk error\n";
        REQUIRE(writes_refused());
    }
    // Whether a new file on it fails with EROFS.
    bool writes_refused() const
    {
        const int fd = ::open(m_dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ::close(fd);
            return false;
        }
        return errno == EROFS;
    }
    void repair()
    {
        require_ok({"/bin/umount", m_dir.string()});
        auto fsck = test::run({"/sbin/e2fsck", "-f", "-y", m_image.string()});
        INFO(fsck.out << fsck.err);
        REQUIRE((fsck.exit_code == 0 || fsck.exit_code == 1)); // 1: errors corrected
        mount();
    }
    // Remounts it read-only or read-write, as an admin would.
    void remount(bool read_only)
    {
        require_ok({"/bin/mount", "-o", read_only ? "remount,ro" : "remount,rw", m_dir.string()});
    }

private:
    void mount()
    {
        require_ok({"/bin/mount", "-o", "loop,errors=remount-ro", m_image.string(), m_dir.string()});
        std::filesystem::permissions(m_dir, std::filesystem::perms::owner_all);
    }
    static void require_ok(const std::vector<std::string>& argv)
    {
        auto r = test::run(argv);
        INFO(argv[0] << ": " << r.out << r.err);
        REQUIRE(r.exit_code == 0);
    }

    std::filesystem::path m_image;
    std::filesystem::path m_dir;
};

// A store at `db` with a local CA "short" whose leaves last 20 s (due 10 s after their issue),
// and the domain `name` issued by it.
void add_short_lived(const std::filesystem::path& db, const std::string& name)
{
    auto st = store::Store::open(db.string(), {.create = true, .actor = "test", .clock = nullptr}).value();
    renew::LocalCaConfig config;
    config.validity = 20s;
    REQUIRE(st->add_issuer(renew::create_local_ca("short", config, std::chrono::system_clock::now()).value()).ok());
    store::DomainConfig c;
    c.name = name;
    c.issuer = "short";
    c.dns_names = {c.name};
    REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
}

} // namespace

TEST_CASE("daemon: the store's filesystem turning read-only under it (a disk error): renewals fail clearly and "
          "wait, the mount keeps serving, and once it is repaired the next renewal works")
{
    if (::access("/dev/loop-control", W_OK) != 0) {
        WARN("skipped: no loop devices here (/dev/loop-control)");
        return;
    }
    test::TempDir dir;
    LoopDisk disk(dir / "disk.img", dir / "store");
    const auto db = dir / "store" / "certfs.db";
    add_short_lived(db, "ro.test");
    std::filesystem::create_directory(dir / "mnt");
    test::Ctl ctl(db);
    const std::string read_only = "(the filesystem holding the store is read-only; nothing was changed)";
    std::string served;
    nlohmann::json history_before;
    {
        test::Daemon daemon(db, dir / "mnt", dir / "certfs.log", 200ms);
        served = test::read_file(daemon.live("ro.test") / "cert.pem");
        history_before = ctl.history("ro.test");
        disk.fail();
        // An admin's renewal and changes: one clear line each; reading still works.
        test::RunResult r = ctl({"renew", "ro.test", "--force"});
        test::expect_failure(r, 1, read_only);
        std::printf("read-only store: certfsctl said: %s", r.err.c_str());
        test::expect_failure(ctl({"set", "ro.test", "--mode", "0640"}), 1, read_only);
        CHECK_THAT(ctl.ok({"list"}).out, Catch::Contains("ro.test"));
        // The daemon's own attempt, once the leaf is due: it fails, says why, and waits.
        REQUIRE(wait_until([&] { return daemon.log().find(read_only) != std::string::npos; }, 30s));
        const Duration cpu_before = cpu_time(daemon.pid());
        std::this_thread::sleep_for(10s); // the window the CPU time is measured over
        const Duration used = cpu_time(daemon.pid()) - cpu_before;
        INFO("the daemon used " << used.count() << " ms of CPU in 10 s; it said:\n" << daemon.log());
        CHECK(used < 100ms);
        CHECK(test::read_file(daemon.live("ro.test") / "cert.pem") == served);
        CHECK(test::read_file(daemon.live("ro.test") / "privkey.pem").find("PRIVATE KEY") != std::string::npos);
        std::printf("read-only store: the daemon used %lld ms of CPU in 10 s, serving throughout\n",
                    static_cast<long long>(used.count()));
    }
    // The admin repairs the filesystem. Nothing was lost or half-written.
    disk.repair();
    REQUIRE_FALSE(disk.writes_refused());
    CHECK(ctl.history("ro.test") == history_before);
    // check finds the store whole: what it reports is about the leaf that expired meanwhile.
    test::RunResult checked = ctl({"check"});
    INFO(checked.out);
    std::istringstream lines(checked.out);
    for (std::string line; std::getline(lines, line);) {
        CHECK(line.rfind("domain ro.test: ", 0) == 0);
        CHECK(line.find("stuck") == std::string::npos);
    }
    // A store every program closed, on a filesystem mounted read-only: both programs say why.
    disk.remount(true);
    const std::string closed = "the filesystem holding the store is read-only, and SQLite cannot open a WAL store "
                               "there once every program has closed it";
    test::expect_failure(ctl({"list"}), 1, closed);
    test::RunResult refused = test::run({CERTFS_PATH, "--db", db.string(), "-f", (dir / "mnt").string()});
    CHECK(refused.exit_code == 1);
    CHECK_THAT(refused.err, Catch::Contains(closed));
    disk.remount(false);
    // Writable again: the daemon renews by itself, and certfsctl changes what it is told.
    test::Daemon daemon(db, dir / "mnt", dir / "certfs-2.log", 200ms);
    ctl.ok({"set", "ro.test", "--mode", "0640"});
    CHECK(wait_until(
        [&] {
            return test::serial_seen_by_new_process(daemon.live("ro.test") / "cert.pem") != test::serial_of(served);
        },
        30s));
    CHECK(ctl.history("ro.test").size() > history_before.size());
}

TEST_CASE(
    "daemon: a full disk fails the renewal clearly, the mount keeps serving, no CPU is spent, and space returning "
    "renews it")
{
    test::TempDir dir;
    SmallDisk disk(dir / "store");
    const auto db = dir / "store" / "certfs.db";
    add_short_lived(db, "full.test");
    std::filesystem::create_directory(dir / "mnt");
    test::Daemon daemon(db, dir / "mnt", dir / "certfs.log", 200ms);
    test::Ctl ctl(db);
    const std::string served = test::read_file(daemon.live("full.test") / "cert.pem");
    const auto history_before = ctl.history("full.test");

    const std::size_t filled = disk.fill();
    INFO("the filler took " << filled << " bytes");
    // An admin's renewal: one clear line, nothing changed.
    test::RunResult r = ctl({"renew", "full.test", "--force"});
    test::expect_failure(
        r, 1, "database or disk is full (the filesystem holding the store has no space left; nothing was changed)");
    std::printf("full disk: certfsctl said: %s", r.err.c_str());
    // The daemon's own attempt, once the leaf is due: it fails and says why, then waits.
    REQUIRE(wait_until([&] { return daemon.log().find("disk is full") != std::string::npos; }, 30s));
    const Duration cpu_before = cpu_time(daemon.pid());
    std::this_thread::sleep_for(10s); // the window the CPU time is measured over
    const Duration used = cpu_time(daemon.pid()) - cpu_before;
    INFO("the daemon used " << used.count() << " ms of CPU in 10 s; it said:\n" << daemon.log());
    CHECK(used < 100ms); // under 1% of a core: no loop
    // The mount serves what it served.
    CHECK(test::read_file(daemon.live("full.test") / "cert.pem") == served);

    // Space returns: the daemon's next attempt (a minute after the failed one) renews it, and
    // the admin's renewal works again.
    disk.free();
    const auto freed = std::chrono::steady_clock::now();
    CHECK(ctl.history("full.test") == history_before); // no generation lost, none half-made
    CHECK(wait_until(
        [&] {
            return test::serial_seen_by_new_process(daemon.live("full.test") / "cert.pem") != test::serial_of(served);
        },
        90s));
    std::printf("full disk: the daemon used %lld ms of CPU in 10 s while full; renewed %.1f s after space returned\n",
                static_cast<long long>(used.count()),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - freed).count());
    INFO(daemon.log());
    CHECK(ctl.history("full.test").size() >= 2);
    ctl.ok({"renew", "full.test", "--force"});
}

TEST_CASE("daemon: many certfsctl commands at once against a renewing daemon: no user sees the store locked")
{
    Mount m(200ms);
    add_issuer(m, "short", 6s);                         // each domain renewed by the daemon every 3 s or so
    add_issuer(m, "long", std::chrono::hours(24 * 90)); // for the domains added meanwhile: not due
    const std::vector<std::string> names = {"b1.test", "b2.test", "b3.test", "b4.test"};
    for (const auto& name : names) {
        add_domain(m, name, "short");
    }
    test::Ctl ctl(m.db());
    struct Run {
        std::vector<std::string> args;
        test::RunResult result;
        double seconds = 0;
    };
    std::mutex mutex;
    std::vector<Run> runs;
    const auto until = std::chrono::steady_clock::now() + 20s;
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; std::chrono::steady_clock::now() < until; ++i) {
                std::vector<std::string> args;
                switch ((t + i) % 6) {
                case 0:
                    args = {"renew", names[static_cast<std::size_t>(t) % names.size()], "--force"};
                    break;
                case 1:
                    args = {"add", "n" + std::to_string(t) + "-" + std::to_string(i) + ".test", "--issuer", "long"};
                    break;
                case 2:
                    args = {"list"};
                    break;
                case 3:
                    args = {"history", names[static_cast<std::size_t>(i) % names.size()]};
                    break;
                case 4:
                    args = {"renew", "--all"};
                    break;
                default:
                    args = {"show", names[static_cast<std::size_t>(t + i) % names.size()]};
                    break;
                }
                const auto start = std::chrono::steady_clock::now();
                test::RunResult r = ctl.unchecked(args);
                const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
                std::lock_guard lock(mutex);
                runs.push_back({args, std::move(r), took});
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    std::size_t failed = 0;
    std::size_t in_progress = 0;
    double longest = 0;
    for (const auto& run : runs) {
        INFO(test::join(run.args) << " -> " << run.result.exit_code << ": " << run.result.err);
        test::check_no_key_material(run.result);
        CHECK_THAT(run.result.err, !Catch::Contains("locked") && !Catch::Contains("SQLITE_BUSY"));
        longest = std::max(longest, run.seconds);
        if (run.result.exit_code != 0) {
            ++failed;
            // The one refusal a renewal may meet: the daemon (or another certfsctl) renewing it.
            const bool busy_domain = run.args[0] == "renew" && run.result.exit_code == 1 &&
                                     run.result.err.find("renewal already in progress") != std::string::npos;
            in_progress += busy_domain ? 1 : 0;
            CHECK(busy_domain);
        }
    }
    std::printf("busy store: %zu certfsctl runs by 8 threads in 20 s against a renewing daemon; %zu refused as "
                "'renewal already in progress', no other failure; the longest took %.2f s\n",
                runs.size(), in_progress, longest);
    CHECK(runs.size() > 50);
    CHECK(longest < 10.0); // the busy timeout
    CHECK(failed == in_progress);
}

TEST_CASE("daemon: a CA that cannot be reached: the mount serves the certificate until it expires and after, the "
          "daemon warns and then errs, spends no CPU waiting, and check exits 1 saying why")
{
    test::Ctl ctl;
    ctl.ok({"init"});
    const auto attempts = ctl.path("attempts.log");
    ctl.ok({"issuer", "add", "helper", "down", "--command",
            quote(k_helpers + "/down.sh") + " " + quote(attempts.string())});
    ctl.ok({"add", "down.test", "--issuer", "down", "--no-issue"});
    // Its certificate, from another CA, lives 25 s: due 12 s after it starts, and by then a day
    // from its end, the last warning's threshold.
    test::TestCa ca{"/CN=certfs down test CA"};
    const auto now = std::chrono::system_clock::now();
    const test::TestLeaf leaf = test::make_leaf(ca, {{"down.test"}, {}}, now - 1s, now + 25s);
    test::write_file(ctl.path("cert.pem"), leaf.cert_pem);
    test::write_file(ctl.path("key.pem"), leaf.key_pem);
    test::write_file(ctl.path("chain.pem"), ca.cert_pem);
    ctl.ok({"import", "down.test", "--cert", ctl.path("cert.pem").string(), "--key", ctl.path("key.pem").string(),
            "--chain", ctl.path("chain.pem").string()});
    const std::string expires = ctl.show("down.test")["current"]["not_after"].get<std::string>();
    std::filesystem::create_directory(ctl.path("mnt"));
    test::Daemon daemon(ctl.db(), ctl.path("mnt"), ctl.path("certfs.log"), 200ms);
    const auto served = [&] { return test::read_file(daemon.live("down.test") / "cert.pem"); };
    REQUIRE(served() == leaf.cert_pem);

    // Due: the daemon asks the CA, which cannot be reached, and says so and what it means.
    const std::string error = "domain down.test: issuer down: CA unreachable (helper exit status 3): cannot "
                              "connect to ca.example.test:443: Connection refused";
    REQUIRE(wait_until([&] { return daemon.log().find("down.test: the certificate expires in") != std::string::npos; },
                       30s));
    INFO(daemon.log());
    CHECK_THAT(daemon.log(), Contains("renewal failed: " + error) &&
                                 Contains("and has not been renewed (last error: " + error + ")"));
    CHECK(served() == leaf.cert_pem);
    test::RunResult before = ctl({"check"});
    CHECK(before.exit_code == 1);
    CHECK_THAT(before.out, Contains("domain down.test: due for renewal since") &&
                               Contains("but not renewed (expires " + expires + "; last error: " + error + ")"));
    // It waits for its next try (a minute later) without spending anything.
    const Duration cpu_before = cpu_time(daemon.pid());
    std::this_thread::sleep_for(5s); // the window the CPU time is measured over
    const Duration used = cpu_time(daemon.pid()) - cpu_before;
    CHECK(used < 50ms); // 1% of a core

    // The end passes: the expired certificate is still served, for nothing else is there, and
    // the daemon says so as an error; check says it expired.
    REQUIRE(wait_until([&] { return daemon.log().find("down.test: the certificate expired at") != std::string::npos; },
                       30s));
    CHECK_THAT(daemon.log(), Contains("down.test: the certificate expired at " + expires +
                                      " and has not been renewed (last error: " + error + "); it is still served"));
    CHECK(served() == leaf.cert_pem);
    CHECK(test::read_file(daemon.live("down.test") / "privkey.pem") == leaf.key_pem);
    test::RunResult after = ctl({"check"});
    CHECK(after.exit_code == 1);
    CHECK_THAT(after.out, Contains("domain down.test: current generation 1: validation failed (validity): the "
                                   "certificate expired at " +
                                   expires));
    // One try (the next is a minute after it), after the helper was asked for its CA's roots.
    CHECK(test::file_or_empty(attempts) == "FETCH-ROOTS\nSUBMIT\n");
    std::printf("CA down: the daemon tried once, used %lld ms of CPU in 5 s while waiting, and served the "
                "certificate before and after its end\n",
                static_cast<long long>(used.count()));
}
