// Debian's nginx and haproxy on the mount, as an admin runs them: their configs name the files
// under live/ and nothing else of certfs, and a deploy hook reloads them. After each renewal the
// server, asked through `openssl s_client`, serves the certificate just committed; in a storm of
// renewals with a reload after each, it never fails to load a pair and a client never sees a
// certificate that was not committed or does not verify.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <numeric>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/support/child.hpp"
#include "tests/support/ctl.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pairs.hpp"
#include "tests/support/servers.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::first_answer;
using certfs::test::Handshake;
using certfs::test::handshake;
using certfs::test::wait_until;

namespace {

constexpr const char* k_haproxy = "/usr/sbin/haproxy";

// The serial of the generation `name` has current in the store.
std::string committed_serial(const test::Ctl& ctl, const std::string& name)
{
    return ctl.show(name)["current"]["serial"].get<std::string>();
}

// Lines of `text` holding one of `needles`.
std::vector<std::string> lines_with_any(const std::string& text, const std::vector<std::string>& needles)
{
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        for (const auto& n : needles) {
            if (line.find(n) != std::string::npos) {
                out.push_back(line);
                break;
            }
        }
    }
    return out;
}

// A store with the local CA "ca", its certificate in ca.pem for the clients, mounted.
struct Setup {
    test::Ctl ctl;
    std::string ca_file;
    explicit Setup() : ca_file(ctl.path("ca.pem").string())
    {
        ctl.init_with_ca();
        test::write_file(ca_file, ctl.ok({"issuer", "cert", "ca"}).out);
        std::filesystem::create_directory(ctl.path("mnt"));
    }
};

// Handshakes in a loop on a thread of its own until stopped, keeping what each one saw.
class Clients {
public:
    Clients(int port, std::string name, std::string ca_file)
        : m_thread([this, port, name = std::move(name), ca_file = std::move(ca_file)] {
              while (!m_stop) {
                  Handshake h;
                  try {
                      h = handshake(port, name, ca_file);
                  } catch (const std::exception& e) { // no openssl to run: a failed handshake, said
                      h.error = e.what();
                  }
                  std::lock_guard lock(m_mutex);
                  m_seen.push_back(std::move(h));
              }
          })
    {
    }
    ~Clients() { stop(); }
    Clients(const Clients&) = delete;
    Clients& operator=(const Clients&) = delete;

    std::vector<Handshake> stop()
    {
        m_stop = true;
        if (m_thread.joinable()) {
            m_thread.join();
        }
        std::lock_guard lock(m_mutex);
        return m_seen;
    }

private:
    std::atomic<bool> m_stop{false};
    std::mutex m_mutex;
    std::vector<Handshake> m_seen; // guarded by m_mutex
    std::thread m_thread;
};

// Renews `name` `count` times with certfsctl renew --force; after each, waits until the server
// serves the generation just committed. Then checks what the clients saw meanwhile: every
// handshake verified, and showed a certificate that was committed.
void renewal_storm(const test::Ctl& ctl, const std::string& name, int port, const std::string& ca_file, int count,
                   const char* server)
{
    std::set<std::string> committed = {committed_serial(ctl, name)};
    std::vector<double> waits;
    Clients clients(port, name, ca_file);
    for (int i = 0; i < count; ++i) {
        auto r = ctl({"renew", name, "--force"}); // commits, waits for the flip, runs the reload hook
        INFO(r.out << r.err);
        REQUIRE(r.exit_code == 0);
        const std::string serial = committed_serial(ctl, name);
        committed.insert(serial);
        const auto start = std::chrono::steady_clock::now();
        Handshake last;
        const bool served = wait_until(
            [&] {
                last = handshake(port, name, ca_file);
                return last.serial == serial;
            },
            10s);
        INFO("renewal " << i + 1 << ": committed " << serial << ", served " << last.serial << " " << last.error);
        REQUIRE(served);
        CHECK(last.verified);
        waits.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    const std::vector<Handshake> seen = clients.stop();
    std::map<std::string, int> by_serial;
    int failed = 0;
    for (const auto& h : seen) {
        INFO("a client saw serial '" << h.serial << "' " << h.error);
        CHECK(h.verified);
        CHECK(committed.contains(h.serial));
        failed += h.verified ? 0 : 1;
        ++by_serial[h.serial];
    }
    CHECK(seen.size() >= 10);
    std::printf("%s: %d renewals, each reloaded onto; served within %.2f s at most (mean %.2f s) after certfsctl "
                "renew returned; %zu client handshakes saw %zu certificates, %d did not verify\n",
                server, count, *std::max_element(waits.begin(), waits.end()),
                std::accumulate(waits.begin(), waits.end(), 0.0) / static_cast<double>(waits.size()), seen.size(),
                by_serial.size(), failed);
}

} // namespace

