#include "tests/support/acme_stub.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <system_error>

#include <openssl/err.h>
#include <openssl/rand.h>

namespace certfs::test {

namespace {

constexpr const char* k_loopback = "127.0.0.1";
constexpr std::size_t k_max_header_bytes = 64 * 1024;
constexpr std::size_t k_max_body_bytes = 16 * 1024 * 1024;
constexpr const char* k_acme_error = "urn:ietf:params:acme:error:";

using Ssl = std::unique_ptr<SSL, CDeleter<SSL_free>>;

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

std::string trim(const std::string& s)
{
    const auto first = s.find_first_not_of(" \t");
    if (first == std::string::npos) {
        return "";
    }
    const auto last = s.find_last_not_of(" \t");
    return s.substr(first, last - first + 1);
}

std::string openssl_error(const std::string& what)
{
    std::string message = what;
    while (unsigned long e = ERR_get_error()) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        message += std::string(": ") + buf;
    }
    return message;
}

// Our own decoder rather than renew/'s: the stub checks the client, so it shares none of its code.
std::optional<std::string> base64url_decode(const std::string& text)
{
    std::string out;
    unsigned int acc = 0;
    int bits = 0;
    for (char ch : text) {
        int v;
        if (ch >= 'A' && ch <= 'Z') {
            v = ch - 'A';
        } else if (ch >= 'a' && ch <= 'z') {
            v = ch - 'a' + 26;
        } else if (ch >= '0' && ch <= '9') {
            v = ch - '0' + 52;
        } else if (ch == '-') {
            v = 62;
        } else if (ch == '_') {
            v = 63;
        } else {
            return std::nullopt; // padding is not allowed in JWS either
        }
        acc = (acc << 6) | static_cast<unsigned int>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    if (bits >= 6) {
        return std::nullopt; // a length of 4n+1 characters
    }
    return out;
}

// Fills protected and payload when body is a flattened JWS; leaves them null otherwise.
void decode_jws(StubRequest& request)
{
    const auto body = nlohmann::json::parse(request.body, nullptr, false);
    if (!body.is_object() || !body.contains("protected") || !body.contains("payload") ||
        !body["protected"].is_string() || !body["payload"].is_string()) {
        return;
    }
    if (auto header = base64url_decode(body["protected"].get<std::string>())) {
        auto parsed = nlohmann::json::parse(*header, nullptr, false);
        if (!parsed.is_discarded()) {
            request.jws_protected = std::move(parsed);
        }
    }
    const auto payload_text = body["payload"].get<std::string>();
    if (payload_text.empty()) {
        return; // POST-as-GET
    }
    if (auto payload = base64url_decode(payload_text)) {
        auto parsed = nlohmann::json::parse(*payload, nullptr, false);
        if (!parsed.is_discarded()) {
            request.jws_payload = std::move(parsed);
        }
    }
}

bool method_matches(const std::string& route_method, const std::string& method)
{
    return route_method.empty() || route_method == method;
}

bool path_matches(const std::string& route_path, const std::string& target)
{
    if (target.compare(0, route_path.size(), route_path) != 0) {
        return false;
    }
    if (target.size() == route_path.size() || (!route_path.empty() && route_path.back() == '/')) {
        return true;
    }
    const char next = target[route_path.size()];
    return next == '/' || next == '?';
}

const char* reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

bool has_header(const StubResponse& response, const std::string& name)
{
    return std::any_of(response.headers.begin(), response.headers.end(),
                       [&](const auto& h) { return lower(h.first) == name; });
}

// One TLS connection's byte stream: blocking reads and writes that report the end of the
// connection (peer closed, error, or the destructor's shutdown()) as false.
class TlsStream {
public:
    explicit TlsStream(SSL* ssl) : m_ssl(ssl) {}

    bool read_more(std::string& buffer)
    {
        char chunk[16 * 1024];
        const int n = SSL_read(m_ssl, chunk, sizeof chunk);
        if (n <= 0) {
            m_clean_end = SSL_get_error(m_ssl, n) == SSL_ERROR_ZERO_RETURN;
            return false;
        }
        buffer.append(chunk, static_cast<std::size_t>(n));
        return true;
    }

    bool write_all(const std::string& data)
    {
        std::size_t done = 0;
        while (done < data.size()) {
            const int n = SSL_write(m_ssl, data.data() + done, static_cast<int>(data.size() - done));
            if (n <= 0) {
                m_clean_end = false;
                return false;
            }
            done += static_cast<std::size_t>(n);
        }
        return true;
    }

    bool clean_end() const { return m_clean_end; }

private:
    SSL* m_ssl;
    bool m_clean_end = true;
};

std::string serialize(const StubResponse& response, const std::string& nonce, bool head, bool close)
{
    const bool no_body = response.status == 204 || response.status == 304 || response.status < 200;
    std::string out = "HTTP/1.1 " + std::to_string(response.status) + " " + reason_phrase(response.status) + "\r\n";
    for (const auto& [name, value] : response.headers) {
        const auto key = lower(name);
        if (key == "content-length" || key == "connection") {
            continue; // the stub's own, so they always tell the truth about the wire
        }
        out += name + ": " + value + "\r\n";
    }
    if (!has_header(response, "replay-nonce")) {
        out += "Replay-Nonce: " + nonce + "\r\n";
    }
    if (!has_header(response, "cache-control")) {
        out += "Cache-Control: no-store\r\n";
    }
    if (!no_body) {
        out += "Content-Length: " + std::to_string(response.body.size()) + "\r\n";
    }
    if (close) {
        out += "Connection: close\r\n";
    }
    out += "\r\n";
    if (!no_body && !head) {
        out += response.body;
    }
    return out;
}

} // namespace

std::string stub_base64url(std::string_view bytes)
{
    static constexpr char k_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    std::string out;
    unsigned int acc = 0;
    int bits = 0;
    for (unsigned char b : bytes) {
        acc = (acc << 8) | b;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(k_alphabet[(acc >> bits) & 0x3f]);
        }
    }
    if (bits > 0) {
        out.push_back(k_alphabet[(acc << (6 - bits)) & 0x3f]);
    }
    return out;
}

