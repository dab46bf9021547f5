// End-to-end tests of certfsctl: every test drives the real binary (CERTFSCTL_PATH) against a
// store of its own in a temporary directory and checks exit codes (0 ok, 1 failure, 2 usage),
// output, the one-line error contract and that refused input leaves the store unchanged.
// Certificates from a "foreign" CA (for import) are made in-process with core/pki.
//
#include <catch2/catch.hpp>

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/pki.hpp"
#include "store/sqlite.hpp"
#include "store/store.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;
using Catch::Matches;
using Catch::StartsWith;
using certfs::test::Ctl;
using certfs::test::expect_failure;
using certfs::test::join;
using certfs::test::read_file;
using certfs::test::run_certfsctl;
using certfs::test::RunResult;
using certfs::test::TempDir;
using certfs::test::write_file;
using nlohmann::json;

namespace {

namespace stdfs = std::filesystem;

const char* const k_rfc3339 = R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)";
const char* const k_serial = "[0-9a-f]+";

std::vector<std::string> cat(std::vector<std::string> a, const std::vector<std::string>& b)
{
    a.insert(a.end(), b.begin(), b.end());
    return a;
}

std::size_t line_count(const std::string& text)
{
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

RunResult openssl(const std::vector<std::string>& args)
{
    return certfs::test::run(cat({"/usr/bin/openssl"}, args), {}, 60);
}

std::string openssl_ok(const std::vector<std::string>& args)
{
    RunResult r = openssl(args);
    INFO("openssl " << join(args) << "\nstderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    return r.out;
}

unsigned mode_of(const stdfs::path& path)
{
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

TimePoint parse_rfc3339(const std::string& text)
{
    std::tm tm{};
    REQUIRE(std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                        &tm.tm_min, &tm.tm_sec) == 6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return from_unix(::timegm(&tm));
}

std::string current_serial(const json& history)
{
    for (const auto& g : history) {
        if (g.at("current").get<bool>()) {
            return g.at("serial").get<std::string>();
        }
    }
    FAIL("no current generation");
    return {};
}

std::int64_t current_gen(const json& history)
{
    std::int64_t found = -1;
    int current = 0;
    for (const auto& g : history) {
        if (g.at("current").get<bool>()) {
            found = g.at("generation").get<std::int64_t>();
            ++current;
        }
    }
    CHECK(current == 1);
    return found;
}

std::vector<std::int64_t> gen_numbers(const json& history)
{
    std::vector<std::int64_t> out;
    for (const auto& g : history) {
        out.push_back(g.at("generation").get<std::int64_t>());
    }
    return out;
}

// The public key of privkey.pem equals the one in cert.pem.
void check_key_matches_cert(const stdfs::path& dir)
{
    std::string from_key = openssl_ok({"pkey", "-in", (dir / "privkey.pem").string(), "-pubout"});
    std::string from_cert = openssl_ok({"x509", "-in", (dir / "cert.pem").string(), "-noout", "-pubkey"});
    CHECK(from_key == from_cert);
    CHECK_THAT(from_key, StartsWith("-----BEGIN PUBLIC KEY-----"));
}

void check_verifies(const stdfs::path& dir)
{
    std::string out = openssl_ok({"verify", "-CAfile", (dir / "chain.pem").string(), (dir / "cert.pem").string()});
    CHECK_THAT(out, Contains(": OK"));
}

// A CA that certfs knows nothing about, for `import`.
class ForeignCa {
public:
    explicit ForeignCa(const std::string& subject)
    {
        auto key = pki::generate_key(pki::KeyType::ec_p256);
        REQUIRE(key.ok());
        m_key = std::move(key).value();
        auto now = std::chrono::system_clock::now();
        auto cert = pki::make_ca_cert(*m_key, {subject, now - 24h, now + std::chrono::days(3650), serial()});
        REQUIRE(cert.ok());
        m_cert = std::move(cert).value();
    }

    std::string pem() const { return pki::cert_pem(*m_cert); }
    std::string key_pem() const { return pki::private_key_pem(*m_key).value(); }

    struct Leaf {
        std::string key_pem;
        std::string cert_pem;
        std::string serial_hex;
    };

    Leaf leaf(const pki::Names& names, TimePoint not_before, TimePoint not_after,
              pki::KeyType type = pki::KeyType::ec_p256) const
    {
        auto key = pki::generate_key(type);
        REQUIRE(key.ok());
        return leaf_for(**key, names, not_before, not_after);
    }

    Leaf leaf_for(const EVP_PKEY& key, const pki::Names& names, TimePoint not_before, TimePoint not_after) const
    {
        std::string serial_hex = serial();
        auto cert = pki::sign_leaf(key, *m_cert, *m_key, {names, not_before, not_after, serial_hex});
        REQUIRE(cert.ok());
        auto key_pem = pki::private_key_pem(key);
        REQUIRE(key_pem.ok());
        return {key_pem.value(), pki::cert_pem(**cert), serial_hex};
    }

    // Valid from an hour ago for 30 days.
    Leaf leaf(const pki::Names& names, pki::KeyType type = pki::KeyType::ec_p256) const
    {
        auto now = std::chrono::system_clock::now();
        return leaf(names, now - 1h, now + std::chrono::days(30), type);
    }

private:
    static std::string serial()
    {
        auto s = pki::random_serial_hex();
        REQUIRE(s.ok());
        return s.value();
    }

    PKey m_key;
    Cert m_cert;
};

// Writes a leaf's files into the test directory as <prefix>.cert.pem, <prefix>.key.pem,
// <prefix>.chain.pem and returns the import arguments for them.
std::vector<std::string> import_args(const Ctl& ctl, const std::string& name, const std::string& prefix,
                                     const ForeignCa::Leaf& leaf, const std::string& chain_pem)
{
    auto cert = ctl.path(prefix + ".cert.pem");
    auto key = ctl.path(prefix + ".key.pem");
    auto chain = ctl.path(prefix + ".chain.pem");
    write_file(cert, leaf.cert_pem);
    write_file(key, leaf.key_pem);
    write_file(chain, chain_pem);
    return {"import", name, "--cert", cert.string(), "--key", key.string(), "--chain", chain.string()};
}

// Replaces characters in the middle of the first base64 line of a PEM text.
std::string damage_pem(std::string pem)
{
    std::size_t line = pem.find('\n', pem.find("-----BEGIN")) + 1;
    pem.replace(line + 10, 3, "!!!");
    return pem;
}

void check_time(const json& value)
{
    REQUIRE(value.is_string());
    CHECK_THAT(value.get<std::string>(), Matches(k_rfc3339));
}

} // namespace

// ---- init and the store path ---------------------------------------------------------------

TEST_CASE("init is idempotent and every other command needs an initialised store")
{
    Ctl ctl;
    const std::string x = ctl.path("x.pem").string();
    const std::vector<std::vector<std::string>> commands = {
        {"list"},
        {"list", "--json"},
        {"issuer", "list"},
        {"issuer", "add", "local", "ca"},
        {"add", "www.example.com", "--issuer", "ca"},
        {"show", "www.example.com"},
        {"history", "www.example.com"},
        {"import", "www.example.com", "--cert", x, "--key", x},
        {"renew", "--all"},
        {"rollback", "www.example.com"},
        {"remove", "www.example.com"},
        {"export", "www.example.com", ctl.path("out").string()},
        {"check"},
        {"log"},
    };
    for (const auto& args : commands) {
        INFO(join(args));
        expect_failure(ctl(args), 1, "certfsctl init");
    }
    CHECK_FALSE(stdfs::exists(ctl.db()));

    RunResult first = ctl.ok({"init"});
    CHECK_THAT(first.out, Contains("store ready"));
    CHECK(first.err.empty());
    CHECK(stdfs::exists(ctl.db()));
    ctl.ok({"issuer", "add", "local", "ca"});
    ctl.ok({"add", "www.example.com", "--issuer", "ca"});

    RunResult second = ctl.ok({"init"});
    CHECK_THAT(second.out, Contains("store ready"));
    // The second init kept what was there.
    json list = ctl.js({"list"});
    REQUIRE(list.size() == 1);
    CHECK(list[0]["name"] == "www.example.com");
}

TEST_CASE("a file that is not a store gives one clear line")
{
    Ctl ctl;
    write_file(ctl.db(), "this is not an SQLite database, just some text long enough to be a header\n");
    stdfs::permissions(ctl.db(), stdfs::perms::owner_read | stdfs::perms::owner_write);
    expect_failure(ctl({"list"}), 1, "file is not a database");
    expect_failure(ctl({"init"}), 1, "file is not a database");
    write_file(ctl.db(), "");
    expect_failure(ctl({"list"}), 1, "certfsctl init");
}

TEST_CASE("a store other users could read, write or replace is refused, and nothing is changed")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "www.example.com", "--issuer", "ca"});
    CHECK(mode_of(ctl.db()) == 0600);
    const std::string dir = stdfs::path(ctl.db()).parent_path().string();
    CHECK(mode_of(dir) == 0700);
    const std::string before = ctl.snapshot();
    const std::vector<std::vector<std::string>> commands = {{"list"},
                                                            {"show", "www.example.com"},
                                                            {"add", "b.example.com", "--issuer", "ca"},
                                                            {"renew", "www.example.com", "--force"},
                                                            {"init"}};

    for (unsigned mode : {0644U, 0640U, 0604U, 0620U, 0602U}) {
        ::chmod(ctl.db().c_str(), mode);
        for (const auto& args : commands) {
            INFO(mode << " " << join(args));
            RunResult r = ctl(args);
            expect_failure(r, 1, "refusing store " + ctl.db());
            CHECK_THAT(r.err, Contains("lets other users read or write the private keys it holds (chmod 600 " +
                                       ctl.db() + ")"));
        }
    }
    ::chmod(ctl.db().c_str(), 0600);

    // SQLite's side files hold the same pages.
    for (const char* suffix : {"-wal", "-shm"}) {
        const std::string side = ctl.db() + suffix;
        write_file(side, "");
        ::chmod(side.c_str(), 0644);
        INFO(suffix);
        expect_failure(ctl({"list"}), 1, "refusing store " + side + ": its mode 0644");
        stdfs::remove(side);
    }

    // A directory others can write lets them swap the store for their own.
    for (unsigned mode : {0777U, 0770U, 0757U}) {
        ::chmod(dir.c_str(), mode);
        INFO(mode);
        RunResult r = ctl({"list"});
        expect_failure(r, 1, "refusing store " + ctl.db() + ": its directory " + dir);
        CHECK_THAT(r.err, Contains("which lets other users replace the store (chmod 700 " + dir + ")"));
    }
    ::chmod(dir.c_str(), 0755); // readable is not replaceable: the store itself is still 0600
    ctl.ok({"list"});
    ::chmod(dir.c_str(), 0700);
    CHECK(ctl.snapshot() == before);

    // A symlink is judged by what it points to, and by where it is: in a directory others can
    // write, anyone could point it at a store of their own.
    TempDir open_dir;
    ::chmod(open_dir.path().c_str(), 0777);
    const auto link = open_dir.path() / "link.db";
    stdfs::create_symlink(ctl.db(), link);
    expect_failure(run_certfsctl({"--db", link.string(), "list"}), 1, "its directory " + open_dir.path().string());
    ::chmod(open_dir.path().c_str(), 0755);
    CHECK(run_certfsctl({"--db", link.string(), "list"}).exit_code == 0);
    ::chmod(open_dir.path().c_str(), 0777);

    // init does not create a store where others could replace it.
    const auto fresh = open_dir.path() / "certfs.db";
    expect_failure(run_certfsctl({"--db", fresh.string(), "init"}), 1, "its directory " + open_dir.path().string());
    CHECK_FALSE(stdfs::exists(fresh));
}

TEST_CASE("init creates missing parent directories")
{
    Ctl ctl;
    const std::string db = ctl.path("deep/er/certfs.db").string();
    RunResult r = run_certfsctl({"--db", db, "init"});
    REQUIRE(r.exit_code == 0);
    CHECK(stdfs::exists(db));
    CHECK(mode_of(ctl.path("deep/er")) == 0700);
}

TEST_CASE("the CERTFS_DB environment variable selects the store")
{
    Ctl ctl;
    const std::string env = "CERTFS_DB=" + ctl.db();
    auto ctl_env = [&](const std::vector<std::string>& args) { return run_certfsctl(args, {env}); };
    REQUIRE(ctl_env({"init"}).exit_code == 0);
    CHECK(stdfs::exists(ctl.db()));
    REQUIRE(ctl_env({"issuer", "add", "local", "ca"}).exit_code == 0);
    REQUIRE(ctl_env({"add", "env.example.com", "--issuer", "ca"}).exit_code == 0);
    RunResult list = ctl_env({"list", "--json"});
    REQUIRE(list.exit_code == 0);
    json j = json::parse(list.out);
    REQUIRE(j.size() == 1);
    CHECK(j[0]["name"] == "env.example.com");
    // The same store through --db.
    CHECK(ctl.js({"list"}) == j);

    // --db wins over the environment.
    const std::string other = ctl.path("other.db").string();
    RunResult r = run_certfsctl({"--db", other, "list"}, {env});
    expect_failure(r, 1, "certfsctl init");
}

