// The store key: private keys and issuer secrets sealed in the store's file, what a store
// without its key still shows, and rekey-store. Each secret is looked for in the database's
// files byte by byte, as its PEM and as its DER.
#include <sys/stat.h>

#include <catch2/catch.hpp>

#include "core/pki.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::store;
using Catch::Contains;
using certfs::test::make_leaf;
using certfs::test::require_error;
using certfs::test::TempDir;
using certfs::test::TestCa;
using namespace std::chrono_literals;

namespace {

// A key file of 32 random bytes, mode 0600.
std::string write_key(const TempDir& dir, const std::string& name)
{
    const std::string path = (dir / name).string();
    test::write_file(path, pki::random_bytes(32).value());
    ::chmod(path.c_str(), 0600);
    return path;
}

std::shared_ptr<const StoreKey> load(const std::string& path) { return StoreKey::load(path).value(); }

struct KeyFixture {
    TempDir dir;
    std::string path = (dir / "certfs.db").string();
    TestCa ca;
    std::string key_path = write_key(dir, "store.key");

    std::unique_ptr<Store> open(std::shared_ptr<const StoreKey> key, bool create = false)
    {
        auto st = Store::open(path, {.create = create, .actor = "test", .clock = nullptr}, std::move(key));
        INFO(st.status().message());
        REQUIRE(st.ok());
        return std::move(*st);
    }

    // Adds `name` with a first generation; returns its key's PEM.
    std::string add(Store& st, const std::string& name)
    {
        DomainConfig c;
        c.name = name;
        c.dns_names = {name};
        auto leaf = make_leaf(ca, {c.dns_names, {}});
        REQUIRE(st.add_domain(c, GenerationInput{leaf.key_pem, leaf.cert_pem, ca.cert_pem, Reason::issued}).ok());
        return leaf.key_pem;
    }

    // A pending request for `domain` at `issuer` with a fresh key; returns the key.
    std::string add_pending(Store& st, const std::string& domain, const std::string& issuer)
    {
        const std::string key = pki::private_key_pem(*pki::generate_key(pki::KeyType::ec_p256).value()).value();
        const auto now = std::chrono::system_clock::now();
        REQUIRE(st.save_pending(PendingRequest{domain, issuer, 1, key, "csr", "cookie-1", "", "", now, now}).ok());
        return key;
    }

    // An issuer whose secret is a private key; returns the secret.
    std::string add_issuer(Store& st, const std::string& name)
    {
        const std::string secret = pki::private_key_pem(*pki::generate_key(pki::KeyType::ec_p256).value()).value();
        REQUIRE(st.add_issuer(NewIssuer{name, "local", "{}", secret, ca.cert_pem}).ok());
        return secret;
    }
};

} // namespace

TEST_CASE("store key: a key file others may read, or of the wrong size, is refused with its reason")
{
    TempDir dir;
    const std::string path = write_key(dir, "k");
    ::chmod(path.c_str(), 0640);
    require_error(StoreKey::load(path), Code::invalid,
                  "store key " + path + " may be read or written by others (mode 0640)");
    ::chmod(path.c_str(), 0600);
    CHECK(StoreKey::load(path).ok());
    test::write_file(path, "short");
    require_error(StoreKey::load(path), Code::invalid, "5 bytes; a store key is 32 random bytes");
    test::write_file(path, std::string(33, 'x'));
    require_error(StoreKey::load(path), Code::invalid, "more than 32 bytes");
    require_error(StoreKey::load((dir / "missing").string()), Code::not_found, "cannot read store key");
}

TEST_CASE("store key: a sealed value opens only with its key and for its row, and not once a byte changed")
{
    TempDir dir;
    auto key = load(write_key(dir, "a"));
    auto other = load(write_key(dir, "b"));
    const std::string sealed = key->seal("secret bytes", "generations 1 2").value();
    CHECK(is_sealed(sealed));
    CHECK(sealed.find("secret") == std::string::npos);
    CHECK(key->open(sealed, "generations 1 2").value() == "secret bytes");
    CHECK(key->seal("secret bytes", "generations 1 2").value() != sealed); // a fresh nonce each time
    require_error(key->open(sealed, "generations 1 3"), Code::corrupt, "does not decrypt");
    require_error(other->open(sealed, "generations 1 2"), Code::corrupt,
                  "was sealed by the store key with id " + key->id() + ", not by");
    std::string changed = sealed;
    changed[changed.size() - 5] = changed[changed.size() - 5] == 'A' ? 'B' : 'A';
    require_error(key->open(changed, "generations 1 2"), Code::corrupt, "does not decrypt");
}

