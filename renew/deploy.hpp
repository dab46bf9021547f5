// What follows a commit, for the daemon's scheduler and `certfsctl renew` alike: the committed
// domains that have deploy hooks are marked `hooks`, the caller's wait for the flip runs
// (flip.hpp), each
// hook command runs once for the batch (hooks.hpp), and every domain's outcome is recorded
// (hook_error, shown by `certfsctl list`) before it returns to `monitoring`.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "renew/flip.hpp"
#include "renew/hooks.hpp"
#include "renew/renewer.hpp"
#include "store/store.hpp"

namespace certfs::renew {

// The hook settings every process uses for the store at `db_path`, opened with `key` (nullptr:
// none): lock files beside the store, CERTFS_DB, and CERTFS_STORE_KEY naming the key's file as
// an absolute path. The mount point is left to the caller.
HookOptions hook_options(const std::string& db_path, const std::shared_ptr<const store::StoreKey>& key);

// The hook settings of a process other than the daemon: lock files beside the store, and the
// mount point the daemon recorded in the store (store/mount.hpp; none when no daemon has
// mounted the store, or its mount has ended), whose flips the hooks wait for through the mount
// (mount_flip_waiter(), which says what goes wrong through `warn`).
struct DeploySettings {
    HookOptions hooks;
    FlipWaiter wait_for_flip; // empty without a mount: hooks run right after the commit
};
DeploySettings deploy_settings(store::Store& store, Warn warn);

// Runs the hooks of the domains `outcomes` committed (those with a generation). wait_for_flip
// (when not empty) is called once with the domains that have hooks and their new generations,
// after they are marked and before any hook runs, and only when some domain has a hook.
// Returns the runs, in the order hooks.hpp runs them.
std::vector<HookRun> deploy(store::Store& store, const std::vector<RenewOutcome>& outcomes, const HookOptions& options,
                            const FlipWaiter& wait_for_flip);

} // namespace certfs::renew
