// Waiting for the flip before deploy hooks run (contract point 8, docs/hooks.md): a hook runs
// once new opens of its domains get the generations just committed, as the filesystem really
// serves them, not after a timer. The daemon asks its own filesystem (in-process); any other
// process (`certfsctl renew`) reads the mount's `user.certfs.generation` attribute of
// live/<name>/ (store/mount.hpp). One loop serves both: flip_waiter().
//
// Thread-safety: a FlipWaiter may be called from several threads at once (one per batch).
// Errors: none is returned. A flip that does not come before the timeout, and a filesystem that
// cannot tell, are reported through `warn` (one line), and the hooks run anyway.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/status.hpp"
#include "store/store.hpp"

namespace certfs::renew {

// A generation a commit made current, whose flip the hooks wait for.
struct FlipTarget {
    std::string domain;
    std::int64_t generation = 0;
};

// Called by deploy() once per committed batch, before its hooks run, with the batch's domains
// that have hooks; returns when their flips have happened (or will never come: a later commit or
// a rollback replaced the generation in `store`, or the domain is gone), or at its timeout.
using FlipWaiter = std::function<void(store::Store& store, const std::vector<FlipTarget>& targets)>;

// The generation that new opens of live/<domain>/ get now, as a filesystem tells it; an error
// when it cannot tell.
using VisibleGeneration = std::function<Result<std::int64_t>(const std::string& domain)>;

// One line to show the admin (the daemon logs it, certfsctl prints it).
using Warn = std::function<void(const std::string& line)>;

struct FlipWatch {
    VisibleGeneration visible;
    std::string source;   // where `visible` looks, for the messages: "the mount /etc/certs"
    Duration timeout{0};  // the longest a batch waits (flip_timeout())
    Duration fallback{0}; // while `visible` cannot tell: the flip comes this long after the commit
    Warn warn;            // required
    Duration poll = std::chrono::milliseconds(20);
};

// How long hooks wait for a flip at most: a few pin windows and slack, at least 10 s.
Duration flip_timeout(Duration pin_window);
// When the flip comes at the latest after a commit, by the filesystem's own timing (a pin window
// after its poll of the store and its second drop of the kernel's entries): the wait when the
// filesystem cannot tell.
Duration flip_fallback(Duration pin_window);

// Polls watch.visible for each target until it shows the target's generation. A target whose
// visible generation cannot be read is waited for until `fallback` instead; the first such
// target is reported once per waiter (not once per batch), and the timeout once per target.
FlipWaiter flip_waiter(FlipWatch watch);

// The generation <mountpoint>/live/<domain>/ shows in its user.certfs.generation attribute.
// An error (errno_status()) when the mount cannot be read or has no such attribute.
Result<std::int64_t> mounted_generation(const std::string& mountpoint, const std::string& domain);

// The waiter of a process that is not the daemon, for the mount a daemon recorded: polls the
// mount (mounted_generation()). With no mount, none: the hooks run right after the commit.
FlipWaiter mount_flip_waiter(const std::string& mountpoint, Duration pin_window, Warn warn);

} // namespace certfs::renew
