// The ACME issuer end to end against a private pebble (tests/support/pebble.hpp): dns-01 through a hook
// (tests/programs/acme_dns_hook.cpp, driving challtestsrv) with a wildcard, http-01 through a webroot
// that the test serves itself, the real certfsctl from `issuer add acme` to `issuer show`, the
// failures as certfsctl shows them with nothing committed, and the daemon renewing short-lived
// certificates by itself on a real FUSE mount while readers keep reading matching pairs.
// Every wait polls a condition with a deadline; every mount is unmounted, also on failure.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/handles.hpp"
#include "renew/acme_challenge.hpp"
#include "renew/acme_issuer.hpp"
#include "renew/acme_jws.hpp"
#include "renew/renewer.hpp"
#include "tests/support/acme_fixture.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pebble.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;
using Catch::StartsWith;
using certfs::test::Ctl;
using certfs::test::expect_failure;
using certfs::test::free_port;
using certfs::test::read_file;
using certfs::test::RunResult;
using certfs::test::TempDir;
using certfs::test::write_file;
using nlohmann::json;
namespace stdfs = std::filesystem;

namespace {

using certfs::test::file_or_empty;
using certfs::test::slurp;
using certfs::test::wait_until;

std::vector<std::string> lines_of(const std::string& text)
{
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    return lines;
}

// A TCP socket listening on 127.0.0.1:port (0: any free port), closed on destruction.
class Listener {
public:
    explicit Listener(int port = 0)
    {
        m_fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        REQUIRE(m_fd);
        int one = 1;
        ::setsockopt(m_fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<std::uint16_t>(port));
        const int bound = ::bind(m_fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
        const int err = errno;
        INFO("bind 127.0.0.1:" << port << ": " << std::strerror(err));
        REQUIRE(bound == 0);
        REQUIRE(::listen(m_fd.get(), 16) == 0);
        socklen_t len = sizeof a;
        REQUIRE(::getsockname(m_fd.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0);
        m_port = ntohs(a.sin_port);
    }

    int fd() const { return m_fd.get(); }
    int port() const { return m_port; }
    void close() { m_fd.reset(); }

private:
    UniqueFd m_fd;
    int m_port = 0;
};

// A tiny HTTP server for a webroot, as the web server next to certfs would be: GET
// /.well-known/acme-challenge/TOKEN answers the file's content, anything else 404. It serves one
// request per connection on its own thread until destroyed, and records what it answered.
class WebrootServer {
public:
    struct Served {
        std::string path;
        int status = 0;
        std::string body;
    };

    WebrootServer(int port, stdfs::path root) : m_listener(port), m_root(std::move(root))
    {
        m_thread = std::thread([this] { serve(); });
    }

    ~WebrootServer()
    {
        m_stop = true;
        m_thread.join();
    }

    WebrootServer(const WebrootServer&) = delete;
    WebrootServer& operator=(const WebrootServer&) = delete;

    std::vector<Served> served() const
    {
        std::lock_guard lock(m_mutex);
        return m_served;
    }

private:
    void serve()
    {
        while (!m_stop) {
            pollfd p{m_listener.fd(), POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0) {
                continue;
            }
            UniqueFd conn(::accept4(m_listener.fd(), nullptr, nullptr, SOCK_CLOEXEC));
            if (conn) {
                answer(conn.get());
            }
        }
    }

    void answer(int fd)
    {
        timeval tv{2, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        std::string request;
        char buf[2048];
        while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) {
                return;
            }
            request.append(buf, static_cast<std::size_t>(n));
        }
        std::istringstream first(request.substr(0, request.find("\r\n")));
        std::string method;
        std::string path;
        first >> method >> path;
        const std::string prefix = "/.well-known/acme-challenge/";
        Served s{path, 404, ""};
        const std::string token = path.starts_with(prefix) ? path.substr(prefix.size()) : "";
        if (method == "GET" && !token.empty() && token.find_first_of("/.") == std::string::npos) {
            std::ifstream in(m_root / ".well-known" / "acme-challenge" / token, std::ios::binary);
            if (in) {
                std::ostringstream ss;
                ss << in.rdbuf();
                s.status = 200;
                s.body = ss.str();
            }
        }
        std::string reply = "HTTP/1.1 " + std::string(s.status == 200 ? "200 OK" : "404 Not Found") +
                            "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(s.body.size()) +
                            "\r\nConnection: close\r\n\r\n" + s.body;
        std::string_view rest = reply;
        while (!rest.empty()) {
            ssize_t n = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
            if (n <= 0) {
                break;
            }
            rest.remove_prefix(static_cast<std::size_t>(n));
        }
        std::lock_guard lock(m_mutex);
        m_served.push_back(std::move(s));
    }

    Listener m_listener;
    const stdfs::path m_root;
    std::atomic<bool> m_stop{false};
    mutable std::mutex m_mutex;
    std::vector<Served> m_served; // guarded by m_mutex
    std::thread m_thread;         // last: started after everything it uses exists
};

using certfs::test::AcmeFixture;

// The DNS names of a domain's current certificate.
std::set<std::string> served_dns_names(const AcmeFixture& f, const std::string& name)
{
    auto cert = pki::parse_cert(f.store->current_generation(name).value().cert_pem).value();
    auto names = pki::cert_info(*cert).value().dns_names;
    return {names.begin(), names.end()};
}

// `issuer add acme NAME` for a pebble, with `extra` options.
void add_pebble_issuer(const Ctl& ctl, const test::Pebble& pebble, const std::string& name,
                       std::vector<std::string> extra)
{
    std::vector<std::string> args{
        "issuer",           "add",        "acme", name, "--directory", pebble.directory_url(), "--ca-bundle",
        pebble.ca_bundle(), "--max-wait", "30s"};
    args.insert(args.end(), extra.begin(), extra.end());
    RunResult r = ctl.ok(args);
    CHECK_THAT(r.out, StartsWith("added ACME issuer " + name + " (" + pebble.directory_url()));
}

// A domain added with --no-issue whose `certfsctl renew` fails: one line naming `needle`, and
// afterwards `show`, `list` and `history` give the error and the state, with nothing committed.
// Returns `show --json`.
json expect_renewal_refused(const Ctl& ctl, const std::string& name, const std::string& issuer,
                            const std::string& needle, const std::set<std::string>& states)
{
    RunResult added = ctl.ok({"add", name, "--issuer", issuer, "--no-issue"});
    CHECK_THAT(added.out, StartsWith("added " + name + " (no certificate yet"));
    expect_failure(ctl({"renew", name}), 1, needle);

    json show = ctl.js({"show", name});
    INFO(show.dump(2));
    CHECK(show["generation"].is_null());
    CHECK(show["current"].is_null());
    CHECK(states.count(show["state"].get<std::string>()) == 1);
    REQUIRE(show["last_error"].is_string());
    CHECK_THAT(show["last_error"].get<std::string>(), Contains(needle));
    CHECK(show["next_attempt"].is_string());
    CHECK(ctl.js({"history", name}) == json::array());

    // The table: the row names the domain, no generation, the state and the error.
    std::string row;
    for (const auto& line : lines_of(ctl.ok({"list"}).out)) {
        if (line.starts_with(name + " ")) {
            row = line;
        }
    }
    INFO(row);
    CHECK_THAT(row, Contains(needle) && Contains(show["state"].get<std::string>()));
    std::istringstream cells(row);
    std::string cell;
    cells >> cell >> cell;
    CHECK(cell == "-"); // GEN
    return show;
}

} // namespace

TEST_CASE("acme e2e: dns-01 through a hook with a wildcard and its base name and the hook sets then clears each")
{
    AcmeFixture f;
    const stdfs::path hook_log = f.dir / "hook.log";
    auto c = f.config();
    c.challenge = "dns-01";
    c.dns_hook = std::string(ACME_DNS_HOOK_PATH) + " " + f.pebble.challtestsrv_management() + " " + hook_log.string();
    f.add_issuer(c);

    renew::Renewer renewer(*f.store, "test");
    auto added = renewer.add_and_issue(f.domain("wild.test", {"wild.test", "*.wild.test", "dns.test"}));
    INFO(added.status().message() << "\nhook log:\n" << file_or_empty(hook_log) << "\n" << f.pebble.log());
    REQUIRE(added.ok());
    CHECK(added->generation == 1);
    f.verify_served("wild.test");
    CHECK(served_dns_names(f, "wild.test") == std::set<std::string>{"*.wild.test", "dns.test", "wild.test"});

    // One set per authorization (the wildcard and its base name share a record name with two
    // values), then one clear per value set, each after its set.
    std::map<std::string, std::vector<std::string>> sets; // record name -> values, in order
    std::map<std::string, std::vector<std::string>> clears;
    std::map<std::string, std::size_t> set_at; // value -> line number of its set
    auto lines = lines_of(read_file(hook_log));
    for (std::size_t i = 0; i < lines.size(); ++i) {
        std::istringstream words(lines[i]);
        std::string action;
        std::string name;
        std::string value;
        std::string extra;
        words >> action >> name >> value >> extra;
        INFO(lines[i]);
        CHECK(extra.empty());
        CHECK(value.size() == 43); // base64url of SHA-256, unpadded
        if (action == "set") {
            sets[name].push_back(value);
            set_at[value] = i;
        } else {
            REQUIRE(action == "clear");
            clears[name].push_back(value);
            REQUIRE(set_at.count(value) == 1);
            CHECK(set_at[value] < i);
        }
    }
    CHECK(lines.size() == 6);
    CHECK(sets.size() == 2);
    CHECK(sets["_acme-challenge.wild.test."].size() == 2);
    CHECK(sets["_acme-challenge.dns.test."].size() == 1);
    CHECK(std::set<std::string>(sets["_acme-challenge.wild.test."].begin(), sets["_acme-challenge.wild.test."].end())
              .size() == 2);
    for (const auto& [name, values] : sets) {
        INFO(name);
        std::vector<std::string> cleared = clears[name];
        std::vector<std::string> set_values = values;
        std::sort(cleared.begin(), cleared.end());
        std::sort(set_values.begin(), set_values.end());
        CHECK(cleared == set_values);
    }
}

TEST_CASE("acme e2e: http-01 through a webroot that the test serves and the challenge files are gone afterwards")
{
    AcmeFixture f;
    const stdfs::path webroot = f.dir / "www";
    stdfs::create_directory(webroot);
    WebrootServer server(f.pebble.http01_port(), webroot);
    auto c = f.config();
    c.http_listen = ":80"; // never used: the webroot answers
    c.webroot = webroot.string();
    f.add_issuer(c);

    renew::Renewer renewer(*f.store, "test");
    auto added = renewer.add_and_issue(f.domain("web.test", {"web.test", "www.web.test"}, {"127.0.0.1"}));
    INFO(added.status().message() << "\n" << f.pebble.log());
    REQUIRE(added.ok());
    CHECK(added->generation == 1);
    f.verify_served("web.test");
    CHECK(served_dns_names(f, "web.test") == std::set<std::string>{"web.test", "www.web.test"});

    // pebble fetched one token per identifier from the test's server, and each file was there
    // with TOKEN.THUMBPRINT in it.
    std::set<std::string> tokens;
    for (const auto& s : server.served()) {
        INFO(s.path << " -> " << s.status << " " << s.body);
        CHECK(s.status == 200);
        const std::string token = s.path.substr(s.path.rfind('/') + 1);
        CHECK_THAT(s.body, StartsWith(token + "."));
        tokens.insert(token);
    }
    CHECK(tokens.size() == 3);
    // Nothing left behind: no token file, no temporary file.
    const stdfs::path challenges = webroot / ".well-known" / "acme-challenge";
    CHECK(stdfs::is_directory(challenges));
    CHECK(stdfs::is_empty(challenges));
}

TEST_CASE("acme e2e: certfsctl adds an ACME issuer and issues through it and issuer show reports the account")
{
    test::Pebble pebble;
    Ctl ctl;
    ctl.ok({"init"});
    add_pebble_issuer(
        ctl, pebble, "pebble",
        {"--email", "admin@example.test", "--http-listen", "127.0.0.1:" + std::to_string(pebble.http01_port())});

    // `issuer show` registers the account when there is none yet, and reports the directory.
    json first = ctl.js({"issuer", "show", "pebble"});
    INFO(first.dump(2) << "\n" << pebble.log());
    CHECK_FALSE(first.contains("acme_error"));
    CHECK(first["kind"] == "acme");
    REQUIRE(first["account_url"].is_string());
    const std::string account = first["account_url"].get<std::string>();
    CHECK_THAT(account, StartsWith(pebble.directory_url().substr(0, pebble.directory_url().rfind('/'))) &&
                            Contains("/my-account/"));
    REQUIRE(first["meta"].is_object());
    CHECK_THAT(first["meta"].value("termsOfService", ""), StartsWith("data:text/plain"));
    CHECK(first["settings"]["directory"] == pebble.directory_url());
    CHECK(first["settings"]["email"] == "admin@example.test");

    RunResult added = ctl.ok({"add", "site.test", "--issuer", "pebble", "--san", "site.test", "--san", "www.site.test",
                              "--ip", "127.0.0.1"});
    CHECK_THAT(added.out, StartsWith("added site.test: generation 1, expires "));
    json show = ctl.js({"show", "site.test"});
    INFO(show.dump(2));
    CHECK(show["generation"] == 1);
    CHECK(show["state"] == "monitoring");
    CHECK(show["last_error"].is_null());
    CHECK(show["dns_names"] == json::array({"site.test", "www.site.test"}));
    CHECK(show["ip_addresses"] == json::array({"127.0.0.1"}));
    CHECK_THAT(show["current"]["issuer"].get<std::string>(), Contains("Pebble Intermediate"));

    // The account registered by `issuer show` was reused, and is recorded in the settings.
    json again = ctl.js({"issuer", "show", "pebble"});
    CHECK(again["account_url"] == account);
    CHECK(again["settings"]["account_url"] == account);
    CHECK(again["domains"] == 1);
    RunResult human = ctl.ok({"issuer", "show", "pebble"});
    CHECK_THAT(human.out,
               Contains("account:    " + account) && Contains("challenge:  http-01 (listening on 127.0.0.1:" +
                                                              std::to_string(pebble.http01_port()) + ")"));

    // What certfs serves verifies against pebble's root.
    ctl.ok({"export", "site.test", ctl.path("out").string()});
    write_file(ctl.path("root.pem"), pebble.issuing_root_pem());
    auto r =
        test::run({"/usr/bin/openssl", "verify", "-purpose", "sslserver", "-CAfile", ctl.path("root.pem").string(),
                   "-untrusted", (ctl.path("out") / "chain.pem").string(), (ctl.path("out") / "cert.pem").string()});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
}

TEST_CASE("acme e2e: an unreachable directory is a one-line error and state backoff with nothing committed")
{
    Ctl ctl;
    ctl.ok({"init"});
    const std::string url = "https://127.0.0.1:" + std::to_string(free_port()) + "/dir";
    ctl.ok({"issuer", "add", "acme", "gone", "--directory", url});
    json show = expect_renewal_refused(ctl, "gone.test", "gone", url, {"backoff"});
    CHECK_THAT(show["last_error"].get<std::string>(),
               Contains("issuer gone: GET " + url + ": Couldn't connect to server"));
    // The account was never registered.
    CHECK(ctl.js({"issuer", "list"})[0]["settings"]["account_url"] == "");
}

TEST_CASE("acme e2e: a name the CA refuses is rejectedIdentifier and state rejected with nothing committed")
{
    test::PebbleOptions options;
    options.blocked_domains = {"blocked.test"};
    test::Pebble pebble(options);
    Ctl ctl;
    ctl.ok({"init"});
    add_pebble_issuer(ctl, pebble, "pebble", {"--http-listen", "127.0.0.1:" + std::to_string(pebble.http01_port())});
    json show = expect_renewal_refused(ctl, "www.blocked.test", "pebble", "rejectedIdentifier", {"rejected"});
    CHECK_THAT(show["last_error"].get<std::string>(),
               Contains("new order: POST ") && Contains("forbidden by policy") && Contains("\"www.blocked.test\""));
}

TEST_CASE("acme e2e: a wrong EAB HMAC key is refused at registration with nothing committed")
{
    const std::string right = renew::acme::base64url(std::string(32, '\x5a'));
    const std::string wrong = renew::acme::base64url(std::string(32, '\x33'));
    test::PebbleOptions options;
    options.require_eab = true;
    options.eab_keys = {{"kid-1", right}};
    test::Pebble pebble(options);
    Ctl ctl;
    ctl.ok({"init"});
    add_pebble_issuer(ctl, pebble, "pebble",
                      {"--eab-kid", "kid-1", "--eab-hmac-key", wrong, "--http-listen",
                       "127.0.0.1:" + std::to_string(pebble.http01_port())});
    json show =
        expect_renewal_refused(ctl, "eab.test", "pebble", "ACME account registration", {"misconfigured", "rejected"});
    INFO(pebble.log());
    const std::string error = show["last_error"].get<std::string>();
    CHECK_THAT(error, Contains(": unauthorized: external account binding"));
    CHECK(ctl.js({"issuer", "list"})[0]["settings"]["account_url"] == "");
    // `issuer show` reports the same problem instead of an account.
    json issuer = ctl.js({"issuer", "show", "pebble"});
    CHECK_FALSE(issuer.contains("account_url"));
    CHECK_THAT(issuer.value("acme_error", ""), Contains("ACME account registration"));
}

TEST_CASE("acme e2e: the http-01 responder's port in use is a clear error then a renewal works once it is free")
{
    test::Pebble pebble;
    Ctl ctl;
    ctl.ok({"init"});
    const std::string listen = "127.0.0.1:" + std::to_string(pebble.http01_port());
    add_pebble_issuer(ctl, pebble, "pebble", {"--http-listen", listen});
    auto occupier = std::make_unique<Listener>(pebble.http01_port());
    expect_renewal_refused(ctl, "busy.test", "pebble",
                           "cannot listen on " + listen + " for http-01 challenges: Address already in use",
                           {"backoff"});
    occupier.reset();
    RunResult renewed = ctl.ok({"renew", "busy.test", "--force"});
    CHECK_THAT(renewed.out, Contains("busy.test: renewed: generation 1"));
    json show = ctl.js({"show", "busy.test"});
    CHECK(show["generation"] == 1);
    CHECK(show["state"] == "monitoring");
    CHECK(show["last_error"].is_null());
}

TEST_CASE("acme e2e: the daemon renews short-lived ACME certificates by itself while readers match on the mount")
{
    test::PebbleOptions options;
    options.certificate_validity_s = 60;
    AcmeFixture f(options);
    f.add_issuer(f.config());
    const std::string hook_log = (f.dir / "deploy.log").string();
    {
        renew::Renewer renewer(*f.store, "test");
        // A bundle of two: both are ordered and rotate in one commit, and the hook runs once.
        for (const char* name : {"a.acme.test", "b.acme.test"}) {
            auto c = f.domain(name, {name});
            c.bundle = "acme";
            c.renew_before = 55s; // due 5 s after issue, pulled earlier by up to 0.5 s
            c.deploy_hooks = {"/bin/sh -c 'echo \"$CERTFS_GENERATION|$CERTFS_NAMES\" >> " + hook_log + "'"};
            auto added = renewer.add_and_issue(c);
            INFO(added.status().message());
            REQUIRE(added.ok());
        }
    }
    stdfs::create_directory(f.dir / "mnt");
    test::Daemon m(f.dir / "certfs.db", f.dir / "mnt", f.dir / "certfs.log", 200ms);
    INFO("daemon log:\n" << m.log());
    REQUIRE(wait_until([&] { return slurp(m.live("a.acme.test") / "privkey.pem").has_value(); }));

    auto readers = test::pausing_readers(m.live("a.acme.test"), 200ms);
    auto current = [&](const char* name) { return f.store->get_domain(name).value().current_gen.value_or(0); };
    auto hook_lines = [&] { return lines_of(file_or_empty(hook_log)); };
    // Two renewals by the daemon alone, and the hook of each run.
    bool renewed = wait_until([&] { return current("a.acme.test") >= 3 && hook_lines().size() >= 2; }, 60s);
    INFO("daemon log:\n" << m.log() << "\n" << f.pebble.log());
    REQUIRE(renewed);
    // The daemon goes on renewing: once stopped, a reader reads the one current when it stopped
    // or a later one.
    auto gen_of = [&](const std::string& serial) {
        const std::vector<store::Generation> history = f.store->history("a.acme.test").value();
        auto g = std::find_if(history.begin(), history.end(), [&](const auto& h) { return h.serial_hex == serial; });
        return g == history.end() ? std::int64_t{0} : g->gen;
    };
    for (auto& r : readers) {
        const std::int64_t before = current("a.acme.test");
        auto c = r->stop();
        CHECK(c["rounds"] > 0);
        CHECK(c["errors"] == 0);
        CHECK(c["mismatches"] == 0);
        // They moved along: past the first generation while running, to the newest once stopped.
        CHECK(c["generations"] >= 2);
        CHECK(gen_of(c.serials["final"]) >= before);
    }
    CHECK(current("b.acme.test") == current("a.acme.test"));
    // Generations 2 and up were committed by the daemon, not the test.
    auto events = f.store->events(std::string_view("a.acme.test"), 100).value();
    int by_daemon = 0;
    for (const auto& e : events) {
        if (e.action == "renewed") {
            INFO(e.actor << " " << e.detail);
            CHECK_THAT(e.actor, StartsWith("certfs pid "));
            ++by_daemon;
        }
    }
    CHECK(by_daemon >= 2);
    // One hook line per batch, naming both domains.
    auto lines = hook_lines();
    CHECK(std::set<std::string>(lines.begin(), lines.end()).size() == lines.size());
    for (const auto& line : lines) {
        INFO(line);
        CHECK_THAT(line, Contains("a.acme.test") && Contains("b.acme.test"));
    }
    auto a = f.store->get_domain("a.acme.test").value();
    CHECK(a.last_error.empty());
    CHECK(a.hook_error.empty());
    // The certificates were short-lived indeed: pebble's validity, not its 5-year default.
    auto gen = f.store->current_generation("a.acme.test").value();
    CHECK(gen.not_after - gen.not_before <= 60s);
    f.verify_served("a.acme.test");
}