TEST_CASE("servers: nginx reloaded by a deploy hook serves each renewal's certificate, and a storm of renewals "
          "never makes it fail to load a pair")
{
    Setup s;
    const test::Nginx conf(s.ctl.path("nginx"), s.ctl.path("mnt") / "live" / "www.example.test", "www.example.test");
    s.ctl.ok({"add", "www.example.test", "--issuer", "ca", "--deploy-hook", conf.reload_hook()});
    test::Daemon daemon(s.ctl.db(), s.ctl.path("mnt"), s.ctl.path("certfs.log"), 200ms);

    test::OwnedProcess nginx = conf.start();
    const Handshake first = first_answer(nginx, conf.port, "www.example.test", s.ca_file);
    INFO(conf.log());
    REQUIRE_FALSE(nginx.exited());
    REQUIRE(first.verified);
    CHECK(first.serial == committed_serial(s.ctl, "www.example.test"));

    renewal_storm(s.ctl, "www.example.test", conf.port, s.ca_file, 15, "nginx");

    // It never failed to load a pair: nginx keeps its old configuration when a reload fails,
    // and says so at [emerg].
    const std::string log = test::file_or_empty(conf.error_log());
    CHECK(lines_with_any(log, {"[emerg]", "[alert]", "[crit]"}).empty());
    const auto reloads = lines_with_any(log, {"reconfiguring"});
    CHECK(std::count_if(reloads.begin(), reloads.end(), [](const std::string& line) {
              return line.ends_with(": reconfiguring");
          }) == 15); // one reload for each renewal
    CHECK_FALSE(nginx.exited());
}

TEST_CASE("servers: nginx running as www-data reads the key through allow_other when the key's group lets it, and "
          "is refused it otherwise")
{
    Setup s;
    // www-data must reach the mount point, and own nginx's prefix.
    std::filesystem::permissions(s.ctl.path(""),
                                 std::filesystem::perms::owner_all | std::filesystem::perms::group_read |
                                     std::filesystem::perms::group_exec | std::filesystem::perms::others_read |
                                     std::filesystem::perms::others_exec);
    const test::Nginx refused(s.ctl.path("nginx-refused"), s.ctl.path("mnt") / "live" / "root-only.example.test",
                              "root-only.example.test");
    const test::Nginx allowed(s.ctl.path("nginx-allowed"), s.ctl.path("mnt") / "live" / "www.example.test",
                              "www.example.test");
    for (const test::Nginx* n : {&refused, &allowed}) {
        REQUIRE(test::run({"/bin/chown", "-R", "www-data:www-data", n->dir.string()}).exit_code == 0);
    }
    s.ctl.ok({"add", "root-only.example.test", "--issuer", "ca"}); // root:root 0600
    s.ctl.ok({"add", "www.example.test", "--issuer", "ca", "--group", "www-data", "--mode", "0640", "--deploy-hook",
              allowed.reload_hook()});
    test::Daemon daemon(s.ctl.db(), s.ctl.path("mnt"), s.ctl.path("certfs.log"), 200ms, {"-o", "allow_other"});

    // The key of root's domain: nginx cannot start on it, and says why.
    test::OwnedProcess no = refused.start("www-data");
    REQUIRE(wait_until([&] { return no.exited(); }, 20s));
    const auto emerg = lines_with_any(test::file_or_empty(refused.error_log()), {"[emerg]"});
    REQUIRE(emerg.size() == 1);
    CHECK_THAT(emerg[0], Contains("root-only.example.test/privkey.pem") && Contains("Permission denied"));

    // The key group's domain: served, and after renewals reloaded onto, all as www-data.
    test::OwnedProcess nginx = allowed.start("www-data");
    const Handshake first = first_answer(nginx, allowed.port, "www.example.test", s.ca_file);
    INFO(allowed.log());
    REQUIRE_FALSE(nginx.exited());
    REQUIRE(first.verified);
    auto ps = test::run({"/bin/ps", "-o", "user=", "-p", std::to_string(nginx.pid())});
    CHECK(ps.out == "www-data\n");
    renewal_storm(s.ctl, "www.example.test", allowed.port, s.ca_file, 3, "nginx as www-data");
    CHECK(lines_with_any(test::file_or_empty(allowed.error_log()), {"[emerg]", "[alert]", "[crit]"}).empty());
}

