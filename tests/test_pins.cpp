// DomainPins: which generation each process gets when it looks up live/<domain> during a
// transition (contract point 5 of docs/contract.md). A fake timeline; the real mount is in test_fs and test_fs_pairs.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <vector>

#include "fs/pins.hpp"

using namespace certfs;
using namespace certfs::fs;
using namespace std::chrono_literals;

namespace {

constexpr PinDuration k_window = 2s;
using Event = DomainPins::Event;

struct Scenario {
    explicit Scenario(PinDuration max_hold = k_default_max_hold, PinDuration validity = std::chrono::days(30),
                      RunqueueWait runqueue_wait = {})
        : pins(1, t0 + validity, PinOptions{k_window, max_hold, std::move(runqueue_wait)})
    {
    }

    PinTime t0 = PinTime{} + std::chrono::hours(1000);
    DomainPins pins;

    PinTime at(PinClock::duration d) const { return t0 + d; }
    // A renewal committed at `d` whose certificate runs for 30 days.
    void commit(std::int64_t gen, PinClock::duration d) { pins.committed(gen, at(d) + std::chrono::days(30), at(d)); }
    std::int64_t gen(std::uint32_t pid, PinClock::duration d) { return pins.choose(pid, at(d)).gen; }
};

// Drives one process's lookups: `gaps` is its loop (the time before each lookup), repeated from
// `from` until `until`. Returns every choice, in order, with the time it was made.
std::vector<std::pair<PinClock::duration, DomainPins::Choice>> loop(Scenario& s, std::uint32_t pid,
                                                                    const std::vector<PinClock::duration>& gaps,
                                                                    PinClock::duration from, PinClock::duration until)
{
    std::vector<std::pair<PinClock::duration, DomainPins::Choice>> out;
    PinClock::duration t = from;
    for (std::size_t i = 0; t < until; ++i) {
        out.emplace_back(t, s.pins.choose(pid, s.at(t)));
        t += gaps[i % gaps.size()];
    }
    return out;
}

} // namespace

TEST_CASE("pins: a process that waited a window for the daemon's answer, between its key and its certificate, "
          "keeps its generation")
{
    Scenario s;
    s.commit(2, 0s);
    // Its key: the lookup of live/<domain> at 1.9 s; the lookup of privkey.pem in that directory
    // waits for the store and is answered at 4 s. Its certificate right after, past the flip.
    CHECK(s.gen(100, 1900ms) == 1);
    s.pins.answered(100, 100, 1, s.at(4s));
    CHECK(s.gen(100, 4010ms) == 1);
    // Counted from when it asked, it would have been moved between its two files.
    Scenario asked;
    asked.commit(2, 0s);
    CHECK(asked.gen(100, 1900ms) == 1);
    CHECK(asked.gen(100, 4010ms) == 2);
}

TEST_CASE("pins: a read of a generation pins a process seen nowhere else, and not to one no process gets")
{
    Scenario s;
    s.commit(2, 0s);
    // Its key opened through the kernel's cache before the transition, unseen, and its first
    // read reaches the daemon after the flip: its certificate is of the same generation.
    s.pins.answered(100, 100, 1, s.at(2500ms));
    CHECK(s.gen(100, 2600ms) == 1);
    CHECK(s.gen(200, 2600ms) == 2); // another process gets the visible one
    // A read through a descriptor of another generation moves no pin.
    s.pins.answered(200, 200, 1, s.at(2700ms));
    CHECK(s.gen(200, 2800ms) == 2);
    // Once generations 1 and 2 are neither visible nor held by anyone, a later commit forgets
    // them: a read through an old descriptor of one pins nothing.
    Scenario t;
    t.commit(2, 0s);
    t.commit(3, 1s);
    CHECK(t.gen(300, 3100ms) == 3);
    t.commit(4, 5s);
    t.pins.answered(400, 400, 1, t.at(5100ms));
    CHECK(t.gen(400, 5200ms) == 3);
}

TEST_CASE("pins: after a --now commit, a read through a descriptor of an older generation pins no process there")
{
    Scenario s;
    s.commit(2, 0s);
    CHECK(s.gen(100, 1s) == 1); // process 100 is on generation 1, mid-round
    s.pins.committed_now(3, s.at(3s) + 30 * 24h);
    // Its read of a key it opened before, and another process's read of one of generation 2,
    // answered after the commit: both move at their next lookup.
    s.pins.answered(100, 100, 1, s.at(3100ms));
    s.pins.answered(200, 200, 2, s.at(3100ms));
    CHECK(s.gen(100, 3200ms) == 3);
    CHECK(s.gen(200, 3200ms) == 3);
}

