// DomainPins: which generation each lookup gets during a transition (contract point 5).
#include <catch2/catch.hpp>

#include "fs/pins.hpp"

using namespace certfs;
using namespace certfs::fs;
using namespace std::chrono_literals;

namespace {

constexpr int k_cert = 0;
constexpr int k_fullchain = 2;
constexpr int k_privkey = 3;
constexpr Duration k_window = 2s;

struct Scenario {
    TimePoint t0 = from_unix(1'800'000'000);
    DomainPins pins{1, k_window};

    TimePoint at(Duration d) const { return t0 + d; }
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
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2100ms) + 1ms) == 1);
    // A real reopen later starts a new round.
    CHECK(s.pins.choose(100, 100, k_cert, s.at(2300ms)) == 2);
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

TEST_CASE("pins: commits in quick succession each wait their own window: rollback flips the same way")
{
    Scenario s;
    s.pins.committed(2, s.at(0s));
    s.pins.committed(3, s.at(500ms));
    CHECK(s.pins.choose(100, 100, k_cert, s.at(1999ms)) == 1);
    CHECK(s.pins.choose(200, 200, k_cert, s.at(2100ms)) == 2);
    CHECK(s.pins.choose(300, 300, k_cert, s.at(2500ms)) == 3);
    CHECK(s.pins.newest() == 3);
    s.pins.committed(1, s.at(3s)); // a rollback to generation 1
    CHECK(s.pins.choose(400, 400, k_cert, s.at(4999ms)) == 3);
    CHECK(s.pins.choose(500, 500, k_cert, s.at(5000ms)) == 1);
}
