#include "store/mount.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "store/store.hpp"

namespace certfs::store {

namespace {

constexpr std::string_view k_mountpoint_key = "mountpoint";
constexpr std::string_view k_pin_window_key = "pin_window_ms";

} // namespace

std::string hooks_lock_dir(std::string_view db_path) { return std::string(db_path) + ".hooks"; }

Result<StoreUse> StoreUse::take(std::string_view db_path, Mode mode)
{
    // One lock file for every name of the store: a symlink to it, or a relative path, names the
    // same database to SQLite.
    std::error_code ec;
    const std::filesystem::path resolved = std::filesystem::weakly_canonical(std::filesystem::path(db_path), ec);
    const std::string store_path = ec ? std::string(db_path) : resolved.string();
    const std::string path = store_path + ".use.lock";
    // Close-on-exec: a hook the daemon starts must not keep the lock after the daemon ends.
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!fd && errno == EROFS) {
        // A read-only filesystem: flock works on a descriptor for reading, and where there is no
        // lock file to read nobody can rekey the store either.
        fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
        if (!fd && errno == ENOENT) {
            spdlog::warn("{} is on a read-only filesystem and has no {}: certfs runs without it, so a "
                         "rekey-store once the filesystem is writable again would not see it",
                         store_path, path);
            return StoreUse(UniqueFd());
        }
    }
    if (!fd) {
        return errno_status("cannot open " + path);
    }
    while (::flock(fd.get(), (mode == Mode::serve ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            return Status::Conflict(
                mode == Mode::serve
                    ? "certfsctl rekey-store is resealing the store's keys: start certfs once it is done"
                    : "certfs is serving this store (its mounts are the fuse.certfs lines of /proc/mounts that name " +
                          store_path +
                          "), and opens keys with the store key it started with: stop it, run rekey-store, then start "
                          "it with the new key");
        }
        if (errno != EINTR) {
            return errno_status("cannot lock " + path);
        }
    }
    return StoreUse(std::move(fd));
}

Status save_mount(Store& store, const MountSettings& mount)
{
    TRY(store.set_setting(k_mountpoint_key, mount.mountpoint));
    return store.set_setting(k_pin_window_key, std::to_string(mount.pin_window.count()));
}

MountSettings load_mount(Store& store)
{
    MountSettings out;
    auto mountpoint = store.setting(k_mountpoint_key);
    if (!mountpoint.ok() || mountpoint->empty()) {
        return out; // no daemon serves this store
    }
    out.mountpoint = *mountpoint;
    if (auto ms = store.setting(k_pin_window_key); ms.ok()) {
        try {
            out.pin_window = Duration(std::stoll(*ms));
        } catch (const std::exception&) {
            // Only a daemon writes it; a hand-edited store should not stop certfsctl's hooks.
            spdlog::warn("the store's {} setting is not a number: '{}'", k_pin_window_key, *ms);
        }
    }
    return out;
}

Status forget_mount(Store& store, std::string_view mountpoint)
{
    if (auto recorded = store.setting(k_mountpoint_key); recorded.ok() && *recorded == mountpoint) {
        return store.set_setting(k_mountpoint_key, "");
    }
    return Status::Ok();
}

} // namespace certfs::store
