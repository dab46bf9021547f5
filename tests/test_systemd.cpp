// certfs as systemd runs it from dist/certfs.service: the unit passes systemd-analyze verify,
// and its own ExecStart= and ExecStop= lines, run the way systemd runs a Type=notify service
// (NOTIFY_SOCKET for readiness, JOURNAL_STREAM for the log), start a daemon that says READY=1
// only once the mount serves, log with journald's priority prefixes, and stop leaving no mount.
// systemd itself is not PID 1 here: the test plays its part, by the rules of sd_notify(3) and
// systemd.exec(5).
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "core/handles.hpp"
#include "core/process.hpp"
#include "tests/support/child.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::wait_until;

namespace {

// The value of `key=` in the unit's text (its first such line).
std::string unit_value(const std::string& unit, const std::string& key)
{
    std::istringstream in(unit);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind(key + "=", 0) == 0) {
            return line.substr(key.size() + 1);
        }
    }
    FAIL("the unit has no " << key << "= line");
    return "";
}

std::string replace_all(std::string text, const std::string& from, const std::string& to)
{
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
        text.replace(at, from.size(), to);
    }
    return text;
}

// A unit's command line split as systemd splits it (quotes, no shell), by certfs's own splitter.
std::vector<std::string> words(const std::string& line)
{
    auto split = split_command(line);
    REQUIRE(split.ok());
    return *split;
}

// systemd's end of sd_notify(3): a datagram socket at `path`.
class NotifySocket {
public:
    explicit NotifySocket(const std::filesystem::path& path) : m_fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0))
    {
        REQUIRE(m_fd);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        REQUIRE(path.string().size() < sizeof addr.sun_path);
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::bind(m_fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    // The next message, or "" after `timeout`.
    std::string next(std::chrono::milliseconds timeout)
    {
        pollfd p{m_fd.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) {
            return "";
        }
        char buf[4096];
        const ssize_t n = ::recv(m_fd.get(), buf, sizeof buf, 0);
        return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "";
    }

private:
    UniqueFd m_fd;
};

} // namespace

