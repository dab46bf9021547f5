// The `acme` issuer: certificates from an RFC 8555 CA (Let's Encrypt, pebble, step-ca...).
//
// The account key is made when the issuer is added and kept in the issuer's secret; the
// account itself is registered on first use and its URL recorded in the issuer's settings.
// One issue() is one order: new order for every DNS name and IP address of the domain,
// authorizations answered by the challenge responders (acme_challenge.hpp), finalize with the
// domain's CSR, download with the chain. An order that is still processing when the wait
// ends is returned pending with its URL as the cookie; poll() picks it up again.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "renew/acme_challenge.hpp"
#include "renew/acme_client.hpp"
#include "renew/issuer.hpp"

namespace certfs::renew {

struct AcmeConfig {
    std::string directory;
    std::string email;
    std::string ca_bundle; // PEM file trusted for the directory's HTTPS; empty: the system's
    std::string eab_kid;   // with the HMAC key in the secret
    pki::KeyType account_key_type = pki::KeyType::ec_p256;
    std::string challenge = "http-01"; // or "dns-01"
    std::string http_listen = ":80";
    std::string webroot;
    std::string dns_hook;
    std::string profile;
    std::string account_url;                     // set once registered
    Duration max_wait = std::chrono::minutes(2); // for validation and issuance in one attempt
};

std::string acme_config_json(const AcmeConfig& config);
Result<AcmeConfig> parse_acme_config(const std::string& json);

// An account registered already, by certfs or another client (certbot): its key and URL.
struct AcmeAccount {
    std::string key_pem;
    std::string url; // empty: found again from the key at the first use
};

// Checks the settings (Invalid naming the bad one), makes the account key (or takes
// `account`'s, whose type then sets account_key_type), and builds the issuer for
// Store::add_issuer. eab_hmac_key is the admin's base64url text. Offline: the directory is
// first contacted by the first renewal.
Result<store::NewIssuer> create_acme_issuer(std::string_view name, const AcmeConfig& config,
                                            const std::string& eab_hmac_key,
                                            const std::optional<AcmeAccount>& account = std::nullopt);

// The suggestedWindow of a renewal information answer (RFC 9773 §4.2), without retry_after:
// Invalid ("no readable suggestedWindow") when start or end is missing, not an RFC 3339
// string, or end is before start. Any JSON value is a valid input.
Result<RenewalWindow> parse_renewal_window(const nlohmann::json& body);

class AcmeIssuer final : public Issuer {
public:
    // Its connections and http-01 servers come from `context`, which it keeps alive; null: a
    // context of its own.
    static Result<std::unique_ptr<AcmeIssuer>> load(store::Store& store, const store::Issuer& issuer,
                                                    std::shared_ptr<RenewContext> context = nullptr);

    Result<Issued> issue(const IssueRequest& request) override;
    Result<Issued> poll(const IssueRequest& request, const std::string& order_url) override;
    // GET renewalInfo/<cert id> (RFC 9773); nullopt when the directory has no renewalInfo.
    Result<std::optional<RenewalWindow>> renewal_info(const store::Generation& current) override;

    // The directory and account, for `certfsctl issuer show`: registers the account if needed.
    Result<nlohmann::json> describe();

    // Revokes a certificate this account ordered (RFC 8555 §7.6), with an RFC 5280 reason
    // code (0 unspecified, 1 keyCompromise, 3 affiliationChanged, 4 superseded,
    // 5 cessationOfOperation).
    Status revoke(const std::string& cert_pem, int reason);
    // Rolls the account over to a new key of the same type (RFC 8555 §7.3.5) and stores it.
    // The new key is stored beside the old one before the CA is asked, so an interruption
    // (a crash, a store write that fails) is settled at the next use.
    Status rekey();

private:
    AcmeIssuer(store::Store& store, std::string name, AcmeConfig config, PKey account_key, std::string eab_key,
               std::shared_ptr<RenewContext> context);

    Result<std::unique_ptr<acme::Client>> client();
    Result<Issued> issue_order(const IssueRequest& request);
    Result<Issued> poll_order(const IssueRequest& request, const std::string& order_url);
    Result<std::optional<RenewalWindow>> fetch_renewal_info(const store::Generation& current);
    Result<nlohmann::json> describe_account();
    // Settles a rollover cut short: keeps whichever key the CA knows the account by.
    Status finish_rollover(const acme::ClientOptions& options);
    // retry_after: the Retry-After of the answer that gave `order`, for its next poll.
    Result<Issued> drive(acme::Client& client, const IssueRequest& request, std::string order_url, nlohmann::json order,
                         std::optional<Duration> retry_after);
    // Answers and polls the order's pending authorizations. Returns the delay after which to
    // poll again when the deadline came first (the CA still validating), nullopt when all are valid.
    Result<std::optional<Duration>> authorize(acme::Client& client, const nlohmann::json& order, TimePoint deadline);
    Result<Issued> download(acme::Client& client, const nlohmann::json& order);

    store::Store& m_store;
    std::string m_name;
    AcmeConfig m_config;
    PKey m_account_key;
    std::string m_eab_key; // raw bytes; empty without EAB
    PKey m_next_key;       // set while a rollover may have been cut short
    std::shared_ptr<RenewContext> m_context;
};

} // namespace certfs::renew
