// A small ACME server stub for tests of what pebble 2.4 lacks (ARI renewalInfo, RFC 9773;
// certificate profiles): HTTPS on a free 127.0.0.1 port, with a TLS CA and server certificate
// of its own per instance, answering from handlers the test registers.
//
// Wire behaviour:
// - Handlers set status, headers and body; Content-Length and Connection are always the
//   stub's own (a handler's are dropped), and a 204 carries neither body nor Content-Length.
// - HTTP/1.1 with keep-alive: a connection serves requests until the client closes it, sends
//   "Connection: close", or speaks HTTP/1.0. Request bodies need Content-Length ("Expect:
//   100-continue" is honoured; chunked bodies get 501). Every answer has Content-Length, a
//   Replay-Nonce (fresh, unless the handler set one itself) and Cache-Control: no-store.
// - Bodies that are flattened JWS JSON ({"protected", "payload", "signature"}) are decoded
//   into StubRequest; signatures are not checked and nonces are not tracked.
// - A request no handler matches gets 404 with an urn:ietf:params:acme:error:malformed problem.
//   A handler that throws gets 500 with an urn:ietf:params:acme:error:serverInternal problem
//   whose detail is the exception's message.
//
// Threads: one thread accepts, one more serves each connection; handlers run on those threads,
// possibly at the same time, so they must not use Catch2 assertions (record, then check in the
// test) and must guard what they share. Every method may be called from any thread, also from
// inside a handler. The destructor shuts every connection down (a blocked read or write ends at
// once), joins all threads and closes the port before it returns; it never waits for a client.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/ssl.h>

#include "core/handles.hpp"
#include "tests/support/testutil.hpp"

namespace certfs::test {

struct StubRequest {
    std::string method;                         // "GET", "HEAD", "POST", ...
    std::string path;                           // the request target as sent, query included
    std::map<std::string, std::string> headers; // names lower-case, values trimmed; a repeated name keeps the last
    std::string body;
    // A flattened-JWS body's decoded parts; null when the body is not one. jws_payload stays
    // null for POST-as-GET (payload "") and when the payload is not JSON.
    nlohmann::json jws_protected;
    nlohmann::json jws_payload;
    int connection = 0; // which connection carried it: 1 for the first accepted, then 2, ...

    // The header's value, "" when absent; name in any case.
    std::string header(const std::string& name) const;
};

struct StubResponse {
    int status = 200;
    std::vector<std::pair<std::string, std::string>> headers; // sent as given, repeats allowed
    std::string body;

    // status with the JSON body and Content-Type application/json.
    static StubResponse json(int status, const nlohmann::json& body);
    // An RFC 7807 problem document; type without a ':' gets the ACME prefix
    // ("badNonce" -> "urn:ietf:params:acme:error:badNonce").
    static StubResponse problem(int status, const std::string& type, const std::string& detail);
};

using StubHandler = std::function<StubResponse(const StubRequest&)>;

// base64url without padding, the stub's own (it shares no code with the client it checks).
std::string stub_base64url(std::string_view bytes);

class AcmeStub {
public:
    // Makes the TLS CA and server certificate (SAN 127.0.0.1 and localhost), binds a free
    // loopback port and starts accepting. Throws std::runtime_error when any step fails.
    AcmeStub();
    ~AcmeStub();
    AcmeStub(const AcmeStub&) = delete;
    AcmeStub& operator=(const AcmeStub&) = delete;

    int port() const { return m_port; }
    std::string base_url() const;      // https://127.0.0.1:PORT
    std::string directory_url() const; // base_url() + "/dir"
    // PEM of the CA that signed the server certificate: the client's --ca-bundle.
    std::string ca_bundle() const { return (m_dir / "tls-ca.pem").string(); }

    // Adds a handler for `method` ("" for any method) and `path`. A request matches when its
    // target equals path, or starts with path followed by '/' or '?', or starts with a path
    // that itself ends in '/': "/order" matches "/order", "/order/7" and "/order?x" but not
    // "/orders". Handlers added here are tried in the order added, the first match wins; the
    // basics of install_acme_basics() are tried only after all of them, whenever installed.
    void on(const std::string& method, const std::string& path, StubHandler handler);

    // Everything received so far, in order of arrival (recorded before its handler runs).
    std::vector<StubRequest> requests() const;
    // Those whose method and target match as for on().
    std::vector<StubRequest> requests(const std::string& method, const std::string& path) const;

    // Fallback handlers for what every ACME exchange needs:
    //  - GET /dir: newNonce, newAccount, newOrder, revokeCert and keyChange under base_url()
    //    ("/nonce", "/new-account", "/new-order", "/revoke-cert", "/key-change"), with the
    //    directory extra merged in.
    //  - HEAD /nonce: 200; GET /nonce: 204 (RFC 8555 §7.2). The Replay-Nonce is added as on
    //    every response.
    //  - POST /new-account: 201, Location base_url() + "/acct/1", {"status":"valid"} plus
    //    the payload's contact when it has one.
    void install_acme_basics();
    // An RFC 7396 merge patch applied to the directory above, e.g. {"renewalInfo": url,
    // "meta": {"profiles": {...}}}; a null member removes one ({"newOrder": null}). Calls
    // replace each other.
    void set_directory_extra(const nlohmann::json& extra);
    nlohmann::json directory() const; // as GET /dir answers it now

private:
    struct Route {
        std::string method;
        std::string path;
        StubHandler handler;
    };
    struct Connection {
        UniqueFd fd;
        std::thread thread;
        std::atomic<bool> done{false};
    };
    using SslCtx = std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>>;

    void accept_loop();
    void serve(Connection& connection, int id);
    StubResponse dispatch(const StubRequest& request);
    std::string fresh_nonce();

    TempDir m_dir;
    SslCtx m_ctx;
    UniqueFd m_listener;
    UniqueFd m_wake_read; // the destructor closes m_wake_write: the accept thread wakes up
    UniqueFd m_wake_write;
    int m_port = 0;

    // Lock order: m_connections_mutex, then m_mutex; handlers run with neither held.
    mutable std::mutex m_mutex;
    std::vector<Route> m_routes;         // guarded by m_mutex
    std::vector<Route> m_basics;         // guarded by m_mutex
    nlohmann::json m_directory_extra;    // guarded by m_mutex
    std::vector<StubRequest> m_requests; // guarded by m_mutex
    std::uint64_t m_nonce_counter = 0;   // guarded by m_mutex

    std::mutex m_connections_mutex;
    std::list<Connection> m_connections; // guarded by m_connections_mutex
    bool m_stopping = false;             // guarded by m_connections_mutex

    std::thread m_acceptor; // started last in the constructor, joined first in the destructor
};

} // namespace certfs::test
