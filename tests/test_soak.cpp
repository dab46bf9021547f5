// A daemon left running: thousands of renewals by its own scheduler, with readers on the mount,
// and what that costs it in threads and memory. A real daemon on a real FUSE mount; bench/soak.sh
// runs the same test at other sizes.
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/pairs.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
namespace stdfs = std::filesystem;

namespace {

// What /proc/<pid>/status says of a process's memory and threads.
struct ProcessSize {
    long rss_kb = -1;
    long threads = -1;
};

ProcessSize size_of(pid_t pid)
{
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    ProcessSize size;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("VmRSS:", 0) == 0) {
            size.rss_kb = std::stol(line.substr(6));
        } else if (line.rfind("Threads:", 0) == 0) {
            size.threads = std::stol(line.substr(8));
        }
    }
    return size;
}

// The renewals the store holds for `names`: every generation after each domain's first.
long renewals_of(store::Store& st, const std::set<std::string>& names)
{
    long count = 0;
    const std::vector<store::Domain> domains = st.list_domains().value();
    for (const auto& d : domains) {
        if (names.count(d.name) != 0 && d.current_gen) {
            count += *d.current_gen - 1;
        }
    }
    return count;
}

// What the reader threads saw; checked on the test's thread once they stopped.
struct Seen {
    std::atomic<long> pairs{0};
    std::atomic<long> errors{0};     // an open or read that failed
    std::atomic<long> mismatches{0}; // a key that is not the certificate's
    std::atomic<long> archive_reads{0};
    std::atomic<long> churned{0}; // domains added, read and removed again
    std::atomic<long> churn_errors{0};

    // The first few failures, for the test's message.
    void failed(std::atomic<long>& count, const std::string& what)
    {
        ++count;
        std::lock_guard lock(mutex);
        if (first_failures.size() < 10) {
            first_failures += what + "\n";
        }
    }
    std::mutex mutex;
    std::string first_failures; // guarded by mutex
};

} // namespace

