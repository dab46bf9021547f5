// The `helper` issuer (docs/helpers.md): certmonger CA helpers run through renew::load_issuer
// and Issuer::issue against a real store, and through the real certfsctl binary. The helpers
// are the POSIX sh scripts in tests/ca_helpers/ (CERTFS_TEST_CA_HELPERS_DIR); the ones that sign use
// openssl with a test CA whose files each test writes into its own temporary directory.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "renew/helper.hpp"
#include "renew/renewer.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew;
using namespace std::chrono_literals;
using Catch::Contains;
using Catch::StartsWith;
using certfs::test::Ctl;
using certfs::test::read_file;
using certfs::test::require_error;
using certfs::test::TempDir;
using certfs::test::write_file;

namespace {

const std::string k_helpers = CERTFS_TEST_CA_HELPERS_DIR;

using certfs::test::quote;

// A command line for the script `name` in tests/ca_helpers with the given arguments.
std::string helper_command(const std::string& name, const std::vector<std::string>& args = {})
{
    std::string command = quote(k_helpers + "/" + name);
    for (const auto& a : args) {
        command += " " + quote(a);
    }
    return command;
}

std::size_t line_count(const std::string& text)
{
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
}

double seconds_since(std::chrono::steady_clock::time_point start)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A store in a temporary directory with a test CA whose certificate and key are files there.
struct Fixture {
    TempDir dir;
    std::string db = (dir / "certfs.db").string();
    std::unique_ptr<store::Store> store =
        store::Store::open(db, {.create = true, .actor = "test", .clock = nullptr}).value();
    test::TestCa ca{"/CN=certfs helper test CA"};
    std::string ca_cert = (dir / "ca.pem").string();
    std::string ca_key = (dir / "ca.key").string();
    std::string record = (dir / "record").string();

    Fixture()
    {
        write_file(ca_cert, ca.cert_pem);
        write_file(ca_key, pki::private_key_pem(*ca.key).value());
        std::filesystem::create_directory(record);
    }

    void add_helper(const std::string& name, const std::string& command, HelperConfig config = {})
    {
        config.command = command;
        auto created = create_helper_issuer(name, config);
        INFO(created.status().message());
        REQUIRE(created.ok());
        REQUIRE(store->add_issuer(created->issuer).ok());
    }

    std::unique_ptr<Issuer> load(const std::string& issuer)
    {
        auto loaded = load_issuer(*store, issuer);
        INFO(loaded.status().message());
        REQUIRE(loaded.ok());
        return std::move(loaded).value();
    }

    store::DomainConfig config(const std::string& issuer, pki::Names names = {{"www.example.com"}, {}})
    {
        store::DomainConfig c;
        c.name = names.dns.empty() ? "ip-only" : names.dns.front();
        c.issuer = issuer;
        c.dns_names = names.dns;
        c.ip_addresses = names.ip;
        return c;
    }

    // One issue() for a fresh key over `names`; the key is kept for commit().
    Result<Issued> issue(Issuer& issuer, const pki::Names& names = {{"www.example.com"}, {}},
                         pki::KeyType type = pki::KeyType::ec_p256)
    {
        key = pki::generate_key(type).value();
        csr_pem = pki::csr_pem(*pki::make_csr(*key, names).value());
        domain = store::Domain{};
        static_cast<store::DomainConfig&>(domain) = config("x", names);
        return issuer.issue(IssueRequest{&domain, csr_pem, names});
    }

    Result<Issued> issue(const std::string& issuer_name, const pki::Names& names = {{"www.example.com"}, {}})
    {
        auto issuer = load(issuer_name);
        return issue(*issuer, names);
    }

    // Adds the domain with the issued generation: the store validates it (chain, key, names).
    Result<std::int64_t> commit(const std::string& issuer, const Issued& issued,
                                const pki::Names& names = {{"www.example.com"}, {}})
    {
        store::GenerationInput input{pki::private_key_pem(*key).value(), issued.cert_pem, issued.chain_pem,
                                     store::Reason::issued};
        return store->add_domain(config(issuer, names), input);
    }

    std::string recorded(const std::string& name) const { return read_file(std::filesystem::path(record) / name); }
    bool was_set(const std::string& name) const
    {
        return std::filesystem::exists(std::filesystem::path(record) / name);
    }

