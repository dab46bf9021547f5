#include "fs/pins.hpp"

#include <algorithm>

namespace certfs::fs {

void DomainPins::committed(std::int64_t gen, PinTime at)
{
    // A rollback to gen drops what was committed above it and is not visible yet; a renewal
    // (a higher number) keeps the earlier flips.
    std::erase_if(m_pending, [&](const auto& p) { return p.second >= gen; });
    m_newest = gen;
    if (gen != m_visible || !m_pending.empty()) {
        m_pending.emplace_back(at + m_window, gen);
        std::sort(m_pending.begin(), m_pending.end());
    }
}

std::int64_t DomainPins::visible(PinTime now)
{
    while (!m_pending.empty() && m_pending.front().first <= now && m_hold <= now) {
        m_visible = m_pending.front().second;
        m_pending.erase(m_pending.begin());
    }
    return m_visible;
}

std::int64_t DomainPins::choose(std::uint32_t tid, std::uint32_t pid, int file, PinTime now)
{
    const std::int64_t visible_now = visible(now);
    const unsigned bit = 1U << file;
    if (m_sampling && now < m_observe_until) {
        Votes& votes = m_votes[tid];
        if (votes.join != m_join) {
            votes.join = m_join;
            ++votes.first[static_cast<std::size_t>(file)];
        }
    }
    auto proc = m_processes.find(pid);
    if (proc != m_processes.end() && now - proc->second.last > m_window) {
        m_processes.erase(proc);
        proc = m_processes.end();
    }
    bool same_open = false;
    auto it = m_threads.find(tid);
    if (it != m_threads.end() && now - it->second.last <= m_window) {
        ThreadPin& pin = it->second;
        if ((pin.round & bit) != 0) {
            bool expected = (pin.relookup & bit) != 0;
            bool burst = file == pin.last_file && now - pin.burst < m_same_open;
            if (expected || burst) {
                if (expected && !burst) {
                    // Possibly the first lookup of a new open (the awaited one never came),
                    // kept on the pinned generation: it starts a round of its own there, so
                    // that the files opened after it match it, and the kernel's second
                    // lookup for it is absorbed too.
                    pin.round = 0;
                    pin.burst = now;
                }
                pin.relookup &= ~bit;
                same_open = true;
            } else {
                pin = ThreadPin{visible_now, now, 0, 0, -1, now}; // a new round
            }
        }
    } else {
        std::int64_t gen = visible_now;
        unsigned round = 0;
        auto head = m_heads.find(tid);
        if (head != m_heads.end() && head->second != file && now - m_last_join <= m_window) {
            // Its round began with a file it opened through the cache before the last join.
            gen = m_join_gen;
            round = 1U << head->second;
        } else if (proc != m_processes.end() && (proc->second.round & bit) == 0) {
            gen = proc->second.gen; // another thread of the process opened the other files
        }
        if (head != m_heads.end()) {
            m_heads.erase(head);
        }
        it = m_threads.insert_or_assign(tid, ThreadPin{gen, now, round, 0, -1, now}).first;
    }
    ThreadPin& pin = it->second;
    const std::int64_t gen = pin.gen;
    auto& answered = m_answered[static_cast<std::size_t>(file)];
    if (!same_open) {
        pin.burst = now;
        if (answered.size() > 1 || !answered.contains(gen)) {
            pin.relookup |= bit; // the shared entry may name another generation: the kernel may ask again
        }
    }
    answered.insert(gen);
    pin.round |= bit;
    pin.last = now;
    pin.last_file = file;

    ProcessPin& p = m_processes[pid];
    if (p.gen != gen || p.round == 0) {
        p = ProcessPin{gen, now, 0};
    }
    p.round |= bit;
    p.last = now;
    return gen;
}

void DomainPins::begin_sample(PinTime at, PinTime until)
{
    m_sampling = true;
    ++m_join;
    m_observe_until = until;
    hold(at);
}

void DomainPins::end_sampling(PinTime at)
{
    m_heads.clear();
    for (const auto& [tid, votes] : m_votes) {
        auto best = std::max_element(votes.first.begin(), votes.first.end());
        if (std::count(votes.first.begin(), votes.first.end(), *best) == 1) {
            m_heads[tid] = static_cast<int>(best - votes.first.begin());
        }
    }
    m_votes.clear();
    // What was recorded between joins is out of date: the threads went on through the cache.
    m_threads.clear();
    m_processes.clear();
    m_sampling = false;
    m_last_join = at;
    m_join_gen = visible(at);
    hold(at);
}

void DomainPins::forget_stale(PinTime now)
{
    std::erase_if(m_threads, [&](const auto& kv) { return now - kv.second.last > m_window; });
    std::erase_if(m_processes, [&](const auto& kv) { return now - kv.second.last > m_window; });
}

bool DomainPins::in_transition(PinTime now)
{
    const std::int64_t visible_now = visible(now);
    forget_stale(now);
    if (!m_pending.empty() || visible_now != m_newest) {
        return true;
    }
    for (const auto& [tid, pin] : m_threads) {
        if (pin.gen != m_newest) {
            return true;
        }
    }
    for (const auto& [pid, pin] : m_processes) {
        if (pin.gen != m_newest) {
            return true;
        }
    }
    return false;
}

} // namespace certfs::fs
