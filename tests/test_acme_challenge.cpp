// The ACME challenge responders: the built-in http-01 server, webroot files and the dns-01 hook.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <poll.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "core/handles.hpp"
#include "renew/acme_challenge.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace certfs::renew::acme;
using namespace std::chrono_literals;
using Catch::Contains;
using certfs::test::free_port;
using certfs::test::TempDir;

namespace {

sockaddr_storage loopback(int family, int port)
{
    sockaddr_storage s{};
    if (family == AF_INET) {
        auto* a = reinterpret_cast<sockaddr_in*>(&s);
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a->sin_port = htons(static_cast<std::uint16_t>(port));
    } else {
        auto* a = reinterpret_cast<sockaddr_in6*>(&s);
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        a->sin6_port = htons(static_cast<std::uint16_t>(port));
    }
    return s;
}

socklen_t addr_len(int family) { return family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6); }

// A listening socket on 127.0.0.1:port, as another program holding the port would have.
UniqueFd occupy(int port)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    auto addr = loopback(AF_INET, port);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len(AF_INET)) == 0);
    REQUIRE(::listen(fd.get(), 1) == 0);
    return fd;
}

// Whether a server could listen on 127.0.0.1:port now (SO_REUSEADDR, as servers do).
bool port_is_free(int port)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    auto addr = loopback(AF_INET, port);
    return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len(AF_INET)) == 0 && ::listen(fd.get(), 1) == 0;
}

bool have_ipv6_loopback()
{
    UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    auto addr = loopback(AF_INET6, 0);
    return fd && ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len(AF_INET6)) == 0;
}

// A connected client socket with 5 s send/receive timeouts.
UniqueFd connect_to(int port, int family = AF_INET)
{
    UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    auto addr = loopback(family, port);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len(family)) == 0);
    return fd;
}

void send_text(int fd, const std::string& text)
{
    REQUIRE(::send(fd, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size()));
}

std::string read_to_eof(int fd)
{
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) {
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

struct Reply {
    int status = 0;
    std::string head; // the status line and headers
    std::string body;
};

Reply parse_reply(const std::string& raw)
{
    Reply r;
    auto end = raw.find("\r\n\r\n");
    r.head = raw.substr(0, end);
    r.body = end == std::string::npos ? "" : raw.substr(end + 4);
    if (raw.rfind("HTTP/1.1 ", 0) == 0) {
        r.status = std::stoi(raw.substr(9, 3));
    }
    return r;
}

Reply raw_request(int port, const std::string& request, int family = AF_INET)
{
    UniqueFd fd = connect_to(port, family);
    send_text(fd.get(), request);
    return parse_reply(read_to_eof(fd.get()));
}

Reply get(int port, const std::string& path, const std::string& method = "GET", int family = AF_INET)
{
    return raw_request(port, method + " " + path + " HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", family);
}

// GET without Catch assertions, for other threads (Catch is not thread-safe): the raw reply,
// empty on any failure.
std::string get_quietly(int port, const std::string& path)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto addr = loopback(AF_INET, port);
    std::string request = "GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n";
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len(AF_INET)) != 0 ||
        ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) {
        return {};
    }
    return read_to_eof(fd.get());
}

std::string challenge_path(const std::string& token) { return "/.well-known/acme-challenge/" + token; }

ChallengeSpec http01(const std::string& identifier, const std::string& token)
{
    return {"http-01", identifier, token, token + ".thumbprint_0123-xyz"};
}

