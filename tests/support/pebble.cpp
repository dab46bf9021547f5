#include "tests/support/pebble.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "core/handles.hpp"

extern char** environ;

namespace certfs::test {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr int k_start_attempts = 3;
constexpr auto k_poll_interval = 25ms;
constexpr const char* k_loopback = "127.0.0.1";

// ---- HTTP through libcurl ----

void init_curl_once()
{
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

using CurlHandle = std::unique_ptr<CURL, CDeleter<curl_easy_cleanup>>;
using CurlList = std::unique_ptr<curl_slist, CDeleter<curl_slist_free_all>>;

size_t append_body(char* data, size_t size, size_t count, void* user)
{
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

} // namespace

HttpReply http_request(const std::string& url, const std::string& ca_file, const std::string* json,
                       std::chrono::milliseconds timeout)
{
    init_curl_once();
    HttpReply reply;
    CurlHandle curl(curl_easy_init());
    if (!curl) {
        reply.error = "curl_easy_init failed";
        return reply;
    }
    char error[CURL_ERROR_SIZE] = {};
    CurlList headers;
    CURL* c = curl.get();
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count()));
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, append_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(c, CURLOPT_CAINFO, ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
    if (json != nullptr) {
        headers.reset(curl_slist_append(nullptr, "Content-Type: application/json"));
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, json->c_str());
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(json->size()));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc != CURLE_OK) {
        reply.error = error[0] != '\0' ? error : curl_easy_strerror(rc);
        return reply;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &reply.status);
    return reply;
}

namespace {

// ---- ports ----

// Binds a socket of `type` to 127.0.0.1:port (0: the kernel picks) and returns it, or an empty
// UniqueFd when the port is taken.
UniqueFd bind_loopback(int type, int port)
{
    UniqueFd fd(socket(AF_INET, type | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    }
    sockaddr_in addr = loopback_address(port);
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        return {};
    }
    return fd;
}

int bound_port(const UniqueFd& fd)
{
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        throw std::runtime_error(std::string("getsockname: ") + std::strerror(errno));
    }
    return ntohs(addr.sin_port);
}

// Free ports, all different: every socket stays bound until all are chosen. The DNS port is
// free for TCP and UDP both. Another process may still take one before pebble binds it;
// Pebble::start() notices and starts over.
Pebble::Ports pick_ports()
{
    std::vector<UniqueFd> held;
    auto tcp_port = [&] {
        held.push_back(bind_loopback(SOCK_STREAM, 0));
        if (!held.back()) {
            throw std::runtime_error(std::string("bind 127.0.0.1:0: ") + std::strerror(errno));
        }
        return bound_port(held.back());
    };
    Pebble::Ports ports;
    ports.acme = tcp_port();
    ports.management = tcp_port();
    ports.challtestsrv = tcp_port();
    ports.http01 = tcp_port();
    ports.tlsalpn01 = tcp_port();
    for (int tries = 0; tries < 50 && ports.dns == 0; ++tries) {
        int port = tcp_port();
        UniqueFd udp = bind_loopback(SOCK_DGRAM, port);
        if (udp) {
            ports.dns = port;
            held.push_back(std::move(udp));
        }
    }
    if (ports.dns == 0) {
        throw std::runtime_error("found no port free for both TCP and UDP on 127.0.0.1");
    }
    return ports;
}

// ---- processes ----

// This process's environment without any PEBBLE_* variable, plus `extra`.
std::vector<std::string> child_environment(const std::vector<std::string>& extra)
{
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        if (std::strncmp(*e, "PEBBLE_", 7) != 0) {
            env.emplace_back(*e);
        }
    }
    env.insert(env.end(), extra.begin(), extra.end());
    return env;
}

// ---- DNS ----

// A DNS query for `name` (with final dot) of type qtype, recursion desired.
std::string dns_query(uint16_t id, const std::string& name, uint16_t qtype)
{
    std::string q;
    auto put16 = [&q](uint16_t v) {
        q.push_back(static_cast<char>(v >> 8));
        q.push_back(static_cast<char>(v & 0xff));
    };
    put16(id);
    put16(0x0100); // RD
    put16(1);      // QDCOUNT
    put16(0);
    put16(0);
    put16(0);
    std::stringstream labels(name);
    std::string label;
    while (std::getline(labels, label, '.')) {
        if (!label.empty()) {
            q.push_back(static_cast<char>(label.size()));
            q += label;
        }
    }
    q.push_back('\0');
    put16(qtype);
    put16(1); // IN
    return q;
}

