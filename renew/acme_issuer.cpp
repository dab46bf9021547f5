#include "renew/acme_issuer.hpp"

#include <filesystem>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/process.hpp"
#include "renew/acme_jws.hpp"
#include "renew/context.hpp"

namespace certfs::renew {

namespace {

using nlohmann::json;

// Between polls of an authorization or an order: prompt at first (pebble validates in 2-3 ms,
// and Let's Encrypt often within a second), then slower, and never sooner than the server's Retry-After.
Duration poll_delay(int attempt, std::optional<Duration> retry_after)
{
    if (retry_after) {
        return std::max(*retry_after, Duration(std::chrono::milliseconds(50)));
    }
    static constexpr std::array<int, 9> k_ms = {5, 10, 20, 40, 80, 160, 320, 640, 1000};
    return Duration(k_ms[static_cast<std::size_t>(std::min<int>(attempt, static_cast<int>(k_ms.size()) - 1))]);
}

std::string status_of(const json& object) { return object.is_object() ? object.value("status", "") : ""; }

// The secret: the account key PEM, and the EAB HMAC key (base64url) when there is one.
// next_key_pem: a rollover's new key, kept until the CA is known to have accepted it.
std::string secret_json(const std::string& key_pem, const std::string& eab_hmac_key,
                        const std::string& next_key_pem = "")
{
    json j{{"account_key", key_pem}, {"eab_hmac_key", eab_hmac_key}};
    if (!next_key_pem.empty()) {
        j["next_account_key"] = next_key_pem;
    }
    return j.dump();
}

std::string identifier_text(const json& identifier)
{
    return identifier.is_object() ? identifier.value("value", "") : "";
}

// A CA's answer of an unexpected shape (a number where a string belongs) makes nlohmann::json
// throw: that is the CA's fault and worth a later try, never the daemon's end.
template <typename F>
auto guarded(const std::string& what, F&& body) -> decltype(body())
{
    try {
        return body();
    } catch (const nlohmann::json::exception& e) {
        return Status::Unavailable(what + ": the CA's answer is malformed (" + e.what() + ")");
    }
}

} // namespace

Result<Issued> AcmeIssuer::issue(const IssueRequest& request)
{
    return guarded("new order", [&] { return issue_order(request); });
}

Result<Issued> AcmeIssuer::poll(const IssueRequest& request, const std::string& order_url)
{
    return guarded("order " + order_url, [&] { return poll_order(request, order_url); });
}

Result<std::optional<RenewalWindow>> AcmeIssuer::renewal_info(const store::Generation& current)
{
    return guarded("renewal information", [&] { return fetch_renewal_info(current); });
}

std::string acme_config_json(const AcmeConfig& c)
{
    return json{{"directory", c.directory},
                {"email", c.email},
                {"ca_bundle", c.ca_bundle},
                {"eab_kid", c.eab_kid},
                {"account_key_type", std::string(pki::key_type_name(c.account_key_type))},
                {"challenge", c.challenge},
                {"http_listen", c.http_listen},
                {"webroot", c.webroot},
                {"dns_hook", c.dns_hook},
                {"profile", c.profile},
                {"account_url", c.account_url},
                {"max_wait_ms", c.max_wait.count()}}
        .dump();
}

Result<AcmeConfig> parse_acme_config(const std::string& text)
{
    auto j = json::parse(text, nullptr, false);
    if (!j.is_object() || !j.contains("directory")) {
        return Status::Corrupt("the ACME issuer's settings are unreadable");
    }
    // nlohmann would cast a float (1.2e59) to an integer, which is undefined beyond its range.
    if (j.contains("max_wait_ms") && !j["max_wait_ms"].is_number_integer()) {
        return Status::Corrupt("the ACME issuer's settings: max_wait_ms is not a whole number of milliseconds");
    }
    AcmeConfig c;
    try {
        c.directory = j.value("directory", "");
        c.email = j.value("email", "");
        c.ca_bundle = j.value("ca_bundle", "");
        c.eab_kid = j.value("eab_kid", "");
        ASSIGN_OR_RETURN(c.account_key_type, pki::parse_key_type(j.value("account_key_type", "ec-p256")));
        c.challenge = j.value("challenge", "http-01");
        c.http_listen = j.value("http_listen", ":80");
        c.webroot = j.value("webroot", "");
        c.dns_hook = j.value("dns_hook", "");
        c.profile = j.value("profile", "");
        c.account_url = j.value("account_url", "");
        c.max_wait = Duration(j.value("max_wait_ms", c.max_wait.count()));
    } catch (const json::exception&) {
        return Status::Corrupt("the ACME issuer's settings are unreadable");
    }
    return c;
}

Result<store::NewIssuer> create_acme_issuer(std::string_view name, const AcmeConfig& config,
                                            const std::string& eab_hmac_key, const std::optional<AcmeAccount>& account)
{
    if (!config.directory.starts_with("https://") && !config.directory.starts_with("http://")) {
        return Status::Invalid("--directory must be an https:// URL, not '" + config.directory + "'");
    }
    if (config.eab_kid.empty() != eab_hmac_key.empty()) {
        return Status::Invalid("--eab-kid and --eab-hmac-key go together");
    }
    if (!eab_hmac_key.empty()) {
        auto decoded = acme::base64url_decode(eab_hmac_key);
        if (!decoded.ok() || decoded->empty()) {
            return Status::Invalid("--eab-hmac-key is not base64url: " +
                                   (decoded.ok() ? std::string("empty") : decoded.status().message()));
        }
    }
    if (config.challenge != "http-01" && config.challenge != "dns-01") {
        return Status::Invalid("--challenge must be http-01 or dns-01, not '" + config.challenge + "'");
    }
    if (config.challenge == "dns-01" && config.dns_hook.empty()) {
        return Status::Invalid("--challenge dns-01 needs --dns-hook");
    }
    if (!config.dns_hook.empty()) {
        TRY(split_command(config.dns_hook).status().with_context("--dns-hook"));
    }
    if (!config.webroot.empty() && !std::filesystem::is_directory(config.webroot)) {
        return Status::Invalid("webroot " + config.webroot + " does not exist");
    }
    if (!config.ca_bundle.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(config.ca_bundle, ec)) {
            return Status::Invalid("--ca-bundle " + config.ca_bundle + " is not a file");
        }
    }
    AcmeConfig stored = config;
    stored.account_url.clear();
    std::string key_pem;
    if (account) {
        ASSIGN_OR_RETURN(PKey key, pki::parse_private_key(account->key_pem));
        TRY(pki::jws_alg(*key).status().with_context("the account key"));
        ASSIGN_OR_RETURN(stored.account_key_type, pki::key_type_of(*key));
        key_pem = account->key_pem;
        stored.account_url = account->url;
    } else {
        if (config.account_key_type == pki::KeyType::ed25519) {
            return Status::Invalid(
                "--account-key-type ed25519 is not supported by ACME servers: use ec-p256 or rsa-2048");
        }
        ASSIGN_OR_RETURN(PKey key, pki::generate_key(config.account_key_type));
        ASSIGN_OR_RETURN(key_pem, pki::private_key_pem(*key));
    }
    return store::NewIssuer{std::string(name), "acme", acme_config_json(stored), secret_json(key_pem, eab_hmac_key),
                            ""};
}

