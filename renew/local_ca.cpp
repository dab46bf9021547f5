#include "renew/local_ca.hpp"

#include <nlohmann/json.hpp>

namespace certfs::renew {

std::string local_ca_config_json(const LocalCaConfig& config)
{
    nlohmann::json j = {
        {"key_type", pki::key_type_name(config.key_type)},
        {"validity_ms", config.validity.count()},
        {"ca_validity_ms", config.ca_validity.count()},
        {"subject", config.subject},
    };
    return j.dump();
}

Result<LocalCaConfig> parse_local_ca_config(const std::string& json)
{
    auto j = nlohmann::json::parse(json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return Status::Corrupt("local CA settings are not valid JSON");
    }
    LocalCaConfig config;
    ASSIGN_OR_RETURN(config.key_type, pki::parse_key_type(j.value("key_type", "ec-p256")));
    config.validity = Duration(j.value("validity_ms", config.validity.count()));
    config.ca_validity = Duration(j.value("ca_validity_ms", config.ca_validity.count()));
    config.subject = j.value("subject", "");
    return config;
}

Result<store::NewIssuer> create_local_ca(std::string_view name, LocalCaConfig config, TimePoint now)
{
    if (config.subject.empty()) {
        config.subject = "/CN=certfs local CA " + std::string(name);
    }
    ASSIGN_OR_RETURN(PKey key, pki::generate_key(config.key_type));
    ASSIGN_OR_RETURN(std::string serial, pki::random_serial_hex());
    pki::CaParams params{config.subject, now - k_backdate, now + config.ca_validity, serial};
    ASSIGN_OR_RETURN(Cert cert, pki::make_ca_cert(*key, params));
    ASSIGN_OR_RETURN(std::string key_pem, pki::private_key_pem(*key));
    return store::NewIssuer{std::string(name), "local", local_ca_config_json(config), std::move(key_pem),
                            pki::cert_pem(*cert)};
}

LocalCa::LocalCa(store::Store& store, LocalCaConfig config, PKey key, Cert cert, std::string cert_pem)
    : m_store(store), m_config(std::move(config)), m_key(std::move(key)), m_cert(std::move(cert)),
      m_cert_pem(std::move(cert_pem)), m_serials([] { return pki::random_serial_hex(); })
{
}

Result<std::unique_ptr<LocalCa>> LocalCa::load(store::Store& store, const store::Issuer& issuer)
{
    auto context = "issuer " + issuer.name;
    auto config = parse_local_ca_config(issuer.config_json);
    if (!config.ok()) {
        return config.status().with_context(context);
    }
    ASSIGN_OR_RETURN(std::string secret, store.issuer_secret(issuer.name));
    auto key = pki::parse_private_key(secret);
    auto cert = pki::parse_cert(issuer.cert_pem);
    if (!key.ok() || !cert.ok()) {
        return Status::Corrupt(context + ": the stored CA key or certificate is unreadable");
    }
    return std::unique_ptr<LocalCa>(
        new LocalCa(store, std::move(*config), std::move(key).value(), std::move(cert).value(), issuer.cert_pem));
}

Result<Issued> LocalCa::issue(const IssueRequest& request)
{
    ASSIGN_OR_RETURN(CertReq csr, pki::parse_csr(request.csr_pem));
    ASSIGN_OR_RETURN(PKey subject_key, pki::csr_public_key(*csr));
    ASSIGN_OR_RETURN(pki::CertInfo ca, pki::cert_info(*m_cert));
    auto now = m_store.clock().now();
    if (now >= ca.not_after) {
        return Status::Invalid("the local CA certificate expired at " + format_rfc3339(ca.not_after));
    }
    // A leaf never outlives the CA that vouches for it.
    auto not_after = std::min(now + m_config.validity, ca.not_after);

    constexpr int k_max_draws = 8;
    for (int draw = 0; draw < k_max_draws; ++draw) {
        ASSIGN_OR_RETURN(std::string serial, m_serials());
        if (m_store.serial_exists(ca.subject, serial)) {
            continue;
        }
        pki::LeafParams params{request.names, now - k_backdate, not_after, serial};
        ASSIGN_OR_RETURN(Cert leaf, pki::sign_leaf(*subject_key, *m_cert, *m_key, params));
        return Issued{pki::cert_pem(*leaf), m_cert_pem, std::nullopt};
    }
    return Status::Conflict("no unused serial after " + std::to_string(k_max_draws) + " random draws");
}

} // namespace certfs::renew