ChallengeSpec dns01(const std::string& identifier, const std::string& token)
{
    return {"dns-01", identifier, token, token + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"};
}

// servers: shared by the sets prepared with this config; null: each set has its own.
ResponderConfig listen_on(const std::string& address, Http01Servers* servers = nullptr)
{
    ResponderConfig config;
    config.http_listen = address;
    config.servers = servers;
    return config;
}

std::unique_ptr<ChallengeSet> prepare_ok(const ResponderConfig& config, std::vector<ChallengeSpec> specs)
{
    auto r = ChallengeSet::prepare(config, std::move(specs));
    INFO((r.ok() ? std::string() : r.status().message()));
    REQUIRE(r.ok());
    return std::move(r).value();
}

// base64url(SHA-256(text)) computed by the openssl command, independently of the code under test.
std::string openssl_txt_value(const std::string& text)
{
    auto r = test::run({"/bin/sh", "-c",
                        "printf '%s' \"$1\" | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '=\\n'",
                        "sh", text});
    REQUIRE(r.exit_code == 0);
    return r.out;
}

std::filesystem::path write_script(const TempDir& dir, const std::string& name, const std::string& body)
{
    auto path = dir / name;
    test::write_file(path, "#!/bin/sh\n" + body);
    std::filesystem::permissions(path, std::filesystem::perms(0755));
    return path;
}

// A dns hook that appends its arguments, '|'-separated, one call per line, to LOG.
std::filesystem::path logging_hook(const TempDir& dir, const std::string& extra = "")
{
    return write_script(dir, "hook.sh",
                        "printf '%s|' \"$@\" >> '" + (dir / "log").string() + "'\necho >> '" + (dir / "log").string() +
                            "'\n" + extra);
}

std::vector<std::string> log_lines(const TempDir& dir)
{
    if (!std::filesystem::exists(dir / "log")) {
        return {};
    }
    std::vector<std::string> lines;
    std::string text = test::read_file(dir / "log");
    std::size_t pos = 0;
    for (auto end = text.find('\n'); end != std::string::npos; end = text.find('\n', pos)) {
        lines.push_back(text.substr(pos, end - pos));
        pos = end + 1;
    }
    return lines;
}

} // namespace

TEST_CASE("the built-in http-01 server serves key authorizations and 404 for anything else")
{
    const int port = free_port();
    auto set = prepare_ok(listen_on("127.0.0.1:" + std::to_string(port)),
                          {http01("www.example.com", "tok-A_1"), http01("127.0.0.1", "tokB")});

    auto r = get(port, challenge_path("tok-A_1"));
    CHECK(r.status == 200);
    CHECK_THAT(r.head, Contains("\r\nContent-Type: text/plain\r\n"));
    CHECK(r.body == "tok-A_1.thumbprint_0123-xyz");
    CHECK(get(port, challenge_path("tokB")).body == "tokB.thumbprint_0123-xyz");

    auto head = get(port, challenge_path("tokB"), "HEAD");
    CHECK(head.status == 200);
    CHECK_THAT(head.head, Contains("Content-Length: 24"));
    CHECK(head.body.empty());

    // An absolute-form target names the same resource.
    CHECK(get(port, "http://www.example.com" + challenge_path("tokB")).status == 200);

    CHECK(get(port, challenge_path("unknown")).status == 404);
    CHECK(get(port, challenge_path("unknown"), "HEAD").status == 404);
    CHECK(get(port, challenge_path("")).status == 404);
    CHECK(get(port, challenge_path("tokB/")).status == 404);
    CHECK(get(port, challenge_path("../tokB")).status == 404);
    CHECK(get(port, "/").status == 404);
    CHECK(get(port, "/tokB").status == 404);
    CHECK(get(port, challenge_path("tokB"), "POST").status == 405);
}

TEST_CASE("challenge sets on one address share the server and the last one stops it")
{
    const int port = free_port();
    Http01Servers servers;
    const auto config = listen_on("127.0.0.1:" + std::to_string(port), &servers);
    auto first = prepare_ok(config, {http01("a.example.com", "first")});
    auto second = prepare_ok(config, {http01("b.example.com", "second")});
    CHECK(get(port, challenge_path("first")).status == 200);
    CHECK(get(port, challenge_path("second")).status == 200);
    CHECK_FALSE(port_is_free(port));

    second.reset();
    CHECK(get(port, challenge_path("first")).status == 200);
    CHECK(get(port, challenge_path("second")).status == 404);

    first.reset();
    CHECK(port_is_free(port));

    // And it starts again for the next one.
    auto third = prepare_ok(config, {http01("c.example.com", "third")});
    CHECK(get(port, challenge_path("third")).status == 200);
}

TEST_CASE("the same token in two sets stays served until both are gone")
{
    const int port = free_port();
    Http01Servers servers;
    const auto config = listen_on("127.0.0.1:" + std::to_string(port), &servers);
    auto first = prepare_ok(config, {http01("a.example.com", "shared")});
    auto second = prepare_ok(config, {http01("a.example.com", "shared")});
    first.reset();
    CHECK(get(port, challenge_path("shared")).status == 200);

    ChallengeSpec other = http01("a.example.com", "shared");
    other.key_authorization = "shared.anotherthumbprint";
    test::require_error(ChallengeSet::prepare(config, {other}), Code::conflict, "http-01 token shared");
    CHECK(get(port, challenge_path("shared")).body == "shared.thumbprint_0123-xyz");
}