    PKey key;
    std::string csr_pem;
    store::Domain domain;
};

pki::CertInfo info_of(const std::string& pem) { return pki::cert_info(*pki::parse_cert(pem).value()).value(); }

} // namespace

// ---- issuing -------------------------------------------------------------------------------

TEST_CASE("helper: a certificate printed with its chain is issued with that chain")
{
    Fixture f;
    f.add_helper("h", helper_command("issue.sh", {f.ca_cert, f.ca_key}));
    auto issued = f.issue("h");
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    auto leaf = info_of(issued->cert_pem);
    CHECK(leaf.dns_names == std::vector<std::string>{"www.example.com"});
    CHECK(leaf.issuer == info_of(f.ca.cert_pem).subject);
    CHECK(issued->chain_pem == f.ca.cert_pem);
    auto gen = f.commit("h", *issued);
    INFO(gen.status().message());
    CHECK(gen.ok());
}

TEST_CASE("helper: the environment is clean and holds certmonger's variables")
{
    Fixture f;
    ::setenv("CERTFS_HELPER_TEST_LEAK", "from the test process", 1);
    HelperConfig config;
    SECTION("without a profile and with an EC key")
    {
        f.add_helper("h", helper_command("issue.sh", {f.ca_cert, f.ca_key, f.record}));
        pki::Names names{{"www.example.com", "api.example.com"}, {"192.0.2.7", "2001:db8::1"}};
        auto issued = f.issue(*f.load("h"), names);
        INFO(issued.status().message());
        REQUIRE(issued.ok());
        CHECK(f.recorded("CERTMONGER_OPERATION") == "SUBMIT");
        CHECK(f.recorded("CERTMONGER_CA_NICKNAME") == "h");
        CHECK(f.recorded("CERTMONGER_CSR") == f.csr_pem);
        CHECK(f.recorded("CERTMONGER_REQ_SUBJECT") == "CN=www.example.com");
        CHECK(f.recorded("CERTMONGER_REQ_HOSTNAME") == "www.example.com\napi.example.com");
        CHECK(f.recorded("CERTMONGER_REQ_IP_ADDRESS") == "192.0.2.7\n2001:db8::1");
        CHECK(f.recorded("CERTMONGER_KEY_TYPE") == "EC");
        CHECK(f.recorded("PATH") == "/usr/sbin:/usr/bin:/sbin:/bin");
        CHECK_FALSE(f.was_set("CERTMONGER_CERTIFICATE")); // a first issue
        CHECK_FALSE(f.was_set("CERTMONGER_CA_PROFILE"));
        CHECK_FALSE(f.was_set("CERTMONGER_CA_COOKIE"));
        CHECK_FALSE(f.was_set("HOME"));
        CHECK_FALSE(f.was_set("CERTFS_HELPER_TEST_LEAK"));
    }
    SECTION("with a profile and an RSA key")
    {
        config.profile = "caIPAserviceCert";
        f.add_helper("h", helper_command("issue.sh", {f.ca_cert, f.ca_key, f.record}), config);
        auto issued = f.issue(*f.load("h"), {{"www.example.com"}, {}}, pki::KeyType::rsa_2048);
        INFO(issued.status().message());
        REQUIRE(issued.ok());
        CHECK(f.recorded("CERTMONGER_CA_PROFILE") == "caIPAserviceCert");
        CHECK(f.recorded("CERTMONGER_KEY_TYPE") == "RSA");
        CHECK_FALSE(f.was_set("CERTMONGER_REQ_IP_ADDRESS"));
    }
    ::unsetenv("CERTFS_HELPER_TEST_LEAK");
}

TEST_CASE("helper: a renewal passes the current certificate as CERTMONGER_CERTIFICATE")
{
    Fixture f;
    f.add_helper("h", helper_command("issue.sh", {f.ca_cert, f.ca_key, f.record}));
    Renewer renewer(*f.store, "test renewer");
    auto first = renewer.add_and_issue(f.config("h"));
    INFO(first.status().message());
    REQUIRE(first.ok());
    CHECK_FALSE(f.was_set("CERTMONGER_CERTIFICATE"));
    auto gen1 = f.store->current_generation("www.example.com").value();

    auto renewed = renewer.renew("www.example.com", true);
    INFO(renewed.status().message());
    REQUIRE(renewed.ok());
    CHECK(f.recorded("CERTMONGER_CERTIFICATE") == gen1.cert_pem);
    auto gen2 = f.store->current_generation("www.example.com").value();
    CHECK(gen2.gen == gen1.gen + 1);
    CHECK(gen2.chain_pem == f.ca.cert_pem);
}

