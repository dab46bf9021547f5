// The store's invariants, each with a test that tries to break it.
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

#include <catch2/catch.hpp>

#include "store/lease.hpp"
#include "store/mount.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"
#include "store/validate.hpp"
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

struct Fixture {
    TempDir dir;
    std::string path = (dir / "certfs.db").string();
    FakeClock clock{std::chrono::system_clock::now()};
    std::unique_ptr<Store> store = open_store();
    TestCa ca;

    std::unique_ptr<Store> open_store(bool create = true)
    {
        return Store::open(path, {.create = create, .actor = "test", .clock = &clock}).value();
    }

    DomainConfig config(const std::string& name, std::vector<std::string> dns = {}, std::vector<std::string> ip = {})
    {
        DomainConfig c;
        c.name = name;
        c.dns_names = dns.empty() && ip.empty() ? std::vector<std::string>{name} : dns;
        c.ip_addresses = ip;
        return c;
    }

    GenerationInput input(const test::TestLeaf& leaf, Reason reason = Reason::issued)
    {
        return {leaf.key_pem, leaf.cert_pem, ca.cert_pem, reason};
    }

    // Adds `name` with a first generation covering its names.
    std::int64_t add(const std::string& name, std::vector<std::string> dns = {})
    {
        auto c = config(name, dns);
        return store->add_domain(c, input(make_leaf(ca, {c.dns_names, {}}))).value();
    }

    std::int64_t renew(const std::string& name)
    {
        auto d = store->get_domain(name).value();
        return store->commit_one({name, d.current_gen, input(make_leaf(ca, {d.dns_names, {}}), Reason::renewed)})
            .value();
    }

    std::size_t generations(const std::string& name) { return store->history(name).value().size(); }
    std::int64_t current(const std::string& name) { return store->get_domain(name).value().current_gen.value(); }
};

std::int64_t query_int(Store& store, const char* sql)
{
    auto stmt = store.db_for_testing().prepare(sql).value();
    REQUIRE(stmt.step().value());
    return stmt.int64(0);
}

} // namespace

