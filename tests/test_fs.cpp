// The filesystem on a real FUSE mount: the daemon as users run it, plain POSIX calls.
// Each test mounts in its own temp dir, waits on conditions with timeouts, and always
// unmounts and stops the daemon (by pid).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/testutil.hpp"

using namespace certfs;
using certfs::test::TempDir;
using namespace std::chrono_literals;
namespace stdfs = std::filesystem;

extern char** environ;

namespace {

using certfs::test::slurp;

constexpr long k_fuse_super_magic = 0x65735546;

bool is_fuse_mount(const stdfs::path& dir)
{
    struct statfs sf{};
    return ::statfs(dir.c_str(), &sf) == 0 && sf.f_type == k_fuse_super_magic;
}

template <typename Pred>
bool wait_until(Pred pred, Duration timeout = 10s)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) {
            return true;
        }
        std::this_thread::sleep_for(10ms);
    }
    return pred();
}

std::string serial_of(const std::string& pem)
{
    auto certs = pki::parse_certs(pem);
    return certs.ok() ? pki::cert_info(*certs->front()).value().serial_hex : "unreadable";
}

bool pair_matches(const std::string& key_pem, const std::string& cert_pem)
{
    auto key = pki::parse_private_key(key_pem);
    auto certs = pki::parse_certs(cert_pem);
    return key.ok() && certs.ok() && pki::key_matches(*certs->front(), **key);
}