TEST_CASE("pins: a read through an old descriptor holds a process on its generation within the bound, and one "
          "of a generation not flipped to pins nothing")
{
    // A certificate with 2 hours left: the bound is half of it, an hour.
    Scenario s(k_default_max_hold, 2h);
    s.commit(2, 0s); // visible at 2 s
    // A process seen nowhere else reads a file of generation 1 a minute after the flip (a
    // directory descriptor it kept): its next lookup gets the same generation; after a pause,
    // the visible one.
    Scenario late(k_default_max_hold, 2h);
    late.commit(2, 0s);
    late.pins.answered(300, 300, 1, late.at(60s));
    CHECK(late.gen(300, 61s) == 1);
    CHECK(late.gen(300, 64s) == 2);
    // A read of archive/'s generation 3 before its flip pins nothing.
    late.commit(3, 70s);
    late.pins.answered(400, 400, 3, late.at(71s));
    CHECK(late.gen(400, 71100ms) == 2);
    // A process held on generation 1 that reads it every second, and looks up nothing: its
    // reads keep it there until the bound, not after it.
    CHECK(s.gen(100, 1s) == 1);
    CHECK(s.gen(100, 3s) == 1); // held from here
    PinClock::duration t = 3s;
    for (; t < 3s + 1h + 10s; t += 1s) {
        s.pins.answered(100, 100, 1, s.at(t));
    }
    // The transition ends (the kernel may cache lookups again) though the reads go on.
    CHECK_FALSE(s.pins.in_transition(s.at(t)));
    CHECK(s.gen(100, t) == 2);
}

TEST_CASE("pins: a commit becomes visible one pin window later and not earlier")
{
    Scenario s;
    s.commit(2, 0s);
    CHECK(s.gen(100, 1999ms) == 1);
    CHECK(s.gen(200, 2000ms) == 2);
}

TEST_CASE("pins (a): a process that opened the key before the flip gets the certificate of its generation after it")
{
    Scenario s;
    s.commit(2, 0s);
    CHECK(s.gen(100, 1500ms) == 1);
    CHECK(s.gen(100, 3400ms) == 1); // after the flip, within its window
    // Another process at the same moment gets the new one.
    CHECK(s.gen(200, 3400ms) == 2);
}

TEST_CASE("pins (e): a process quiet for longer than a window gets the new generation right after the flip")
{
    Scenario s;
    s.commit(2, 0s);
    CHECK(s.gen(100, 100ms) == 1);
    CHECK(s.gen(100, 2101ms) == 2); // 2001 ms later: quiet for more than a window
    Scenario t;
    t.commit(2, 0s);
    CHECK(t.gen(100, 100ms) == 1);
    CHECK(t.gen(100, 2100ms) == 1); // exactly a window later: not quiet for longer than one
}

TEST_CASE("pins (c): a reader that never pauses keeps its generation whatever its loop, and moves when it pauses")
{
    // The loops that test_fs_pairs runs on a real mount, as the time before each lookup: the symmetric fast looper, the
    // one that parses after the certificate, the one that works between the key and the certificate, and one that
    // sleeps a little less than a window between rounds.
    const std::vector<std::vector<PinClock::duration>> loops = {
        {30us, 30us}, {30us, 300us}, {300us, 30us}, {30us, 1900ms}};
    for (const auto& gaps : loops) {
        Scenario s;
        s.commit(2, 0s);
        s.commit(3, 5s);
        auto choices = loop(s, 100, gaps, 1s, 20s);
        auto moved = std::count_if(choices.begin(), choices.end(), [](const auto& tc) { return tc.second.gen != 1; });
        CHECK(moved == 0);
        // A pause of a window and a little more: it moves, to the newest.
        CHECK(s.gen(100, choices.back().first + k_window + 1ms) == 3);
    }
}

TEST_CASE("pins (d): the threads of a process share its pin: the process moves when all of them paused")
{
    Scenario s;
    s.commit(2, 0s);
    // Two threads of process 100 take turns; each alone pauses for longer than a window.
    CHECK(s.gen(100, 1900ms) == 1);
    CHECK(s.gen(100, 3000ms) == 1);
    CHECK(s.gen(100, 4500ms) == 1);
    CHECK(s.gen(100, 6000ms) == 1);
    CHECK(s.gen(100, 8001ms) == 2);
}