TEST_CASE("a port in use is Unavailable with the address as configured and the reason")
{
    const int port = free_port();
    UniqueFd holder = occupy(port);
    const std::string address = "127.0.0.1:" + std::to_string(port);
    auto r = ChallengeSet::prepare(listen_on(address), {http01("www.example.com", "tok")});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::unavailable);
    CHECK(r.status().message() == "cannot listen on " + address + " for http-01 challenges: Address already in use");
}

TEST_CASE("unparsable listen addresses are Invalid and name the address")
{
    for (std::string address : {"localhost:80", "127.0.0.1", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:0",
                                "127.0.0.1:http", "::1:80", "[::1:80", "[nonsense]:80", "1.2.3:80", ""}) {
        INFO(address);
        test::require_error(ChallengeSet::prepare(listen_on(address), {http01("www.example.com", "tok")}),
                            Code::invalid, "invalid http-01 listen address '" + address + "'");
    }
}

TEST_CASE("a :PORT listen address answers on IPv4 and IPv6")
{
    const int port = free_port();
    auto set = prepare_ok(listen_on(":" + std::to_string(port)), {http01("www.example.com", "dual")});
    CHECK(get(port, challenge_path("dual"), "GET", AF_INET).status == 200);
    if (have_ipv6_loopback()) {
        CHECK(get(port, challenge_path("dual"), "GET", AF_INET6).status == 200);
    }
    if (have_ipv6_loopback()) {
        const int port6 = free_port();
        auto set6 = prepare_ok(listen_on("[::1]:" + std::to_string(port6)), {http01("www.example.com", "six")});
        CHECK(get(port6, challenge_path("six"), "GET", AF_INET6).status == 200);
    }
}

TEST_CASE("garbage and oversized requests are refused and the server keeps serving")
{
    const int port = free_port();
    auto set = prepare_ok(listen_on("127.0.0.1:" + std::to_string(port)), {http01("www.example.com", "good")});

    CHECK(raw_request(port, std::string("\x16\x03\x01\x00\xff garbage\r\n\r\n", 18)).status == 400);
    CHECK(raw_request(port, "GET\r\n\r\n").status == 400);
    CHECK(raw_request(port, "GET /x HTTP/1.1 extra\r\n\r\n").status == 400);
    CHECK(raw_request(port, "GET /x SPDY/3\r\n\r\n").status == 400);
    // Headers past 8 KiB, with or without an end.
    CHECK(raw_request(port, "GET " + challenge_path("good") + " HTTP/1.1\r\nX: " + std::string(9000, 'a')).status ==
          431);
    CHECK(raw_request(port, "GET " + challenge_path("good") + " HTTP/1.1\r\nX: " + std::string(8200, 'a') + "\r\n\r\n")
              .status == 431);
    {
        // A client that gives up half-way gets nothing, and the server nothing from it.
        UniqueFd fd = connect_to(port);
        send_text(fd.get(), "GET /.well-known/acme");
        ::shutdown(fd.get(), SHUT_WR);
        CHECK(read_to_eof(fd.get()).empty());
    }
    {
        UniqueFd fd = connect_to(port);
    } // connects and closes at once

    CHECK(get(port, challenge_path("good")).status == 200);
}

TEST_CASE("silent clients do not hold up others or stopping")
{
    const int port = free_port();
    auto set = prepare_ok(listen_on("127.0.0.1:" + std::to_string(port)), {http01("www.example.com", "busy")});
    std::vector<UniqueFd> silent;
    for (int i = 0; i < 5; ++i) {
        silent.push_back(connect_to(port));
    }
    UniqueFd slow = connect_to(port);
    send_text(slow.get(), "GET " + challenge_path("busy"));

    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 5; ++i) {
        CHECK(get(port, challenge_path("busy")).status == 200);
    }
    CHECK(std::chrono::steady_clock::now() - start < 2s);

    // The slow client finishes its request later and is still answered.
    send_text(slow.get(), " HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(parse_reply(read_to_eof(slow.get())).status == 200);

    start = std::chrono::steady_clock::now();
    set.reset();
    CHECK(std::chrono::steady_clock::now() - start < 1s);
    CHECK(read_to_eof(silent.front().get()).empty()); // closed by the server
    CHECK(port_is_free(port));
}

