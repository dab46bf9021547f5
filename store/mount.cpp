#include "store/mount.hpp"

#include <spdlog/spdlog.h>

#include "store/store.hpp"

namespace certfs::store {

namespace {

constexpr std::string_view k_mountpoint_key = "mountpoint";
constexpr std::string_view k_pin_window_key = "pin_window_ms";

} // namespace

std::string hooks_lock_dir(std::string_view db_path) { return std::string(db_path) + ".hooks"; }

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
