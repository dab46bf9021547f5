// The renewal pipeline shared by `certfsctl renew` and (next) the daemon's scheduler:
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
#include "store/store.hpp"

namespace certfs::renew {

// When a domain's current certificate is due: not_after - renew_before, where renew_before
// defaults to a third of the lifetime (half for lifetimes under 10 days).
std::optional<TimePoint> renew_at(const store::Domain& domain);

// The delay before the next attempt after `failures` failures in a row: 1 min doubling to 6 h.
Duration backoff_delay(std::int64_t failures);

inline constexpr Duration k_lease_ttl = std::chrono::minutes(10);

struct RenewOutcome {
    std::string domain;
    std::optional<std::int64_t> generation; // set when a new generation was committed
    std::string message;                    // "renewed: generation 3", "not due until ..."
};

class Renewer {
public:
    // owner names this process in leases ("certfsctl pid 123").
    Renewer(store::Store& store, std::string owner);

    // Issues generation 1 for a domain that is not in the store yet and adds both in one
    // transaction. Nothing is stored when issuing fails.
    Result<std::int64_t> add_and_issue(const store::DomainConfig& config);

    // Renews `name` and every other member of its bundle, in one commit. Without force, does
    // nothing unless a member is due (or its backoff delay has passed). On failure the error
    // is recorded on every member (state backoff, last_error, next_attempt) and returned; the
    // current generations keep serving.
    Result<std::vector<RenewOutcome>> renew(std::string_view name, bool force);

private:
    Result<store::GenerationInput> issue_for(const store::Domain& domain, store::Reason reason);

    store::Store& m_store;
    std::string m_owner;
};

} // namespace certfs::renew