// ---- issuers -------------------------------------------------------------------------------

TEST_CASE("issuer add local makes a CA that issuer list, issuer show and issuer cert report")
{
    Ctl ctl;
    ctl.ok({"init"});
    RunResult added = ctl.ok({"issuer", "add", "local", "ca", "--key-type", "ec-p384", "--validity", "30d",
                              "--ca-validity", "5y", "--subject", "/CN=CLI Test CA/O=certfs tests"});
    CHECK_THAT(added.out, Contains("added local CA issuer ca"));
    ctl.ok({"issuer", "add", "local", "plain"});

    json list = ctl.js({"issuer", "list"});
    REQUIRE(list.is_array());
    REQUIRE(list.size() == 2);
    const json& ca = list[0];
    CHECK(ca["name"] == "ca");
    CHECK(ca["kind"] == "local");
    CHECK(ca["domains"] == 0);
    CHECK_THAT(ca["subject"].get<std::string>(), Contains("CN=CLI Test CA") && Contains("O=certfs tests"));
    check_time(ca["not_after"]);
    // The CA certificate lives about five years.
    auto ca_life = parse_rfc3339(ca["not_after"].get<std::string>()) - std::chrono::system_clock::now();
    CHECK(ca_life > std::chrono::days(5 * 365 - 2));
    CHECK(ca_life < std::chrono::days(5 * 365 + 2));
    CHECK(list[1]["name"] == "plain");
    CHECK_THAT(list[1]["subject"].get<std::string>(), Contains("plain"));

    json show = ctl.js({"issuer", "show", "ca"});
    CHECK(show["name"] == "ca");
    CHECK(show["kind"] == "local");
    CHECK(show["subject"] == ca["subject"]);
    CHECK(show["not_after"] == ca["not_after"]);

    RunResult human = ctl.ok({"issuer", "show", "ca"});
    CHECK_THAT(human.out, Contains("ec-p384") && Contains("30d"));
    RunResult table = ctl.ok({"issuer", "list"});
    CHECK_THAT(table.out, StartsWith("NAME") && Contains("KIND") && Contains("SUBJECT"));

    RunResult cert = ctl.ok({"issuer", "cert", "ca"});
    CHECK_THAT(cert.out, StartsWith("-----BEGIN CERTIFICATE-----"));
    CHECK_THAT(cert.out, !Contains("PRIVATE KEY"));
    write_file(ctl.path("ca.pem"), cert.out);
    std::string subject = openssl_ok({"x509", "-in", ctl.path("ca.pem").string(), "-noout", "-subject"});
    CHECK_THAT(subject, Contains("CN = CLI Test CA") && Contains("O = certfs tests"));
    std::string text = openssl_ok({"x509", "-in", ctl.path("ca.pem").string(), "-noout", "-text"});
    CHECK_THAT(text, Contains("CA:TRUE") && Contains("secp384r1"));

    // Leaves live --validity; the issuer's domain count follows.
    ctl.ok({"add", "www.example.com", "--issuer", "ca"});
    json domain = ctl.show("www.example.com");
    auto lifetime = parse_rfc3339(domain["not_after"].get<std::string>()) - std::chrono::system_clock::now();
    CHECK(lifetime > std::chrono::days(30) - 1h);
    CHECK(lifetime <= std::chrono::days(30) + 1min);
    CHECK(ctl.js({"issuer", "show", "ca"})["domains"] == 1);

    expect_failure(ctl({"issuer", "show", "nope"}), 1, "no issuer named nope");
    expect_failure(ctl({"issuer", "cert", "nope"}), 1, "no issuer named nope");
}

TEST_CASE("an issuer with an Ed25519 key signs leaves that openssl verifies")
{
    Ctl ctl;
    ctl.ok({"init"});
    ctl.ok({"issuer", "add", "local", "edca", "--key-type", "ed25519"});
    ctl.ok({"add", "ed.example.com", "--issuer", "edca", "--key-type", "rsa-2048"});
    auto dir = ctl.export_to("ed.example.com", "out");
    check_verifies(dir);
    check_key_matches_cert(dir);
    std::string text = openssl_ok({"x509", "-in", (dir / "cert.pem").string(), "-noout", "-text"});
    CHECK_THAT(text, Contains("Signature Algorithm: ED25519"));
}

TEST_CASE("issuer add refuses bad arguments and duplicates")
{
    Ctl ctl;
    ctl.init_with_ca();
    const std::string before = ctl.snapshot();

    expect_failure(ctl({"issuer", "add", "local", "ca"}), 1, "issuer ca already exists");
    expect_failure(ctl({"issuer", "add", "local", "other", "--validity", "90x"}), 2, "invalid duration '90x'");
    expect_failure(ctl({"issuer", "add", "local", "other", "--key-type", "dsa"}), 2, "unknown key type 'dsa'");
    expect_failure(ctl({"issuer", "add", "local", "other", "--ca-validity", "0s"}), 2, "invalid duration '0s'");
    expect_failure(ctl({"issuer", "add", "local", "other", "--validity", "10y", "--ca-validity", "10y"}), 1,
                   "must be shorter");
    expect_failure(ctl({"issuer", "add", "local", "Bad_CA"}), 1, "'Bad_CA'");
    expect_failure(ctl({"issuer", "add", "local", "other", "--subject", "/XX=foo"}), 1,
                   "unknown subject attribute 'XX'");
    expect_failure(ctl({"issuer", "add", "local", "other", "--subject", "CN="}), 1, "CN has an empty value");
    expect_failure(ctl({"issuer", "add", "local"}), 2, "NAME");
    expect_failure(ctl({"issuer", "add", "remote", "x"}), 2, "subcommand");

    CHECK(ctl.snapshot() == before);
}

TEST_CASE("issuer remove is refused while domains use the issuer")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "a.example.com", "--issuer", "ca"});
    ctl.ok({"add", "b.example.com", "--issuer", "ca", "--no-issue"});
    const std::string before = ctl.snapshot();

    RunResult refused = ctl({"issuer", "remove", "ca"});
    expect_failure(refused, 1, "used by 2 domain(s)");
    CHECK_THAT(refused.err, Contains("a.example.com") && Contains("b.example.com"));
    CHECK(ctl.snapshot() == before);

    ctl.ok({"remove", "a.example.com"});
    expect_failure(ctl({"issuer", "remove", "ca"}), 1, "b.example.com");
    ctl.ok({"remove", "b.example.com"});
    RunResult removed = ctl.ok({"issuer", "remove", "ca"});
    CHECK_THAT(removed.out, Contains("removed issuer ca"));
    CHECK(ctl.js({"issuer", "list"}) == json::array());
    expect_failure(ctl({"issuer", "remove", "ca"}), 1, "no issuer named ca");
    expect_failure(ctl({"add", "c.example.com", "--issuer", "ca"}), 1, "no issuer named ca");
}

// ---- add -----------------------------------------------------------------------------------

TEST_CASE("add issues generation 1 and show/list report the configuration")
{
    Ctl ctl;
    ctl.init_with_ca();
    RunResult added = ctl.ok({"add", "www.example.com", "--issuer", "ca"});
    CHECK_THAT(added.out, Contains("added www.example.com: generation 1"));
    CHECK(added.err.empty());

    json d = ctl.show("www.example.com");
    CHECK(d["name"] == "www.example.com");
    CHECK(d["generation"] == 1);
    CHECK(d["state"] == "monitoring");
    check_time(d["not_after"]);
    check_time(d["renew_at"]);
    CHECK(d["renew_at"].get<std::string>() < d["not_after"].get<std::string>());
    CHECK(d["issuer"] == "ca");
    CHECK(d["sans"] == json::array({"www.example.com"}));
    CHECK(d["dns_names"] == json::array({"www.example.com"}));
    CHECK(d["ip_addresses"] == json::array());
    CHECK(d["last_error"].is_null());
    CHECK(d["key_type"] == "ec-p256");
    CHECK(d["reuse_key"] == false);
    CHECK(d["owner"] == "root");
    CHECK(d["group"] == "root");
    CHECK(d["mode"] == "0600");
    CHECK(d["bundle"].is_null());
    CHECK(d["deploy_hooks"] == json::array());
    REQUIRE(d["current"].is_object());
    CHECK(d["current"]["generation"] == 1);
    CHECK(d["current"]["reason"] == "issued");
    CHECK_THAT(d["current"]["serial"].get<std::string>(), Matches(k_serial));
    CHECK(d["current"]["not_after"] == d["not_after"]);
    // Default renewal point: a third of the lifetime before expiry, the lifetime counted from
    // the issue (the commit), not from the backdated not_before.
    auto not_before = parse_rfc3339(d["current"]["not_before"].get<std::string>());
    auto issued = parse_rfc3339(d["current"]["created_at"].get<std::string>());
    CHECK(not_before < issued - 4min);
    auto not_after = parse_rfc3339(d["not_after"].get<std::string>());
    auto renew_at = parse_rfc3339(d["renew_at"].get<std::string>());
    auto expected = not_after - (not_after - issued) / 3;
    CHECK(std::chrono::abs(renew_at - expected) <= 1s);

    RunResult human = ctl.ok({"show", "www.example.com"});
    CHECK_THAT(human.out, Contains("www.example.com") && Contains("ec-p256") && Contains("0600"));

    RunResult full = ctl.ok({"add",
                             "full.example.com",
                             "--issuer",
                             "ca",
                             "--san",
                             "full.example.com",
                             "--san",
                             "ALT.example.com",
                             "--san",
                             "*.wild.example.com",
                             "--san",
                             "full.example.com",
                             "--ip",
                             "192.0.2.7",
                             "--ip",
                             "2001:DB8::1",
                             "--key-type",
                             "ec-p384",
                             "--reuse-key",
                             "--renew-before",
                             "30d",
                             "--owner",
                             "nobody",
                             "--group",
                             "nogroup",
                             "--mode",
                             "0640",
                             "--deploy-hook",
                             "systemctl reload nginx",
                             "--deploy-hook",
                             "/usr/bin/true",
                             "--bundle",
                             "web"});
    CHECK_THAT(full.out, Contains("generation 1"));
    json f = ctl.show("full.example.com");
    CHECK(f["dns_names"] == json::array({"full.example.com", "alt.example.com", "*.wild.example.com"}));
    CHECK(f["ip_addresses"] == json::array({"192.0.2.7", "2001:db8::1"}));
    CHECK(f["sans"] ==
          json::array({"full.example.com", "alt.example.com", "*.wild.example.com", "192.0.2.7", "2001:db8::1"}));
    CHECK(f["key_type"] == "ec-p384");
    CHECK(f["reuse_key"] == true);
    CHECK(f["renew_before"] == "30d");
    CHECK(f["owner"] == "nobody");
    CHECK(f["group"] == "nogroup");
    CHECK(f["mode"] == "0640");
    CHECK(f["bundle"] == "web");
    CHECK(f["deploy_hooks"] == json::array({"systemctl reload nginx", "/usr/bin/true"}));
    CHECK(parse_rfc3339(f["renew_at"].get<std::string>()) ==
          parse_rfc3339(f["not_after"].get<std::string>()) - std::chrono::days(30));
    auto dir = ctl.export_to("full.example.com", "full");
    std::string sans = openssl_ok({"x509", "-in", (dir / "cert.pem").string(), "-noout", "-ext", "subjectAltName"});
    CHECK_THAT(sans, Contains("DNS:full.example.com") && Contains("DNS:alt.example.com") &&
                         Contains("DNS:*.wild.example.com") && Contains("IP Address:192.0.2.7") &&
                         Contains("IP Address:2001:DB8:0:0:0:0:0:1"));

    json list = ctl.js({"list"});
    REQUIRE(list.is_array());
    REQUIRE(list.size() == 2);
    CHECK(list[0]["name"] == "full.example.com");
    CHECK(list[1]["name"] == "www.example.com");
    for (const auto& item : list) {
        for (const char* key : {"name", "generation", "state", "not_after", "renew_at", "due_at", "issuer", "sans",
                                "last_error", "hook_error", "dns_names", "ip_addresses", "key_type", "reuse_key",
                                "owner", "group", "mode", "bundle", "deploy_hooks"}) {
            INFO(key);
            CHECK(item.contains(key));
        }
    }
}

TEST_CASE("add --no-issue adds a domain without a certificate")
{
    Ctl ctl;
    ctl.init_with_ca();
    RunResult r = ctl.ok({"add", "later.example.com", "--issuer", "ca", "--no-issue"});
    CHECK_THAT(r.out, Contains("no certificate yet"));
    json d = ctl.show("later.example.com");
    CHECK(d["generation"].is_null());
    CHECK(d["not_after"].is_null());
    CHECK(d["renew_at"].is_null());
    CHECK(d["current"].is_null());
    CHECK(d["issuer"] == "ca");
    CHECK(d["state"] == "due"); // the scheduler issues it as soon as it looks
    CHECK(ctl.history("later.example.com") == json::array());

    // A renewal (forced or not) issues the first generation.
    RunResult renewed = ctl.ok({"renew", "later.example.com"});
    CHECK_THAT(renewed.out, Contains("later.example.com: renewed: generation 1"));
    json h = ctl.history("later.example.com");
    REQUIRE(h.size() == 1);
    CHECK(h[0]["reason"] == "issued");
    CHECK(ctl.show("later.example.com")["state"] == "monitoring");
}