TEST_CASE("helper: a certificate printed alone gets its chain from FETCH-ROOTS")
{
    Fixture f;
    SECTION("certmonger's nickname format")
    {
        f.add_helper("h", helper_command("leaf-only.sh", {f.ca_cert, f.ca_key}));
        CHECK(f.store->get_issuer("h")->cert_pem == f.ca.cert_pem); // stored at add time
    }
    SECTION("the signing root among unrelated ones in several lists")
    {
        test::TestCa other("/CN=an unrelated root");
        test::TestCa third("/CN=another unrelated root");
        auto roots = (f.dir / "roots.txt").string();
        write_file(roots, "Unrelated Root\n" + other.cert_pem + "\nThe Real Root\n" + f.ca.cert_pem +
                              "\nIntermediate-ish\n" + third.cert_pem);
        f.add_helper("h", helper_command("leaf-only.sh", {f.ca_cert, f.ca_key, roots}));
        // The roots and the other trusted roots are stored, not the third list.
        CHECK(f.store->get_issuer("h")->cert_pem == other.cert_pem + f.ca.cert_pem);
    }
    auto issued = f.issue("h");
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    CHECK(pki::parse_certs(issued->cert_pem)->size() == 1);
    CHECK(issued->chain_pem == f.ca.cert_pem);
    auto gen = f.commit("h", *issued);
    INFO(gen.status().message());
    CHECK(gen.ok());
}

TEST_CASE("helper: roots that did not sign the certificate give the store's validation error")
{
    Fixture f;
    test::TestCa other("/CN=certfs helper test CA"); // the same name, another key
    auto roots = (f.dir / "roots.txt").string();
    write_file(roots, "Impostor\n" + other.cert_pem);
    f.add_helper("h", helper_command("leaf-only.sh", {f.ca_cert, f.ca_key, roots}));
    auto issued = f.issue("h");
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    CHECK(issued->chain_pem == other.cert_pem);
    require_error(f.commit("h", *issued), Code::invalid, "validation failed (chain)");
    CHECK(f.store->list_domains()->empty());
}

TEST_CASE("helper: a certificate alone with no roots anywhere is an error")
{
    Fixture f;
    auto roots = (f.dir / "roots.txt").string();
    write_file(roots, "");
    f.add_helper("h", helper_command("leaf-only.sh", {f.ca_cert, f.ca_key, roots}));
    CHECK(f.store->get_issuer("h")->cert_pem.empty());
    require_error(f.issue("h"), Code::io_error, "no roots to complete it");
}

// ---- waiting -------------------------------------------------------------------------------

TEST_CASE("helper: exit status 5 waits the given seconds then polls with the cookie")
{
    Fixture f;
    f.add_helper("h", helper_command("wait.sh", {f.ca_cert, f.ca_key}));
    auto start = std::chrono::steady_clock::now();
    auto issued = f.issue("h");
    double elapsed = seconds_since(start);
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    CHECK(elapsed >= 1.0);
    CHECK(elapsed < 10.0);
    CHECK(issued->chain_pem == f.ca.cert_pem);
    CHECK(f.commit("h", *issued).ok());
}

TEST_CASE("helper: exit status 1 waits the poll interval then polls with the cookie")
{
    Fixture f;
    HelperConfig config;
    config.poll_interval = 7s;
    f.add_helper("h", helper_command("wait.sh", {f.ca_cert, f.ca_key, "plain"}), config);
    auto issuer = f.load("h");
    std::vector<Duration> sleeps;
    dynamic_cast<HelperIssuer&>(*issuer).set_sleeper([&](Duration d) { sleeps.push_back(d); });
    auto issued = f.issue(*issuer);
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    CHECK(sleeps == std::vector<Duration>{7s});
}

