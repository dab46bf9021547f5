#include "renew/batch.hpp"

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "renew/deploy.hpp"
#include "renew/recovery.hpp"

namespace certfs::renew {

std::vector<std::string> one_per_scope(store::Store& store, const std::vector<std::string>& names)
{
    std::vector<std::string> out;
    std::set<std::string> covered;
    for (const auto& name : names) {
        if (!covered.insert(name).second) {
            continue;
        }
        out.push_back(name);
        if (auto d = store.get_domain(name); d.ok() && d->bundle) {
            if (auto members = store.bundle_members(*d->bundle); members.ok()) {
                for (const auto& member : *members) {
                    covered.insert(member.name);
                }
            }
        }
    }
    return out;
}

namespace {

BatchOptions with_issuers(BatchOptions options)
{
    options.issuers = or_builtin_issuers(std::move(options.issuers));
    return options;
}

} // namespace

BatchRunner::BatchRunner(BatchOptions options) : m_options(with_issuers(std::move(options))) {}

Result<std::unique_ptr<store::Store>> BatchRunner::open() const
{
    return store::Store::open(m_options.db_path, {.create = false, .actor = m_options.actor, .clock = m_options.clock},
                              m_options.store_key);
}

ScopeResult BatchRunner::run_on(store::Store& store, const std::string& name, const OnRenewed& on_renewed) const
{
    ScopeResult result{name, Status::Unavailable("not run"), {}};
    // Held from the renewal through its hooks, so that no one else runs them meanwhile
    // (recovery.hpp: hooks owed with no live lease are run by the next holder).
    std::optional<store::LeaseGuard> lease;
    try {
        Renewer renewer(store, m_options.owner, m_options.issuers, m_options.lease_ttl);
        result.outcomes = renewer.renew(name, m_options.force, m_options.move_now, &lease);
    } catch (...) {
        // The boundary of a renewal: what threw (a malformed stored setting, say) fails this
        // scope only. Nothing was recorded in the store, so the caller sets the next attempt.
        result.outcomes = exception_status("exception");
        result.unrecorded = true;
    }
    if (on_renewed) {
        on_renewed(result.outcomes);
    }
    std::vector<RenewOutcome> batch = result.outcomes.ok() ? *result.outcomes : std::vector<RenewOutcome>{};
    if (result.outcomes.ok() || result.outcomes.status().code() != Code::conflict) {
        // Hooks an earlier renewal of the scope committed but did not run (it crashed).
        append_owed_hooks(store, name, m_options.owner, m_options.lease_ttl, lease, batch);
    }
    if (!batch.empty()) {
        result.runs = deploy(store, batch, m_options.hooks, m_options.wait_for_flip);
    }
    return result;
}

ScopeResult BatchRunner::run_one(const std::string& name, const OnRenewed& on_renewed) const
{
    auto store = open();
    if (!store.ok()) {
        ScopeResult failed{name, store.status(), {}, true};
        if (on_renewed) {
            on_renewed(failed.outcomes);
        }
        return failed;
    }
    return run_on(**store, name, on_renewed);
}

std::vector<ScopeResult> BatchRunner::run(store::Store& store, const std::vector<std::string>& names,
                                          const OnScopeDone& on_done) const
{
    const std::vector<std::string> scopes = one_per_scope(store, names);
    std::vector<ScopeResult> done(scopes.size());
    // The workers' leases outlive a slow CA as the daemon's do (its scheduler runs its own).
    const store::LeaseHeartbeat heartbeat(m_options.db_path, m_options.owner, m_options.lease_ttl, m_options.heartbeat,
                                          m_options.clock);
    std::atomic<std::size_t> next{0};
    std::mutex ended_mutex;
    std::size_t ended = 0; // guarded by ended_mutex
    // A worker keeps its connection for every scope it takes; one that cannot open one
    // reports why for each.
    auto work = [&] {
        auto own = open();
        for (std::size_t i = next++; i < scopes.size(); i = next++) {
            try {
                done[i] = own.ok() ? run_on(**own, scopes[i], {}) : ScopeResult{scopes[i], own.status(), {}, true};
            } catch (...) {
                // the boundary of a worker thread: its deploy hooks threw
                done[i] = ScopeResult{scopes[i], exception_status(scopes[i] + ": deploy hooks failed"), {}, true};
            }
            if (on_done) {
                std::lock_guard lock(ended_mutex);
                on_done(done[i], ++ended, scopes.size());
            }
        }
    };
    std::vector<std::thread> workers;
    for (int j = 1; j < std::min<int>(m_options.jobs, static_cast<int>(scopes.size())); ++j) {
        workers.emplace_back(work);
    }
    work();
    for (auto& w : workers) {
        w.join();
    }
    return done;
}

} // namespace certfs::renew
