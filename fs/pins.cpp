#include "fs/pins.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <string>

namespace certfs::fs {

std::optional<PinClock::duration> proc_runqueue_wait(std::uint32_t tid)
{
    const std::string path = "/proc/" + std::to_string(tid) + "/schedstat";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::nullopt;
    }
    char buf[96];
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    if (n <= 0) {
        return std::nullopt;
    }
    buf[n] = '\0';
    // "<on a CPU> <waiting for one> <timeslices>", in nanoseconds.
    char* end = nullptr;
    (void)std::strtoull(buf, &end, 10);
    char* wait_end = nullptr;
    const unsigned long long wait = std::strtoull(end, &wait_end, 10);
    if (wait_end == end) {
        return std::nullopt;
    }
    return std::chrono::nanoseconds(wait);
}

DomainPins::DomainPins(std::int64_t current, PinTime expires, PinOptions options)
    : m_options(options), m_visible(current), m_newest(current)
{
    m_expires[current] = expires;
}

void DomainPins::committed(std::int64_t gen, PinTime expires, PinTime at)
{
    m_expires[gen] = expires;
    // A rollback to gen drops what was committed above it and is not visible yet; a renewal
    // (a higher number) keeps the earlier flips.
    std::erase_if(m_pending, [&](const auto& p) { return p.second >= gen; });
    m_newest = gen;
    if (gen != m_visible || !m_pending.empty()) {
        m_pending.emplace_back(at + m_options.window, gen);
        std::sort(m_pending.begin(), m_pending.end());
    }
    forget_expiries();
}

void DomainPins::forget_expiries()
{
    // A transition that never ends (commits quicker than a window, for months) must not keep
    // every generation's expiry: only those a process may still get.
    std::erase_if(m_expires, [&](const auto& e) {
        const std::int64_t gen = e.first;
        return gen != m_visible && gen != m_newest &&
               std::none_of(m_pending.begin(), m_pending.end(), [&](const auto& p) { return p.second == gen; }) &&
               std::none_of(m_processes.begin(), m_processes.end(),
                            [&](const auto& kv) { return kv.second.gen == gen; });
    });
}

void DomainPins::committed_now(std::int64_t gen, PinTime expires)
{
    m_expires[gen] = expires;
    m_pending.clear();
    m_hold = PinTime{};
    m_visible = gen;
    m_newest = gen;
    m_processes.clear();
    forget_expiries(); // every process moves at once: no read pins one to an older generation
}

std::int64_t DomainPins::visible(PinTime now)
{
    while (!m_pending.empty() && m_pending.front().first <= now && m_hold <= now) {
        m_visible = m_pending.front().second;
        m_pending.erase(m_pending.begin());
    }
    return m_visible;
}

DomainPins::Choice DomainPins::choose(std::uint32_t pid, std::uint32_t tid, PinTime now)
{
    const std::int64_t visible_now = visible(now);
    auto it = m_processes.find(pid);
    if (it == m_processes.end() || quiet(it->second, now)) {
        // Quiet on the domain for a window, or not seen since the transition began (and then
        // the flip is a window away from anything it opened through the cache): a round of its
        // certainly starts here.
        ProcessPin fresh;
        fresh.gen = visible_now;
        fresh.last = now;
        sample(fresh, tid, now);
        m_processes.insert_or_assign(pid, fresh);
        return Choice{visible_now};
    }
    ProcessPin& pin = it->second;
    const PinClock::duration gap = now - pin.last;
    pin.last = now;
    sample(pin, tid, now);
    Choice choice{pin.gen};
    if (pin.gen == visible_now) {
        pin.held_since.reset();
        pin.reported = false;
    } else {
        if (!pin.held_since) {
            pin.held_since = now;
        }
        const PinTime bound = bound_of(pin);
        if (now >= bound && (gap >= long_gap(pin) || now >= bound + m_options.window)) {
            choice = Choice{visible_now, Event::moved_at_bound, pin.gen, *pin.held_since, bound};
            pin = ProcessPin{};
            pin.gen = visible_now;
            pin.last = now;
            sample(pin, tid, now);
            return choice;
        }
        if (!pin.reported && now - *pin.held_since >= m_options.window) {
            pin.reported = true;
            choice = Choice{pin.gen, Event::held, pin.gen, *pin.held_since, bound};
        }
    }
    pin.gaps[pin.gap_count % k_gaps] = gap;
    ++pin.gap_count;
    return choice;
}