Result<RenewalWindow> parse_renewal_window(const json& body)
{
    const json window = body.is_object() ? body.value("suggestedWindow", json::object()) : json::object();
    auto text = [&](const char* name) {
        return window.is_object() && window.contains(name) && window[name].is_string() ? window[name].get<std::string>()
                                                                                       : std::string();
    };
    auto start = parse_rfc3339(text("start"));
    auto end = parse_rfc3339(text("end"));
    if (!start.ok() || !end.ok() || *end < *start) {
        return Status::Invalid("no readable suggestedWindow");
    }
    return RenewalWindow{*start, *end, std::nullopt};
}

Result<std::unique_ptr<AcmeIssuer>> AcmeIssuer::load(store::Store& store, const store::Issuer& issuer,
                                                     std::shared_ptr<RenewContext> context)
{
    ASSIGN_OR_RETURN(AcmeConfig config, parse_acme_config(issuer.config_json));
    ASSIGN_OR_RETURN(std::string secret, store.issuer_secret(issuer.name));
    auto j = json::parse(secret, nullptr, false);
    if (!j.is_object() || !j.contains("account_key")) {
        return Status::Corrupt("the ACME issuer " + issuer.name + " has no readable account key");
    }
    ASSIGN_OR_RETURN(PKey key, pki::parse_private_key(j.value("account_key", "")));
    std::string eab;
    if (auto text = j.value("eab_hmac_key", ""); !text.empty()) {
        ASSIGN_OR_RETURN(eab, acme::base64url_decode(text));
    }
    if (!context) {
        context = std::make_shared<RenewContext>();
    }
    auto loaded = std::unique_ptr<AcmeIssuer>(
        new AcmeIssuer(store, issuer.name, std::move(config), std::move(key), eab, std::move(context)));
    if (auto next = j.value("next_account_key", ""); !next.empty()) {
        ASSIGN_OR_RETURN(loaded->m_next_key, pki::parse_private_key(next));
    }
    return loaded;
}

