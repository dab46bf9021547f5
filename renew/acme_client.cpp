#include "renew/acme_client.hpp"

#include <set>

#include <spdlog/spdlog.h>

#include "renew/acme_jws.hpp"

namespace certfs::renew::acme {

namespace {

constexpr std::string_view k_error_prefix = "urn:ietf:params:acme:error:";

std::string short_type(const std::string& type)
{
    return type.starts_with(k_error_prefix) ? type.substr(k_error_prefix.size()) : type;
}

Code code_for(const std::string& type, long http_status)
{
    static const std::set<std::string> refused = {"rejectedIdentifier", "unauthorized", "caa", "unsupportedIdentifier",
                                                  "rejected"};
    static const std::set<std::string> later = {"rateLimited", "serverInternal",    "badNonce", "connection",
                                                "dns",         "incorrectResponse", "tls",      "orderNotReady"};
    const std::string t = short_type(type);
    if (refused.contains(t)) {
        return Code::invalid;
    }
    if (later.contains(t) || http_status >= 500 || http_status == 0) {
        return Code::unavailable;
    }
    return Code::corrupt; // malformed, badCSR, accountDoesNotExist, externalAccountRequired...: the admin's turn
}

// A string member of a problem document, empty when it is absent or of another type: the
// document comes from the network, so a number where a string belongs must not throw.
std::string text_member(const nlohmann::json& object, const char* name)
{
    if (!object.is_object()) {
        return {};
    }
    auto it = object.find(name);
    return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string describe_problem(const nlohmann::json& problem)
{
    std::string type = text_member(problem, "type");
    std::string detail = text_member(problem, "detail");
    std::string out = type.empty() ? "error" : short_type(type);
    if (!detail.empty()) {
        out += ": " + detail;
    }
    if (problem.is_object() && problem.contains("subproblems") && problem["subproblems"].is_array()) {
        std::string subs;
        for (const auto& sub : problem["subproblems"]) {
            std::string who;
            if (sub.is_object() && sub.contains("identifier")) {
                if (std::string value = text_member(sub["identifier"], "value"); !value.empty()) {
                    who = value + ": ";
                }
            }
            subs += (subs.empty() ? "" : "; ") + who + describe_problem(sub);
        }
        if (!subs.empty()) {
            out += " [" + subs + "]";
        }
    }
    return out;
}

} // namespace

Status problem_status(const nlohmann::json& problem, long http_status, const std::string& context,
                      std::optional<Duration> retry_after)
{
    std::string type = text_member(problem, "type");
    std::string message = context + ": " + describe_problem(problem);
    if (!problem.is_object() || type.empty()) {
        message = context + ": HTTP status " + std::to_string(http_status);
    }
    if (retry_after) {
        message += " (retry after " + format_duration(std::max(*retry_after, Duration(std::chrono::seconds(1)))) + ")";
    }
    Status out;
    switch (code_for(type, http_status)) {
    case Code::invalid:
        out = Status::Invalid(message);
        break;
    case Code::unavailable:
        out = Status::Unavailable(message);
        break;
    default:
        out = Status::Corrupt(message);
        break;
    }
    return retry_after ? out.with_retry_after(*retry_after) : out;
}

Client::Client(ClientOptions options, const EVP_PKEY& account_key, std::string account_url, const Clock& clock)
    : m_options(std::move(options)), m_key(account_key), m_account_url(std::move(account_url)), m_clock(clock),
      m_http(pooled_http_client(m_options.http, m_options.pool))
{
}

Result<nlohmann::json> Client::directory()
{
    if (m_directory) {
        return *m_directory;
    }
    ASSIGN_OR_RETURN(HttpResponse r, m_http->get(m_options.directory_url));
    auto body = nlohmann::json::parse(r.body, nullptr, false);
    if (r.status != 200 || !body.is_object()) {
        if (r.status >= 500 || r.status == 429 || r.status == 408) {
            Status busy = Status::Unavailable("ACME directory " + m_options.directory_url + ": HTTP status " +
                                              std::to_string(r.status));
            auto retry_after = parse_retry_after(r.header("retry-after"), m_clock.now());
            return retry_after ? busy.with_retry_after(*retry_after) : busy;
        }
        return Status::Corrupt("ACME directory " + m_options.directory_url + " is not an ACME directory (HTTP status " +
                               std::to_string(r.status) + ")");
    }
    m_directory = std::move(body);
    return *m_directory;
}

Result<std::string> Client::endpoint(const std::string& name)
{
    ASSIGN_OR_RETURN(nlohmann::json dir, directory());
    if (!dir.contains(name) || !dir[name].is_string()) {
        return Status::Corrupt("the ACME directory " + m_options.directory_url + " has no " + name);
    }
    return dir[name].get<std::string>();
}

Result<std::string> Client::nonce()
{
    if (!m_nonces.empty()) {
        std::string n = std::move(m_nonces.back());
        m_nonces.pop_back();
        return n;
    }
    ASSIGN_OR_RETURN(std::string url, endpoint("newNonce"));
    ASSIGN_OR_RETURN(HttpResponse r, m_http->head(url));
    std::string n = r.header("replay-nonce");
    if (n.empty()) {
        return Status::Unavailable("the ACME server gave no nonce (HTTP status " + std::to_string(r.status) + ")");
    }
    return n;
}

Result<nlohmann::json> Client::sign_key_change(const EVP_PKEY& new_key, const std::string& url,
                                               const nlohmann::json& payload)
{
    nlohmann::json header{{"url", url}};
    ASSIGN_OR_RETURN(header["jwk"], public_jwk(new_key));
    return sign_jws(new_key, header, payload.dump());
}

Result<HttpResponse> Client::post_once(const std::string& url, const std::optional<nlohmann::json>& payload,
                                       bool use_jwk)
{
    nlohmann::json header{{"url", url}};
    ASSIGN_OR_RETURN(header["nonce"], nonce());
    if (use_jwk) {
        ASSIGN_OR_RETURN(header["jwk"], public_jwk(m_key));
    } else {
        header["kid"] = m_account_url;
    }
    ASSIGN_OR_RETURN(nlohmann::json jws, sign_jws(m_key, header, payload ? payload->dump() : std::string()));
    ASSIGN_OR_RETURN(HttpResponse r, m_http->post(url, jws.dump(), "application/jose+json"));
    if (std::string n = r.header("replay-nonce"); !n.empty()) {
        m_nonces.push_back(std::move(n));
    }
    return r;
}

Result<HttpResponse> Client::post(const std::string& url, const std::optional<nlohmann::json>& payload)
{
    const bool use_jwk = m_account_url.empty();
    for (int attempt = 0;; ++attempt) {
        ASSIGN_OR_RETURN(HttpResponse r, post_once(url, payload, use_jwk));
        if (r.status < 400) {
            return r;
        }
        auto problem = nlohmann::json::parse(r.body, nullptr, false);
        const std::string type = text_member(problem, "type");
        if (short_type(type) == "badNonce" && attempt == 0) {
            continue; // the response carried a fresh nonce
        }
        return problem_status(problem, r.status, "POST " + url,
                              parse_retry_after(r.header("retry-after"), m_clock.now()));
    }
}

Result<nlohmann::json> Client::fetch(const std::string& url, std::optional<Duration>* retry_after)
{
    ASSIGN_OR_RETURN(HttpResponse r, post(url, std::nullopt));
    if (retry_after != nullptr) {
        *retry_after = parse_retry_after(r.header("retry-after"), m_clock.now());
    }
    auto body = nlohmann::json::parse(r.body, nullptr, false);
    if (!body.is_object()) {
        return Status::Unavailable("POST " + url + ": the ACME server's answer is not a JSON object");
    }
    return body;
}

Result<std::string> Client::register_account(const std::string& email, const std::optional<ExternalAccountBinding>& eab)
{
    ASSIGN_OR_RETURN(std::string url, endpoint("newAccount"));
    nlohmann::json payload{{"termsOfServiceAgreed", true}};
    if (!email.empty()) {
        payload["contact"] = nlohmann::json::array({"mailto:" + email});
    }
    if (eab) {
        ASSIGN_OR_RETURN(nlohmann::json jwk, public_jwk(m_key));
        ASSIGN_OR_RETURN(payload["externalAccountBinding"],
                         sign_hs256(eab->mac_key, nlohmann::json{{"kid", eab->kid}, {"url", url}}, jwk.dump()));
    }
    m_account_url.clear(); // newAccount is signed with the jwk
    auto r = post(url, payload);
    if (!r.ok()) {
        return r.status().with_context("ACME account registration");
    }
    std::string location = r->header("location");
    if (location.empty()) {
        return Status::Unavailable("the ACME server registered the account but gave no account URL");
    }
    m_account_url = location;
    return location;
}

} // namespace certfs::renew::acme
