// The ACME protocol (RFC 8555): directory, nonces, signed requests, accounts, orders,
// authorizations, finalization and download. The issuer (acme_issuer.hpp) drives it; the
// challenge responders are in acme_challenge.hpp.
//
// Errors: ACME problem documents become a Status whose message holds the problem's type,
// detail and subproblems. Code::invalid for what the CA refuses for good (rejectedIdentifier,
// unauthorized, caa, rejected...), Code::unavailable for "try again later" (rateLimited,
// 5xx, a server that cannot be reached, badNonce twice), Code::corrupt for what the admin
// must fix (a bad EAB key, an account the CA does not know, malformed requests), and the
// Retry-After the server sent, if any, in the message.
//
// Thread-safety: one Client per thread.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/clock.hpp"
#include "core/handles.hpp"
#include "renew/acme_http.hpp"

namespace certfs::renew::acme {

struct ExternalAccountBinding {
    std::string kid;
    std::string mac_key; // raw bytes (decoded from the admin's base64url)
};

struct ClientOptions {
    std::string directory_url;
    HttpOptions http;
    HttpClientPool* pool = nullptr; // where the client's connection comes from; null: its own
};

// A problem document read from a response, or from an authorization's challenge. Any JSON
// value is accepted: members of the wrong type count as absent, and it never throws.
Status problem_status(const nlohmann::json& problem, long http_status, const std::string& context,
                      std::optional<Duration> retry_after = std::nullopt);

class Client {
public:
    // account_url: empty until the account is registered (register_account()).
    Client(ClientOptions options, const EVP_PKEY& account_key, std::string account_url, const Clock& clock);

    Result<nlohmann::json> directory(); // fetched once per Client
    // A URL of the directory ("newOrder"); Corrupt when the directory lacks it.
    Result<std::string> endpoint(const std::string& name);

    // newAccount: finds the key's account, or creates it (agreeing to the terms of service),
    // with the contact email and the binding when given. Returns the account URL.
    Result<std::string> register_account(const std::string& email, const std::optional<ExternalAccountBinding>& eab);
    const std::string& account_url() const { return m_account_url; }

    // A signed POST with the account's kid (the jwk before registration). payload nullopt is
    // POST-as-GET. Retries once on badNonce. A problem response becomes its Status.
    Result<HttpResponse> post(const std::string& url, const std::optional<nlohmann::json>& payload);
    // A plain GET (renewal information is not signed).
    Result<HttpResponse> get(const std::string& url) { return m_http->get(url); }
    // POST-as-GET and parse the JSON body; retry_after, when given, gets the answer's
    // Retry-After (nullopt without one), for polling.
    Result<nlohmann::json> fetch(const std::string& url, std::optional<Duration>* retry_after = nullptr);

    // The inner JWS of a key change (RFC 8555 §7.3.5): signed by the new key, with its jwk
    // and no nonce.
    Result<nlohmann::json> sign_key_change(const EVP_PKEY& new_key, const std::string& url,
                                           const nlohmann::json& payload);

    const Clock& clock() const { return m_clock; }

private:
    Result<std::string> nonce();
    Result<HttpResponse> post_once(const std::string& url, const std::optional<nlohmann::json>& payload, bool use_jwk);

    ClientOptions m_options;
    const EVP_PKEY& m_key;
    std::string m_account_url;
    const Clock& m_clock;
    PooledHttpClient m_http;
    std::optional<nlohmann::json> m_directory;
    std::vector<std::string> m_nonces; // unused Replay-Nonce values, newest last
};

} // namespace certfs::renew::acme