AcmeIssuer::AcmeIssuer(store::Store& store, std::string name, AcmeConfig config, PKey account_key, std::string eab_key,
                       std::shared_ptr<RenewContext> context)
    : m_store(store), m_name(std::move(name)), m_config(std::move(config)), m_account_key(std::move(account_key)),
      m_eab_key(std::move(eab_key)), m_context(std::move(context))
{
}

Result<std::unique_ptr<acme::Client>> AcmeIssuer::client()
{
    acme::ClientOptions options;
    options.directory_url = m_config.directory;
    options.http.ca_bundle = m_config.ca_bundle;
    options.pool = &m_context->http;
    if (m_next_key && !m_config.account_url.empty()) {
        TRY(finish_rollover(options));
    }
    auto client = std::make_unique<acme::Client>(options, *m_account_key, m_config.account_url, m_store.clock());
    if (m_config.account_url.empty()) {
        std::optional<acme::ExternalAccountBinding> eab;
        if (!m_config.eab_kid.empty()) {
            eab = acme::ExternalAccountBinding{m_config.eab_kid, m_eab_key};
        }
        ASSIGN_OR_RETURN(std::string url, client->register_account(m_config.email, eab));
        m_config.account_url = url;
        TRY(m_store.update_issuer(m_name, acme_config_json(m_config)));
        spdlog::info("issuer {}: registered ACME account {}", m_name, url);
    }
    return client;
}

Result<Issued> AcmeIssuer::issue_order(const IssueRequest& request)
{
    ASSIGN_OR_RETURN(auto acme_client, client());
    json identifiers = json::array();
    for (const auto& dns : request.names.dns) {
        identifiers.push_back({{"type", "dns"}, {"value", dns}});
    }
    for (const auto& ip : request.names.ip) {
        identifiers.push_back({{"type", "ip"}, {"value", ip}});
    }
    json payload{{"identifiers", identifiers}};
    ASSIGN_OR_RETURN(json dir, acme_client->directory());
    if (!m_config.profile.empty()) {
        json profiles = json::object();
        if (dir.contains("meta") && dir["meta"].is_object()) {
            profiles = dir["meta"].value("profiles", json::object());
        }
        if (profiles.is_object() && profiles.contains(m_config.profile)) {
            payload["profile"] = m_config.profile;
        } else {
            spdlog::warn("issuer {}: the CA does not offer profile '{}'; ordering without one", m_name,
                         m_config.profile);
        }
    }
    // A renewal names the certificate it replaces (RFC 9773 §5), when the CA keeps renewal
    // information: the CA may then exempt it from rate limits.
    if (dir.contains("renewalInfo") && request.domain != nullptr && request.domain->current_gen) {
        if (auto current = m_store.current_generation(request.domain->name); current.ok()) {
            if (auto cert = pki::parse_cert(current->cert_pem); cert.ok()) {
                if (auto id = pki::ari_cert_id(**cert); id.ok()) {
                    payload["replaces"] = *id;
                }
            }
        }
    }
    ASSIGN_OR_RETURN(std::string new_order, acme_client->endpoint("newOrder"));
    auto r = acme_client->post(new_order, payload);
    if (!r.ok() && payload.contains("replaces") && r.status().code() == Code::corrupt) {
        // Not a certificate of this CA's, or replaced already: order it as a new one.
        spdlog::info("issuer {}: the CA refused 'replaces' ({}); ordering without it", m_name, r.status().message());
        payload.erase("replaces");
        r = acme_client->post(new_order, payload);
    }
    if (!r.ok()) {
        return r.status().with_context("new order");
    }
    std::string order_url = r->header("location");
    auto order = json::parse(r->body, nullptr, false);
    if (order_url.empty() || !order.is_object()) {
        return Status::Unavailable("new order: the CA's answer has no order");
    }
    return drive(*acme_client, request, std::move(order_url), std::move(order),
                 acme::parse_retry_after(r->header("retry-after"), acme_client->clock().now()));
}

