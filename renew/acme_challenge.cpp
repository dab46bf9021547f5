#include "renew/acme_challenge.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <list>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/handles.hpp"
#include "core/process.hpp"
#include "renew/acme_jws.hpp"

namespace certfs::renew::acme {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::string_view k_challenge_path = "/.well-known/acme-challenge/";
constexpr std::size_t k_max_request = 8 * 1024;
// A client gets this long to send its request headers, so a slow or silent one cannot hold a
// thread for long; pebble's VA sends its request at once.
constexpr auto k_read_timeout = std::chrono::seconds(5);
constexpr auto k_write_timeout = std::chrono::seconds(5);
// After replying, unread input is drained for this long so that closing does not reset the
// connection before the client has read the reply (an oversized request, for example).
constexpr auto k_linger = std::chrono::seconds(1);
// Connections beyond these are closed at once: in all, and from one source address. The ACME
// CA opens one per validation, from each of its vantage points; a client that opens many (a
// slow-loris, a flood) takes its own share and leaves the others' (test_acme_challenge).
constexpr std::size_t k_max_connections = 128;
constexpr std::size_t k_max_per_source = 16;
constexpr std::size_t k_max_hook_line = 300;

bool is_base64url(std::string_view s)
{
    return !s.empty() && std::all_of(s.begin(), s.end(),
                                     [](unsigned char c) { return std::isalnum(c) != 0 || c == '-' || c == '_'; });
}

bool is_ip_address(std::string_view identifier)
{
    std::string s(identifier);
    unsigned char buf[sizeof(in6_addr)];
    return ::inet_pton(AF_INET, s.c_str(), buf) == 1 || ::inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

// Letters, digits, '-', '_' and dots between labels: the name goes into a hook's argv and a
// DNS record name, so nothing else is passed on.
bool is_dns_name(std::string_view name)
{
    if (name.empty() || name.size() > 253 || name.front() == '.' || name.find("..") != std::string_view::npos) {
        return false;
    }
    return std::all_of(name.begin(), name.end(),
                       [](unsigned char c) { return std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.'; });
}

// The first non-empty line of a hook's stderr, else of its stdout, shortened.
std::string first_line(const RunResult& result)
{
    for (const std::string* text : {&result.errors, &result.output}) {
        std::size_t pos = 0;
        while (pos < text->size()) {
            auto end = text->find('\n', pos);
            std::string line = text->substr(pos, end == std::string::npos ? std::string::npos : end - pos);
            while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
                line.pop_back();
            }
            if (!line.empty()) {
                if (line.size() > k_max_hook_line) {
                    line.resize(k_max_hook_line);
                    line += "...";
                }
                return line;
            }
            if (end == std::string::npos) {
                break;
            }
            pos = end + 1;
        }
    }
    return {};
}

// ---------------------------------------------------------------------------------------------
// Listen addresses

struct ListenAddress {
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
    bool dual_stack = false; // ":PORT": IPv6 any with IPv4 mapped, or IPv4 any without IPv6
    std::string key;         // the same socket address spelled one way, for the registry
};

Result<ListenAddress> parse_listen(const std::string& text)
{
    auto invalid = [&](const std::string& why) {
        return Status::Invalid("invalid http-01 listen address '" + text + "': " + why);
    };
    auto colon = text.rfind(':');
    if (colon == std::string::npos) {
        return invalid("expected ADDR:PORT, [ADDR]:PORT or :PORT");
    }
    std::string host = text.substr(0, colon);
    std::string port_text = text.substr(colon + 1);
    if (port_text.empty() || port_text.size() > 5 ||
        !std::all_of(port_text.begin(), port_text.end(), [](unsigned char c) { return std::isdigit(c) != 0; })) {
        return invalid("the port must be a number");
    }
    int port = std::stoi(port_text);
    if (port < 1 || port > 65535) {
        return invalid("the port must be 1-65535");
    }

    ListenAddress out;
    char spelled[INET6_ADDRSTRLEN] = {};
    if (host.empty()) {
        out.dual_stack = true;
        auto* a = reinterpret_cast<sockaddr_in6*>(&out.addr);
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_any;
        a->sin6_port = htons(static_cast<std::uint16_t>(port));
        out.addr_len = sizeof(sockaddr_in6);
        out.key = "*:" + port_text;
    } else if (host.front() == '[') {
        if (host.size() < 3 || host.back() != ']') {
            return invalid("expected [IPV6]:PORT");
        }
        auto* a = reinterpret_cast<sockaddr_in6*>(&out.addr);
        if (::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a->sin6_addr) != 1) {
            return invalid("not a numeric IPv6 address");
        }
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(static_cast<std::uint16_t>(port));
        out.addr_len = sizeof(sockaddr_in6);
        ::inet_ntop(AF_INET6, &a->sin6_addr, spelled, sizeof spelled);
        out.key = "[" + std::string(spelled) + "]:" + std::to_string(port);
    } else {
        auto* a = reinterpret_cast<sockaddr_in*>(&out.addr);
        if (host.find(':') != std::string::npos) {
            return invalid("put an IPv6 address in brackets");
        }
        if (::inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) {
            return invalid("not a numeric IPv4 address");
        }
        a->sin_family = AF_INET;
        a->sin_port = htons(static_cast<std::uint16_t>(port));
        out.addr_len = sizeof(sockaddr_in);
        ::inet_ntop(AF_INET, &a->sin_addr, spelled, sizeof spelled);
        out.key = std::string(spelled) + ":" + std::to_string(port);
    }
    return out;
}

Result<UniqueFd> open_listener(const std::string& configured, const ListenAddress& listen)
{
    auto failed = [&](int err) {
        // Unavailable whatever the error: another run may find the port free.
        const Status why = errno_status("cannot listen on " + configured + " for http-01 challenges", err);
        return Status::Unavailable(why.message());
    };
    sockaddr_storage addr = listen.addr;
    socklen_t addr_len = listen.addr_len;
    UniqueFd fd(::socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd && listen.dual_stack && (errno == EAFNOSUPPORT || errno == EPROTONOSUPPORT)) {
        // No IPv6 on this host: every IPv4 address is the best ":PORT" can mean.
        auto port = reinterpret_cast<const sockaddr_in6*>(&listen.addr)->sin6_port;
        addr = {};
        auto* a = reinterpret_cast<sockaddr_in*>(&addr);
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_ANY);
        a->sin_port = port;
        addr_len = sizeof(sockaddr_in);
        fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    }
    if (!fd) {
        return failed(errno);
    }
    int one = 1;
    int zero = 0;
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
        return failed(errno);
    }
    if (addr.ss_family == AF_INET6 &&
        ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, listen.dual_stack ? &zero : &one, sizeof one) != 0) {
        return failed(errno);
    }
    if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), addr_len) != 0 ||
        ::listen(fd.get(), SOMAXCONN) != 0) {
        return failed(errno);
    }
    return fd;
}

