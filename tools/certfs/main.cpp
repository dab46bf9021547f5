// certfs: the daemon. Mounts the store read-only with FUSE.
//
//   certfs [--db PATH] [--store-key FILE] [--pin-window DUR] [--max-hold DUR] [--no-renew] [-f] [-o OPTS] MOUNTPOINT
//   certfs DBPATH MOUNTPOINT -o OPTS          (the form mount -t fuse.certfs uses)
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <malloc.h>
#include <pthread.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <thread>

#include <fstream>
#include <future>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include "core/log.hpp"
#include "core/process.hpp"
#include "fs/filesystem.hpp"
#include "renew/context.hpp"
#include "renew/deploy.hpp"
#include "renew/flip.hpp"
#include "renew/scheduler.hpp"
#include "store/mount.hpp"

namespace {

int fail(const std::string& message)
{
    std::cerr << "certfs: " << message << '\n';
    return 1;
}

// Where the store is mounted, for `certfsctl renew`: its hooks run after the flip and get
// CERTFS_LIVE_DIR like the daemon's.
void record_mount(const std::string& db_path, const certfs::store::MountSettings& mount)
{
    auto store = certfs::store::Store::open(db_path, {.create = false, .actor = "certfs", .clock = nullptr});
    auto saved = store.ok() ? certfs::store::save_mount(**store, mount) : store.status();
    if (!saved.ok()) {
        spdlog::warn("cannot record the mount point in the store: {}", saved.message());
    }
}

// The mount has ended: certfsctl's hooks get no CERTFS_LIVE_DIR and need not wait for a flip.
void forget_mount(const std::string& db_path, const std::string& mountpoint)
{
    auto store = certfs::store::Store::open(db_path, {.create = false, .actor = "certfs", .clock = nullptr});
    if (store.ok()) {
        (void)certfs::store::forget_mount(**store, mountpoint);
    }
}

// mount(8) options that mean nothing here. libmount always hands the helper "rw" or "ro"
// first; certfs is read-only whatever it says. dev, suid and exec are overridden below.
bool is_mount_only_option(const std::string& opt)
{
    static const char* const k_ignored[] = {"defaults", "auto", "noauto", "nofail", "_netdev", "user", "users",
                                            "nouser",   "ro",   "rw",     "dev",    "suid",    "exec", "async"};
    for (const char* ignored : k_ignored) {
        if (opt == ignored) {
            return true;
        }
    }
    return opt.rfind("x-", 0) == 0 || opt.rfind("comment=", 0) == 0;
}

// The mount point's entry in /proc/self/mountinfo, if something is mounted exactly there.
// The type of what is mounted on `mountpoint` (the topmost of stacked mounts), if anything.
std::optional<std::string> mounted_fs_type(const std::string& mountpoint)
{
    std::ifstream info("/proc/self/mountinfo");
    std::optional<std::string> top;
    for (std::string line; std::getline(info, line);) {
        std::istringstream fields(line);
        std::string id, parent, dev, root, point;
        fields >> id >> parent >> dev >> root >> point;
        if (point != mountpoint) {
            continue;
        }
        std::string field;
        while (fields >> field && field != "-") {
        }
        std::string type;
        fields >> type;
        top = type;
    }
    return top;
}

// A certfs daemon that was killed (SIGKILL, the OOM killer, a crash) leaves its mount behind
// with no one to answer it: every request fails with ENOTCONN, and the next start found its
// mount point busy. Such a mount of certfs, and only of certfs, is unmounted lazily
// (MNT_DETACH, or fusermount3 -uz when not root), so that the new daemon mounts in its place
// without an admin. Processes that still hold files of the dead mount open keep getting
// ENOTCONN from them until they open again, which reaches the new mount. Returns what was
// done, to log, or an error for a dead mount of something else.
// Whether the FUSE daemon behind `mountpoint` answers: statfs always reaches it (a stat may be
// answered from the attributes the kernel cached, dead or not). A daemon that is alive but
// stopped or stuck does not answer either; the probe gives up on it after two seconds, and its
// thread stays blocked until this process exits (FUSE waits end at a fatal signal).
enum class Answer { alive, dead, silent };
Answer probe_mount(const std::string& mountpoint)
{
    auto answer = std::make_shared<std::promise<int>>();
    std::future<int> got = answer->get_future();
    std::thread([mountpoint, answer] {
        struct statfs sf {};
        answer->set_value(::statfs(mountpoint.c_str(), &sf) == 0 ? 0 : errno);
    }).detach();
    if (got.wait_for(std::chrono::seconds(2)) != std::future_status::ready) {
        return Answer::silent;
    }
    return got.get() == ENOTCONN ? Answer::dead : Answer::alive;
}

certfs::Result<std::string> recover_dead_mount(const std::string& mountpoint)
{
    std::string done;
    for (int round = 0; round < 8; ++round) {
        // Only a certfs mount is ours to take away; anything else is left to the busy check.
        if (mounted_fs_type(mountpoint) != "fuse.certfs" || probe_mount(mountpoint) != Answer::dead) {
            return done;
        }
        if (::umount2(mountpoint.c_str(), MNT_DETACH) != 0) {
            const int err = errno;
            auto r = certfs::run_program({"fusermount3", "-u", "-z", mountpoint}, {});
            if (!r.ok()) {
                return certfs::errno_status("cannot unmount the dead certfs mount on " + mountpoint, err);
            }
            if (!r->succeeded()) {
                return certfs::Status::IoError("cannot unmount the dead certfs mount on " + mountpoint + ": " +
                                               (r->errors.empty() ? r->describe(std::chrono::minutes(5)) : r->errors));
            }
        }
        done = "mount point " + mountpoint +
               " was left by a certfs daemon that died: unmounted it; processes that held its files open get "
               "ENOTCONN from them until they open them again";
    }
    if (mounted_fs_type(mountpoint) == "fuse.certfs" && probe_mount(mountpoint) == Answer::dead) {
        return certfs::Status::Unavailable("mount point " + mountpoint + " still has a dead certfs mount on it");
    }
    return done;
}

// glibc gives threads that contend for malloc arenas of their own, up to 8 per core, and an
// arena keeps the memory freed into it. The daemon's threads come and go (libfuse's workers, a
// worker per renewal), so its RSS grew in steps as new threads happened onto new arenas: in
// test_soak, from 1,000 to 2,000 renewals, at most 4.9% with 2 arenas and up to 11% without a
// bound. An admin's MALLOC_ARENA_MAX or GLIBC_TUNABLES wins.
void bound_malloc_arenas()
{
    if (std::getenv("MALLOC_ARENA_MAX") == nullptr && std::getenv("GLIBC_TUNABLES") == nullptr) {
        (void)mallopt(M_ARENA_MAX, 2);
    }
}

} // namespace