// True when the DNS server on 127.0.0.1:port answers a TXT query for name with an answer that
// holds `token`: proof that this port is served by the challtestsrv whose management API set it.
bool dns_txt_answers(int port, const std::string& name, const std::string& token)
{
    UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr = loopback_address(port);
    if (!fd || connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        return false;
    }
    const uint16_t id = static_cast<uint16_t>(getpid() ^ port);
    std::string query = dns_query(id, name, 16 /* TXT */);
    if (send(fd.get(), query.data(), query.size(), 0) != static_cast<ssize_t>(query.size())) {
        return false;
    }
    pollfd p{fd.get(), POLLIN, 0};
    if (poll(&p, 1, 250) != 1) {
        return false;
    }
    char buf[1500];
    ssize_t n = recv(fd.get(), buf, sizeof buf, 0); // ECONNREFUSED while nothing listens yet
    if (n < 12) {
        return false;
    }
    std::string answer(buf, static_cast<size_t>(n));
    const auto byte = [&answer](size_t i) { return static_cast<unsigned char>(answer[i]); };
    bool is_our_answer = ((byte(0) << 8) | byte(1)) == id && (byte(2) & 0x80) != 0 && (byte(3) & 0x0f) == 0;
    bool has_answers = ((byte(6) << 8) | byte(7)) > 0;
    return is_our_answer && has_answers && answer.find(token) != std::string::npos;
}

std::string fqdn(const std::string& host) { return !host.empty() && host.back() == '.' ? host : host + "."; }

std::string read_or_note(const std::filesystem::path& path)
{
    try {
        return read_file(path);
    } catch (const std::exception&) {
        return "(no output)\n";
    }
}

std::size_t log_size(const std::filesystem::path& path)
{
    std::error_code ec;
    auto size = std::filesystem::file_size(path, ec);
    return ec ? 0 : static_cast<std::size_t>(size);
}

void append_note(const std::filesystem::path& path, const std::string& note)
{
    try {
        std::string text = read_or_note(path);
        write_file(path, text + "--- certfs test harness: " + note + " ---\n");
    } catch (const std::exception&) {
        // Only a note for a human reading the log.
    }
}

} // namespace

// ---- Pebble ----

Pebble::Pebble(PebbleOptions options)
{
    auto ca = TestCa("/CN=certfs pebble TLS CA");
    auto leaf = make_leaf(ca, pki::Names{{"localhost"}, {k_loopback}});
    write_file(ca_bundle(), ca.cert_pem);
    write_file(m_dir / "tls-cert.pem", leaf.cert_pem);
    write_file(m_dir / "tls-key.pem", leaf.key_pem);

    for (int attempt = 1; attempt <= k_start_attempts; ++attempt) {
        if (start(options) == Start::ready) {
            return;
        }
        stop_children();
        append_note(m_dir / "pebble.log", "a port was taken, starting again with new ports");
        append_note(m_dir / "challtestsrv.log", "a port was taken, starting again with new ports");
    }
    FAIL("pebble did not start: a chosen port was taken " << k_start_attempts << " times\n" << log());
}

Pebble::Start Pebble::start(const PebbleOptions& options)
{
    m_ports = pick_ports();
    write_config(options);
    const std::string loop = std::string(k_loopback) + ":";

    // challtestsrv does not exit when a listener fails to bind, it only logs it; pebble exits.
    // Only this attempt's output counts: the logs keep earlier attempts.
    auto port_taken = [this, pebble_from = log_size(m_dir / "pebble.log"),
                       challtestsrv_from = log_size(m_dir / "challtestsrv.log")] {
        const std::string taken = "address already in use";
        return read_or_note(m_dir / "pebble.log").find(taken, pebble_from) != std::string::npos ||
               read_or_note(m_dir / "challtestsrv.log").find(taken, challtestsrv_from) != std::string::npos;
    };
    m_challtestsrv =
        spawn({"pebble-challtestsrv", "-management=" + loop + std::to_string(m_ports.challtestsrv),
               "-dns01=" + loop + std::to_string(m_ports.dns),
               "-http01=", "-https01=", "-tlsalpn01=", "-defaultIPv4=" + std::string(k_loopback), "-defaultIPv6="},
              child_environment({}), m_dir / "challtestsrv.log");
    m_pebble = spawn({"pebble", "-config", (m_dir / "pebble-config.json").string(), "-dnsserver",
                      loop + std::to_string(m_ports.dns)},
                     child_environment({
                         "PEBBLE_VA_NOSLEEP=1",
                         "PEBBLE_WFE_NONCEREJECT=" + std::to_string(options.nonce_reject_percent),
                         "PEBBLE_AUTHZREUSE=" + std::to_string(options.authz_reuse_percent),
                         std::string("PEBBLE_VA_ALWAYS_VALID=") + (options.always_valid ? "1" : "0"),
                         "PEBBLE_CHAIN_LENGTH=" + std::to_string(options.chain_length),
                         "PEBBLE_ALTERNATE_ROOTS=" + std::to_string(options.alternate_roots),
                     }),
                     m_dir / "pebble.log");

    // Each condition is checked until it holds; the TXT round trip shows that the DNS port
    // belongs to the challtestsrv we manage, and our own TLS CA that the HTTPS ports are ours.
    const std::string ready_host = "ready.certfs-harness.test.";
    const std::string ready_token = "certfs-ready-" + std::to_string(getpid()) + "-" + std::to_string(m_ports.dns);
    bool directory = false;
    bool roots = false;
    bool txt_set = false;
    bool dns = false;
    std::string last_error;
    const auto deadline = Clock::now() + options.start_timeout;
    while (true) {
        std::string how;
        for (auto* child : {&m_pebble, &m_challtestsrv}) {
            if (child->exited(&how)) {
                if (port_taken()) {
                    return Start::port_taken;
                }
                const char* name = child == &m_pebble ? "pebble" : "pebble-challtestsrv";
                FAIL(name << " ended during start-up (" << how << ")\n" << log());
            }
        }
        if (port_taken()) {
            return Start::port_taken;
        }
        if (!directory) {
            auto r = http_request(directory_url(), ca_bundle(), nullptr, 1s);
            directory = r.status == 200;
            last_error = "directory: " + (r.status != 0 ? std::to_string(r.status) : r.error);
        }
        if (!roots) {
            auto r = http_request(management_url() + "/roots/0", ca_bundle(), nullptr, 1s);
            roots = r.status == 200;
            if (roots) {
                m_issuing_root_pem = r.body;
            } else {
                last_error = "management /roots/0: " + (r.status != 0 ? std::to_string(r.status) : r.error);
            }
        }
        if (!txt_set) {
            txt_set = challtestsrv_post("/set-txt",
                                        nlohmann::json{{"host", ready_host}, {"value", ready_token}}.dump()) == 200;
            if (!txt_set) {
                last_error = "challtestsrv /set-txt";
            }
        }
        if (txt_set && !dns) {
            dns = dns_txt_answers(m_ports.dns, ready_host, ready_token);
            if (!dns) {
                last_error = "challtestsrv DNS TXT query";
            }
        }
        if (directory && roots && dns) {
            break;
        }
        if (Clock::now() >= deadline) {
            FAIL("pebble not ready after " << options.start_timeout.count() << " s; last waiting for " << last_error
                                           << "\n"
                                           << log());
        }
        std::this_thread::sleep_for(k_poll_interval);
    }
    clear_txt(ready_host);
    return port_taken() ? Start::port_taken : Start::ready;
}