TEST_CASE("opening: a missing store is not created unless asked, and the schema is set up once")
{
    TempDir dir;
    auto path = (dir / "certfs.db").string();
    require_error(Store::open(path, {}), Code::not_found, "certfsctl init");
    REQUIRE_FALSE(std::filesystem::exists(path));

    auto store = Store::open(path, {.create = true, .actor = "", .clock = nullptr}).value();
    CHECK((std::filesystem::status(path).permissions() & std::filesystem::perms::all) ==
          (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
    CHECK(query_int(*store, "PRAGMA user_version") == k_schema_version);
    CHECK(query_int(*store, "PRAGMA foreign_keys") == 1);
    CHECK(query_int(*store, "PRAGMA synchronous") == 2); // FULL
    CHECK(query_int(*store, "PRAGMA busy_timeout") > 0);
    {
        auto mode = store->db_for_testing().prepare("PRAGMA journal_mode").value();
        REQUIRE(mode.step().value());
        CHECK(mode.text(0) == "wal");
    }
    store.reset();

    auto again = Store::open(path, {.create = true, .actor = "", .clock = nullptr}).value();
    CHECK(query_int(*again, "SELECT COUNT(*) FROM events WHERE action = 'migrate'") == 1);
}

TEST_CASE("opening: a store from a newer certfs is refused and not downgraded")
{
    Fixture f;
    REQUIRE(f.store->db_for_testing().exec("PRAGMA user_version = 99").ok());
    f.store.reset();
    require_error(Store::open(f.path, {}), Code::invalid, "newer");
}

TEST_CASE("durability: a commit that returned is in the files as a power cut leaves them, checkpoints included")
{
    Fixture f;
    f.add("durable.test");
    CHECK(query_int(*f.store, "PRAGMA synchronous") == 2); // FULL: the WAL is synced at each commit
    TempDir copies;
    std::int64_t checkpoints_crossed = 0;
    std::int64_t last_sequence = -1;
    constexpr int k_commits = 400; // several automatic checkpoints (every 1,000 WAL pages)
    for (int i = 0; i < k_commits; ++i) {
        const std::int64_t gen = f.renew("durable.test");
        // Right after the acknowledgement, with the writer's connection still open and nothing
        // else done: the database and its WAL as they are on disk now. The -shm file is not
        // copied; it is rebuilt from the WAL, as after a reboot.
        const auto copy = copies / ("copy" + std::to_string(i) + ".db");
        std::filesystem::copy_file(f.path, copy);
        if (std::filesystem::exists(f.path + "-wal")) {
            // The WAL header's checkpoint sequence number (big-endian, at byte 12) grows each time
            // the log restarts after a checkpoint.
            const std::string header = test::read_file(f.path + "-wal").substr(0, 32);
            REQUIRE(header.size() == 32);
            std::int64_t sequence = 0;
            for (int b = 12; b < 16; ++b) {
                sequence = sequence * 256 + static_cast<unsigned char>(header[static_cast<std::size_t>(b)]);
            }
            checkpoints_crossed += sequence != last_sequence && last_sequence >= 0 ? 1 : 0;
            last_sequence = sequence;
            std::filesystem::copy_file(f.path + "-wal", copy.string() + "-wal");
        }
        {
            auto reopened = Store::open(copy.string(), {.create = false, .actor = "power", .clock = &f.clock});
            REQUIRE(reopened.ok());
            auto d = (*reopened)->get_domain("durable.test");
            REQUIRE(d.ok());
            INFO("commit " << i);
            REQUIRE(d->current_gen == gen);
            const auto g = (*reopened)->current_generation("durable.test").value();
            CHECK(g.gen == gen);
            auto check = (*reopened)->db_for_testing().prepare("PRAGMA integrity_check").value();
            REQUIRE(check.step().value());
            CHECK(check.text(0) == "ok");
        }
        std::filesystem::remove(copy);
        std::filesystem::remove(copy.string() + "-wal");
        std::filesystem::remove(copy.string() + "-shm");
    }
    std::printf("durability: %d commits, each in a copy taken at once; the WAL restarted %lld times\n", k_commits,
                static_cast<long long>(checkpoints_crossed));
    CHECK(checkpoints_crossed > 0);
    CHECK(f.generations("durable.test") == k_commits + 1);
}

TEST_CASE("opening: a file that is not a store is refused as corrupt")
{
    TempDir dir;
    test::write_file(dir / "junk.db", std::string(4096, 'x'));
    std::filesystem::permissions(dir / "junk.db",
                                 std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto r = Store::open((dir / "junk.db").string(), {});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::corrupt);
}

TEST_CASE("domain names are directory names")
{
    CHECK(check_domain_name("example.com").ok());
    CHECK(check_domain_name("a-1.b").ok());
    require_error(check_domain_name(""), Code::invalid, "empty");
    require_error(check_domain_name("Example.com"), Code::invalid, "lower-case");
    require_error(check_domain_name("a/b"), Code::invalid, "lower-case");
    require_error(check_domain_name("a_b"), Code::invalid, "lower-case");
    require_error(check_domain_name(".hidden"), Code::invalid, "starts with '.'");
    require_error(check_domain_name("-x"), Code::invalid, "starts with '-'");
    require_error(check_domain_name("a..b"), Code::invalid, "'..'");
    require_error(check_domain_name(".."), Code::invalid, "starts with '.'");
    const std::string l63(63, 'a');
    CHECK(check_domain_name(l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b')).ok());
    require_error(check_domain_name(std::string(254, 'a')), Code::invalid, "253");
    require_error(check_domain_name(std::string(64, 'a') + ".com"), Code::invalid, "label longer than 63");
    require_error(check_domain_name("example.com."), Code::invalid, "ends with '.'");
    require_error(check_domain_name("a-.example.com"), Code::invalid, "a label starts or ends with '-'");
    require_error(check_domain_name("a.-b.com"), Code::invalid, "a label starts or ends with '-'");
    CHECK(check_domain_name("xn--80ak6aa92e.com").ok()); // an IDN in its A-label form
    // The mount serves what older versions accepted, so their stores keep their names.
    CHECK(check_served_name("example.com.").ok());
    CHECK(check_served_name("a-.example.com").ok());
    CHECK(check_served_name(std::string(64, 'a') + ".com").ok());
    for (const char* name : {"..", ".x", "-x", "a..b", "A.com", "a/b", "a\x1b-b", "\xd0\xb0.com", ""}) {
        INFO(name);
        CHECK_FALSE(check_served_name(name).ok());
    }
    CHECK_FALSE(check_served_name(std::string(254, 'a')).ok());
}

TEST_CASE("hostile names are refused with the bytes escaped, never echoed raw")
{
    // A Cyrillic 'а' (U+0430) in place of the Latin one: a homograph of apple.com.
    require_error(check_domain_name("\xd0\xb0pple.com"), Code::invalid,
                  "invalid domain name '\\xd0\\xb0pple.com': not ASCII: write an internationalized name in its "
                  "IDNA form");
    require_error(check_domain_name(std::string("a\0b", 3)), Code::invalid, "'a\\x00b': contains a control character");
    require_error(check_domain_name("x\x1b[2Jy.com"), Code::invalid, "'x\\x1b[2Jy.com': contains a control character");
    require_error(check_domain_name("a\nb"), Code::invalid, "contains a control character");
    require_error(check_domain_name("a\x7f"), Code::invalid, "contains a control character");
    require_error(check_domain_name("it's"), Code::invalid, "'it\\x27s'");
    require_error(check_domain_name("../etc"), Code::invalid, "only lower-case letters");
    require_error(check_domain_name("a/../b"), Code::invalid, "only lower-case letters");
    // An over-long name is cut in the message, with its length.
    auto r = check_domain_name(std::string(10000, 'a'));
    REQUIRE_FALSE(r.ok());
    CHECK(r.message() ==
          "invalid domain name '" + std::string(64, 'a') + "...' (10000 characters): longer than 253 characters");
    // The same for SANs.
    require_error(normalize_dns_name("\xd0\xb0pple.com").status(), Code::invalid,
                  "invalid DNS name '\\xd0\\xb0pple.com': not ASCII");
    require_error(normalize_dns_name("a\tb.com").status(), Code::invalid, "contains a control character");
    require_error(normalize_dns_name(std::string(64, 'a') + ".com").status(), Code::invalid, "label longer than 63");
    CHECK(normalize_dns_name("WWW.Example.COM").value() == "www.example.com");
}

TEST_CASE("DNS names: lower-cased and wildcards only as the whole first label")
{
    CHECK(normalize_dns_name("WWW.Example.COM").value() == "www.example.com");
    CHECK(normalize_dns_name("*.example.com").value() == "*.example.com");
    require_error(normalize_dns_name("*.*.example.com"), Code::invalid, "wildcard");
    require_error(normalize_dns_name("a*.example.com"), Code::invalid, "wildcard");
    require_error(normalize_dns_name("bad_name.com"), Code::invalid, "letters, digits");
    require_error(normalize_dns_name("a..com"), Code::invalid, "empty label");
    require_error(normalize_dns_name("-a.com"), Code::invalid, "'-'");
    require_error(normalize_dns_name(std::string(64, 'a') + ".com"), Code::invalid, "63");
}

TEST_CASE("wildcard SANs cover exactly one label")
{
    CHECK(san_covers("*.example.com", "a.example.com"));
    CHECK_FALSE(san_covers("*.example.com", "example.com"));
    CHECK_FALSE(san_covers("*.example.com", "a.b.example.com"));
    CHECK_FALSE(san_covers("*.example.com", "a.example.org"));
    CHECK(san_covers("*.example.com", "*.example.com"));
    CHECK_FALSE(san_covers("a.example.com", "*.example.com"));
    CHECK(san_covers("example.com", "example.com"));
}

TEST_CASE("a bad domain configuration is refused and nothing is stored")
{
    Fixture f;
    auto leaf = make_leaf(f.ca, {{"ok.test"}, {}});
    require_error(f.store->add_domain(f.config("Bad.Name"), std::nullopt), Code::invalid, "invalid domain name");
    require_error(f.store->add_domain(f.config("x.test", {"bad_name.test"}), std::nullopt), Code::invalid,
                  "invalid DNS name");
    require_error(f.store->add_domain(f.config("x.test", {}, {"300.1.1.1"}), std::nullopt), Code::invalid,
                  "not an IP address");
    auto unknown_issuer = f.config("x.test");
    unknown_issuer.issuer = "nope";
    require_error(f.store->add_domain(unknown_issuer, std::nullopt), Code::not_found, "no issuer named nope");
    auto bad_mode = f.config("x.test");
    bad_mode.mode = 01777;
    require_error(f.store->add_domain(bad_mode, std::nullopt), Code::invalid, "mode");
    auto bad_bundle = f.config("x.test");
    bad_bundle.bundle = "Bad Bundle";
    require_error(f.store->add_domain(bad_bundle, std::nullopt), Code::invalid, "bundle");
    auto bad_hook = f.config("x.test");
    bad_hook.deploy_hooks = {"systemctl reload nginx\nrm -rf /"};
    require_error(f.store->add_domain(bad_hook, std::nullopt), Code::invalid, "one line");
    // A first generation that does not validate keeps the domain out too.
    require_error(f.store->add_domain(f.config("x.test"), f.input(leaf)), Code::invalid,
                  "does not cover DNS name x.test");
    CHECK(f.store->list_domains().value().empty());

    f.add("dup.test");
    require_error(f.store->add_domain(f.config("dup.test"), std::nullopt), Code::conflict, "already exists");
    CHECK(f.store->list_domains().value().size() == 1);
}

TEST_CASE("configurations are stored in canonical form")
{
    Fixture f;
    auto c = f.config("site.test", {"WWW.Site.Test", "www.site.test", "site.test"}, {"::FFFF:1.2.3.4", "2001:DB8::1"});
    c.renew_before = 30 * 24h;
    c.deploy_hooks = {"systemctl reload nginx", "/usr/local/bin/notify --all"};
    c.bundle = "web";
    c.mode = 0640;
    c.owner_uid = 33;
    c.group_gid = 33;
    c.reuse_key = true;
    c.key_type = pki::KeyType::ed25519;
    REQUIRE(f.store->add_domain(c, std::nullopt).ok());
    auto d = f.store->get_domain("site.test").value();
    CHECK(d.dns_names == std::vector<std::string>{"www.site.test", "site.test"});
    CHECK(d.ip_addresses == std::vector<std::string>{"::ffff:1.2.3.4", "2001:db8::1"});
    CHECK(d.renew_before == Duration(30 * 24h));
    CHECK(d.deploy_hooks == c.deploy_hooks);
    CHECK(d.bundle == "web");
    CHECK(d.mode == 0640);
    CHECK(d.owner_uid == 33);
    CHECK(d.group_gid == 33);
    CHECK(d.reuse_key);
    CHECK(d.key_type == pki::KeyType::ed25519);
    CHECK(d.state == DomainState::monitoring);
    CHECK_FALSE(d.current_gen);
}

TEST_CASE("validation: a generation becomes current only when every check passes")
{
    Fixture f;
    f.add("v.test", {"v.test", "*.v.test"});
    auto names = pki::Names{{"v.test", "*.v.test"}, {}};
    auto now = f.clock.now();
    auto try_commit = [&](const GenerationInput& in) { return f.store->commit_one({"v.test", 1, in}); };

    SECTION("the key must match the certificate")
    {
        auto leaf = make_leaf(f.ca, names);
        auto other = make_leaf(f.ca, names);
        require_error(try_commit({other.key_pem, leaf.cert_pem, f.ca.cert_pem}), Code::invalid,
                      "key match): the private key does not match");
    }
    SECTION("the chain must link the leaf to its issuer")
    {
        TestCa stranger("/CN=certfs test CA"); // same name, other key: only the signature tells
        auto leaf = make_leaf(stranger, names);
        require_error(try_commit({leaf.key_pem, leaf.cert_pem, f.ca.cert_pem}), Code::invalid, "(chain)");
        require_error(try_commit({leaf.key_pem, leaf.cert_pem, ""}), Code::invalid, "chain is missing");
    }
    SECTION("the leaf must be within its validity period")
    {
        auto expired = make_leaf(f.ca, names, now - 48h, now - 1h);
        require_error(try_commit(f.input(expired)), Code::invalid, "(validity): the certificate expired at");
        auto future = make_leaf(f.ca, names, now + 1h, now + 48h);
        require_error(try_commit(f.input(future)), Code::invalid, "(validity): the certificate is not valid before");
    }
    SECTION("the SANs must cover every configured name")
    {
        auto partial = make_leaf(f.ca, {{"v.test"}, {}});
        require_error(try_commit(f.input(partial)), Code::invalid, "does not cover DNS name *.v.test");
        auto wildcard_only = make_leaf(f.ca, {{"*.v.test"}, {}});
        require_error(try_commit(f.input(wildcard_only)), Code::invalid, "does not cover DNS name v.test");
    }
    SECTION("every file must parse, and the message names the file")
    {
        auto leaf = make_leaf(f.ca, names);
        require_error(try_commit({"not a key", leaf.cert_pem, f.ca.cert_pem}), Code::invalid, "(privkey)");
        require_error(try_commit({leaf.cert_pem, leaf.cert_pem, f.ca.cert_pem}), Code::invalid, "(privkey)");
        require_error(
            try_commit({leaf.key_pem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", f.ca.cert_pem}),
            Code::invalid, "(cert)");
        require_error(try_commit({leaf.key_pem, "", f.ca.cert_pem}), Code::invalid, "(cert)");
        require_error(try_commit({leaf.key_pem, leaf.cert_pem, "garbage"}), Code::invalid, "(chain)");
        require_error(try_commit({leaf.key_pem, leaf.cert_pem, f.ca.cert_pem + leaf.key_pem}), Code::invalid,
                      "(chain)");
    }
    // Whatever failed, nothing changed.
    CHECK(f.generations("v.test") == 1);
    CHECK(f.current("v.test") == 1);
}

TEST_CASE("validation: IP SANs must match exactly and in canonical form")
{
    Fixture f;
    auto c = f.config("ip.test", {}, {"192.0.2.7", "2001:db8::7"});
    auto leaf = make_leaf(f.ca, {{}, {"192.0.2.7", "2001:db8:0:0::7"}});
    REQUIRE(f.store->add_domain(c, f.input(leaf)).ok());
    auto wrong = make_leaf(f.ca, {{}, {"192.0.2.7", "2001:db8::8"}});
    require_error(f.store->commit_one({"ip.test", 1, f.input(wrong)}), Code::invalid,
                  "does not cover IP address 2001:db8::7");
}

TEST_CASE("stored generations are canonical: PKCS#8 key and leaf alone and chain apart")
{
    Fixture f;
    auto c = f.config("canon.test");
    auto leaf = make_leaf(f.ca, {{"canon.test"}, {}});
    // A fullchain in the cert file, with text around it, and no separate chain.
    GenerationInput in{leaf.key_pem, "\n" + leaf.cert_pem + f.ca.cert_pem + "\n", "", Reason::imported};
    REQUIRE(f.store->add_domain(c, in).ok());
    auto g = f.store->current_generation("canon.test").value();
    CHECK(g.cert_pem == leaf.cert_pem);
    CHECK(g.chain_pem == f.ca.cert_pem);
    CHECK(g.fullchain_pem() == leaf.cert_pem + f.ca.cert_pem);
    CHECK(g.combined_pem() == g.key_pem + leaf.cert_pem + f.ca.cert_pem);
    CHECK(g.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    CHECK(g.serial_hex == leaf.serial_hex);
    CHECK(g.reason == Reason::imported);
    CHECK(g.current);
}

TEST_CASE("generations are immutable and even to plain SQL")
{
    Fixture f;
    f.add("imm.test");
    auto before = f.store->current_generation("imm.test").value();
    // A key in the clear replaced by another in the clear, too (only rekey-store seals or
    // unseals a key, store_key.hpp).
    for (const char* sql : {"UPDATE generations SET cert_pem = 'x'", "UPDATE generations SET gen = 7",
                            "UPDATE generations SET not_after = 0", "UPDATE generations SET key_pem = 'x'"}) {
        require_error(f.store->db_for_testing().exec(sql), Code::conflict, "generations are immutable");
    }
    auto after = f.store->current_generation("imm.test").value();
    CHECK(after.cert_pem == before.cert_pem);
    CHECK(after.key_pem == before.key_pem);
    CHECK(after.gen == before.gen);
}

TEST_CASE("the current generation must exist")
{
    Fixture f;
    f.add("cur.test");
    require_error(f.store->db_for_testing().exec("UPDATE domains SET current_gen = 99"), Code::conflict, "must exist");
}

TEST_CASE("compare-and-swap: a stale writer gets a conflict and not a silent overwrite")
{
    Fixture f;
    f.add("cas.test");
    // Two connections, as two processes would have.
    auto other = f.open_store(false);
    auto start = f.store->get_domain("cas.test").value().current_gen; // both start from 1
    auto leaf_a = make_leaf(f.ca, {{"cas.test"}, {}});
    auto leaf_b = make_leaf(f.ca, {{"cas.test"}, {}});
    REQUIRE(other->commit_one({"cas.test", start, f.input(leaf_b, Reason::renewed)}).value() == 2);
    require_error(f.store->commit_one({"cas.test", start, f.input(leaf_a, Reason::renewed)}), Code::conflict,
                  "generation 2 is current, not generation 1");
    auto current = f.store->current_generation("cas.test").value();
    CHECK(current.gen == 2);
    CHECK(current.serial_hex == leaf_b.serial_hex);
    CHECK(f.generations("cas.test") == 2);

    // A writer that believes there is no generation yet is stale as well.
    require_error(f.store->commit_one({"cas.test", std::nullopt, f.input(leaf_a)}), Code::conflict,
                  "not no generation");
}

TEST_CASE("a bundle switches in one transaction: all members or none")
{
    Fixture f;
    f.add("a.test");
    f.add("b.test");
    auto good_a = make_leaf(f.ca, {{"a.test"}, {}});
    auto bad_b = make_leaf(f.ca, {{"other.test"}, {}});
    auto r = f.store->commit(
        {{"a.test", 1, f.input(good_a, Reason::renewed)}, {"b.test", 1, f.input(bad_b, Reason::renewed)}});
    require_error(r, Code::invalid, "domain b.test");
    CHECK(f.current("a.test") == 1);
    CHECK(f.generations("a.test") == 1);
    CHECK(f.current("b.test") == 1);

    auto good_b = make_leaf(f.ca, {{"b.test"}, {}});
    auto gens =
        f.store
            ->commit({{"a.test", 1, f.input(good_a, Reason::renewed)}, {"b.test", 1, f.input(good_b, Reason::renewed)}})
            .value();
    CHECK(gens == std::vector<std::int64_t>{2, 2});
    CHECK(f.current("a.test") == 2);
    CHECK(f.current("b.test") == 2);
}

TEST_CASE("(issuer and serial) is unique across the store")
{
    Fixture f;
    f.add("s1.test");
    auto first = f.store->current_generation("s1.test").value();
    // The same CA issuing the same serial again, for another domain.
    auto now = f.clock.now();
    auto dup = make_leaf(f.ca, {{"s2.test"}, {}}, now - 1h, now + 24h, first.serial_hex);
    require_error(f.store->add_domain(f.config("s2.test"), f.input(dup)), Code::conflict,
                  "duplicate serial: " + first.issuer_dn + " already issued serial " + first.serial_hex +
                      " (generation 1 of s1.test)");
    CHECK_FALSE(f.store->get_domain("s2.test").ok());
    // Plain SQL cannot sneak one in either.
    require_error(f.store->db_for_testing().exec(
                      "INSERT INTO generations SELECT domain_id, gen + 1, key_pem, cert_pem, chain_pem, issuer_dn,"
                      " serial, not_before, not_after, created_at, reason FROM generations"),
                  Code::conflict, "UNIQUE");
    // Another CA may use the same serial.
    TestCa other("/CN=another CA");
    auto same_serial = make_leaf(other, {{"s2.test"}, {}}, now - 1h, now + 24h, first.serial_hex);
    CHECK(f.store
              ->add_domain(f.config("s2.test"),
                           GenerationInput{same_serial.key_pem, same_serial.cert_pem, other.cert_pem})
              .ok());
}

TEST_CASE("generation numbers only grow, across a rollback and across a remove and re-add")
{
    Fixture f;
    f.add("grow.test");
    f.renew("grow.test");
    f.renew("grow.test");
    CHECK(f.store->rollback("grow.test", std::nullopt).value() == 2);
    CHECK(f.renew("grow.test") == 4); // not a reused 3
    require_error(f.store->db_for_testing().exec(
                      "INSERT INTO generations SELECT domain_id, 2, key_pem, cert_pem, chain_pem, issuer_dn,"
                      " serial || 'ff', not_before, not_after, created_at, reason FROM generations WHERE gen = 1"),
                  Code::conflict, "only grow");

    REQUIRE(f.store->remove_domain("grow.test").ok());
    CHECK_FALSE(f.store->get_domain("grow.test").ok());
    f.add("grow.test");
    CHECK(f.current("grow.test") == 5);
}

TEST_CASE("rollback makes an older generation current without renumbering")
{
    Fixture f;
    f.add("rb.test");
    f.renew("rb.test");
    f.renew("rb.test");
    CHECK(f.store->rollback("rb.test", std::nullopt).value() == 2);
    CHECK(f.store->rollback("rb.test", std::nullopt).value() == 1);
    require_error(f.store->rollback("rb.test", std::nullopt), Code::not_found, "no generation older than 1");
    CHECK(f.store->rollback("rb.test", 3).value() == 3);
    require_error(f.store->rollback("rb.test", 3), Code::invalid, "already current");
    require_error(f.store->rollback("rb.test", 9), Code::not_found, "has no generation 9");
    CHECK(f.generations("rb.test") == 3);
    auto history = f.store->history("rb.test").value();
    CHECK(std::count_if(history.begin(), history.end(), [](const Generation& g) { return g.current; }) == 1);
    CHECK(history.back().current);
}

TEST_CASE("move now: each commit, rollback or import made with --now counts, and the next commit keeps the count")
{
    Fixture f;
    f.add("now.test");
    auto count = [&] { return f.store->get_domain("now.test").value().move_now_count; };
    auto last_event = [&] { return f.store->events(std::string_view("now.test"), 10).value().back(); };
    CHECK(count() == 0);
    auto d = f.store->get_domain("now.test").value();
    auto gen = f.store->commit(
        {{"now.test", d.current_gen, f.input(make_leaf(f.ca, {d.dns_names, {}}), Reason::renewed)}}, true);
    REQUIRE(gen.ok());
    CHECK(count() == 1);
    CHECK(last_event().action == "move now");
    CHECK(last_event().detail == "every reader moves to generation 2 at once");
    // A commit without it right after does not hide it from a daemon that has not looked yet.
    f.renew("now.test");
    CHECK(count() == 1);
    REQUIRE(f.store->rollback("now.test", 2, true).ok());
    CHECK(count() == 2);
    REQUIRE(f.store->rollback("now.test", 1).ok());
    CHECK(count() == 2);
    REQUIRE(f.store->import_generation("now.test", f.input(make_leaf(f.ca, {{"now.test"}, {}})), true).ok());
    CHECK(count() == 3);
    CHECK(last_event().detail == "every reader moves to generation 4 at once");
}

TEST_CASE("rollback refuses a generation that no longer validates")
{
    Fixture f;
    auto now = f.clock.now();
    auto c = f.config("old.test");
    auto short_lived = make_leaf(f.ca, {{"old.test"}, {}}, now - 1h, now + 2h);
    REQUIRE(f.store->add_domain(c, f.input(short_lived)).ok());
    f.renew("old.test");
    f.clock.advance(3h);
    require_error(f.store->rollback("old.test", 1), Code::invalid,
                  "generation 1 cannot become current: validation failed (validity)");
    CHECK(f.current("old.test") == 2);
}

TEST_CASE("import creates a domain for the certificate's names and or renews an existing one")
{
    Fixture f;
    auto leaf = make_leaf(f.ca, {{"imp.test", "www.imp.test"}, {"192.0.2.1"}});
    CHECK(f.store->import_generation("imp.test", {leaf.key_pem, leaf.cert_pem, f.ca.cert_pem}).value() == 1);
    auto d = f.store->get_domain("imp.test").value();
    CHECK_FALSE(d.issuer);
    CHECK(d.dns_names == std::vector<std::string>{"imp.test", "www.imp.test"});
    CHECK(d.ip_addresses == std::vector<std::string>{"192.0.2.1"});
    CHECK(f.store->current_generation("imp.test").value().reason == Reason::imported);

    auto next = make_leaf(f.ca, {{"imp.test", "www.imp.test"}, {"192.0.2.1"}});
    CHECK(f.store->import_generation("imp.test", {next.key_pem, next.cert_pem, f.ca.cert_pem}).value() == 2);
    auto narrower = make_leaf(f.ca, {{"imp.test"}, {}});
    require_error(f.store->import_generation("imp.test", {narrower.key_pem, narrower.cert_pem, f.ca.cert_pem}),
                  Code::invalid, "does not cover DNS name www.imp.test");
    require_error(f.store->import_generation("Bad..name", {next.key_pem, next.cert_pem, f.ca.cert_pem}), Code::invalid,
                  "invalid domain name");
    CHECK(f.generations("imp.test") == 2);
}

TEST_CASE("issuers: names are unique, and none is removed while a domain uses it")
{
    Fixture f;
    NewIssuer issuer{"ca1", "local", "{}", "secret", f.ca.cert_pem};
    REQUIRE(f.store->add_issuer(issuer).ok());
    require_error(f.store->add_issuer(issuer), Code::conflict, "already exists");
    CHECK(f.store->issuer_secret("ca1").value() == "secret");
    auto c = f.config("user.test");
    c.issuer = "ca1";
    REQUIRE(f.store->add_domain(c, std::nullopt).ok());
    CHECK(f.store->get_issuer("ca1").value().domains == 1);
    require_error(f.store->remove_issuer("ca1"), Code::conflict, "used by 1 domain(s): user.test");
    REQUIRE(f.store->remove_domain("user.test").ok());
    REQUIRE(f.store->remove_issuer("ca1").ok());
    require_error(f.store->get_issuer("ca1"), Code::not_found, "no issuer named ca1");
}

TEST_CASE("leases: one holder at a time: an expired lease of a holder on another host is taken over")
{
    Fixture f;
    auto other = f.open_store(false);
    LeaseHolder remote = this_process();
    remote.machine_id = "0123456789abcdef0123456789abcdef";
    REQUIRE(f.store->acquire_lease("domain:l.test", "daemon A", 10min, remote).ok());
    require_error(other->acquire_lease("domain:l.test", "daemon B", 10min), Code::conflict,
                  "renewal already in progress (domain:l.test is held by daemon A");
    // The holder may extend its lease (heartbeat); others may not release it.
    REQUIRE(f.store->acquire_lease("domain:l.test", "daemon A", 10min, remote).ok());
    REQUIRE(other->release_lease("domain:l.test", "daemon B").ok());
    CHECK(f.store->leases().value().size() == 1);
    // Other scopes are independent.
    REQUIRE(other->acquire_lease("domain:m.test", "daemon B", 10min).ok());

    f.clock.advance(11min);
    REQUIRE(other->acquire_lease("domain:l.test", "daemon B", 10min).ok());
    CHECK(f.store->leases().value().front().owner == "daemon B");
    REQUIRE(other->release_lease("domain:l.test", "daemon B").ok());
    REQUIRE(f.store->acquire_lease("domain:l.test", "daemon A", 10min).ok());
}

TEST_CASE("renewal state is recorded with the error and the next attempt")
{
    Fixture f;
    f.add("st.test");
    auto next = f.clock.now() + 1min;
    REQUIRE(f.store->set_state("st.test", DomainState::backoff, "CA unreachable", next, true).ok());
    auto d = f.store->get_domain("st.test").value();
    CHECK(d.state == DomainState::backoff);
    CHECK(d.last_error == "CA unreachable");
    CHECK(d.failures == 1);
    CHECK(to_unix(d.next_attempt.value()) == to_unix(next));
    // A successful commit clears it.
    f.renew("st.test");
    d = f.store->get_domain("st.test").value();
    CHECK(d.state == DomainState::monitoring);
    CHECK(d.last_error.empty());
    CHECK(d.failures == 0);
    CHECK_FALSE(d.next_attempt);
    require_error(f.store->set_state("nope.test", DomainState::due, "", std::nullopt, false), Code::not_found,
                  "no domain named nope.test");
}

TEST_CASE("the event log records who did what")
{
    Fixture f;
    f.add("ev.test");
    f.renew("ev.test");
    REQUIRE(f.store->rollback("ev.test", std::nullopt).ok());
    auto events = f.store->events(std::string_view("ev.test"), 10).value();
    std::vector<std::string> actions;
    for (const auto& e : events) {
        actions.push_back(e.action);
        CHECK(e.actor == "test");
    }
    CHECK(actions == std::vector<std::string>{"add", "issued", "renewed", "rollback"});
    CHECK_THAT(events.back().detail, Contains("generation 2 -> 1"));
}

TEST_CASE("a crash in the middle of a write leaves the last committed state")
{
    Fixture f;
    f.add("crash.test");
    f.store.reset();
    pid_t pid = fork();
    if (pid == 0) {
        // The child starts changing what is served and dies before it commits.
        auto child = Store::open(f.path, {}).value();
        auto& db = child->db_for_testing();
        (void)db.exec("BEGIN IMMEDIATE");
        (void)db.exec("DELETE FROM domains");
        _exit(0);
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    auto store = f.open_store(false);
    CHECK(store->get_domain("crash.test").value().current_gen == 1);
    CHECK(store->integrity_problems().value().empty());
}

TEST_CASE("migrations: a store of an older schema is brought up to date on open and keeps its data")
{
    Fixture f;
    f.add("old.test");
    f.store.reset();
    {
        // Rebuild the file as schema version 1 had it, with the same data.
        TempDir dir;
        auto v1_path = (dir / "v1.db").string();
        auto v1 = Db::open(v1_path, true).value();
        REQUIRE(v1->exec(schema_for_testing(1)).ok());
        REQUIRE(v1->exec("ATTACH DATABASE '" + f.path + "' AS cur").ok());
        REQUIRE(v1->exec("INSERT INTO issuers SELECT * FROM cur.issuers;"
                         "INSERT INTO domains SELECT id, name, issuer_id, dns_names, ip_addresses, key_type,"
                         " reuse_key, renew_before_ms, owner_uid, group_gid, mode, bundle, deploy_hooks, state,"
                         " last_error, next_attempt, failures, NULL, created_at FROM cur.domains;"
                         "INSERT INTO generations SELECT * FROM cur.generations;"
                         "UPDATE domains SET current_gen = (SELECT current_gen FROM cur.domains WHERE cur.domains.id = "
                         "domains.id);"
                         "DETACH DATABASE cur; PRAGMA user_version = 1;")
                    .ok());
        v1.reset();
        std::filesystem::copy_file(v1_path, f.path, std::filesystem::copy_options::overwrite_existing);
        std::filesystem::permissions(f.path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
        std::filesystem::remove(f.path + "-wal");
        std::filesystem::remove(f.path + "-shm");
    }
    auto store = f.open_store(false);
    CHECK(query_int(*store, "PRAGMA user_version") == k_schema_version);
    auto d = store->get_domain("old.test").value();
    CHECK(d.current_gen == 1);
    CHECK(d.hook_error.empty());
    REQUIRE(store->set_hook_error("old.test", "exit status 1").ok());
    CHECK(store->get_domain("old.test").value().hook_error == "exit status 1");
    const std::string migrated =
        "SELECT COUNT(*) FROM events WHERE action = 'migrate' AND detail = 'schema version 1 -> " +
        std::to_string(k_schema_version) + "'";
    CHECK(query_int(*store, migrated.c_str()) == 1);
    CHECK(d.move_now_count == 0);
    CHECK_FALSE(store->pending("old.test").value().has_value());
}

TEST_CASE("opening: the generation index the filesystem reads at each change comes from an index, not the rows")
{
    Fixture f;
    f.add("plan.test");
    f.renew("plan.test");
    auto plan = f.store->db_for_testing()
                    .prepare("EXPLAIN QUERY PLAN SELECT d.name, g.gen, g.created_at FROM generations g"
                             " JOIN domains d ON d.id = g.domain_id ORDER BY d.name, g.gen")
                    .value();
    std::string said;
    while (plan.step().value()) {
        said += plan.text(3) + "\n";
    }
    INFO(said);
    CHECK(said.find("COVERING INDEX generations_created") != std::string::npos);
    auto index = f.store->generation_index().value();
    REQUIRE(index.count("plan.test") == 1);
    CHECK(index["plan.test"].size() == 2);
}

TEST_CASE("settings: set and read back")
{
    Fixture f;
    require_error(f.store->setting("mountpoint"), Code::not_found, "no setting mountpoint");
    REQUIRE(f.store->set_setting("mountpoint", "/etc/certs").ok());
    REQUIRE(f.store->set_setting("mountpoint", "/srv/certs").ok());
    CHECK(f.store->setting("mountpoint").value() == "/srv/certs");
}

TEST_CASE("pending requests: saved, replaced, read back and dropped by the commit")
{
    Fixture f;
    REQUIRE(f.store->add_issuer({"ca", "helper", "{}", "", ""}).ok());
    f.add("wait.test");
    auto none = f.store->pending("wait.test");
    REQUIRE(none.ok());
    CHECK_FALSE(none->has_value());

    PendingRequest p;
    p.domain = "wait.test";
    p.issuer = "ca";
    p.based_on = 1;
    p.key_pem = "key";
    p.csr_pem = "csr";
    p.cookie = "cookie-1";
    p.created_at = from_unix(1'700'000'000);
    p.poll_at = from_unix(1'700'000'060);
    REQUIRE(f.store->save_pending(p).ok());
    p.cookie = "cookie-2";
    REQUIRE(f.store->save_pending(p).ok()); // replaces: one request per domain
    auto got = f.store->pending("wait.test").value();
    REQUIRE(got.has_value());
    CHECK(got->issuer == "ca");
    CHECK(got->based_on == 1);
    CHECK(got->cookie == "cookie-2");
    CHECK(got->poll_at == p.poll_at);
    CHECK(query_int(*f.store, "SELECT COUNT(*) FROM pending") == 1);

    PendingRequest stray = p;
    stray.domain = "nope.test";
    require_error(f.store->save_pending(stray), Code::not_found, "nope.test");
    p.issuer = "nope";
    require_error(f.store->save_pending(p), Code::not_found, "nope");

    // A commit drops the domain's request in its transaction.
    f.renew("wait.test");
    CHECK_FALSE(f.store->pending("wait.test").value().has_value());

    // So does removing the domain.
    p.issuer = "ca";
    REQUIRE(f.store->save_pending(p).ok());
    REQUIRE(f.store->remove_domain("wait.test").ok());
    CHECK(query_int(*f.store, "SELECT COUNT(*) FROM pending") == 0);
}

TEST_CASE("a parameter that cannot be bound fails the statement before it runs")
{
    Fixture f;
    f.add("bind.test");
    {
        auto stmt = f.store->db_for_testing().prepare("DELETE FROM domains WHERE name = ?1").value();
        stmt.bind(1, "bind.test").bind(2, std::int64_t{7});
        require_error(stmt.step(), Code::io_error, "store: bind parameter 2: column index out of range");
        require_error(stmt.run(), Code::io_error, "bind parameter 2");
    }
    CHECK(f.store->get_domain("bind.test").ok()); // the DELETE never ran
    // The cached statement starts clean for its next user.
    auto again = f.store->db_for_testing().prepare("DELETE FROM domains WHERE name = ?1").value();
    CHECK(again.bind(1, "nope.test").run().ok());
}

TEST_CASE("lease scope: a bundle member holds its bundle's scope, any other domain its own")
{
    Fixture f;
    DomainConfig alone = f.config("alone.test");
    CHECK(lease_scope(alone) == "domain:alone.test");
    DomainConfig member = f.config("member.test");
    member.bundle = "web";
    CHECK(lease_scope(member) == "bundle:web");
}

TEST_CASE("lease guard: held until its scope ends, moved with its owner, released once")
{
    Fixture f;
    auto other = f.open_store(false);
    std::optional<LeaseGuard> kept;
    {
        auto guard = LeaseGuard::acquire(*f.store, "domain:g.test", "daemon A", 10min);
        REQUIRE(guard.ok());
        require_error(LeaseGuard::acquire(*other, "domain:g.test", "daemon B", 10min), Code::conflict,
                      "renewal already in progress (domain:g.test is held by daemon A");
        kept.emplace(std::move(*guard));
    } // the moved-from guard ends here and releases nothing
    CHECK(kept->scope() == "domain:g.test");
    CHECK(f.store->leases().value().size() == 1);
    kept.reset();
    CHECK(f.store->leases().value().empty());

    auto early = LeaseGuard::acquire(*f.store, "domain:g.test", "daemon A", 10min);
    REQUIRE(early.ok());
    early->release();
    CHECK(f.store->leases().value().empty());
    REQUIRE(other->acquire_lease("domain:g.test", "daemon B", 10min).ok());
    early->release(); // a second release must not drop daemon B's lease
    CHECK(f.store->leases().value().front().owner == "daemon B");
}

TEST_CASE("mount settings: recorded by a daemon, read by others, forgotten only by their daemon")
{
    Fixture f;
    CHECK(hooks_lock_dir("/var/lib/certfs/certfs.db") == "/var/lib/certfs/certfs.db.hooks");
    CHECK(load_mount(*f.store).mountpoint.empty());
    REQUIRE(save_mount(*f.store, {"/etc/certs", 1500ms}).ok());
    MountSettings read = load_mount(*f.store);
    CHECK(read.mountpoint == "/etc/certs");
    CHECK(read.pin_window == 1500ms);
    // Another daemon's end leaves this daemon's mount recorded.
    REQUIRE(forget_mount(*f.store, "/srv/certs").ok());
    CHECK(load_mount(*f.store).mountpoint == "/etc/certs");
    REQUIRE(forget_mount(*f.store, "/etc/certs").ok());
    read = load_mount(*f.store);
    CHECK(read.mountpoint.empty());
    CHECK(read.pin_window == 0ms);
}

namespace {

// Now, for a lease's acquisition time.
TimePoint wall_now() { return std::chrono::system_clock::now(); }

// When this machine booted (btime in /proc/stat).
TimePoint boot_time()
{
    std::ifstream in("/proc/stat");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("btime ", 0) == 0) {
            return TimePoint(std::chrono::seconds(std::stoll(line.substr(6))));
        }
    }
    FAIL("no btime in /proc/stat");
    return {};
}

// A child process that waits to be killed: a lease holder on this host the test can end.
struct Sleeper {
    pid_t pid = -1;
    // With a name, the child renames itself (what /proc/<pid>/stat shows as its command) before
    // the constructor returns.
    explicit Sleeper(const char* name = nullptr)
    {
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        pid = ::fork();
        if (pid == 0) {
            if (name != nullptr) {
                ::prctl(PR_SET_NAME, name);
            }
            (void)!::write(ready[1], "x", 1);
            ::pause();
            ::_exit(0);
        }
        char byte = 0;
        (void)!::read(ready[0], &byte, 1);
        ::close(ready[0]);
        ::close(ready[1]);
        REQUIRE(pid > 0);
    }
    ~Sleeper() { end(); }
    void kill() const { ::kill(pid, SIGKILL); }
    void end()
    {
        if (pid > 0) {
            kill();
            ::waitpid(pid, nullptr, 0);
            pid = -1;
        }
    }
    LeaseHolder holder() const
    {
        auto h = holder_of(pid);
        REQUIRE(h.has_value());
        return *h;
    }
};

} // namespace

TEST_CASE("leases: a live holder whose command name holds a newline and a parenthesis is alive")
{
    // Any process may name itself so (prctl PR_SET_NAME); /proc/<pid>/stat then spans two lines.
    Sleeper holder("x\n) y");
    CHECK(holder_fate(holder.holder(), wall_now()) == HolderFate::alive);
    holder.end();
}

TEST_CASE("leases: a lease from before holders were named is nobody's, even under the same owner string")
{
    // "certfs pid 1" is every containerised daemon's owner string: after an upgrade, a new
    // daemon must not adopt a live old daemon's lease; it waits for it to expire.
    Fixture f;
    f.add("old.test");
    REQUIRE(f.store->acquire_lease("domain:old.test", "certfs pid 1", 10min, LeaseHolder{}).ok());
    const Status again = f.store->acquire_lease("domain:old.test", "certfs pid 1", 10min);
    CHECK(again.code() == Code::conflict);
    CHECK_THAT(again.message(), Catch::Contains("held by"));
    f.clock.advance(11min);
    CHECK(f.store->acquire_lease("domain:old.test", "certfs pid 1", 10min).ok());
}

TEST_CASE("leases: a holder that died on this host loses its lease at once, a live one keeps it")
{
    Fixture f;
    auto other = f.open_store(false);
    f.add("dead.test");
    Sleeper holder;
    const LeaseHolder h = holder.holder();
    CHECK(h.machine_id == this_process().machine_id);
    CHECK(h.pid == holder.pid);
    REQUIRE(f.store->acquire_lease("domain:dead.test", "certfs pid " + std::to_string(holder.pid), 10min, h).ok());
    REQUIRE(f.store->set_state("dead.test", DomainState::issuing, "", std::nullopt, false).ok());
    require_error(other->acquire_lease("domain:dead.test", "certfsctl", 10min), Code::conflict,
                  "is held by certfs pid " + std::to_string(holder.pid) + " (pid " + std::to_string(holder.pid) +
                      " on this host) until");
    CHECK(holder_fate(h, wall_now()) == HolderFate::alive);

    // Killed but not yet reaped (a zombie) already counts as dead; then reaped (gone).
    holder.kill();
    REQUIRE(test::wait_until([&] { return holder_fate(h, wall_now()) == HolderFate::dead; }));
    holder.end();
    CHECK(holder_fate(h, wall_now()) == HolderFate::dead);
    REQUIRE(other->acquire_lease("domain:dead.test", "certfsctl", 10min).ok()); // no wait for the ttl
    auto leases = f.store->leases().value();
    REQUIRE(leases.size() == 1);
    CHECK(leases.front().owner == "certfsctl");
    CHECK(leases.front().holder.pid == ::getpid());
    // Who it was taken from is logged, and the state its renewal left is reset.
    auto events = f.store->events(std::nullopt, 10).value();
    CHECK(std::any_of(events.begin(), events.end(), [&](const Event& e) {
        return e.action == "lease taken" &&
               e.detail.find("from certfs pid " + std::to_string(h.pid)) != std::string::npos &&
               e.detail.find("which no longer runs") != std::string::npos;
    }));
    CHECK(f.store->get_domain("dead.test").value().state == DomainState::monitoring);
}

TEST_CASE("leases: a pid now used by another process does not keep a dead holder's lease")
{
    Fixture f;
    auto other = f.open_store(false);
    LeaseHolder reused = this_process(); // our pid, but another start time: an earlier process
    reused.start_time -= 1;
    CHECK(holder_fate(reused, wall_now()) == HolderFate::dead);
    REQUIRE(f.store->acquire_lease("domain:r.test", "old certfs", 10min, reused).ok());
    REQUIRE(other->acquire_lease("domain:r.test", "certfsctl", 10min).ok());
    CHECK(f.store->leases().value().front().owner == "certfsctl");
}

TEST_CASE("leases: a holder on another host keeps its lease until it expires")
{
    Fixture f;
    auto other = f.open_store(false);
    LeaseHolder remote = this_process();
    remote.machine_id = "0123456789abcdef0123456789abcdef";
    remote.pid = 1; // whatever runs as pid 1 here says nothing about that host
    CHECK(holder_fate(remote, wall_now()) == HolderFate::unknown);
    REQUIRE(f.store->acquire_lease("domain:h.test", "certfs pid 1", 10min, remote).ok());
    require_error(other->acquire_lease("domain:h.test", "certfsctl", 10min), Code::conflict,
                  "is held by certfs pid 1 (pid 1 on host 0123456789abcdef0123456789abcdef) until");
    f.clock.advance(9min);
    require_error(other->acquire_lease("domain:h.test", "certfsctl", 10min), Code::conflict, "held by certfs pid 1");
    f.clock.advance(2min);
    REQUIRE(other->acquire_lease("domain:h.test", "certfsctl", 10min).ok());

    // A lease written before schema v6 names no process: it waits for expiry too.
    const auto until = std::chrono::duration_cast<std::chrono::milliseconds>((f.clock.now() + 1h).time_since_epoch());
    REQUIRE(
        f.store->db_for_testing()
            .exec("INSERT INTO leases (scope, owner, acquired_at, expires_at) VALUES ('domain:old.test', 'old', 0, " +
                  std::to_string(until.count()) + ")")
            .ok());
    require_error(other->acquire_lease("domain:old.test", "certfsctl", 10min), Code::conflict,
                  "held by old (an unnamed process)");
}

// A process of an earlier boot of this machine certainly runs no more, whatever its pid now
// names: its lease is taken at once. (A cloned machine that kept the same machine id would be
// taken for an earlier boot; machine ids are unique per installation, systemd regenerates them.)
TEST_CASE("leases: a holder from an earlier boot of this host loses its lease at once")
{
    Fixture f;
    auto other = f.open_store(false);
    LeaseHolder earlier = this_process(); // even our own pid and start time
    earlier.boot_id = "00000000-0000-0000-0000-000000000000";
    const TimePoint now = f.clock.now();
    const TimePoint before_boot = boot_time() - 1h;
    CHECK(holder_fate(earlier, before_boot) == HolderFate::dead);
    f.clock.set(before_boot);
    REQUIRE(f.store->acquire_lease("domain:b.test", "certfs pid 99", 10min, earlier).ok());
    f.clock.set(now);
    REQUIRE(other->acquire_lease("domain:b.test", "certfsctl", 10min).ok());
    auto events = f.store->events(std::nullopt, 5).value();
    CHECK(std::any_of(events.begin(), events.end(), [](const Event& e) {
        return e.detail.find("in another boot of this machine id") != std::string::npos;
    }));
}

// A machine cloned from this one's image, /etc/machine-id and all, boots with its own boot id: a
// lease it took after this machine booted is not an earlier boot's. Its holder may run; it waits
// for the lease to expire, as another host's does.
TEST_CASE("leases: a holder with this machine id but another boot id, since this boot, keeps its lease until it "
          "expires")
{
    Fixture f;
    auto other = f.open_store(false);
    LeaseHolder clone = this_process();
    clone.boot_id = "00000000-0000-0000-0000-000000000000";
    clone.pid = 1;
    CHECK(holder_fate(clone, f.clock.now()) == HolderFate::unknown);
    REQUIRE(f.store->acquire_lease("domain:c.test", "certfs pid 1", 10min, clone).ok());
    require_error(other->acquire_lease("domain:c.test", "certfsctl", 10min), Code::conflict,
                  "is held by certfs pid 1 (pid 1 in another boot of this machine id) until");
    f.clock.advance(11min);
    REQUIRE(other->acquire_lease("domain:c.test", "certfsctl", 10min).ok());
}

TEST_CASE("leases: a holder that still runs on this host keeps its lease past its expiry, until it ends")
{
    // Its heartbeat may have failed (SQLITE_BUSY, a full disk) or the clock jumped forward: the
    // renewal still runs, and a second one would ask the CA again and reset its state.
    Fixture f;
    auto other = f.open_store(false);
    f.add("slow.test");
    Sleeper holder;
    REQUIRE(f.store->acquire_lease("domain:slow.test", "certfsctl renew", 10min, holder.holder()).ok());
    REQUIRE(f.store->set_state("slow.test", DomainState::issuing, "", std::nullopt, false).ok());
    f.clock.advance(11min);
    require_error(other->acquire_lease("domain:slow.test", "certfs pid 1", 10min), Code::conflict,
                  "is held by certfsctl renew (pid " + std::to_string(holder.pid) +
                      " on this host), which still runs; its lease expired at");
    CHECK(f.store->get_domain("slow.test").value().state == DomainState::issuing);
    holder.end();
    REQUIRE(other->acquire_lease("domain:slow.test", "certfs pid 1", 10min).ok());
    CHECK(f.store->get_domain("slow.test").value().state == DomainState::monitoring);
}

TEST_CASE("leases: the same owner name in another process is another holder")
{
    Fixture f;
    auto other = f.open_store(false);
    Sleeper twin;
    // Two hosts' daemons may both be "certfs pid 123"; a live twin on this host is refused, and
    // cannot extend or release this process's lease either.
    REQUIRE(f.store->acquire_lease("domain:t.test", "certfs", 10min, twin.holder()).ok());
    require_error(other->acquire_lease("domain:t.test", "certfs", 10min), Code::conflict, "held by certfs");
    REQUIRE(other->extend_leases("certfs", 60min).ok());
    REQUIRE(other->release_lease("domain:t.test", "certfs").ok());
    auto leases = f.store->leases().value();
    REQUIRE(leases.size() == 1);
    CHECK(leases.front().holder.pid == twin.pid);
    CHECK(leases.front().expires_at ==
          std::chrono::time_point_cast<std::chrono::milliseconds>(f.clock.now()) + 10min); // not extended
}

TEST_CASE("recovery: leases of dead holders are freed and the states they left reset")
{
    Fixture f;
    f.add("issuing.test");
    f.add("hooks.test");
    f.add("pending.test");
    f.add("live.test");
    Sleeper dead;
    Sleeper alive;
    const LeaseHolder gone = dead.holder();
    for (const char* name : {"issuing.test", "hooks.test", "pending.test"}) {
        REQUIRE(f.store->acquire_lease(std::string("domain:") + name, "certfs A", 10min, gone).ok());
    }
    REQUIRE(f.store->acquire_lease("domain:live.test", "certfs B", 10min, alive.holder()).ok());
    REQUIRE(f.store->set_state("issuing.test", DomainState::issuing, "", std::nullopt, false).ok());
    REQUIRE(f.store->set_state("hooks.test", DomainState::hooks, "", std::nullopt, false).ok());
    REQUIRE(f.store->set_state("pending.test", DomainState::issuing, "", std::nullopt, false).ok());
    REQUIRE(f.store->set_state("live.test", DomainState::issuing, "", std::nullopt, false).ok());
    const TimePoint poll = std::chrono::time_point_cast<std::chrono::milliseconds>(f.clock.now()) + 5min;
    // pending.test's request at the CA, as the renewer keeps it.
    REQUIRE(f.store->add_issuer({"ca", "local", "{}", "", f.ca.cert_pem}).ok());
    REQUIRE(f.store->save_pending({"pending.test", "ca", 1, "key", "csr", "cookie", "", "", f.clock.now(), poll}).ok());

    // Nothing is taken while the holder runs.
    auto notes = f.store->recover_abandoned().value();
    CHECK(notes.empty());
    CHECK(f.store->leases().value().size() == 4);

    dead.end();
    notes = f.store->recover_abandoned().value();
    CHECK(notes.size() == 6); // three leases freed, three states reset
    auto leases = f.store->leases().value();
    REQUIRE(leases.size() == 1);
    CHECK(leases.front().scope == "domain:live.test");
    CHECK(f.store->get_domain("issuing.test").value().state == DomainState::monitoring);
    CHECK(f.store->get_domain("hooks.test").value().state == DomainState::monitoring);
    auto pending = f.store->get_domain("pending.test").value();
    CHECK(pending.state == DomainState::pending);
    CHECK(pending.next_attempt == poll);
    CHECK(f.store->get_domain("live.test").value().state == DomainState::issuing);

    // Expired while its holder still runs on this host (a heartbeat that failed, a clock that
    // jumped): kept, and its renewal's state too.
    f.clock.advance(11min);
    CHECK(f.store->recover_abandoned().value().empty());
    CHECK(f.store->leases().value().size() == 1);
    CHECK(f.store->get_domain("live.test").value().state == DomainState::issuing);
    // Once the holder ends, the lease goes, and a state left with no lease at all is reset.
    alive.end();
    CHECK(f.store->recover_abandoned().value().size() == 2);
    CHECK(f.store->leases().value().empty());
    CHECK(f.store->get_domain("live.test").value().state == DomainState::monitoring);
    CHECK(f.store->recover_abandoned().value().empty());
}

TEST_CASE("recovery: a pass while only live renewals run takes no write lock")
{
    // The daemon recovers at every pass; a renewal in flight (its domain `issuing`, its lease
    // held) is not something to recover, and must not cost a write lock each time.
    Fixture f;
    f.add("live.test");
    Sleeper alive;
    REQUIRE(f.store->acquire_lease("domain:live.test", "certfs B", 10min, alive.holder()).ok());
    REQUIRE(f.store->set_state("live.test", DomainState::issuing, "", std::nullopt, false).ok());
    auto writer = f.open_store(false);
    REQUIRE(writer->db_for_testing().exec("BEGIN IMMEDIATE").ok()); // another process writing
    auto notes = f.store->recover_abandoned();
    INFO(notes.status().message());
    REQUIRE(notes.ok());
    CHECK(notes->empty());
    REQUIRE(writer->db_for_testing().exec("ROLLBACK").ok());
    CHECK(f.store->get_domain("live.test").value().state == DomainState::issuing);
}

TEST_CASE("hooks owed: the commit records them in its transaction, a run for that generation pays them")
{
    Fixture f;
    f.add("plain.test");
    auto c = f.config("hooked.test");
    c.deploy_hooks = {"true"};
    REQUIRE(f.store->add_domain(c, f.input(make_leaf(f.ca, {c.dns_names, {}}))).ok());
    CHECK_FALSE(f.store->get_domain("hooked.test").value().hooks_owed);

    const std::int64_t g2 = f.renew("hooked.test");
    f.renew("plain.test");
    CHECK(f.store->get_domain("hooked.test").value().hooks_owed == g2);
    CHECK_FALSE(f.store->get_domain("plain.test").value().hooks_owed); // no hooks, nothing owed

    // A failed commit owes nothing.
    auto d = f.store->get_domain("hooked.test").value();
    require_error(f.store->commit_one({"hooked.test", 1, f.input(make_leaf(f.ca, {d.dns_names, {}}))}), Code::conflict,
                  "another writer committed first");
    CHECK(f.store->get_domain("hooked.test").value().hooks_owed == g2);

    // Hooks that ran for an older generation leave a newer one owed; for it, they pay it,
    // failed or not (the failure is in hook_error).
    const std::int64_t g3 = f.renew("hooked.test");
    REQUIRE(f.store->set_hook_error("hooked.test", "", g2).ok());
    CHECK(f.store->get_domain("hooked.test").value().hooks_owed == g3);
    REQUIRE(f.store->set_hook_error("hooked.test", "exit status 1", g3).ok());
    d = f.store->get_domain("hooked.test").value();
    CHECK_FALSE(d.hooks_owed);
    CHECK(d.hook_error == "exit status 1");
}

TEST_CASE("store use: on a read-only filesystem with no lock file the daemon runs and says what goes unguarded, and "
          "with one the lock still keeps a rekey out")
{
    if (::geteuid() != 0) {
        WARN("skipped: mounting a tmpfs needs root");
        return;
    }
    TempDir dir;
    const auto disk = dir / "disk";
    std::filesystem::create_directory(disk);
    REQUIRE(::mount("certfs-test", disk.c_str(), "tmpfs", 0, "size=1m,mode=0700") == 0);
    struct Unmount {
        std::filesystem::path at;
        ~Unmount() { ::umount2(at.c_str(), MNT_DETACH); }
    } unmount{disk};
    const std::string db = (disk / "certfs.db").string();
    auto remount = [&](unsigned long flags) {
        REQUIRE(::mount("certfs-test", disk.c_str(), "tmpfs", MS_REMOUNT | flags, "size=1m,mode=0700") == 0);
    };

    remount(MS_RDONLY);
    {
        test::LogCapture log;
        auto serving = StoreUse::take(db, StoreUse::Mode::serve);
        INFO(serving.status().message());
        REQUIRE(serving.ok());
        const auto said = log.lines_with("read-only filesystem");
        REQUIRE(said.size() == 1);
        CHECK(said[0] == "warning " + db + " is on a read-only filesystem and has no " + db +
                             ".use.lock: certfs runs without it, so a rekey-store once the filesystem is writable "
                             "again would not see it");
    }
    CHECK_FALSE(std::filesystem::exists(db + ".use.lock"));

    // A lock file made while it was writable: taken read-only, it still shuts out a rekey.
    remount(0);
    REQUIRE(StoreUse::take(db, StoreUse::Mode::serve).ok());
    REQUIRE(std::filesystem::exists(db + ".use.lock"));
    remount(MS_RDONLY);
    test::LogCapture log;
    auto serving = StoreUse::take(db, StoreUse::Mode::serve);
    REQUIRE(serving.ok());
    CHECK(log.lines_with("read-only filesystem").empty());
    require_error(StoreUse::take(db, StoreUse::Mode::rekey), Code::conflict, "certfs is serving this store");
}
