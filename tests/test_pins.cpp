// DomainPins: which generation each lookup gets during a transition (contract point 5).
#include <catch2/catch.hpp>

#include <array>

#include "fs/pins.hpp"

using namespace certfs;
using namespace certfs::fs;
using namespace std::chrono_literals;

namespace {

constexpr int k_cert = 0;
constexpr int k_fullchain = 2;
constexpr int k_privkey = 3;
constexpr int k_combined_for_test()
{
    return 4;
}
constexpr PinDuration k_window = 2s;

struct Scenario {
    PinTime t0 = PinTime{} + std::chrono::hours(1000);
    DomainPins pins{1, k_window};

    PinTime at(PinDuration d) const { return t0 + d; }
};

} // namespace

TEST_CASE("pins: a commit becomes visible one pin window later and not earlier")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.choose(100, 100, k_cert, s.at(1999ms)) == 1);
    CHECK(s.pins.choose(200, 200, k_cert, s.at(2000ms)) == 2);
}

TEST_CASE("pins (a): one thread opens the key and the flip happens and it opens the certificate: same generation")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(1500ms)) == 1);
    CHECK(s.pins.choose(100, 100, k_cert, s.at(3400ms)) == 1); // after the flip, within its window
}

TEST_CASE("pins (b): the key opened by one thread and the certificate by another thread of the process")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.choose(101, 100, k_privkey, s.at(1500ms)) == 1);
    CHECK(s.pins.choose(102, 100, k_cert, s.at(3000ms)) == 1);
    // Another process at the same moment gets the new one.
    CHECK(s.pins.choose(201, 200, k_cert, s.at(3000ms)) == 2);
}

TEST_CASE("pins (c): a looping reader moves at the start of a round and never in the middle")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    std::vector<std::pair<std::int64_t, std::int64_t>> rounds;
    for (int i = 0; i < 40; ++i) {
        auto t = s.at(std::chrono::milliseconds(i * 100));
        auto key = s.pins.choose(100, 100, k_privkey, t);
        auto chain = s.pins.choose(100, 100, k_fullchain, t + 50ms);
        rounds.emplace_back(key, chain);
    }
    for (const auto& [key, chain] : rounds) {
        CHECK(key == chain);
    }
    CHECK(rounds.front().first == 1);
    CHECK(rounds.back().first == 2); // it did move
    // ... at the first round that started after the flip.
    CHECK(rounds[19].first == 1);
    CHECK(rounds[20].first == 2);
}

TEST_CASE("pins (d): two threads of one process and each looping over its own pairs")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    for (int i = 0; i < 60; ++i) {
        auto t = s.at(std::chrono::milliseconds(i * 70));
        // Thread 101 and thread 102 interleave, offset so their rounds straddle the flip differently.
        auto a1 = s.pins.choose(101, 100, k_privkey, t);
        auto b1 = s.pins.choose(102, 100, k_fullchain, t + 10ms);
        auto a2 = s.pins.choose(101, 100, k_fullchain, t + 30ms);
        auto b2 = s.pins.choose(102, 100, k_privkey, t + 60ms);
        CHECK(a1 == a2);
        CHECK(b1 == b2);
    }
    CHECK(s.pins.choose(101, 100, k_privkey, s.at(4300ms)) == 2);
}

TEST_CASE("pins (e): a process with no recent open gets the new generation right after the flip")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(100ms)) == 1);
    // The same process, quiet for longer than the window, then back after the flip.
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2200ms)) == 2);
}

TEST_CASE("pins: the kernel's revalidate-then-lookup of one name is one open and not a new round")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(1900ms)) == 1);
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2100ms)) == 1);
    // The cached entry for cert.pem is revalidated and looked up again at once: still round one.
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2101ms)) == 1);
    // A real reopen, after the lookups of one open could have taken (a quarter of the window),
    // starts a new round.
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2700ms)) == 2);
}

TEST_CASE("pins: the transition ends when the newest generation is visible and no old pin is left")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.in_transition(s.at(0s)));
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(1900ms)) == 1);
    CHECK(s.pins.in_transition(s.at(2100ms))); // process 100 still holds generation 1
    CHECK(s.pins.in_transition(s.at(3800ms)));
    CHECK_FALSE(s.pins.in_transition(s.at(3901ms)));
    // With no reader at all it ends at the flip.
    Scenario quiet;
    quiet.pins.committed(2, quiet.at(0s));
    CHECK(quiet.pins.in_transition(quiet.at(1999ms)));
    CHECK_FALSE(quiet.pins.in_transition(quiet.at(2000ms)));
}

