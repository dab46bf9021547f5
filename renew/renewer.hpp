// The renewal pipeline shared by `certfsctl renew` and the daemon's scheduler:
// lease -> key -> CSR -> issuer -> one commit for the whole bundle -> release.
//
// A Renewer uses one Store and so one thread at a time. Two Renewers on one store file (two
// processes, or a daemon and certfsctl) never both renew a domain: the lease refuses the
// second, and the commit is conditional on the generation the renewal started from.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "renew/issuer.hpp"
#include "store/lease.hpp"
#include "store/store.hpp"

namespace certfs::renew {

// When the current certificate was issued: the later of its not_before and its commit, since
// CAs backdate not_before (the local CA by 5 minutes, ACME CAs by up to an hour). An imported
// certificate was issued elsewhere, before it was imported: its not_before.
std::optional<TimePoint> issued_at(const store::Domain& domain);

// The earliest a certificate this host issued may be renewed: a quarter of its lifetime (from
// issued_at to not_after) after it was issued, and at least k_min_renewal_gap after. It keeps
// a new generation from being born due: whatever renew_before says, a domain is renewed at
// most four times per lifetime. nullopt for an imported certificate, which no renewal here
// made (and no certificate).
std::optional<TimePoint> renewal_floor(const store::Domain& domain);
inline constexpr Duration k_min_renewal_gap = std::chrono::seconds(1);

// When a domain's current certificate is due: not_after - renew_before, where renew_before
// defaults to a third of the lifetime from issued_at (half for lifetimes under 10 days); never
// before renewal_floor.
std::optional<TimePoint> renew_at(const store::Domain& domain);

// The jitter pulled off a domain's due time: [0, 10%] of its renewal window (not_after minus
// renew_at), drawn from the current certificate's serial number: stable across restarts, new
// with every certificate, different between domains and hosts.
Duration due_jitter(const store::Domain& domain);

// When `domain` should next be renewed: renew_at minus the jitter, but not before
// renewal_floor (or the time picked in the CA's renewal window for the current certificate,
// when earlier, but not sooner than an hour after issue, or the floor when that is sooner), or
// the next attempt after a failure if that is later; at once when it has no certificate.
// nullopt for a domain without an issuer (imported certificates are never renewed).
std::optional<TimePoint> due_at(const store::Domain& domain);

// The state `certfsctl list` shows: the stored one, except that a domain at rest
// (`monitoring`) whose due time has come is shown `due` until a renewal picks it up.
store::DomainState shown_state(const store::Domain& domain, TimePoint now);

// The delay before the next attempt after `failures` failures in a row: 1 min doubling to 6 h.
Duration backoff_delay(std::int64_t failures);

// backoff_delay pulled earlier by up to a fifth (unit in [0, 1]), so that failures of many
// domains or hosts do not retry in lockstep.
Duration jittered_backoff(std::int64_t failures, double unit);
double random_unit(); // uniform in [0, 1), per thread

// The state a failed renewal leaves: backoff when the CA may answer later (unreachable, busy),
// rejected when it refused the request, misconfigured when the issuer needs the admin.
store::DomainState failure_state(const Status& issuer_failure);

inline constexpr Duration k_lease_ttl = std::chrono::minutes(10);

struct RenewOutcome {
    std::string domain;
    std::optional<std::int64_t> generation; // set when a new generation was committed
    std::string message;                    // "renewed: generation 3", "not due until ..."
};

class Renewer {
public:
    // owner names this process in leases ("certfsctl pid 123"). issuers makes the issuer of
    // each renewal; empty: the built-in kinds, with a context of this Renewer's own
    // (or_builtin_issuers), which reuses no connection beyond it.
    // lease_ttl: how long its leases last unless a heartbeat extends them (tests shorten it).
    Renewer(store::Store& store, std::string owner, IssuerFactory issuers = {}, Duration lease_ttl = k_lease_ttl);

    // Issues generation 1 for a domain that is not in the store yet and adds both in one
    // transaction. Nothing is stored when issuing fails. When the CA leaves the request
    // pending, the domain is added without a generation, in state `pending`, with its request
    // kept for the next renewal to poll; the outcome then has no generation.
    Result<RenewOutcome> add_and_issue(const store::DomainConfig& config);

    // Renews `name` and every other member of its bundle, in one commit. Without force, does
    // nothing unless a member is due (due_at), checked again under the lease so that a
    // renewal that another process finished meanwhile is not done twice. On failure the error
    // is recorded on every member (state backoff, last_error, next_attempt) and returned; the
    // current generations keep serving.
    //
    // A member whose request the CA leaves pending keeps it in the store (key, CSR, cookie),
    // and so does every member already issued in the same batch: the bundle commits when the
    // last member is issued, by a later renew() that polls (the daemon's, at next_attempt, or
    // certfsctl's). Meanwhile every member is in state `pending`, and the outcomes say so.
    // With move_now the commit moves every reader at once (`renew --now`, store::Store::commit).
    // With hold, the scope's lease, when taken, is moved there instead of released on return:
    // the caller keeps it through the deploy hooks (batch.hpp).
    Result<std::vector<RenewOutcome>> renew(std::string_view name, bool force, bool move_now = false,
                                            std::optional<store::LeaseGuard>* hold = nullptr);

private:
    // One member's step: a generation ready to commit (`ready`), or a request still pending at
    // the CA. `request` is what the store keeps for it either way.
    struct Step {
        std::optional<store::GenerationInput> ready;
        store::PendingRequest request;
    };
    // Submits a new request for `domain`, or polls the one the store keeps for it, or takes
    // the certificate it already holds. issuer_failed, when given, is set when the issuer (not
    // the key, the CSR or the store) failed.
    Result<Step> advance(const store::Domain& domain, store::Reason reason, bool* issuer_failed = nullptr);

    store::Store& m_store;
    std::string m_owner;
    IssuerFactory m_issuers;
    Duration m_lease_ttl;
};

} // namespace certfs::renew