TEST_CASE("silent clients are dropped after the read timeout")
{
    const int port = free_port();
    auto set = prepare_ok(listen_on("127.0.0.1:" + std::to_string(port)), {http01("www.example.com", "t")});
    UniqueFd fd = connect_to(port); // 5 s receive timeout, the server's is shorter
    timeval tv{15, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto start = std::chrono::steady_clock::now();
    char c;
    CHECK(::recv(fd.get(), &c, 1, 0) == 0);
    CHECK(std::chrono::steady_clock::now() - start < 10s);
}

namespace {

// A connection from the loopback address `source` ("127.0.0.2") to 127.0.0.1:port, without
// Catch (for other threads); an invalid fd on failure. Closing it resets it (SO_LINGER 0), so
// that thousands of them leave no TIME_WAIT on ports other tests may pick.
UniqueFd connect_from(const char* source, int port)
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in from{};
    from.sin_family = AF_INET;
    ::inet_pton(AF_INET, source, &from.sin_addr);
    auto to = loopback(AF_INET, port);
    timeval tv{5, 0};
    linger reset{1, 0};
    if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
        ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset) != 0 ||
        ::bind(fd.get(), reinterpret_cast<sockaddr*>(&from), sizeof from) != 0 ||
        ::connect(fd.get(), reinterpret_cast<sockaddr*>(&to), addr_len(AF_INET)) != 0) {
        return UniqueFd();
    }
    return fd;
}

// This process's thread count and RSS in kB (/proc/self/status).
std::pair<long, long> threads_and_rss()
{
    std::ifstream in("/proc/self/status");
    long threads = -1;
    long rss = -1;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("Threads:", 0) == 0) {
            threads = std::stol(line.substr(8));
        } else if (line.rfind("VmRSS:", 0) == 0) {
            rss = std::stol(line.substr(6));
        }
    }
    return {threads, rss};
}

} // namespace

