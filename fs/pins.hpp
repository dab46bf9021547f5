// Which generation of a domain each process gets when it looks up live/<domain>: the heart of
// contract point 5 of docs/contract.md, "files read together match".
//
// The guarantee. Every path into a domain's files goes through live/<domain>, and a lookup of
// it names one generation's directory (filesystem.hpp), so a process gets a generation per
// lookup. During a transition (from a commit until nobody reads an older generation) the kernel
// asks the daemon at every path walk, and DomainPins answers:
//   - a process whose previous lookup of the domain came within one pin window (of its own
//     time: see Quiet below) gets the same generation as then: its *pin*. Two threads of a
//     process share it;
//   - a process with no lookup in the last window gets the visible generation. Having been
//     quiet on the domain for a whole window, it certainly starts a new round here, whatever
//     its loop looks like; so a process moves to a newer generation only where it paused.
// A process that never pauses keeps its generation, whose files match each other, until the
// bound below. A reader may be late; it is never given a key and a certificate that differ.
//
// Why nothing but a pause moves a reader. No record of lookups can tell where a loop's rounds
// begin. A process that reads the key, works, then reads the certificate and pairs those two
// makes the same system calls in the same order with the same timing as one that reads the
// certificate, then the key, then works on that pair: the programs differ only in which two
// files they pair. Moving either at the other's boundary splits its round, so a timing rule
// (the median gap before each file, say) that moves the one mixes a pair for the other.
//
// The bound. A process held on an older generation is moved anyway once the hold has lasted
// max_hold (default an hour), or half the time its certificate still had to run when the hold
// began, if that is shorter: a reader never keeps a certificate near its expiry because it never
// pauses. It is moved at its first lookup after the bound that follows one of its long gaps (at
// least the 80th percentile of its last 16: most loops pause, if briefly, between rounds), or
// one window after the bound at the latest. This move may split a round; choose() reports it.
//
// Visibility. A commit becomes visible to processes without a pin (the flip) one window after it
// was seen and, when it starts a transition, one window after the filesystem dropped the
// kernel's cached entries of the domain (hold() takes that time): a process that opened a file
// through the cache just before, unseen, looks its next file up within the window, so it still
// gets the old generation and is pinned to it. Each commit flips at its own time; a rollback
// drops the pending flips above its target, so a generation rolled back before its flip is never
// served. A commit made with --now (committed_now) is visible at once and drops every pin: every
// process moves at its next lookup, mid-round or not.
//
// Quiet is counted from the daemon's last answer to the process about the domain (answered()),
// not from when it asked: a lookup that waited 80 ms for the store, in a 100 ms window, left the
// process a window from its next lookup by the clock but not by its own time. Measured in
// test_soak with two CPU hogs on 2 cores, before answered() existed, readers were moved between
// their key and their certificate that way about once a run.
//
// Quiet is the process's own time. A thread that waited for a CPU all along (a loaded machine,
// a higher-priority task) did not pause, however long the daemon did not hear from it: the
// kernel counts that wait (PinOptions::runqueue_wait, /proc/<tid>/schedstat), and it does not
// count towards a window. Measured with two CPU hogs and a second pairing test on 2 cores, a
// reader that never pauses went 245 ms (over a 200 ms window) between its key and its
// certificate, and was moved between them. Time spent running elsewhere, sleeping or blocked
// does count: the process was away from the domain.
//
// Times come from a monotonic clock. Thread-safety: not thread-safe; the caller serialises.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <vector>

namespace certfs::fs {

using PinClock = std::chrono::steady_clock;
using PinTime = PinClock::time_point;
using PinDuration = std::chrono::milliseconds;

inline constexpr PinDuration k_default_max_hold = std::chrono::hours(1);

// How long thread `tid` has waited for a CPU in all, or nullopt if that cannot be told (the
// thread is gone, or the kernel does not count it).
using RunqueueWait = std::function<std::optional<PinClock::duration>(std::uint32_t tid)>;

// The kernel's count for `tid`: the second field of /proc/<tid>/schedstat (nanoseconds).
std::optional<PinClock::duration> proc_runqueue_wait(std::uint32_t tid);

struct PinOptions {
    PinDuration window;
    PinDuration max_hold = k_default_max_hold;
    RunqueueWait runqueue_wait; // empty: quiet is the daemon's time alone
};

// How long a process may be held, from `since`, on a generation whose certificate expires at
// `expires`: max_hold, or half the time the certificate still has, if shorter (the bound).
PinClock::duration hold_limit(const PinOptions& options, PinTime expires, PinTime since);

class DomainPins {
public:
    // `current` is visible now; its certificate expires at `expires`.
    DomainPins(std::int64_t current, PinTime expires, PinOptions options);