TEST_CASE("every key type issues a key of that type", "[slow]")
{
    Ctl ctl;
    ctl.init_with_ca();
    const std::vector<std::pair<std::string, std::string>> types = {
        {"ec-p256", "NIST CURVE: P-256"},       {"ec-p384", "NIST CURVE: P-384"},
        {"rsa-2048", "Private-Key: (2048 bit"}, {"rsa-3072", "Private-Key: (3072 bit"},
        {"rsa-4096", "Private-Key: (4096 bit"}, {"ed25519", "ED25519 Private-Key"},
    };
    for (const auto& [type, marker] : types) {
        INFO(type);
        const std::string name = type + ".example.com";
        ctl.ok({"add", name, "--issuer", "ca", "--key-type", type});
        CHECK(ctl.show(name)["key_type"] == type);
        auto dir = ctl.export_to(name, type);
        std::string text = openssl_ok({"pkey", "-in", (dir / "privkey.pem").string(), "-noout", "-text"});
        CHECK_THAT(text, Contains(marker));
        check_key_matches_cert(dir);
        check_verifies(dir);
    }
}

TEST_CASE("add refuses bad input and leaves the store unchanged")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "existing.example.com", "--issuer", "ca"});
    const std::string before = ctl.snapshot();
    const json history_before = ctl.history("existing.example.com");

    struct Case {
        std::vector<std::string> args;
        int exit_code;
        std::string needle;
    };
    const std::string too_long(254, 'a');
    const std::vector<Case> cases = {
        {{"Example.com", "--issuer", "ca"}, 1, "invalid domain name 'Example.com'"},
        {{".lead", "--issuer", "ca"}, 1, "invalid domain name '.lead': starts with '.'"},
        {{"a..b", "--issuer", "ca"}, 1, "invalid domain name 'a..b': contains '..'"},
        {{too_long, "--issuer", "ca"}, 1, "longer than 253 characters"},
        {{std::string(64, 'a') + ".com", "--issuer", "ca"}, 1, "label longer than 63 characters"},
        {{"example.com.", "--issuer", "ca"}, 1, "invalid domain name 'example.com.': ends with '.'"},
        {{"www.\xd0\xb5xample.com", "--issuer", "ca"},
         1,
         "invalid domain name 'www.\\xd0\\xb5xample.com': not ASCII: write an internationalized name in its IDNA "
         "form ('xn--...')"},
        {{"a\x1b[2Jb.com", "--issuer", "ca"}, 1, "'a\\x1b[2Jb.com': contains a control character"},
        {{"x.example.com", "--issuer", "ca", "--san", "www.\xd0\xb5xample.com"},
         1,
         "invalid DNS name 'www.\\xd0\\xb5xample.com': not ASCII"},
        {{"x.example.com", "--issuer", "ca", "--san", "a\tb.example.com"}, 1, "contains a control character"},
        {{"--issuer", "ca", "--", "-x"}, 1, "invalid domain name '-x': starts with '-'"},
        {{"under_score.com", "--issuer", "ca", "--no-issue"}, 1, "invalid domain name 'under_score.com'"},
        {{"x.example.com", "--issuer", "ca", "--san", "bad_name.com"}, 1, "invalid DNS name 'bad_name.com'"},
        {{"x.example.com", "--issuer", "ca", "--san", "*.*.x.com"}, 1, "invalid DNS name '*.*.x.com'"},
        {{"x.example.com", "--issuer", "ca", "--san", "-lead.example.com"}, 1, "invalid DNS name"},
        {{"x.example.com", "--issuer", "ca", "--ip", "300.1.1.1"}, 1, "300.1.1.1"},
        {{"x.example.com", "--issuer", "nope"}, 1, "no issuer named nope"},
        {{"x.example.com", "--issuer", "nope", "--no-issue"}, 1, "no issuer named nope"},
        {{"x.example.com", "--issuer", "ca", "--owner", "no-such-user-certfs"},
         1,
         "unknown user 'no-such-user-certfs'"},
        {{"x.example.com", "--issuer", "ca", "--group", "no-such-group-certfs"},
         1,
         "unknown group 'no-such-group-certfs'"},
        {{"existing.example.com", "--issuer", "ca"}, 1, "domain existing.example.com already exists"},
        {{"existing.example.com", "--issuer", "ca", "--no-issue"}, 1, "domain existing.example.com already exists"},
        {{"x.example.com", "--issuer", "ca", "--bundle", "Bad"}, 1, "invalid bundle name 'Bad'"},
        {{"x.example.com", "--issuer", "ca", "--deploy-hook", " "}, 1, "deploy hook command is empty"},
        {{"x.example.com", "--issuer", "ca", "--mode", "0999"}, 2, "invalid mode '0999'"},
        {{"x.example.com", "--issuer", "ca", "--mode", "rw"}, 2, "invalid mode 'rw'"},
        {{"x.example.com", "--issuer", "ca", "--renew-before", "0d"}, 2, "invalid duration '0d'"},
        {{"x.example.com", "--issuer", "ca", "--renew-before", "soon"}, 2, "invalid duration 'soon'"},
        {{"x.example.com", "--issuer", "ca", "--key-type", "dsa"}, 2, "unknown key type 'dsa'"},
        {{"x.example.com"}, 2, "--issuer is required"},
        {{"--issuer", "ca"}, 2, "NAME"},
    };
    for (const auto& c : cases) {
        INFO("add " << join(c.args));
        RunResult r = ctl(cat({"add"}, c.args));
        expect_failure(r, c.exit_code, c.needle);
        CHECK(r.err.find('\x1b') == std::string::npos);
        CHECK(ctl.snapshot() == before);
    }
    CHECK(ctl.history("existing.example.com") == history_before);
    // A name that matches nothing is not echoed raw either.
    for (const char* command : {"show", "renew", "remove", "history"}) {
        INFO(command);
        RunResult r = ctl({command, "a\x1b[2J.com"});
        expect_failure(r, 1, "no domain named 'a\\x1b[2J.com'");
        CHECK(r.err.find('\x1b') == std::string::npos);
    }
    expect_failure(ctl({"issuer", "show", "\x1b]0;x\x07"}), 1, "no issuer named '\\x1b]0;x\\x07'");

    // The longest valid name (253 characters, labels of at most 63) is accepted.
    const std::string l63(63, 'a');
    const std::string longest = l63 + "." + l63 + "." + l63 + "." + std::string(61, 'b');
    REQUIRE(longest.size() == 253);
    ctl.ok({"add", longest, "--issuer", "ca"});
    CHECK(ctl.show(longest)["generation"] == 1);
}

TEST_CASE("names written into the store by hand: list quotes them and says why, its JSON stays JSON, renew and "
          "check refuse them")
{
    Ctl ctl;
    ctl.init_with_ca();
    for (const char* name : {"escape.test", "bytes.test", "path.test", "fine.test"}) {
        ctl.ok({"add", name, "--issuer", "ca"});
    }
    // As an UPDATE by hand, or a tool that skipped certfsctl's checks, leaves them.
    const std::string escape = "x\x1b[2Jy.test";
    {
        auto st = store::Store::open(ctl.db(), {.create = false, .actor = "test", .clock = nullptr}).value();
        auto& db = st->db_for_testing();
        REQUIRE(db.exec("UPDATE domains SET name = 'x' || char(27) || '[2Jy.test' WHERE name = 'escape.test'").ok());
        REQUIRE(db.exec("UPDATE domains SET name = CAST(X'ff2e74657374' AS TEXT) WHERE name = 'bytes.test'").ok());
        REQUIRE(db.exec("UPDATE domains SET name = '../../etc' WHERE name = 'path.test'").ok());
        // A CA's message with a C1 control (U+009B, CSI) and a byte that is not UTF-8 in it.
        REQUIRE(db.exec("UPDATE domains SET last_error = 'ca said ' || char(155) || '2J' || CAST(X'9b' AS TEXT) || "
                        "'; caf' || char(233) WHERE name = 'fine.test'")
                    .ok());
    }
    const std::string why = ": only lower-case letters, digits, '.' and '-' are allowed";
    const std::vector<std::string> quoted = {"'x\\x1b[2Jy.test'", "'\\xff.test'", "'../../etc'"};

    RunResult list = ctl.ok({"list"});
    CHECK(list.out.find('\x1b') == std::string::npos);
    CHECK(list.out.find('\xff') == std::string::npos);
    CHECK(list.out.find('\x9b') == std::string::npos);
    // C1 and stray bytes are written out; other Unicode (an e with an acute accent) stays.
    CHECK_THAT(list.out, Contains("ca said \\xc2\\x9b2J\\x9b; caf\xc3\xa9"));
    CHECK_THAT(ctl.ok({"show", "fine.test"}).out, Contains("ca said \\xc2\\x9b2J\\x9b; caf\xc3\xa9"));
    CHECK(ctl.ok({"show", escape}).out.find('\x1b') == std::string::npos);
    for (const auto& q : quoted) {
        INFO(q);
        CHECK_THAT(list.out, Contains(q + "  ")); // the NAME column
        CHECK_THAT(list.out, Contains("invalid domain name " + q + why + ": not served or renewed"));
    }
    // JSON escapes the control character itself; a byte that is not UTF-8 becomes U+FFFD.
    std::set<std::string> names;
    for (const auto& d : ctl.js({"list"})) {
        names.insert(d["name"].get<std::string>());
    }
    CHECK(names == std::set<std::string>{escape, "\xef\xbf\xbd.test", "../../etc", "fine.test"});

    RunResult renew = ctl({"renew", "--all", "--force"});
    CHECK(renew.exit_code == 1);
    CHECK(renew.err.find('\x1b') == std::string::npos);
    for (const auto& q : quoted) {
        INFO(q);
        CHECK_THAT(renew.err,
                   Contains("invalid domain name " + q + why + ": the mount does not serve it, so it is not renewed"));
    }
    CHECK(ctl.show("fine.test")["generation"] == 2);
    CHECK(ctl.js({"list"})[0]["generation"] == 1); // "../../etc", first by name: not renewed
    expect_failure(ctl({"renew", escape, "--force"}), 1, "the mount does not serve it");

    RunResult check = ctl({"check"});
    CHECK(check.exit_code == 1);
    CHECK(check.out.find('\x1b') == std::string::npos);
    for (const auto& q : quoted) {
        INFO(q);
        CHECK_THAT(check.out, Contains("invalid domain name " + q + why + ": the mount does not serve it"));
    }
}

TEST_CASE("add --mode above 0777 is refused and naming the mode in octal")
{
    Ctl ctl;
    ctl.init_with_ca();
    const std::string before = ctl.snapshot();
    RunResult r = ctl({"add", "x.example.com", "--issuer", "ca", "--mode", "1777"});
    INFO(r.err);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Contains("1777"));
    CHECK_THAT(r.err, !Contains("1023"));
    CHECK(line_count(r.err) == 1);
    CHECK(ctl.snapshot() == before);
}

TEST_CASE("set changes who may read the key files, logs it, and refuses bad input changing nothing")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "set.example.com", "--issuer", "ca"});
    RunResult r = ctl.ok({"set", "set.example.com", "--group", "0", "--mode", "0640"});
    CHECK(r.out == "set.example.com: key files are root:root 0640 for new opens; descriptors already open keep "
                   "working\n");
    CHECK(ctl.show("set.example.com")["mode"] == "0640");
    ctl.ok({"set", "set.example.com", "--owner", "nobody"});
    json d = ctl.show("set.example.com");
    CHECK(d["mode"] == "0640"); // what was not given stays
    CHECK(d["owner"] == "nobody");
    CHECK_THAT(ctl.ok({"log", "set.example.com"}).out, Contains("key files 0:0 0600 -> 0:0 0640"));

    const std::string before = ctl.snapshot();
    expect_failure(ctl({"set", "set.example.com"}), 1, "nothing to change: give --owner, --group or --mode");
    expect_failure(ctl({"set", "set.example.com", "--owner", "no-such-user-certfs"}), 1,
                   "unknown user 'no-such-user-certfs'");
    expect_failure(ctl({"set", "set.example.com", "--group", "no-such-group-certfs"}), 1,
                   "unknown group 'no-such-group-certfs'");
    expect_failure(ctl({"set", "set.example.com", "--mode", "1777"}), 1,
                   "invalid mode 1777: only permission bits (0 to 0777) are allowed");
    expect_failure(ctl({"set", "set.example.com", "--mode", "rw"}), 2, "invalid mode 'rw'");
    expect_failure(ctl({"set", "none.example.com", "--mode", "0600"}), 1, "no domain named none.example.com");
    expect_failure(ctl({"set"}), 2, "NAME");
    CHECK(ctl.snapshot() == before);
}