TEST_CASE("a slow-loris and a flood from loopback hold their own share of the http-01 server: the CA is answered, "
          "threads and memory stay bounded")
{
    const int port = free_port();
    const std::string token = "attacked";
    auto set = prepare_ok(listen_on("127.0.0.1:" + std::to_string(port)), {http01("www.example.com", token)});
    const std::string expected = token + ".thumbprint_0123-xyz";
    const auto [threads_before, rss_before] = threads_and_rss();
    const auto until = std::chrono::steady_clock::now() + 8s; // past the 5 s read timeout
    std::atomic<bool> stop{false};

    // The slow-loris, from 127.0.0.2: up to 300 connections at once, each sending its request a
    // byte a second, reopened when the server closes them (up to 20 every 20 ms).
    struct Loris {
        long opened = 0;
        long closed_at_once = 0; // by the server within 1 s: refused
        long closed_later = 0;   // by the server after that: the read timeout
        long failed_connects = 0;
    } loris;
    std::thread loris_thread([&] {
        struct Conn {
            UniqueFd fd;
            std::chrono::steady_clock::time_point opened;
        };
        std::vector<Conn> conns;
        auto last_drip = std::chrono::steady_clock::now();
        while (!stop) {
            for (int fresh = 0; fresh < 20 && conns.size() < 300; ++fresh) {
                UniqueFd fd = connect_from("127.0.0.2", port);
                if (!fd) {
                    ++loris.failed_connects;
                    break;
                }
                ::send(fd.get(), "GET /", 5, MSG_NOSIGNAL);
                conns.push_back({std::move(fd), std::chrono::steady_clock::now()});
                ++loris.opened;
            }
            std::vector<pollfd> fds;
            for (const auto& c : conns) {
                fds.push_back({c.fd.get(), POLLIN, 0});
            }
            ::poll(fds.data(), fds.size(), 20);
            std::this_thread::sleep_for(20ms); // a cycle is 20 ms at least
            const auto now = std::chrono::steady_clock::now();
            for (std::size_t i = fds.size(); i-- > 0;) {
                char c;
                if (fds[i].revents != 0 && ::recv(fds[i].fd, &c, 1, MSG_DONTWAIT) <= 0) {
                    (now - conns[i].opened < 1s ? loris.closed_at_once : loris.closed_later) += 1;
                    conns.erase(conns.begin() + static_cast<std::ptrdiff_t>(i));
                }
            }
            if (now - last_drip >= 1s) {
                for (const auto& c : conns) {
                    ::send(c.fd.get(), "a", 1, MSG_NOSIGNAL);
                }
                last_drip = now;
            }
        }
    });
    // The flood, from 127.0.0.4: connect and close, a thousand times a second.
    std::atomic<long> flooded{0};
    std::thread flood_thread([&] {
        while (!stop) {
            if (connect_from("127.0.0.4", port)) {
                ++flooded;
            }
            std::this_thread::sleep_for(1ms);
        }
    });
    // What the process holds meanwhile.
    std::atomic<long> max_threads{0};
    std::atomic<long> max_rss{0};
    std::thread sampler([&] {
        while (!stop) {
            const auto [t, r] = threads_and_rss();
            max_threads = std::max<long>(max_threads, t);
            max_rss = std::max<long>(max_rss, r);
            std::this_thread::sleep_for(50ms);
        }
    });

    // The CA, from 127.0.0.3: a validation every 100 ms.
    int asked = 0;
    int answered = 0;
    double slowest_ms = 0;
    std::this_thread::sleep_for(500ms); // the attack under way first
    while (std::chrono::steady_clock::now() < until) {
        const auto t0 = std::chrono::steady_clock::now();
        std::string raw;
        if (UniqueFd fd = connect_from("127.0.0.3", port)) {
            const std::string request = "GET " + challenge_path(token) + " HTTP/1.1\r\nHost: www.example.com\r\n\r\n";
            ::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL);
            raw = read_to_eof(fd.get());
        }
        ++asked;
        const Reply r = parse_reply(raw);
        if (r.status == 200 && r.body == expected) {
            ++answered;
        }
        slowest_ms = std::max(slowest_ms,
                              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        std::this_thread::sleep_for(100ms);
    }
    stop = true;
    loris_thread.join();
    flood_thread.join();
    sampler.join();

    std::printf("http-01 under attack for 8 s: slow-loris from 127.0.0.2 opened %ld connections (%ld closed at once, "
                "%ld dropped at the read timeout); flood from 127.0.0.4 opened %ld; the CA from 127.0.0.3 got %d of "
                "%d answers (slowest %.0f ms); threads at most %ld (%ld before), RSS at most %ld kB (%ld kB before)\n",
                loris.opened, loris.closed_at_once, loris.closed_later, flooded.load(), answered, asked, slowest_ms,
                max_threads.load(), threads_before, max_rss.load(), rss_before);
    CHECK(asked >= 30);
    CHECK(answered == asked);
    // Each source holds 16 connections at most: the loris was refused the rest, and dropped at
    // the read timeout; the server's threads are the two attackers' shares and the CA's.
    CHECK(loris.closed_at_once > 1000);
    CHECK(loris.closed_later >= 16);
    CHECK(flooded > 1000);
    // The test's 3 threads and at most 16 for each of the three sources: far below the 128 the
    // loris alone would take without the limit per source.
    CHECK(max_threads <= threads_before + 3 + 3 * 16);
    if (!test::k_sanitized) { // ASan's quarantine keeps what the connections freed
        CHECK(max_rss - rss_before < 16 * 1024);
    }
    // And the server still answers, and stops at once.
    CHECK(get(port, challenge_path(token)).status == 200);
}

TEST_CASE("many threads preparing and releasing sets on one address at once")
{
    const int port = free_port();
    Http01Servers servers;
    const auto config = listen_on("127.0.0.1:" + std::to_string(port), &servers);
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 10; ++i) {
                std::string token = "t" + std::to_string(t) + "_" + std::to_string(i);
                auto r = ChallengeSet::prepare(config, {http01("www.example.com", token)});
                if (!r.ok()) {
                    ++failures;
                    continue;
                }
                std::string reply = get_quietly(port, "/.well-known/acme-challenge/" + token);
                if (reply.rfind("HTTP/1.1 200 OK\r\n", 0) != 0 ||
                    !reply.ends_with("\r\n\r\n" + token + ".thumbprint_0123-xyz")) {
                    ++failures;
                }
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(failures == 0);
    CHECK(port_is_free(port));
}