Result<Issued> AcmeIssuer::poll_order(const IssueRequest& request, const std::string& order_url)
{
    ASSIGN_OR_RETURN(auto acme_client, client());
    std::optional<Duration> retry_after;
    ASSIGN_OR_RETURN(json order, acme_client->fetch(order_url, &retry_after));
    return drive(*acme_client, request, order_url, std::move(order), retry_after);
}

Result<Issued> AcmeIssuer::drive(acme::Client& acme_client, const IssueRequest& request, std::string order_url,
                                 json order, std::optional<Duration> retry_after)
{
    const TimePoint deadline = acme_client.clock().now() + m_config.max_wait;
    auto still_waiting = [&](Duration delay) {
        Issued later;
        later.pending = PendingAtCa{order_url, std::max(delay, Duration(std::chrono::seconds(1)))};
        return later;
    };
    if (status_of(order) == "pending") {
        ASSIGN_OR_RETURN(std::optional<Duration> unfinished, authorize(acme_client, order, deadline));
        if (unfinished) {
            return still_waiting(*unfinished); // the CA is still validating: poll the order later
        }
        ASSIGN_OR_RETURN(order, acme_client.fetch(order_url, &retry_after));
    }
    if (status_of(order) == "ready") {
        ASSIGN_OR_RETURN(CertReq csr, pki::parse_csr(request.csr_pem));
        ASSIGN_OR_RETURN(std::string csr_der, pki::csr_der(*csr));
        auto finalized = acme_client.post(order.value("finalize", ""), json{{"csr", acme::base64url(csr_der)}});
        if (!finalized.ok()) {
            return finalized.status().with_context("finalize");
        }
        order = json::parse(finalized->body, nullptr, false);
        retry_after = acme::parse_retry_after(finalized->header("retry-after"), acme_client.clock().now());
    }
    for (int attempt = 0; status_of(order) == "processing" || status_of(order) == "ready"; ++attempt) {
        const Duration delay = poll_delay(attempt, retry_after);
        if (acme_client.clock().now() + delay > deadline) {
            return still_waiting(delay);
        }
        std::this_thread::sleep_for(delay);
        ASSIGN_OR_RETURN(order, acme_client.fetch(order_url, &retry_after));
    }
    const std::string status = status_of(order);
    if (status == "valid") {
        return download(acme_client, order);
    }
    if (status == "invalid") {
        // Final: this order will never be valid. A "try later" problem (serverInternal...)
        // becomes Conflict, which still backs off but makes the renewer drop the order and
        // submit a new one next time, instead of polling this one forever.
        Status failed = order.contains("error") ? acme::problem_status(order["error"], 403, "order " + order_url)
                                                : Status::Invalid("order " + order_url + " is invalid");
        if (failed.code() == Code::unavailable) {
            Status final_failure = Status::Conflict(failed.message());
            return failed.retry_after() ? final_failure.with_retry_after(*failed.retry_after()) : final_failure;
        }
        return failed;
    }
    return Status::Unavailable("order " + order_url + " is in state '" + status + "'");
}