// ---------------------------------------------------------------------------------------------
// The built-in http-01 server: one thread accepts, one short-lived thread per connection
// answers one request and closes. Stopping writes to a pipe every thread polls (and nobody
// reads), so each wakes at once.

struct Reply {
    int status = 0;
    std::string_view reason;
    std::string body;
};

class HttpServer {
public:
    static Result<std::unique_ptr<HttpServer>> start(const std::string& configured, const ListenAddress& listen);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Conflict when the token is already served with another key authorization.
    Status add_token(const std::string& token, const std::string& key_authorization);
    void remove_token(const std::string& token);

private:
    struct Connection {
        UniqueFd fd;
        std::string source; // the peer's source (source_of)
        std::thread thread;
        std::atomic<bool> done{false};
    };
    struct Entry {
        std::string key_authorization;
        int users = 0;
    };

    HttpServer(UniqueFd listener, UniqueFd wake_read, UniqueFd wake_write)
        : m_listener(std::move(listener)), m_wake_read(std::move(wake_read)), m_wake_write(std::move(wake_write))
    {
    }

    void accept_loop() noexcept;
    void serve(int fd) noexcept;
    Reply answer(std::string_view request) const;
    std::optional<std::string> lookup(const std::string& token) const;
    // Waits for `events` on fd until the deadline. False on timeout, error or stop.
    bool wait(int fd, short events, SteadyClock::time_point deadline) const;
    void send_all(int fd, std::string_view data, SteadyClock::time_point deadline) const;

