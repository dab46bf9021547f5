#include "renew/recovery.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

namespace certfs::renew {

namespace {

constexpr Duration k_owed_hooks_poll = std::chrono::minutes(1); // see owed_hooks_at()

bool in_batch(const std::vector<RenewOutcome>& batch, const std::string& name)
{
    return std::any_of(batch.begin(), batch.end(),
                       [&](const RenewOutcome& o) { return o.domain == name && o.generation; });
}

Result<std::vector<store::Domain>> scope_members(store::Store& store, const std::string& name)
{
    ASSIGN_OR_RETURN(store::Domain domain, store.get_domain(name));
    if (domain.bundle) {
        return store.bundle_members(*domain.bundle);
    }
    return std::vector<store::Domain>{std::move(domain)};
}

} // namespace

void recover(store::Store& store)
{
    auto notes = store.recover_abandoned();
    if (!notes.ok()) {
        spdlog::warn("recovery: {}", notes.status().message());
        return;
    }
    for (const auto& note : *notes) {
        spdlog::warn("recovery: {}", note);
    }
}

void append_owed_hooks(store::Store& store, const std::string& name, const std::string& owner, Duration lease_ttl,
                       std::optional<store::LeaseGuard>& lease, std::vector<RenewOutcome>& batch)
{
    auto members = scope_members(store, name);
    if (!members.ok() || std::none_of(members->begin(), members->end(), [&](const store::Domain& d) {
            return d.hooks_owed && !in_batch(batch, d.name);
        })) {
        return;
    }
    if (!lease) {
        auto taken = store::LeaseGuard::acquire(store, store::lease_scope(members->front()), owner, lease_ttl);
        if (!taken.ok()) {
            spdlog::info("{}: deploy hooks owed, left to the scope's holder: {}", name, taken.status().message());
            return;
        }
        lease.emplace(std::move(taken).value());
        members = scope_members(store, name); // again under the lease: they may have run meanwhile
        if (!members.ok()) {
            return;
        }
    }
    for (const auto& d : *members) {
        if (d.hooks_owed && d.current_gen && !in_batch(batch, d.name)) {
            spdlog::info("{}: running the deploy hooks owed since generation {} (a renewal ended before them), for "
                         "generation {}",
                         d.name, *d.hooks_owed, *d.current_gen);
            batch.push_back(
                {d.name, d.current_gen, "deploy hooks owed since generation " + std::to_string(*d.hooks_owed)});
        }
    }
}

std::optional<TimePoint> owed_hooks_at(const std::vector<store::Domain>& members, bool held, TimePoint now)
{
    if (std::none_of(members.begin(), members.end(), [](const store::Domain& d) { return d.hooks_owed.has_value(); })) {
        return std::nullopt;
    }
    return held ? now + k_owed_hooks_poll : now;
}

} // namespace certfs::renew