void DomainPins::answered(std::uint32_t pid, std::uint32_t tid, std::int64_t gen, PinTime now)
{
    const std::int64_t visible_now = visible(now);
    auto it = m_processes.find(pid);
    if (it == m_processes.end()) {
        // Not one committed but not flipped to yet (a read of archive/), nor one forgotten.
        const bool flipped_to_yet =
            gen == visible_now || (gen != m_newest && std::none_of(m_pending.begin(), m_pending.end(),
                                                                   [&](const auto& p) { return p.second == gen; }));
        if (!flipped_to_yet || m_expires.count(gen) == 0) {
            return;
        }
        ProcessPin fresh;
        fresh.gen = gen;
        fresh.last = now;
        if (gen != visible_now) {
            fresh.held_since = now;
        }
        sample(fresh, tid, now);
        m_processes.emplace(pid, fresh);
        return;
    }
    ProcessPin& pin = it->second;
    if (pin.gen != gen || now <= pin.last) {
        return;
    }
    if (pin.gen != visible_now && pin.held_since && now >= bound_of(pin)) {
        return; // held to its bound: reads do not extend it, its next lookup moves it
    }
    pin.last = now;
    pin.stalled_until = PinTime{};
    sample(pin, tid, now);
}

PinClock::duration hold_limit(const PinOptions& options, PinTime expires, PinTime since)
{
    return std::min<PinClock::duration>(
        options.max_hold, std::max<PinClock::duration>((expires - since) / 2, PinClock::duration::zero()));
}

PinTime DomainPins::bound_of(const ProcessPin& pin) const
{
    const PinTime since = *pin.held_since;
    auto e = m_expires.find(pin.gen);
    return since + (e != m_expires.end() ? hold_limit(m_options, e->second, since) : m_options.max_hold);
}

PinClock::duration DomainPins::long_gap(const ProcessPin& pin)
{
    const std::size_t n = std::min(pin.gap_count, k_gaps);
    if (n < 4) {
        return PinClock::duration::max(); // too few to tell: only the latest move applies
    }
    std::array<PinClock::duration, k_gaps> sorted = pin.gaps;
    const auto nth = sorted.begin() + static_cast<long>(n * 4 / 5);
    std::nth_element(sorted.begin(), nth, sorted.begin() + static_cast<long>(n));
    return *nth; // the 80th percentile: where a loop typically pauses between its rounds
}

bool DomainPins::quiet(ProcessPin& pin, PinTime now)
{
    const PinClock::duration heard = now - pin.last;
    if (heard <= m_options.window) {
        return false;
    }
    if (!m_options.runqueue_wait || !pin.waited) {
        return true;
    }
    if (now < pin.stalled_until) {
        return false;
    }
    const auto waited = m_options.runqueue_wait(pin.tid);
    if (!waited) {
        return true; // the thread is gone: whatever it was doing, it is not mid-round
    }
    // Its own time since the lookup: what it spent waiting for a CPU since the sample (which is
    // at or before that lookup) is not. Counting from the sample takes away a little more wait,
    // so a reader that pauses for about a window may move a little later; none moves sooner.
    if (heard - (*waited - *pin.waited) > m_options.window) {
        return true;
    }
    pin.stalled_until = now + m_options.window / 8; // the verdict stands that long
    return false;
}

void DomainPins::sample(ProcessPin& pin, std::uint32_t tid, PinTime now) const
{
    // At most every eighth of a window per thread: a /proc read per lookup would double what a
    // lookup costs during a transition.
    if (!m_options.runqueue_wait || (pin.waited && pin.tid == tid && now - pin.waited_at < m_options.window / 8)) {
        return;
    }
    pin.tid = tid;
    pin.waited = m_options.runqueue_wait(tid);
    pin.waited_at = now;
}

void DomainPins::forget_stale(PinTime now)
{
    for (auto it = m_processes.begin(); it != m_processes.end();) {
        it = quiet(it->second, now) ? m_processes.erase(it) : std::next(it);
    }
}

bool DomainPins::in_transition(PinTime now)
{
    const std::int64_t visible_now = visible(now);
    forget_stale(now);
    if (!m_pending.empty() || visible_now != m_newest) {
        return true;
    }
    return std::any_of(m_processes.begin(), m_processes.end(),
                       [&](const auto& kv) { return kv.second.gen != m_newest; });
}

} // namespace certfs::fs
