#include "renew/hooks.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <sstream>

#include <spdlog/spdlog.h>

#include "core/handles.hpp"

namespace certfs::renew {

namespace {

std::string join(const std::vector<std::string>& items)
{
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : " ") + item;
    }
    return out;
}

// Holds an exclusive flock on the command's lock file for its lifetime.
Result<UniqueFd> lock_command(const std::string& lock_dir, const std::string& command)
{
    if (::mkdir(lock_dir.c_str(), 0700) != 0 && errno != EEXIST) {
        return errno_status("cannot create " + lock_dir);
    }
    std::ostringstream name;
    name << lock_dir << "/" << std::hex << std::hash<std::string>{}(command) << ".lock";
    UniqueFd fd(::open(name.str().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) {
        return errno_status("cannot open " + name.str());
    }
    while (::flock(fd.get(), LOCK_EX) != 0) {
        if (errno != EINTR) {
            return errno_status("cannot lock " + name.str());
        }
    }
    return fd;
}

Status run_one(const std::string& command, const std::vector<const CommittedDomain*>& domains,
               const HookOptions& options)
{
    ASSIGN_OR_RETURN(auto argv, split_command(command));
    std::vector<std::string> names;
    std::vector<std::string> gens;
    std::vector<std::string> certified;
    for (const auto* d : domains) {
        names.push_back(d->name);
        gens.push_back(std::to_string(d->generation));
        certified.insert(certified.end(), d->names.begin(), d->names.end());
    }
    std::string live = options.mountpoint ? *options.mountpoint + "/live/" + domains.front()->name : "";
    RunOptions run;
    run.timeout = options.timeout;
    run.env = {"CERTFS_NAMES=" + join(names), "CERTFS_GENERATION=" + join(gens),    "CERTFS_LIVE_DIR=" + live,
               "RENEWED_LINEAGE=" + live,     "RENEWED_DOMAINS=" + join(certified), "CERTFS_DB=" + options.db_path};
    if (!options.store_key_file.empty()) {
        // So that certfsctl in a hook opens a sealed store's keys, as the process that ran it did.
        run.env.push_back("CERTFS_STORE_KEY=" + options.store_key_file);
    }
    // The rest of the environment is inherited (a hook may need what its service manager set),
    // but not certfs's own names: a value inherited from a cron job, or from a hook that ran
    // certfsctl, is stale, and C's getenv() or Go's os.Getenv() would read it before ours.
    // NOTIFY_SOCKET: systemd's socket for the daemon's own readiness, not for a hook's.
    run.unset = {"CERTFS_*", "RENEWED_LINEAGE", "RENEWED_DOMAINS", "NOTIFY_SOCKET"};

    ASSIGN_OR_RETURN(UniqueFd lock, lock_command(options.lock_dir, command));
    ASSIGN_OR_RETURN(RunResult result, run_program(argv, run));
    std::string output = result.output + result.errors;
    while (!output.empty() && output.back() == '\n') {
        output.pop_back();
    }
    if (!output.empty()) {
        spdlog::info("hook '{}' for {}: {}", command, join(names), output);
    }
    if (!result.succeeded()) {
        std::string first_line = output.substr(0, output.find('\n'));
        return Status::IoError(result.describe(options.timeout) + (first_line.empty() ? "" : ": " + first_line));
    }
    return Status::Ok();
}

} // namespace

std::vector<HookRun> run_hooks(const std::vector<CommittedDomain>& batch, const HookOptions& options)
{
    std::vector<HookRun> runs;
    for (const auto& d : batch) {
        for (const auto& hook : d.hooks) {
            auto it = std::find_if(runs.begin(), runs.end(), [&](const HookRun& r) { return r.command == hook; });
            if (it == runs.end()) {
                runs.push_back({hook, {d.name}, Status::Ok()});
            } else if (std::find(it->domains.begin(), it->domains.end(), d.name) == it->domains.end()) {
                it->domains.push_back(d.name);
            }
        }
    }
    for (auto& run : runs) {
        std::vector<const CommittedDomain*> domains;
        for (const auto& name : run.domains) {
            domains.push_back(
                &*std::find_if(batch.begin(), batch.end(), [&](const auto& d) { return d.name == name; }));
        }
        run.status = run_one(run.command, domains, options);
        if (!run.status.ok()) {
            spdlog::warn("hook '{}' failed: {}", run.command, run.status.message());
        }
    }
    return runs;
}

} // namespace certfs::renew