std::string StubRequest::header(const std::string& name) const
{
    auto it = headers.find(lower(name));
    return it != headers.end() ? it->second : "";
}

StubResponse StubResponse::json(int status, const nlohmann::json& body)
{
    StubResponse response;
    response.status = status;
    response.headers.emplace_back("Content-Type", "application/json");
    response.body = body.dump();
    return response;
}

StubResponse StubResponse::problem(int status, const std::string& type, const std::string& detail)
{
    StubResponse response;
    response.status = status;
    response.headers.emplace_back("Content-Type", "application/problem+json");
    const std::string full_type = type.find(':') == std::string::npos ? k_acme_error + type : type;
    response.body = nlohmann::json{{"type", full_type}, {"detail", detail}, {"status", status}}.dump();
    return response;
}

AcmeStub::AcmeStub()
{
    TestCa ca("/CN=certfs ACME stub TLS CA");
    auto leaf = make_leaf(ca, pki::Names{{"localhost"}, {k_loopback}});
    write_file(ca_bundle(), ca.cert_pem);
    write_file(m_dir / "tls-cert.pem", leaf.cert_pem);
    write_file(m_dir / "tls-key.pem", leaf.key_pem);

    m_ctx.reset(SSL_CTX_new(TLS_server_method()));
    if (!m_ctx || SSL_CTX_set_min_proto_version(m_ctx.get(), TLS1_2_VERSION) != 1 ||
        SSL_CTX_use_certificate_chain_file(m_ctx.get(), (m_dir / "tls-cert.pem").c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(m_ctx.get(), (m_dir / "tls-key.pem").c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(m_ctx.get()) != 1) {
        throw std::runtime_error(openssl_error("ACME stub TLS context"));
    }

    // Port 0: the kernel picks a free port and it stays ours, so there is no race to retry.
    m_listener.reset(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    // Inherited by the accepted sockets, which outlive us in FIN_WAIT or TIME_WAIT when we close
    // first: without it a later server could not bind this port, even with SO_REUSEADDR itself.
    int one = 1;
    if (!m_listener || setsockopt(m_listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(m_listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        listen(m_listener.get(), SOMAXCONN) != 0 ||
        getsockname(m_listener.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        throw std::runtime_error(std::string("ACME stub listening socket: ") + std::strerror(errno));
    }
    m_port = ntohs(addr.sin_port);

    int wake[2];
    if (pipe2(wake, O_CLOEXEC) != 0) {
        throw std::runtime_error(std::string("ACME stub pipe: ") + std::strerror(errno));
    }
    m_wake_read.reset(wake[0]);
    m_wake_write.reset(wake[1]);

    m_acceptor = std::thread([this] { accept_loop(); });
}

AcmeStub::~AcmeStub()
{
    {
        std::lock_guard lock(m_connections_mutex);
        m_stopping = true;
        for (auto& connection : m_connections) {
            // Ends a blocked SSL_accept, SSL_read or SSL_write in the connection's thread.
            shutdown(connection.fd.get(), SHUT_RDWR);
        }
    }
    m_wake_write.reset(); // POLLHUP for the accept thread
    m_acceptor.join();
    // No connection is added any more: the accept thread is gone.
    for (auto& connection : m_connections) {
        connection.thread.join();
    }
    m_connections.clear();
    m_listener.reset();
}

std::string AcmeStub::base_url() const { return "https://" + std::string(k_loopback) + ":" + std::to_string(m_port); }

std::string AcmeStub::directory_url() const { return base_url() + "/dir"; }

void AcmeStub::on(const std::string& method, const std::string& path, StubHandler handler)
{
    std::lock_guard lock(m_mutex);
    m_routes.push_back(Route{method, path, std::move(handler)});
}

std::vector<StubRequest> AcmeStub::requests() const
{
    std::lock_guard lock(m_mutex);
    return m_requests;
}

std::vector<StubRequest> AcmeStub::requests(const std::string& method, const std::string& path) const
{
    std::lock_guard lock(m_mutex);
    std::vector<StubRequest> matching;
    for (const auto& request : m_requests) {
        if (method_matches(method, request.method) && path_matches(path, request.path)) {
            matching.push_back(request);
        }
    }
    return matching;
}

void AcmeStub::set_directory_extra(const nlohmann::json& extra)
{
    std::lock_guard lock(m_mutex);
    m_directory_extra = extra;
}

nlohmann::json AcmeStub::directory() const
{
    const std::string base = base_url();
    nlohmann::json dir = {
        {"newNonce", base + "/nonce"},         {"newAccount", base + "/new-account"}, {"newOrder", base + "/new-order"},
        {"revokeCert", base + "/revoke-cert"}, {"keyChange", base + "/key-change"},
    };
    std::lock_guard lock(m_mutex);
    if (!m_directory_extra.is_null()) {
        dir.merge_patch(m_directory_extra);
    }
    return dir;
}

void AcmeStub::install_acme_basics()
{
    std::vector<Route> basics;
    basics.push_back(Route{"GET", "/dir", [this](const StubRequest&) { return StubResponse::json(200, directory()); }});
    basics.push_back(Route{"HEAD", "/nonce", [](const StubRequest&) { return StubResponse{}; }});
    basics.push_back(Route{"GET", "/nonce", [](const StubRequest&) {
                               StubResponse response;
                               response.status = 204;
                               return response;
                           }});
    basics.push_back(
        Route{"POST", "/new-account", [this](const StubRequest& request) {
                  nlohmann::json account = {{"status", "valid"}, {"orders", base_url() + "/acct/1/orders"}};
                  if (request.jws_payload.is_object() && request.jws_payload.contains("contact")) {
                      account["contact"] = request.jws_payload["contact"];
                  }
                  auto response = StubResponse::json(201, account);
                  response.headers.emplace_back("Location", base_url() + "/acct/1");
                  return response;
              }});
    std::lock_guard lock(m_mutex);
    m_basics = std::move(basics);
}

std::string AcmeStub::fresh_nonce()
{
    // Random, and a counter besides, so two nonces never collide even by chance.
    std::array<unsigned char, 24> bytes{};
    if (RAND_bytes(bytes.data(), 16) != 1) {
        ERR_clear_error();
    }
    std::uint64_t counter;
    {
        std::lock_guard lock(m_mutex);
        counter = ++m_nonce_counter;
    }
    for (int i = 0; i < 8; ++i) {
        bytes[16 + static_cast<std::size_t>(i)] = static_cast<unsigned char>(counter >> (8 * i));
    }
    return stub_base64url(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

StubResponse AcmeStub::dispatch(const StubRequest& request)
{
    StubHandler handler;
    {
        std::lock_guard lock(m_mutex);
        m_requests.push_back(request);
        for (const auto* routes : {&m_routes, &m_basics}) {
            for (const auto& route : *routes) {
                if (method_matches(route.method, request.method) && path_matches(route.path, request.path)) {
                    handler = route.handler;
                    break;
                }
            }
            if (handler) {
                break;
            }
        }
    }
    if (!handler) {
        return StubResponse::problem(404, "malformed",
                                     "ACME stub: no handler for " + request.method + " " + request.path);
    }
    try {
        return handler(request);
    } catch (const std::exception& e) {
        return StubResponse::problem(500, "serverInternal", std::string("ACME stub handler threw: ") + e.what());
    } catch (...) {
        return StubResponse::problem(500, "serverInternal", "ACME stub handler threw");
    }
}

void AcmeStub::accept_loop()
{
    int next_id = 1;
    while (true) {
        std::array<pollfd, 2> fds{{{m_listener.get(), POLLIN, 0}, {m_wake_read.get(), POLLIN, 0}}};
        if (poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            return;
        }
        if (fds[1].revents != 0) {
            return;
        }
        if ((fds[0].revents & POLLIN) == 0) {
            continue;
        }
        UniqueFd fd(accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd) {
            continue; // e.g. the client gave up before we accepted
        }
        std::lock_guard lock(m_connections_mutex);
        if (m_stopping) {
            return;
        }
        // Threads of finished connections are joined here so a long test does not pile them up.
        m_connections.remove_if([](Connection& c) {
            if (!c.done) {
                return false;
            }
            c.thread.join();
            return true;
        });
        auto& connection = m_connections.emplace_back();
        connection.fd = std::move(fd);
        const int id = next_id++;
        try {
            connection.thread = std::thread([this, &connection, id] { serve(connection, id); });
        } catch (const std::system_error&) {
            m_connections.pop_back(); // no thread to spare: the client sees the connection close
        }
    }
}

void AcmeStub::serve(Connection& connection, int id)
{
    // A client that hangs up before it reads the answer would raise SIGPIPE in SSL_write; with
    // the signal blocked in this thread the write fails with EPIPE instead, and the signal,
    // pending on this thread only, is dropped when the thread ends.
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);

    Ssl ssl(SSL_new(m_ctx.get()));
    if (ssl && SSL_set_fd(ssl.get(), connection.fd.get()) == 1 && SSL_accept(ssl.get()) == 1) {
        TlsStream stream(ssl.get());
        std::string buffer;
        bool open = true;
        while (open) {
            std::size_t header_end;
            while ((header_end = buffer.find("\r\n\r\n")) == std::string::npos) {
                if (buffer.size() > k_max_header_bytes) {
                    stream.write_all(serialize(StubResponse::problem(431, "malformed", "headers too large"),
                                               fresh_nonce(), false, true));
                    open = false;
                    break;
                }
                if (!stream.read_more(buffer)) {
                    open = false;
                    break;
                }
            }
            if (!open) {
                break;
            }

            StubRequest request;
            request.connection = id;
            std::string version;
            std::optional<StubResponse> refusal;
            {
                const auto line_end = buffer.find("\r\n");
                const std::string line = buffer.substr(0, line_end);
                const auto sp1 = line.find(' ');
                const auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
                if (sp2 == std::string::npos) {
                    refusal = StubResponse::problem(400, "malformed", "bad request line");
                } else {
                    request.method = line.substr(0, sp1);
                    request.path = line.substr(sp1 + 1, sp2 - sp1 - 1);
                    version = line.substr(sp2 + 1);
                }
                std::size_t pos = line_end + 2;
                while (pos < header_end + 2) {
                    const auto eol = buffer.find("\r\n", pos);
                    const std::string field = buffer.substr(pos, eol - pos);
                    pos = eol + 2;
                    const auto colon = field.find(':');
                    if (colon == std::string::npos) {
                        refusal = StubResponse::problem(400, "malformed", "bad header line");
                        continue;
                    }
                    request.headers[lower(trim(field.substr(0, colon)))] = trim(field.substr(colon + 1));
                }
            }
            buffer.erase(0, header_end + 4);

            bool close =
                version != "HTTP/1.1" || lower(request.header("connection")).find("close") != std::string::npos;
            std::size_t length = 0;
            if (!refusal && request.headers.count("transfer-encoding") != 0) {
                refusal =
                    StubResponse::problem(501, "malformed", "the ACME stub needs Content-Length, not chunked bodies");
            } else if (!refusal && request.headers.count("content-length") != 0) {
                const auto text = request.header("content-length");
                if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) {
                    refusal = StubResponse::problem(400, "malformed", "bad Content-Length");
                } else if ((length = std::stoul(text)) > k_max_body_bytes) {
                    refusal = StubResponse::problem(413, "malformed", "body too large");
                }
            }
            if (refusal) {
                stream.write_all(serialize(*refusal, fresh_nonce(), false, true));
                break;
            }
            if (buffer.size() < length && lower(request.header("expect")) == "100-continue" &&
                !stream.write_all("HTTP/1.1 100 Continue\r\n\r\n")) {
                break;
            }
            while (buffer.size() < length && open) {
                open = stream.read_more(buffer);
            }
            if (!open) {
                break;
            }
            request.body = buffer.substr(0, length);
            buffer.erase(0, length);
            decode_jws(request);

            const bool head = request.method == "HEAD";
            const StubResponse response = dispatch(request);
            if (!stream.write_all(serialize(response, fresh_nonce(), head, close))) {
                break;
            }
            open = !close;
        }
        if (stream.clean_end()) {
            SSL_shutdown(ssl.get()); // close_notify; the answer does not matter
        }
    }
    ERR_clear_error(); // this thread's OpenSSL error queue dies with it
    ssl.reset();
    connection.done = true;
}

} // namespace certfs::test