TEST_CASE("add with --ip but no --san keeps NAME as the DNS name")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "www.example.com", "--issuer", "ca", "--ip", "192.0.2.1"});
    json d = ctl.show("www.example.com");
    CHECK(d["ip_addresses"] == json::array({"192.0.2.1"}));
    CHECK(d["dns_names"] == json::array({"www.example.com"}));
}

// ---- import --------------------------------------------------------------------------------

TEST_CASE("import creates a domain without an issuer from a foreign certificate")
{
    Ctl ctl;
    ctl.init_with_ca();
    ForeignCa foreign("/CN=Foreign CA/O=Elsewhere");
    auto leaf = foreign.leaf({{"imp.example.com", "alt.example.com"}, {"192.0.2.9"}}, pki::KeyType::ed25519);

    RunResult r = ctl.ok(import_args(ctl, "imp.example.com", "one", leaf, foreign.pem()));
    CHECK_THAT(r.out, Contains("imported imp.example.com: generation 1"));
    CHECK(r.err.empty());

    json d = ctl.show("imp.example.com");
    CHECK(d["issuer"].is_null());
    CHECK(d["dns_names"] == json::array({"imp.example.com", "alt.example.com"}));
    CHECK(d["ip_addresses"] == json::array({"192.0.2.9"}));
    CHECK(d["generation"] == 1);
    CHECK(d["key_type"] == "ed25519");
    CHECK(d["state"] == "monitoring");
    json h = ctl.history("imp.example.com");
    REQUIRE(h.size() == 1);
    CHECK(h[0]["reason"] == "imported");
    CHECK(h[0]["current"] == true);
    CHECK(h[0]["serial"] == leaf.serial_hex);
    CHECK_THAT(h[0]["issuer"].get<std::string>(), Contains("CN=Foreign CA"));
    CHECK_THAT(ctl.ok({"show", "imp.example.com"}).out, Contains("imported"));

    auto dir = ctl.export_to("imp.example.com", "out");
    CHECK(read_file(dir / "cert.pem") == leaf.cert_pem);
    CHECK(read_file(dir / "chain.pem") == foreign.pem());
    check_verifies(dir);
    check_key_matches_cert(dir);

    // A newer certificate for the same names: a new generation (imported with --now, which says so).
    auto second = foreign.leaf({{"alt.example.com", "imp.example.com"}, {"192.0.2.9"}});
    RunResult now = ctl.ok(cat(import_args(ctl, "imp.example.com", "two", second, foreign.pem()), {"--now"}));
    CHECK_THAT(now.out, Contains("imp.example.com: every reader moves to generation 2 at once (--now)"));
    // A domain without an issuer never makes a key: it takes the type of the one it was given.
    CHECK(ctl.show("imp.example.com")["key_type"] == "ec-p256");
    // The chain may also follow the leaf in the certificate file.
    auto third = foreign.leaf({{"imp.example.com", "alt.example.com", "more.example.com"}, {"192.0.2.9"}});
    write_file(ctl.path("three.full.pem"), third.cert_pem + foreign.pem());
    write_file(ctl.path("three.key.pem"), third.key_pem);
    RunResult no_chain = ctl.ok({"import", "imp.example.com", "--cert", ctl.path("three.full.pem").string(), "--key",
                                 ctl.path("three.key.pem").string()});
    CHECK_THAT(no_chain.out, Contains("generation 3"));
    h = ctl.history("imp.example.com");
    CHECK(gen_numbers(h) == std::vector<std::int64_t>{1, 2, 3});
    CHECK(current_gen(h) == 3);
    CHECK(current_serial(h) == third.serial_hex);
    for (const auto& g : h) {
        CHECK(g["reason"] == "imported");
    }

    // An imported domain cannot be renewed: it has no issuer.
    const std::string before = ctl.snapshot();
    expect_failure(ctl({"renew", "imp.example.com"}), 1, "has no issuer");
    expect_failure(ctl({"renew", "imp.example.com", "--force"}), 1, "has no issuer");
    CHECK(ctl.snapshot() == before);
    // ...and renew --all leaves it out.
    RunResult all = ctl.ok({"renew", "--all", "--force"});
    CHECK_THAT(all.out, !Contains("imp.example.com"));
    CHECK(ctl.history("imp.example.com") == h);

    // import also feeds a domain that has an issuer, when the certificate covers its names.
    ctl.ok({"add", "local.example.com", "--issuer", "ca"});
    auto covering = foreign.leaf({{"local.example.com"}, {}});
    ctl.ok(import_args(ctl, "local.example.com", "four", covering, foreign.pem()));
    json lh = ctl.history("local.example.com");
    REQUIRE(lh.size() == 2);
    CHECK(lh[1]["reason"] == "imported");
    CHECK(current_gen(lh) == 2);
    CHECK(ctl.show("local.example.com")["issuer"] == "ca");
}

TEST_CASE("import refuses bad input, names the failed check and changes nothing")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "other.example.com", "--issuer", "ca"});
    ForeignCa foreign("/CN=Foreign CA");
    ForeignCa stranger("/CN=Stranger CA");
    auto good = foreign.leaf({{"good.example.com"}, {}});
    auto now = std::chrono::system_clock::now();
    auto expired = foreign.leaf({{"good.example.com"}, {}}, now - std::chrono::days(10), now - std::chrono::days(1));
    auto other_key = foreign.leaf({{"good.example.com"}, {}});

    const std::string before = ctl.snapshot();
    const json other_history = ctl.history("other.example.com");
    auto check_unchanged = [&] {
        CHECK(ctl.snapshot() == before);
        CHECK(ctl.history("other.example.com") == other_history);
    };

    SECTION("a key that does not match the certificate")
    {
        auto mismatched = good;
        mismatched.key_pem = other_key.key_pem;
        RunResult r = ctl(import_args(ctl, "good.example.com", "f", mismatched, foreign.pem()));
        expect_failure(r, 1, "validation failed (key match)");
        CHECK_THAT(r.err, Contains("private key does not match"));
    }
    SECTION("a chain that does not link the leaf to its issuer")
    {
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", good, stranger.pem())), 1,
                       "validation failed (chain)");
    }
    SECTION("no chain for a leaf that is not self-signed")
    {
        write_file(ctl.path("leaf.pem"), good.cert_pem);
        write_file(ctl.path("key.pem"), good.key_pem);
        expect_failure(ctl({"import", "good.example.com", "--cert", ctl.path("leaf.pem").string(), "--key",
                            ctl.path("key.pem").string()}),
                       1, "validation failed (chain)");
    }
    SECTION("a certificate not valid yet")
    {
        auto early = foreign.leaf({{"good.example.com"}, {}}, now + std::chrono::days(1), now + std::chrono::days(30));
        RunResult r = ctl(import_args(ctl, "good.example.com", "f", early, foreign.pem()));
        expect_failure(r, 1, "validation failed (validity): the certificate is not valid before");
    }
    SECTION("a trailing garbage block or text after the PEM blocks")
    {
        const std::string block = "-----BEGIN GARBAGE-----\nAAAA\n-----END GARBAGE-----\n";
        auto cert_block = good;
        cert_block.cert_pem += block;
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", cert_block, foreign.pem())), 1,
                       "validation failed (cert): PEM block 2 is a GARBAGE, expected only certificates");
        auto key_block = good;
        key_block.key_pem += block;
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", key_block, foreign.pem())), 1,
                       "validation failed (privkey): expected only a private key, found a GARBAGE block");
        auto key_text = good;
        key_text.key_pem += "trailing junk\n";
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", key_text, foreign.pem())), 1,
                       "validation failed (privkey): unexpected text outside the PEM blocks");
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", good, foreign.pem() + "trailing junk\n")), 1,
                       "validation failed (chain): unexpected text outside the PEM blocks");
    }
    SECTION("a key of another type than the domain renews with")
    {
        auto rsa = foreign.leaf({{"other.example.com"}, {}}, pki::KeyType::rsa_2048);
        expect_failure(ctl(import_args(ctl, "other.example.com", "f", rsa, foreign.pem())), 1,
                       "validation failed (key type): the key is rsa-2048, but other.example.com renews with "
                       "ec-p256 keys");
    }
    SECTION("the CA's own certificate offered as the leaf")
    {
        write_file(ctl.path("ca.pem"), foreign.pem());
        write_file(ctl.path("ca.key"), foreign.key_pem());
        expect_failure(
            ctl({"import", "good.example.com", "--cert", ctl.path("ca.pem").string(), "--key",
                 ctl.path("ca.key").string()}),
            1, "validation failed (leaf): the first certificate is a CA certificate (basicConstraints CA:TRUE)");
    }
    SECTION("an expired certificate")
    {
        RunResult r = ctl(import_args(ctl, "good.example.com", "f", expired, foreign.pem()));
        expect_failure(r, 1, "validation failed (validity)");
        CHECK_THAT(r.err, Contains("expired"));
    }
    SECTION("a certificate that does not cover the existing domain's names")
    {
        RunResult r = ctl(import_args(ctl, "other.example.com", "f", good, foreign.pem()));
        expect_failure(r, 1, "validation failed (names)");
        CHECK_THAT(r.err, Contains("other.example.com"));
    }
    SECTION("malformed PEM in the certificate file")
    {
        auto broken = good;
        broken.cert_pem = damage_pem(good.cert_pem);
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", broken, foreign.pem())), 1,
                       "validation failed (cert)");
    }
    SECTION("malformed PEM in the key file")
    {
        auto broken = good;
        broken.key_pem = damage_pem(good.key_pem);
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", broken, foreign.pem())), 1,
                       "validation failed (privkey)");
    }
    SECTION("malformed PEM in the chain file")
    {
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", good, damage_pem(foreign.pem()))), 1,
                       "validation failed (chain)");
    }
    SECTION("a certificate where the key belongs and vice versa")
    {
        auto swapped = good;
        std::swap(swapped.cert_pem, swapped.key_pem);
        expect_failure(ctl(import_args(ctl, "good.example.com", "f", swapped, foreign.pem())), 1,
                       "validation failed (privkey)");
    }
    SECTION("a missing file")
    {
        auto args = import_args(ctl, "good.example.com", "f", good, foreign.pem());
        for (std::size_t i : {3u, 5u, 7u}) {
            auto missing = args;
            missing[i] = ctl.path("missing.pem").string();
            INFO(join(missing));
            RunResult r = ctl(missing);
            expect_failure(r, 1, "cannot read " + ctl.path("missing.pem").string());
        }
    }
    SECTION("an invalid domain name")
    {
        expect_failure(ctl(import_args(ctl, "Good.example.com", "f", good, foreign.pem())), 1,
                       "invalid domain name 'Good.example.com'");
    }
    SECTION("missing --cert or --key is a usage error")
    {
        write_file(ctl.path("leaf.pem"), good.cert_pem);
        expect_failure(ctl({"import", "good.example.com", "--cert", ctl.path("leaf.pem").string()}), 2, "--key");
        expect_failure(ctl({"import", "good.example.com", "--key", ctl.path("leaf.pem").string()}), 2, "--cert");
    }
    check_unchanged();
}

