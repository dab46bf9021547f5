// Self-tests of the ACME stub (tests/support/acme_stub.hpp): the wire behaviour other tests rely on.
#include "tests/support/acme_stub.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>

#include <curl/curl.h>

namespace certfs::test {
namespace {

using namespace std::chrono_literals;
using CurlHandle = std::unique_ptr<CURL, CDeleter<curl_easy_cleanup>>;
using CurlList = std::unique_ptr<curl_slist, CDeleter<curl_slist_free_all>>;

struct Exchange {
    CURLcode rc = CURLE_OK;
    std::string error;
    long status = 0;
    std::string body;
    std::map<std::string, std::string> headers; // of the final answer, names lower-case
    long new_connections = -1;                  // CURLINFO_NUM_CONNECTS
};

std::string lower(std::string s)
{
    for (auto& c : s) {
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return s;
}

size_t on_body(char* data, size_t size, size_t count, void* user)
{
    static_cast<Exchange*>(user)->body.append(data, size * count);
    return size * count;
}

size_t on_header(char* data, size_t size, size_t count, void* user)
{
    auto& exchange = *static_cast<Exchange*>(user);
    std::string line(data, size * count);
    if (line.rfind("HTTP/", 0) == 0) {
        exchange.headers.clear(); // a "100 Continue" came first
    }
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
        auto value = line.substr(colon + 1);
        value.erase(0, value.find_first_not_of(' '));
        value.erase(value.find_last_not_of("\r\n") + 1);
        exchange.headers[lower(line.substr(0, colon))] = value;
    }
    return size * count;
}

// One libcurl easy handle, so consecutive requests may reuse its connection.
class Client {
public:
    explicit Client(std::string ca_file) : m_ca_file(std::move(ca_file))
    {
        static std::once_flag once;
        std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
        m_curl.reset(curl_easy_init());
        REQUIRE(m_curl);
    }

    Exchange request(const std::string& method, const std::string& url, const std::string* body = nullptr,
                     const char* extra_header = nullptr)
    {
        Exchange exchange;
        char error[CURL_ERROR_SIZE] = {};
        CURL* c = m_curl.get();
        CurlList headers(curl_slist_append(nullptr, "Content-Type: application/jose+json"));
        if (extra_header != nullptr) {
            curl_slist_append(headers.get(), extra_header); // appends to a non-empty list in place
        }
        curl_easy_setopt(c, CURLOPT_URL, url.c_str());
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(c, CURLOPT_PROXY, "");
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &exchange);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, &exchange);
        curl_easy_setopt(c, CURLOPT_CAINFO, m_ca_file.c_str());
        curl_easy_setopt(c, CURLOPT_CAPATH, nullptr);
        if (method == "POST") {
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body->c_str());
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body->size()));
        } else {
            curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);
            curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
            curl_easy_setopt(c, CURLOPT_NOBODY, method == "HEAD" ? 1L : 0L);
        }
        exchange.rc = curl_easy_perform(c);
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, nullptr);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr); // `headers` dies with this call
        exchange.error = error;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &exchange.status);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &exchange.new_connections);
        return exchange;
    }

private:
    std::string m_ca_file;
    CurlHandle m_curl;
};

// A flattened JWS as a client sends it; the signature is junk, which the stub does not check.
std::string jws(const nlohmann::json& protected_header, const std::optional<nlohmann::json>& payload)
{
    return nlohmann::json{{"protected", certfs::test::stub_base64url(protected_header.dump())},
                          {"payload", payload ? certfs::test::stub_base64url(payload->dump()) : ""},
                          {"signature", certfs::test::stub_base64url("not a signature")}}
        .dump();
}

} // namespace

