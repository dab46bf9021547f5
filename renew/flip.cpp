#include "renew/flip.hpp"

#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "core/handles.hpp"
#include "store/mount.hpp"

namespace certfs::renew {

namespace {

// The filesystem's own timing (fs/filesystem.hpp, fs/watcher.hpp): it sees a commit within its
// poll (0.1 s), drops the kernel's entries at once and again up to 0.1 s later, and flips a
// window after that second drop. One more tenth of a second is slack for a loaded machine.
constexpr Duration k_flip_overhead = std::chrono::milliseconds(300);

struct Pending {
    FlipTarget target;
    std::optional<std::int64_t> shown; // what `visible` last showed
    Status error = Status::Ok();       // why it could not tell, when it never could
};

// True when the flip of t will never come: the store has moved on from its generation (a later
// renewal or a rollback), or the domain is gone. Its hooks need not wait for it.
bool superseded(store::Store& store, const FlipTarget& t)
{
    auto d = store.get_domain(t.domain);
    return !d.ok() || d->current_gen != t.generation;
}

} // namespace

Duration flip_timeout(Duration pin_window)
{
    return std::max<Duration>(std::chrono::seconds(10), 4 * pin_window + k_flip_overhead);
}

Duration flip_fallback(Duration pin_window) { return pin_window + k_flip_overhead; }

FlipWaiter flip_waiter(FlipWatch watch)
{
    auto unreadable_said = std::make_shared<std::atomic<bool>>(false);
    return [watch = std::move(watch), unreadable_said](store::Store& store, const std::vector<FlipTarget>& targets) {
        const auto start = std::chrono::steady_clock::now();
        std::vector<Pending> pending;
        for (const auto& t : targets) {
            pending.push_back({t, std::nullopt, Status::Ok()});
        }
        while (true) {
            std::erase_if(pending, [&](Pending& p) {
                auto shown = watch.visible(p.target.domain);
                if (shown.ok()) {
                    if (*shown == p.target.generation) {
                        return true;
                    }
                    p.shown = *shown;
                } else if (!p.shown) {
                    p.error = shown.status();
                }
                return superseded(store, p.target);
            });
            if (pending.empty()) {
                return;
            }
            const auto waited = std::chrono::steady_clock::now() - start;
            if (waited >= watch.fallback) {
                // What the filesystem never showed: its flip came by the filesystem's timing.
                std::erase_if(pending, [&](const Pending& p) {
                    if (p.shown) {
                        return false;
                    }
                    if (!unreadable_said->exchange(true)) {
                        watch.warn("cannot tell when " + p.target.domain + " flips on " + watch.source + " (" +
                                   p.error.message() + "): deploy hooks run " + format_duration(watch.fallback) +
                                   " after the commit instead");
                    }
                    return true;
                });
            }
            if (waited >= watch.timeout) {
                for (const auto& p : pending) {
                    watch.warn(p.target.domain + ": generation " + std::to_string(p.target.generation) +
                               " is not served to new opens on " + watch.source + " after " +
                               format_duration(watch.timeout) + " (it serves generation " +
                               std::to_string(p.shown.value_or(0)) + "); running its deploy hooks anyway");
                }
                return;
            }
            if (pending.empty()) {
                return;
            }
            std::this_thread::sleep_for(watch.poll);
        }
    };
}

namespace {

// store::k_generation_xattr of the directory open as fd (dir names it in errors).
Result<std::int64_t> generation_of(int fd, const std::string& dir)
{
    char value[32];
    const ssize_t n = ::fgetxattr(fd, store::k_generation_xattr, value, sizeof value);
    if (n < 0) {
        return errno_status("cannot read " + std::string(store::k_generation_xattr) + " of " + dir);
    }
    std::int64_t gen = 0;
    const auto [end, ec] = std::from_chars(value, value + n, gen);
    if (ec != std::errc() || end != value + n) {
        return Status::Unavailable(std::string(store::k_generation_xattr) + " of " + dir + " is not a number: '" +
                                   std::string(value, static_cast<std::size_t>(n)) + "'");
    }
    return gen;
}

Result<UniqueFd> open_live_dir(const std::string& dir)
{
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) {
        return errno_status("cannot open " + dir);
    }
    return fd;
}

} // namespace

Result<std::int64_t> mounted_generation(const std::string& mountpoint, const std::string& domain)
{
    const std::string dir = mountpoint + "/live/" + domain;
    ASSIGN_OR_RETURN(UniqueFd fd, open_live_dir(dir));
    return generation_of(fd.get(), dir);
}

FlipWaiter mount_flip_waiter(const std::string& mountpoint, Duration pin_window, Warn warn)
{
    if (mountpoint.empty()) {
        return {};
    }
    // One descriptor per domain, opened at its first poll and kept: the attribute is the
    // domain's, whichever generation's directory it names, and a lookup of live/<name> every
    // poll would make this process a reader that never pauses to the filesystem's pins (a
    // notice in the daemon's log, and a transition held open longer).
    struct Dirs {
        std::mutex mutex;
        std::map<std::string, UniqueFd> open; // by domain; guarded by mutex
    };
    auto dirs = std::make_shared<Dirs>();
    auto visible = [mountpoint, dirs](const std::string& domain) -> Result<std::int64_t> {
        const std::string dir = mountpoint + "/live/" + domain;
        std::lock_guard lock(dirs->mutex);
        auto it = dirs->open.find(domain);
        if (it == dirs->open.end()) {
            ASSIGN_OR_RETURN(UniqueFd fd, open_live_dir(dir));
            it = dirs->open.emplace(domain, std::move(fd)).first;
        }
        auto gen = generation_of(it->second.get(), dir);
        if (!gen.ok()) {
            dirs->open.erase(it); // removed meanwhile, or the mount went: open it again next time
        }
        return gen;
    };
    return flip_waiter({.visible = std::move(visible),
                        .source = "the mount " + mountpoint,
                        .timeout = flip_timeout(pin_window),
                        .fallback = flip_fallback(pin_window),
                        .warn = std::move(warn)});
}

} // namespace certfs::renew