TEST_CASE("store key: a store made with a key holds no private key in the clear, and opens them again")
{
    KeyFixture f;
    auto key = load(f.key_path);
    std::string domain_key;
    std::string issuer_secret;
    {
        auto st = f.open(key, true);
        REQUIRE(st->sealed_by() == key->id());
        domain_key = f.add(*st, "sealed.test");
        issuer_secret = f.add_issuer(*st, "ca");
        REQUIRE(st->db_for_testing().exec("PRAGMA wal_checkpoint(TRUNCATE)").ok());
    }
    INFO("in the files: " << test::key_in_store_files(f.path, domain_key));
    CHECK(test::key_in_store_files(f.path, domain_key).empty());
    CHECK(test::key_in_store_files(f.path, issuer_secret).empty());
    CHECK(test::store_files(f.path).find("PRIVATE KEY") == std::string::npos);

    auto st = f.open(key);
    CHECK(st->current_generation("sealed.test").value().key_pem == domain_key);
    CHECK(st->issuer_secret("ca").value() == issuer_secret);
    CHECK(st->history("sealed.test").value().at(0).key_pem == domain_key);
}

TEST_CASE("store key: without its key a sealed store lists its certificates, and refuses its keys saying how to "
          "give it, and another key is refused")
{
    KeyFixture f;
    auto key = load(f.key_path);
    std::string cert;
    {
        auto st = f.open(key, true);
        f.add(*st, "sealed.test");
        f.add_issuer(*st, "ca");
        cert = st->current_generation("sealed.test").value().cert_pem;
    }
    auto st = f.open(nullptr);
    CHECK(st->list_domains().value().size() == 1);
    auto history = st->history("sealed.test").value();
    REQUIRE(history.size() == 1);
    CHECK(history[0].cert_pem == cert);
    CHECK(history[0].key_pem.empty());
    const std::string how = "the store's private keys are sealed by a store key (id " + key->id() +
                            ") and none was given: --store-key FILE, CERTFS_STORE_KEY=FILE, or the systemd "
                            "credential certfs-store-key";
    require_error(st->check_secrets_readable(), Code::unavailable, how);
    require_error(st->current_generation("sealed.test"), Code::unavailable, how);
    require_error(st->issuer_secret("ca"), Code::unavailable, how);
    DomainConfig c;
    c.name = "more.test";
    c.dns_names = {c.name};
    auto leaf = make_leaf(f.ca, {c.dns_names, {}});
    require_error(st->add_domain(c, GenerationInput{leaf.key_pem, leaf.cert_pem, f.ca.cert_pem, Reason::issued}),
                  Code::unavailable, how);
    CHECK(st->list_domains().value().size() == 1); // nothing added

    auto other = load(write_key(f.dir, "other.key"));
    require_error(Store::open(f.path, {.create = false, .actor = "test", .clock = nullptr}, other), Code::invalid,
                  "store key " + other->source() + " (id " + other->id() +
                      ") is not the key this store is sealed by (id " + key->id() + ")");
}

TEST_CASE("store key: a sealed key moved to another generation's row does not open there")
{
    KeyFixture f;
    auto key = load(f.key_path);
    auto st = f.open(key, true);
    f.add(*st, "moved.test");
    auto leaf = make_leaf(f.ca, {{"moved.test"}, {}});
    REQUIRE(
        st->commit_one({"moved.test", 1, GenerationInput{leaf.key_pem, leaf.cert_pem, f.ca.cert_pem, Reason::renewed}})
            .ok());
    REQUIRE(st->db_for_testing()
                .exec("UPDATE generations SET key_pem = (SELECT key_pem FROM generations WHERE gen = 1) WHERE gen = 2")
                .ok());
    require_error(st->get_generation("moved.test", 2), Code::corrupt, "does not decrypt");
    CHECK(st->get_generation("moved.test", 1).ok());
}