int main(int argc, char** argv)
{
    bound_malloc_arenas();
    if (auto s = certfs::forbid_core_dumps(); !s.ok()) {
        return fail(s.message());
    }
    CLI::App app{"certfs: serve TLS keys and certificates from the certfs store as a read-only filesystem"};
    std::vector<std::string> positional;
    std::string db_path = certfs::store::k_default_db_path;
    std::string pin_window = "2s";
    std::string max_hold = "1h";
    bool no_renew = false;
    bool foreground = false;
    std::vector<std::string> options;
    app.add_option("--db", db_path, "The store")->envname("CERTFS_DB");
    std::string store_key_path;
    app.add_option("--store-key", store_key_path,
                   "The key that seals the store's private keys (default $CERTFS_STORE_KEY, or the systemd "
                   "credential certfs-store-key)");
    auto check_duration = [](const std::string& text) {
        auto d = certfs::parse_duration(text);
        return d.ok() ? std::string() : d.status().message();
    };
    app.add_option("--pin-window", pin_window, "Pin window (default 2s)")->check(check_duration);
    app.add_option("--max-hold", max_hold, "Longest a reader that never pauses keeps an older generation (default 1h)")
        ->check([&](const std::string& text) {
            auto d = certfs::parse_duration(text);
            if (!d.ok()) {
                return d.status().message();
            }
            return *d > std::chrono::days(3650) ? std::string("at most 10y") : std::string();
        });
    app.add_flag("--no-renew", no_renew, "Do not run the renewal scheduler");
    app.add_flag("-f,--foreground", foreground, "Stay in the foreground and log to stderr");
    app.add_option("-o", options, "Mount options (allow_other, hide_archive, ...)")->allow_extra_args(false);
    app.add_option("DB_OR_MOUNTPOINT", positional, "[DBPATH] MOUNTPOINT")->expected(1, 2)->required();
    app.set_version_flag("--version", "certfs " CERTFS_VERSION);
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "certfs: " << e.what() << " (see certfs --help)\n";
        return 2;
    }
    if (positional.size() == 2) {
        db_path = positional[0];
    }
    // The daemon changes to / when it starts serving.
    db_path = std::filesystem::absolute(db_path).lexically_normal().string();
    std::string mountpoint = positional.back();

    // As /proc/self/mountinfo names it: its parent resolved (a dead mount point itself cannot be).
    std::filesystem::path mountpoint_abs = std::filesystem::absolute(mountpoint).lexically_normal();
    if (mountpoint_abs.filename().empty()) {
        mountpoint_abs = mountpoint_abs.parent_path();
    }
    {
        std::error_code parent_ec;
        auto parent = std::filesystem::canonical(mountpoint_abs.parent_path(), parent_ec);
        if (!parent_ec) {
            mountpoint_abs = parent / mountpoint_abs.filename();
        }
    }
    const std::string mountpoint_path = mountpoint_abs.string();
    auto store_key = certfs::store::StoreKey::from_environment(store_key_path);
    if (!store_key.ok()) {
        return fail(store_key.status().message());
    }
    auto recovered = recover_dead_mount(mountpoint_path);
    if (!recovered.ok()) {
        return fail(recovered.status().message());
    }
    std::error_code ec;
    auto canonical = std::filesystem::canonical(mountpoint, ec);
    if (ec || !std::filesystem::is_directory(canonical)) {
        return fail("mount point " + mountpoint + " is not a directory");
    }
    mountpoint = canonical.string();
    if (auto type = mounted_fs_type(mountpoint)) {
        return fail("mount point " + mountpoint + " is busy: " + *type + " is already mounted there");
    }

    std::vector<std::string> fuse_opts{"ro", "default_permissions", "fsname=" + db_path, "subtype=certfs"};
    bool hide_archive = false; // certfs's own option, not libfuse's
    for (const auto& group : options) {
        std::istringstream split(group);
        for (std::string opt; std::getline(split, opt, ',');) {
            if (opt.empty() || is_mount_only_option(opt)) {
                continue;
            }
            if (opt == "hide_archive") {
                hide_archive = true;
                continue;
            }
            fuse_opts.push_back(opt);
        }
    }
    // Last, so that nothing given before can turn them off.
    fuse_opts.insert(fuse_opts.end(), {"nosuid", "nodev", "noexec"});
    std::string joined;
    for (const auto& o : fuse_opts) {
        joined += (joined.empty() ? "" : ",") + o;
    }

    const certfs::SystemClock clock;
    certfs::renew::SchedulerOptions renew_options;
    renew_options.db_path = db_path;
    renew_options.store_key = *store_key;
    renew_options.owner = "certfs pid " + std::to_string(::getpid()); // set again after detaching
    const certfs::Duration window = certfs::parse_duration(pin_window).value();
    renew_options.hooks =
        certfs::renew::hook_options(db_path, *store_key); // an absolute path, before fuse_daemonize() changes to /
    renew_options.hooks.mountpoint = mountpoint;
    // What the renewals of this daemon share (connections, the http-01 servers).
    renew_options.issuers = certfs::renew::builtin_issuers(std::make_shared<certfs::renew::RenewContext>());
    std::unique_ptr<certfs::renew::Scheduler> scheduler;

    certfs::fs::Options fs_options;
    fs_options.db_path = db_path;
    fs_options.store_key = *store_key;
    fs_options.pin_window = window;
    fs_options.max_hold = certfs::parse_duration(max_hold).value();
    fs_options.hide_archive = hide_archive;
    std::atomic<certfs::renew::Scheduler*> wake_target{nullptr};
    fs_options.on_store_change = [&wake_target] {
        if (auto* s = wake_target.load()) {
            s->wake(); // a new domain, certfsctl renew, a rollback: plan again
        }
    };
    // Held for the daemon's life, through fuse_daemonize's fork, and taken before the store is
    // opened with our store key: rekey-store refuses while we run. A missing store: create()
    // says so.
    std::optional<certfs::store::StoreUse> store_use;
    if (std::error_code missing; std::filesystem::exists(db_path, missing)) {
        auto use = certfs::store::StoreUse::take(db_path, certfs::store::StoreUse::Mode::serve);
        if (!use.ok()) {
            return fail(use.status().message());
        }
        store_use = std::move(*use);
    }
    auto fs = certfs::fs::Filesystem::create(fs_options);
    if (!fs.ok()) {
        return fail(fs.status().message());
    }
    // Deploy hooks run once the filesystem serves the new generation to new opens: the flip as
    // this filesystem makes it, not a timer. The scheduler is stopped before *fs ends.
    renew_options.wait_for_flip = certfs::renew::flip_waiter(
        {.visible = [filesystem = fs->get()](const std::string& name) -> certfs::Result<std::int64_t> {
             if (auto gen = filesystem->visible_generation(name)) {
                 return *gen;
             }
             return certfs::Status::NotFound("the filesystem shows no domain " + name);
         },
         .source = "the filesystem on " + mountpoint,
         .timeout = certfs::renew::flip_timeout(window),
         .fallback = certfs::renew::flip_fallback(window),
         .warn = [](const std::string& line) { spdlog::warn("{}", line); }});

    std::vector<std::string> fuse_argv_strings{"certfs", "-o", joined};
    std::vector<char*> fuse_argv;
    for (auto& s : fuse_argv_strings) {
        fuse_argv.push_back(s.data());
    }
    fuse_args args = FUSE_ARGS_INIT(static_cast<int>(fuse_argv.size()), fuse_argv.data());
    fuse_session* se =
        fuse_session_new(&args, &certfs::fs::Filesystem::operations(), sizeof(fuse_lowlevel_ops), fs->get());
    // Parsing may have left libfuse's own copy of the arguments in args; the session keeps
    // what it needs.
    fuse_opt_free_args(&args);
    if (se == nullptr) {
        return fail("cannot start a FUSE session with options " + joined);
    }
    if (fuse_session_mount(se, mountpoint.c_str()) != 0) {
        fuse_session_destroy(se);
        return fail("cannot mount on " + mountpoint + " (is /dev/fuse there, and are you root?)");
    }
    if (fuse_daemonize(foreground ? 1 : 0) != 0) {
        fuse_session_unmount(se);
        fuse_session_destroy(se);
        return fail("cannot detach");
    }
    certfs::setup_logging("certfs", foreground);
    if (!recovered->empty()) {
        spdlog::warn("{}", *recovered);
    }

    // SIGTERM, SIGINT and SIGHUP go to one thread, created before any other so that every
    // thread blocks them. It stops the scheduler and the watcher while the workers still serve
    // (a watcher in the middle of an invalidation may wait for a lookup to be answered), then
    // ends the session's loop: fuse_session_exit(), and SIGUSR1 (a handler that does nothing)
    // to the loop's thread, whose wait a signal interrupts, again until the loop has returned
    // (a signal just before the wait would be lost). The loop cancels its workers and joins
    // them; only then does the main thread unmount, which closes /dev/fuse. Unmounting from the
    // signal thread closed it while the workers were reading it (ThreadSanitizer: a data race
    // on the descriptor, which a new open could have taken).
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    for (int sig : {SIGTERM, SIGINT, SIGHUP}) {
        sigaddset(&stop_signals, sig);
    }
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    struct sigaction wake {};
    wake.sa_handler = [](int) {};
    sigemptyset(&wake.sa_mask);
    sigaction(SIGUSR1, &wake, nullptr);
    const pthread_t loop_thread = pthread_self();
    std::atomic<bool> loop_done{false};
    std::thread signal_thread([&] {
        int sig = 0;
        sigwait(&stop_signals, &sig);
        if (!loop_done) {
            spdlog::info("{}: unmounting {}", strsignal(sig), mountpoint);
        }
        // Whichever way the stop began (a signal, or an unmount from outside): systemd hears it
        // once, before the teardown, which may wait for a renewal in flight.
        (void)sd_notify(0, "STOPPING=1");
        if (auto* s = wake_target.exchange(nullptr)) {
            s->stop(); // waits for renewals and hook runs in flight
        }
        (*fs)->stop();
        fuse_session_exit(se);
        while (!loop_done) {
            pthread_kill(loop_thread, SIGUSR1);
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    });

    int rc = 0;
    if (certfs::Status started = (*fs)->start(se); !started.ok()) {
        spdlog::error("{}", started.message());
        rc = 1;
    } else {
        spdlog::info("mounted {} on {} (pin window {}){}{}", db_path, mountpoint, pin_window,
                     hide_archive ? ", archive/ hidden from who may not read its keys" : "",
                     no_renew ? ", renewal off" : "");
        record_mount(db_path, {mountpoint, window});
        if (!no_renew) {
            renew_options.owner = "certfs pid " + std::to_string(::getpid());
            scheduler = std::make_unique<certfs::renew::Scheduler>(renew_options, clock);
            if (certfs::Status s = scheduler->start(); !s.ok()) {
                spdlog::error("renewal scheduler not started: {}", s.message());
                scheduler.reset();
            } else {
                wake_target = scheduler.get();
            }
        }
        // systemd (Type=notify): started once the mount serves. Nothing without NOTIFY_SOCKET.
        if (int sent = sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=serving %s on %s", static_cast<int>(::getpid()),
                                  db_path.c_str(), mountpoint.c_str());
            sent < 0) {
            spdlog::warn("cannot tell systemd that the mount serves (NOTIFY_SOCKET): {}", std::strerror(-sent));
        }
        fuse_loop_config config{};
        config.clone_fd = 0;
        config.max_idle_threads = 10;
        rc = fuse_session_loop_mt(se, &config) < 0 ? 1 : 0;
    }
    // Unmounted from outside (fusermount3 -u) or failed to start: wake the signal thread, which
    // does the same teardown.
    loop_done = true;
    pthread_kill(signal_thread.native_handle(), SIGTERM);
    signal_thread.join();
    // The workers are joined: nothing reads /dev/fuse any more. After an unmount from outside
    // this only closes it (the connection is gone).
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    forget_mount(db_path, mountpoint);
    const certfs::fs::HoldCounts holds = (*fs)->hold_counts();
    spdlog::info("unmounted {}; readers held on an older generation: {}, moved at the bound: {}", mountpoint,
                 holds.held, holds.moved_at_bound);
    return rc;
}
