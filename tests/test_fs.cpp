// The filesystem on a real FUSE mount: the daemon as users run it, plain POSIX calls.
// Each test mounts in its own temp dir, waits on conditions with timeouts, and always
// unmounts and stops the daemon (by pid).
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "core/pki.hpp"
#include "fs/files.hpp"
#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "store/mount.hpp"
#include "store/sqlite.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pairs.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using certfs::test::TempDir;
using namespace std::chrono_literals;
namespace stdfs = std::filesystem;

namespace {

using certfs::test::is_fuse_mount;
using certfs::test::pair_matches;
using certfs::test::serial_of;
using certfs::test::serial_seen_by_new_process;
using certfs::test::slurp;
using certfs::test::wait_until;
using Mount = certfs::test::CaMount;

} // namespace

TEST_CASE("fs: the tree shows every file with its size, mode, owner and time")
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
        struct stat st {};
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

    struct stat st {};
    CHECK(::stat((m.mnt() / "live" / "nope.test").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
    CHECK(::stat((m.live("site.test") / "other.pem").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
    CHECK(::stat((m.mnt() / "archive" / "site.test" / "7").c_str(), &st) == -1);
    CHECK(errno == ENOENT);
}

// The one table of the five files (fs/files.hpp) is what a generation's directory lists, in its
// order, with the content and the owner each entry of the table says.
TEST_CASE("fs: a generation's directory lists the files of the table, in its order")
{
    Mount m;
    m.add("table.test", 0640, 33);
    auto gen = m.store()->current_generation("table.test").value();
    auto listing = [](const stdfs::path& path) {
        std::vector<std::string> names;
        DIR* dir = ::opendir(path.c_str());
        REQUIRE(dir != nullptr);
        while (const dirent* e = ::readdir(dir)) {
            if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") {
                names.emplace_back(e->d_name);
            }
        }
        ::closedir(dir);
        return names;
    };
    std::vector<std::string> table;
    for (const auto& f : fs::k_files) {
        table.emplace_back(f.name);
    }
    CHECK(table.size() == fs::k_file_count);
    CHECK(listing(m.live("table.test")) == table);
    CHECK(listing(m.mnt() / "archive" / "table.test" / "1") == table);
    CHECK(std::string(fs::k_files[fs::k_privkey_index].name) == "privkey.pem");
    CHECK(fs::file_index("privkey.pem") == fs::k_privkey_index);
    CHECK_FALSE(fs::file_index("other.pem").has_value());
    for (std::size_t i = 0; i < fs::k_file_count; ++i) {
        const fs::FileSpec& f = fs::k_files[i];
        INFO(f.name);
        CHECK(fs::file_index(f.name) == i);
        CHECK(fs::file_index(f.kind) == i);
        struct stat st {};
        REQUIRE(::stat((m.live("table.test") / f.name).c_str(), &st) == 0);
        CHECK((st.st_mode & 07777) == (f.is_private ? 0640u : 0644u));
        CHECK(st.st_uid == (f.is_private ? 33u : 0u));
        CHECK(slurp(m.live("table.test") / f.name) == fs::file_content(f.kind, gen));
    }
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

TEST_CASE("fs (1): an open descriptor reads its generation to the end, and fstat reports its size")
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

    struct stat st {};
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
    REQUIRE(wait_until(
        [&] {
            seen = serial_seen_by_new_process(m.live("flip.test") / "cert.pem");
            first_new = std::chrono::system_clock::now();
            REQUIRE((seen == old_serial || seen == new_serial));
            return seen == new_serial;
        },
        15s));
    CHECK(first_new - before >= window);
    // The README: a window plus up to 0.2 s (the poll and the second drop); the rest is this loop.
    CHECK(first_new - committed <= window + 500ms);

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
    CHECK(serial_of(cert) != new_serial); // the process's pin, not what a new process gets
    CHECK(pair_matches(key, cert));
}

namespace {

struct LoopStats {
    int rounds = 0;
    int mismatches = 0;
    int errors = 0;
    std::set<std::string> serials;
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
        s.serials.insert(serial_of(*chain));
    }
    return s;
}

} // namespace

TEST_CASE("fs (3c and 3d): looping threads of one process keep their generation together and move when it pauses")
{
    const Duration window = 500ms;
    Mount m(window);
    m.add("loop.test");
    const std::string first = m.store()->current_generation("loop.test").value().serial_hex;
    std::atomic<bool> stop{false};
    LoopStats one;
    LoopStats two_a;
    LoopStats two_b;
    // (3c) a thread on its own; (3d) two threads of the same process, each looping independently.
    std::thread t1([&] { one = read_pairs(m.live("loop.test"), stop); });
    std::thread t2([&] { two_a = read_pairs(m.live("loop.test"), stop); });
    std::thread t3([&] { two_b = read_pairs(m.live("loop.test"), stop); });
    std::string last;
    for (int i = 0; i < 5; ++i) {
        last = m.renew("loop.test");
        m.wait_flip("loop.test", last); // a new process gets each one at once
    }
    stop = true;
    t1.join();
    t2.join();
    t3.join();
    for (const auto* s : {&one, &two_a, &two_b}) {
        CHECK(s->errors == 0);
        CHECK(s->mismatches == 0);
        CHECK(s->rounds > 20);
        // The process never paused: every thread of it kept the generation it had.
        CHECK(s->serials == std::set<std::string>{first});
    }
    // Quiet for longer than a window, the process gets the newest.
    std::this_thread::sleep_for(window + 100ms);
    auto key = slurp(m.live("loop.test") / "privkey.pem");
    auto chain = slurp(m.live("loop.test") / "fullchain.pem");
    REQUIRE((key && chain));
    CHECK(pair_matches(*key, *chain));
    CHECK(serial_of(*chain) == last);
}

TEST_CASE("fs (4): stress: several reader processes and renewals as fast as they commit and no mismatch")
{
    // bench/stress.sh runs this same test for minutes by raising these.
    const int k_readers = static_cast<int>(test::env_number("CERTFS_STRESS_READERS", 3));
    const int k_renewals = static_cast<int>(test::env_number("CERTFS_STRESS_RENEWALS", 200));
    const Duration window = 200ms;
    Mount m(window);
    m.add("stress.test");
    // Each parses every pair and pauses for 2.5 windows every 2, so that it moves along.
    std::vector<std::unique_ptr<test::PairReader>> readers;
    for (int i = 0; i < k_readers; ++i) {
        readers.push_back(std::make_unique<test::PairReader>(
            m.live("stress.test"), std::vector<std::string>{"--window-ms", "200", "--parse-every", "--pause-ms", "500",
                                                            "--pause-every-ms", "400", "--name", "stress"}));
        REQUIRE(readers.back()->wait_ready(30s));
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
    for (auto& r : readers) {
        auto c = r->stop();
        INFO("reader " << r->pid());
        CHECK(c["mismatches"] == 0);
        CHECK(c["errors"] == 0);
        CHECK(c["rounds"] > 100);
        CHECK(c["generations"] >= 2);
        CHECK(c.serials["final"] == last); // every reader reached the newest generation
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

TEST_CASE("fs: a domain added after another was removed shows its own files, though the store reused its id")
{
    Mount m(200ms);
    m.add("first.test");
    m.add("removed.test");
    REQUIRE(slurp(m.live("removed.test") / "cert.pem"));
    REQUIRE(slurp(m.mnt() / "archive" / "removed.test" / "1" / "cert.pem"));
    const std::int64_t removed_id = m.store()->get_domain("removed.test").value().id;
    REQUIRE(m.store()->remove_domain("removed.test").ok());
    REQUIRE(wait_until([&] { return !stdfs::exists(m.live("removed.test")); }));
    m.add("added.test");
    // SQLite gives the new row the id of the last one removed: the mount must not take it for
    // the removed domain.
    CHECK(m.store()->get_domain("added.test").value().id == removed_id);
    const auto g = m.store()->current_generation("added.test").value();
    CHECK(slurp(m.live("added.test") / "cert.pem") == g.cert_pem);
    CHECK(slurp(m.live("added.test") / "privkey.pem") == g.key_pem);
    CHECK(slurp(m.mnt() / "archive" / "added.test" / "1" / "cert.pem") == g.cert_pem);
}

TEST_CASE("fs: hostile names reach nothing through the mount, even when the store holds them")
{
    Mount m(200ms);
    m.add("www.example.com");
    for (const char* name : {"upper.example.com", "dots.example.com", "escape.example.com", "homograph.example.com",
                             "legacy.example.com"}) {
        m.add(name);
    }
    auto names_listed = [&] {
        std::set<std::string> names;
        for (const auto& e : stdfs::directory_iterator(m.mnt() / "live")) {
            names.insert(e.path().filename().string());
        }
        return names;
    };
    // Rows that certfsctl would refuse, as a hand-written UPDATE or an older version leaves them.
    const std::vector<std::pair<std::string, std::string>> renamed = {
        {"upper.example.com", "WWW.example.com"},
        {"dots.example.com", ".."},
        {"escape.example.com", "www.example.com\x1b[2J"},
        {"homograph.example.com", "www.\xd0\xb5xample.com"}, // a Cyrillic 'e'
    };
    // A name older versions accepted (a trailing dot) is still served.
    REQUIRE(m.store()
                ->db_for_testing()
                .exec("UPDATE domains SET name = 'legacy.example.com.' WHERE name = 'legacy.example.com'")
                .ok());
    for (const auto& [from, to] : renamed) {
        auto st = m.store();
        REQUIRE(st->db_for_testing().exec("UPDATE domains SET name = '" + to + "' WHERE name = '" + from + "'").ok());
    }
    REQUIRE(wait_until([&] {
        return names_listed() == std::set<std::string>{"www.example.com", "legacy.example.com."};
    }));
    for (const auto& [from, to] : renamed) {
        INFO(from);
        struct stat st {};
        CHECK(::stat((m.mnt() / "live" / to / "cert.pem").c_str(), &st) == -1);
        CHECK(::stat((m.mnt() / "archive" / to).c_str(), &st) == (to == ".." ? 0 : -1)); // ".." is the root
        CHECK_FALSE(stdfs::exists(m.mnt() / "live" / from));
    }
    // Each is logged once, escaped.
    REQUIRE(wait_until([&] { return m.log().find("www.\\xd0\\xb5xample.com") != std::string::npos; }));
    CHECK(m.log().find("\x1b") == std::string::npos);
    const std::string log = m.log();
    std::size_t said = 0;
    for (std::size_t at = log.find("not serving a domain of the store"); at != std::string::npos;
         at = log.find("not serving a domain of the store", at + 1)) {
        ++said;
    }
    CHECK(said == renamed.size());

    // Names no domain has, as a reader might try them: ENOENT, never a domain's files.
    for (const std::string& name :
         {std::string("WWW.EXAMPLE.COM"), std::string("www.example.com."), std::string("www.\xd0\xb5xample.com"),
          std::string(255, 'a'), std::string(4000, 'a')}) {
        INFO(name.substr(0, 40));
        struct stat st {};
        errno = 0;
        CHECK(::stat((m.mnt() / "live" / name).c_str(), &st) == -1);
        CHECK((errno == ENOENT || errno == ENAMETOOLONG));
    }
    // The valid domain is untouched.
    CHECK(slurp(m.live("www.example.com") / "cert.pem") ==
          m.store()->current_generation("www.example.com").value().cert_pem);
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

namespace {

// certfsctl --db <m's store> args, which must succeed: its output.
std::string ctl_ok(const Mount& m, const std::vector<std::string>& args)
{
    std::vector<std::string> argv = {"--db", m.db().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = test::run_certfsctl(argv);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r.out;
}

// Users and a group made for one test with useradd and groupadd, deleted by its destructor.
class TestUsers {
public:
    TestUsers()
    {
        teardown(); // what a killed earlier run left
        require_ok({"/usr/sbin/groupadd", "--system", k_group});
        for (const char* user : {k_outsider, k_member}) {
            require_ok({"/usr/sbin/useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user});
        }
        require_ok({"/usr/sbin/usermod", "--append", "--groups", k_group, k_member});
    }
    ~TestUsers() { teardown(); }
    TestUsers(const TestUsers&) = delete;
    TestUsers& operator=(const TestUsers&) = delete;

    // Reads `path` as `user` with cat, through runuser: its output, or nothing on a failure, with
    // cat's error in *err.
    static std::optional<std::string> read_as(const char* user, const stdfs::path& path, std::string* err = nullptr)
    {
        auto r = test::run({"/usr/sbin/runuser", "-u", user, "--", "/bin/cat", path.string()});
        if (err != nullptr) {
            *err = r.err;
        }
        return r.exit_code == 0 ? std::optional(r.out) : std::nullopt;
    }

    static constexpr const char* k_group = "certfs-t-keys";
    static constexpr const char* k_outsider = "certfs-t-out";
    static constexpr const char* k_member = "certfs-t-in";

private:
    static void require_ok(const std::vector<std::string>& argv)
    {
        auto r = test::run(argv);
        INFO(argv[0] << ": " << r.err);
        REQUIRE(r.exit_code == 0);
    }
    static void teardown()
    {
        for (const char* user : {k_outsider, k_member}) {
            (void)test::run({"/usr/sbin/userdel", "--force", user});
        }
        (void)test::run({"/usr/sbin/groupdel", k_group});
    }
};

} // namespace

TEST_CASE("access: real users through allow_other: only the key group reads the key, and certfsctl set applies at once")
{
    TestUsers users;
    Mount m(200ms, {"-o", "allow_other"});
    m.add("acl.test", 0600, 0);
    const auto live = m.live("acl.test");
    auto ctl = [&](const std::vector<std::string>& args) { return ctl_ok(m, args); };
    CHECK_THAT(ctl({"set", "acl.test", "--group", TestUsers::k_group, "--mode", "0640"}),
               Catch::Contains("acl.test: key files are root:certfs-t-keys 0640 for new opens"));
    const auto gen = m.store()->current_generation("acl.test").value();
    auto key_readable = [&](const char* user) { return TestUsers::read_as(user, live / "privkey.pem") == gen.key_pem; };
    REQUIRE(wait_until([&] { return key_readable(TestUsers::k_member); }));

    // The outsider: the certificates, never the key.
    std::string err;
    CHECK_FALSE(TestUsers::read_as(TestUsers::k_outsider, live / "privkey.pem", &err));
    CHECK_THAT(err, Catch::Contains("Permission denied"));
    CHECK_FALSE(TestUsers::read_as(TestUsers::k_outsider, live / "combined.pem", &err));
    CHECK_THAT(err, Catch::Contains("Permission denied"));
    CHECK(TestUsers::read_as(TestUsers::k_outsider, live / "cert.pem") == gen.cert_pem);
    CHECK(TestUsers::read_as(TestUsers::k_outsider, live / "fullchain.pem") == gen.cert_pem + gen.chain_pem);
    // Without hide_archive, the archived certificates are public too.
    CHECK(TestUsers::read_as(TestUsers::k_outsider, m.mnt() / "archive" / "acl.test" / "1" / "cert.pem") ==
          gen.cert_pem);
    CHECK_FALSE(TestUsers::read_as(TestUsers::k_outsider, m.mnt() / "archive" / "acl.test" / "1" / "privkey.pem"));
    // The member: the key and the combined file, in live/ and in archive/.
    CHECK(key_readable(TestUsers::k_member));
    CHECK(TestUsers::read_as(TestUsers::k_member, live / "combined.pem"));
    CHECK(TestUsers::read_as(TestUsers::k_member, m.mnt() / "archive" / "acl.test" / "1" / "privkey.pem") ==
          gen.key_pem);

    // A descriptor the member opened before the group is taken away keeps reading; new opens,
    // through the kernel's cached entries and attributes, are refused without a remount.
    const struct passwd* pw = ::getpwnam(TestUsers::k_member);
    const struct group* gr = ::getgrnam(TestUsers::k_group);
    REQUIRE(pw != nullptr);
    REQUIRE(gr != nullptr);
    const uid_t member_uid = pw->pw_uid;
    const gid_t member_gid = pw->pw_gid;
    const gid_t key_gid = gr->gr_gid;
    int ready[2];
    int go[2];
    REQUIRE(::pipe(ready) == 0);
    REQUIRE(::pipe(go) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    // Whatever fails below, the child does not stay blocked holding a key descriptor.
    struct ChildGuard {
        pid_t pid;
        int* fds;
        ~ChildGuard()
        {
            for (int i = 0; i < 4; ++i) {
                if (fds[i] >= 0) {
                    ::close(fds[i]);
                }
            }
            int ignored = 0;
            if (pid > 0 && ::waitpid(pid, &ignored, WNOHANG) == 0) {
                ::kill(pid, SIGKILL);
                ::waitpid(pid, &ignored, 0);
            }
        }
    };
    if (child == 0) {
        gid_t groups[] = {key_gid};
        if (::setgroups(1, groups) != 0 || ::setgid(member_gid) != 0 || ::setuid(member_uid) != 0) {
            _exit(10);
        }
        int fd = ::open((live / "privkey.pem").c_str(), O_RDONLY);
        char byte = 'k';
        if (fd < 0 || ::write(ready[1], &byte, 1) != 1 || ::read(go[0], &byte, 1) != 1) {
            _exit(11);
        }
        std::string got(gen.key_pem.size() + 1, '\0');
        ssize_t n = ::pread(fd, got.data(), got.size(), 0);
        if (n != static_cast<ssize_t>(gen.key_pem.size()) || got.compare(0, gen.key_pem.size(), gen.key_pem) != 0) {
            _exit(12);
        }
        int again = ::open((live / "privkey.pem").c_str(), O_RDONLY);
        _exit(again < 0 && errno == EACCES ? 0 : 13);
    }
    ::close(ready[1]);
    ::close(go[0]);
    int open_ends[4] = {ready[0], go[1], -1, -1};
    ChildGuard guard{child, open_ends};
    char byte = 0;
    CHECK(::read(ready[0], &byte, 1) == 1);
    ctl({"set", "acl.test", "--group", "root", "--mode", "0600"});
    CHECK(wait_until([&] { return !TestUsers::read_as(TestUsers::k_member, live / "privkey.pem"); }));
    CHECK(::write(go[1], &byte, 1) == 1);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    guard.pid = -1;
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0); // 12: the held descriptor failed; 13: the new open was not refused
    CHECK_FALSE(TestUsers::read_as(TestUsers::k_member, m.mnt() / "archive" / "acl.test" / "1" / "privkey.pem"));
    CHECK(TestUsers::read_as(TestUsers::k_member, live / "cert.pem") == gen.cert_pem);

    // Made the owner: the member reads it again; the outsider still does not.
    ctl({"set", "acl.test", "--owner", TestUsers::k_member, "--mode", "0400"});
    CHECK(wait_until([&] { return key_readable(TestUsers::k_member); }));
    CHECK_FALSE(TestUsers::read_as(TestUsers::k_outsider, live / "privkey.pem"));
    struct stat st {};
    REQUIRE(::stat((live / "privkey.pem").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0400);
    CHECK(st.st_uid == ::getpwnam(TestUsers::k_member)->pw_uid);
    CHECK(st.st_gid == 0);
}

TEST_CASE("access: hide_archive: only who may read a domain's key enters its archive, and certfsctl set applies at "
          "once")
{
    TestUsers users;
    Mount m(200ms, {"-o", "allow_other,hide_archive"});
    CHECK_THAT(m.log(), Catch::Contains("archive/ hidden from who may not read its keys")); // README says so
    m.add("hidden.test", 0600, 0);
    auto ctl = [&](const std::vector<std::string>& args) { ctl_ok(m, args); };
    ctl({"set", "hidden.test", "--group", TestUsers::k_group, "--mode", "0640"});
    const auto gen = m.store()->current_generation("hidden.test").value();
    const auto archived = m.mnt() / "archive" / "hidden.test";
    const auto gen_dir = archived / "1";
    REQUIRE(
        wait_until([&] { return TestUsers::read_as(TestUsers::k_member, gen_dir / "privkey.pem") == gen.key_pem; }));
    auto mode_of = [](const stdfs::path& p) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        return st;
    };
    const gid_t key_gid = ::getgrnam(TestUsers::k_group)->gr_gid;
    for (const auto& dir : {archived, gen_dir}) {
        INFO(dir);
        struct stat st = mode_of(dir);
        CHECK((st.st_mode & 07777) == 0550);
        CHECK(st.st_uid == 0);
        CHECK(st.st_gid == key_gid);
    }
    auto as = [](const char* user, const std::vector<std::string>& argv) {
        std::vector<std::string> full = {"/usr/sbin/runuser", "-u", user, "--"};
        full.insert(full.end(), argv.begin(), argv.end());
        return test::run(full);
    };

    // The outsider: the names (as in live/) and the live certificates, nothing below archive/<name>.
    CHECK(as(TestUsers::k_outsider, {"/bin/ls", (m.mnt() / "archive").string()}).out == "hidden.test\n");
    for (const auto& denied : {archived, gen_dir, gen_dir / "cert.pem", gen_dir / "privkey.pem"}) {
        INFO(denied);
        auto r = as(TestUsers::k_outsider, {"/bin/cat", denied.string()});
        CHECK(r.exit_code == 1);
        CHECK_THAT(r.err, Catch::Contains("Permission denied"));
        r = as(TestUsers::k_outsider, {"/bin/ls", denied.string()});
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, Catch::Contains("Permission denied"));
    }
    CHECK(TestUsers::read_as(TestUsers::k_outsider, m.live("hidden.test") / "cert.pem") == gen.cert_pem);
    // The member: every generation and its listing.
    CHECK(TestUsers::read_as(TestUsers::k_member, gen_dir / "cert.pem") == gen.cert_pem);
    CHECK(as(TestUsers::k_member, {"/bin/ls", archived.string()}).out == "1\n");

    // The group taken away: the member's next walk into archive/ is refused, without a remount.
    ctl({"set", "hidden.test", "--group", "root", "--mode", "0600"});
    CHECK(wait_until([&] { return !TestUsers::read_as(TestUsers::k_member, gen_dir / "cert.pem"); }));
    CHECK((mode_of(archived).st_mode & 07777) == 0500);
    CHECK(TestUsers::read_as(TestUsers::k_member, m.live("hidden.test") / "cert.pem") == gen.cert_pem);
    // The member made the owner of a 0400 key: its archive is theirs to enter (0500).
    ctl({"set", "hidden.test", "--owner", TestUsers::k_member, "--mode", "0400"});
    CHECK(wait_until([&] { return TestUsers::read_as(TestUsers::k_member, gen_dir / "privkey.pem") == gen.key_pem; }));
    struct stat st = mode_of(archived);
    CHECK((st.st_mode & 07777) == 0500);
    CHECK(st.st_uid == ::getpwnam(TestUsers::k_member)->pw_uid);
    CHECK_FALSE(TestUsers::read_as(TestUsers::k_outsider, gen_dir / "cert.pem"));
    // root, as always, enters.
    CHECK(slurp(gen_dir / "cert.pem") == gen.cert_pem);
}

TEST_CASE("daemon: a store sealed by a store key: no key it serves is in the store's files, the mount needs the "
          "key and list does not, hooks are given the key's file, and rekey-store moves the store to a new key")
{
    test::Ctl ctl;
    auto key_file = [&](const std::string& name) {
        const std::string path = ctl.path(name).string();
        test::write_file(path, pki::random_bytes(32).value());
        ::chmod(path.c_str(), 0600);
        return path;
    };
    const std::string key = key_file("store.key");
    auto keyed = [&](std::vector<std::string> args) {
        args.insert(args.begin(), {"--store-key", key});
        return args;
    };
    CHECK_THAT(ctl.ok(keyed({"init"})).out, Catch::Contains("private keys sealed by store key id"));
    ctl.ok(keyed({"issuer", "add", "local", "ca"}));
    // A deploy hook that runs certfsctl on the store, as a hook that copies the key to a host
    // without FUSE would: it is given the key that the renewal was given.
    const std::string hook = ctl.path("hook.sh").string();
    const std::string dir = ctl.path("").string();
    // Done when hook.gen.NAME names the generation it exported (written last).
    test::write_file(hook, "#!/bin/sh\necho \"$CERTFS_STORE_KEY\" > " + dir + "hook.key.$CERTFS_NAMES\n" +
                               test::certfsctl_path() + " export \"$CERTFS_NAMES\" " + dir +
                               "hook-export.$CERTFS_NAMES || exit 1\necho \"$CERTFS_GENERATION\" > " + dir +
                               "hook.gen.$CERTFS_NAMES\n");
    ::chmod(hook.c_str(), 0700);
    ctl.ok(keyed({"add", "sealed.test", "--issuer", "ca", "--deploy-hook", hook}));

    // Without the key: the listing and the certificates, not the key.
    CHECK_THAT(ctl.ok({"list"}).out, Catch::Contains("sealed.test"));
    CHECK_THAT(ctl.ok({"history", "sealed.test"}).out, Catch::Contains("issued"));
    const std::string how = "the store's private keys are sealed by a store key (id ";
    test::expect_failure(ctl({"export", "sealed.test", ctl.path("out").string()}), 1, how);
    test::RunResult unchecked = ctl({"check"});
    CHECK(unchecked.exit_code == 1);
    CHECK(unchecked.out.rfind("private keys not checked: " + how, 0) == 0);
    CHECK(std::count(unchecked.out.begin(), unchecked.out.end(), '\n') == 1);
    CHECK_THAT(ctl.ok({"show", "sealed.test"}).out, Catch::Contains("sealed.test"));
    stdfs::create_directory(ctl.path("mnt"));
    auto refused = test::run({CERTFS_PATH, "--db", ctl.db(), "-f", ctl.path("mnt").string()});
    CHECK(refused.exit_code == 1);
    CHECK_THAT(refused.err, Catch::StartsWith("certfs: cannot mount " + ctl.db()) && Catch::Contains(how) &&
                                Catch::Contains("--store-key FILE, CERTFS_STORE_KEY=FILE, or the systemd credential "
                                                "certfs-store-key"));
    CHECK(std::count(refused.err.begin(), refused.err.end(), '\n') == 1);
    CHECK_FALSE(is_fuse_mount(ctl.path("mnt")));

    std::string served;
    {
        test::Daemon daemon(ctl.db(), ctl.path("mnt"), ctl.path("certfs.log"), 200ms, {"--store-key", key});
        const auto live = daemon.live("sealed.test");
        served = slurp(live / "privkey.pem").value();
        CHECK(pair_matches(served, slurp(live / "cert.pem").value()));
        // A renewal through certfsctl, given the key in the environment: sealed too.
        const std::string before = serial_of(slurp(live / "cert.pem").value());
        auto renewed =
            test::run_certfsctl({"--db", ctl.db(), "renew", "sealed.test", "--force"}, {"CERTFS_STORE_KEY=" + key});
        INFO(renewed.err);
        REQUIRE(renewed.exit_code == 0);
        REQUIRE(wait_until([&] { return serial_seen_by_new_process(live / "cert.pem") != before; }));
        const std::string renewed_key = slurp(live / "privkey.pem").value();
        CHECK(renewed_key != served);
        served = renewed_key;
        CHECK(slurp(ctl.path("hook.key.sealed.test")) == key + "\n");
        CHECK(ctl.show("sealed.test")["hook_error"].is_null());
        CHECK(slurp(ctl.path("hook-export.sealed.test") / "privkey.pem") == served);
        // The same for a renewal the daemon makes by itself (20-second leaves, renewed after 10 s).
        ctl.ok(keyed({"issuer", "add", "local", "quick", "--validity", "20s"}));
        ctl.ok(keyed({"add", "quick.test", "--issuer", "quick", "--deploy-hook", hook}));
        REQUIRE(wait_until([&] { return !test::file_or_empty(ctl.path("hook.gen.quick.test")).empty(); }, 30s));
        const int exported = std::stoi(test::file_or_empty(ctl.path("hook.gen.quick.test")));
        CHECK(exported >= 2); // a renewal by the daemon
        CHECK(slurp(ctl.path("hook.key.quick.test")) == key + "\n");
        CHECK(slurp(ctl.path("hook-export.quick.test") / "privkey.pem") ==
              slurp(daemon.mnt() / "archive" / "quick.test" / std::to_string(exported) / "privkey.pem"));
        ctl.ok({"remove", "quick.test"});
        ctl.ok({"issuer", "remove", "quick"});
        for (const auto& k : {served, slurp(daemon.mnt() / "archive" / "sealed.test" / "1" / "privkey.pem").value()}) {
            INFO("in the store's files: " << test::key_in_store_files(ctl.db(), k));
            CHECK(test::key_in_store_files(ctl.db(), k).empty());
        }
        CHECK(test::store_files(ctl.db()).find("PRIVATE KEY") == std::string::npos);
        // rekey-store while the daemon serves: refused, and the store still opens with its key.
        auto during = test::run_certfsctl({"--db", ctl.db(), "rekey-store", "--new-key", key_file("early.key")},
                                          {"CERTFS_STORE_KEY=" + key});
        test::expect_failure(during, 1, "rekey-store: certfs is serving this store");
        ctl.ok(keyed({"export", "sealed.test", ctl.path("during").string()}));
        CHECK(slurp(daemon.mnt() / "archive" / "sealed.test" / "2" / "privkey.pem") == served);
    }

    // rekey-store to a new key (the current one from the environment): the old key no longer
    // opens the store, the new one serves the same key.
    const std::string next = key_file("next.key");
    auto rekeyed =
        test::run_certfsctl({"--db", ctl.db(), "rekey-store", "--new-key", next}, {"CERTFS_STORE_KEY=" + key});
    INFO(rekeyed.err);
    CHECK(rekeyed.exit_code == 0);
    CHECK_THAT(rekeyed.out, Catch::StartsWith("rekey-store: 2 generation keys, 0 pending keys and 1 issuer secrets "
                                              "sealed by store key id "));
    test::expect_failure(ctl(keyed({"list"})), 1, "is not the key this store is sealed by");
    test::expect_failure(ctl({"rekey-store"}), 2, "--new-key or --clear");
    {
        // A daemon started while a rekey runs is refused.
        auto rekeying = store::StoreUse::take(ctl.db(), store::StoreUse::Mode::rekey);
        REQUIRE(rekeying.ok());
        auto r = test::run({CERTFS_PATH, "--db", ctl.db(), "--store-key", next, "-f", ctl.path("mnt").string()});
        CHECK(r.exit_code == 1);
        CHECK(r.err == "certfs: certfsctl rekey-store is resealing the store's keys: start certfs once it is done\n");
        CHECK_FALSE(is_fuse_mount(ctl.path("mnt")));
    }
    {
        test::Daemon daemon(ctl.db(), ctl.path("mnt"), ctl.path("certfs.log"), 200ms, {"--store-key", next});
        CHECK(slurp(daemon.live("sealed.test") / "privkey.pem").value() == served);
    }
    CHECK(test::key_in_store_files(ctl.db(), served).empty());

    // Back to the clear, then sealed again while the environment already names the new key.
    CHECK_THAT(ctl.ok({"--store-key", next, "rekey-store", "--clear"}).out,
               Catch::Contains("issuer secrets in the clear"));
    CHECK_FALSE(test::key_in_store_files(ctl.db(), served).empty());
    auto again =
        test::run_certfsctl({"--db", ctl.db(), "rekey-store", "--new-key", next}, {"CERTFS_STORE_KEY=" + next});
    INFO(again.err);
    CHECK(again.exit_code == 0);
    CHECK(test::key_in_store_files(ctl.db(), served).empty());
}

TEST_CASE("certfs: --version and --help print to stdout and exit 0, a usage error exits 2 with one line")
{
    auto version = test::run({CERTFS_PATH, "--version"});
    CHECK(version.exit_code == 0);
    CHECK(version.out == "certfs " CERTFS_VERSION "\n");
    CHECK(version.err.empty());
    auto help = test::run({CERTFS_PATH, "--help"});
    CHECK(help.exit_code == 0);
    CHECK_THAT(help.out,
               Catch::Contains("--store-key") && Catch::Contains("--pin-window") && Catch::Contains("--version"));
    auto usage = test::run({CERTFS_PATH, "--frob", "/mnt"});
    CHECK(usage.exit_code == 2);
    CHECK(usage.err == "certfs: The following argument was not expected: --frob (see certfs --help)\n");
    auto none = test::run({CERTFS_PATH});
    CHECK(none.exit_code == 2);
    CHECK_THAT(none.err, Catch::StartsWith("certfs: ") && Catch::Contains("MOUNTPOINT"));
    CHECK(std::count(none.err.begin(), none.err.end(), '\n') == 1);
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
    // A store that other users can read.
    {
        test::Ctl ctl;
        ctl.init_with_ca();
        ::chmod(ctl.db().c_str(), 0644);
        auto open_store = test::run({CERTFS_PATH, "--db", ctl.db(), "-f", (other / "mnt").string()});
        CHECK(open_store.exit_code == 1);
        CHECK_THAT(open_store.err, Catch::StartsWith("certfs: refusing store " + ctl.db() + ": its mode 0644"));
        CHECK(std::count(open_store.err.begin(), open_store.err.end(), '\n') == 1);
        CHECK_FALSE(is_fuse_mount(other / "mnt"));
    }
    // A bound on holds that would overflow the clock, or none at all.
    for (const char* hold : {"20y", "0s", "soon"}) {
        auto bad =
            test::run({CERTFS_PATH, "--db", m.db().string(), "--max-hold", hold, "-f", (other / "mnt").string()});
        INFO(hold);
        CHECK(bad.exit_code == 2);
        CHECK_THAT(bad.err, Catch::StartsWith("certfs: --max-hold"));
    }
    CHECK_FALSE(is_fuse_mount(other / "mnt"));

    REQUIRE(::kill(m.pid(), SIGTERM) == 0);
    int status = -1;
    REQUIRE(m.daemon().wait_exit(10s, &status));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_FALSE(is_fuse_mount(m.mnt()));
}

TEST_CASE("daemon: started on the mount point of a SIGKILLed daemon, it takes the dead mount away and serves")
{
    Mount m(200ms);
    m.add("dead.test");
    const auto gen = m.store()->current_generation("dead.test").value();
    // A server's descriptors across the crash: one read before, one never read.
    int read_before = ::open((m.live("dead.test") / "cert.pem").c_str(), O_RDONLY);
    int never_read = ::open((m.live("dead.test") / "privkey.pem").c_str(), O_RDONLY);
    REQUIRE(read_before >= 0);
    REQUIRE(never_read >= 0);
    std::string buf(gen.cert_pem.size() + gen.key_pem.size() + 1, '\0');
    REQUIRE(::pread(read_before, buf.data(), buf.size(), 0) == static_cast<ssize_t>(gen.cert_pem.size()));

    REQUIRE(::kill(m.pid(), SIGKILL) == 0);
    REQUIRE(m.daemon().wait_exit(10s));
    struct statfs sf {};
    errno = 0;
    CHECK(::statfs(m.mnt().c_str(), &sf) == -1);
    CHECK(errno == ENOTCONN);

    // No admin: the next daemon on the same mount point recovers it.
    test::Daemon next(m.db(), m.mnt(), m.dir() / "next.log", 200ms);
    CHECK(slurp(m.live("dead.test") / "privkey.pem") == gen.key_pem);
    CHECK(slurp(m.live("dead.test") / "cert.pem") == gen.cert_pem);
    CHECK_THAT(next.log(), Catch::Contains("was left by a certfs daemon that died: unmounted it"));
    std::ifstream mounts("/proc/self/mountinfo");
    int on_point = 0;
    for (std::string line; std::getline(mounts, line);) {
        on_point += line.find(" " + m.mnt().string() + " ") != std::string::npos ? 1 : 0;
    }
    CHECK(on_point == 1); // the dead one is gone, not stacked under the new one

    // What was open across the crash never reads other bytes: what the kernel still caches of
    // the generation it opened, or ENOTCONN; opening again reaches the new mount.
    errno = 0;
    const ssize_t cached = ::pread(read_before, buf.data(), buf.size(), 0);
    if (cached >= 0) {
        CHECK(buf.substr(0, static_cast<std::size_t>(cached)) == gen.cert_pem);
    } else {
        CHECK(errno == ENOTCONN);
    }
    errno = 0;
    CHECK(::pread(never_read, buf.data(), buf.size(), 0) == -1);
    CHECK(errno == ENOTCONN);
    ::close(read_before);
    ::close(never_read);
}

namespace {

// Core files go to a directory of the test, with no size limit, until the destructor puts the
// machine's core_pattern and this process's RLIMIT_CORE (inherited by what it spawns) back.
class CoreDumps {
public:
    CoreDumps() : m_pattern(test::read_file("/proc/sys/kernel/core_pattern"))
    {
        // Nothing can fail between taking the old values and setting the new ones, so the
        // destructor always has both to put back.
        ::getrlimit(RLIMIT_CORE, &m_limit);
        const rlimit unlimited{RLIM_INFINITY, RLIM_INFINITY};
        ::setrlimit(RLIMIT_CORE, &unlimited);
        test::write_file("/proc/sys/kernel/core_pattern", (m_dir / "core.%e.%p").string() + "\n");
    }
    ~CoreDumps()
    {
        test::write_file("/proc/sys/kernel/core_pattern", m_pattern);
        ::setrlimit(RLIMIT_CORE, &m_limit);
    }
    CoreDumps(const CoreDumps&) = delete;
    CoreDumps& operator=(const CoreDumps&) = delete;

    // The core files written so far, by name.
    std::set<std::string> files() const
    {
        std::set<std::string> names;
        for (const auto& e : stdfs::directory_iterator(m_dir.path())) {
            names.insert(e.path().filename().string());
        }
        return names;
    }

private:
    TempDir m_dir;
    std::string m_pattern;
    rlimit m_limit{};
};

} // namespace

TEST_CASE("daemon: a crash dumps no core, so the keys in its memory never land in a file")
{
    if (::access("/proc/sys/kernel/core_pattern", W_OK) != 0) {
        WARN("skipped: /proc/sys/kernel/core_pattern cannot be written here (a container?)");
        return;
    }
    if (test::k_sanitized) {
        // Their runtimes catch SIGSEGV and never dump a core (disable_coredump): the test would
        // pass whatever certfs does.
        WARN("skipped: a sanitizer build");
        return;
    }
    CoreDumps cores;
    // The control: an ordinary process killed the same way does leave a core here.
    const pid_t sleeper = test::spawn({"/bin/sleep", "60"}, "/dev/null");
    REQUIRE(::kill(sleeper, SIGSEGV) == 0);
    int status = 0;
    REQUIRE(::waitpid(sleeper, &status, 0) == sleeper);
    REQUIRE(WIFSIGNALED(status));
    REQUIRE(WCOREDUMP(status));
    REQUIRE(cores.files().count("core.sleep." + std::to_string(sleeper)) == 1);

    Mount m(200ms);
    m.add("core.test");
    REQUIRE(slurp(m.live("core.test") / "privkey.pem") == m.store()->current_generation("core.test").value().key_pem);
    const pid_t daemon = m.pid();
    REQUIRE(::kill(daemon, SIGSEGV) == 0);
    REQUIRE(m.daemon().wait_exit(10s, &status));
    CHECK(WIFSIGNALED(status));
    CHECK(WTERMSIG(status) == SIGSEGV);
    CHECK_FALSE(WCOREDUMP(status));
    CHECK(cores.files() == std::set<std::string>{"core.sleep." + std::to_string(sleeper)});
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
    const test::DetachedSanitizerLogs sanitizer(dir.path());
    auto r = test::run({CERTFS_PATH, db, mnt, "-o", "rw,allow_other,dev,suid"}, sanitizer.env());
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    bool mounted = wait_until([&] { return is_fuse_mount(mnt); });
    const auto daemon = test::find_process({CERTFS_PATH, mnt});
    std::string mounts = test::read_file("/proc/mounts");
    test::run({"/usr/bin/fusermount3", "-u", mnt});
    REQUIRE(mounted);
    CHECK_THAT(mounts, Catch::Contains(db + " " + mnt + " fuse.certfs ro,nosuid,nodev,noexec,"));
    CHECK_THAT(mounts, Catch::Contains("default_permissions,allow_other"));
    CHECK(wait_until([&] { return !is_fuse_mount(mnt); }));
    REQUIRE(daemon);
    CHECK(test::wait_process_gone(*daemon, 30s));
    sanitizer.check("the detached daemon");
}

TEST_CASE("fs: a reader reopening one file in a tight loop keeps its generation until it pauses")
{
    const Duration window = 500ms;
    Mount m(window);
    m.add("tight.test");
    const std::string first = m.store()->current_generation("tight.test").value().serial_hex;
    std::atomic<bool> stop{false};
    std::set<std::string> seen;
    std::thread reader([&] {
        while (!stop) {
            auto cert = slurp(m.live("tight.test") / "cert.pem");
            seen.insert(cert ? serial_of(*cert) : "error");
        }
    });
    auto serial = m.renew("tight.test");
    m.wait_flip("tight.test", serial);
    std::this_thread::sleep_for(2 * window); // it goes on looping well past the flip
    stop = true;
    reader.join();
    CHECK(seen == std::set<std::string>{first});
    std::this_thread::sleep_for(window + 100ms);
    auto cert = slurp(m.live("tight.test") / "cert.pem");
    REQUIRE(cert);
    CHECK(serial_of(*cert) == serial);
}

TEST_CASE("daemon: a relative --db still works once the daemon changed to /")
{
    TempDir dir;
    REQUIRE(store::Store::open((dir / "certfs.db").string(), {.create = true, .actor = "t", .clock = nullptr}).ok());
    stdfs::create_directory(dir / "mnt");
    auto cwd = stdfs::current_path();
    stdfs::current_path(dir.path());
    const test::DetachedSanitizerLogs sanitizer(dir.path());
    auto r = test::run({CERTFS_PATH, "--db", "certfs.db", "mnt"}, sanitizer.env());
    stdfs::current_path(cwd);
    REQUIRE(r.exit_code == 0);
    REQUIRE(wait_until([&] { return is_fuse_mount(dir / "mnt"); }));
    const auto daemon = test::find_process({CERTFS_PATH, "--db certfs.db mnt"});
    {
        auto st =
            store::Store::open((dir / "certfs.db").string(), {.create = false, .actor = "t", .clock = nullptr}).value();
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
    REQUIRE(daemon);
    CHECK(test::wait_process_gone(*daemon, 30s));
    sanitizer.check("the detached daemon");
}

TEST_CASE("daemon: renews short-lived certificates by itself while readers match and a hook runs once per batch")
{
    Mount m(200ms);
    const std::string log = (m.db().parent_path() / "hook.log").string();
    {
        auto st = m.store();
        renew::LocalCaConfig short_lived;
        short_lived.validity = 1min;
        REQUIRE(st->add_issuer(renew::create_local_ca("short", short_lived, std::chrono::system_clock::now()).value())
                    .ok());
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
    auto readers = test::pausing_readers(m.live("a.short.test"), 200ms);
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
    REQUIRE(renewed);
    CHECK(current("b.short.test") == current("a.short.test"));
    for (auto& r : readers) {
        auto c = r->stop();
        CHECK(c["errors"] == 0);
        CHECK(c["mismatches"] == 0);
        CHECK(c["generations"] >= 3);
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

TEST_CASE("fs: a directory descriptor of live/<name>/ names one generation, after the flip and a pause too")
{
    const Duration window = 300ms;
    Mount m(window);
    m.add("dir.test");
    const auto old_gen = m.store()->current_generation("dir.test").value();
    int dirfd = ::open(m.live("dir.test").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(dirfd >= 0);
    auto serial = m.renew("dir.test");
    m.wait_flip("dir.test", serial);
    std::this_thread::sleep_for(window + 100ms); // quiet for longer than a window
    auto read_at = [&](const char* name) {
        int fd = ::openat(dirfd, name, O_RDONLY | O_CLOEXEC);
        std::string out;
        char buf[4096];
        ssize_t n = 0;
        while (fd >= 0 && (n = ::read(fd, buf, sizeof buf)) > 0) {
            out.append(buf, static_cast<std::size_t>(n));
        }
        if (fd >= 0) {
            ::close(fd);
        }
        return out;
    };
    const std::string key = read_at("privkey.pem");
    const std::string cert = read_at("cert.pem");
    CHECK(key == old_gen.key_pem);
    CHECK(cert == old_gen.cert_pem);
    CHECK(read_at("combined.pem") == old_gen.combined_pem());
    // Listing it shows the same five files.
    DIR* listing = ::fdopendir(::dup(dirfd));
    REQUIRE(listing != nullptr);
    std::set<std::string> names;
    while (dirent* e = ::readdir(listing)) {
        names.insert(e->d_name);
    }
    ::closedir(listing);
    CHECK(names ==
          std::set<std::string>{".", "..", "cert.pem", "chain.pem", "fullchain.pem", "privkey.pem", "combined.pem"});
    ::close(dirfd);
    // The process has just read the old generation's key and certificate: a path from the top
    // right after gives it the same generation (its pair stays whole), and after a pause the
    // new one.
    CHECK(slurp(m.live("dir.test") / "cert.pem").value() == old_gen.cert_pem);
    std::this_thread::sleep_for(window + 100ms);
    CHECK(serial_of(slurp(m.live("dir.test") / "cert.pem").value()) == serial);
}

namespace {

// Starts `body` in a child process, a reader the daemon has not seen, whose exit status is
// body's result. Call it with no other thread running, so that the child starts with no lock held.
pid_t fork_reader(const std::function<int()>& body)
{
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        try {
            _exit(body());
        } catch (...) {
            _exit(99); // never back into Catch in the child
        }
    }
    return pid;
}

// Kills and reaps a child that reap() did not, when a test fails before it.
struct ChildReaper {
    pid_t pid = -1;
    ~ChildReaper()
    {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
};

// The exit status of the child `pid`, or -1 when it did not exit by itself within 30 s (killed).
int reap(pid_t pid)
{
    int status = 0;
    if (!wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 30s)) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// All of `fd` from offset 0.
std::string read_fd(int fd)
{
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(out.size()))) > 0;) {
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

std::string visible_of(const stdfs::path& dir)
{
    char buf[32];
    const ssize_t n = ::getxattr(dir.c_str(), store::k_generation_xattr, buf, sizeof buf);
    return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
}

} // namespace

TEST_CASE("fs: a read under archive/ of a generation not flipped to yet holds its reader on nothing: its next "
          "opens of live/ get what every new open gets")
{
    const Duration window = 5s; // the time the reader below has, between the commit and the flip
    Mount m(window);
    m.add("early.test");
    const auto old_gen = m.store()->current_generation("early.test").value();
    const std::string serial = m.renew("early.test");
    const stdfs::path archived = m.mnt() / "archive" / "early.test" / "2";
    // archive/ shows it once the daemon saw the commit, which starts the transition.
    REQUIRE(wait_until([&] { return stdfs::exists(archived / "cert.pem"); }));
    const int got = reap(fork_reader([&] {
        if (serial_of(slurp(archived / "cert.pem").value_or("")) != serial) {
            return 10; // the read of generation 2 was not answered
        }
        if (slurp(m.live("early.test") / "cert.pem") != old_gen.cert_pem) {
            return 11; // held on generation 2 before the flip
        }
        return slurp(m.live("early.test") / "privkey.pem") == old_gen.key_pem ? 0 : 12;
    }));
    // Still before the flip, or the reader's live/ opens said nothing.
    REQUIRE(visible_of(m.live("early.test")) == "1");
    CHECK(got == 0);
    m.wait_flip("early.test", serial);
}

TEST_CASE("fs: after a --now commit, reading a descriptor opened before it holds the reader on nothing: its next "
          "opens get the new generation")
{
    Mount m(5s); // the time from the first commit to its flip, for the reader to open generation 1 in
    m.add("now.test");
    const auto old_gen = m.store()->current_generation("now.test").value();
    const stdfs::path key = m.live("now.test") / "privkey.pem";
    // A commit in transition first: the daemon knows generation 1 as one that readers may still
    // be held on.
    m.renew("now.test");
    REQUIRE(wait_until([&] { return stdfs::exists(m.mnt() / "archive" / "now.test" / "2"); }));
    int ready[2];
    int go[2];
    REQUIRE(::pipe2(ready, O_CLOEXEC) == 0);
    REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
    ChildReaper reaper;
    const pid_t reader = fork_reader([&] {
        ::close(ready[0]);
        ::close(go[1]); // so that the test's end, however it comes, ends the wait below
        // Opened before the commit, not read yet: its first read reaches the daemon after it.
        const int fd = ::open(key.c_str(), O_RDONLY | O_CLOEXEC);
        char byte = 'r';
        if (fd < 0 || ::write(ready[1], &byte, 1) != 1 || ::read(go[0], &byte, 1) != 1) {
            return 10;
        }
        if (read_fd(fd) != old_gen.key_pem) {
            return 11; // one open, one generation
        }
        const std::string cert = slurp(m.live("now.test") / "cert.pem").value_or("");
        const std::string next_key = slurp(key).value_or("");
        if (serial_of(cert) == old_gen.serial_hex || next_key == old_gen.key_pem) {
            return 12; // held back on generation 1
        }
        return 0;
    });
    reaper.pid = reader;
    ::close(ready[1]);
    ::close(go[0]);
    char byte = 0;
    const bool opened = ::read(ready[0], &byte, 1) == 1;
    // It opened generation 1: the first commit was not flipped to yet.
    const bool before_flip = opened && visible_of(m.live("now.test")) == "1";
    if (before_flip) {
        ctl_ok(m, {"renew", "now.test", "--force", "--now"});
        CHECK(wait_until([&] { return visible_of(m.live("now.test")) == "3"; }));
    }
    (void)!::write(go[1], &byte, 1);
    ::close(ready[0]);
    ::close(go[1]);
    const int got = reap(reader);
    reaper.pid = -1;
    REQUIRE(before_flip);
    const auto g = m.store()->current_generation("now.test").value();
    const std::string new_key = g.key_pem;
    const std::string new_cert = g.cert_pem;
    CHECK(got == 0);
    CHECK(visible_of(m.live("now.test")) == "3");
    CHECK(slurp(m.live("now.test") / "cert.pem") == new_cert);
    CHECK(slurp(key) == new_key);
}

TEST_CASE("fs: a process whose working directory is live/<name>/ keeps that generation")
{
    const Duration window = 300ms;
    Mount m(window);
    m.add("cwd.test");
    const auto old_gen = m.store()->current_generation("cwd.test").value();
    // A shell that changes into the directory, then waits for a line before reading.
    test::Child sh({"/bin/sh", "-c", "cd " + m.live("cwd.test").string() + " && echo in && read go && cat cert.pem"});
    REQUIRE(sh.wait_for_output("in\n", 10s));
    auto serial = m.renew("cwd.test");
    m.wait_flip("cwd.test", serial);
    std::this_thread::sleep_for(window + 100ms);
    sh.write("go\n");
    auto status = sh.wait(10s);
    REQUIRE(status);
    CHECK(WIFEXITED(*status));
    CHECK(sh.output() == "in\n" + old_gen.cert_pem);
}

TEST_CASE("fs: renew --now and rollback --now move a reader that never pauses at once, and say so")
{
    Mount m(200ms);
    m.add("now.test");
    test::Ctl ctl(m.db());
    const std::vector<std::string> reader_args{"--window-ms", "200", "--name", "nowreader"};
    {
        // Readers that never pause: separate opens, a directory descriptor, combined.pem.
        test::PairReader reader(m.live("now.test"), reader_args);
        test::PairReader dir_reader(m.live("now.test"), {"--window-ms", "200", "--dir-fd"});
        test::PairReader combined_reader(m.live("now.test"), {"--window-ms", "200", "--combined"});
        for (auto* r : {&reader, &dir_reader, &combined_reader}) {
            REQUIRE(r->wait_ready(30s));
        }
        m.wait_flip("now.test", m.renew("now.test")); // they are held on generation 1
        // A directory descriptor opened now names generation 2 until --now.
        int dirfd = ::open(m.live("now.test").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        REQUIRE(dirfd >= 0);
        auto r = ctl({"renew", "now.test", "--now"}); // due or not
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        CHECK_THAT(r.out, Catch::Contains("now.test: renewed: generation 3"));
        CHECK_THAT(r.out, Catch::Contains("now.test: every reader moves to generation 3 at once (--now)"));
        const auto third = m.store()->current_generation("now.test").value().serial_hex;
        m.wait_flip("now.test", third);
        auto through_fd = [&] {
            int fd = ::openat(dirfd, "cert.pem", O_RDONLY | O_CLOEXEC);
            std::string cert(8192, '\0');
            ssize_t n = fd >= 0 ? ::read(fd, cert.data(), cert.size()) : -1;
            if (fd >= 0) {
                ::close(fd);
            }
            return n > 0 ? serial_of(cert.substr(0, static_cast<std::size_t>(n))) : "error";
        };
        CHECK(wait_until([&] { return through_fd() == third; }, 2s));
        ::close(dirfd);
        auto c = reader.stop();
        CHECK(c.serials["last"] == third);
        CHECK(c["mismatches"] <= 1); // once, if --now came between its key and its certificate
        CHECK(c["errors"] == 0);
        // --now moves directory descriptors at once too: one between its key and its
        // certificate may get them mixed once. combined.pem is one open: never.
        auto d = dir_reader.stop();
        CHECK(d.serials["last"] == third);
        CHECK(d["mismatches"] <= 1);
        CHECK(d["errors"] == 0);
        auto o = combined_reader.stop();
        CHECK(o.serials["last"] == third);
        CHECK(o["mismatches"] == 0);
        CHECK(o["errors"] == 0);
    }
    {
        test::PairReader reader(m.live("now.test"), reader_args);
        REQUIRE(reader.wait_ready(30s));
        m.wait_flip("now.test", m.renew("now.test")); // it is held on generation 3
        auto r = ctl({"rollback", "now.test", "--to", "2", "--now"});
        INFO(r.err);
        REQUIRE(r.exit_code == 0);
        CHECK_THAT(r.out, Catch::Contains("now.test: every reader moves to generation 2 at once (--now)"));
        const auto second = m.store()->get_generation("now.test", 2).value().serial_hex;
        m.wait_flip("now.test", second);
        auto c = reader.stop();
        CHECK(c.serials["last"] == second);
        CHECK(c["mismatches"] <= 1);
    }
    CHECK_THAT(m.log(),
               Catch::Contains("now.test: generation 3 committed with --now: every reader moves to it at once"));
    CHECK_THAT(m.log(),
               Catch::Contains("now.test: generation 2 committed with --now: every reader moves to it at once"));
}

TEST_CASE("daemon: a reader that never pauses is held until the bound, then moved where it rests between rounds")
{
    test::CpuHogs hogs(2);
    Mount m(200ms, {"--max-hold", "2s"});
    m.add("bound.test");
    // A monitor's loop: the key, 10 ms of work, the certificate, 20 ms of rest, never a window's.
    // And two that never rest but open one generation per round: through a directory
    // descriptor, and combined.pem.
    test::PairReader reader(m.live("bound.test"),
                            {"--window-ms", "200", "--work-us", "10000", "--rest-us", "20000", "--name", "monitor"});
    test::PairReader dir_reader(m.live("bound.test"), {"--window-ms", "200", "--dir-fd", "--name", "dirreader"});
    test::PairReader combined_reader(m.live("bound.test"),
                                     {"--window-ms", "200", "--combined", "--name", "combreader"});
    for (auto* r : {&reader, &dir_reader, &combined_reader}) {
        REQUIRE(r->wait_ready(30s));
    }
    const auto serial = m.renew("bound.test");
    m.wait_flip("bound.test", serial);
    INFO(m.log());
    for (auto [r, name] :
         {std::pair{&reader, "monitor"}, {&dir_reader, "dirreader"}, {&combined_reader, "combreader"}}) {
        const std::string who = "process " + std::to_string(r->pid()) + " (" + name + ") ";
        const std::string notice = "[notice] " + who +
                                   "keeps reading generation 1 of bound.test because it never "
                                   "pauses; it moves when it pauses, at the latest at ";
        CHECK(wait_until([&] { return m.log().find(notice) != std::string::npos; }));
        CHECK(wait_until([&] {
            return m.log().find(who + "moved from generation 1 to 2 of bound.test at the bound") != std::string::npos;
        }));
        auto c = r->stop();
        INFO(name);
        CHECK(c.serials["last"] == serial);
        CHECK(c["mismatches"] == 0);
        CHECK(c["errors"] == 0);
        // Said once for its one hold.
        const std::string log = m.log();
        std::size_t said = 0;
        for (auto at = log.find(notice); at != std::string::npos; at = log.find(notice, at + 1)) {
            ++said;
        }
        CHECK(said == 1);
    }
    // The daemon counts them, and says so when it unmounts.
    test::run({"/usr/bin/fusermount3", "-u", m.mnt().string()});
    REQUIRE(m.daemon().wait_exit(10s));
    CHECK_THAT(m.log(), Catch::Contains("readers held on an older generation: 3, moved at the bound: 3"));
}

TEST_CASE("daemon: a hold ends at half the time the held certificate still had, when that comes before --max-hold")
{
    Mount m(200ms, {"--no-renew"}); // the test renews, not the scheduler
    {
        auto st = m.store();
        renew::LocalCaConfig short_lived;
        short_lived.validity = 20s;
        REQUIRE(st->add_issuer(renew::create_local_ca("short", short_lived, std::chrono::system_clock::now()).value())
                    .ok());
        store::DomainConfig c;
        c.name = "half.test";
        c.issuer = "short";
        c.dns_names = {"half.test"};
        REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
    }
    REQUIRE(wait_until([&] { return stdfs::exists(m.live("half.test") / "cert.pem"); }));
    const auto first = m.store()->current_generation("half.test").value();
    test::PairReader reader(m.live("half.test"), {"--window-ms", "200", "--name", "halfreader", "--print-serials"});
    REQUIRE(reader.wait_ready(30s));
    const auto serial = m.renew("half.test");
    const auto committed = std::chrono::system_clock::now();
    m.wait_flip("half.test", serial);
    const std::string notice = "process " + std::to_string(reader.pid()) +
                               " (halfreader) keeps reading generation 1 of half.test because it never pauses; it "
                               "moves when it pauses, at the latest at ";
    REQUIRE(wait_until([&] { return m.log().find(notice) != std::string::npos; }));
    const std::string log = m.log();
    const auto at = parse_rfc3339(log.substr(log.find(notice) + notice.size(), 20));
    REQUIRE(at.ok());
    // Halfway from the hold's start (just after the flip) to the certificate's expiry: far
    // before the default bound of an hour.
    const auto halfway = committed + (first.not_after - committed) / 2;
    CHECK(*at >= halfway - 2s);
    CHECK(*at <= halfway + 2s);
    CHECK(*at < first.not_after);
    // And it is moved then.
    CHECK(wait_until([&] { return m.log().find("(halfreader) moved from generation 1 to 2") != std::string::npos; },
                     20s));
    // Its loop reads a whole pair of generation 2 (the round it was moved in may have been cut).
    CHECK(reader.wait_read(serial, 30s));
    auto c = reader.stop();
    CHECK(c.serials["last"] == serial);
}

TEST_CASE("fs: a bind mount of live/<name>/ keeps its generation until the bound, then follows the current one")
{
    Mount m(200ms, {"--max-hold", "2s", "--no-renew"});
    m.add("bind.test");
    const auto old_gen = m.store()->current_generation("bind.test").value();
    const stdfs::path bind = m.dir() / "bind";
    stdfs::create_directory(bind);
    struct BindMount {
        stdfs::path at;
        ~BindMount() { test::run({"/usr/bin/umount", at.string()}); }
    };
    REQUIRE(test::run({"/usr/bin/mount", "--bind", m.live("bind.test").string(), bind.string()}).exit_code == 0);
    BindMount guard{bind};
    auto serial = m.renew("bind.test");
    m.wait_flip("bind.test", serial);
    const auto flipped = std::chrono::steady_clock::now();
    CHECK(serial_of(slurp(bind / "cert.pem").value()) == old_gen.serial_hex);
    // The bound (2 s), then at most the file entries' timeout (the bound too).
    CHECK(wait_until([&] { return serial_of(slurp(bind / "cert.pem").value()) == serial; }, 10s));
    CHECK(std::chrono::steady_clock::now() - flipped >= 1500ms);
    auto key = slurp(bind / "privkey.pem").value();
    CHECK(pair_matches(key, slurp(bind / "fullchain.pem").value()));

    // A bind mount made now names generation 2; --now moves it at once.
    const stdfs::path now_bind = m.dir() / "now-bind";
    stdfs::create_directory(now_bind);
    REQUIRE(test::run({"/usr/bin/mount", "--bind", m.live("bind.test").string(), now_bind.string()}).exit_code == 0);
    BindMount now_guard{now_bind};
    const auto third = m.renew("bind.test");
    m.wait_flip("bind.test", third);
    CHECK(serial_of(slurp(now_bind / "cert.pem").value()) == serial);
    {
        auto st = m.store();
        REQUIRE(renew::Renewer(*st, "test").renew("bind.test", true, true).ok());
    }
    const auto fourth = m.store()->current_generation("bind.test").value().serial_hex;
    m.wait_flip("bind.test", fourth);
    CHECK(wait_until([&] { return serial_of(slurp(now_bind / "cert.pem").value()) == fourth; }, 1s));
}
