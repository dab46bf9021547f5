// Running external programs (deploy hooks, certmonger CA helpers) without a shell.
// The contract for hooks is docs/hooks.md; for helpers, docs/helpers.md.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/status.hpp"

namespace certfs {

// Splits a command line into words with shell-like quoting: 'single', "double" (with \" \\ \$
// \` escapes), and backslash outside quotes. No expansion of any kind. Invalid on an
// unterminated quote, a trailing backslash, or no words at all.
Result<std::vector<std::string>> split_command(std::string_view command);

struct RunOptions {
    std::vector<std::string> env; // "KEY=VALUE" entries; each replaces an inherited KEY
    bool inherit_env = true;      // start from this process's environment
    // Inherited variables not passed on: a name, or a prefix ending in '*' ("CERTFS_*").
    std::vector<std::string> unset;
    Duration timeout = std::chrono::minutes(5);
    Duration kill_grace = std::chrono::seconds(5); // SIGTERM, then SIGKILL after this
    std::size_t max_output = 64 * 1024;            // captured bytes kept
};

struct RunResult {
    int exit_code = -1; // -1 when killed by a signal or the timeout
    int signal = 0;     // the signal that ended it, if any
    bool timed_out = false;
    std::string output; // stdout, possibly truncated to max_output
    std::string errors; // stderr, possibly truncated to max_output

    bool succeeded() const { return exit_code == 0; }
    // "exit status 3", "killed by signal 9", "timed out after 5m".
    std::string describe(Duration timeout) const;
};

// Runs argv[0] (an absolute path, or a name looked up in PATH) with stdin from /dev/null, in a
// process group of its own so that a timeout ends its children too. Errors only when it could
// not be started (NotFound for a missing program); a program that fails is a RunResult.
Result<RunResult> run_program(const std::vector<std::string>& argv, const RunOptions& options);

// Makes this process non-dumpable (prctl PR_SET_DUMPABLE 0): a crash leaves no core file with
// the private keys in its memory, and no other user's process may ptrace it or read its
// memory. Programs it starts are dumpable again after their exec, as usual.
Status forbid_core_dumps();

} // namespace certfs
