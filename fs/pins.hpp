// Which generation of a domain a lookup in live/<domain>/ returns: the heart of contract
// points 4 and 5 ("one open, one generation"; "files read together match").
//
// In steady state every lookup gets the current generation and the kernel caches the answer
// for long. When a commit lands, the domain enters a transition:
//   - the new generation becomes *visible* one pin window after the commit (the flip); until
//     then lookups still return the one before it. Each commit flips at its own time; a
//     rollback drops the pending generations above its target, so a generation rolled back
//     before its flip is never served;
//   - every lookup records, per thread, the generation it was given, when, and which files the
//     thread has opened in its current *round*;
//   - a thread that opens again a file it already opened in this round starts a new round and
//     gets the visible generation; otherwise it keeps its pin while its last lookup is within
//     the pin window;
//   - a thread with no pin of its own takes its process's pin if that is within the window and
//     the file is not yet in the process's round (the key opened by one thread, the
//     certificate by another); otherwise it starts a new process round;
//   - the transition ends when the newest commit is visible and no pin to an older generation
//     is within the window. The kernel may cache answers for long again.
//
// Where a looping thread's rounds begin. Outside transitions the kernel caches entries and
// opens are not seen, so when a transition starts the daemon joins each reader in the middle
// of its loop: its first lookup after the kernel's entries are dropped (a *join*) is either the
// first file of a round, or the second one, when it opened the first one through the cache
// just before the drop. Both loops (key, chain, key, chain...) look the same from here on, so a
// single join cannot tell them apart, and a wrong guess would make the thread's move at the
// flip split its round. So while the new generation is not yet visible the filesystem joins
// several times (begin_sample), letting the kernel cache again in between so that the readers
// loop unseen; each join is a vote, per thread, for the file its rounds begin with: a reader
// spends little of its loop between the files of one round, so the first file wins. The last
// join (end_sampling) starts the rounds: a thread whose first lookup after it is not the file
// it voted for is taken to have opened that file through the cache just before. A flip never
// comes earlier than one window after the last drop (hold).
//
// One open can cost several lookups of the same name by the same thread: when the kernel's
// cached entry (shared by every process) holds another inode than the one our answer names, it
// drops the entry and looks the name up again. Those lookups are part of the same open, not a
// new round. A repeat is taken as the same open when
//   - it follows a lookup whose answer differed from some generation handed out for that file
//     during this transition (the entry may hold it), whatever the delay, once; or
//   - it is a consecutive lookup of the same file within a quarter of the pin window (at most
//     k_same_open) of the first lookup of that open: under load, the kernel's second and third
//     lookups for one open (a re-lookup that met another process's lookup of the name
//     revalidates that one too) can come tens of milliseconds apart.
// Both err on the safe side: mistaking a reopen for the same open delays a reader's move by a
// round, never mixes generations; and a reader still moves at least every other round, or
// after a quarter of the pin window in a tight loop on one file.
//
// Times come from a monotonic clock. Thread-safety: not thread-safe; the caller serialises.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <vector>

namespace certfs::fs {

using PinClock = std::chrono::steady_clock;
using PinTime = PinClock::time_point;
using PinDuration = std::chrono::milliseconds;

inline constexpr PinDuration k_same_open = std::chrono::milliseconds(500);
inline constexpr int k_pin_files = 5;

class DomainPins {
public:
    DomainPins(std::int64_t current, PinDuration window)
        : m_visible(current), m_newest(current), m_window(window), m_same_open(std::min(window / 4, k_same_open))
    {
        for (auto& answered : m_answered) {
            answered.insert(current);
        }
    }

    // A commit (or rollback) made `gen` current at `at`: it becomes visible at + window.
    // Calling it again for the same generation moves its flip to the new time.
    void committed(std::int64_t gen, PinTime at);

    // The generation for a lookup of file `file` (0..4) by thread tid of process pid at now.
    std::int64_t choose(std::uint32_t tid, std::uint32_t pid, int file, PinTime now);

    // True while lookups must not be cached by the kernel (entry timeout 0), except
    // cacheable_while_sampling says otherwise.
    bool in_transition(PinTime now);

    // A join: the kernel holds no entry of this domain from `at` on; lookups until `until` are
    // not cached and vote. Between joins answers may be cached (cacheable_while_sampling).
    void begin_sample(PinTime at, PinTime until);
    // The last join: votes decide where each thread's rounds begin.
    void end_sampling(PinTime at);
    bool sampling() const { return m_sampling; }
    bool cacheable_while_sampling(PinTime now) const
    {
        // Before the hold ends nothing flips: every answer names the same generation.
        return m_sampling && now >= m_observe_until && now < m_hold;
    }
    // The kernel may have opened entries it cached until `at`: no flip before at + window.
    void hold(PinTime at) { m_hold = std::max(m_hold, at + m_window); }

    // The generation new rounds get at `now`.
    std::int64_t visible(PinTime now);
    std::int64_t newest() const { return m_newest; }

private:
    struct ThreadPin {
        std::int64_t gen = 0;
        PinTime last;
        unsigned round = 0;    // bit i: file i opened in this round
        unsigned relookup = 0; // bit i: the kernel will look file i up again for the same open
        int last_file = -1;
        PinTime burst;         // first lookup of the current open of last_file
    };
    struct ProcessPin {
        std::int64_t gen = 0;
        PinTime last;
        unsigned round = 0;
    };
    struct Votes {
        std::array<unsigned, k_pin_files> first{}; // joins at which this file was looked up first
        unsigned join = 0;                          // the last join this thread voted at
    };

    void forget_stale(PinTime now);

    std::int64_t m_visible;                                  // what new rounds get
    std::int64_t m_newest;                                   // the current generation in the store
    std::vector<std::pair<PinTime, std::int64_t>> m_pending; // flips to come, in time order
    std::array<std::set<std::int64_t>, k_pin_files> m_answered; // generations handed out per file
    std::map<std::uint32_t, ThreadPin> m_threads;      // by tid
    std::map<std::uint32_t, ProcessPin> m_processes;   // by pid
    std::map<std::uint32_t, Votes> m_votes;            // by tid, while sampling
    std::map<std::uint32_t, int> m_heads;              // by tid: the file its rounds begin with
    bool m_sampling = false;
    unsigned m_join = 0;       // joins so far
    PinTime m_observe_until{}; // the end of the current join's uncached lookups
    PinTime m_last_join{};     // when end_sampling ran
    std::int64_t m_join_gen = 0; // the generation visible then
    PinTime m_hold{};          // no flip before this
    PinDuration m_window;
    PinDuration m_same_open; // how long the lookups of one open may take
};

} // namespace certfs::fs
