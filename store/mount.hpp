// What a mounted daemon tells other processes through the store's settings table: where it
// serves the store and its pin window, so that `certfsctl renew` runs its deploy hooks after
// the flip and with CERTFS_LIVE_DIR, as the daemon does (docs/hooks.md). The daemon records
// them when it mounts and forgets them when it unmounts; the setting keys live only here.
#pragma once

#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/handles.hpp"
#include "core/status.hpp"

namespace certfs::store {

class Store;

struct MountSettings {
    std::string mountpoint; // empty: no daemon serves the store
    Duration pin_window{0}; // how long after a commit new opens see it; zero without a mount
};

// Where the per-command lock files of deploy hooks live: beside the store file, so that every
// process using that store (daemon, certfsctl) serialises on the same locks.
std::string hooks_lock_dir(std::string_view db_path);

// Who uses the store's keys with the store key they started with: each certfs daemon serving it
// holds a shared flock on <db>.use.lock for as long as it runs, and `certfsctl rekey-store`
// an exclusive one while it reseals. So rekey-store refuses while a daemon serves the store
// (whose mount would fail to open every key it had not loaded yet), and a daemon refuses to
// start during a rekey. The kernel drops the lock of a process that dies.
class StoreUse {
public:
    enum class Mode { serve, rekey };
    // Takes the lock without waiting: Conflict, naming the other side, when it is held.
    static Result<StoreUse> take(std::string_view db_path, Mode mode);
    StoreUse(StoreUse&&) noexcept = default;
    StoreUse& operator=(StoreUse&&) noexcept = default;

private:
    explicit StoreUse(UniqueFd fd) : m_fd(std::move(fd)) {}
    UniqueFd m_fd;
};

// The extended attribute of <mountpoint>/live/<name>/ that tells which generation new opens of
// the domain get now (decimal), whichever generation's directory the path names: what
// `certfsctl renew` waits on before it runs deploy hooks (renew/flip.hpp). Served by fs/.
inline constexpr char k_generation_xattr[] = "user.certfs.generation";

// Records `mount` (the daemon, once mounted).
Status save_mount(Store& store, const MountSettings& mount);

// The recorded mount; an empty one when none is recorded or its mount has ended. A pin window
// that is not a number is logged (spdlog::warn) and read as zero, keeping the mount point.
MountSettings load_mount(Store& store);

// The mount at `mountpoint` has ended. Left alone when another daemon has recorded its own
// mount since.
Status forget_mount(Store& store, std::string_view mountpoint);

} // namespace certfs::store