TEST_CASE("store key: a store with keys in the clear refuses a key until rekey seals it, then rekey again and "
          "back to the clear, each in one transaction")
{
    KeyFixture f;
    std::string domain_key;
    std::string issuer_secret;
    {
        auto st = f.open(nullptr, true);
        domain_key = f.add(*st, "clear.test");
        issuer_secret = f.add_issuer(*st, "ca");
    }
    CHECK_THAT(test::key_in_store_files(f.path, domain_key), Contains("of its PEM")); // there to find
    auto key = load(f.key_path);
    require_error(Store::open(f.path, {.create = false, .actor = "test", .clock = nullptr}, key), Code::invalid,
                  "keeps its private keys in the clear: 'certfsctl rekey-store --new-key " + f.key_path +
                      "' seals them");

    {
        auto st = f.open(nullptr);
        auto report = st->rekey(key).value();
        CHECK(report.generations == 1);
        CHECK(report.issuers == 1);
        CHECK(report.cleaned);
        CHECK(st->sealed_by() == key->id());
        CHECK(st->current_generation("clear.test").value().key_pem == domain_key);
    }
    INFO("in the files after rekey: " << test::key_in_store_files(f.path, domain_key));
    CHECK(test::key_in_store_files(f.path, domain_key).empty());
    CHECK(test::key_in_store_files(f.path, issuer_secret).empty());

    // To a second key: the first no longer opens the store.
    auto second = load(write_key(f.dir, "second.key"));
    {
        auto st = f.open(key);
        REQUIRE(st->rekey(second).ok());
    }
    require_error(Store::open(f.path, {.create = false, .actor = "test", .clock = nullptr}, key), Code::invalid,
                  "is not the key this store is sealed by");
    {
        auto st = f.open(second);
        CHECK(st->issuer_secret("ca").value() == issuer_secret);
        // A secret that does not open stops the rekey, and nothing changes.
        REQUIRE(st->db_for_testing()
                    .exec("UPDATE issuers SET secret = 'certfs-sealed:1:" + second->id() + ":AAAA' WHERE name = 'ca'")
                    .ok());
        require_error(st->rekey(nullptr), Code::corrupt, "the sealed secret of issuers ca");
        CHECK(st->sealed_by() == second->id());
        CHECK(st->current_generation("clear.test").value().key_pem == domain_key);
        REQUIRE(st->update_issuer("ca", "{}", issuer_secret).ok());
        // Back to the clear.
        REQUIRE(st->rekey(nullptr).ok());
        CHECK_FALSE(st->sealed_by());
    }
    auto st = f.open(nullptr);
    CHECK(st->current_generation("clear.test").value().key_pem == domain_key);
    CHECK(st->issuer_secret("ca").value() == issuer_secret);
}

TEST_CASE("store key: a pending request's key is sealed, opens for its domain, and is re-sealed by rekey")
{
    KeyFixture f;
    auto key = load(f.key_path);
    auto st = f.open(key, true);
    f.add(*st, "pending.test");
    f.add_issuer(*st, "ca");
    const std::string pending_key = f.add_pending(*st, "pending.test", "ca");
    CHECK(st->pending("pending.test").value()->key_pem == pending_key);
    REQUIRE(st->db_for_testing().exec("PRAGMA wal_checkpoint(TRUNCATE)").ok());
    CHECK(test::key_in_store_files(f.path, pending_key).empty());
    auto second = load(write_key(f.dir, "second.key"));
    auto report = st->rekey(second).value();
    CHECK(report.pending == 1);
    CHECK(report.cleaned);
    CHECK(st->pending("pending.test").value()->key_pem == pending_key);
}

TEST_CASE("store key: a process that opened the store before a rekey writes no secret with the old key")
{
    KeyFixture f;
    auto key = load(f.key_path);
    auto before = f.open(key, true);
    f.add(*before, "one.test");
    {
        auto other = f.open(key);
        REQUIRE(other->rekey(load(write_key(f.dir, "second.key"))).ok());
    }
    DomainConfig c;
    c.name = "two.test";
    c.dns_names = {c.name};
    auto leaf = make_leaf(f.ca, {c.dns_names, {}});
    require_error(before->add_domain(c, GenerationInput{leaf.key_pem, leaf.cert_pem, f.ca.cert_pem, Reason::issued}),
                  Code::conflict, "the store was rekeyed since this process opened it");
    CHECK(before->list_domains().value().size() == 1);
}

TEST_CASE("store key: a key in the clear written into a sealed store by hand is refused, not served")
{
    KeyFixture f;
    auto key = load(f.key_path);
    auto st = f.open(key, true);
    f.add(*st, "planted.test");
    const std::string planted = make_leaf(f.ca, {{"planted.test"}, {}}).key_pem;
    REQUIRE(st->db_for_testing().exec("UPDATE generations SET key_pem = '" + planted + "'").ok());
    require_error(st->current_generation("planted.test"), Code::corrupt,
                  "the secret of generations 1 1 is in the clear in a store sealed by a store key");
}

TEST_CASE("store key: rekey takes away keys that rows deleted before left in free pages")
{
    KeyFixture f;
    std::string deleted_key;
    {
        auto st = f.open(nullptr, true);
        f.add(*st, "old.test");
        f.add_issuer(*st, "ca");
        // A store of an older certfs, without secure_delete: a pending request's row deleted
        // at a commit leaves its key in a free page.
        REQUIRE(st->db_for_testing().exec("PRAGMA secure_delete = OFF").ok());
        deleted_key = f.add_pending(*st, "old.test", "ca");
        REQUIRE(st->drop_pending("old.test").ok());
        REQUIRE(st->db_for_testing().exec("PRAGMA wal_checkpoint(TRUNCATE)").ok());
    }
    CHECK_FALSE(test::key_in_store_files(f.path, deleted_key).empty()); // the free page holds it
    auto st = f.open(nullptr);
    REQUIRE(st->rekey(load(f.key_path)).value().cleaned);
    INFO("in the files after rekey: " << test::key_in_store_files(f.path, deleted_key));
    CHECK(test::key_in_store_files(f.path, deleted_key).empty());
}