    UniqueFd m_listener;
    UniqueFd m_wake_read;
    UniqueFd m_wake_write;
    std::thread m_acceptor;

    mutable std::mutex m_mutex;
    std::map<std::string, Entry> m_tokens; // guarded by m_mutex
};

Result<std::unique_ptr<HttpServer>> HttpServer::start(const std::string& configured, const ListenAddress& listen)
{
    ASSIGN_OR_RETURN(UniqueFd listener, open_listener(configured, listen));
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        return errno_status("pipe");
    }
    std::unique_ptr<HttpServer> server(
        new HttpServer(std::move(listener), UniqueFd(pipe_fds[0]), UniqueFd(pipe_fds[1])));
    try {
        server->m_acceptor = std::thread([s = server.get()] { s->accept_loop(); });
    } catch (const std::exception& e) {
        return Status::IoError(std::string("cannot start the http-01 server: ") + e.what());
    }
    return server;
}

HttpServer::~HttpServer()
{
    if (m_acceptor.joinable()) {
        char byte = 0;
        while (::write(m_wake_write.get(), &byte, 1) < 0 && errno == EINTR) {
        }
        m_acceptor.join();
    }
}

Status HttpServer::add_token(const std::string& token, const std::string& key_authorization)
{
    std::lock_guard lock(m_mutex);
    auto& entry = m_tokens[token];
    if (entry.users > 0 && entry.key_authorization != key_authorization) {
        return Status::Conflict("http-01 token " + token + " is already served with another key authorization");
    }
    entry.key_authorization = key_authorization;
    ++entry.users;
    return Status::Ok();
}

void HttpServer::remove_token(const std::string& token)
{
    std::lock_guard lock(m_mutex);
    auto it = m_tokens.find(token);
    if (it != m_tokens.end() && --it->second.users <= 0) {
        m_tokens.erase(it);
    }
}

std::optional<std::string> HttpServer::lookup(const std::string& token) const
{
    std::lock_guard lock(m_mutex);
    auto it = m_tokens.find(token);
    if (it == m_tokens.end()) {
        return std::nullopt;
    }
    return it->second.key_authorization;
}

bool HttpServer::wait(int fd, short events, SteadyClock::time_point deadline) const
{
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
        if (left <= 0) {
            return false;
        }
        pollfd fds[2] = {{fd, events, 0}, {m_wake_read.get(), POLLIN, 0}};
        int ready = ::poll(fds, 2, static_cast<int>(std::min<long long>(left, 60'000)));
        if (ready < 0 && errno != EINTR) {
            return false;
        }
        if (fds[1].revents != 0) {
            return false; // stopping
        }
        if (ready > 0 && fds[0].revents != 0) {
            return true; // readable, writable, or an error that the next call reports
        }
    }
}

void HttpServer::send_all(int fd, std::string_view data, SteadyClock::time_point deadline) const
{
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN && wait(fd, POLLOUT, deadline)) {
            continue;
        } else {
            return;
        }
    }
}

Reply HttpServer::answer(std::string_view request) const
{
    const Http01Request parsed = parse_http01_request(request);
    switch (parsed.status) {
    case 200:
        if (auto key_authorization = lookup(parsed.token)) {
            return {200, "OK", *key_authorization};
        }
        break;
    case 400:
        return {400, "Bad Request", "bad request\n"};
    case 405:
        return {405, "Method Not Allowed", "method not allowed\n"};
    default:
        break;
    }
    return {404, "Not Found", "not found\n"};
}

