#include "renew/renewer.hpp"

#include <algorithm>
#include <random>

#include "store/lease.hpp"
#include "store/validate.hpp"

namespace certfs::renew {

namespace {

// The CA's renewal information may ask for a renewal sooner than renewal_floor (a revoked
// certificate), but not sooner than this after issue: a CA that asks for every new certificate
// to be replaced at once gets one renewal an hour, not a loop.
constexpr Duration k_max_ari_floor = std::chrono::hours(1);

std::optional<Duration> lifetime(const store::Domain& domain)
{
    auto from = issued_at(domain);
    if (!from || !domain.current_not_after) {
        return std::nullopt;
    }
    return std::max(Duration::zero(), std::chrono::duration_cast<Duration>(*domain.current_not_after - *from));
}

} // namespace

std::optional<TimePoint> issued_at(const store::Domain& domain)
{
    if (!domain.current_not_before) {
        return std::nullopt;
    }
    if (domain.current_reason == store::Reason::imported || !domain.current_created_at) {
        return domain.current_not_before;
    }
    return std::max(*domain.current_not_before, *domain.current_created_at);
}

std::optional<TimePoint> renewal_floor(const store::Domain& domain)
{
    auto life = lifetime(domain);
    if (!life || domain.current_reason == store::Reason::imported) {
        return std::nullopt;
    }
    return *issued_at(domain) + std::max(*life / 4, k_min_renewal_gap);
}

std::optional<TimePoint> renew_at(const store::Domain& domain)
{
    auto life = lifetime(domain);
    if (!life) {
        return std::nullopt;
    }
    Duration before = domain.renew_before.value_or(*life < std::chrono::days(10) ? *life / 2 : *life / 3);
    TimePoint at = *domain.current_not_after - before;
    if (auto floor = renewal_floor(domain)) {
        at = std::max(at, *floor);
    }
    return at;
}

Duration due_jitter(const store::Domain& domain)
{
    auto at = renew_at(domain);
    if (!at || !domain.current_not_after) {
        return Duration::zero();
    }
    const auto window =
        std::max(Duration::zero(), std::chrono::duration_cast<Duration>(*domain.current_not_after - *at));
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
    const auto floor = renewal_floor(domain);
    if (floor) {
        due = std::max(due, *floor);
    }
    // The CA's suggestion for this certificate (ACME renewal information) wins when earlier.
    if (domain.ari_at && domain.ari_gen && domain.ari_gen == domain.current_gen && *domain.ari_at < due) {
        due = *domain.ari_at;
        if (floor) {
            due = std::max(due, std::min(*floor, *issued_at(domain) + k_max_ari_floor));
        }
    }
    if (domain.next_attempt && *domain.next_attempt > due) {
        due = *domain.next_attempt;
    }
    return due;
}

store::DomainState shown_state(const store::Domain& domain, TimePoint now)
{
    if (domain.state == store::DomainState::monitoring) {
        if (auto at = due_at(domain); at && *at <= now) {
            return store::DomainState::due;
        }
    }
    return domain.state;
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

namespace {

std::string pending_message(TimePoint poll_at)
{
    return "pending at the CA: polling again at " + format_rfc3339(poll_at);
}

} // namespace

Renewer::Renewer(store::Store& store, std::string owner, IssuerFactory issuers, Duration lease_ttl)
    : m_store(store), m_owner(std::move(owner)), m_issuers(or_builtin_issuers(std::move(issuers))),
      m_lease_ttl(lease_ttl)
{
}

Result<Renewer::Step> Renewer::advance(const store::Domain& domain, store::Reason reason, bool* issuer_failed)
{
    if (!domain.issuer) {
        return Status::Invalid("domain " + domain.name + " has no issuer");
    }
    const TimePoint now = m_store.clock().now();
    store::PendingRequest request;
    bool polling = false; // request is one the store kept
    {
        ASSIGN_OR_RETURN(std::optional<store::PendingRequest> saved, m_store.pending(domain.name));
        if (saved && (saved->issuer != *domain.issuer || saved->based_on != domain.current_gen)) {
            // The domain has moved on since (an import, a rollback): the request is stale.
            TRY(m_store.drop_pending(domain.name));
        } else if (saved) {
            request = std::move(*saved);
            polling = true;
        }
    }
    if (polling && !request.cert_pem.empty()) {
        // Issued earlier; it waited for the rest of its bundle.
        return Step{store::GenerationInput{request.key_pem, request.cert_pem, request.chain_pem, reason}, request};
    }
    ASSIGN_OR_RETURN(auto issuer, load_issuer(m_store, *domain.issuer, m_issuers));
    if (!polling) {
        PKey key;
        if (domain.reuse_key && domain.current_gen) {
            ASSIGN_OR_RETURN(store::Generation current, m_store.get_generation(domain.name, *domain.current_gen));
            ASSIGN_OR_RETURN(key, pki::parse_private_key(current.key_pem));
        } else {
            ASSIGN_OR_RETURN(key, pki::generate_key(domain.key_type));
        }
        ASSIGN_OR_RETURN(CertReq csr, pki::make_csr(*key, pki::Names{domain.dns_names, domain.ip_addresses}));
        request.domain = domain.name;
        request.issuer = *domain.issuer;
        request.based_on = domain.current_gen;
        ASSIGN_OR_RETURN(request.key_pem, pki::private_key_pem(*key));
        request.csr_pem = pki::csr_pem(*csr);
        request.created_at = now;
    }
    IssueRequest to_issuer{&domain, request.csr_pem, pki::Names{domain.dns_names, domain.ip_addresses}};
    auto issued = polling ? issuer->poll(to_issuer, request.cookie) : issuer->issue(to_issuer);
    if (!issued.ok()) {
        if (issuer_failed != nullptr) {
            *issuer_failed = true;
        }
        if (polling && issued.status().code() != Code::unavailable) {
            (void)m_store.drop_pending(domain.name); // the CA ended it: the next attempt submits anew
        }
        return issued.status().with_context("issuer " + *domain.issuer);
    }
    if (issued->pending) {
        request.cookie = issued->pending->cookie;
        request.poll_at = now + issued->pending->retry_after;
        return Step{std::nullopt, std::move(request)};
    }
    request.cookie.clear();
    request.cert_pem = issued->cert_pem;
    request.chain_pem = issued->chain_pem;
    request.poll_at = now;
    return Step{store::GenerationInput{request.key_pem, issued->cert_pem, issued->chain_pem, reason}, request};
}

Result<RenewOutcome> Renewer::add_and_issue(const store::DomainConfig& raw)
{
    ASSIGN_OR_RETURN(store::DomainConfig config, store::normalize_config(raw));
    store::Domain draft;
    static_cast<store::DomainConfig&>(draft) = config;
    ASSIGN_OR_RETURN(Step first, advance(draft, store::Reason::issued));
    if (first.ready) {
        TRY(m_store.add_domain(config, *first.ready).status());
        ASSIGN_OR_RETURN(store::Domain added, m_store.get_domain(config.name));
        const std::int64_t gen = added.current_gen.value_or(0);
        return RenewOutcome{config.name, gen, "issued: generation " + std::to_string(gen)};
    }
    // Pending at the CA: add the domain without a generation and keep the request to poll.
    TRY(m_store.add_domain(config, std::nullopt).status());
    Status kept = m_store.save_pending(first.request);
    if (kept.ok()) {
        kept = m_store.set_state(config.name, store::DomainState::pending, "", first.request.poll_at, false);
    }
    if (!kept.ok()) {
        (void)m_store.remove_domain(config.name); // nothing half-added
        return kept;
    }
    return RenewOutcome{config.name, std::nullopt, pending_message(first.request.poll_at)};
}

Result<std::vector<RenewOutcome>> Renewer::renew(std::string_view name, bool force, bool move_now,
                                                 std::optional<store::LeaseGuard>* hold)
{
    ASSIGN_OR_RETURN(store::Domain domain, m_store.get_domain(name));
    std::vector<store::Domain> members;
    if (domain.bundle) {
        ASSIGN_OR_RETURN(members, m_store.bundle_members(*domain.bundle));
    } else {
        members.push_back(domain);
    }

    for (const auto& d : members) {
        // A row written by hand with a name the mount refuses: its hooks would get that name.
        if (Status s = store::check_served_name(d.name); !s.ok()) {
            return Status::Invalid(s.message() + ": the mount does not serve it, so it is not renewed");
        }
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

    // The lease is held until this returns, on every path (or by the caller, with hold). Read
    // the members again under it: another process may have renewed since the first read, and
    // the generation each renewal starts from is the one its commit compares against.
    std::optional<store::LeaseGuard> own;
    std::optional<store::LeaseGuard>& lease = hold != nullptr ? *hold : own;
    ASSIGN_OR_RETURN(store::LeaseGuard taken,
                     store::LeaseGuard::acquire(m_store, store::lease_scope(domain), m_owner, m_lease_ttl));
    lease.emplace(std::move(taken));
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
        return not_due(fresh);
    }
    std::vector<store::CommitRequest> requests;
    std::vector<store::PendingRequest> issued; // of `requests`, to keep while the bundle waits
    std::optional<TimePoint> poll_at;          // the earliest poll of a member still pending
    store::DomainState failed_state = store::DomainState::backoff;
    for (const auto& d : fresh) {
        if (!failure.ok()) {
            break; // a member could not be read, or the previous one failed
        }
        (void)m_store.set_state(d.name, store::DomainState::issuing, "", std::nullopt, false);
        auto reason = d.current_gen ? store::Reason::renewed : store::Reason::issued;
        bool issuer_failed = false;
        auto step = advance(d, reason, &issuer_failed);
        if (step.ok() && !step->ready) {
            if (Status kept = m_store.save_pending(step->request); !kept.ok()) {
                step = kept;
            }
        }
        if (!step.ok()) {
            failure = step.status().with_context("domain " + d.name);
            failed_state = issuer_failed ? failure_state(step.status()) : store::DomainState::misconfigured;
            break;
        }
        if (step->ready) {
            requests.push_back({d.name, d.current_gen, std::move(*step->ready)});
            issued.push_back(std::move(step->request));
        } else {
            poll_at = std::min(poll_at.value_or(TimePoint::max()), step->request.poll_at);
        }
    }
    if (failure.ok() && poll_at) {
        // Some member waits for the CA: keep the others' certificates, commit nothing yet.
        for (const auto& request : issued) {
            if (Status kept = m_store.save_pending(request); !kept.ok()) {
                failure = kept;
            }
        }
        if (failure.ok()) {
            std::vector<RenewOutcome> out;
            for (const auto& d : fresh) {
                (void)m_store.set_state(d.name, store::DomainState::pending, "", *poll_at, false);
                out.push_back({d.name, std::nullopt, pending_message(*poll_at)});
            }
            return out;
        }
    }
    std::vector<std::int64_t> gens;
    if (failure.ok()) {
        auto committed = m_store.commit(requests, move_now);
        if (committed.ok()) {
            gens = std::move(committed).value();
        } else {
            failure = committed.status();
        }
    }
    if (!failure.ok()) {
        for (const auto& d : members) {
            // Never sooner than the CA asked (Retry-After on a rate limit or a busy server).
            Duration wait = std::max(jittered_backoff(d.failures + 1, random_unit()),
                                     failure.retry_after().value_or(Duration::zero()));
            (void)m_store.set_state(d.name, failed_state, failure.message(), now + wait, true);
        }
    }
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