// An admin's files, made with the openssl command: a root, an intermediate, and leaves.
class OpensslPki {
public:
    explicit OpensslPki(const Ctl& ctl) : m_ctl(ctl)
    {
        write_file(at("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                                 "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
        write_file(at("leaf.ext"), "basicConstraints=critical,CA:FALSE\nsubjectAltName=DNS:files.example.com\n"
                                   "authorityKeyIdentifier=keyid\n");
        key("root.key");
        openssl_ok({"req", "-x509", "-new", "-key", at("root.key"), "-subj", "/CN=Files Root", "-days", "30", "-out",
                    at("root.pem")});
        key("int.key");
        sign("int.key", "/CN=Files Intermediate", "root", "ca.ext", "int.pem");
        key("leaf.key");
        sign("leaf.key", "/CN=files.example.com", "int", "leaf.ext", "leaf.pem");
    }

    std::string at(const std::string& name) const { return m_ctl.path(name).string(); }
    void key(const std::string& name) const
    {
        openssl_ok({"genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", at(name)});
    }
    void sign(const std::string& key_name, const std::string& subject, const std::string& by, const std::string& ext,
              const std::string& out) const
    {
        openssl_ok({"req", "-new", "-key", at(key_name), "-subj", subject, "-out", at(out + ".csr")});
        openssl_ok({"x509", "-req", "-in", at(out + ".csr"), "-CA", at(by + ".pem"), "-CAkey", at(by + ".key"),
                    "-CAcreateserial", "-days", "20", "-extfile", at(ext), "-out", at(out)});
    }
    std::string chain(const std::vector<std::string>& parts) const
    {
        std::string out;
        for (const auto& p : parts) {
            out += read_file(m_ctl.path(p));
        }
        return out;
    }

private:
    const Ctl& m_ctl;
};

TEST_CASE("import refuses what openssl users get wrong: a chain out of order, a CA:TRUE self-signed leaf")
{
    Ctl ctl;
    ctl.init_with_ca();
    OpensslPki files(ctl);
    const std::string before = ctl.snapshot();
    auto import = [&](const std::string& cert, const std::string& key, const std::string& chain) {
        write_file(ctl.path("given-chain.pem"), chain);
        return ctl({"import", "files.example.com", "--cert", files.at(cert), "--key", files.at(key), "--chain",
                    ctl.path("given-chain.pem").string()});
    };

    // The root before the intermediate: every link is there, but not in the order servers send.
    RunResult r = import("leaf.pem", "leaf.key", files.chain({"root.pem", "int.pem"}));
    expect_failure(r, 1, "validation failed (chain): chain does not link: certificate 1 of the chain");
    CHECK_THAT(r.err, Contains("(CN=Files Root) did not issue the leaf"));
    // The intermediate missing.
    expect_failure(import("leaf.pem", "leaf.key", files.chain({"root.pem"})), 1, "validation failed (chain)");
    // The full chain given as the certificate, in the wrong order (the intermediate first).
    write_file(ctl.path("backwards.pem"), files.chain({"int.pem", "leaf.pem"}));
    expect_failure(import("backwards.pem", "leaf.key", ""), 1, "validation failed (leaf)");
    // `openssl req -x509` marks its certificate CA:TRUE: a CA, not a server's certificate.
    files.key("self.key");
    openssl_ok({"req", "-x509", "-new", "-key", files.at("self.key"), "-subj", "/CN=files.example.com", "-addext",
                "subjectAltName=DNS:files.example.com", "-days", "30", "-out", files.at("self.pem")});
    expect_failure(import("self.pem", "self.key", ""), 1,
                   "validation failed (leaf): the first certificate is a CA certificate (basicConstraints CA:TRUE)");
    // The leaf's key with the intermediate's certificate.
    expect_failure(import("int.pem", "leaf.key", files.chain({"root.pem"})), 1, "validation failed (leaf)");
    CHECK(ctl.snapshot() == before);

    // In the right order it is taken.
    RunResult ok = import("leaf.pem", "leaf.key", files.chain({"int.pem", "root.pem"}));
    REQUIRE(ok.exit_code == 0);
    CHECK_THAT(ok.out, Contains("imported files.example.com: generation 1"));
}

TEST_CASE("import refuses a serial the issuer already used for another domain")
{
    Ctl ctl;
    ctl.ok({"init"});
    ForeignCa foreign("/CN=Foreign CA");
    auto leaf = foreign.leaf({{"dup-a.example.com", "dup-b.example.com"}, {}});
    ctl.ok(import_args(ctl, "dup-a.example.com", "a", leaf, foreign.pem()));
    const std::string before = ctl.snapshot();
    RunResult r = ctl(import_args(ctl, "dup-b.example.com", "b", leaf, foreign.pem()));
    expect_failure(r, 1, "duplicate serial");
    CHECK_THAT(r.err, Contains(leaf.serial_hex));
    CHECK(ctl.snapshot() == before);
    expect_failure(ctl({"show", "dup-b.example.com"}), 1, "no domain named dup-b.example.com");
    // Nor twice into the same domain.
    expect_failure(ctl(import_args(ctl, "dup-a.example.com", "c", leaf, foreign.pem())), 1, "duplicate serial");
    CHECK(ctl.snapshot() == before);
    ctl.ok({"check"});
}

TEST_CASE("import refuses a key of a type certfs does not serve and changes nothing")
{
    Ctl ctl;
    ctl.ok({"init"});
    auto before = ctl.snapshot();
    ForeignCa foreign("/CN=Foreign CA");
    PKey p521(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-521"));
    REQUIRE(p521);
    auto now = std::chrono::system_clock::now();
    auto leaf = foreign.leaf_for(*p521, {{"p521.example.com"}, {}}, now - 1h, now + std::chrono::days(30));
    expect_failure(ctl(import_args(ctl, "p521.example.com", "p", leaf, foreign.pem())), 1,
                   "validation failed (privkey): EC curve secp521r1 is not supported");
    CHECK(ctl.snapshot() == before);
}

// ---- list and history ----------------------------------------------------------------------

TEST_CASE("list prints a table for people and a JSON array for machines")
{
    Ctl ctl;
    ctl.init_with_ca();
    RunResult empty = ctl.ok({"list"});
    REQUIRE(line_count(empty.out) == 1);
    CHECK(ctl.js({"list"}) == json::array());

    ctl.ok({"add", "b.example.com", "--issuer", "ca"});
    ctl.ok({"add", "a.example.com", "--issuer", "ca", "--no-issue"});
    RunResult table = ctl.ok({"list"});
    std::istringstream lines(table.out);
    std::string header;
    std::getline(lines, header);
    std::size_t at = 0;
    for (const char* column : {"NAME", "GEN", "STATE", "NOT AFTER", "RENEW AT", "ISSUER"}) {
        INFO(column);
        std::size_t found = header.find(column, at);
        REQUIRE(found != std::string::npos);
        at = found + 1;
    }
    std::string row_a;
    std::string row_b;
    std::getline(lines, row_a);
    std::getline(lines, row_b);
    CHECK_THAT(row_a, StartsWith("a.example.com") && Contains("-") && Contains("ca"));
    CHECK_THAT(row_b, StartsWith("b.example.com") && Contains("monitoring") && Contains("ca"));
    CHECK_THAT(row_b, Matches(".*" + std::string(k_rfc3339) + ".*"));
    CHECK(line_count(table.out) == 3);

    json list = ctl.js({"list"});
    REQUIRE(list.is_array());
    REQUIRE(list.size() == 2);
    CHECK(list[0]["name"] == "a.example.com");
    CHECK(list[0]["generation"].is_null());
    CHECK(list[1]["name"] == "b.example.com");
    CHECK(list[1]["generation"] == 1);
}

TEST_CASE("history lists every generation with exactly one current")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "h.example.com", "--issuer", "ca"});
    ctl.ok({"renew", "h.example.com", "--force"});
    ctl.ok({"renew", "h.example.com", "--force"});
    json h = ctl.history("h.example.com");
    REQUIRE(h.is_array());
    REQUIRE(h.size() == 3);
    std::set<std::string> serials;
    for (std::size_t i = 0; i < h.size(); ++i) {
        const json& g = h[i];
        CHECK(g["generation"] == i + 1);
        CHECK_THAT(g["serial"].get<std::string>(), Matches(k_serial));
        serials.insert(g["serial"].get<std::string>());
        check_time(g["not_before"]);
        check_time(g["not_after"]);
        check_time(g["created_at"]);
        CHECK(g["not_before"].get<std::string>() < g["not_after"].get<std::string>());
        CHECK(g["reason"] == (i == 0 ? "issued" : "renewed"));
        CHECK(g.contains("current"));
    }
    CHECK(serials.size() == 3);
    CHECK(current_gen(h) == 3);

    RunResult table = ctl.ok({"history", "h.example.com"});
    CHECK_THAT(table.out, StartsWith("GEN") && Contains("CURRENT") && Contains("REASON") && Contains("SERIAL"));
    CHECK(line_count(table.out) == 4);

    expect_failure(ctl({"history", "nope.example.com"}), 1, "no domain named nope.example.com");
    expect_failure(ctl({"show", "nope.example.com"}), 1, "no domain named nope.example.com");
}

// ---- renew ---------------------------------------------------------------------------------

TEST_CASE("renew --all tells each renewal as it ends, counted, on a terminal, and only the results when piped")
{
    Ctl ctl;
    ctl.init_with_ca();
    const std::vector<std::string> names = {"a.example.com", "b.example.com", "c.example.com"};
    for (const auto& n : names) {
        ctl.ok({"add", n, "--issuer", "ca"});
    }
    // On a terminal: script(1) gives certfsctl a pseudo-terminal as its stdout.
    RunResult tty = certfs::test::run(
        {"/usr/bin/script", "-qec",
         std::string(certfs::test::certfsctl_path()) + " --db " + ctl.db() + " renew --all --force", "/dev/null"});
    INFO(tty.out << tty.err);
    CHECK(tty.exit_code == 0);
    std::set<std::string> counted;
    std::istringstream lines(tty.out);
    for (std::string line; std::getline(lines, line);) {
        // "[K/3] NAME: renewed: generation 2" (a terminal's line ends with \r)
        if (line.rfind("[", 0) != 0 || line.find("/3] ") != 2) {
            continue;
        }
        const std::string count = line.substr(1, 1);
        const std::string rest = line.substr(6, line.find_last_not_of('\r') - 5);
        const std::string name = rest.substr(0, rest.find(':'));
        CHECK(counted.insert(count).second);
        CHECK(std::find(names.begin(), names.end(), name) != names.end());
        CHECK(rest == name + ": renewed: generation 2");
    }
    CHECK(counted == std::set<std::string>{"1", "2", "3"});
    // Piped: the results in the order asked, nothing else.
    RunResult piped = ctl.ok({"renew", "--all", "--force"});
    CHECK(piped.out == "a.example.com: renewed: generation 3\nb.example.com: renewed: generation 3\n"
                       "c.example.com: renewed: generation 3\n");
}

TEST_CASE("renew: a domain not due is left alone, --force renews it, and bad usage changes nothing")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "r.example.com", "--issuer", "ca"});
    json before = ctl.history("r.example.com");

    RunResult not_due = ctl.ok({"renew", "r.example.com"});
    CHECK_THAT(not_due.out, Contains("r.example.com: not due"));
    CHECK(ctl.history("r.example.com") == before);
    RunResult all_not_due = ctl.ok({"renew", "--all"});
    CHECK_THAT(all_not_due.out, Contains("not due"));
    CHECK(ctl.history("r.example.com") == before);

    auto gen1 = ctl.export_to("r.example.com", "gen1");
    RunResult forced = ctl.ok({"renew", "r.example.com", "--force"});
    CHECK_THAT(forced.out, Contains("r.example.com: renewed: generation 2"));
    json after = ctl.history("r.example.com");
    REQUIRE(after.size() == 2);
    CHECK(current_gen(after) == 2);
    CHECK(after[1]["serial"] != after[0]["serial"]);
    CHECK(ctl.show("r.example.com")["generation"] == 2);
    auto gen2 = ctl.export_to("r.example.com", "gen2");
    CHECK(read_file(gen1 / "privkey.pem") != read_file(gen2 / "privkey.pem"));
    CHECK(read_file(gen1 / "cert.pem") != read_file(gen2 / "cert.pem"));
    check_key_matches_cert(gen2);

    const std::string snapshot = ctl.snapshot();
    expect_failure(ctl({"renew"}), 2, "renew takes domain names or --all");
    expect_failure(ctl({"renew", "--force"}), 2, "renew takes domain names or --all");
    expect_failure(ctl({"renew", "r.example.com", "--all"}), 2, "renew takes domain names or --all");
    expect_failure(ctl({"renew", "nope.example.com"}), 1, "no domain named nope.example.com");
    expect_failure(ctl({"renew", "nope.example.com", "--force"}), 1, "no domain named nope.example.com");
    CHECK(ctl.snapshot() == snapshot);
}

TEST_CASE("renew --now renews even when not due and says that every reader moves at once")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "n.example.com", "--issuer", "ca"});
    RunResult r = ctl.ok({"renew", "n.example.com", "--now"});
    CHECK_THAT(r.out, Contains("n.example.com: renewed: generation 2"));
    CHECK_THAT(r.out, Contains("n.example.com: every reader moves to generation 2 at once (--now); one reading its "
                               "key and certificate at that moment may pair them wrongly once"));
    CHECK(current_gen(ctl.history("n.example.com")) == 2);
    // Without --now nothing says so.
    RunResult plain = ctl.ok({"renew", "n.example.com", "--force"});
    CHECK_THAT(plain.out, !Contains("--now"));
    // A failing --now renewal says nothing of moving.
    const std::string before = ctl.snapshot();
    RunResult failed = ctl({"renew", "nope.example.com", "--now"});
    expect_failure(failed, 1, "no domain named nope.example.com");
    CHECK_THAT(failed.out + failed.err, !Contains("moves"));
    CHECK(ctl.snapshot() == before);
    // A domain that reuses its key keeps it through --now too, as the reference says.
    ctl.ok({"add", "k.example.com", "--issuer", "ca", "--reuse-key"});
    auto gen1 = ctl.export_to("k.example.com", "gen1");
    ctl.ok({"renew", "k.example.com", "--now"});
    CHECK(read_file(gen1 / "privkey.pem") == read_file(ctl.export_to("k.example.com", "gen2") / "privkey.pem"));
}