TEST_CASE("pins: quick commits each flip at their own time: a rollback drops what it rolled back")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    s.pins.committed(3, s.at(500ms));
    CHECK(s.pins.choose(100, 100, k_cert, s.at(1999ms)) == 1);
    CHECK(s.pins.choose(200, 200, k_cert, s.at(2100ms)) == 2);
    CHECK(s.pins.choose(300, 300, k_cert, s.at(2500ms)) == 3);
    CHECK(s.pins.newest() == 3);
    // A rollback before the flip: the rolled-back generation is never served.
    Scenario r;
    r.pins.committed(2, r.at(0s));
    r.pins.committed(1, r.at(500ms));
    for (PinDuration t : {1000ms, 2100ms, 2600ms, 5000ms}) {
        CHECK(r.pins.choose(300, 300, k_cert, r.at(t)) == 1);
    }
    CHECK_FALSE(r.pins.in_transition(r.at(5s) + k_window + 1ms));
    // A rollback after the flip flips back like a renewal.
    s.pins.committed(1, s.at(3s));
    CHECK(s.pins.choose(400, 400, k_cert, s.at(4999ms)) == 3);
    CHECK(s.pins.choose(500, 500, k_cert, s.at(5000ms)) == 1);
    // Calling committed again for the same generation moves its flip later (re-anchoring).
    Scenario a;
    a.pins.committed(2, a.at(0s));
    a.pins.committed(2, a.at(300ms));
    CHECK(a.pins.choose(600, 600, k_cert, a.at(2100ms)) == 1);
    CHECK(a.pins.choose(700, 700, k_cert, a.at(2300ms)) == 2);
}

TEST_CASE("pins: the kernel's second lookup of a changed entry is the same open however late it comes")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(1950ms)) == 1);
    // Another process makes the cached cert.pem entry name generation 2.
    CHECK(s.pins.choose(200, 200, k_cert, s.at(2010ms)) == 2);
    // Thread 100 opens cert.pem: it is pinned to 1, the entry names 2, so the kernel drops the
    // entry and looks the name up again, here 600 ms later on a very loaded machine.
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2050ms)) == 1);
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2650ms)) == 1);
    // That late lookup may as well have been a new open: the round restarts from it, still on
    // generation 1, so the key opened next matches it; the reader moves at the next repeat.
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(2700ms)) == 1);
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2750ms)) == 2);
}

TEST_CASE("pins: a reader reopening one file in a tight loop moves and the transition ends")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    std::int64_t last = 0;
    auto t = s.at(1500ms);
    for (int i = 0; i < 2000; ++i, t += 1ms) {
        last = s.pins.choose(100, 100, k_combined_for_test(), t);
    }
    CHECK(last == 2);
    CHECK_FALSE(s.pins.in_transition(t + 5ms));
}

TEST_CASE("pins: a process that opens from a fresh thread each time is not stuck on its process pin")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    std::int64_t last = 0;
    std::uint32_t tid = 1000;
    for (auto t = s.at(1s); t < s.at(4s); t += 100ms) {
        last = s.pins.choose(tid++, 100, k_cert, t); // one short-lived thread per open
    }
    CHECK(last == 2);
}

TEST_CASE("pins: joins vote where a reader's rounds begin: one seen mid-round is not misled")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    // Five joins 20 ms apart. Thread 100 loops key then chain; at the third join it had just
    // opened the key through the cache, so its first lookup there is the chain.
    const std::array<int, 5> first_seen = {k_privkey, k_privkey, k_fullchain, k_privkey, k_privkey};
    for (int j = 0; j < 5; ++j) {
        auto join = s.at(std::chrono::milliseconds(20 * j));
        s.pins.begin_sample(join, join + 10ms);
        CHECK_FALSE(s.pins.cacheable_while_sampling(join + 5ms)); // observed right after a join
        CHECK(s.pins.choose(100, 100, first_seen[static_cast<std::size_t>(j)], join + 1ms) == 1);
        CHECK(s.pins.cacheable_while_sampling(join + 15ms)); // cached again in between
    }
    // The last join finds it mid-round again: it had opened the key through the cache.
    s.pins.end_sampling(s.at(100ms));
    CHECK_FALSE(s.pins.cacheable_while_sampling(s.at(115ms)));
    std::vector<std::pair<std::int64_t, std::int64_t>> rounds;
    rounds.emplace_back(1, s.pins.choose(100, 100, k_fullchain, s.at(101ms)));
    for (int i = 0; i < 30; ++i) {
        auto t = s.at(std::chrono::milliseconds(110 + 100 * i));
        auto key = s.pins.choose(100, 100, k_privkey, t);
        auto chain = s.pins.choose(100, 100, k_fullchain, t + 5ms);
        rounds.emplace_back(key, chain);
    }
    for (const auto& [key, chain] : rounds) {
        CHECK(key == chain);
    }
    CHECK(rounds.back().first == 2); // and it moved
}

TEST_CASE("pins: without votes the first lookup after a join starts the round")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    s.pins.begin_sample(s.at(0ms), s.at(10ms));
    s.pins.end_sampling(s.at(20ms));
    // Thread 100 never voted (it was quiet): its first lookup is the first file of its round.
    CHECK(s.pins.choose(100, 100, k_fullchain, s.at(2010ms)) == 1);
    CHECK(s.pins.choose(100, 100, k_privkey, s.at(2015ms)) == 1);
    CHECK(s.pins.choose(100, 100, k_fullchain, s.at(2030ms)) == 2); // a repeat after the flip: a new round
}

TEST_CASE("pins: no flip before one window after the last join")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    s.pins.begin_sample(s.at(0ms), s.at(10ms));
    s.pins.end_sampling(s.at(100ms));
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2099ms)) == 1);
    CHECK(s.pins.choose(200, 200, k_cert, s.at(2100ms)) == 2);
    CHECK_FALSE(s.pins.sampling());
}
