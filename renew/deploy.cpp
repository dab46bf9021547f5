#include "renew/deploy.hpp"

#include <map>

#include <spdlog/spdlog.h>

namespace certfs::renew {

MountSettings mount_settings(store::Store& store)
{
    MountSettings out;
    out.hooks.lock_dir = store.path() + ".hooks";
    auto mountpoint = store.setting("mountpoint");
    if (!mountpoint.ok() || mountpoint->empty()) {
        return out; // no daemon serves this store: nothing to wait for
    }
    out.hooks.mountpoint = *mountpoint;
    if (auto ms = store.setting("pin_window_ms"); ms.ok()) {
        try {
            out.pin_window = Duration(std::stoll(*ms));
        } catch (const std::exception&) {
            spdlog::warn("the store's pin_window_ms setting is not a number: '{}'", *ms);
        }
    }
    return out;
}

std::vector<HookRun> deploy(store::Store& store, const std::vector<RenewOutcome>& outcomes,
                            const HookOptions& options, const std::function<void()>& wait_for_flip)
{
    std::vector<CommittedDomain> committed;
    for (const auto& o : outcomes) {
        if (!o.generation) {
            continue;
        }
        auto d = store.get_domain(o.domain);
        if (!d.ok()) {
            spdlog::warn("{}: cannot read it to run its hooks: {}", o.domain, d.status().message());
            continue;
        }
        if (d->deploy_hooks.empty()) {
            continue;
        }
        CommittedDomain c{d->name, *o.generation, d->dns_names, d->deploy_hooks};
        c.names.insert(c.names.end(), d->ip_addresses.begin(), d->ip_addresses.end());
        committed.push_back(std::move(c));
        (void)store.set_state(d->name, store::DomainState::hooks, "", std::nullopt, false);
    }
    if (committed.empty()) {
        return {};
    }
    wait_for_flip();
    auto runs = run_hooks(committed, options);
    std::map<std::string, std::string> errors;
    for (const auto& run : runs) {
        if (!run.status.ok()) {
            for (const auto& name : run.domains) {
                auto& e = errors[name];
                e += (e.empty() ? "" : "; ") + run.command + ": " + run.status.message();
            }
        }
    }
    for (const auto& c : committed) {
        (void)store.set_hook_error(c.name, errors[c.name]);
        (void)store.set_state(c.name, store::DomainState::monitoring, "", std::nullopt, false);
    }
    return runs;
}

} // namespace certfs::renew
