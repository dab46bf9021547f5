// The built-in local CA: a root whose key lives in the store (issuers.secret) and signs leaves
// directly. Its chain.pem holds the CA certificate, so `openssl verify -CAfile chain.pem
// cert.pem` succeeds.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "renew/issuer.hpp"

namespace certfs::renew {

struct LocalCaConfig {
    pki::KeyType key_type = pki::k_default_key_type; // of the CA key
    Duration validity = std::chrono::days(90);       // of each leaf
    Duration ca_validity = std::chrono::days(3650);  // of the CA certificate
    std::string subject;                             // default "/CN=certfs local CA <name>"
};

std::string local_ca_config_json(const LocalCaConfig& config);
Result<LocalCaConfig> parse_local_ca_config(const std::string& json);

// Generates the CA key and its self-signed certificate, ready for Store::add_issuer.
Result<store::NewIssuer> create_local_ca(std::string_view name, LocalCaConfig config, TimePoint now);

// How far back notBefore is set, so that hosts with a slightly slow clock accept a
// certificate the moment it is issued.
inline constexpr Duration k_backdate = std::chrono::minutes(5);

class LocalCa final : public Issuer {
public:
    // Produces candidate serials; tests inject one to force a collision.
    using SerialSource = std::function<Result<std::string>()>;

    static Result<std::unique_ptr<LocalCa>> load(store::Store& store, const store::Issuer& issuer);

    // Issues a leaf for the CSR's key with the request's names. Each serial has 159 random
    // bits; one already used by this CA in the store is never reused: another is drawn.
    Result<Issued> issue(const IssueRequest& request) override;

    void set_serial_source(SerialSource source) { m_serials = std::move(source); }

private:
    LocalCa(store::Store& store, LocalCaConfig config, PKey key, Cert cert, std::string cert_pem);

    store::Store& m_store;
    LocalCaConfig m_config;
    PKey m_key;
    Cert m_cert;
    std::string m_cert_pem;
    SerialSource m_serials;
};

} // namespace certfs::renew