TEST_CASE("servers: haproxy in master-worker mode reloaded by a deploy hook serves each renewal's certificate from "
          "combined.pem, and a storm of renewals never makes it fail to load one")
{
    Setup s;
    const auto dir = s.ctl.path("haproxy");
    std::filesystem::create_directories(dir);
    const int port = test::free_port();
    const auto conf = dir / "haproxy.cfg";
    const auto pidfile = dir / "haproxy.pid";
    test::write_file(conf.string(), "global\n    log stderr format short local0 notice\n"
                                    "defaults\n    mode http\n    log global\n    timeout connect 5s\n"
                                    "    timeout client 5s\n    timeout server 5s\n"
                                    "frontend tls\n    bind 127.0.0.1:" +
                                        std::to_string(port) + " ssl crt " +
                                        (s.ctl.path("mnt") / "live" / "www.example.test" / "combined.pem").string() +
                                        "\n    http-request return status 200 content-type text/plain string ok\n");
    // The reload systemd's haproxy.service makes: SIGUSR2 to the master.
    s.ctl.ok({"add", "www.example.test", "--issuer", "ca", "--deploy-hook",
              "/bin/sh -c 'kill -USR2 \"$(cat " + pidfile.string() + ")\"'"});
    test::Daemon daemon(s.ctl.db(), s.ctl.path("mnt"), s.ctl.path("certfs.log"), 200ms);

    const auto out = dir / "haproxy.out";
    test::OwnedProcess haproxy = test::spawn({k_haproxy, "-W", "-db", "-f", conf.string(), "-p", pidfile.string()},
                                             test::current_environment(), out);
    const Handshake first = first_answer(haproxy, port, "www.example.test", s.ca_file);
    INFO(test::file_or_empty(out));
    REQUIRE_FALSE(haproxy.exited());
    REQUIRE(first.verified);
    REQUIRE(std::stoi(test::file_or_empty(pidfile)) == haproxy.pid()); // the hook signals this master
    CHECK(first.serial == committed_serial(s.ctl, "www.example.test"));

    renewal_storm(s.ctl, "www.example.test", port, s.ca_file, 15, "haproxy");

    // A reload that cannot load the file says "Loading failure!" after the [ALERT] of its
    // parsing, and the old worker stays.
    const std::string log = test::file_or_empty(out);
    CHECK(lines_with_any(log, {"[ALERT]", "[EMERG]", "Loading failure"}).empty());
    CHECK(lines_with_any(log, {"Reloading HAProxy"}).size() == 15); // one reload for each renewal
    CHECK(lines_with_any(log, {"Loading success."}).size() == 16);
    CHECK_FALSE(haproxy.exited());
}