TEST_CASE("helper: a request still pending after max-wait is returned pending with its cookie")
{
    Fixture f;
    HelperConfig config;
    config.max_wait = 3500ms;
    f.add_helper("h", helper_command("wait.sh", {f.ca_cert, f.ca_key, "forever"}), config);
    auto issuer = f.load("h");
    std::vector<Duration> sleeps;
    dynamic_cast<HelperIssuer&>(*issuer).set_sleeper([&](Duration d) { sleeps.push_back(d); });
    auto issued = f.issue(*issuer);
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    REQUIRE(issued->pending.has_value());
    CHECK(issued->cert_pem.empty());
    CHECK(issued->pending->cookie == "req-42");
    CHECK(issued->pending->retry_after == 1s);
    // Three full seconds, then the rest of max-wait, then one last poll.
    CHECK(sleeps == std::vector<Duration>{1s, 1s, 1s, 500ms});
}

TEST_CASE("helper: a delay asked for with exit status 5 is capped at one hour")
{
    Fixture f;
    HelperConfig config;
    config.max_wait = 2h;
    f.add_helper("h", helper_command("exit-with.sh", {"5", "86400", "cookie-1"}), config);
    auto issuer = f.load("h");
    std::vector<Duration> sleeps;
    dynamic_cast<HelperIssuer&>(*issuer).set_sleeper([&](Duration d) { sleeps.push_back(d); });
    auto issued = f.issue(*issuer);
    REQUIRE(issued.ok());
    REQUIRE(issued->pending.has_value());
    CHECK(issued->pending->cookie == "cookie-1");
    CHECK(issued->pending->retry_after == 1h);
    CHECK(sleeps == std::vector<Duration>{1h, 1h});
}

namespace {

// The requests gated.sh has seen, one "OPERATION COOKIE" line each (FETCH-ROOTS left out).
std::vector<std::string> log_lines(const std::string& path)
{
    std::vector<std::string> out;
    std::istringstream in(std::filesystem::exists(path) ? read_file(path) : "");
    for (std::string line; std::getline(in, line);) {
        if (!line.starts_with("FETCH-ROOTS")) {
            out.push_back(line);
        }
    }
    return out;
}

} // namespace

TEST_CASE("helper: a pending request is kept in the store and polled with the same key after a restart")
{
    Fixture f;
    const std::string gate = (f.dir / "gate").string();
    const std::string log = (f.dir / "ops.log").string();
    HelperConfig config;
    config.max_wait = 0ms; // keep the request at once
    config.poll_interval = 90s;
    f.add_helper("h", helper_command("gated.sh", {f.ca_cert, f.ca_key, gate, log}), config);

    const auto before = std::chrono::system_clock::now();
    auto added = Renewer(*f.store, "first process").add_and_issue(f.config("h"));
    INFO(added.status().message());
    REQUIRE(added.ok());
    CHECK_FALSE(added->generation.has_value());
    CHECK_THAT(added->message, StartsWith("pending at the CA: polling again at "));
    auto d = f.store->get_domain("www.example.com").value();
    CHECK(d.state == store::DomainState::pending);
    CHECK_FALSE(d.current_gen.has_value());
    REQUIRE(d.next_attempt.has_value());
    CHECK(*d.next_attempt >= std::chrono::time_point_cast<std::chrono::seconds>(before) + 90s);
    auto kept = f.store->pending("www.example.com").value();
    REQUIRE(kept.has_value());
    CHECK(kept->cookie == "req-9");
    CHECK(log_lines(log) == std::vector<std::string>{"SUBMIT "});
    auto listed = Ctl(f.db)({"list"});
    CHECK(listed.exit_code == 0);
    CHECK_THAT(listed.out, Contains("pending (next " + format_rfc3339(*d.next_attempt) + ")"));

    // A restart: a new connection and renewer. Not due before the poll time.
    f.store = store::Store::open(f.db, {.create = false, .actor = "test", .clock = nullptr}).value();
    Renewer renewer(*f.store, "second process");
    auto early = renewer.renew("www.example.com", false);
    REQUIRE(early.ok());
    CHECK_THAT(early->front().message, StartsWith("not due until"));
    CHECK(log_lines(log).size() == 1);

    // Polled (forced), still waiting: the same request, not a new one.
    auto waiting = renewer.renew("www.example.com", true);
    INFO(waiting.status().message());
    REQUIRE(waiting.ok());
    CHECK_FALSE(waiting->front().generation.has_value());
    CHECK(log_lines(log) == std::vector<std::string>{"SUBMIT ", "POLL req-9"});
    // certfsctl renew --now polls too, and says that nothing moved.
    auto now = Ctl(f.db)({"renew", "www.example.com", "--now"});
    CHECK(now.exit_code == 0);
    CHECK_THAT(now.out, Contains("www.example.com: nothing moved (--now): no new generation yet; once the CA has "
                                 "issued it, run 'certfsctl renew www.example.com --now' again"));
    CHECK(log_lines(log) == std::vector<std::string>{"SUBMIT ", "POLL req-9", "POLL req-9"});

    // The CA issues: committed with the key made at the first submission.
    write_file(gate, "yes");
    auto issued = renewer.renew("www.example.com", true);
    INFO(issued.status().message());
    REQUIRE(issued.ok());
    CHECK(issued->front().generation == 1);
    CHECK(log_lines(log) == std::vector<std::string>{"SUBMIT ", "POLL req-9", "POLL req-9", "POLL req-9"});
    auto gen = f.store->current_generation("www.example.com").value();
    CHECK(gen.key_pem == kept->key_pem);
    CHECK_FALSE(f.store->pending("www.example.com").value().has_value());
    CHECK(f.store->get_domain("www.example.com").value().state == store::DomainState::monitoring);
}

