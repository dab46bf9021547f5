// certfsctl import-certbot: the configobj reader on the lines certbot writes and on broken ones,
// then the real certbot from Debian against a private pebble. certbot makes two lineages (one
// with three generations, one RSA), certfsctl imports them, and the test looks where an admin
// looks: the mount serves the bytes certbot's live/ served, the settings came along, a re-run
// changes nothing, and a renewal through certbot's own ACME account works and runs the
// lineage's deploy hook.
#include <sys/stat.h>

#include <algorithm>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "core/pki.hpp"
#include "migrate/certbot.hpp"
#include "migrate/configobj.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pebble.hpp"
#include "tests/support/servers.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::Ctl;
using certfs::test::expect_failure;
using certfs::test::read_file;
using certfs::test::TempDir;
using certfs::test::write_file;
namespace stdfs = std::filesystem;

TEST_CASE("import-certbot: configobj as certbot writes it, with sections, lists, quotes and comments")
{
    const std::string text = "# renew_before_expiry = 30 days\n"
                             "version = 2.1.0\n"
                             "archive_dir = /etc/letsencrypt/archive/example.test\n"
                             "renew_before_expiry = 20 days  # changed by the admin\n"
                             "\n"
                             "[renewalparams]\n"
                             "account = 0123abcd\n"
                             "renew_hook = systemctl reload nginx\n"
                             "quoted = \"a, b # not a comment\"\n"
                             "pref_challs = http-01,\n"
                             "webroot_path = /var/www/a, /var/www/b\n"
                             "empty =\n"
                             "triple = \"\"\"it's \"x\", y\"\"\"\n"
                             "long = '''one\n"
                             "two'''\n"
                             "[[webroot_map]]\n"
                             "example.test = /var/www/a\n";
    auto conf = migrate::parse_configobj(text, "renewal/example.test.conf");
    INFO(conf.status().message());
    REQUIRE(conf.ok());
    CHECK(conf->get("version") == "2.1.0");
    CHECK(conf->get("renew_before_expiry") == "20 days");
    CHECK(conf->find("renew_before_expiry")->line == 4);
    const auto* params = conf->section("renewalparams");
    REQUIRE(params != nullptr);
    CHECK(params->get("renew_hook") == "systemctl reload nginx");
    CHECK(params->get("quoted") == "a, b # not a comment");
    CHECK_FALSE(params->find("quoted")->list);
    CHECK(params->find("pref_challs")->list);
    CHECK(params->find("pref_challs")->items == std::vector<std::string>{"http-01"});
    CHECK(params->find("webroot_path")->items == std::vector<std::string>{"/var/www/a", "/var/www/b"});
    CHECK(params->get("empty", "x").empty());
    CHECK(params->get("triple") == "it's \"x\", y");
    CHECK(params->get("long") == "one\ntwo");
    CHECK(params->get("missing", "fallback") == "fallback");
    REQUIRE(params->section("webroot_map") != nullptr);
    CHECK(params->section("webroot_map")->get("example.test") == "/var/www/a");
    CHECK(conf->section("webroot_map") == nullptr);
}

TEST_CASE("import-certbot: a broken renewal conf is refused naming its file and line")
{
    struct Case {
        const char* text;
        const char* error;
    };
    for (const Case& c : {
             Case{"a = 1\n[renewalparams\n", "x.conf:2: a section header without ']'"},
             Case{"[a]]\n", "x.conf:1: a section header opens with 1 '[' and closes with 2 ']'"},
             Case{"[[deep]]\n", "x.conf:1: section 'deep' is nested 2 deep"},
             Case{"a = 1\nb\n", "x.conf:2: expected 'key = value'"},
             Case{"a = 1\na = 2\n", "x.conf:2: 'a' is set twice"},
             Case{"[s]\n[s]\n", "x.conf:2: section 's' appears twice"},
             Case{"a = \"open\n", "x.conf:1: a quoted value without its closing \""},
             Case{"a = \"x\" y\n", "x.conf:1: text after a quoted value"},
             Case{"\n\na = '''never\nends\n", "x.conf:3: a triple-quoted value that never ends"},
             Case{" = 1\n", "x.conf:1: a value without a key"},
         }) {
        auto conf = migrate::parse_configobj(c.text, "x.conf");
        INFO(c.text);
        REQUIRE_FALSE(conf.ok());
        CHECK(conf.status().code() == Code::invalid);
        CHECK_THAT(conf.status().message(), Contains(c.error));
    }
}