void Pebble::write_config(const PebbleOptions& options) const
{
    const std::string loop = std::string(k_loopback) + ":";
    nlohmann::json eab = nlohmann::json::object();
    for (const auto& [kid, key] : options.eab_keys) {
        eab[kid] = key;
    }
    nlohmann::json config = {
        {"pebble",
         {
             {"listenAddress", loop + std::to_string(m_ports.acme)},
             {"managementListenAddress", loop + std::to_string(m_ports.management)},
             {"certificate", (m_dir / "tls-cert.pem").string()},
             {"privateKey", (m_dir / "tls-key.pem").string()},
             {"httpPort", m_ports.http01},
             {"tlsPort", m_ports.tlsalpn01},
             {"ocspResponderURL", ""},
             {"externalAccountBindingRequired", options.require_eab},
             {"externalAccountMACKeys", eab},
             {"domainBlocklist", options.blocked_domains},
             {"certificateValidityPeriod", options.certificate_validity_s},
         }},
    };
    write_file(m_dir / "pebble-config.json", config.dump(2) + "\n");
}

void Pebble::stop_children() noexcept
{
    m_pebble.stop();
    m_challtestsrv.stop();
}

std::string Pebble::directory_url() const
{
    return "https://" + std::string(k_loopback) + ":" + std::to_string(m_ports.acme) + "/dir";
}

std::string Pebble::management_url() const
{
    return "https://" + std::string(k_loopback) + ":" + std::to_string(m_ports.management);
}

std::string Pebble::challtestsrv_management() const
{
    return "http://" + std::string(k_loopback) + ":" + std::to_string(m_ports.challtestsrv);
}

long Pebble::challtestsrv_post(const std::string& path, const std::string& json, std::string* body) const
{
    auto r = http_request(challtestsrv_management() + path, ca_bundle(), &json, 5s);
    if (body != nullptr) {
        *body = r.status != 0 ? r.body : r.error;
    }
    return r.status;
}

long Pebble::management_get(const std::string& path, std::string* body) const
{
    auto r = http_request(management_url() + path, ca_bundle(), nullptr, 5s);
    if (body != nullptr) {
        *body = r.status != 0 ? r.body : r.error;
    }
    return r.status;
}

void Pebble::set_txt(const std::string& host, const std::string& value) const
{
    std::string body;
    long status = challtestsrv_post("/set-txt", nlohmann::json{{"host", fqdn(host)}, {"value", value}}.dump(), &body);
    INFO("challtestsrv /set-txt " << host << ": " << status << " " << body);
    REQUIRE(status == 200);
}

void Pebble::clear_txt(const std::string& host) const
{
    std::string body;
    long status = challtestsrv_post("/clear-txt", nlohmann::json{{"host", fqdn(host)}}.dump(), &body);
    INFO("challtestsrv /clear-txt " << host << ": " << status << " " << body);
    REQUIRE(status == 200);
}

std::string Pebble::log() const
{
    return "--- pebble output ---\n" + read_or_note(m_dir / "pebble.log") + "--- pebble-challtestsrv output ---\n" +
           read_or_note(m_dir / "challtestsrv.log");
}

} // namespace certfs::test