// The serial another process (with no pins of its own) sees in cert.pem right now.
std::string serial_seen_by_new_process(const stdfs::path& cert)
{
    auto r = test::run({"/usr/bin/openssl", "x509", "-noout", "-serial", "-in", cert.string()});
    std::string out = r.out;
    if (out.rfind("serial=", 0) != 0) {
        return "";
    }
    std::string hex = out.substr(7, out.find('\n') - 7);
    std::transform(hex.begin(), hex.end(), hex.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    hex.erase(0, std::min(hex.find_first_not_of('0'), hex.size() - 1));
    return hex;
}

int env_int(const char* name, int fallback)
{
    const char* v = std::getenv(name);
    return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

class Mount {
public:
    explicit Mount(Duration pin_window = 2s, std::vector<std::string> extra = {})
    {
        // mkdtemp made the directory 0700; other users must reach the mount point.
        stdfs::permissions(m_dir.path(), stdfs::perms::owner_all | stdfs::perms::group_read |
                                             stdfs::perms::group_exec | stdfs::perms::others_read |
                                             stdfs::perms::others_exec);
        stdfs::create_directory(m_mnt);
        auto store = store::Store::open(m_db.string(), {.create = true, .actor = "test", .clock = nullptr}).value();
        REQUIRE(store->add_issuer(renew::create_local_ca("ca", {}, std::chrono::system_clock::now()).value()).ok());
        store.reset();
        std::vector<std::string> argv{CERTFS_PATH, "--db", m_db.string(), "--pin-window",
                                      std::to_string(pin_window.count()) + "ms", "-f"};
        argv.insert(argv.end(), extra.begin(), extra.end());
        argv.push_back(m_mnt.string());
        m_pid = spawn(argv);
        REQUIRE(wait_until([&] { return is_fuse_mount(m_mnt); }));
    }

    ~Mount()
    {
        // Unmount even when the test failed; then the daemon exits by itself.
        test::run({"/usr/bin/fusermount3", "-u", m_mnt.string()});
        if (m_pid > 0 && !wait_exit(10s)) {
            ::kill(m_pid, SIGKILL);
            ::waitpid(m_pid, nullptr, 0);
            test::run({"/usr/bin/fusermount3", "-uz", m_mnt.string()});
        }
    }

    Mount(const Mount&) = delete;
    Mount& operator=(const Mount&) = delete;

    static pid_t spawn(const std::vector<std::string>& args, const std::string& log = "/dev/null")
    {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
        std::vector<std::string> copy = args;
        std::vector<char*> argp;
        for (auto& s : copy) {
            argp.push_back(s.data());
        }
        argp.push_back(nullptr);
        pid_t pid = -1;
        int rc = posix_spawn(&pid, argp[0], &actions, nullptr, argp.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        REQUIRE(rc == 0);
        return pid;
    }

    // Waits for the daemon to exit; its exit status in *status.
    bool wait_exit(Duration timeout, int* status = nullptr)
    {
        int st = 0;
        bool done = wait_until([&] { return ::waitpid(m_pid, &st, WNOHANG) == m_pid; }, timeout);
        if (done) {
            m_pid = -1;
            if (status != nullptr) {
                *status = st;
            }
        }
        return done;
    }

    std::unique_ptr<store::Store> store()
    {
        return store::Store::open(m_db.string(), {.create = false, .actor = "test", .clock = nullptr}).value();
    }

    // Adds a domain issued by the local CA and waits until the mount shows it.
    void add(const std::string& name, std::uint32_t mode = 0600, std::uint32_t uid = 0)
    {
        auto st = store();
        store::DomainConfig c;
        c.name = name;
        c.issuer = "ca";
        c.dns_names = {name};
        c.mode = mode;
        c.owner_uid = uid;
        REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
        REQUIRE(wait_until([&] { return stdfs::exists(live(name) / "cert.pem"); }));
    }

    // Commits a new generation; returns its serial.
    std::string renew(const std::string& name)
    {
        auto st = store();
        REQUIRE(renew::Renewer(*st, "test").renew(name, true).ok());
        return st->current_generation(name).value().serial_hex;
    }

    // Waits until a fresh process sees `serial` in live/<name>/cert.pem (the flip happened).
    void wait_flip(const std::string& name, const std::string& serial)
    {
        REQUIRE(wait_until([&] { return serial_seen_by_new_process(live(name) / "cert.pem") == serial; }, 15s));
    }

    stdfs::path live(const std::string& name) const { return m_mnt / "live" / name; }
    const stdfs::path& mnt() const { return m_mnt; }
    const stdfs::path& db() const { return m_db; }
    pid_t pid() const { return m_pid; }

private:
    TempDir m_dir;
    stdfs::path m_db = m_dir / "certfs.db";
    stdfs::path m_mnt = m_dir / "mnt";
    pid_t m_pid = -1;
};

} // namespace

TEST_CASE("fs: the tree and sizes and modes and owners and times")
{
    Mount m;
    m.add("site.test", 0640, 33);
    std::set<std::string> top;
    for (const auto& e : stdfs::directory_iterator(m.mnt())) {
        top.insert(e.path().filename());
    }
    CHECK(top == std::set<std::string>{"live", "archive"});
    std::set<std::string> files;
    for (const auto& e : stdfs::directory_iterator(m.live("site.test"))) {
        files.insert(e.path().filename());
    }
    CHECK(files == std::set<std::string>{"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem", "combined.pem"});

    auto gen = m.store()->current_generation("site.test").value();
    auto check_file = [&](const char* name, const std::string& content, mode_t mode, uid_t uid) {
        INFO(name);
        struct stat st{};
        REQUIRE(::stat((m.live("site.test") / name).c_str(), &st) == 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK((st.st_mode & 07777) == mode);
        CHECK(st.st_uid == uid);
        CHECK(st.st_size == static_cast<off_t>(content.size()));
        CHECK(st.st_mtime == to_unix(gen.created_at));
        CHECK(slurp(m.live("site.test") / name) == content);
    };
    check_file("cert.pem", gen.cert_pem, 0644, 0);
    check_file("chain.pem", gen.chain_pem, 0644, 0);
    check_file("fullchain.pem", gen.fullchain_pem(), 0644, 0);
    check_file("privkey.pem", gen.key_pem, 0640, 33);
    check_file("combined.pem", gen.combined_pem(), 0640, 33);
    CHECK(slurp(m.mnt() / "archive" / "site.test" / "1" / "privkey.pem") == gen.key_pem);

    struct stat st{};
    CHECK(::stat((m.mnt() / "live" / "nope.test").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
    CHECK(::stat((m.live("site.test") / "other.pem").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
    CHECK(::stat((m.mnt() / "archive" / "site.test" / "7").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
}

TEST_CASE("fs: every change fails with EROFS")
{
    Mount m;
    m.add("ro.test");
    auto cert = m.live("ro.test") / "cert.pem";
    auto expect_erofs = [](int rc, const char* what) {
        INFO(what);
        CHECK(rc == -1);
        CHECK(errno == EROFS);
    };
    expect_erofs(::open(cert.c_str(), O_WRONLY), "open for writing");
    expect_erofs(::open((m.live("ro.test") / "new.pem").c_str(), O_WRONLY | O_CREAT, 0644), "create");
    expect_erofs(::unlink(cert.c_str()), "unlink");
    expect_erofs(::rename(cert.c_str(), (m.live("ro.test") / "x.pem").c_str()), "rename");
    expect_erofs(::chmod(cert.c_str(), 0600), "chmod");
    expect_erofs(::mkdir((m.mnt() / "live" / "new").c_str(), 0755), "mkdir");
    expect_erofs(::setxattr(cert.c_str(), "user.x", "1", 1, 0), "setxattr");
    expect_erofs(::truncate(cert.c_str(), 0), "truncate");
}

TEST_CASE("fs (1): an open descriptor reads its generation to the end and and fstat reports its size")
{
    Mount m;
    m.add("fd.test");
    auto old_gen = m.store()->current_generation("fd.test").value();
    int fd = ::open((m.live("fd.test") / "fullchain.pem").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    char first[97]; // part before the commit, the rest after the flip
    REQUIRE(::read(fd, first, sizeof first) == static_cast<ssize_t>(sizeof first));
    // The next generation has another size: a CA with a longer name issues it.
    test::TestCa other("/CN=An Issuing Authority With A Longer Name/O=Example Organisation/OU=Certificates");
    auto leaf = test::make_leaf(other, {{"fd.test"}, {}});
    REQUIRE(m.store()->import_generation("fd.test", {leaf.key_pem, leaf.cert_pem, other.cert_pem}).ok());
    m.wait_flip("fd.test", leaf.serial_hex);
    REQUIRE(old_gen.fullchain_pem().size() != leaf.cert_pem.size() + other.cert_pem.size());

    struct stat st{};
    REQUIRE(::fstat(fd, &st) == 0);
    CHECK(st.st_size == static_cast<off_t>(old_gen.fullchain_pem().size()));
    std::string data(first, sizeof first);
    char buf[97];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        data.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    CHECK(data == old_gen.fullchain_pem());
    CHECK(slurp(m.live("fd.test") / "fullchain.pem") == leaf.cert_pem + other.cert_pem);
}

TEST_CASE("fs (2): new opens see a commit one pin window after it and never earlier: a new domain at once")
{
    const Duration window = 2s;
    Mount m(window);
    m.add("flip.test");
    auto old_serial = m.store()->current_generation("flip.test").value().serial_hex;
    auto before = std::chrono::system_clock::now();
    auto new_serial = m.renew("flip.test");
    auto committed = std::chrono::system_clock::now();
    std::string seen;
    TimePoint first_new;
    REQUIRE(wait_until([&] {
        seen = serial_seen_by_new_process(m.live("flip.test") / "cert.pem");
        first_new = std::chrono::system_clock::now();
        REQUIRE((seen == old_serial || seen == new_serial));
        return seen == new_serial;
    }, 15s));
    CHECK(first_new - before >= window);
    CHECK(first_new - committed <= window + 1500ms);

    // A new domain has nothing to flip from: it appears at once.
    auto start = std::chrono::steady_clock::now();
    m.add("new.test");
    CHECK(std::chrono::steady_clock::now() - start < window);

    // A rollback flips like a renewal.
    REQUIRE(m.store()->rollback("flip.test", std::nullopt).ok());
    auto rolled_back = std::chrono::system_clock::now();
    m.wait_flip("flip.test", old_serial);
    CHECK(std::chrono::system_clock::now() - rolled_back >= window - 100ms);

    // A removed domain disappears for new lookups.
    REQUIRE(m.store()->remove_domain("new.test").ok());
    CHECK(wait_until([&] { return !stdfs::exists(m.live("new.test")); }));
    CHECK_FALSE(stdfs::exists(m.mnt() / "archive" / "new.test"));
}

TEST_CASE("fs (3a and 3e): one thread reads key then certificate across the flip: a quiet process gets the new one")
{
    Mount m(2s);
    m.add("pin.test");
    auto new_serial = m.renew("pin.test");
    std::this_thread::sleep_for(1s); // open the key in the middle of the pin window, after the watcher saw the commit
    auto key = slurp(m.live("pin.test") / "privkey.pem").value();
    m.wait_flip("pin.test", new_serial); // (3e): a process with no recent open already gets the new one
    auto cert = slurp(m.live("pin.test") / "cert.pem").value();
    CHECK(serial_of(cert) != new_serial);
    CHECK(pair_matches(key, cert));
}

TEST_CASE("fs (3b): the key opened by one thread and the certificate by another and across the flip")
{
    Mount m(2s);
    m.add("threads.test");
    auto new_serial = m.renew("threads.test");
    std::this_thread::sleep_for(1s);
    std::string key;
    std::thread([&] { key = slurp(m.live("threads.test") / "privkey.pem").value(); }).join();
    m.wait_flip("threads.test", new_serial);
    std::string cert;
    std::thread([&] { cert = slurp(m.live("threads.test") / "cert.pem").value(); }).join();
    CHECK(pair_matches(key, cert));
}

namespace {

struct LoopStats {
    int rounds = 0;
    int mismatches = 0;
    int errors = 0;
    std::set<std::string> serials;
    std::string last; // the serial of the last pair read
};

// Loops over privkey.pem + fullchain.pem (separate opens, separate closes) until stop.
LoopStats read_pairs(const stdfs::path& dir, const std::atomic<bool>& stop)
{
    LoopStats s;
    while (!stop.load()) {
        auto key = slurp(dir / "privkey.pem");
        auto chain = slurp(dir / "fullchain.pem");
        if (!key || !chain) {
            ++s.errors;
            continue;
        }
        ++s.rounds;
        if (!pair_matches(*key, *chain)) {
            ++s.mismatches;
        }
        s.last = serial_of(*chain);
        s.serials.insert(s.last);
    }
    return s;
}

} // namespace

TEST_CASE("fs (3c and 3d): looping readers never mismatch and move to each new generation")
{
    Mount m(500ms);
    m.add("loop.test");
    std::atomic<bool> stop{false};
    LoopStats one;
    LoopStats two_a;
    LoopStats two_b;
    // (3c) a thread on its own; (3d) two threads of the same process, each looping independently.
    std::thread t1([&] { one = read_pairs(m.live("loop.test"), stop); });
    std::thread t2([&] { two_a = read_pairs(m.live("loop.test"), stop); });
    std::thread t3([&] { two_b = read_pairs(m.live("loop.test"), stop); });
    std::vector<std::string> serials;
    for (int i = 0; i < 5; ++i) {
        serials.push_back(m.renew("loop.test"));
        m.wait_flip("loop.test", serials.back());
    }
    // Every reader reaches the last generation: nobody is stuck on an old one.
    bool all_moved = wait_until([&] {
        auto chain = slurp(m.live("loop.test") / "fullchain.pem");
        return chain && serial_of(*chain) == serials.back();
    });
    std::this_thread::sleep_for(600ms); // one more pin window of reading on the newest generation
    stop = true;
    t1.join();
    t2.join();
    t3.join();
    CHECK(all_moved);
    for (const auto* s : {&one, &two_a, &two_b}) {
        CHECK(s->errors == 0);
        CHECK(s->mismatches == 0);
        CHECK(s->rounds > 20);
        CHECK(s->serials.count(serials.back()) == 1);
        CHECK(s->serials.size() >= 4); // moved through the generations, not just the last
    }
}

TEST_CASE("fs (4): stress: several reader processes and renewals as fast as they commit and no mismatch")
{
    // bench/stress.sh runs this same test for minutes by raising these.
    const int k_readers = env_int("CERTFS_STRESS_READERS", 3);
    const int k_renewals = env_int("CERTFS_STRESS_RENEWALS", 200);
    Mount m(200ms);
    m.add("stress.test");
    auto dir = m.live("stress.test");
    std::vector<std::pair<pid_t, int>> readers; // pid, read end of its result pipe
    for (int i = 0; i < k_readers; ++i) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        pid_t pid = ::fork();
        if (pid == 0) {
            ::close(fds[0]);
            // Read until the parent closes our stdin-like pipe? Simpler: until a stop file exists.
            std::atomic<bool> stop{false};
            std::thread watcher([&] {
                while (!stdfs::exists(dir.parent_path().parent_path().parent_path() / "stop")) {
                    std::this_thread::sleep_for(20ms);
                }
                stop = true;
            });
            LoopStats s = read_pairs(dir, stop);
            watcher.join();
            std::string report = std::to_string(s.rounds) + " " + std::to_string(s.mismatches) + " " +
                                 std::to_string(s.errors) + " " + std::to_string(s.serials.size()) + " " + s.last;
            (void)!::write(fds[1], report.data(), report.size());
            _exit(0);
        }
        ::close(fds[1]);
        readers.emplace_back(pid, fds[0]);
    }
    std::string last;
    {
        auto st = m.store();
        renew::Renewer renewer(*st, "stress");
        for (int i = 0; i < k_renewals; ++i) {
            REQUIRE(renewer.renew("stress.test", true).ok());
        }
        last = st->current_generation("stress.test").value().serial_hex;
    }
    m.wait_flip("stress.test", last);
    // Let every reader finish a round on the newest generation before stopping them.
    std::this_thread::sleep_for(500ms);
    test::write_file(m.mnt().parent_path() / "stop", "");
    for (auto [pid, fd] : readers) {
        std::string report;
        char buf[128];
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) {
            report.append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
        int status = 0;
        REQUIRE(::waitpid(pid, &status, 0) == pid);
        int rounds = 0, mismatches = -1, errors = -1, generations = 0;
        std::string final_serial;
        std::istringstream(report) >> rounds >> mismatches >> errors >> generations >> final_serial;
        INFO("reader " << pid << ": " << report);
        CHECK(mismatches == 0);
        CHECK(errors == 0);
        CHECK(rounds > 100);
        CHECK(generations >= 2);
        CHECK(final_serial == last); // every reader reached the newest generation
    }
    CHECK(m.store()->history("stress.test").value().size() == static_cast<std::size_t>(k_renewals + 1));
}

TEST_CASE("fs (5): archive/ lists every generation and never changes: rollback changes only live/")
{
    Mount m(300ms);
    m.add("arch.test");
    m.renew("arch.test");
    auto third = m.renew("arch.test");
    m.wait_flip("arch.test", third);
    auto history = m.store()->history("arch.test").value();
    REQUIRE(wait_until([&] { return stdfs::exists(m.mnt() / "archive" / "arch.test" / "3"); }));
    std::set<std::string> gens;
    for (const auto& e : stdfs::directory_iterator(m.mnt() / "archive" / "arch.test")) {
        gens.insert(e.path().filename());
    }
    CHECK(gens == std::set<std::string>{"1", "2", "3"});
    auto snapshot = [&] {
        std::map<std::string, std::string> files;
        for (const auto& g : history) {
            for (const char* f : {"cert.pem", "privkey.pem", "combined.pem"}) {
                auto path = m.mnt() / "archive" / "arch.test" / std::to_string(g.gen) / f;
                files[path.string()] = slurp(path).value_or("missing");
            }
        }
        return files;
    };
    auto before = snapshot();
    CHECK(before.at((m.mnt() / "archive/arch.test/1/privkey.pem").string()) == history[0].key_pem);
    REQUIRE(m.store()->rollback("arch.test", 1).ok());
    m.wait_flip("arch.test", history[0].serial_hex);
    CHECK(snapshot() == before);
    CHECK(slurp(m.live("arch.test") / "cert.pem") == history[0].cert_pem);
}

TEST_CASE("fs: the kernel enforces the key files' modes for other users (allow_other and default_permissions)")
{
    Mount m(2s, {"-o", "allow_other"});
    m.add("perm.test", 0600, 0);
    pid_t pid = ::fork();
    if (pid == 0) {
        if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
            _exit(10);
        }
        int cert = ::open((m.live("perm.test") / "cert.pem").c_str(), O_RDONLY);
        if (cert < 0) {
            _exit(11);
        }
        int key = ::open((m.live("perm.test") / "privkey.pem").c_str(), O_RDONLY);
        _exit(key < 0 && errno == EACCES ? 0 : 12);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("daemon: SIGTERM unmounts cleanly: a busy mount point and a missing store are refused clearly")
{
    Mount m;
    // A second daemon on the same mount point.
    auto second = test::run({CERTFS_PATH, "--db", m.db().string(), "-f", m.mnt().string()});
    CHECK(second.exit_code == 1);
    CHECK_THAT(second.err, Catch::Contains("is busy: fuse.certfs is already mounted there"));
    // A store that does not exist.
    TempDir other;
    stdfs::create_directory(other / "mnt");
    auto missing = test::run({CERTFS_PATH, "--db", (other / "none.db").string(), "-f", (other / "mnt").string()});
    CHECK(missing.exit_code == 1);
    CHECK_THAT(missing.err, Catch::Contains("does not exist (run 'certfsctl init')"));
    CHECK_FALSE(is_fuse_mount(other / "mnt"));

    REQUIRE(::kill(m.pid(), SIGTERM) == 0);
    int status = -1;
    REQUIRE(m.wait_exit(10s, &status));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_FALSE(is_fuse_mount(m.mnt()));
}

TEST_CASE("daemon: the fstab form (DBPATH MOUNTPOINT -o OPTS) mounts read-only as fuse.certfs")
{
    TempDir dir;
    auto db = (dir / "certfs.db").string();
    REQUIRE(store::Store::open(db, {.create = true, .actor = "test", .clock = nullptr}).ok());
    stdfs::create_directory(dir / "mnt");
    auto mnt = (dir / "mnt").string();
    // What mount.fuse3 3.14 runs for the fstab line "DB MNT fuse.certfs defaults,allow_other 0 0":
    // libmount puts rw first, mount.fuse3 appends dev,suid. The daemon detaches.
    auto r = test::run({CERTFS_PATH, db, mnt, "-o", "rw,allow_other,dev,suid"});
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    bool mounted = wait_until([&] { return is_fuse_mount(mnt); });
    std::string mounts = test::read_file("/proc/mounts");
    test::run({"/usr/bin/fusermount3", "-u", mnt});
    REQUIRE(mounted);
    CHECK_THAT(mounts, Catch::Contains(db + " " + mnt + " fuse.certfs ro,nosuid,nodev,noexec,"));
    CHECK_THAT(mounts, Catch::Contains("default_permissions,allow_other"));
    CHECK(wait_until([&] { return !is_fuse_mount(mnt); }));
}

TEST_CASE("fs: a reader reopening one file in a tight loop moves to the new generation")
{
    Mount m(500ms);
    m.add("tight.test");
    std::atomic<bool> stop{false};
    std::string seen;
    std::mutex seen_mutex;
    std::thread reader([&] {
        while (!stop) {
            auto cert = slurp(m.live("tight.test") / "cert.pem");
            std::lock_guard lock(seen_mutex);
            seen = cert ? serial_of(*cert) : "error";
        }
    });
    auto serial = m.renew("tight.test");
    bool moved = wait_until([&] {
        std::lock_guard lock(seen_mutex);
        return seen == serial;
    });
    stop = true;
    reader.join();
    CHECK(moved);
}

TEST_CASE("daemon: a relative --db still works once the daemon changed to /")
{
    TempDir dir;
    REQUIRE(store::Store::open((dir / "certfs.db").string(), {.create = true, .actor = "t", .clock = nullptr}).ok());
    stdfs::create_directory(dir / "mnt");
    auto cwd = stdfs::current_path();
    stdfs::current_path(dir.path());
    auto r = test::run({CERTFS_PATH, "--db", "certfs.db", "mnt"});
    stdfs::current_path(cwd);
    REQUIRE(r.exit_code == 0);
    REQUIRE(wait_until([&] { return is_fuse_mount(dir / "mnt"); }));
    {
        auto st = store::Store::open((dir / "certfs.db").string(), {.create = false, .actor = "t", .clock = nullptr}).value();
        REQUIRE(st->add_issuer(renew::create_local_ca("ca", {}, std::chrono::system_clock::now()).value()).ok());
        store::DomainConfig c;
        c.name = "rel.test";
        c.issuer = "ca";
        c.dns_names = {"rel.test"};
        REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
    }
    bool seen = wait_until([&] { return slurp(dir / "mnt" / "live" / "rel.test" / "cert.pem").has_value(); });
    test::run({"/usr/bin/fusermount3", "-u", (dir / "mnt").string()});
    CHECK(seen);
    CHECK(wait_until([&] { return !is_fuse_mount(dir / "mnt"); }));
}

TEST_CASE("daemon: renews short-lived certificates by itself while readers match and a hook runs once per batch")
{
    Mount m(200ms);
    const std::string log = (m.db().parent_path() / "hook.log").string();
    {
        auto st = m.store();
        renew::LocalCaConfig short_lived;
        short_lived.validity = 1min;
        REQUIRE(st->add_issuer(renew::create_local_ca("short", short_lived, std::chrono::system_clock::now()).value()).ok());
        // A bundle of two: both rotate in one commit, and the hook both name runs once.
        for (const char* name : {"a.short.test", "b.short.test"}) {
            store::DomainConfig c;
            c.name = name;
            c.issuer = "short";
            c.dns_names = {name};
            c.bundle = "short";
            c.renew_before = 50s; // due 10 s after issue, pulled earlier by up to 5 s
            c.deploy_hooks = {"/bin/sh -c 'echo \"$CERTFS_GENERATION|$CERTFS_NAMES\" >> " + log + "'"};
            REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
        }
    }
    REQUIRE(wait_until([&] { return stdfs::exists(m.live("a.short.test") / "privkey.pem"); }));
    std::atomic<bool> stop{false};
    LoopStats one;
    LoopStats two;
    std::thread t1([&] { one = read_pairs(m.live("a.short.test"), stop); });
    std::thread t2([&] { two = read_pairs(m.live("a.short.test"), stop); });
    auto current = [&](const char* name) { return m.store()->get_domain(name).value().current_gen.value_or(0); };
    // Three renewals, by the daemon alone, and the hook of each has run.
    auto hook_lines = [&] {
        std::ifstream in(log);
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);) {
            lines.push_back(line);
        }
        return lines;
    };
    bool renewed = wait_until([&] { return current("a.short.test") >= 4 && hook_lines().size() >= 3; }, 120s);
    stop = true;
    t1.join();
    t2.join();
    REQUIRE(renewed);
    CHECK(current("b.short.test") == current("a.short.test"));
    for (const auto* s : {&one, &two}) {
        CHECK(s->errors == 0);
        CHECK(s->mismatches == 0);
        CHECK(s->serials.size() >= 3);
    }
    // One line per batch, each naming both domains at one generation.
    auto lines = hook_lines();
    std::set<std::string> batches(lines.begin(), lines.end());
    CHECK(batches.size() == lines.size());
    for (const auto& line : lines) {
        INFO(line);
        CHECK_THAT(line, Catch::Contains("a.short.test") && Catch::Contains("b.short.test"));
    }
    auto a = m.store()->get_domain("a.short.test").value();
    CHECK(a.hook_error.empty());
    CHECK(a.last_error.empty());
}
