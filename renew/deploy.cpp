#include "renew/deploy.hpp"

#include <filesystem>
#include <map>

#include <spdlog/spdlog.h>

#include "store/mount.hpp"

namespace certfs::renew {

HookOptions hook_options(const std::string& db_path, const std::shared_ptr<const store::StoreKey>& key)
{
    HookOptions out;
    out.lock_dir = store::hooks_lock_dir(db_path);
    out.db_path = db_path;
    if (key) {
        std::error_code ec; // no working directory: the path as given
        const std::filesystem::path path = std::filesystem::absolute(key->source(), ec);
        out.store_key_file = ec ? key->source() : path.lexically_normal().string();
    }
    return out;
}

DeploySettings deploy_settings(store::Store& store, Warn warn)
{
    DeploySettings out;
    out.hooks = hook_options(store.path(), store.key());
    const store::MountSettings mount = store::load_mount(store);
    if (!mount.mountpoint.empty()) {
        out.hooks.mountpoint = mount.mountpoint;
        out.wait_for_flip = mount_flip_waiter(mount.mountpoint, mount.pin_window, std::move(warn));
    }
    return out;
}

std::vector<HookRun> deploy(store::Store& store, const std::vector<RenewOutcome>& outcomes, const HookOptions& options,
                            const FlipWaiter& wait_for_flip)
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
            if (d->hooks_owed) {
                (void)store.set_hook_error(d->name, "", *o.generation); // its hooks were removed since
            }
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
    if (wait_for_flip) {
        std::vector<FlipTarget> targets;
        for (const auto& c : committed) {
            targets.push_back({c.name, c.generation});
        }
        wait_for_flip(store, targets);
    }
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
        (void)store.set_hook_error(c.name, errors[c.name], c.generation); // paid, failed or not
        (void)store.set_state(c.name, store::DomainState::monitoring, "", std::nullopt, false);
    }
    return runs;
}

} // namespace certfs::renew