void HttpServer::serve(int fd) noexcept
{
    try {
        auto deadline = SteadyClock::now() + k_read_timeout;
        std::string request;
        std::optional<Reply> reply;
        while (!reply) {
            auto end = request.find("\r\n\r\n");
            if (end == std::string::npos) {
                end = request.find("\n\n");
            }
            if (end != std::string::npos && end < k_max_request) {
                reply = answer(std::string_view(request).substr(0, end));
                break;
            }
            if (request.size() >= k_max_request) {
                reply = Reply{431, "Request Header Fields Too Large", "request too large\n"};
                break;
            }
            if (!wait(fd, POLLIN, deadline)) {
                return; // silent, slow, or stopping: just close
            }
            char buf[4096];
            ssize_t n = ::recv(fd, buf, std::min(sizeof buf, k_max_request + 4 - request.size()), 0);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                continue;
            }
            if (n <= 0) {
                return;
            }
            request.append(buf, static_cast<std::size_t>(n));
        }
        bool head = request.rfind("HEAD ", 0) == 0;
        std::string out = "HTTP/1.1 " + std::to_string(reply->status) + " " + std::string(reply->reason) +
                          "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(reply->body.size()) +
                          "\r\nConnection: close\r\n\r\n";
        if (!head) {
            out += reply->body;
        }
        send_all(fd, out, SteadyClock::now() + k_write_timeout);
        spdlog::debug("http-01 server: {} -> {}", request.substr(0, request.find_first_of("\r\n")).substr(0, 200),
                      reply->status);

        ::shutdown(fd, SHUT_WR);
        auto linger_until = SteadyClock::now() + k_linger;
        char sink[4096];
        for (std::size_t drained = 0; drained < 64 * 1024 && wait(fd, POLLIN, linger_until);) {
            ssize_t n = ::recv(fd, sink, sizeof sink, 0);
            if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            drained += static_cast<std::size_t>(n);
        }
    } catch (...) {
        // Out of memory while building a reply: drop this connection, keep serving.
    }
}

// Where a connection comes from, as bytes: the IPv4 address (mapped IPv6 included), or the /64
// of an IPv6 address (a host is given a /64 at least, and could cycle through its addresses).
std::string source_of(const sockaddr_storage& peer)
{
    if (peer.ss_family == AF_INET) {
        const auto& in = reinterpret_cast<const sockaddr_in&>(peer);
        return std::string(reinterpret_cast<const char*>(&in.sin_addr), 4);
    }
    if (peer.ss_family == AF_INET6) {
        const auto& in6 = reinterpret_cast<const sockaddr_in6&>(peer);
        const char* bytes = reinterpret_cast<const char*>(&in6.sin6_addr);
        if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
            return std::string(bytes + 12, 4);
        }
        return std::string(bytes, 8);
    }
    return {};
}

void HttpServer::accept_loop() noexcept
{
    std::list<std::unique_ptr<Connection>> connections;
    std::map<std::string, std::size_t> per_source;
    auto reap = [&](bool all) {
        for (auto it = connections.begin(); it != connections.end();) {
            if (all || (*it)->done) {
                (*it)->thread.join();
                if (auto n = per_source.find((*it)->source); n != per_source.end() && --n->second == 0) {
                    per_source.erase(n);
                }
                it = connections.erase(it);
            } else {
                ++it;
            }
        }
    };
    for (;;) {
        reap(false);
        pollfd fds[2] = {{m_listener.get(), POLLIN, 0}, {m_wake_read.get(), POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) {
            spdlog::error("{}", errno_status("http-01 server: poll").message());
            break;
        }
        if (fds[1].revents != 0) {
            break;
        }
        if (fds[0].revents == 0) {
            continue;
        }
        sockaddr_storage peer{};
        socklen_t peer_len = sizeof peer;
        UniqueFd fd(
            ::accept4(m_listener.get(), reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!fd) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Out of descriptors: back off instead of spinning on a readable listener.
                pollfd wake = {m_wake_read.get(), POLLIN, 0};
                ::poll(&wake, 1, 100);
            }
            continue;
        }
        std::string source = source_of(peer);
        if (connections.size() >= k_max_connections) {
            reap(false); // a slot may have freed since the pass began
        }
        if (connections.size() >= k_max_connections || per_source[source] >= k_max_per_source) {
            if (per_source[source] == 0) {
                per_source.erase(source);
            }
            continue; // closes it
        }
        try {
            auto conn = std::make_unique<Connection>();
            conn->fd = std::move(fd);
            conn->source = source;
            Connection* c = conn.get();
            conn->thread = std::thread([this, c] {
                serve(c->fd.get());
                c->fd.reset();
                c->done = true;
            });
            connections.push_back(std::move(conn));
            ++per_source[source];
        } catch (...) {
            // No thread for it: the connection is closed.
        }
    }
    reap(true);
}

} // namespace