TEST_CASE("daemon: 10,000 renewals across 100 domains with readers: its threads stay flat and its RSS ends within "
          "10% of where it was after 1,000")
{
    // About 100 s on 2 cores; bench/soak.sh runs it at other sizes.
    const long k_domains = test::env_number("CERTFS_SOAK_DOMAINS", 100);
    const long k_renewals = test::env_number("CERTFS_SOAK_RENEWALS", 10000);
    const long k_first = test::env_number("CERTFS_SOAK_FIRST", 1000);
    const Duration window = 100ms;

    test::TempDir dir;
    stdfs::create_directory(dir / "mnt");
    const stdfs::path db = dir / "certfs.db";
    std::set<std::string> names;
    {
        auto st = store::Store::open(db.string(), {.create = true, .actor = "test", .clock = nullptr}).value();
        // Leaves of 3 s renewed 2.5 s before they expire: each domain every half second or so,
        // by the daemon's scheduler alone. EC keys (the default) are quick to make.
        renew::LocalCaConfig short_lived;
        short_lived.validity = 3s;
        const auto now = std::chrono::system_clock::now();
        REQUIRE(st->add_issuer(renew::create_local_ca("short", short_lived, now).value()).ok());
        REQUIRE(st->add_issuer(renew::create_local_ca("ca", {}, now).value()).ok());
        renew::Renewer renewer(*st, "test");
        for (long i = 0; i < k_domains; ++i) {
            store::DomainConfig c;
            c.name = "d" + std::to_string(i) + ".soak.test";
            c.issuer = "short";
            c.dns_names = {c.name};
            c.renew_before = 2500ms;
            REQUIRE(renewer.add_and_issue(c).ok());
            names.insert(c.name);
        }
    }
    test::Daemon daemon(db, dir / "mnt", dir / "certfs.log", window);
    const stdfs::path mnt = daemon.mnt();
    const std::vector<std::string> domains(names.begin(), names.end());

    Seen seen;
    std::atomic<bool> stopping{false};
    std::vector<std::thread> threads;
    // Readers: four threads, each looping over its quarter of the domains, key then certificate,
    // resting a little longer than a window between rounds so that each moves along with the
    // renewals. A pair that differs from the last one it verified for that domain is checked.
    constexpr int k_readers = 4;
    for (int r = 0; r < k_readers; ++r) {
        threads.emplace_back([&, r] {
            std::map<std::string, std::string> verified; // domain -> key + certificate
            while (!stopping) {
                for (std::size_t i = static_cast<std::size_t>(r); i < domains.size(); i += k_readers) {
                    auto key = test::slurp(mnt / "live" / domains[i] / "privkey.pem");
                    auto cert = test::slurp(mnt / "live" / domains[i] / "cert.pem");
                    if (!key || !cert) {
                        seen.failed(seen.errors, "live/" + domains[i] + ": " + std::strerror(errno));
                        continue;
                    }
                    ++seen.pairs;
                    std::string both = *key + *cert;
                    if (verified[domains[i]] != both) {
                        if (!test::pair_matches(*key, *cert)) {
                            ++seen.mismatches;
                        }
                        verified[domains[i]] = std::move(both);
                    }
                }
                std::this_thread::sleep_for(window * 3 / 2);
            }
        });
    }
    // Now and then an archived generation (the first of each domain: a set the kernel may keep
    // whole), and a domain added, read in live/ and archive/, and removed again.
    threads.emplace_back([&] {
        std::mt19937 random(42);
        while (!stopping) {
            const auto& name = domains[random() % domains.size()];
            const char* file = random() % 2 == 0 ? "cert.pem" : "privkey.pem";
            if (!test::slurp(mnt / "archive" / name / "1" / file)) {
                seen.failed(seen.errors, "archive/" + name + "/1/" + file + ": " + std::strerror(errno));
            }
            ++seen.archive_reads;
            std::this_thread::sleep_for(50ms);
        }
    });
    threads.emplace_back([&] {
        auto st = store::Store::open(db.string(), {.create = false, .actor = "test", .clock = nullptr}).value();
        for (long k = 0; !stopping; ++k) {
            store::DomainConfig c;
            c.name = "churn" + std::to_string(k) + ".soak.test";
            c.issuer = "ca";
            c.dns_names = {c.name};
            const stdfs::path live = mnt / "live" / c.name;
            // The step that failed, or nothing.
            auto churn = [&]() -> std::string {
                if (auto added = renew::Renewer(*st, "test").add_and_issue(c); !added.ok()) {
                    return "add: " + added.status().message();
                }
                if (!test::wait_until([&] { return stdfs::exists(live / "cert.pem"); })) {
                    return "live/ never showed it";
                }
                for (const stdfs::path& file :
                     {live / "privkey.pem", live / "combined.pem", mnt / "archive" / c.name / "1" / "fullchain.pem"}) {
                    if (!test::slurp(file)) {
                        return "read " + file.string() + ": " + std::strerror(errno);
                    }
                }
                if (auto removed = st->remove_domain(c.name); !removed.ok()) {
                    return "remove: " + removed.message();
                }
                if (!test::wait_until([&] { return !stdfs::exists(live); })) {
                    return "live/ still shows it";
                }
                return "";
            };
            if (const std::string failure = churn(); failure.empty()) {
                ++seen.churned;
            } else {
                seen.failed(seen.churn_errors, c.name + ": " + failure);
            }
            std::this_thread::sleep_for(200ms);
        }
    });
    struct Join {
        std::atomic<bool>& stopping;
        std::vector<std::thread>& threads;
        ~Join()
        {
            stopping = true;
            for (auto& t : threads) {
                t.join();
            }
        }
    } join{stopping, threads};

    auto st = store::Store::open(db.string(), {.create = false, .actor = "test", .clock = nullptr}).value();
    const auto started = std::chrono::steady_clock::now();
    auto wait_renewals = [&](long count) {
        return test::wait_until(
            [&] {
                std::this_thread::sleep_for(100ms); // the store is asked ten times a second
                return renewals_of(*st, names) >= count;
            },
            240s);
    };
    const bool first_reached = wait_renewals(k_first);
    const ProcessSize first = size_of(daemon.pid());
    const auto first_at = std::chrono::steady_clock::now();
    const bool all_reached = first_reached && wait_renewals(k_renewals);
    const ProcessSize last = size_of(daemon.pid());
    const long done = renewals_of(*st, names);
    const auto secs = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count() / 1000.0; };
    std::cout << "soak: after " << k_first << " renewals (" << secs(first_at - started) << " s): RSS " << first.rss_kb
              << " kB, " << first.threads << " threads; after " << done << " ("
              << secs(std::chrono::steady_clock::now() - started) << " s): RSS " << last.rss_kb << " kB, "
              << last.threads << " threads; " << seen.pairs << " pairs and " << seen.archive_reads
              << " archive reads read, " << seen.churned << " domains added and removed" << std::endl;
    stopping = true;

    INFO("the daemon said (its end):\n"
         << [&] {
                const std::string log = daemon.log();
                return log.substr(log.size() - std::min<std::size_t>(log.size(), 20000));
            }());
    REQUIRE(all_reached);
    INFO(seen.first_failures);
    CHECK(seen.errors == 0);
    CHECK(seen.mismatches == 0);
    CHECK(seen.churn_errors == 0);
    CHECK(seen.churned > 0);
    // Flat: the scheduler's workers and libfuse's idle threads come and go, a few at a time.
    CHECK(last.threads <= first.threads + 8);
    CHECK(last.rss_kb <= first.rss_kb + first.rss_kb / 10);
}