TEST_CASE("helper: a pending request the CA then rejects is dropped and the domain is rejected")
{
    Fixture f;
    const std::string gate = (f.dir / "gate").string();
    const std::string log = (f.dir / "ops.log").string();
    HelperConfig config;
    config.max_wait = 0ms;
    f.add_helper("h", helper_command("gated.sh", {f.ca_cert, f.ca_key, gate, log}), config);
    Renewer renewer(*f.store, "test");
    REQUIRE(renewer.add_and_issue(f.config("h")).ok());
    write_file(gate, "reject");
    require_error(renewer.renew("www.example.com", true), Code::invalid,
                  "CA rejected the request: request denied by the officer");
    auto d = f.store->get_domain("www.example.com").value();
    CHECK(d.state == store::DomainState::rejected);
    CHECK_FALSE(f.store->pending("www.example.com").value().has_value());
    // The next attempt submits anew.
    std::filesystem::remove(gate);
    REQUIRE(renewer.renew("www.example.com", true).ok());
    CHECK(log_lines(log) == std::vector<std::string>{"SUBMIT ", "POLL req-9", "SUBMIT "});
}

TEST_CASE("helper: a bundle commits when its last pending member is issued")
{
    Fixture f;
    const std::string gate = (f.dir / "gate").string();
    const std::string log = (f.dir / "ops.log").string();
    HelperConfig config;
    config.max_wait = 0ms;
    f.add_helper("fast", helper_command("issue.sh", {f.ca_cert, f.ca_key, f.record}));
    f.add_helper("slow", helper_command("gated.sh", {f.ca_cert, f.ca_key, gate, log}), config);
    auto a = f.config("fast", {{"a.example.com"}, {}});
    auto b = f.config("slow", {{"b.example.com"}, {}});
    a.bundle = b.bundle = "pair";
    REQUIRE(f.store->add_domain(a, std::nullopt).ok());
    REQUIRE(f.store->add_domain(b, std::nullopt).ok());

    Renewer renewer(*f.store, "test");
    auto first = renewer.renew("a.example.com", false);
    INFO(first.status().message());
    REQUIRE(first.ok());
    REQUIRE(first->size() == 2);
    for (const auto& o : *first) {
        CHECK_FALSE(o.generation.has_value());
        CHECK(f.store->get_domain(o.domain).value().state == store::DomainState::pending);
    }
    // a's certificate waits in the store for b's.
    auto a_kept = f.store->pending("a.example.com").value();
    REQUIRE(a_kept.has_value());
    CHECK_FALSE(a_kept->cert_pem.empty());
    CHECK_FALSE(f.store->get_domain("a.example.com").value().current_gen.has_value());

    write_file(gate, "yes");
    auto second = renewer.renew("b.example.com", true);
    INFO(second.status().message());
    REQUIRE(second.ok());
    for (const auto& o : *second) {
        CHECK(o.generation == 1);
    }
    // a was not issued again: its kept certificate is the one committed.
    CHECK(f.store->current_generation("a.example.com").value().cert_pem == a_kept->cert_pem);
    CHECK_FALSE(f.store->pending("a.example.com").value().has_value());
    CHECK_FALSE(f.store->pending("b.example.com").value().has_value());
}