TEST_CASE("ACME stub directory answers over HTTPS trusting its CA bundle")
{
    AcmeStub stub;
    stub.install_acme_basics();
    stub.set_directory_extra({{"renewalInfo", stub.base_url() + "/renewal-info"},
                              {"meta", {{"profiles", {{"shortlived", "6 days"}}}}},
                              {"keyChange", nullptr}});

    Client client(stub.ca_bundle());
    auto r = client.request("GET", stub.directory_url());
    INFO(r.error);
    REQUIRE(r.rc == CURLE_OK);
    REQUIRE(r.status == 200);
    CHECK(r.headers["content-type"] == "application/json");
    const auto dir = nlohmann::json::parse(r.body);
    CHECK(dir["newNonce"] == stub.base_url() + "/nonce");
    CHECK(dir["newAccount"] == stub.base_url() + "/new-account");
    CHECK(dir["newOrder"] == stub.base_url() + "/new-order");
    CHECK(dir["revokeCert"] == stub.base_url() + "/revoke-cert");
    CHECK_FALSE(dir.contains("keyChange")); // removed by the merge patch's null
    CHECK(dir["renewalInfo"] == stub.base_url() + "/renewal-info");
    CHECK(dir["meta"]["profiles"]["shortlived"] == "6 days");
    CHECK(dir == stub.directory());

    const std::string account =
        jws({{"alg", "ES256"}, {"nonce", r.headers["replay-nonce"]}, {"url", dir["newAccount"]}},
            nlohmann::json{{"termsOfServiceAgreed", true}, {"contact", {"mailto:a@b.test"}}});
    auto created = client.request("POST", dir["newAccount"].get<std::string>(), &account);
    REQUIRE(created.status == 201);
    CHECK(created.headers["location"] == stub.base_url() + "/acct/1");
    CHECK(nlohmann::json::parse(created.body)["status"] == "valid");
    CHECK(nlohmann::json::parse(created.body)["contact"][0] == "mailto:a@b.test");
}

TEST_CASE("ACME stub is refused by a client that does not trust its CA")
{
    AcmeStub stub;
    stub.install_acme_basics();
    TempDir dir;
    TestCa other("/CN=some other CA");
    write_file(dir / "other-ca.pem", other.cert_pem);

    Client client((dir / "other-ca.pem").string());
    auto r = client.request("GET", stub.directory_url());
    INFO(r.error);
    CHECK(r.rc == CURLE_PEER_FAILED_VERIFICATION);
    CHECK(r.status == 0);
    CHECK(stub.requests().empty());
}

TEST_CASE("ACME stub nonces differ per response")
{
    AcmeStub stub;
    stub.install_acme_basics();
    Client client(stub.ca_bundle());
    std::set<std::string> nonces;
    for (int i = 0; i < 5; ++i) {
        auto head = client.request("HEAD", stub.base_url() + "/nonce");
        REQUIRE(head.status == 200);
        CHECK(head.headers["cache-control"] == "no-store");
        nonces.insert(head.headers["replay-nonce"]);
        auto get = client.request("GET", stub.base_url() + "/nonce");
        REQUIRE(get.status == 204);
        nonces.insert(get.headers["replay-nonce"]);
    }
    auto missing = client.request("GET", stub.base_url() + "/nowhere");
    REQUIRE(missing.status == 404);
    nonces.insert(missing.headers["replay-nonce"]);
    CHECK(nonces.size() == 11);
    CHECK(nonces.count("") == 0);
}