Result<std::optional<Duration>> AcmeIssuer::authorize(acme::Client& acme_client, const json& order, TimePoint deadline)
{
    ASSIGN_OR_RETURN(std::string thumbprint, acme::jwk_thumbprint(*m_account_key));
    std::vector<acme::ChallengeSpec> specs;
    std::vector<std::pair<std::string, std::string>> to_poll; // (authorization URL, challenge URL to answer)
    for (const auto& authz_url : order.value("authorizations", json::array())) {
        const std::string url = authz_url.get<std::string>();
        ASSIGN_OR_RETURN(json authz, acme_client.fetch(url));
        const std::string status = status_of(authz);
        if (status == "valid") {
            continue;
        }
        const json identifier = authz.value("identifier", json::object());
        const std::string name = identifier_text(identifier);
        if (status != "pending") {
            return Status::Invalid("authorization for " + name + " is " + status);
        }
        // IP addresses can only be validated over HTTP (RFC 8738), wildcards only over DNS.
        std::string type = m_config.challenge;
        if (identifier.value("type", "") == "ip") {
            type = "http-01";
        } else if (authz.value("wildcard", false)) {
            type = "dns-01";
        }
        std::optional<json> chosen;
        for (const auto& ch : authz.value("challenges", json::array())) {
            if (ch.is_object() && ch.value("type", "") == type) {
                chosen = ch;
            }
        }
        if (!chosen) {
            return Status::Corrupt("the CA offers no " + type + " challenge for " + name);
        }
        const std::string token = chosen->value("token", "");
        specs.push_back({type, name, token, token + "." + thumbprint});
        to_poll.emplace_back(url, status_of(*chosen) == "pending" ? chosen->value("url", "") : "");
    }
    if (specs.empty()) {
        return std::optional<Duration>();
    }
    acme::ResponderConfig responders;
    responders.http_listen = m_config.http_listen;
    responders.webroot = m_config.webroot;
    responders.dns_hook = m_config.dns_hook;
    responders.servers = &m_context->http01;
    auto answering = acme::ChallengeSet::prepare(responders, specs);
    if (!answering.ok()) {
        // A local problem (settings, a webroot, the hook), not the CA's refusal.
        const Status& s = answering.status();
        return s.code() == Code::invalid ? Status::Corrupt(s.message()) : s;
    }
    for (const auto& [authz_url, challenge_url] : to_poll) {
        if (!challenge_url.empty()) {
            auto r = acme_client.post(challenge_url, json::object());
            if (!r.ok()) {
                return r.status().with_context("answering the challenge");
            }
        }
    }
    for (const auto& [authz_url, challenge_url] : to_poll) {
        std::optional<Duration> retry_after;
        for (int attempt = 0;; ++attempt) {
            ASSIGN_OR_RETURN(json authz, acme_client.fetch(authz_url, &retry_after));
            const std::string status = status_of(authz);
            const std::string name = identifier_text(authz.value("identifier", json::object()));
            if (status == "valid") {
                break;
            }
            if (status == "invalid") {
                for (const auto& ch : authz.value("challenges", json::array())) {
                    if (ch.contains("error")) {
                        return acme::problem_status(ch["error"], 403,
                                                    "validation of " + name + " (" + ch.value("type", "") + ")");
                    }
                }
                return Status::Invalid("validation of " + name + " failed");
            }
            if (status != "pending") {
                return Status::Invalid("authorization for " + name + " is " + status);
            }
            const Duration delay = poll_delay(attempt, retry_after);
            if (acme_client.clock().now() + delay > deadline) {
                spdlog::info("issuer {}: validation of {} did not finish within {}; keeping the order", m_name, name,
                             format_duration(m_config.max_wait));
                return std::optional<Duration>(delay);
            }
            std::this_thread::sleep_for(delay);
        }
    }
    return std::optional<Duration>();
}

Result<Issued> AcmeIssuer::download(acme::Client& acme_client, const json& order)
{
    const std::string url = order.value("certificate", "");
    if (url.empty()) {
        return Status::Unavailable("the order is valid but has no certificate URL");
    }
    auto r = acme_client.post(url, std::nullopt);
    if (!r.ok()) {
        return r.status().with_context("certificate download");
    }
    auto certs = pki::parse_certs(r->body);
    if (!certs.ok()) {
        return Status::Unavailable("the CA's certificate is unreadable: " + certs.status().message());
    }
    Issued issued;
    issued.cert_pem = pki::cert_pem(*certs->front());
    for (std::size_t i = 1; i < certs->size(); ++i) {
        issued.chain_pem += pki::cert_pem(*(*certs)[i]);
    }
    return issued;
}

Result<json> AcmeIssuer::describe()
{
    return guarded("issuer " + m_name, [&]() -> Result<json> { return describe_account(); });
}

Result<json> AcmeIssuer::describe_account()
{
    ASSIGN_OR_RETURN(auto acme_client, client());
    ASSIGN_OR_RETURN(json dir, acme_client->directory());
    return json{{"account_url", acme_client->account_url()}, {"meta", dir.value("meta", json::object())}};
}

Status AcmeIssuer::revoke(const std::string& cert_pem, int reason)
{
    ASSIGN_OR_RETURN(Cert cert, pki::parse_cert(cert_pem));
    ASSIGN_OR_RETURN(std::string cert_der, pki::cert_der(*cert));
    ASSIGN_OR_RETURN(auto acme_client, client());
    ASSIGN_OR_RETURN(std::string url, acme_client->endpoint("revokeCert"));
    auto r = acme_client->post(url, json{{"certificate", acme::base64url(cert_der)}, {"reason", reason}});
    return r.ok() ? Status::Ok() : r.status().with_context("revocation");
}