TEST_CASE("webroot challenge files are written readable and removed afterwards")
{
    TempDir dir;
    ResponderConfig config;
    config.webroot = dir.path().string();
    // The webroot is used instead of the built-in server, so a port in use does not matter.
    const int port = free_port();
    UniqueFd holder = occupy(port);
    config.http_listen = "127.0.0.1:" + std::to_string(port);
    const auto challenge_dir = dir / ".well-known/acme-challenge";

    mode_t old_umask = ::umask(077);
    auto r = ChallengeSet::prepare(config, {http01("www.example.com", "web-1"), http01("example.com", "web_2")});
    ::umask(old_umask);
    INFO((r.ok() ? std::string() : r.status().message()));
    REQUIRE(r.ok());

    CHECK(test::read_file(challenge_dir / "web-1") == "web-1.thumbprint_0123-xyz");
    CHECK(test::read_file(challenge_dir / "web_2") == "web_2.thumbprint_0123-xyz");
    auto mode = [](const std::filesystem::path& p) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        return st.st_mode & 07777;
    };
    CHECK(mode(dir / ".well-known") == 0755);
    CHECK(mode(challenge_dir) == 0755);
    CHECK(mode(challenge_dir / "web-1") == 0644);
    CHECK(std::distance(std::filesystem::directory_iterator(challenge_dir), {}) == 2); // no temp files

    r.value().reset();
    CHECK(std::filesystem::is_directory(challenge_dir));
    CHECK(std::filesystem::is_empty(challenge_dir));

    // With the directories already there.
    auto again = prepare_ok(config, {http01("www.example.com", "web-3")});
    CHECK(test::read_file(challenge_dir / "web-3") == "web-3.thumbprint_0123-xyz");
    again.reset();
    CHECK_FALSE(std::filesystem::exists(challenge_dir / "web-3"));
}

TEST_CASE("a webroot that does not exist is Invalid")
{
    TempDir dir;
    ResponderConfig config;
    config.webroot = (dir / "missing").string();
    auto r = ChallengeSet::prepare(config, {http01("www.example.com", "tok")});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::invalid);
    CHECK(r.status().message() == "webroot " + config.webroot + " does not exist");
    CHECK_FALSE(std::filesystem::exists(dir / "missing"));
}

TEST_CASE("the dns-01 TXT value is base64url of the key authorization's SHA-256")
{
    // The constant was computed with: printf '%s' KA | openssl dgst -sha256 -binary | base64 | tr '+/' '-_' | tr -d '='
    CHECK(dns01_txt_value("evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI") ==
          "lCM7cZyQXcVHK2nnW3jjAhNT3Fvm18UN-kWZZknKoYM");
    CHECK(dns01_record_name("www.example.com") == "_acme-challenge.www.example.com.");
    CHECK(dns01_record_name("*.example.com") == "_acme-challenge.example.com.");
    CHECK(dns01_record_name("example.com.") == "_acme-challenge.example.com.");
}

TEST_CASE("the dns-01 hook sets each record in order and clears them afterwards")
{
    TempDir dir;
    ResponderConfig config;
    config.dns_hook = logging_hook(dir).string() + " --zone 'my zone'";
    auto www = dns01("www.example.com", "tokWWW");
    auto wildcard = dns01("example.com", "tokWild");
    const std::string www_value = openssl_txt_value(www.key_authorization);
    const std::string wild_value = openssl_txt_value(wildcard.key_authorization);
    REQUIRE(www_value.size() == 43);

    auto set = prepare_ok(config, {www, wildcard});
    CHECK(log_lines(dir) == std::vector<std::string>{
                                "--zone|my zone|set|_acme-challenge.www.example.com.|" + www_value + "|",
                                "--zone|my zone|set|_acme-challenge.example.com.|" + wild_value + "|",
                            });
    set.reset();
    CHECK(log_lines(dir) == std::vector<std::string>{
                                "--zone|my zone|set|_acme-challenge.www.example.com.|" + www_value + "|",
                                "--zone|my zone|set|_acme-challenge.example.com.|" + wild_value + "|",
                                "--zone|my zone|clear|_acme-challenge.www.example.com.|" + www_value + "|",
                                "--zone|my zone|clear|_acme-challenge.example.com.|" + wild_value + "|",
                            });
}

TEST_CASE("http-01 and dns-01 in one order")
{
    TempDir dir;
    const int port = free_port();
    ResponderConfig config = listen_on("127.0.0.1:" + std::to_string(port));
    config.dns_hook = logging_hook(dir).string();
    auto set = prepare_ok(config, {dns01("*.example.com", "d1"), http01("www.example.com", "h1")});
    CHECK(get(port, challenge_path("h1")).status == 200);
    CHECK(log_lines(dir).size() == 1);
    set.reset();
    CHECK(log_lines(dir).size() == 2);
    CHECK(port_is_free(port));
}