TEST_CASE("concurrent renewals of one domain never reuse or skip a generation number")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "busy.example.com", "--issuer", "ca"});
    constexpr int k_runs = 4;
    std::vector<RunResult> results(k_runs);
    std::vector<std::thread> threads;
    for (int i = 0; i < k_runs; ++i) {
        threads.emplace_back([&, i] {
            results[static_cast<std::size_t>(i)] = ctl.unchecked({"renew", "busy.example.com", "--force"});
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    int succeeded = 0;
    for (const auto& r : results) {
        INFO("stdout: " << r.out << "\nstderr: " << r.err);
        certfs::test::check_no_key_material(r);
        if (r.exit_code == 0) {
            ++succeeded;
        } else {
            // The loser was told another renewal holds the lease or committed first.
            expect_failure(r, 1, "renew busy.example.com");
            CHECK_THAT(r.err, Contains("renewal already in progress") || Contains("another writer committed first"));
        }
    }
    CHECK(succeeded >= 1);
    json h = ctl.history("busy.example.com");
    std::vector<std::int64_t> expected;
    for (int g = 1; g <= succeeded + 1; ++g) {
        expected.push_back(g);
    }
    CHECK(gen_numbers(h) == expected);
    CHECK(current_gen(h) == succeeded + 1);
    ctl.ok({"check"});
}

TEST_CASE("renew --force with --reuse-key keeps the key and changes the serial")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "k.example.com", "--issuer", "ca", "--reuse-key", "--key-type", "ec-p384"});
    auto gen1 = ctl.export_to("k.example.com", "gen1");
    ctl.ok({"renew", "k.example.com", "--force"});
    auto gen2 = ctl.export_to("k.example.com", "gen2");
    CHECK(read_file(gen1 / "privkey.pem") == read_file(gen2 / "privkey.pem"));
    CHECK(read_file(gen1 / "cert.pem") != read_file(gen2 / "cert.pem"));
    json h = ctl.history("k.example.com");
    REQUIRE(h.size() == 2);
    CHECK(h[0]["serial"] != h[1]["serial"]);
    check_key_matches_cert(gen2);
}

TEST_CASE("renew --all --force renews every domain with an issuer exactly once")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "solo.example.com", "--issuer", "ca"});
    ctl.ok({"add", "b1.example.com", "--issuer", "ca", "--bundle", "pair"});
    ctl.ok({"add", "b2.example.com", "--issuer", "ca", "--bundle", "pair"});
    ForeignCa foreign("/CN=Foreign CA");
    ctl.ok(import_args(ctl, "imported.example.com", "i", foreign.leaf({{"imported.example.com"}, {}}), foreign.pem()));

    RunResult r = ctl.ok({"renew", "--all", "--force"});
    for (const char* name : {"solo.example.com", "b1.example.com", "b2.example.com"}) {
        INFO(name);
        CHECK_THAT(r.out, Contains(std::string(name) + ": renewed: generation 2"));
        json h = ctl.history(name);
        CHECK(gen_numbers(h) == std::vector<std::int64_t>{1, 2});
        CHECK(current_gen(h) == 2);
    }
    CHECK(line_count(r.out) == 3);
    CHECK_THAT(r.out, !Contains("imported.example.com"));
    CHECK(ctl.history("imported.example.com").size() == 1);
}

TEST_CASE("renewing one bundle member renews the whole bundle")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "a.example.com", "--issuer", "ca", "--bundle", "b"});
    ctl.ok({"add", "b.example.com", "--issuer", "ca", "--bundle", "b"});
    ctl.ok({"add", "c.example.com", "--issuer", "ca"});

    RunResult r = ctl.ok({"renew", "a.example.com", "--force"});
    CHECK_THAT(r.out, Contains("a.example.com: renewed: generation 2"));
    CHECK_THAT(r.out, Contains("b.example.com: renewed: generation 2"));
    for (const char* name : {"a.example.com", "b.example.com"}) {
        INFO(name);
        json h = ctl.history(name);
        CHECK(gen_numbers(h) == std::vector<std::int64_t>{1, 2});
        CHECK(current_gen(h) == 2);
        CHECK(h[1]["reason"] == "renewed");
    }
    CHECK(ctl.history("c.example.com").size() == 1);

    // Naming both members renews the bundle once, not twice.
    RunResult both = ctl.ok({"renew", "b.example.com", "a.example.com", "--force"});
    CHECK(line_count(both.out) == 2);
    CHECK(gen_numbers(ctl.history("a.example.com")) == std::vector<std::int64_t>{1, 2, 3});
    CHECK(gen_numbers(ctl.history("b.example.com")) == std::vector<std::int64_t>{1, 2, 3});
}

namespace {

// Adds a local CA issuer "expired" whose certificate has expired: asked for a 2 ms lifetime, it
// ends on a whole second at most 2 ms after it was made, which is over by the time a command
// that started after `issuer add` finished looks at it.
void add_expired_issuer(const Ctl& ctl)
{
    ctl.ok({"issuer", "add", "local", "expired", "--validity", "1ms", "--ca-validity", "2ms"});
    json issuer = ctl.js({"issuer", "show", "expired"});
    REQUIRE(std::chrono::system_clock::now() >= parse_rfc3339(issuer["not_after"].get<std::string>()));
}

} // namespace

TEST_CASE("a failed renewal keeps the current generations and records the error")
{
    Ctl ctl;
    ctl.init_with_ca();
    add_expired_issuer(ctl);
    const std::string before = ctl.snapshot();
    expect_failure(ctl({"add", "x.example.com", "--issuer", "expired"}), 1, "the local CA certificate expired");
    CHECK(ctl.snapshot() == before);

    ctl.ok({"add", "good.example.com", "--issuer", "ca", "--bundle", "pair"});
    ctl.ok({"add", "stuck.example.com", "--issuer", "expired", "--no-issue", "--bundle", "pair"});
    const json good_before = ctl.history("good.example.com");
    auto dir = ctl.export_to("good.example.com", "out");
    const std::string cert = read_file(dir / "cert.pem");

    RunResult r = ctl({"renew", "good.example.com", "--force"});
    expect_failure(r, 1, "the local CA certificate expired");
    CHECK_THAT(r.err, Contains("stuck.example.com"));
    // The bundle switches all or nothing: good.example.com keeps generation 1.
    CHECK(ctl.history("good.example.com") == good_before);
    CHECK(ctl.history("stuck.example.com") == json::array());
    for (const char* name : {"good.example.com", "stuck.example.com"}) {
        INFO(name);
        json d = ctl.show(name);
        CHECK(d["state"] == "rejected"); // the CA refused: it needs the admin, retried with backoff
        REQUIRE(d["last_error"].is_string());
        CHECK_THAT(d["last_error"].get<std::string>(), Contains("the local CA certificate expired"));
        check_time(d["next_attempt"]);
    }
    CHECK(ctl.show("good.example.com")["generation"] == 1);
    RunResult table = ctl.ok({"list"});
    CHECK_THAT(table.out, Contains("LAST ERROR") && Contains("rejected") && Contains("certificate expired"));
    ctl.export_to("good.example.com", "out");
    CHECK(read_file(dir / "cert.pem") == cert);

    // Without --force nothing is tried again before the backoff delay is over.
    RunResult waiting = ctl.ok({"renew", "good.example.com"});
    CHECK_THAT(waiting.out, Contains("not due until"));
    CHECK(ctl.history("good.example.com") == good_before);

    // renew --all goes on after a failure and reports it.
    ctl.ok({"add", "fine.example.com", "--issuer", "ca"});
    RunResult all = ctl({"renew", "--all", "--force"});
    CHECK(all.exit_code == 1);
    CHECK_THAT(all.out, Contains("fine.example.com: renewed: generation 2"));
    CHECK_THAT(all.err, Contains("the local CA certificate expired"));
    CHECK(ctl.history("good.example.com") == good_before);
}

TEST_CASE("renew --all tries a failing bundle once and not once per member")
{
    // One attempt for the bundle: one error line, one failure counted (so the backoff is one
    // minute, not two), however many of its members were named.
    Ctl ctl;
    ctl.init_with_ca();
    add_expired_issuer(ctl);
    ctl.ok({"add", "good.example.com", "--issuer", "ca", "--bundle", "pair"});
    ctl.ok({"add", "stuck.example.com", "--issuer", "expired", "--no-issue", "--bundle", "pair"});
    auto start = std::chrono::system_clock::now();

    RunResult r = ctl({"renew", "--all", "--force"});
    CHECK(r.exit_code == 1);
    CHECK(line_count(r.err) == 1);
    for (const char* name : {"good.example.com", "stuck.example.com"}) {
        INFO(name);
        json events = ctl.js({"log", name});
        auto errors = std::count_if(events.begin(), events.end(), [](const json& e) { return e["action"] == "error"; });
        CHECK(errors == 1);
        // First failure: the next attempt is one minute away.
        auto next = parse_rfc3339(ctl.show(name)["next_attempt"].get<std::string>());
        CHECK(std::chrono::duration_cast<std::chrono::seconds>(next - start).count() < 90);
    }
}

TEST_CASE("check tells an imported certificate that is due to be replaced")
{
    Ctl ctl;
    ctl.ok({"init"});
    ForeignCa foreign("/CN=Foreign CA");
    auto now = std::chrono::system_clock::now();
    // A two-hour lifetime: due at half of it, which is now.
    auto leaf = foreign.leaf({{"short.example.com"}, {}}, now - 1h, now + 1h);
    ctl.ok(import_args(ctl, "short.example.com", "s", leaf, foreign.pem()));
    RunResult r = ctl({"check"});
    CHECK(r.exit_code == 1);
    CHECK(line_count(r.out) == 1);
    CHECK_THAT(r.out, Contains("domain short.example.com: due for renewal") && Contains("import a new certificate"));
}

// ---- rollback ------------------------------------------------------------------------------

TEST_CASE("rollback makes an older generation current without reusing numbers")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "rb.example.com", "--issuer", "ca"});
    ctl.ok({"renew", "rb.example.com", "--force"});
    ctl.ok({"renew", "rb.example.com", "--force"});
    json h = ctl.history("rb.example.com");
    REQUIRE(current_gen(h) == 3);

    RunResult r = ctl.ok({"rollback", "rb.example.com"});
    CHECK_THAT(r.out, Contains("generation 2 is current again (was 3)"));
    CHECK(current_gen(ctl.history("rb.example.com")) == 2);
    CHECK(ctl.show("rb.example.com")["generation"] == 2);
    CHECK(ctl.show("rb.example.com")["current"]["serial"] == h[1]["serial"]);
    CHECK(ctl.history("rb.example.com")[1]["current"] == true);
    auto dir = ctl.export_to("rb.example.com", "out");
    std::string serial = openssl_ok({"x509", "-in", (dir / "cert.pem").string(), "-noout", "-serial"});
    CHECK_THAT(serial, Contains(h[1]["serial"].get<std::string>(), Catch::CaseSensitive::No));

    ctl.ok({"rollback", "rb.example.com"});
    CHECK(current_gen(ctl.history("rb.example.com")) == 1);
    const std::string before = ctl.snapshot();
    expect_failure(ctl({"rollback", "rb.example.com"}), 1, "no generation older than 1");
    expect_failure(ctl({"rollback", "rb.example.com", "--to", "9"}), 1, "has no generation 9");
    expect_failure(ctl({"rollback", "rb.example.com", "--to", "1"}), 1, "already current");
    expect_failure(ctl({"rollback", "rb.example.com", "--to", "0"}), 2, "--to");
    expect_failure(ctl({"rollback", "rb.example.com", "--to", "two"}), 2, "--to");
    expect_failure(ctl({"rollback", "nope.example.com"}), 1, "no domain named nope.example.com");
    CHECK(ctl.snapshot() == before);

    RunResult now = ctl.ok({"rollback", "rb.example.com", "--to", "3", "--now"});
    CHECK_THAT(now.out, Contains("rb.example.com: generation 3 is current again (was 1)"));
    CHECK_THAT(now.out, Contains("rb.example.com: every reader moves to generation 3 at once (--now)"));
    CHECK(current_gen(ctl.history("rb.example.com")) == 3);
    RunResult plain = ctl.ok({"rollback", "rb.example.com", "--to", "1"});
    CHECK_THAT(plain.out, !Contains("--now"));

    // The next renewal is max + 1, not a reused number.
    RunResult renewed = ctl.ok({"renew", "rb.example.com", "--force"});
    CHECK_THAT(renewed.out, Contains("generation 4"));
    json after = ctl.history("rb.example.com");
    CHECK(gen_numbers(after) == std::vector<std::int64_t>{1, 2, 3, 4});
    CHECK(current_gen(after) == 4);
    // Older generations are immutable: rollbacks and renewals did not touch them.
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(after[i]["serial"] == h[i]["serial"]);
        CHECK(after[i]["not_after"] == h[i]["not_after"]);
    }
}

TEST_CASE("rollback needs an older generation")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "one.example.com", "--issuer", "ca"});
    ctl.ok({"add", "none.example.com", "--issuer", "ca", "--no-issue"});
    const std::string before = ctl.snapshot();
    expect_failure(ctl({"rollback", "one.example.com"}), 1, "no generation older than 1");
    expect_failure(ctl({"rollback", "none.example.com"}), 1, "has no certificate");
    expect_failure(ctl({"rollback"}), 2, "NAME");
    CHECK(ctl.snapshot() == before);
}

// ---- remove --------------------------------------------------------------------------------