TEST_CASE("helper: exit status 5 without a delay is an error for the admin")
{
    Fixture f;
    f.add_helper("h", helper_command("exit-with.sh", {"5", "soon", "cookie-1"}));
    require_error(f.issue("h"), Code::io_error, "without a delay in seconds");
}

// ---- failures ------------------------------------------------------------------------------

TEST_CASE("helper: a rejection is Invalid with the CA's reason")
{
    Fixture f;
    SECTION("a program given by its path") { f.add_helper("h", helper_command("reject.sh")); }
    SECTION("a program looked up in the helper's PATH") { f.add_helper("h", "sh " + quote(k_helpers + "/reject.sh")); }
    auto issued = f.issue("h");
    require_error(issued, Code::invalid, "CA rejected the request: name www.example.com is not allowed by policy");
    CHECK_THAT(issued.status().message(), !Contains("second line"));
}

TEST_CASE("helper: an unreachable CA is Unavailable")
{
    Fixture f;
    f.add_helper("h", helper_command("unreachable.sh"));
    require_error(f.issue("h"), Code::unavailable,
                  "CA unreachable (helper exit status 3): cannot connect to ca.example.test:443");
}

TEST_CASE("helper: an underconfigured helper needs the admin")
{
    Fixture f;
    f.add_helper("h", helper_command("exit-with.sh", {"4", "no CA directory configured"}));
    require_error(f.issue("h"), Code::corrupt,
                  "the CA helper needs more configuration (exit status 4): no CA directory configured");
}

TEST_CASE("helper: a hanging helper is killed by its timeout")
{
    Fixture f;
    HelperConfig config;
    config.timeout = 1s;
    f.add_helper("h", helper_command("hang.sh"), config);
    auto start = std::chrono::steady_clock::now();
    auto issued = f.issue("h");
    double elapsed = seconds_since(start);
    require_error(issued, Code::io_error, "the CA helper failed: timed out after 1s");
    CHECK(elapsed < 8.0);
}

TEST_CASE("helper: exit status 0 without a certificate is an error")
{
    Fixture f;
    f.add_helper("h", helper_command("exit-with.sh", {"0", "all done"}));
    require_error(f.issue("h"), Code::io_error, "exited with status 0 but printed no certificate");
}

TEST_CASE("helper: an unknown exit status is an error naming it")
{
    Fixture f;
    f.add_helper("h", helper_command("exit-with.sh", {"17", "please rekey"}));
    require_error(f.issue("h"), Code::io_error, "the CA helper failed: exit status 17 (the CA wants a new key");
    Fixture g;
    g.add_helper("h", helper_command("exit-with.sh", {"42"}));
    auto issued = g.issue("h");
    require_error(issued, Code::io_error, "the CA helper failed: exit status 42");
}

TEST_CASE("helper: a program that cannot be started is refused at add time")
{
    HelperConfig config;
    config.command = "/nonexistent/certfs-helper --flag";
    require_error(create_helper_issuer("h", config), Code::not_found, "/nonexistent/certfs-helper");
    config.command = "certfs-no-such-helper";
    require_error(create_helper_issuer("h", config), Code::not_found,
                  "cannot run certfs-no-such-helper: not found in /usr/sbin:/usr/bin:/sbin:/bin");
    config.command = "/bin/true 'unterminated";
    require_error(create_helper_issuer("h", config), Code::invalid, "unterminated '");
}

// ---- FETCH-ROOTS parsing -------------------------------------------------------------------

