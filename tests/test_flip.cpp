// Deploy hooks run after the flip (contract point 8), looked at where the user looks: a hook
// that reads live/<name>/cert.pem through a real mount, as `systemctl reload nginx` makes nginx
// read it, run by the daemon's scheduler and by `certfsctl renew`; and the mount's attribute
// that tells certfsctl when the flip came.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>

#include <catch2/catch.hpp>

#include "renew/renewer.hpp"
#include "store/mount.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
namespace stdfs = std::filesystem;

namespace {

using certfs::test::wait_until;

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