Http01Request parse_http01_request(std::string_view head)
{
    auto line_end = head.find('\n');
    std::string_view line = head.substr(0, line_end);
    if (!line.empty() && line.back() == '\r') {
        line.remove_suffix(1);
    }
    auto sp1 = line.find(' ');
    auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos ||
        line.substr(sp2 + 1).rfind("HTTP/1.", 0) != 0) {
        return {400, {}};
    }
    std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    if (method != "GET" && method != "HEAD") {
        return {405, {}};
    }
    // An absolute-form target ("http://host/path") names the same path.
    if (target.rfind("http://", 0) == 0) {
        auto slash = target.find('/', 7);
        target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    if (target.rfind(k_challenge_path, 0) == 0) {
        std::string_view token = target.substr(k_challenge_path.size());
        if (is_base64url(token)) {
            return {200, std::string(token)};
        }
    }
    return {404, {}};
}

// ---------------------------------------------------------------------------------------------
// The registry of servers, by listen address. A server is started and stopped with the
// registry's mutex held, so that a ChallengeSet starting on an address waits for one being
// stopped there to have closed its socket.

struct Http01Servers::Registry {
    struct Slot {
        std::unique_ptr<HttpServer> server;
        int users = 0;
    };
    // Lock order: Registry::mutex, then HttpServer::m_mutex.
    std::mutex mutex;
    std::map<std::string, Slot> servers; // by ListenAddress::key; guarded by mutex
};

Http01Servers::Http01Servers() : m_registry(std::make_unique<Registry>()) {}

Http01Servers::~Http01Servers() = default;

// The tokens of one ChallengeSet on one built-in server, and that set's share in the server.
class HttpTokens {
public:
    static Result<std::unique_ptr<HttpTokens>> acquire(Http01Servers& servers, const std::string& configured);
    ~HttpTokens();
    HttpTokens(const HttpTokens&) = delete;
    HttpTokens& operator=(const HttpTokens&) = delete;

    Status add(const std::string& token, const std::string& key_authorization);

private:
    HttpTokens(Http01Servers::Registry& registry, std::string key, HttpServer* server)
        : m_registry(registry), m_key(std::move(key)), m_server(server)
    {
    }

    Http01Servers::Registry& m_registry;
    std::string m_key;
    HttpServer* m_server; // owned by the registry while m_key's slot has users
    std::vector<std::string> m_tokens;
};

Result<std::unique_ptr<HttpTokens>> HttpTokens::acquire(Http01Servers& servers, const std::string& configured)
{
    ASSIGN_OR_RETURN(ListenAddress listen, parse_listen(configured));
    auto& reg = *servers.m_registry;
    std::lock_guard lock(reg.mutex);
    auto it = reg.servers.find(listen.key);
    if (it == reg.servers.end()) {
        ASSIGN_OR_RETURN(auto server, HttpServer::start(configured, listen));
        it = reg.servers.emplace(listen.key, Http01Servers::Registry::Slot{std::move(server), 0}).first;
    }
    std::unique_ptr<HttpTokens> tokens(new HttpTokens(reg, listen.key, it->second.server.get()));
    ++it->second.users;
    return tokens;
}

