#include "fs/pins.hpp"

namespace certfs::fs {

void DomainPins::committed(std::int64_t gen, TimePoint at)
{
    m_newest = gen;
    m_pending[at + m_window] = gen;
}

std::int64_t DomainPins::visible(TimePoint now)
{
    while (!m_pending.empty() && m_pending.begin()->first <= now) {
        m_visible = m_pending.begin()->second;
        m_pending.erase(m_pending.begin());
    }
    return m_visible;
}

std::int64_t DomainPins::choose(std::uint32_t tid, std::uint32_t pid, int file, TimePoint now)
{
    const std::int64_t visible_now = visible(now);
    const unsigned bit = 1U << file;
    auto it = m_threads.find(tid);
    std::int64_t gen = 0;
    if (it != m_threads.end() && now - it->second.last <= m_window) {
        ThreadPin& pin = it->second;
        bool repeat = (pin.round & bit) != 0;
        bool same_open = file == pin.last_file && now - pin.last < k_same_open;
        if (repeat && !same_open) {
            pin.round = 0; // a new round starts with this file
            pin.gen = visible_now;
        }
        gen = pin.gen;
    } else {
        auto proc = m_processes.find(pid);
        gen = (proc != m_processes.end() && now - proc->second.last <= m_window) ? proc->second.gen : visible_now;
        it = m_threads.insert_or_assign(tid, ThreadPin{gen, now, 0, -1}).first;
    }
    ThreadPin& pin = it->second;
    pin.round |= bit;
    pin.last = now;
    pin.last_file = file;
    m_processes[pid] = ProcessPin{gen, now};
    return gen;
}

void DomainPins::forget_stale(TimePoint now)
{
    std::erase_if(m_threads, [&](const auto& kv) { return now - kv.second.last > m_window; });
    std::erase_if(m_processes, [&](const auto& kv) { return now - kv.second.last > m_window; });
}

bool DomainPins::in_transition(TimePoint now)
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
