#include "renew/renewer.hpp"

#include <algorithm>
#include <random>

#include "store/validate.hpp"

namespace certfs::renew {

std::optional<TimePoint> renew_at(const store::Domain& domain)
{
    if (!domain.current_not_after || !domain.current_not_before) {
        return std::nullopt;
    }
    auto lifetime = std::chrono::duration_cast<Duration>(*domain.current_not_after - *domain.current_not_before);
    Duration before = domain.renew_before.value_or(lifetime < std::chrono::days(10) ? lifetime / 2 : lifetime / 3);
    return *domain.current_not_after - before;
}

Duration due_jitter(const store::Domain& domain)
{
    auto at = renew_at(domain);
    if (!at || !domain.current_not_after) {
        return Duration::zero();
    }
    const auto window = std::chrono::duration_cast<Duration>(*domain.current_not_after - *at);
    // std::hash is only needed to be stable within one build; a serial is random already.
    const auto h = std::hash<std::string>{}(domain.current_serial + "/" + domain.name);
    const double unit = static_cast<double>(h % 1'000'000) / 1'000'000.0;
    return std::chrono::duration_cast<Duration>(window * (unit / 10));
}

std::optional<TimePoint> due_at(const store::Domain& domain)
{
    if (!domain.issuer) {
        return std::nullopt;
    }
    auto at = renew_at(domain);
    TimePoint due = at ? *at - due_jitter(domain) : TimePoint{};
    if (domain.next_attempt && *domain.next_attempt > due) {
        due = *domain.next_attempt;
    }
    return due;
}

Duration backoff_delay(std::int64_t failures)
{
    constexpr Duration k_first = std::chrono::minutes(1);
    constexpr Duration k_max = std::chrono::hours(6);
    Duration delay = k_first;
    for (std::int64_t i = 1; i < failures && delay < k_max; ++i) {
        delay *= 2;
    }
    return std::min(delay, k_max);
}

Duration jittered_backoff(std::int64_t failures, double unit)
{
    Duration delay = backoff_delay(failures);
    return delay - std::chrono::duration_cast<Duration>(delay * (std::clamp(unit, 0.0, 1.0) / 5));
}

double random_unit()
{
    thread_local std::mt19937_64 engine{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(engine);
}

store::DomainState failure_state(const Status& issuer_failure)
{
    switch (issuer_failure.code()) {
    case Code::unavailable:
    case Code::conflict:
        return store::DomainState::backoff; // try again later
    case Code::invalid:
        return store::DomainState::rejected; // the CA refused the request
    default:
        return store::DomainState::misconfigured; // the issuer needs the admin
    }
}

Renewer::Renewer(store::Store& store, std::string owner) : m_store(store), m_owner(std::move(owner)) {}

Result<store::GenerationInput> Renewer::issue_for(const store::Domain& domain, store::Reason reason,
                                                  bool* issuer_failed)
{
    if (!domain.issuer) {
        return Status::Invalid("domain " + domain.name + " has no issuer");
    }
    ASSIGN_OR_RETURN(auto issuer, load_issuer(m_store, *domain.issuer));
    PKey key;
    if (domain.reuse_key && domain.current_gen) {
        ASSIGN_OR_RETURN(store::Generation current, m_store.get_generation(domain.name, *domain.current_gen));
        ASSIGN_OR_RETURN(key, pki::parse_private_key(current.key_pem));
    } else {
        ASSIGN_OR_RETURN(key, pki::generate_key(domain.key_type));
    }
    pki::Names names{domain.dns_names, domain.ip_addresses};
    ASSIGN_OR_RETURN(CertReq csr, pki::make_csr(*key, names));
    IssueRequest request{&domain, pki::csr_pem(*csr), names};
    auto issued = issuer->issue(request);
    if (!issued.ok()) {
        if (issuer_failed != nullptr) {
            *issuer_failed = true;
        }
        return issued.status().with_context("issuer " + *domain.issuer);
    }
    ASSIGN_OR_RETURN(std::string key_pem, pki::private_key_pem(*key));
    return store::GenerationInput{std::move(key_pem), std::move(issued->cert_pem), std::move(issued->chain_pem),
                                  reason};
}

Result<std::int64_t> Renewer::add_and_issue(const store::DomainConfig& raw)
{
    ASSIGN_OR_RETURN(store::DomainConfig config, store::normalize_config(raw));
    store::Domain draft;
    static_cast<store::DomainConfig&>(draft) = config;
    ASSIGN_OR_RETURN(store::GenerationInput first, issue_for(draft, store::Reason::issued));
    return m_store.add_domain(config, first);
}

Result<std::vector<RenewOutcome>> Renewer::renew(std::string_view name, bool force)
{
    ASSIGN_OR_RETURN(store::Domain domain, m_store.get_domain(name));
    std::vector<store::Domain> members;
    std::string scope;
    if (domain.bundle) {
        ASSIGN_OR_RETURN(members, m_store.bundle_members(*domain.bundle));
        scope = "bundle:" + *domain.bundle;
    } else {
        members.push_back(domain);
        scope = "domain:" + domain.name;
    }

    for (const auto& d : members) {
        if (!d.issuer) {
            return Status::Invalid("domain " + d.name +
                                   " has no issuer (its certificates are imported): import a new one instead");
        }
    }

    auto now = m_store.clock().now();
    auto due = [&](const store::Domain& d) {
        auto at = due_at(d);
        return at && *at <= now;
    };
    auto not_due = [&](const std::vector<store::Domain>& list) {
        std::vector<RenewOutcome> out;
        for (const auto& d : list) {
            auto at = due_at(d);
            out.push_back({d.name, std::nullopt, at ? "not due until " + format_rfc3339(*at) : "not due"});
        }
        return out;
    };
    if (!force && std::none_of(members.begin(), members.end(), due)) {
        return not_due(members);
    }

    TRY(m_store.acquire_lease(scope, m_owner, k_lease_ttl));
    // The lease is held from here on: every path below releases it. Read the members again
    // under it: another process may have renewed since the first read, and the generation
    // each renewal starts from is the one its commit compares against.
    Status failure;
    std::vector<store::Domain> fresh;
    for (const auto& d : members) {
        auto f = m_store.get_domain(d.name);
        if (!f.ok()) {
            failure = f.status();
            break;
        }
        fresh.push_back(std::move(f).value());
    }
    if (failure.ok() && !force && std::none_of(fresh.begin(), fresh.end(), due)) {
        (void)m_store.release_lease(scope, m_owner);
        return not_due(fresh);
    }
    std::vector<store::CommitRequest> requests;
    store::DomainState failed_state = store::DomainState::backoff;
    for (const auto& d : fresh) {
        if (!failure.ok()) {
            break; // a member could not be read, or the previous one failed
        }
        (void)m_store.set_state(d.name, store::DomainState::issuing, "", std::nullopt, false);
        auto reason = d.current_gen ? store::Reason::renewed : store::Reason::issued;
        bool issuer_failed = false;
        auto input = issue_for(d, reason, &issuer_failed);
        if (!input.ok()) {
            failure = input.status().with_context("domain " + d.name);
            failed_state = issuer_failed ? failure_state(input.status()) : store::DomainState::misconfigured;
            break;
        }
        requests.push_back({d.name, d.current_gen, std::move(input).value()});
    }
    std::vector<std::int64_t> gens;
    if (failure.ok()) {
        auto committed = m_store.commit(requests);
        if (committed.ok()) {
            gens = std::move(committed).value();
        } else {
            failure = committed.status();
        }
    }
    if (!failure.ok()) {
        for (const auto& d : members) {
            (void)m_store.set_state(d.name, failed_state, failure.message(),
                                    now + jittered_backoff(d.failures + 1, random_unit()), true);
        }
    }
    (void)m_store.release_lease(scope, m_owner);
    if (!failure.ok()) {
        return failure;
    }
    std::vector<RenewOutcome> out;
    for (std::size_t i = 0; i < requests.size(); ++i) {
        out.push_back({requests[i].domain, gens[i], "renewed: generation " + std::to_string(gens[i])});
    }
    return out;
}

} // namespace certfs::renew