    // A commit (or rollback) made `gen` current at `at`; it becomes visible at `at` + window.
    void committed(std::int64_t gen, PinTime expires, PinTime at);
    // The same, made with --now: visible at once, and no process keeps a pin.
    void committed_now(std::int64_t gen, PinTime expires);
    // The kernel may be answering opens from entries it caches, unseen: no pending commit becomes
    // visible until hold() is called.
    void block_flips() { m_hold = PinTime::max(); }
    // The kernel held cached entries until `at`: no pending commit becomes visible before
    // at + window. Replaces an earlier block or hold.
    void hold(PinTime at) { m_hold = at + m_options.window; }

    // What a lookup by process `pid` at `now` gets, and what changed for that process.
    enum class Event {
        none,
        held,           // it has been held on an older generation for a window: say so, once
        moved_at_bound, // a held process was moved at the bound
    };
    struct Choice {
        std::int64_t gen = 0;
        Event event = Event::none;
        std::int64_t held_gen = 0; // for the events: the generation it was held on
        PinTime held_since{};      // when the hold began
        PinTime bound{};           // held: when it is moved at the latest
    };
    // `tid` is the thread that looks up (pid itself if not told).
    Choice choose(std::uint32_t pid, std::uint32_t tid, PinTime now);
    Choice choose(std::uint32_t pid, PinTime now) { return choose(pid, pid, now); }

    // The filesystem answered a request of process `pid` (thread `tid`) on generation `gen` at
    // `now`: a lookup in its directory, a read. The time the process waited for that answer was
    // spent on the domain, not away from it, however long the daemon took (a busy store): its
    // window of quiet starts now, unless it is held past its bound. A process with no pin is
    // pinned to `gen` (a file it opened before the flip, a directory descriptor): held from
    // now, within the bound, if gen is older than the visible one; not if gen is not flipped
    // to yet (a read of archive/) or is forgotten (forget_expiries(), a --now commit). A
    // process pinned to another generation is reading a file it opened before, and keeps its
    // pin.
    void answered(std::uint32_t pid, std::uint32_t tid, std::int64_t gen, PinTime now);

    // True while lookups must not be cached by the kernel: the newest commit is not visible yet,
    // or some process still holds an older generation.
    bool in_transition(PinTime now);

    // The generation processes without a pin get at `now`.
    std::int64_t visible(PinTime now);

private:
    static constexpr std::size_t k_gaps = 16;

    struct ProcessPin {
        std::int64_t gen = 0;
        PinTime last{};
        std::optional<PinTime> held_since;             // since when it gets gen while another is visible
        bool reported = false;                         // the held event was given
        std::array<PinClock::duration, k_gaps> gaps{}; // its recent gaps between lookups, a ring
        std::size_t gap_count = 0;
        std::uint32_t tid = 0;                    // the thread of its latest lookup
        std::optional<PinClock::duration> waited; // that thread's runqueue wait ...
        PinTime waited_at{};                      // ... sampled then, at or before `last`
        PinTime stalled_until{};                  // found stalled, not pausing: kept until then
    };

    PinTime bound_of(const ProcessPin& pin) const;
    static PinClock::duration long_gap(const ProcessPin& pin);
    bool quiet(ProcessPin& pin, PinTime now); // since its latest lookup, for a window of its own time
    void sample(ProcessPin& pin, std::uint32_t tid, PinTime now) const;
    void forget_stale(PinTime now);
    void forget_expiries(); // of generations no process can get any more

    const PinOptions m_options;
    std::int64_t m_visible;                                  // what processes without a pin get
    std::int64_t m_newest;                                   // the current generation in the store
    std::vector<std::pair<PinTime, std::int64_t>> m_pending; // flips to come, in time order
    PinTime m_hold{};                                        // no flip before this
    std::map<std::int64_t, PinTime> m_expires;               // each generation's certificate expiry
    std::map<std::uint32_t, ProcessPin> m_processes;         // by pid
};

} // namespace certfs::fs