TEST_CASE("pins: a held reader is reported once, a window into its hold, with its bound")
{
    Scenario s(1h);
    s.commit(2, 0s);
    CHECK(s.pins.choose(100, s.at(1900ms)).event == Event::none);
    // The flip at 2 s: from its next lookup on it is held.
    CHECK(s.pins.choose(100, s.at(2100ms)).event == Event::none);
    CHECK(s.pins.choose(100, s.at(4000ms)).event == Event::none); // 1.9 s into the hold
    auto c = s.pins.choose(100, s.at(4100ms));
    CHECK(c.event == Event::held);
    CHECK(c.gen == 1);
    CHECK(c.held_gen == 1);
    CHECK(c.held_since == s.at(2100ms));
    CHECK(c.bound == s.at(2100ms) + 1h);
    for (PinDuration t = 4200ms; t < 20s; t += 100ms) {
        REQUIRE(s.pins.choose(100, s.at(t)).event == Event::none);
    }
    // A process on the visible generation is not held.
    CHECK(s.pins.choose(200, s.at(3000ms)).event == Event::none);
    CHECK(s.pins.choose(200, s.at(6000ms)).event == Event::none);
}

TEST_CASE("pins: the bound is max_hold, or half the time the held certificate still had, if that is shorter")
{
    // The certificate of generation 1 expires 10 minutes after the start: the hold, from 2.1 s,
    // ends halfway to that.
    Scenario s(1h, 10min);
    s.commit(2, 0s);
    CHECK(s.gen(100, 1900ms) == 1);
    CHECK(s.gen(100, 2100ms) == 1);
    auto c = s.pins.choose(100, s.at(4100ms));
    REQUIRE(c.event == Event::held);
    CHECK(c.bound == s.at(2100ms) + (10min - 2100ms) / 2);
    // One that has expired by then is not held: its bound is the hold's start, and it moves at
    // its first long gap, a window later at the latest.
    Scenario e(1h, 1s);
    e.commit(2, 0s);
    auto choices = loop(e, 100, {100ms}, 1900ms, 6s);
    for (const auto& [t, ch] : choices) {
        INFO(std::chrono::duration_cast<std::chrono::milliseconds>(t).count() << " ms");
        if (t < 2000ms) {
            CHECK(ch.gen == 1);
        } else if (t >= 2000ms + k_window) {
            CHECK(ch.gen == 2);
        }
    }
}

TEST_CASE("pins: at the bound a held reader moves where it typically pauses, or a window later at the latest")
{
    // It parses after each pair: 30 µs before the certificate, 400 µs before the key.
    Scenario s(10s);
    s.commit(2, 0s);
    auto choices = loop(s, 100, {30us, 400us}, 1900ms, 14s);
    std::size_t moved = 0;
    for (std::size_t i = 0; i < choices.size(); ++i) {
        if (choices[i].second.event == Event::moved_at_bound) {
            moved = i;
            break;
        }
    }
    REQUIRE(moved > 0);
    const auto& [t, c] = choices[moved];
    CHECK(c.gen == 2);
    CHECK(c.held_gen == 1);
    CHECK(t >= 1900ms + 10s);
    // At a key: every even lookup, the one after the 400 µs gap.
    CHECK(moved % 2 == 0);
    CHECK(choices[moved - 1].second.gen == 1);
    CHECK(std::all_of(choices.begin() + static_cast<long>(moved), choices.end(),
                      [](const auto& tc) { return tc.second.gen == 2; }));

    // A symmetric looper has no longer gap: it moves at once at the bound.
    Scenario f(10s);
    f.commit(2, 0s);
    auto flat = loop(f, 100, {100ms}, 1900ms, 16s);
    for (const auto& [ft, fc] : flat) {
        INFO(std::chrono::duration_cast<std::chrono::milliseconds>(ft).count() << " ms");
        CHECK(fc.gen == (ft < 2000ms + 10s ? 1 : 2));
    }

    // One whose gaps only shrink never has a long one: it moves one window after the bound.
    Scenario d(10s);
    d.commit(2, 0s);
    PinClock::duration dt = 1900ms;
    PinClock::duration gap = 1s;
    std::vector<std::pair<PinClock::duration, std::int64_t>> shrinking;
    while (dt < 20s) {
        shrinking.emplace_back(dt, d.gen(100, dt));
        gap = std::max<PinClock::duration>(gap * 99 / 100, 1ms);
        dt += gap;
    }
    // Its hold began at its first lookup after the flip.
    const auto since = std::find_if(shrinking.begin(), shrinking.end(), [](const auto& p) { return p.first >= 2s; });
    REQUIRE(since != shrinking.end());
    for (const auto& [st, g] : shrinking) {
        INFO(std::chrono::duration_cast<std::chrono::milliseconds>(st).count() << " ms");
        CHECK(g == (st < since->first + 10s + k_window ? 1 : 2));
    }
}