TEST_CASE("ACME stub uses a custom handler and records the decoded JWS")
{
    AcmeStub stub;
    stub.install_acme_basics();
    stub.on("POST", "/renewal-info", [](const StubRequest& request) {
        auto response = StubResponse::json(
            200, {{"suggestedWindow", {{"start", "a"}, {"end", "b"}}}, {"echo", request.jws_payload}});
        response.headers.emplace_back("Retry-After", "21600");
        return response;
    });
    stub.on("GET", "/dir", [](const StubRequest&) { return StubResponse::problem(503, "rateLimited", "busy"); });
    stub.on("", "/throws", [](const StubRequest&) -> StubResponse { throw std::runtime_error("boom"); });

    Client client(stub.ca_bundle());
    // libcurl 7.88 sends "Expect: 100-continue" by itself only for bodies over 1 MiB.
    const nlohmann::json payload = {{"certID", "aaaa.bbbb"}, {"padding", std::string(3000, 'x')}};
    const std::string body = jws({{"alg", "ES256"}, {"kid", stub.base_url() + "/acct/1"}, {"nonce", "n1"}}, payload);
    auto r = client.request("POST", stub.base_url() + "/renewal-info/aaaa.bbbb", &body, "Expect: 100-continue");
    INFO(r.error);
    REQUIRE(r.status == 200);
    CHECK(r.headers["retry-after"] == "21600");
    CHECK(nlohmann::json::parse(r.body)["echo"] == payload);

    const std::string post_as_get = jws({{"alg", "ES256"}, {"nonce", "n2"}}, std::nullopt);
    auto r2 = client.request("POST", stub.base_url() + "/renewal-info?x=1", &post_as_get);
    REQUIRE(r2.status == 200);

    // The test's own /dir is tried before the basics; an unknown path is a 404 problem.
    auto dir = client.request("GET", stub.directory_url());
    CHECK(dir.status == 503);
    CHECK(nlohmann::json::parse(dir.body)["type"] == "urn:ietf:params:acme:error:rateLimited");
    auto missing = client.request("POST", stub.base_url() + "/renewal-infos", &body);
    CHECK(missing.status == 404);
    CHECK(missing.headers["content-type"] == "application/problem+json");
    CHECK(nlohmann::json::parse(missing.body)["type"] == "urn:ietf:params:acme:error:malformed");
    auto thrown = client.request("GET", stub.base_url() + "/throws");
    CHECK(thrown.status == 500);
    CHECK_THAT(nlohmann::json::parse(thrown.body)["detail"].get<std::string>(), Catch::Contains("boom"));

    auto seen = stub.requests("POST", "/renewal-info");
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].method == "POST");
    CHECK(seen[0].path == "/renewal-info/aaaa.bbbb");
    CHECK(seen[0].header("Content-Type") == "application/jose+json");
    CHECK(seen[0].body == body);
    CHECK(seen[0].header("Expect") == "100-continue");
    CHECK(seen[0].jws_payload == payload);
    CHECK(seen[0].jws_protected["kid"] == stub.base_url() + "/acct/1");
    CHECK(seen[1].path == "/renewal-info?x=1");
    CHECK(seen[1].jws_payload.is_null());
    CHECK(seen[1].jws_protected["nonce"] == "n2");
    CHECK(stub.requests().size() == 5);
    CHECK(stub.requests().at(2).jws_protected.is_null()); // the GET /dir
}

TEST_CASE("ACME stub keeps a connection alive across requests")
{
    AcmeStub stub;
    stub.install_acme_basics();
    Client client(stub.ca_bundle());
    auto first = client.request("GET", stub.directory_url());
    REQUIRE(first.status == 200);
    CHECK(first.new_connections == 1);
    const std::string body = jws({{"alg", "ES256"}}, nlohmann::json{{"termsOfServiceAgreed", true}});
    auto second = client.request("POST", stub.base_url() + "/new-account", &body);
    REQUIRE(second.status == 201);
    CHECK(second.new_connections == 0);
    auto third = client.request("HEAD", stub.base_url() + "/nonce");
    REQUIRE(third.status == 200);
    CHECK(third.new_connections == 0);

    const auto seen = stub.requests();
    REQUIRE(seen.size() == 3);
    CHECK(seen[0].connection == seen[1].connection);
    CHECK(seen[1].connection == seen[2].connection);
}

TEST_CASE("ACME stub destruction frees its port promptly")
{
    int port = 0;
    auto stub = std::make_unique<AcmeStub>();
    stub->install_acme_basics();
    port = stub->port();
    // A kept-alive HTTPS connection, and one that connected but never started TLS.
    Client client(stub->ca_bundle());
    REQUIRE(client.request("GET", stub->directory_url()).status == 200);
    UniqueFd idle(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in addr = loopback_address(port);
    REQUIRE(connect(idle.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

    const auto start = std::chrono::steady_clock::now();
    stub.reset();
    CHECK(std::chrono::steady_clock::now() - start < 500ms);

    UniqueFd probe(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    errno = 0;
    CHECK(connect(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0);
    CHECK(errno == ECONNREFUSED);
    // The stub closed its side first, so its connections linger (FIN_WAIT, TIME_WAIT): a new
    // server binds with SO_REUSEADDR, as servers do.
    UniqueFd rebind(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    int one = 1;
    REQUIRE(setsockopt(rebind.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
    CHECK(bind(rebind.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    CHECK(listen(rebind.get(), 1) == 0);
}

} // namespace certfs::test
