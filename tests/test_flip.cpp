// Deploy hooks run after the flip (contract point 8), looked at where the user looks: a hook
// that reads live/<name>/cert.pem through a real mount, as `systemctl reload nginx` makes nginx
// read it, run by the daemon's scheduler and by `certfsctl renew`; and the mount's attribute
// that tells certfsctl when the flip came.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "renew/renewer.hpp"
#include "store/mount.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
namespace stdfs = std::filesystem;

namespace {

using certfs::test::wait_until;

std::vector<std::string> lines_of(const stdfs::path& path)
{
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// openssl's "serial=00AB12" as the store writes serials: lower-case hex without leading zeros.
std::string normal_serial(std::string text)
{
    if (text.rfind("serial=", 0) == 0) {
        text.erase(0, 7);
    }
    std::transform(text.begin(), text.end(), text.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    text.erase(0, std::min(text.find_first_not_of('0'), text.size() - 1));
    return text;
}

// An attribute's value, or the errno that reading it failed with.
struct Xattr {
    std::string value;
    int error = 0;
    bool operator==(const Xattr& o) const { return value == o.value && error == o.error; }
};
// What getxattr (a path) or fgetxattr (a descriptor) says of the generation attribute.
template <typename Get>
Xattr xattr_by(Get get)
{
    char buf[256];
    const ssize_t n = get(buf, sizeof buf);
    return n < 0 ? Xattr{"", errno} : Xattr{std::string(buf, static_cast<std::size_t>(n)), 0};
}
Xattr xattr_of(const stdfs::path& path, const char* name = store::k_generation_xattr)
{
    return xattr_by([&](char* buf, std::size_t size) { return ::getxattr(path.c_str(), name, buf, size); });
}
Xattr fxattr_of(int fd)
{
    return xattr_by([&](char* buf, std::size_t size) { return ::fgetxattr(fd, store::k_generation_xattr, buf, size); });
}

// The errno of a call that failed; 0 when it did not.
int failure_of(ssize_t rc) { return rc < 0 ? errno : 0; }
std::ostream& operator<<(std::ostream& out, const Xattr& x)
{
    return out << (x.error != 0 ? "errno " + std::to_string(x.error) : "'" + x.value + "'");
}

} // namespace

TEST_CASE("fs: live/<name>/ tells in user.certfs.generation the generation new opens get, through any of its "
          "directories")
{
    const Duration window = 1s;
    test::CaMount m(window);
    m.add("x.test");
    const stdfs::path dir = m.live("x.test");
    const char* const name = store::k_generation_xattr;
    CHECK(xattr_of(dir) == Xattr{"1", 0});
    // The size first, as getfattr asks; then a buffer too small for "10".
    CHECK(::getxattr(dir.c_str(), name, nullptr, 0) == 1);
    for (int i = 0; i < 9; ++i) {
        auto st = m.store();
        REQUIRE(renew::Renewer(*st, "test").renew("x.test", true, true).ok()); // --now: served at once
    }
    REQUIRE(wait_until([&] { return xattr_of(dir) == Xattr{"10", 0}; }));
    CHECK(::getxattr(dir.c_str(), name, nullptr, 0) == 2);
    char small[1];
    CHECK(failure_of(::getxattr(dir.c_str(), name, small, sizeof small)) == ERANGE);

    // It is the only attribute, of live/<name>/ only.
    char list[256];
    CHECK(::listxattr(dir.c_str(), nullptr, 0) == static_cast<ssize_t>(sizeof store::k_generation_xattr));
    const ssize_t listed = ::listxattr(dir.c_str(), list, sizeof list);
    CHECK(std::string(list, static_cast<std::size_t>(std::max<ssize_t>(listed, 0))) ==
          std::string(name, sizeof store::k_generation_xattr));
    CHECK(failure_of(::listxattr(dir.c_str(), list, 4)) == ERANGE);
    CHECK(xattr_of(dir, "user.certfs.other") == Xattr{"", ENODATA});
    for (const stdfs::path& other : {m.mnt(), m.mnt() / "live", m.mnt() / "archive", m.mnt() / "archive" / "x.test",
                                     m.mnt() / "archive" / "x.test" / "1", dir / "cert.pem"}) {
        INFO(other);
        CHECK(xattr_of(other) == Xattr{"", ENODATA});
        CHECK(::listxattr(other.c_str(), nullptr, 0) == 0);
    }
    CHECK(failure_of(::setxattr(dir.c_str(), name, "7", 1, 0)) == EROFS);

    // A renewal: the attribute moves at the flip, and then a new process reads the new
    // certificate. A directory descriptor of generation 10 tells the domain's too.
    const int old_dir = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    REQUIRE(old_dir >= 0);
    const auto committed = std::chrono::steady_clock::now();
    const std::string serial = m.renew("x.test");
    CHECK(xattr_of(dir) == Xattr{"10", 0});
    REQUIRE(wait_until([&] { return xattr_of(dir) == Xattr{"11", 0}; }));
    CHECK(test::serial_seen_by_new_process(dir / "cert.pem") == serial);
    CHECK(std::chrono::steady_clock::now() - committed >= window);
    CHECK(fxattr_of(old_dir) == Xattr{"11", 0});
    ::close(old_dir);
}

TEST_CASE("hooks: after each of 50 renewals, by the daemon and by certfsctl renew, a hook reading the mount sees the "
          "certificate just committed")
{
    const Duration window = 1s;
    test::CaMount m(window);
    test::Ctl ctl(m.db());
    const stdfs::path seen = m.dir() / "seen.log";
    // A new process reads the certificate through the mount, as a reloaded server does.
    test::write_file(m.dir() / "hook.sh",
                     "serial=$(/usr/bin/openssl x509 -noout -serial -in \"$CERTFS_LIVE_DIR/cert.pem\" 2>&1)\n"
                     "echo \"$CERTFS_NAMES $CERTFS_GENERATION $serial\" >> " +
                         seen.string() + "\n");
    const std::string hook = "/bin/sh " + (m.dir() / "hook.sh").string();

    // The daemon renews these by itself, every 4 s or so (a third of a 12 s leaf is left).
    ctl.ok({"issuer", "add", "local", "short", "--validity", "12s"});
    std::vector<std::string> by_daemon;
    for (int i = 0; i < 6; ++i) {
        by_daemon.push_back("d" + std::to_string(i) + ".flip.test");
        ctl.ok({"add", by_daemon.back(), "--issuer", "short", "--renew-before", "8s", "--deploy-hook", hook});
    }
    // certfsctl renews these (90-day leaves: never due for the daemon).
    const std::vector<std::string> by_ctl = {"c0.flip.test", "c1.flip.test", "c2.flip.test"};
    for (const auto& name : by_ctl) {
        ctl.ok({"add", name, "--issuer", "ca", "--deploy-hook", hook});
    }
    for (const auto& name : by_ctl) {
        REQUIRE(wait_until([&] { return stdfs::exists(m.live(name) / "cert.pem"); }));
    }

    std::optional<test::CpuHogs> hogs;
    if (test::env_number("CERTFS_TEST_HOGS", 0) > 0) {
        hogs.emplace(static_cast<int>(test::env_number("CERTFS_TEST_HOGS", 0)));
    }
    const int ctl_runs = 9;
    for (int i = 0; i < ctl_runs; ++i) {
        std::vector<std::string> args = {"renew", "--force"};
        args.insert(args.end(), by_ctl.begin(), by_ctl.end());
        const auto r = ctl.ok(args);
        CHECK(r.err.empty()); // no warning: the mount showed each flip in time
    }
    auto count = [&](const std::vector<std::string>& names) {
        long n = 0;
        for (const auto& line : lines_of(seen)) {
            n += std::count(names.begin(), names.end(), line.substr(0, line.find(' ')));
        }
        return n;
    };
    const bool daemon_done = wait_until([&] { return count(by_daemon) >= 25; }, 90s);
    hogs.reset();
    if (!daemon_done) {
        FAIL("the daemon's hooks ran " << count(by_daemon) << " times, not 25; it said:\n" << m.log());
    }
    CHECK(count(by_ctl) == ctl_runs * static_cast<long>(by_ctl.size()));
    CHECK_THAT(m.log(), !Catch::Contains("deploy hooks anyway") && !Catch::Contains("cannot tell when"));
    // certfsctl's wait polls one descriptor per domain: it is no reader held on a generation.
    CHECK_THAT(m.log(), !Catch::Contains("(certfsctl) keeps reading"));

    // Every run saw the generation it was run for.
    auto st = m.store();
    std::map<bool, std::pair<long, long>> tally; // by the daemon? -> (wrong, runs)
    std::string wrong_runs;
    const auto lines = lines_of(seen);
    for (const auto& line : lines) {
        std::istringstream fields(line);
        std::string name, serial;
        std::int64_t gen = 0;
        fields >> name >> gen >> serial;
        auto g = st->get_generation(name, gen);
        REQUIRE(g.ok());
        auto& [wrong, runs] = tally[name[0] == 'd'];
        ++runs;
        if (normal_serial(serial) != g->serial_hex) {
            ++wrong;
            wrong_runs +=
                name + " generation " + std::to_string(gen) + ": saw " + serial + ", not " + g->serial_hex + "\n";
        }
    }
    const long wrong = tally[true].first + tally[false].first;
    INFO(wrong << " of " << lines.size() << " hook runs saw another certificate than the one just committed (daemon "
               << tally[true].first << " of " << tally[true].second << ", certfsctl " << tally[false].first << " of "
               << tally[false].second << ")\n"
               << wrong_runs);
    CHECK(lines.size() >= 50);
    CHECK(wrong == 0);
}
