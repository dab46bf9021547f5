// The filesystem's inodes and content without a mount: the requests called as libfuse calls
// them, in steady state (no transition, so no request context is needed), with FORGET played by
// the test. What a real kernel does with them is in test_fs and test_soak.
#include <catch2/catch.hpp>

#include "fs/filesystem.hpp"
#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using certfs::test::wait_until;

namespace {

// A store with one domain of three generations, and the filesystem over it, its watcher running
// with no session (it has no kernel entries to drop).
struct Tree {
    Tree()
    {
        auto st = store::Store::open(db(), {.create = true, .actor = "test", .clock = nullptr}).value();
        REQUIRE(st->add_issuer(renew::create_local_ca("ca", {}, std::chrono::system_clock::now()).value()).ok());
        store::DomainConfig c;
        c.name = "a.test";
        c.issuer = "ca";
        c.dns_names = {c.name};
        renew::Renewer renewer(*st, "test");
        REQUIRE(renewer.add_and_issue(c).ok());
        REQUIRE(renewer.renew("a.test", true).ok());
        REQUIRE(renewer.renew("a.test", true).ok());
        history = st->history("a.test").value();
        fs::Options options;
        options.db_path = db();
        options.poll_interval = 10ms;
        fs = fs::Filesystem::create(options).value();
        REQUIRE(fs->start(nullptr).ok());
    }
    std::string db() const { return (dir / "certfs.db").string(); }

    fuse_ino_t lookup(fuse_ino_t parent, const char* name)
    {
        auto e = fs->do_lookup(nullptr, parent, name);
        INFO(name << ": " << (e.ok() ? "" : e.status().message()));
        REQUIRE(e.ok());
        return e->ino;
    }
    std::string read(fuse_ino_t ino)
    {
        auto bytes = fs->do_read(nullptr, ino, 65536, 0);
        REQUIRE(bytes.ok());
        return bytes->data->substr(bytes->offset, bytes->size);
    }
    fs::Filesystem::TreeCounts counts() const { return fs->tree_counts(); }

    test::TempDir dir;
    std::vector<store::Generation> history;
    std::unique_ptr<fs::Filesystem> fs;
};

constexpr std::size_t k_fixed = 3; // root, live and archive

} // namespace

TEST_CASE("fs nodes: an inode lives until FORGET brings its lookups to 0, and a generation's content until its last "
          "inode goes")
{
    Tree t;
    REQUIRE(t.counts().nodes == k_fixed);
    const fuse_ino_t archive = t.lookup(FUSE_ROOT_ID, "archive");
    const fuse_ino_t domain = t.lookup(archive, "a.test");
    const fuse_ino_t first = t.lookup(domain, "1");
    const fuse_ino_t key = t.lookup(first, "privkey.pem");
    const fuse_ino_t cert = t.lookup(first, "cert.pem");
    CHECK(t.read(key) == t.history[0].key_pem);
    CHECK(t.counts().nodes == k_fixed + 4);
    CHECK(t.counts().contents == 1); // the two files share their generation's content

    // The current generation through live/: one content more.
    const fuse_ino_t live_dir = t.lookup(t.lookup(FUSE_ROOT_ID, "live"), "a.test");
    const fuse_ino_t live_cert = t.lookup(live_dir, "cert.pem");
    CHECK(t.read(live_cert) == t.history[2].cert_pem);
    CHECK(t.counts().contents == 2);

    // Two lookups need two forgets. A read in flight keeps its bytes after the inode went.
    CHECK(t.lookup(first, "cert.pem") == cert);
    auto held = t.fs->do_read(nullptr, key, 65536, 0);
    REQUIRE(held.ok());
    t.fs->forget(key, 1);
    t.fs->forget(cert, 1);
    CHECK(t.counts().nodes == k_fixed + 5);
    CHECK(t.counts().contents == 2);
    t.fs->forget(cert, 1);
    CHECK(t.counts().nodes == k_fixed + 4);
    CHECK(t.counts().contents == 1); // generation 1's content went with its last inode
    CHECK(held->data->substr(held->offset, held->size) == t.history[0].key_pem);
    CHECK_FALSE(t.fs->do_getattr(key).ok());

    // Looked up again: loaded again from the store, under a new number (numbers are never reused).
    const fuse_ino_t again = t.lookup(first, "privkey.pem");
    CHECK(again > live_cert);
    CHECK(t.read(again) == t.history[0].key_pem);
    t.fs->forget(again, 1);
    t.fs->forget(first, 1);
    t.fs->forget(domain, 1);
    t.fs->forget(live_cert, 1);
    t.fs->forget(live_dir, 1);
    CHECK(t.counts().nodes == k_fixed);
    // The current generation stays loaded, for the next reader; nothing else does.
    CHECK(t.counts().contents == 1);
    // The fixed directories are never freed, whatever the kernel forgets.
    t.fs->forget(archive, 5);
    CHECK(t.counts().nodes == k_fixed);
    CHECK(t.fs->do_getattr(archive).ok());
}

TEST_CASE("fs nodes: an inode a listing made is freed when no lookup took it within the grace, and keeps its number "
          "for a lookup that did")
{
    Tree t;
    const fuse_ino_t domain = t.lookup(t.lookup(FUSE_ROOT_ID, "archive"), "a.test");
    REQUIRE(t.fs->do_readdir(nullptr, domain, 65536, 0).ok());
    CHECK(t.counts().nodes == k_fixed + 1 + 3); // the three generations' directories
    // A lookup right after the listing gets the inode the listing named.
    const fuse_ino_t second = t.lookup(domain, "2");
    CHECK(t.counts().nodes == k_fixed + 1 + 3);
    t.fs->collect(fs::PinClock::now());
    CHECK(t.counts().nodes == k_fixed + 1 + 3);
    t.fs->collect(fs::PinClock::now() + fs::k_listed_grace);
    CHECK(t.counts().nodes == k_fixed + 1 + 1); // the one looked up stays until forgotten
    CHECK(t.fs->do_getattr(second).ok());
    REQUIRE(t.fs->do_readdir(nullptr, second, 65536, 0).ok());
    t.fs->forget(second, 1);
    t.fs->collect(fs::PinClock::now() + fs::k_listed_grace);
    CHECK(t.counts().nodes == k_fixed + 1);
    CHECK(t.counts().contents == 0);
}

TEST_CASE("fs nodes: a removed domain's content goes with the last inode the kernel still held")
{
    Tree t;
    const fuse_ino_t live_dir = t.lookup(t.lookup(FUSE_ROOT_ID, "live"), "a.test");
    const fuse_ino_t key = t.lookup(live_dir, "privkey.pem");
    CHECK(t.counts().contents == 1);
    REQUIRE(store::Store::open(t.db(), {.create = false, .actor = "test", .clock = nullptr})
                .value()
                ->remove_domain("a.test")
                .ok());
    // Until the watcher saw the removal; a lookup that still succeeds is forgotten at once.
    REQUIRE(wait_until([&] {
        auto e = t.fs->do_lookup(nullptr, live_dir, "cert.pem");
        if (e.ok()) {
            t.fs->forget(e->ino, 1);
        }
        return !e.ok();
    }));
    // An open file of it still reads what it read; nothing new is served.
    CHECK(t.read(key) == t.history[2].key_pem);
    test::require_error(t.fs->do_lookup(nullptr, live_dir, "cert.pem"), Code::not_found, "a.test");
    CHECK(t.counts().contents == 1);
    t.fs->forget(key, 1);
    t.fs->forget(live_dir, 1);
    CHECK(t.counts().nodes == k_fixed);
    CHECK(t.counts().contents == 0);
}