TEST_CASE("helper: FETCH-ROOTS output is parsed in certmonger's format and as plain PEM")
{
    test::TestCa a("/CN=root a");
    test::TestCa b("/CN=root b");
    test::TestCa c("/CN=chain c");
    using List = HelperCert::List;

    SECTION("nicknames and three lists")
    {
        auto certs =
            parse_helper_certs("Root A\n" + a.cert_pem + "\nRoot B\n" + b.cert_pem + "\nChain C\n" + c.cert_pem);
        REQUIRE(certs.ok());
        REQUIRE(certs->size() == 3);
        CHECK((*certs)[0].nickname == "Root A");
        CHECK((*certs)[0].list == List::roots);
        CHECK((*certs)[0].pem == a.cert_pem);
        CHECK((*certs)[1].nickname == "Root B");
        CHECK((*certs)[1].list == List::other_roots);
        CHECK((*certs)[2].nickname == "Chain C");
        CHECK((*certs)[2].list == List::others);
    }
    SECTION("two blank lines: chain certificates without other roots, with CRLF line ends")
    {
        std::string text = "Root A\n" + a.cert_pem + "\n\nChain C\n" + c.cert_pem;
        std::string crlf;
        for (char ch : text) {
            crlf += ch == '\n' ? std::string("\r\n") : std::string(1, ch);
        }
        auto certs = parse_helper_certs(crlf);
        REQUIRE(certs.ok());
        REQUIRE(certs->size() == 2);
        CHECK((*certs)[0].list == List::roots);
        CHECK((*certs)[1].list == List::others);
        CHECK((*certs)[1].pem == c.cert_pem);
    }
    SECTION("plain concatenated PEM")
    {
        auto certs = parse_helper_certs(a.cert_pem + b.cert_pem);
        REQUIRE(certs.ok());
        REQUIRE(certs->size() == 2);
        CHECK((*certs)[0].nickname.empty());
        CHECK((*certs)[1].list == List::roots);
        CHECK((*certs)[1].pem == b.cert_pem);
    }
    SECTION("nothing")
    {
        auto certs = parse_helper_certs("");
        REQUIRE(certs.ok());
        CHECK(certs->empty());
    }
    SECTION("damage is refused")
    {
        require_error(parse_helper_certs("Root\n" + a.cert_pem.substr(0, a.cert_pem.size() / 2)), Code::invalid,
                      "has no END line");
        require_error(parse_helper_certs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
                      Code::invalid, "expected certificates");
        std::string damaged = a.cert_pem;
        damaged.replace(damaged.find('\n') + 5, 4, "!!!!");
        require_error(parse_helper_certs(damaged), Code::invalid, "certificate 1");
    }
}

// ---- certfsctl -----------------------------------------------------------------------------

TEST_CASE("certfsctl issuer add helper refuses bad quoting with one line and changes nothing")
{
    Fixture f;
    Ctl ctl(f.dir / "ctl.db");
    ctl.ok({"init"});
    std::string before = ctl.snapshot();
    for (const std::string& command : {std::string("/bin/true 'unterminated"), std::string("/bin/true \"open"),
                                       std::string("/bin/true trailing\\")}) {
        auto r = ctl({"issuer", "add", "helper", "h", "--command", command});
        INFO(command << "\nstderr: " << r.err);
        CHECK(r.exit_code == 2);
        CHECK_THAT(r.err, StartsWith("certfsctl: ") && Contains("--command"));
        CHECK(line_count(r.err) == 1);
        CHECK(r.out.empty());
    }
    auto missing = ctl({"issuer", "add", "helper", "h", "--command", "/nonexistent/helper"});
    CHECK(missing.exit_code == 1);
    CHECK_THAT(missing.err, StartsWith("certfsctl: cannot run /nonexistent/helper"));
    CHECK(line_count(missing.err) == 1);
    CHECK(ctl.snapshot() == before);
}