TEST_CASE("import-certbot: renew_before_expiry as certbot reads it")
{
    CHECK(migrate::parse_certbot_interval("30 days").value() == std::chrono::days(30));
    CHECK(migrate::parse_certbot_interval("30").value() == std::chrono::days(30));
    CHECK(migrate::parse_certbot_interval("2 weeks").value() == std::chrono::days(14));
    CHECK(migrate::parse_certbot_interval("1 week, 12 hours").value() == std::chrono::days(7) + std::chrono::hours(12));
    CHECK(migrate::parse_certbot_interval("12h").value() == std::chrono::hours(12));
    CHECK(migrate::parse_certbot_interval("1 month").value() == std::chrono::days(30));
    CHECK_THAT(migrate::parse_certbot_interval("soon").status().message(), Contains("not an interval"));
    CHECK_THAT(migrate::parse_certbot_interval("3 fortnights").status().message(),
               Contains("unknown unit 'fortnights'"));
    CHECK_THAT(migrate::parse_certbot_interval("0 days").status().message(), Contains("not an interval"));
    CHECK_THAT(migrate::parse_certbot_interval("").status().message(), Contains("not an interval"));
}

TEST_CASE("import-certbot: an RSA and an EC private key come back from their JWK, and a tampered JWK is refused")
{
    for (auto type : {pki::KeyType::rsa_2048, pki::KeyType::ec_p256, pki::KeyType::ec_p384}) {
        auto key = pki::generate_key(type).value();
        pki::JwkPrivate jwk;
        static_cast<pki::JwkNumbers&>(jwk) = pki::jwk_numbers(*key).value();
        auto bn = [&](const char* param) {
            BIGNUM* raw = nullptr;
            REQUIRE(EVP_PKEY_get_bn_param(key.get(), param, &raw) == 1);
            std::string out(static_cast<std::size_t>(BN_num_bytes(raw)), '\0');
            BN_bn2bin(raw, reinterpret_cast<unsigned char*>(out.data()));
            BN_free(raw);
            return out;
        };
        if (jwk.kty == "RSA") {
            jwk.d = bn("d");
            jwk.p = bn("rsa-factor1");
            jwk.q = bn("rsa-factor2");
            jwk.dp = bn("rsa-exponent1");
            jwk.dq = bn("rsa-exponent2");
            jwk.qi = bn("rsa-coefficient1");
        } else {
            jwk.d = bn("priv");
        }
        auto back = pki::private_key_from_jwk(jwk);
        INFO(pki::key_type_name(type) << ": " << back.status().message());
        REQUIRE(back.ok());
        CHECK(pki::private_key_pem(**back).value() == pki::private_key_pem(*key).value());

        pki::JwkPrivate missing = jwk;
        missing.d.clear();
        CHECK_THAT(pki::private_key_from_jwk(missing).status().message(), Contains("the JWK has no 'd'"));
        pki::JwkPrivate tampered = jwk;
        tampered.d.back() = static_cast<char>(tampered.d.back() ^ 1);
        auto bad = pki::private_key_from_jwk(tampered);
        REQUIRE_FALSE(bad.ok());
        CHECK(bad.status().code() == Code::invalid);
    }
}

namespace {

// Debian's certbot on its own configuration directory, against `pebble`, answering http-01
// itself on pebble's validation port (--standalone).
class Certbot {
public:
    Certbot(const test::Pebble& pebble, const stdfs::path& dir) : m_pebble(pebble), m_dir(dir) {}

    stdfs::path config_dir() const { return m_dir / "le"; }

    // Runs certbot with `args` after the common ones; REQUIREs success, showing certbot's log.
    void ok(const std::vector<std::string>& args) const
    {
        std::vector<std::string> argv{
            "/usr/bin/certbot", "--non-interactive",       "--config-dir", config_dir().string(),
            "--work-dir",       (m_dir / "work").string(), "--logs-dir",   (m_dir / "logs").string(),
            "--server",         m_pebble.directory_url()};
        argv.insert(argv.end(), args.begin(), args.end());
        auto r = test::run(argv, {"REQUESTS_CA_BUNDLE=" + m_pebble.ca_bundle()}, 180);
        INFO(test::join(argv) << "\nexit " << r.exit_code << "\n"
                              << r.out << r.err << "\ncertbot's log:\n"
                              << test::file_or_empty(m_dir / "logs" / "letsencrypt.log"));
        REQUIRE(r.exit_code == 0);
    }

