#include "renew/acme_http.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <mutex>

namespace certfs::renew::acme {

namespace {

std::once_flag g_curl_init;

std::string lower(std::string s)
{
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

std::string trim(std::string s)
{
    auto notspace = [](unsigned char c) { return !std::isspace(c); };
    s.erase(s.begin(), std::find_if(s.begin(), s.end(), notspace));
    s.erase(std::find_if(s.rbegin(), s.rend(), notspace).base(), s.end());
    return s;
}

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* user)
{
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* user)
{
    auto* response = static_cast<HttpResponse*>(user);
    std::string line(data, size * count);
    if (line.starts_with("HTTP/")) {
        response->headers.clear(); // a new response (after 100 Continue, or a redirect)
    } else if (auto colon = line.find(':'); colon != std::string::npos) {
        response->headers.emplace(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
    }
    return size * count;
}

} // namespace

std::string HttpResponse::header(const std::string& name) const
{
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
}

std::vector<std::string> HttpResponse::headers_named(const std::string& name) const
{
    std::vector<std::string> out;
    auto [begin, end] = headers.equal_range(name);
    for (auto it = begin; it != end; ++it) {
        out.push_back(it->second);
    }
    return out;
}

HttpClient::HttpClient(HttpOptions options) : m_options(std::move(options))
{
    std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    m_curl = curl_easy_init();
}

HttpClient::~HttpClient()
{
    if (m_curl != nullptr) {
        curl_easy_cleanup(static_cast<CURL*>(m_curl));
    }
}

Result<HttpResponse> HttpClient::get(const std::string& url) { return perform("GET", url, nullptr, ""); }

Result<HttpResponse> HttpClient::head(const std::string& url) { return perform("HEAD", url, nullptr, ""); }

Result<HttpResponse> HttpClient::post(const std::string& url, const std::string& body, const std::string& content_type)
{
    return perform("POST", url, &body, content_type);
}

Result<HttpResponse> HttpClient::perform(const std::string& method, const std::string& url, const std::string* body,
                                         const std::string& content_type)
{
    auto* curl = static_cast<CURL*>(m_curl);
    if (curl == nullptr) {
        return Status::IoError("cannot start libcurl");
    }
    curl_easy_reset(curl); // keeps the connection cache
    HttpResponse response;
    struct curl_slist* headers = nullptr;
    if (!content_type.empty()) {
        headers = curl_slist_append(headers, ("Content-Type: " + content_type).c_str());
    }
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "certfs");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(m_options.timeout.count()));
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(m_options.connect_timeout.count()));
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &response);
    if (!m_options.ca_bundle.empty()) {
        curl_easy_setopt(curl, CURLOPT_CAINFO, m_options.ca_bundle.c_str());
    }
    if (headers != nullptr) {
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    }
    if (method == "HEAD") {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (body != nullptr) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body->data());
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
    }
    CURLcode rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        return Status::Unavailable(method + " " + url + ": " + curl_easy_strerror(rc));
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
    return response;
}

namespace {

constexpr std::size_t k_pool_max = 8;

bool same_options(const HttpOptions& a, const HttpOptions& b)
{
    return a.ca_bundle == b.ca_bundle && a.timeout == b.timeout && a.connect_timeout == b.connect_timeout;
}

} // namespace

void HttpPoolReturn::operator()(HttpClient* client) const
{
    std::unique_ptr<HttpClient> owned(client);
    if (pool != nullptr) {
        pool->give_back(std::move(owned));
    }
}

void HttpClientPool::give_back(std::unique_ptr<HttpClient> client)
{
    std::lock_guard lock(m_mutex);
    if (m_idle.size() < k_pool_max) {
        m_idle.push_back(std::move(client));
    }
}

PooledHttpClient HttpClientPool::take(const HttpOptions& options)
{
    {
        std::lock_guard lock(m_mutex);
        for (auto it = m_idle.rbegin(); it != m_idle.rend(); ++it) {
            if (same_options((*it)->options(), options)) {
                PooledHttpClient client((*it).release(), HttpPoolReturn{this});
                m_idle.erase(std::next(it).base());
                return client;
            }
        }
    }
    return PooledHttpClient(new HttpClient(options), HttpPoolReturn{this});
}

PooledHttpClient pooled_http_client(const HttpOptions& options, HttpClientPool* pool)
{
    return pool != nullptr ? pool->take(options) : PooledHttpClient(new HttpClient(options));
}

std::optional<Duration> parse_retry_after(const std::string& value, TimePoint now)
{
    const std::string v = trim(value);
    if (v.empty()) {
        return std::nullopt;
    }
    if (std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c); })) {
        if (v.size() > 9) {
            return std::chrono::duration_cast<Duration>(std::chrono::hours(24 * 365));
        }
        return std::chrono::duration_cast<Duration>(std::chrono::seconds(std::stol(v)));
    }
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"; curl_getdate also reads the obsolete forms.
    time_t at = curl_getdate(v.c_str(), nullptr);
    if (at < 0) {
        return std::nullopt;
    }
    auto delay = std::chrono::duration_cast<Duration>(from_unix(at) - now);
    return std::max(delay, Duration::zero());
}

std::vector<std::string> link_urls(const HttpResponse& response, const std::string& rel)
{
    std::vector<std::string> out;
    for (const auto& value : response.headers_named("link")) {
        // One header may hold several links: <url>;rel="x", <url2>;rel="y"
        std::size_t pos = 0;
        while ((pos = value.find('<', pos)) != std::string::npos) {
            auto close = value.find('>', pos);
            if (close == std::string::npos) {
                break;
            }
            std::string url = value.substr(pos + 1, close - pos - 1);
            auto next = value.find('<', close);
            std::string params =
                value.substr(close + 1, next == std::string::npos ? std::string::npos : next - close - 1);
            std::string p = lower(params);
            p.erase(std::remove(p.begin(), p.end(), ' '), p.end());
            if (p.find("rel=\"" + rel + "\"") != std::string::npos || p.find("rel=" + rel + ";") != std::string::npos ||
                (p.find("rel=" + rel) != std::string::npos && p.ends_with("rel=" + rel)) ||
                p.find("rel=" + rel + ",") != std::string::npos) {
                out.push_back(url);
            }
            pos = close;
        }
    }
    return out;
}

} // namespace certfs::renew::acme
