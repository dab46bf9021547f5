// Which generation of a domain a lookup in live/<domain>/ returns: the heart of contract
// points 4 and 5 ("one open, one generation"; "files read together match").
//
// In steady state every lookup gets the current generation and the kernel caches the answer
// for long. When a commit lands, the domain enters a transition:
//   - the new generation becomes *visible* one pin window after the commit (the flip); until
//     then lookups still return the one before it;
//   - every lookup records, per thread, the generation it was given, when, and which files the
//     thread has opened in its current *round*;
//   - a thread that looks up a file again that it already opened in this round starts a new
//     round and gets the visible generation; otherwise it keeps its pin while its last lookup
//     is within the pin window;
//   - a thread with no pin of its own takes its process's most recent pin if that is within the
//     window (the key opened by one thread, the certificate by another);
//   - the transition ends when the newest commit is visible and no thread holds a pin to an
//     older generation within the window. The kernel may cache answers for long again.
// A revalidation lookup followed at once by a fresh lookup of the same name (what the kernel
// does when a cached entry changed inode) counts as one open, not as a new round.
//
// Thread-safety: not thread-safe; the caller serialises access (one mutex per domain).
#pragma once

#include <cstdint>
#include <map>
#include <optional>

#include "core/clock.hpp"

namespace certfs::fs {

// Two lookups of one name by one thread this close together are one open (revalidation).
inline constexpr Duration k_same_open = std::chrono::milliseconds(10);

class DomainPins {
public:
    DomainPins(std::int64_t current, Duration window) : m_visible(current), m_newest(current), m_window(window) {}

    // A commit (or rollback) made `gen` current at `at`: it becomes visible at + window.
    void committed(std::int64_t gen, TimePoint at);

    // The generation for a lookup of file `file` (0..4) by thread tid of process pid at now.
    std::int64_t choose(std::uint32_t tid, std::uint32_t pid, int file, TimePoint now);

    // True while lookups must not be cached by the kernel (entry timeout 0).
    bool in_transition(TimePoint now);

    // The generation new rounds get at `now`.
    std::int64_t visible(TimePoint now);
    std::int64_t newest() const { return m_newest; }

private:
    struct ThreadPin {
        std::int64_t gen = 0;
        TimePoint last;
        unsigned round = 0; // bit i: file i opened in this round
        int last_file = -1;
    };
    struct ProcessPin {
        std::int64_t gen = 0;
        TimePoint last;
    };

    void forget_stale(TimePoint now);

    std::int64_t m_visible;                            // what new rounds get
    std::int64_t m_newest;                             // the current generation in the store
    std::map<TimePoint, std::int64_t> m_pending;       // visible_at -> generation, not yet visible
    std::map<std::uint32_t, ThreadPin> m_threads;      // by tid
    std::map<std::uint32_t, ProcessPin> m_processes;   // by pid
    Duration m_window;
};

} // namespace certfs::fs