HttpTokens::~HttpTokens()
{
    for (const auto& token : m_tokens) {
        m_server->remove_token(token);
    }
    auto& reg = m_registry;
    std::unique_ptr<HttpServer> stopping;
    std::lock_guard lock(reg.mutex);
    auto it = reg.servers.find(m_key);
    if (it != reg.servers.end() && --it->second.users == 0) {
        stopping = std::move(it->second.server);
        reg.servers.erase(it);
        stopping.reset(); // still under the lock: the socket is closed before anyone may reopen it
    }
}

Status HttpTokens::add(const std::string& token, const std::string& key_authorization)
{
    m_tokens.reserve(m_tokens.size() + 1);
    TRY(m_server->add_token(token, key_authorization));
    m_tokens.push_back(token);
    return Status::Ok();
}

std::string dns01_txt_value(std::string_view key_authorization) { return base64url(sha256(key_authorization)); }

std::string dns01_record_name(std::string_view identifier)
{
    if (identifier.rfind("*.", 0) == 0) {
        identifier.remove_prefix(2);
    }
    while (!identifier.empty() && identifier.back() == '.') {
        identifier.remove_suffix(1);
    }
    return "_acme-challenge." + std::string(identifier) + ".";
}

namespace {

Status validate(const ResponderConfig& config, const ChallengeSpec& spec)
{
    const std::string what = spec.type + " challenge for " + spec.identifier;
    if (spec.type != "http-01" && spec.type != "dns-01") {
        return Status::Invalid("challenge type '" + spec.type + "' for " + spec.identifier +
                               " is not supported (only http-01 and dns-01)");
    }
    if (spec.identifier.empty()) {
        return Status::Invalid(spec.type + " challenge without an identifier");
    }
    if (!is_base64url(spec.token)) {
        return Status::Invalid(what + ": the token is not base64url");
    }
    const std::string prefix = spec.token + ".";
    if (spec.key_authorization.rfind(prefix, 0) != 0 ||
        !is_base64url(std::string_view(spec.key_authorization).substr(prefix.size()))) {
        return Status::Invalid(what + ": the key authorization is not TOKEN.THUMBPRINT");
    }
    if (spec.type == "dns-01") {
        if (is_ip_address(spec.identifier)) {
            return Status::Invalid(what + ": dns-01 cannot validate an IP address");
        }
        std::string_view name = spec.identifier;
        if (name.rfind("*.", 0) == 0) {
            name.remove_prefix(2);
        }
        if (!name.empty() && name.back() == '.') {
            name.remove_suffix(1);
        }
        if (!is_dns_name(name)) {
            return Status::Invalid(what + ": not a DNS name");
        }
        if (config.dns_hook.empty()) {
            return Status::Invalid(what + ": no dns hook is configured");
        }
    }
    return Status::Ok();
}

} // namespace

Result<std::unique_ptr<ChallengeSet>> ChallengeSet::prepare(const ResponderConfig& config,
                                                            std::vector<ChallengeSpec> specs)
{
    bool need_http = false;
    bool need_dns = false;
    for (const auto& spec : specs) {
        TRY(validate(config, spec));
        need_http = need_http || spec.type == "http-01";
        need_dns = need_dns || spec.type == "dns-01";
    }

    std::vector<std::string> hook_argv;
    if (need_dns) {
        ASSIGN_OR_RETURN(hook_argv, split_command(config.dns_hook));
    }

    std::unique_ptr<ChallengeSet> set(new ChallengeSet());
    set->m_config = config;
    set->m_hook_argv = std::move(hook_argv);
    std::filesystem::path challenge_dir;
    if (need_http && !config.webroot.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_directory(config.webroot, ec)) {
            return Status::Invalid("webroot " + config.webroot + " does not exist");
        }
        challenge_dir = std::filesystem::path(config.webroot) / ".well-known" / "acme-challenge";
    } else if (need_http) {
        // Parsed before any hook runs, so that a bad address is Invalid with nothing done.
        Http01Servers* servers = config.servers;
        if (servers == nullptr) {
            set->m_own_servers = std::make_unique<Http01Servers>();
            servers = set->m_own_servers.get();
        }
        ASSIGN_OR_RETURN(set->m_http, HttpTokens::acquire(*servers, config.http_listen));
    }
    // On an error below, `set` going out of scope undoes what was done.
    for (const auto& spec : specs) {
        if (spec.type == "http-01" && set->m_http) {
            TRY(set->m_http->add(spec.token, spec.key_authorization));
        } else if (spec.type == "http-01") {
            TRY(set->write_webroot_file(challenge_dir, spec));
        }
    }
    for (const auto& spec : specs) {
        if (spec.type == "dns-01") {
            TRY(set->set_dns_record(spec));
        }
    }
    return set;
}