TEST_CASE("pins: --now is visible at once and moves every process at its next lookup")
{
    Scenario s;
    s.commit(2, 0s);
    CHECK(s.gen(100, 1000ms) == 1);
    CHECK(s.gen(100, 2500ms) == 1); // held
    s.pins.committed_now(3, s.at(3s) + 30 * 24h);
    CHECK(s.gen(100, 3001ms) == 3);
    CHECK(s.gen(200, 3001ms) == 3);
    CHECK(s.pins.visible(s.at(3001ms)) == 3);
    CHECK_FALSE(s.pins.in_transition(s.at(3002ms)));
}

TEST_CASE("pins: the transition ends when the newest generation is visible and no process holds an older one")
{
    Scenario s;
    s.commit(2, 0s);
    CHECK(s.pins.in_transition(s.at(0s)));
    CHECK(s.gen(100, 1900ms) == 1);
    CHECK(s.pins.in_transition(s.at(2100ms))); // process 100 still holds generation 1
    CHECK(s.pins.in_transition(s.at(3900ms)));
    CHECK_FALSE(s.pins.in_transition(s.at(3901ms)));
    // With no reader at all it ends at the flip.
    Scenario quiet;
    quiet.commit(2, 0s);
    CHECK(quiet.pins.in_transition(quiet.at(1999ms)));
    CHECK_FALSE(quiet.pins.in_transition(quiet.at(2000ms)));
}

TEST_CASE("pins: quick commits each flip at their own time: a rollback drops what it rolled back")
{
    Scenario s;
    s.commit(2, 0s);
    s.commit(3, 500ms);
    CHECK(s.gen(100, 1999ms) == 1);
    CHECK(s.gen(200, 2100ms) == 2);
    CHECK(s.gen(300, 2500ms) == 3);
    // A rollback before the flip: the rolled-back generation is never served.
    Scenario r;
    r.commit(2, 0s);
    r.commit(1, 500ms);
    for (PinDuration t : {1000ms, 2100ms, 2600ms, 5000ms}) {
        CHECK(r.gen(300 + static_cast<std::uint32_t>(t.count()), t) == 1);
    }
    CHECK_FALSE(r.pins.in_transition(r.at(5s) + k_window + 1ms));
    // A rollback after the flip flips back like a renewal.
    s.commit(1, 3s);
    CHECK(s.gen(400, 4999ms) == 3);
    CHECK(s.gen(500, 5000ms) == 1);
}

TEST_CASE("pins: no flip before one window after the kernel's entries were last dropped")
{
    Scenario s;
    s.commit(2, 0s);
    s.pins.hold(s.at(300ms)); // the second drop
    CHECK(s.gen(100, 2299ms) == 1);
    CHECK(s.gen(200, 2300ms) == 2);
    // A later hold delays every flip still pending then, a later commit's too.
    Scenario m;
    m.commit(2, 0s);
    m.commit(3, 100ms);
    m.pins.hold(m.at(1s));
    CHECK(m.gen(100, 2999ms) == 1);
    CHECK(m.gen(200, 3000ms) == 3);
    // While the kernel's entry is being dropped, nothing flips, however long that takes.
    Scenario b;
    b.commit(2, 0s);
    b.pins.block_flips();
    CHECK(b.gen(100, 5s) == 1);
    b.pins.hold(b.at(5s)); // the drop is done
    CHECK(b.gen(200, 6999ms) == 1);
    CHECK(b.gen(300, 7000ms) == 2);
}

