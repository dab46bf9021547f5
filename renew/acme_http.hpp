// HTTP for the ACME client, over libcurl: one easy handle per client, so that connections
// (and TLS sessions) are reused across the requests of a renewal.
//
// Thread-safety: one HttpClient per thread at a time (libcurl's rule for easy handles).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/status.hpp"

namespace certfs::renew::acme {

struct HttpResponse {
    long status = 0;
    std::multimap<std::string, std::string> headers; // names lower-cased
    std::string body;

    // The first value of a header, empty when absent.
    std::string header(const std::string& name) const;
    // Every value of a header ("link" may repeat).
    std::vector<std::string> headers_named(const std::string& name) const;
};

struct HttpOptions {
    std::string ca_bundle;                       // PEM file of trusted CAs; empty: the system's
    Duration timeout = std::chrono::seconds(30); // per request
    Duration connect_timeout = std::chrono::seconds(10);
};

class HttpClient {
public:
    explicit HttpClient(HttpOptions options);
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    // Unavailable when the server cannot be reached (naming the URL and libcurl's reason); any
    // HTTP status is a response.
    Result<HttpResponse> get(const std::string& url);
    Result<HttpResponse> head(const std::string& url);
    Result<HttpResponse> post(const std::string& url, const std::string& body, const std::string& content_type);

    const HttpOptions& options() const { return m_options; }

private:
    Result<HttpResponse> perform(const std::string& method, const std::string& url, const std::string* body,
                                 const std::string& content_type);

    HttpOptions m_options;
    void* m_curl; // CURL*
};

class HttpClientPool;

// Gives a client back to its pool (or deletes it when it has none).
struct HttpPoolReturn {
    HttpClientPool* pool = nullptr;
    void operator()(HttpClient* client) const;
};
using PooledHttpClient = std::unique_ptr<HttpClient, HttpPoolReturn>;

// HttpClients kept for reuse, per set of options: a renewal takes one and gives it back, so
// the next renewal (certfsctl renew --all, the daemon's next due domain) reuses its open
// connection and TLS session instead of connecting and loading the trust store again. One per
// RenewContext (renew/context.hpp). Thread-safe; it must outlive the clients it hands out.
class HttpClientPool {
public:
    HttpClientPool() = default;
    HttpClientPool(const HttpClientPool&) = delete;
    HttpClientPool& operator=(const HttpClientPool&) = delete;

    PooledHttpClient take(const HttpOptions& options);

private:
    friend struct HttpPoolReturn;
    void give_back(std::unique_ptr<HttpClient> client);

    std::mutex m_mutex;
    std::vector<std::unique_ptr<HttpClient>> m_idle; // guarded by m_mutex
};

// A client from `pool`, or a new one of its own when pool is null.
PooledHttpClient pooled_http_client(const HttpOptions& options, HttpClientPool* pool);

// Retry-After (RFC 9110 §10.2.3): delay-seconds or an HTTP date; nullopt when absent or unreadable.
std::optional<Duration> parse_retry_after(const std::string& value, TimePoint now);

// The URL of a Link header with rel="REL" (RFC 8288), e.g. rel="up" or rel="alternate".
std::vector<std::string> link_urls(const HttpResponse& response, const std::string& rel);

} // namespace certfs::renew::acme