Status ChallengeSet::write_webroot_file(const std::filesystem::path& dir, const ChallengeSpec& spec)
{
    // Created 0755 whatever the umask, so that the web server can read them.
    for (const auto& d : {dir.parent_path(), dir}) {
        if (::mkdir(d.c_str(), 0755) == 0) {
            ::chmod(d.c_str(), 0755);
        } else if (errno != EEXIST) {
            return errno_status("cannot create " + d.string());
        }
    }
    const auto path = dir / spec.token;
    std::string temp = (dir / ("." + spec.token + ".XXXXXX")).string();
    UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
    if (!fd) {
        return errno_status("cannot create a file in " + dir.string());
    }
    auto fail = [&](const std::string& what) {
        int err = errno;
        ::unlink(temp.c_str());
        return errno_status("cannot " + what + " " + path.string(), err);
    };
    std::string_view data = spec.key_authorization;
    while (!data.empty()) {
        ssize_t n = ::write(fd.get(), data.data(), data.size());
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return fail("write");
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    if (::fchmod(fd.get(), 0644) != 0) {
        return fail("write");
    }
    if (::close(fd.release()) != 0) {
        return fail("write");
    }
    m_webroot_files.reserve(m_webroot_files.size() + 1);
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        return fail("create");
    }
    m_webroot_files.push_back(path);
    return Status::Ok();
}

Status ChallengeSet::set_dns_record(const ChallengeSpec& spec)
{
    DnsRecord record{dns01_record_name(spec.identifier), dns01_txt_value(spec.key_authorization)};
    const std::string failed = "dns-01 hook " + m_hook_argv.front() + " failed to set " + record.name + ": ";
    auto argv = m_hook_argv;
    argv.insert(argv.end(), {"set", record.name, record.value});
    RunOptions options;
    options.timeout = m_config.hook_timeout;
    auto result = run_program(argv, options);
    if (!result.ok()) {
        return Status::IoError(failed + result.status().message());
    }
    if (!result->succeeded()) {
        std::string line = first_line(*result);
        return Status::IoError(failed + result->describe(options.timeout) + (line.empty() ? "" : ": " + line));
    }
    spdlog::debug("dns-01 hook {} set {}", m_hook_argv.front(), record.name);
    m_dns_records.push_back(std::move(record));
    return Status::Ok();
}

ChallengeSet::~ChallengeSet()
{
    try {
        m_http.reset();
        for (const auto& path : m_webroot_files) {
            if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
                spdlog::warn("{}", errno_status("cannot remove http-01 challenge file " + path.string()).message());
            }
        }
        RunOptions options;
        options.timeout = m_config.hook_timeout;
        for (const auto& record : m_dns_records) {
            auto argv = m_hook_argv;
            argv.insert(argv.end(), {"clear", record.name, record.value});
            auto result = run_program(argv, options);
            if (!result.ok()) {
                spdlog::warn("dns-01 hook {} failed to clear {}: {}", m_hook_argv.front(), record.name,
                             result.status().message());
            } else if (!result->succeeded()) {
                std::string line = first_line(*result);
                spdlog::warn("dns-01 hook {} failed to clear {}: {}{}", m_hook_argv.front(), record.name,
                             result->describe(options.timeout), line.empty() ? "" : ": " + line);
            }
        }
    } catch (...) {
        // Out of memory while building a hook's argv: nothing more can be cleaned up.
    }
}

} // namespace certfs::renew::acme