TEST_CASE("certfsctl issuer show runs IDENTIFY and FETCH-ROOTS")
{
    Fixture f;
    Ctl ctl(f.dir / "ctl.db");
    ctl.ok({"init"});
    auto added = ctl.ok({"issuer", "add", "helper", "signer", "--command",
                         helper_command("leaf-only.sh", {f.ca_cert, f.ca_key}), "--timeout", "30s"});
    CHECK_THAT(added.out, Contains("added helper issuer signer (1 root from FETCH-ROOTS)"));
    auto shown = ctl.ok({"issuer", "show", "signer"});
    CHECK_THAT(shown.out, Contains("kind:       helper"));
    CHECK_THAT(shown.out, Contains("command:    " + helper_command("leaf-only.sh", {f.ca_cert, f.ca_key})));
    CHECK_THAT(shown.out, Contains("timeout:    30s"));
    CHECK_THAT(shown.out, Contains("identify:   certfs test leaf-only helper 1.0 for signer\n"));
    CHECK_THAT(shown.out, !Contains("second line"));
    CHECK_THAT(shown.out, Contains("roots:      CN=certfs helper test CA"));
    auto js = nlohmann::json::parse(ctl.ok({"issuer", "show", "signer", "--json"}).out);
    CHECK(js["identify"] == "certfs test leaf-only helper 1.0 for signer");
    CHECK(js["roots"] == nlohmann::json::array({"CN=certfs helper test CA"}));
    CHECK(js["settings"]["timeout_ms"] == 30000);
    CHECK(ctl.ok({"issuer", "cert", "signer"}).out == f.ca.cert_pem);

    // A helper without IDENTIFY or FETCH-ROOTS is shown as failing; the command succeeds.
    auto plain =
        ctl.ok({"issuer", "add", "helper", "plain", "--command", helper_command("issue.sh", {f.ca_cert, f.ca_key})});
    CHECK_THAT(plain.out, Contains("no roots stored: FETCH-ROOTS exit status 6 (operation not supported"));
    auto failing = ctl.ok({"issuer", "show", "plain"});
    CHECK_THAT(failing.out, Contains("identify:   failed: exit status 6 (operation not supported by the helper)"));
    CHECK_THAT(failing.out, Contains("roots:      failed: exit status 6"));
    CHECK(failing.err.empty());
}

TEST_CASE("certfsctl: a helper that prints the certificate alone issues and renews end to end")
{
    Fixture f;
    Ctl ctl(f.dir / "ctl.db");
    ctl.ok({"init"});
    ctl.ok({"issuer", "add", "helper", "signer", "--command", helper_command("leaf-only.sh", {f.ca_cert, f.ca_key})});
    ctl.ok({"add", "www.example.com", "--issuer", "signer", "--san", "www.example.com", "--ip", "192.0.2.1"});
    auto renewed = ctl.ok({"renew", "www.example.com", "--force"});
    CHECK_THAT(renewed.out, Contains("www.example.com: renewed: generation 2"));

    auto out = (f.dir / "export").string();
    ctl.ok({"export", "www.example.com", out});
    CHECK(read_file(out + "/chain.pem") == f.ca.cert_pem);
    auto verify = test::run({"/usr/bin/openssl", "verify", "-CAfile", out + "/chain.pem", out + "/cert.pem"});
    INFO(verify.err);
    CHECK(verify.exit_code == 0);
    CHECK_THAT(verify.out, Contains(": OK"));

    // A CA that refuses: one line naming the reason, and nothing added.
    ctl.ok({"issuer", "add", "helper", "strict", "--command", helper_command("reject.sh")});
    auto refused = ctl({"add", "api.example.com", "--issuer", "strict"});
    CHECK(refused.exit_code == 1);
    CHECK_THAT(refused.err, StartsWith("certfsctl: ") &&
                                Contains("CA rejected the request: name api.example.com is not allowed by policy"));
    CHECK(line_count(refused.err) == 1);
    CHECK(nlohmann::json::parse(ctl.ok({"list", "--json"}).out).size() == 1);
}

// Found by fuzz_helper (fuzz/regressions/helper-settings-float-milliseconds): a number of
// milliseconds written as a float was cast to an integer, which is undefined beyond its range.
TEST_CASE("helper: settings whose durations are not whole milliseconds are refused as corrupt")
{
    for (const char* json :
         {R"({"command":"/bin/true","max_wait_ms":3.0e63})", R"({"command":"/bin/true","timeout_ms":1.5})",
          R"({"command":"/bin/true","poll_interval_ms":1e3})"}) {
        INFO(json);
        require_error(certfs::renew::parse_helper_config(json), Code::corrupt, "whole number of milliseconds");
    }
    auto ok = certfs::renew::parse_helper_config(R"({"command":"/bin/true","timeout_ms":1500})");
    REQUIRE(ok.ok());
    CHECK(ok->timeout == std::chrono::milliseconds(1500));
}