TEST_CASE("a failing dns-01 hook fails prepare with one line and clears what was set")
{
    TempDir dir;
    ResponderConfig config;
    config.dns_hook = logging_hook(dir, "if [ \"$1 $2\" = 'set _acme-challenge.bad.example.com.' ]; then\n"
                                        "  echo 'some progress on stdout'\n"
                                        "  printf '\\nzone bad.example.com not found\\nsecond line\\n' >&2\n"
                                        "  exit 3\n"
                                        "fi\n")
                          .string();
    auto good = dns01("good.example.com", "tokGood");
    auto r = ChallengeSet::prepare(config, {good, dns01("bad.example.com", "tokBad"), dns01("late.example.com", "t3")});
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == Code::io_error);
    CHECK(r.status().message() == "dns-01 hook " + (dir / "hook.sh").string() +
                                      " failed to set _acme-challenge.bad.example.com.: exit status 3: "
                                      "zone bad.example.com not found");

    const std::string good_value = openssl_txt_value(good.key_authorization);
    auto lines = log_lines(dir);
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] == "set|_acme-challenge.good.example.com.|" + good_value + "|");
    CHECK_THAT(lines[1], Catch::StartsWith("set|_acme-challenge.bad.example.com.|"));
    CHECK(lines[2] == "clear|_acme-challenge.good.example.com.|" + good_value + "|");
}

TEST_CASE("a dns-01 hook that is missing or too slow fails prepare")
{
    TempDir dir;
    ResponderConfig config;
    config.dns_hook = (dir / "no-such-hook").string();
    test::require_error(ChallengeSet::prepare(config, {dns01("www.example.com", "tok")}), Code::io_error,
                        "failed to set _acme-challenge.www.example.com.: cannot run " + config.dns_hook);

    config.dns_hook = write_script(dir, "slow.sh", "exec sleep 30\n").string();
    config.hook_timeout = 300ms;
    auto start = std::chrono::steady_clock::now();
    test::require_error(ChallengeSet::prepare(config, {dns01("www.example.com", "tok")}), Code::io_error,
                        "failed to set _acme-challenge.www.example.com.: timed out");
    CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("a failing clear is only logged")
{
    TempDir dir;
    ResponderConfig config;
    config.dns_hook = logging_hook(dir, "[ \"$1\" = clear ] && exit 1\nexit 0\n").string();
    auto set = prepare_ok(config, {dns01("www.example.com", "tok")});
    set.reset();
    CHECK(log_lines(dir).size() == 2);
}

TEST_CASE("bad challenges are Invalid and nothing is done")
{
    TempDir dir;
    const int port = free_port();
    ResponderConfig config = listen_on("127.0.0.1:" + std::to_string(port));
    config.dns_hook = logging_hook(dir).string();
    auto check = [&](ChallengeSpec bad, const std::string& why) {
        INFO(why);
        test::require_error(
            ChallengeSet::prepare(config, {dns01("ok.example.com", "fine"), http01("ok.example.com", "fine2"), bad}),
            Code::invalid, why);
        CHECK(log_lines(dir).empty());
        CHECK(port_is_free(port));
    };
    check({"tls-alpn-01", "www.example.com", "tok", "tok.x"},
          "challenge type 'tls-alpn-01' for www.example.com is not supported");
    check(http01("www.example.com", "a/b"), "the token is not base64url");
    check(http01("www.example.com", "../etc"), "the token is not base64url");
    check(http01("www.example.com", ""), "the token is not base64url");
    check(dns01("www.example.com", "to=k"), "the token is not base64url");
    check({"http-01", "www.example.com", "tok", "other.x"}, "the key authorization is not TOKEN.THUMBPRINT");
    check({"http-01", "www.example.com", "tok", "tok.x\r\n"}, "the key authorization is not TOKEN.THUMBPRINT");
    check(dns01("127.0.0.1", "tok"), "dns-01 cannot validate an IP address");
    check(dns01("2001:db8::1", "tok"), "dns-01 cannot validate an IP address");
    check(dns01("www.example.com extra", "tok"), "not a DNS name");
    check(http01("", "tok"), "without an identifier");

    config.dns_hook.clear();
    check(dns01("www.example.com", "tok"), "no dns hook is configured");
    config.dns_hook = "'unterminated";
    test::require_error(ChallengeSet::prepare(config, {dns01("www.example.com", "tok")}), Code::invalid,
                        "unterminated");
}