TEST_CASE("remove forgets a domain but its generation numbers stay used")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "gone.example.com", "--issuer", "ca"});
    ctl.ok({"add", "kept.example.com", "--issuer", "ca"});
    ctl.ok({"renew", "gone.example.com", "--force"});

    RunResult removed = ctl.ok({"remove", "gone.example.com"});
    CHECK_THAT(removed.out, Contains("removed gone.example.com"));
    json list = ctl.js({"list"});
    REQUIRE(list.size() == 1);
    CHECK(list[0]["name"] == "kept.example.com");
    CHECK_THAT(ctl.ok({"list"}).out, !Contains("gone.example.com"));
    expect_failure(ctl({"show", "gone.example.com"}), 1, "no domain named gone.example.com");
    expect_failure(ctl({"history", "gone.example.com"}), 1, "no domain named gone.example.com");
    expect_failure(ctl({"remove", "gone.example.com"}), 1, "no domain named gone.example.com");

    RunResult again = ctl.ok({"add", "gone.example.com", "--issuer", "ca"});
    CHECK_THAT(again.out, Contains("generation 3"));
    json h = ctl.history("gone.example.com");
    CHECK(gen_numbers(h) == std::vector<std::int64_t>{3});
    CHECK(h[0]["reason"] == "issued");

    // Also when the name comes back through import.
    ctl.ok({"remove", "gone.example.com"});
    ForeignCa foreign("/CN=Foreign CA");
    RunResult imported =
        ctl.ok(import_args(ctl, "gone.example.com", "g", foreign.leaf({{"gone.example.com"}, {}}), foreign.pem()));
    CHECK_THAT(imported.out, Contains("generation 4"));
    CHECK(gen_numbers(ctl.history("gone.example.com")) == std::vector<std::int64_t>{4});
    CHECK(ctl.history("kept.example.com").size() == 1);
}

// ---- export --------------------------------------------------------------------------------

TEST_CASE("export writes the five files and with the domain's mode on the secret ones")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "ex.example.com", "--issuer", "ca", "--mode", "0640"});
    const stdfs::path out = ctl.path("out");
    RunResult r = ctl.ok({"export", "ex.example.com", out.string()});
    CHECK_THAT(r.out, Contains("exported generation 1 of ex.example.com"));

    CHECK(stdfs::is_symlink(out));
    for (const char* file : {"cert.pem", "chain.pem", "fullchain.pem", "privkey.pem", "combined.pem"}) {
        INFO(file);
        REQUIRE(stdfs::is_regular_file(out / file));
    }
    const std::string cert = read_file(out / "cert.pem");
    const std::string chain = read_file(out / "chain.pem");
    const std::string key = read_file(out / "privkey.pem");
    CHECK_THAT(cert, StartsWith("-----BEGIN CERTIFICATE-----"));
    CHECK_THAT(chain, StartsWith("-----BEGIN CERTIFICATE-----"));
    CHECK_THAT(key, StartsWith("-----BEGIN PRIVATE KEY-----"));
    CHECK(read_file(out / "fullchain.pem") == cert + chain);
    CHECK(read_file(out / "combined.pem") == key + cert + chain);
    CHECK(chain == ctl.ok({"issuer", "cert", "ca"}).out);
    check_verifies(out);
    check_key_matches_cert(out);
    CHECK(mode_of(out / "privkey.pem") == 0640);
    CHECK(mode_of(out / "combined.pem") == 0640);
    CHECK(mode_of(out / "cert.pem") == 0644);
    CHECK(mode_of(out / "chain.pem") == 0644);
    CHECK(mode_of(out / "fullchain.pem") == 0644);

    // After a renewal, a new export switches DIR to the new set.
    ctl.ok({"renew", "ex.example.com", "--force"});
    RunResult again = ctl.ok({"export", "ex.example.com", out.string()});
    CHECK_THAT(again.out, Contains("exported generation 2"));
    CHECK(stdfs::is_symlink(out));
    CHECK(read_file(out / "cert.pem") != cert);
    CHECK(read_file(out / "privkey.pem") != key);
    check_key_matches_cert(out);
    check_verifies(out);
    CHECK(mode_of(out / "privkey.pem") == 0640);

    // The previous set is kept for readers that resolved DIR just before the switch; older
    // ones go.
    ctl.ok({"renew", "ex.example.com", "--force"});
    ctl.ok({"export", "ex.example.com", out.string()});
    const stdfs::path sets = ctl.path(".out.certfs");
    REQUIRE(stdfs::is_directory(sets));
    CHECK(std::distance(stdfs::directory_iterator(sets), stdfs::directory_iterator()) == 2);
    CHECK(stdfs::read_symlink(out).parent_path() == ".out.certfs");
    CHECK_THAT(stdfs::read_symlink(out).filename().string(), StartsWith("3."));

    // --gen picks an older generation.
    auto old = ctl.export_to("ex.example.com", "old", 1);
    CHECK(read_file(old / "cert.pem") == cert);
    CHECK(read_file(old / "privkey.pem") == key);
    expect_failure(ctl({"export", "ex.example.com", ctl.path("x").string(), "--gen", "9"}), 1, "has no generation 9");
    expect_failure(ctl({"export", "ex.example.com", ctl.path("x").string(), "--gen", "0"}), 2, "--gen");
    CHECK_FALSE(stdfs::exists(ctl.path("x")));
}

TEST_CASE("export gives the secret files the domain's owner and group when run as root")
{
    if (::geteuid() != 0) {
        WARN("not root: export does not change owners");
        return;
    }
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "own.example.com", "--issuer", "ca", "--owner", "nobody", "--group", "nogroup", "--mode", "0440"});
    auto dir = ctl.export_to("own.example.com", "out");
    using Owner = std::pair<unsigned, unsigned>;
    auto owner = [](const stdfs::path& p) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        return Owner(st.st_uid, st.st_gid);
    };
    const passwd* nobody = ::getpwnam("nobody");
    const group* nogroup = ::getgrnam("nogroup");
    REQUIRE(nobody != nullptr);
    REQUIRE(nogroup != nullptr);
    const Owner expected(nobody->pw_uid, nogroup->gr_gid);
    CHECK(owner(dir / "privkey.pem") == expected);
    CHECK(owner(dir / "combined.pem") == expected);
    CHECK(owner(dir / "cert.pem") == Owner(0, 0));
    CHECK(mode_of(dir / "privkey.pem") == 0440);
    CHECK(mode_of(dir / "fullchain.pem") == 0644);
}

TEST_CASE("export refuses a directory it does not manage")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "ex.example.com", "--issuer", "ca"});
    ctl.ok({"add", "none.example.com", "--issuer", "ca", "--no-issue"});

    const stdfs::path full = ctl.path("full");
    stdfs::create_directory(full);
    write_file(full / "keep.txt", "precious\n");
    RunResult r = ctl({"export", "ex.example.com", full.string()});
    expect_failure(r, 1, "is a directory that is not empty");
    CHECK_FALSE(stdfs::is_symlink(full));
    CHECK(read_file(full / "keep.txt") == "precious\n");
    CHECK(std::distance(stdfs::directory_iterator(full), stdfs::directory_iterator()) == 1);

    write_file(ctl.path("file"), "x");
    expect_failure(ctl({"export", "ex.example.com", ctl.path("file").string()}), 1, "exists and is not a directory");
    CHECK(read_file(ctl.path("file")) == "x");

    expect_failure(ctl({"export", "ex.example.com", ctl.path("no/such/dir").string()}), 1, "does not exist");
    expect_failure(ctl({"export", "none.example.com", ctl.path("n").string()}), 1, "has no certificate");
    expect_failure(ctl({"export", "nope.example.com", ctl.path("n").string()}), 1, "no domain named nope.example.com");
    expect_failure(ctl({"export", "ex.example.com"}), 2, "DIR");

    stdfs::create_directory(ctl.path("elsewhere"));
    stdfs::create_directory_symlink(ctl.path("elsewhere"), ctl.path("link"));
    expect_failure(ctl({"export", "ex.example.com", ctl.path("link").string()}), 1,
                   "symbolic link not made by certfsctl export");
    CHECK(stdfs::is_empty(ctl.path("elsewhere")));

    // An empty directory is taken over.
    stdfs::create_directory(ctl.path("empty"));
    ctl.ok({"export", "ex.example.com", ctl.path("empty").string()});
    CHECK(stdfs::is_symlink(ctl.path("empty")));
}

// ---- check ---------------------------------------------------------------------------------

TEST_CASE("check reports one line per problem")
{
    Ctl ctl;
    ctl.init_with_ca();
    RunResult empty = ctl.ok({"check"});
    CHECK_THAT(empty.out, StartsWith("ok"));
    ctl.ok({"add", "fine.example.com", "--issuer", "ca"});
    RunResult healthy = ctl.ok({"check"});
    CHECK_THAT(healthy.out, StartsWith("ok"));
    CHECK(ctl.js({"check"}) == json({{"ok", true}, {"problems", json::array()}}));

    ctl.ok({"add", "later.example.com", "--issuer", "ca", "--no-issue"});
    RunResult one = ctl({"check"});
    CHECK(one.exit_code == 1);
    CHECK(one.out == "domain later.example.com: has no certificate\n");

    // Leaves that live 12 s and are renewed two hours before expiry are not due at once, but a
    // quarter of their lifetime (3 s) after their issue.
    ctl.ok({"issuer", "add", "local", "short", "--validity", "12s"});
    ctl.ok({"add", "due.example.com", "--issuer", "short", "--renew-before", "2h"});
    json due = ctl.show("due.example.com");
    const auto issued = parse_rfc3339(due["current"]["created_at"].get<std::string>());
    CHECK(parse_rfc3339(due["renew_at"].get<std::string>()) > issued);
    CHECK(parse_rfc3339(due["due_at"].get<std::string>()) <= issued + 4s);
    CHECK_THAT(ctl.ok({"show", "due.example.com"}).out,
               Contains("renew at:") && Contains("(the earliest: a quarter of the lifetime after issue)"));
    CHECK(test::wait_until([&] { return ctl({"check"}).out.find("due.example.com") != std::string::npos; }, 8s));
    RunResult two = ctl({"check"});
    CHECK(two.exit_code == 1);
    CHECK(line_count(two.out) == 2);
    CHECK_THAT(two.out, Contains("domain later.example.com: has no certificate"));
    CHECK_THAT(two.out, Contains("domain due.example.com: due for renewal"));
    CHECK_THAT(two.out, !Contains("fine.example.com"));

    RunResult js = ctl({"check", "--json"});
    CHECK(js.exit_code == 1);
    json j = json::parse(js.out);
    CHECK(j["ok"] == false);
    REQUIRE(j["problems"].is_array());
    CHECK(j["problems"].size() == 2);

    // A due domain is renewed without --force.
    RunResult renewed = ctl.ok({"renew", "due.example.com"});
    CHECK_THAT(renewed.out, Contains("due.example.com: renewed: generation 2"));
    ctl.ok({"remove", "due.example.com"});
    ctl.ok({"renew", "later.example.com"});
    RunResult fixed = ctl.ok({"check"});
    CHECK_THAT(fixed.out, StartsWith("ok"));
}

// ---- log -----------------------------------------------------------------------------------

TEST_CASE("log shows who did what")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "lg.example.com", "--issuer", "ca"});
    ctl.ok({"add", "other.example.com", "--issuer", "ca"});
    ctl.ok({"renew", "lg.example.com", "--force"});
    ctl.ok({"rollback", "lg.example.com"});

    const std::string actor = "certfsctl uid=" + std::to_string(::getuid());
    json events = ctl.js({"log", "lg.example.com"});
    REQUIRE(events.is_array());
    std::vector<std::string> actions;
    for (const auto& e : events) {
        CHECK(e["domain"] == "lg.example.com");
        CHECK(e["actor"] == actor);
        check_time(e["at"]);
        actions.push_back(e["action"].get<std::string>());
    }
    CHECK(actions == std::vector<std::string>{"add", "issued", "renewed", "rollback"});
    CHECK_THAT(events[3]["detail"].get<std::string>(), Contains("2 -> 1"));

    json last = ctl.js({"log", "--limit", "2"});
    REQUIRE(last.size() == 2);
    CHECK(last[0]["action"] == "renewed");
    CHECK(last[1]["action"] == "rollback");

    RunResult table = ctl.ok({"log"});
    CHECK_THAT(table.out, StartsWith("AT") && Contains("ACTOR") && Contains("ACTION"));
    CHECK_THAT(table.out, Contains(actor) && Contains("other.example.com") && Contains("issuer add"));
    expect_failure(ctl({"log", "--limit", "0"}), 2, "--limit");
}

// ---- usage ---------------------------------------------------------------------------------