TEST_CASE("systemd: certfs.service verifies, and its ExecStart and ExecStop run as systemd runs them: READY=1 once "
          "the mount serves, the journal gets each line's priority, and the stop leaves no mount")
{
    const std::string unit = test::file_or_empty(CERTFS_UNIT);
    REQUIRE_FALSE(unit.empty());
    CHECK(unit_value(unit, "Type") == "notify");
    CHECK(unit_value(unit, "StateDirectoryMode") == "0700");
    CHECK_THAT(unit, Contains("#LoadCredentialEncrypted=certfs-store-key:"));

    test::Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "www.example.test", "--issuer", "ca"});
    const auto mnt = ctl.path("certs");
    std::filesystem::create_directory(mnt);
    // The unit as installed here: our certfs, our store and mount point.
    auto local = [&](const std::string& text) {
        const std::string exec_start = unit_value(unit, "ExecStart");
        const std::string installed = words(exec_start).at(0);
        return replace_all(
            replace_all(replace_all(text, installed, CERTFS_PATH), "/var/lib/certfs/certfs.db", ctl.db()), "/etc/certs",
            mnt.string());
    };
    {
        const auto copy = ctl.path("certfs.service");
        test::write_file(copy.string(), local(unit));
        auto verified = test::run({"/usr/bin/systemd-analyze", "verify", copy.string()});
        INFO(verified.out << verified.err);
        CHECK(verified.exit_code == 0);
    }

    NotifySocket notify(ctl.path("notify"));
    const auto log = ctl.path("journal");
    test::write_file(log.string(), "");
    struct stat st {};
    REQUIRE(::stat(log.c_str(), &st) == 0);
    // systemd's two variables, ours only (a test run by a systemd service inherits its own).
    std::vector<std::string> env = test::current_environment();
    std::erase_if(env, [](const std::string& e) {
        return e.rfind("NOTIFY_SOCKET=", 0) == 0 || e.rfind("JOURNAL_STREAM=", 0) == 0;
    });
    env.push_back("NOTIFY_SOCKET=" + ctl.path("notify").string());
    env.push_back("JOURNAL_STREAM=" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino));
    test::OwnedProcess daemon = test::spawn(words(local(unit_value(unit, "ExecStart"))), env, log);

    // READY=1, and at that moment a fresh process reads the domain through the mount.
    const std::string ready = notify.next(20s);
    INFO("log: " << test::file_or_empty(log));
    REQUIRE_THAT(ready, Contains("READY=1"));
    CHECK_THAT(ready, Contains("MAINPID=" + std::to_string(daemon.pid())));
    const std::string cert = test::file_or_empty(mnt / "live" / "www.example.test" / "cert.pem");
    CHECK_THAT(cert, Contains("BEGIN CERTIFICATE"));

    // The journal gets "<6>mounted ...": journald takes the priority from it and adds the time.
    const std::string lines = test::file_or_empty(log);
    bool mounted_line = false;
    std::istringstream journal(lines);
    for (std::string line; std::getline(journal, line);) {
        INFO(line);
        CHECK(line.rfind("[20", 0) != 0); // no time of its own: journald adds it
        mounted_line = mounted_line || line.rfind("<6>mounted " + ctl.db() + " on ", 0) == 0;
    }
    CHECK(mounted_line);

    // Stop: ExecStop=, then the SIGTERM systemd sends to what is left.
    std::vector<std::string> stop = words(local(unit_value(unit, "ExecStop")));
    CHECK(stop.at(0).rfind('-', 0) == 0); // its failure is ignored: the mount may be gone already
    stop.at(0).erase(0, stop.at(0).find_first_not_of("-"));
    auto stopped = test::run(stop);
    INFO(stopped.out << stopped.err);
    CHECK(stopped.exit_code == 0);
    CHECK_FALSE(test::is_fuse_mount(mnt));
    ::kill(daemon.pid(), SIGTERM);
    std::string how;
    REQUIRE(wait_until([&] { return daemon.exited(&how); }, 20s));
    CHECK(how == "exit status 0");
    CHECK_FALSE(test::is_fuse_mount(mnt));
    // It said STOPPING=1 once, whether the unmount or the signal reached it first.
    CHECK_THAT(notify.next(20s), Contains("STOPPING=1"));
    CHECK(notify.next(0ms).empty());

    // The next start on the same mount point serves again.
    test::OwnedProcess again = test::spawn(words(local(unit_value(unit, "ExecStart"))), env, log);
    REQUIRE_THAT(notify.next(20s), Contains("READY=1"));
    CHECK_THAT(test::file_or_empty(mnt / "live" / "www.example.test" / "cert.pem"), Contains("BEGIN CERTIFICATE"));
    ::kill(again.pid(), SIGTERM);
    CHECK_THAT(notify.next(20s), Contains("STOPPING=1"));
    REQUIRE(wait_until([&] { return again.exited(&how); }, 20s));
    CHECK(how == "exit status 0");
    CHECK_FALSE(test::is_fuse_mount(mnt));
}

TEST_CASE("systemd: an fstab line's mount -t fuse.certfs works through Debian's mount.fuse3, with certfs in PATH")
{
    test::Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "www.example.test", "--issuer", "ca"});
    const auto mnt = ctl.path("certs");
    std::filesystem::create_directory(mnt);
    // What mount(8) runs for "DB MNT fuse.certfs defaults,allow_other 0 0": mount.fuse3 with the
    // type, which starts "certfs DB MNT -o ..." from PATH (/usr/bin once installed).
    const test::DetachedSanitizerLogs sanitizer(ctl.path(""));
    std::vector<std::string> env = sanitizer.env();
    env.push_back("PATH=" + std::filesystem::path(CERTFS_PATH).parent_path().string() +
                  ":/usr/sbin:/usr/bin:/sbin:/bin");
    auto r = test::run({"/sbin/mount.fuse3", ctl.db(), mnt.string(), "-t", "fuse.certfs", "-o", "rw,allow_other"}, env);
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    REQUIRE(wait_until([&] { return test::is_fuse_mount(mnt); }));
    const auto daemon = test::find_process({"certfs", ctl.db(), mnt.string()}); // as mount.fuse3's sh ran it
    const std::string mounts = test::file_or_empty("/proc/mounts");
    const std::string cert = test::file_or_empty(mnt / "live" / "www.example.test" / "cert.pem");
    test::run({"/usr/bin/fusermount3", "-u", mnt.string()});
    CHECK_THAT(mounts, Contains(ctl.db() + " " + mnt.string() + " fuse.certfs ro,nosuid,nodev,noexec,"));
    CHECK_THAT(cert, Contains("BEGIN CERTIFICATE"));
    REQUIRE(daemon);
    CHECK(test::wait_process_gone(*daemon, 30s));
    sanitizer.check("the daemon mount.fuse3 started");
}