namespace {

// What the kernel would say of each thread's wait for a CPU: set by the test, read by the pins.
struct FakeRunqueue {
    std::map<std::uint32_t, PinClock::duration> waited; // a thread not in it is gone
    int reads = 0;
    RunqueueWait reader()
    {
        return [this](std::uint32_t tid) -> std::optional<PinClock::duration> {
            ++reads;
            auto it = waited.find(tid);
            return it == waited.end() ? std::nullopt : std::optional<PinClock::duration>(it->second);
        };
    }
};

// Process `pid` loops every 100 ms from 1.9 s to 3 s, around a commit at 0 (flip at 2 s): held on 1.
void loop_held(Scenario& s, std::uint32_t pid)
{
    for (PinDuration t = 1900ms; t <= 3s; t += 100ms) {
        REQUIRE(s.gen(pid, t) == 1);
    }
}

} // namespace

TEST_CASE("pins: a reader that waited for a CPU for longer than a window, between its key and its certificate, "
          "keeps its generation")
{
    FakeRunqueue rq;
    rq.waited[100] = 0s;
    Scenario s(k_default_max_hold, std::chrono::days(30), rq.reader());
    s.commit(2, 0s);
    // Looping, held on 1 after the flip at 2 s; its key at 3 s.
    loop_held(s, 100);
    // Runnable but not running for 2.5 s: its certificate comes 2.5 s after its key.
    rq.waited[100] += 2500ms;
    CHECK(s.gen(100, 5500ms) == 1);
    // The same without the kernel's count: it would have been moved between its two files.
    Scenario blind;
    blind.commit(2, 0s);
    loop_held(blind, 100);
    CHECK(blind.gen(100, 5500ms) == 2);
}

TEST_CASE("pins: a reader that slept for a window moves, whatever it waited for a CPU besides")
{
    FakeRunqueue rq;
    rq.waited[100] = 0s;
    Scenario s(k_default_max_hold, std::chrono::days(30), rq.reader());
    s.commit(2, 0s);
    loop_held(s, 100);
    // 0.5 s waiting for a CPU, then 2.1 s asleep: away for more than a window of its own time.
    rq.waited[100] += 500ms;
    CHECK(s.gen(100, 5600ms) == 2);
    // Time on a CPU elsewhere counts as away too: a reader held until 3 s computes for 2.1 s
    // between rounds (its runqueue wait stays put) and moves.
    FakeRunqueue busy;
    busy.waited[200] = 0s;
    Scenario c(k_default_max_hold, std::chrono::days(30), busy.reader());
    c.commit(2, 0s);
    loop_held(c, 200);
    CHECK(c.gen(200, 5100ms) == 2);
}

TEST_CASE("pins: a stalled reader keeps the transition going until it comes back, and one whose thread ended does not")
{
    FakeRunqueue rq;
    rq.waited[100] = 0s;
    rq.waited[200] = 0s;
    Scenario s(k_default_max_hold, std::chrono::days(30), rq.reader());
    s.commit(2, 0s);
    CHECK(s.gen(100, 1900ms) == 1);
    CHECK(s.gen(200, 1950ms) == 1);
    CHECK(s.gen(100, 2000ms) == 1);
    CHECK(s.gen(200, 2050ms) == 1);
    // Both stall; 200's thread then ends.
    rq.waited[100] += 3s;
    rq.waited.erase(200);
    // A new process at 5 s ends nothing: 100 is still held on 1, mid-round for all anyone knows.
    CHECK(s.gen(300, 5s) == 2);
    CHECK(s.pins.in_transition(s.at(5s)));
    CHECK(s.gen(100, 5100ms) == 1);
    // Once it paused for real (here: asleep for 2.1 s), the transition ends with its next lookup.
    CHECK(s.gen(100, 7300ms) == 2);
    CHECK_FALSE(s.pins.in_transition(s.at(7300ms)));
}

TEST_CASE("pins: the kernel's count is read at most every eighth of a window per thread while a reader loops")
{
    FakeRunqueue rq;
    rq.waited[100] = 0s;
    Scenario s(k_default_max_hold, std::chrono::days(30), rq.reader());
    s.commit(2, 0s);
    // 2 s of lookups every millisecond: 2,000 lookups, a read per 250 ms.
    for (PinDuration t = 0ms; t < 2s; t += 1ms) {
        REQUIRE(s.pins.choose(100, 100, s.at(t)).gen == 1);
    }
    CHECK(rq.reads == 8);
    // A second thread of the process is sampled for itself.
    rq.waited[101] = 0s;
    CHECK(s.pins.choose(100, 101, s.at(2s)).gen == 1);
    CHECK(rq.reads == 9);
}
