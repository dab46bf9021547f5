// Deploy hooks: run after a batch of generations is committed and visible (docs/hooks.md).
//
// A batch is what one commit switched (one domain or a whole bundle). Each distinct hook
// command of the batch runs once, in the order the commands first appear. Runs of one command
// never overlap across processes: each takes an exclusive flock on a lock file named after the
// command in lock_dir. Thread-safe: run() may be called from several threads at once.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/process.hpp"

namespace certfs::renew {

struct CommittedDomain {
    std::string name;
    std::int64_t generation = 0;
    std::vector<std::string> names; // DNS names and IP addresses
    std::vector<std::string> hooks; // commands
};

struct HookRun {
    std::string command;
    std::vector<std::string> domains; // the batch's domains that name this command
    Status status;                    // ok, or why the run failed ("exit status 1: <output>")
};

struct HookOptions {
    std::string lock_dir;                  // where the per-command lock files live
    std::string db_path;                   // the store, for CERTFS_DB
    std::string store_key_file;            // the store key's file, for CERTFS_STORE_KEY; empty: none
    std::optional<std::string> mountpoint; // for CERTFS_LIVE_DIR / RENEWED_LINEAGE
    Duration timeout = std::chrono::minutes(5);
};

std::vector<HookRun> run_hooks(const std::vector<CommittedDomain>& batch, const HookOptions& options);

} // namespace certfs::renew
