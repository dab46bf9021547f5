// Contract point 5 (docs/contract.md) at the worst loops, on a real mount, under two CPU hogs: readers in their own
// processes (tests/programs/pair_reader.cpp) loop over a domain's key and certificate (or, as
// postfix does, fork a child per round that reads the key and then the chain) while
// renewals flip under them, one after the other. Every reader must get only matching pairs, and
// move the way the README says: a reader that never pauses keeps its generation, one that
// pauses for a pin window moves to the newest, and every reader gets the newest after it stopped.
//
// bench/stress.sh runs the same test at the default pin window (CERTFS_PAIRS_WINDOW_MS=2000) and
// with more renewals (CERTFS_PAIRS_RENEWALS).
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>

#include <catch2/catch.hpp>

#include "tests/support/mount.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using certfs::test::CaMount;
using certfs::test::PairReader;
namespace stdfs = std::filesystem;

namespace {

// How long the threads of process `pid` have run, and waited for a CPU, in all
// (/proc/<pid>/task/*/schedstat).
struct CpuTimes {
    std::chrono::milliseconds on_cpu{0};
    std::chrono::milliseconds waiting{0};
};
CpuTimes cpu_times_of(pid_t pid)
{
    std::chrono::nanoseconds on_cpu{0}, waiting{0};
    for (const auto& task : stdfs::directory_iterator("/proc/" + std::to_string(pid) + "/task")) {
        std::ifstream in(task.path() / "schedstat");
        long long ran = 0, waited = 0;
        if (in >> ran >> waited) {
            on_cpu += std::chrono::nanoseconds(ran);
            waiting += std::chrono::nanoseconds(waited);
        }
    }
    return {std::chrono::duration_cast<std::chrono::milliseconds>(on_cpu),
            std::chrono::duration_cast<std::chrono::milliseconds>(waiting)};
}

struct Kind {
    std::string name;              // its process name
    std::vector<std::string> args; // pair_reader's options
    bool pauses = false;           // it pauses for longer than a pin window now and then
    bool fresh = false;            // each round in a new process: it is never held
};

} // namespace

TEST_CASE("fs pairs: the worst loops never get a mismatched pair: held while they loop, moved when they pause")
{
    const auto window = std::chrono::milliseconds(test::env_number("CERTFS_PAIRS_WINDOW_MS", 200));
    const long renewals = test::env_number("CERTFS_PAIRS_RENEWALS", 100);
    const std::string w = std::to_string(window.count());
    const std::string pause = std::to_string(window.count() * 5 / 2);
    const std::string pause_every = std::to_string(window.count() * 2);

    test::CpuHogs hogs(2);
    CaMount m(window);
    m.add("pairs.test");
    const stdfs::path visible = m.dir() / "visible";
    test::write_file(visible, m.store()->current_generation("pairs.test").value().serial_hex);

    // Each kind twice: looping without a pause, and pausing for 2.5 windows every 2 windows.
    const std::vector<Kind> base = {
        {"keycert", {}},                     // the symmetric fast looper, key first
        {"certkey", {"--cert-first"}},       // the same, certificate first
        {"twothreads", {"--threads", "2"}},  // two threads of one process doing the same
        {"midround", {"--work-us", "2000"}}, // its loop spent between the key and the certificate
        {"parser", {"--parse-every"}},       // parses every pair
        {"dirfd", {"--dir-fd"}},             // openat() through live/<name>/ opened each round
    };
    std::vector<Kind> kinds;
    for (const auto& k : base) {
        kinds.push_back(k);
        Kind p = k;
        p.name += "-p";
        p.pauses = true;
        p.args.insert(p.args.end(), {"--pause-ms", pause, "--pause-every-ms", pause_every});
        kinds.push_back(p);
    }
    // postfix's way: a child forked per connection reads the key, then the chain.
    kinds.push_back({"forkper", {"--fork"}, false, true});
    std::vector<std::unique_ptr<PairReader>> readers;
    for (const auto& k : kinds) {
        std::vector<std::string> args{"--window-ms", w, "--name", k.name, "--visible", visible.string()};
        args.insert(args.end(), k.args.begin(), k.args.end());
        readers.push_back(std::make_unique<PairReader>(m.live("pairs.test"), args));
    }
    for (auto& r : readers) {
        REQUIRE(r->wait_ready(30s));
    }

    // Renewals one after the other, each flipping under the readers before the next commits.
    std::string last;
    for (long i = 0; i < renewals; ++i) {
        last = m.renew("pairs.test");
        m.wait_flip("pairs.test", last);
        test::write_file(visible.string() + ".new", last);
        stdfs::rename(visible.string() + ".new", visible);
    }

    std::cout << "fs pairs: " << renewals << " renewals, pin window " << window.count() << " ms, two CPU hogs\n"
              << std::left << std::setw(14) << "reader" << std::right << std::setw(10) << "rounds" << std::setw(12)
              << "mismatches" << std::setw(13) << "generations" << std::setw(8) << "moves" << std::setw(14)
              << "pauses moved" << '\n';
    const std::string log = m.log();
    for (std::size_t i = 0; i < readers.size(); ++i) {
        const Kind& k = kinds[i];
        const pid_t pid = readers[i]->pid();
        auto c = readers[i]->stop();
        std::cout << std::left << std::setw(14) << k.name << std::right << std::setw(10) << c["rounds"] << std::setw(12)
                  << c["mismatches"] << std::setw(13) << c["generations"] << std::setw(8) << c["moves"] << std::setw(14)
                  << (std::to_string(c["pauses_moved"]) + "/" + std::to_string(c["pauses_due"])) << '\n';
        INFO(k.name << " (pid " << pid << ")");
        CHECK(c["mismatches"] == 0);
        CHECK(c["errors"] == 0);
        CHECK(c["rounds"] > 100);
        // A reader moves only where it was quiet for a pin window: never between two opens that
        // were closer than that.
        CHECK(c["early_moves"] == 0);
        // Once it stopped and stayed away for a while, it reads the newest generation.
        CHECK(c.serials["final"] == last);
        if (k.fresh) {
            // Always new to the mount, it got each generation soon after its flip.
            CHECK(c["generations"] >= renewals / 2);
        } else if (k.pauses) {
            // Every pause that began behind the newest generation moved it there.
            CHECK(c["pauses_due"] >= renewals / 10);
            CHECK(c["pauses_moved"] == c["pauses_due"]);
            CHECK(c["generations"] >= renewals / 10);
        } else {
            // It never paused: it was held, and the daemon said so, naming it.
            const std::string notice = "process " + std::to_string(pid) + " (" + k.name + ") keeps reading generation";
            INFO("the daemon's log has no line with: " << notice);
            CHECK(log.find(notice) != std::string::npos);
        }
    }
}