    void certonly(const std::string& name, const std::vector<std::string>& extra) const
    {
        std::vector<std::string> args{"certonly",
                                      "--agree-tos",
                                      "-m",
                                      "admin@example.test",
                                      "--no-eff-email",
                                      "--standalone",
                                      "--http-01-port",
                                      std::to_string(m_pebble.http01_port()),
                                      "--http-01-address",
                                      "127.0.0.1",
                                      "--cert-name",
                                      name};
        args.insert(args.end(), extra.begin(), extra.end());
        ok(args);
    }

private:
    const test::Pebble& m_pebble;
    stdfs::path m_dir;
};

std::string serial_of(const std::string& cert_pem)
{
    auto certs = pki::parse_certs(cert_pem).value();
    return pki::cert_info(*certs.front()).value().serial_hex;
}

// A private key's PKCS#8 PEM, whatever form it was written in (certbot writes EC keys as SEC 1).
std::string key_pkcs8(const std::string& pem)
{
    return pki::private_key_pem(*pki::parse_private_key(pem).value()).value();
}

} // namespace

TEST_CASE("import-certbot: certbot's lineages with three generations move into the store, the mount serves what "
          "certbot's live/ served, and the next renewal goes through certbot's account")
{
    test::Pebble pebble;
    TempDir dir;
    Certbot certbot(pebble, dir.path());
    const stdfs::path hooked = dir.path() / "deployed";
    // Three generations of a lineage with two names and a deploy hook, as certbot makes them.
    certbot.certonly("www.example.test", {"-d", "www.example.test", "-d", "example.test", "--deploy-hook",
                                          "touch '" + hooked.string() + "'"});
    for (int i = 0; i < 2; ++i) {
        // Without --no-random-sleep-on-renew, a renew not on a terminal first sleeps up to 8 minutes.
        certbot.ok({"renew", "--force-renewal", "--no-random-sleep-on-renew", "--cert-name", "www.example.test"});
    }
    // A second lineage with an RSA key, and an admin's renew_before_expiry.
    certbot.certonly("rsa.example.test",
                     {"-d", "rsa.example.test", "--key-type", "rsa", "--rsa-key-size", "2048", "--pre-hook", "true"});
    // A lineage whose certificate has expired, from a CA of its own whose certificates last 3 s.
    test::PebbleOptions brief;
    brief.certificate_validity_s = 3;
    test::Pebble short_lived(brief);
    Certbot(short_lived, dir.path()).certonly("expired.example.test", {"-d", "expired.example.test"});
    const stdfs::path le = certbot.config_dir();
    {
        const stdfs::path conf = le / "renewal" / "rsa.example.test.conf";
        std::string text = read_file(conf);
        text.replace(text.find("# renew_before_expiry = 30 days"), 31, "renew_before_expiry = 20 days");
        write_file(conf, text);
    }
    REQUIRE(stdfs::exists(le / "archive" / "www.example.test" / "cert3.pem"));
    const auto expired_at =
        pki::cert_info(*pki::parse_certs(read_file(le / "live" / "expired.example.test" / "cert.pem")).value().front())
            .value()
            .not_after;
    REQUIRE(test::wait_until([&] { return std::chrono::system_clock::now() > expired_at + 1s; }, 30s));
    stdfs::remove(hooked);

    Ctl ctl;
    ctl.ok({"init"});
    const std::string before = ctl.snapshot();
    const std::vector<std::string> import{"import-certbot", le.string(), "--ca-bundle", pebble.ca_bundle()};

    {
        // --dry-run says what it would do and changes nothing.
        std::vector<std::string> dry = import;
        dry.push_back("--dry-run");
        auto r = ctl.ok(dry);
        CHECK_THAT(r.out, Contains("would import www.example.test: 3 generations, serving certbot's cert3.pem"));
        CHECK_THAT(r.out, Contains("would import 2 lineages"));
        CHECK(ctl.snapshot() == before);
    }
    // A renewal conf that cannot be read stops the whole import, naming its file and line.
    write_file(le / "renewal" / "broken.example.test.conf", "cert = x\n[renewalparams\n");
    expect_failure(ctl(import), 1, "renewal/broken.example.test.conf:2: a section header without ']'");
    CHECK(ctl.snapshot() == before);
    stdfs::remove(le / "renewal" / "broken.example.test.conf");

    auto r = ctl.ok(import);
    INFO(r.out);
    CHECK_THAT(r.out, Contains("added ACME issuer certbot-127.0.0.1 with certbot's account (" + pebble.directory_url() +
                               ", http-01 listening on 127.0.0.1:" + std::to_string(pebble.http01_port()) + ")"));
    CHECK_THAT(r.out, Contains("imported www.example.test: 3 generations, serving certbot's cert3.pem"));
    CHECK_THAT(r.out, Contains("imported rsa.example.test: 1 generation, serving certbot's cert1.pem"));
    CHECK_THAT(r.out, Contains("imported 2 lineages from " + le.string()));
    CHECK_THAT(r.out, Contains("note: expired.example.test: not imported, its certificate expired on "));
    CHECK_THAT(r.out, Contains("note: rsa.example.test: its pre_hook is not imported"));
    CHECK(ctl({"show", "expired.example.test"}).exit_code == 1);

    // The settings came along.
    auto www = ctl.show("www.example.test");
    INFO(www.dump(2));
    CHECK(www["issuer"] == "certbot-127.0.0.1");
    auto names = www["dns_names"].get<std::vector<std::string>>();
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"example.test", "www.example.test"});
    CHECK(www["key_type"] == "ec-p256");
    CHECK(www["mode"] == "0600");
    CHECK(www["deploy_hooks"] == nlohmann::json::array({"sh -c 'touch '\\''" + hooked.string() + "'\\'''"}));
    auto rsa = ctl.show("rsa.example.test");
    CHECK(rsa["key_type"] == "rsa-2048");
    CHECK(rsa["renew_before"] == "20d");
    // Every generation of the archive, in certbot's order, the last one served; no hook ran.
    auto history = ctl.history("www.example.test");
    REQUIRE(history.size() == 3);
    for (int n = 1; n <= 3; ++n) {
        const stdfs::path archive = le / "archive" / "www.example.test";
        CHECK(history[n - 1]["serial"] == serial_of(read_file(archive / ("cert" + std::to_string(n) + ".pem"))));
        CHECK(history[n - 1]["reason"] == "imported");
    }
    CHECK(history[2]["current"] == true);
    CHECK_FALSE(stdfs::exists(hooked));

    {
        // certbot's webroot authenticator, with a webroot_map for the lineage's names, into a
        // store of its own: the issuer writes into that webroot. An nginx plugin lineage gets
        // http-01 on port 80, and a note says so.
        const stdfs::path copy = dir.path() / "le-webroot";
        stdfs::copy(le, copy, stdfs::copy_options::recursive | stdfs::copy_options::copy_symlinks);
        const stdfs::path www_conf = copy / "renewal" / "www.example.test.conf";
        std::string text = read_file(www_conf);
        text.replace(text.find("authenticator = standalone"), 26, "authenticator = webroot");
        const stdfs::path webroot = dir.path() / "webroot";
        stdfs::create_directory(webroot);
        text +=
            "[[webroot_map]]\nwww.example.test = " + webroot.string() + "\nexample.test = " + webroot.string() + "\n";
        write_file(www_conf, text);
        const stdfs::path rsa_conf = copy / "renewal" / "rsa.example.test.conf";
        text = read_file(rsa_conf);
        text.replace(text.find("authenticator = standalone"), 26, "authenticator = nginx");
        write_file(rsa_conf, text);
        Ctl other;
        other.ok({"init"});
        auto w = other.ok({"import-certbot", copy.string(), "--dry-run"});
        // Lineages are read in name order: rsa.example.test's issuer comes first.
        CHECK_THAT(w.out, Contains("would add ACME issuer certbot-127.0.0.1 with certbot's account (" +
                                   pebble.directory_url() + ", http-01 listening on :80)"));
        CHECK_THAT(w.out, Contains("would add ACME issuer certbot-127.0.0.1-2 with certbot's account (" +
                                   pebble.directory_url() + ", http-01 through the webroot " + webroot.string() + ")"));
        CHECK_THAT(w.out,
                   Contains("would import www.example.test: 3 generations, serving certbot's cert3.pem (expires"));
        CHECK_THAT(w.out, Contains("note: rsa.example.test: certbot's authenticator 'nginx' is not one certfs has"));
    }

    // A second run changes nothing and says why.
    const std::string imported = ctl.snapshot();
    auto again = ctl.ok(import);
    CHECK_THAT(again.out, Contains("note: www.example.test: already in the store, left as it is"));
    CHECK_THAT(again.out, Contains("imported 0 lineages"));
    CHECK(ctl.snapshot() == imported);

    {
        // What nginx reads: the mount's files hold what certbot's live/ held.
        stdfs::create_directory(dir.path() / "mnt");
        test::Daemon daemon(ctl.db(), dir.path() / "mnt", dir.path() / "certfs.log", 200ms);
        INFO("daemon log:\n" << daemon.log());

        // nginx serving from certbot's live/, then from the mount: the path is the one change, and
        // it serves the same certificate, verified to pebble's root, before and after.
        const std::string root = (dir.path() / "pebble-root.pem").string();
        write_file(root, pebble.issuing_root_pem());
        const std::string served = serial_of(read_file(le / "live" / "www.example.test" / "cert.pem"));
        const test::Nginx nginx(dir.path() / "nginx", le / "live" / "www.example.test", "www.example.test");
        test::OwnedProcess server = nginx.start();
        const test::Handshake on_certbot = test::first_answer(server, nginx.port, "www.example.test", root);
        INFO(nginx.log() << on_certbot.error);
        REQUIRE(on_certbot.verified);
        CHECK(on_certbot.serial == served);
        nginx.serve_from(daemon.live("www.example.test"));
        test::run({"/bin/sh", "-c", nginx.reload_hook()}, {}, 20);
        test::Handshake on_mount;
        // After the reload, nginx's new workers answer from the mount's files.
        CHECK(test::wait_until([&] {
            on_mount = test::handshake(nginx.port, "www.example.test", root);
            return on_mount.verified &&
                   test::file_or_empty(nginx.error_log()).find("reconfiguring") != std::string::npos;
        }));
        CHECK(on_mount.serial == served);
        CHECK(test::file_or_empty(nginx.error_log()).find("[emerg]") == std::string::npos);
        CHECK_FALSE(server.exited());

        for (const char* name : {"www.example.test", "rsa.example.test"}) {
            const stdfs::path live = le / "live" / name;
            const stdfs::path mounted = daemon.live(name);
            CHECK(read_file(mounted / "fullchain.pem") == read_file(live / "fullchain.pem"));
            CHECK(read_file(mounted / "cert.pem") == read_file(live / "cert.pem"));
            CHECK(read_file(mounted / "chain.pem") == read_file(live / "chain.pem"));
            CHECK(key_pkcs8(read_file(mounted / "privkey.pem")) == key_pkcs8(read_file(live / "privkey.pem")));
        }
    }

    // The next renewal, through certbot's account on the same pebble, answering http-01 where
    // certbot did; the lineage's deploy hook runs after it.
    auto renewed = ctl.ok({"renew", "www.example.test", "--force"});
    INFO(renewed.out << renewed.err);
    CHECK(ctl.history("www.example.test").size() == 4);
    CHECK(test::wait_until([&] { return stdfs::exists(hooked); }));
    // The account is certbot's: certfs found the same one with certbot's key.
    std::string regr;
    const std::string server = pebble.directory_url().substr(std::string("https://").size()); // 127.0.0.1:PORT/dir
    for (const auto& entry : stdfs::recursive_directory_iterator(le / "accounts" / server)) {
        if (entry.path().filename() == "regr.json") {
            regr = read_file(entry.path());
        }
    }
    REQUIRE_FALSE(regr.empty());
    auto issuer = ctl.js({"issuer", "show", "certbot-127.0.0.1"});
    CHECK(issuer["account_url"] == nlohmann::json::parse(regr)["uri"]);
}