Status AcmeIssuer::finish_rollover(const acme::ClientOptions& options)
{
    // A rollover was cut short after the CA was asked: whichever key the CA knows the account
    // by is the one to keep.
    acme::Client with_old(options, *m_account_key, m_config.account_url, m_store.clock());
    auto old_works = with_old.fetch(m_config.account_url);
    if (!old_works.ok() && old_works.status().code() == Code::unavailable) {
        return old_works.status().with_context("checking an interrupted account key rollover");
    }
    const std::string eab_text = m_eab_key.empty() ? std::string() : acme::base64url(m_eab_key);
    if (!old_works.ok()) {
        acme::Client with_next(options, *m_next_key, m_config.account_url, m_store.clock());
        TRY(with_next.fetch(m_config.account_url).status().with_context("account key rollover"));
        m_account_key = std::move(m_next_key);
        spdlog::info("issuer {}: the CA had accepted the new account key; keeping it", m_name);
    }
    m_next_key.reset();
    ASSIGN_OR_RETURN(std::string key_pem, pki::private_key_pem(*m_account_key));
    return m_store.update_issuer(m_name, acme_config_json(m_config), secret_json(key_pem, eab_text));
}

Status AcmeIssuer::rekey()
{
    ASSIGN_OR_RETURN(auto acme_client, client());
    ASSIGN_OR_RETURN(std::string url, acme_client->endpoint("keyChange"));
    ASSIGN_OR_RETURN(PKey new_key, pki::generate_key(m_config.account_key_type));
    ASSIGN_OR_RETURN(json old_jwk, acme::public_jwk(*m_account_key));
    // The inner JWS is signed by the new key, without a nonce; the outer one by the old key.
    ASSIGN_OR_RETURN(json inner,
                     acme_client->sign_key_change(*new_key, url,
                                                  json{{"account", acme_client->account_url()}, {"oldKey", old_jwk}}));
    // The new key is in the store before the CA hears of it: if what follows is cut short,
    // the next use finds out which key the CA kept (finish_rollover).
    ASSIGN_OR_RETURN(std::string old_pem, pki::private_key_pem(*m_account_key));
    ASSIGN_OR_RETURN(std::string key_pem, pki::private_key_pem(*new_key));
    const std::string eab_text = m_eab_key.empty() ? std::string() : acme::base64url(m_eab_key);
    TRY(m_store.update_issuer(m_name, acme_config_json(m_config), secret_json(old_pem, eab_text, key_pem)));
    auto r = acme_client->post(url, inner);
    if (!r.ok()) {
        if (r.status().code() != Code::unavailable) { // refused: the old key stays the account's
            (void)m_store.update_issuer(m_name, acme_config_json(m_config), secret_json(old_pem, eab_text));
        }
        return r.status().with_context("account key rollover");
    }
    acme_client.reset(); // it signs with the old key
    m_account_key = std::move(new_key);
    return m_store.update_issuer(m_name, acme_config_json(m_config), secret_json(key_pem, eab_text));
}

Result<std::optional<RenewalWindow>> AcmeIssuer::fetch_renewal_info(const store::Generation& current)
{
    // Unauthenticated: no account is needed, and none is registered for it.
    acme::ClientOptions options;
    options.directory_url = m_config.directory;
    options.http.ca_bundle = m_config.ca_bundle;
    options.pool = &m_context->http;
    acme::Client acme_client(options, *m_account_key, m_config.account_url, m_store.clock());
    ASSIGN_OR_RETURN(json dir, acme_client.directory());
    if (!dir.contains("renewalInfo") || !dir["renewalInfo"].is_string()) {
        return std::optional<RenewalWindow>();
    }
    ASSIGN_OR_RETURN(Cert cert, pki::parse_cert(current.cert_pem));
    ASSIGN_OR_RETURN(std::string id, pki::ari_cert_id(*cert));
    const std::string url = dir["renewalInfo"].get<std::string>() + "/" + id;
    ASSIGN_OR_RETURN(acme::HttpResponse r, acme_client.get(url));
    const auto retry_after = acme::parse_retry_after(r.header("retry-after"), m_store.clock().now());
    auto body = json::parse(r.body, nullptr, false);
    if (r.status != 200) {
        return acme::problem_status(body, r.status, "renewal information " + url, retry_after);
    }
    auto window = parse_renewal_window(body);
    if (!window.ok()) {
        return Status::Unavailable("renewal information " + url + ": " + window.status().message());
    }
    window->retry_after = retry_after;
    return std::optional<RenewalWindow>(*window);
}

} // namespace certfs::renew