TEST_CASE("fs pairs: a reader kept off the CPU for longer than a pin window, mid-round, keeps its generation")
{
    // A reader that never pauses spends its rounds between its key and its certificate (20 ms of
    // work there). A real-time task on its CPU keeps it runnable but not running for 3 windows,
    // 5 times: from the daemon's side it went quiet, but it never paused. It must be neither
    // moved nor given a mixed pair.
    const auto window = std::chrono::milliseconds(200);
    const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus < 2) {
        WARN("one CPU: a real-time task would stall the daemon too; skipped");
        return;
    }
    const std::string cpu = std::to_string(cpus - 1);
    CaMount m(window);
    m.add("stall.test");
    PairReader reader(m.live("stall.test"),
                      {"--window-ms", std::to_string(window.count()), "--name", "stalled", "--work-us", "20000"});
    REQUIRE(reader.wait_ready(30s));
    auto pinned = test::run({"/usr/bin/taskset", "-a", "-p", "-c", cpu, std::to_string(reader.pid())});
    REQUIRE(pinned.exit_code == 0);
    // A renewal it never pauses for: it is held on the first generation from here on.
    const std::string newest = m.renew("stall.test");
    m.wait_flip("stall.test", newest);

    for (int i = 0; i < 5; ++i) {
        const auto before = cpu_times_of(reader.pid());
        {
            // Spins on the reader's CPU until the reader has waited 3 windows for it; killed then.
            test::Child stall({"/usr/bin/taskset", "-c", cpu, "/usr/bin/chrt", "-f", "50", "/usr/bin/sh", "-c",
                               "while :; do :; done"});
            std::chrono::milliseconds waited{0};
            const bool stalled = test::wait_until(
                [&] {
                    waited = cpu_times_of(reader.pid()).waiting - before.waiting;
                    return waited >= 3 * window;
                },
                10s);
            INFO("the reader waited " << waited.count() << " ms for a CPU during stall " << i);
            REQUIRE(stalled);
        }
        const auto after = cpu_times_of(reader.pid());
        // Back on its CPU for 100 ms of rounds before the next stall.
        REQUIRE(test::wait_until([&] { return cpu_times_of(reader.pid()).on_cpu >= after.on_cpu + 100ms; }, 10s));
    }
    auto c = reader.stop();
    std::cout << "fs pairs, stalled reader: " << c["rounds"] << " rounds, " << c["mismatches"] << " mismatches, "
              << c["moves"] << " moves over 5 stalls of 600 ms (pin window 200 ms)\n";
    CHECK(c["mismatches"] == 0);
    CHECK(c["errors"] == 0);
    CHECK(c["moves"] == 0);
    CHECK(c.serials["final"] == newest);
}
