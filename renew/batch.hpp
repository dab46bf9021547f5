// One way to renew, for the daemon's scheduler and `certfsctl renew` alike: each renewal is a
// scope (a domain, or a whole bundle) renewed by Renewer::renew() on a store connection of its
// own, then, once its commit is visible (the flip, as the filesystem makes it: flip.hpp), its
// deploy hooks run once for the batch (deploy.hpp). run() de-duplicates the names it is given
// into scopes and renews up to `jobs` scopes at once; the scheduler plans which scopes are due
// itself and hands each to run_one() on a worker of its own.
//
// Thread-safety: a BatchRunner is immutable after construction; run() and run_one() may be
// called from several threads at once. Errors: every failure is in the scope's result, none
// is logged here; an exception from a renewal becomes its scope's result (`unrecorded`).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "renew/flip.hpp"
#include "renew/hooks.hpp"
#include "renew/issuer.hpp"
#include "renew/renewer.hpp"

namespace certfs::renew {

struct BatchOptions {
    std::string db_path;
    std::shared_ptr<const store::StoreKey> store_key; // opens the store's secrets (store_key.hpp)
    std::string actor;                                // for the event log ("certfs pid 123", "certfsctl uid=0")
    std::string owner;                                // names this process in leases ("certfsctl pid 123")
    const Clock* clock = nullptr;                     // defaults to the system clock
    IssuerFactory issuers;                            // empty: or_builtin_issuers, one context for the runner
    bool force = false;                               // renew even when nothing in the scope is due
    bool move_now = false;                            // move every reader at once (`renew --now`)
    HookOptions hooks;
    FlipWaiter wait_for_flip; // before each batch's hooks; empty: they run right after the commit
    int jobs = 4;             // scopes renewed at once by run()
    // How long a lease lasts, and how often run()'s heartbeat extends the leases of `owner`
    // while it renews (store/lease.hpp, LeaseHeartbeat). Tests shorten both.
    Duration lease_ttl = k_lease_ttl;
    Duration heartbeat = std::chrono::minutes(1);
};

// The outcome of one scope: `name` is the domain the renewal was asked for (the first of its
// bundle among the names given), `outcomes` its members' (or why it failed), `runs` its deploy
// hooks', in the order hooks.hpp runs them. No hook runs for a failed renewal; hooks that an
// earlier renewal of the scope still owes (it crashed, recovery.hpp) run unless another
// process holds the scope.
struct ScopeResult {
    std::string name;
    Result<std::vector<RenewOutcome>> outcomes = Status::Unavailable("not run");
    std::vector<HookRun> runs;
    // The failure is not in the store (an exception ended the renewal, or no connection to the
    // store could be opened), so nothing set the next attempt: the caller must.
    bool unrecorded = false;
};

// The names to renew one per scope: each name once, and of a bundle only the first member
// named, in the order given. A name `store` cannot read is kept: its renewal reports why.
std::vector<std::string> one_per_scope(store::Store& store, const std::vector<std::string>& names);

class BatchRunner {
public:
    explicit BatchRunner(BatchOptions options);

    // Called with a scope's outcomes (or its failure) as soon as they are known, before its
    // hooks wait for the flip, on the scope's thread: the daemon logs them there.
    using OnRenewed = std::function<void(const Result<std::vector<RenewOutcome>>& outcomes)>;

    // Renews `name`'s scope on a connection of its own and runs its hooks after the flip. The
    // wait for the flip is not cut short: a hook run before it would reload the old files.
    ScopeResult run_one(const std::string& name, const OnRenewed& on_renewed = {}) const;

    // Called by run() as each scope ends (its hooks run too), with how many have ended and of
    // how many; one call at a time, on the thread that ran the scope.
    using OnScopeDone = std::function<void(const ScopeResult& result, std::size_t ended, std::size_t total)>;

    // one_per_scope(names), then up to `jobs` scopes at once, each worker on a connection of
    // its own; returns when every scope and its hooks are done, the results in that order.
    // Meanwhile a heartbeat extends the leases of `owner` (run_one's caller runs its own).
    std::vector<ScopeResult> run(store::Store& store, const std::vector<std::string>& names,
                                 const OnScopeDone& on_done = {}) const;

private:
    ScopeResult run_on(store::Store& store, const std::string& name, const OnRenewed& on_renewed) const;
    Result<std::unique_ptr<store::Store>> open() const;

    BatchOptions m_options;
};

} // namespace certfs::renew