TEST_CASE("man pages: certfsctl(8) and certfs(8) render without a warning and name every command and option")
{
    for (const std::string program : {"certfsctl", "certfs"}) {
        INFO(program);
        // As a terminal shows it, without the overstrikes for bold (col -b).
        RunResult page = certfs::test::run({"/bin/bash", "-c", "set -o pipefail; man --warnings -l \"$0\" | col -bx",
                                            std::string(CERTFS_MAN_DIR) + "/" + program + ".8"},
                                           {"MANWIDTH=100"});
        CHECK(page.exit_code == 0);
        CHECK(page.err.empty());
        for (const char* section :
             {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES"}) {
            CHECK_THAT(page.out, Contains(std::string("\n") + section + "\n"));
        }
        CHECK_THAT(page.out, Contains("CERTFS_DB") && Contains("--store-key") && Contains("--version"));
        if (program == "certfs") {
            CHECK_THAT(page.out, Contains("--pin-window") && Contains("hide_archive"));
            continue;
        }
        // Every command of certfsctl --help, and the options of one.
        Ctl ctl;
        const std::string help = ctl({"--help"}).out;
        const std::string commands = help.substr(help.find("Subcommands:"));
        std::istringstream lines(commands);
        int named = 0;
        for (std::string line; std::getline(lines, line);) {
            std::istringstream words(line);
            std::string command;
            if (line.rfind("  ", 0) == 0 && words >> command) {
                INFO("command " << command);
                // As a word of its own, between white space.
                bool word = false;
                for (auto at = page.out.find(command); at != std::string::npos && !word;
                     at = page.out.find(command, at + 1)) {
                    const auto end = at + command.size();
                    word = at > 0 && std::isspace(static_cast<unsigned char>(page.out[at - 1])) &&
                           end < page.out.size() && std::isspace(static_cast<unsigned char>(page.out[end]));
                }
                CHECK(word);
                ++named;
            }
        }
        CHECK(named >= 16);
        CHECK_THAT(page.out, Contains("--deploy-hook") && Contains("--reuse-key") && Contains("--new-key"));
    }
}

TEST_CASE("completion: bash completes certfsctl's commands, a command's options, and the store's domain and issuer "
          "names")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "www.example.com", "--issuer", "ca"});
    ctl.ok({"add", "mail.example.com", "--issuer", "ca"});
    const std::string script =
        std::string("source /usr/share/bash-completion/bash_completion\nsource ") + CERTFS_COMPLETION +
        "\nexport PATH=" + stdfs::path(certfs::test::certfsctl_path()).parent_path().string() +
        ":$PATH\n"
        "COMP_WORDS=(\"$@\"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMP_LINE=\"$*\"; "
        "COMP_POINT=${#COMP_LINE}; COMPREPLY=(); _certfsctl; printf '%s\\n' \"${COMPREPLY[@]}\"\n";
    auto complete = [&](std::vector<std::string> line) {
        line.insert(line.begin(), {"/bin/bash", "-c", script, "complete"});
        RunResult r = certfs::test::run(line);
        INFO(r.err);
        CHECK(r.exit_code == 0);
        std::vector<std::string> out;
        std::istringstream in(r.out);
        for (std::string word; std::getline(in, word);) {
            out.push_back(word);
        }
        std::sort(out.begin(), out.end());
        return out;
    };
    using Words = std::vector<std::string>;
    CHECK(complete({"certfsctl", "re"}) == Words{"rekey-store", "remove", "renew", "revoke"});
    CHECK(complete({"certfsctl", "im"}) == Words{"import", "import-certbot"});
    CHECK(complete({"certfsctl", "import-certbot", "--d"}) == Words{"--dry-run"});
    CHECK(complete({"certfsctl", "--db", ctl.db(), "show", ""}) == Words{"mail.example.com", "www.example.com"});
    CHECK(complete({"certfsctl", "--db", ctl.db(), "renew", "w"}) == Words{"www.example.com"});
    CHECK(complete({"certfsctl", "--db", ctl.db(), "add", "new.example.com", "--issuer", ""}) == Words{"ca"});
    CHECK(complete({"certfsctl", "add", "x", "--re"}) == Words{"--renew-before", "--reuse-key"});
    CHECK(complete({"certfsctl", "issuer", "add", "acme", "--dir"}) == Words{"--directory"});
    CHECK(complete({"certfsctl", "--db", ctl.db(), "issuer", "show", ""}) == Words{"ca"});
    CHECK(complete({"certfsctl", "--db", ctl.db(), "issuer", "list", "--n"}) == Words{"--names"});
    // --names, which the completion reads: the names alone, one a line.
    CHECK(ctl.ok({"list", "--names"}).out == "mail.example.com\nwww.example.com\n");
    CHECK(ctl.ok({"issuer", "list", "--names"}).out == "ca\n");
    expect_failure(ctl({"list", "--names", "--json"}), 2, "excludes");
}

TEST_CASE("--help and --version succeed and usage errors exit 2 with one line")
{
    Ctl ctl;
    RunResult version = ctl({"--version"});
    CHECK(version.exit_code == 0);
    CHECK(version.out == "certfsctl " CERTFS_VERSION "\n");
    CHECK(version.err.empty());
    RunResult help = ctl({"--help"});
    CHECK(help.exit_code == 0);
    CHECK_THAT(help.out, Contains("init") && Contains("renew") && Contains("export"));
    CHECK(help.err.empty());
    RunResult add_help = ctl({"add", "--help"});
    CHECK(add_help.exit_code == 0);
    CHECK_THAT(add_help.out, Contains("--issuer") && Contains("--reuse-key"));
    CHECK_THAT(help.out, Contains("--version"));

    expect_failure(ctl({}), 2, "subcommand");
    // CLI11 reports an unknown subcommand as a missing one; it does not name the word.
    expect_failure(ctl({"frobnicate"}), 2, "subcommand");
    expect_failure(ctl({"list", "--frob"}), 2, "--frob");
    expect_failure(ctl({"--frob", "list"}), 2, "--frob");
    expect_failure(ctl({"issuer"}), 2, "subcommand");
    expect_failure(ctl({"issuer", "frob"}), 2, "subcommand");
    expect_failure(ctl({"show"}), 2, "NAME");
    expect_failure(ctl({"list", "extra"}), 2, "extra");
    // Usage errors never touch the store.
    CHECK_FALSE(stdfs::exists(ctl.db()));
}

TEST_CASE("list and show tell a failed deploy hook and the time the scheduler renews")
{
    Ctl ctl;
    ctl.init_with_ca();
    ctl.ok({"add", "hooked.example.com", "--issuer", "ca"});
    json before = ctl.show("hooked.example.com");
    CHECK(before["hook_error"].is_null());
    // The due time is renew_at pulled earlier by at most a tenth of the 30-day window.
    auto renew_at = parse_rfc3339(before["renew_at"].get<std::string>());
    auto due_at = parse_rfc3339(before["due_at"].get<std::string>());
    CHECK(due_at <= renew_at);
    CHECK(due_at >= renew_at - 3 * 24h - 1h);
    {
        auto st = store::Store::open(ctl.db(), {.create = false, .actor = "test", .clock = nullptr}).value();
        REQUIRE(st->set_hook_error("hooked.example.com", "systemctl reload nginx: exit status 1").ok());
    }
    json after = ctl.show("hooked.example.com");
    CHECK(after["hook_error"] == "systemctl reload nginx: exit status 1");
    CHECK(after["generation"] == 1); // a failed hook undoes nothing
    RunResult table = ctl.ok({"list"});
    CHECK_THAT(table.out, Contains("deploy hook failed: systemctl reload nginx: exit status 1"));
    RunResult text = ctl.ok({"show", "hooked.example.com"});
    CHECK_THAT(text.out, Contains("hook error:") && Contains("systemctl reload nginx: exit status 1"));
}

TEST_CASE("renew runs the batch's deploy hooks once after the flip and records a failing one")
{
    Ctl ctl;
    ctl.init_with_ca();
    const std::string lines = ctl.path("hook.lines").string();
    const std::string record =
        "sh -c 'echo \"$CERTFS_NAMES|$CERTFS_GENERATION|$CERTFS_LIVE_DIR|$(date +%s.%N)\" >> " + lines + "'";
    const std::string broken = "sh -c 'echo broken >&2; exit 3'";
    ctl.ok({"add", "a.example.com", "--issuer", "ca", "--bundle", "b", "--deploy-hook", record});
    ctl.ok(
        {"add", "b.example.com", "--issuer", "ca", "--bundle", "b", "--deploy-hook", record, "--deploy-hook", broken});
    // What a mounted daemon records: its mount point, and a pin window of 1.5 s.
    {
        auto st = store::Store::open(ctl.db(), {.create = false, .actor = "test", .clock = nullptr}).value();
        REQUIRE(st->set_setting("mountpoint", "/mnt/certs").ok());
        REQUIRE(st->set_setting("pin_window_ms", "1500").ok());
    }

    const auto started = std::chrono::system_clock::now();
    RunResult r = ctl({"renew", "a.example.com", "--force"});
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err,
               Contains("certfsctl: deploy hook failed (the renewal stays committed): " + broken + ": exit status 3"));
    CHECK_THAT(r.out, Contains("a.example.com: renewed: generation 2") && Contains("deploy hook ran: " + record));
    // Nothing is mounted there: certfsctl cannot read the mount, says so once, and runs the
    // hooks when the daemon's own timing flips (a pin window and 0.3 s).
    CHECK_THAT(r.err, Contains("certfsctl: warning: cannot tell when a.example.com flips on the mount /mnt/certs "
                               "(cannot open /mnt/certs/live/a.example.com: No such file or directory): deploy "
                               "hooks run 1s800ms after the commit instead\n"));
    CHECK(line_count(r.err) == 2);

    // One run for the batch of two, naming both, after the pin window.
    std::string out = read_file(lines);
    REQUIRE(line_count(out) == 1);
    auto bar = out.rfind('|');
    CHECK(out.substr(0, bar) == "a.example.com b.example.com|2 2|/mnt/certs/live/a.example.com");
    const double ran_at = std::stod(out.substr(bar + 1));
    const double started_at = std::chrono::duration<double>(started.time_since_epoch()).count();
    CHECK(ran_at - started_at >= 1.8);

    // The failure is on the domain that names the hook; the commit stands.
    json a = ctl.show("a.example.com");
    json b = ctl.show("b.example.com");
    CHECK(a["hook_error"].is_null());
    CHECK_THAT(b["hook_error"].get<std::string>(), Contains(broken + ": exit status 3"));
    CHECK(a["generation"] == 2);
    CHECK(b["generation"] == 2);
    CHECK(a["state"] == "monitoring");
    CHECK(b["state"] == "monitoring");

    // Without a mount, hooks still run, with no live directory and no wait.
    {
        auto st = store::Store::open(ctl.db(), {.create = false, .actor = "test", .clock = nullptr}).value();
        REQUIRE(st->set_setting("mountpoint", "").ok());
    }
    RunResult again = ctl({"renew", "a.example.com", "--force"});
    CHECK(again.exit_code == 1);
    out = read_file(lines);
    REQUIRE(line_count(out) == 2);
    CHECK_THAT(out, Contains("a.example.com b.example.com|3 3||"));
}

TEST_CASE("renew gives a hook each of its variables once: its own values replace the stale ones it inherited")
{
    Ctl ctl;
    ctl.init_with_ca();
    // cp copies its own environment as the kernel gave it: a variable given twice shows twice.
    const stdfs::path dump = ctl.path("hook.environ");
    ctl.ok({"add", "a.example.com", "--issuer", "ca", "--deploy-hook", "/bin/cp /proc/self/environ " + dump.string()});
    {
        auto st = store::Store::open(ctl.db(), {.create = false, .actor = "test", .clock = nullptr}).value();
        REQUIRE(st->set_setting("mountpoint", "/mnt/certs").ok());
        REQUIRE(st->set_setting("pin_window_ms", "0").ok());
    }
    // What a cron job, or a hook that runs certfsctl renew, may have set.
    RunResult r =
        run_certfsctl({"--db", ctl.db(), "renew", "a.example.com", "--force"},
                      {"CERTFS_NAMES=stale.example.com", "CERTFS_GENERATION=99",
                       "CERTFS_LIVE_DIR=/stale/live/stale.example.com", "RENEWED_LINEAGE=/stale/live/stale.example.com",
                       "RENEWED_DOMAINS=stale.example.com", "CERTFS_DB=/stale/certfs.db", "CERTFS_UNKNOWN=stale"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    std::map<std::string, std::vector<std::string>> seen;
    std::istringstream entries(read_file(dump));
    for (std::string entry; std::getline(entries, entry, '\0');) {
        const auto eq = entry.find('=');
        seen[entry.substr(0, eq)].push_back(eq == std::string::npos ? "" : entry.substr(eq + 1));
    }
    using Values = std::vector<std::string>;
    CHECK(seen["CERTFS_NAMES"] == Values{"a.example.com"});
    CHECK(seen["CERTFS_GENERATION"] == Values{"2"});
    CHECK(seen["CERTFS_LIVE_DIR"] == Values{"/mnt/certs/live/a.example.com"});
    CHECK(seen["RENEWED_LINEAGE"] == Values{"/mnt/certs/live/a.example.com"});
    CHECK(seen["RENEWED_DOMAINS"] == Values{"a.example.com"});
    CHECK(seen["CERTFS_DB"] == Values{ctl.db()});
    CHECK(seen["CERTFS_UNKNOWN"].empty());
    CHECK(seen["PATH"].size() == 1); // the rest of the environment is inherited
}
