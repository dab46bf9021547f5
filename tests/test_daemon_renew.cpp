// The daemon's scheduler left running on a real mount: what it costs over time. Short-lived
// certificates are renewed a bounded number of times.
#include <thread>

#include <catch2/catch.hpp>

#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "tests/support/mount.hpp"
#include "tests/support/testutil.hpp"

using namespace certfs;
using namespace std::chrono_literals;
using certfs::test::wait_until;
using Mount = certfs::test::CaMount;

namespace {

void add_issuer(const Mount& m, const std::string& name, Duration validity)
{
    renew::LocalCaConfig config;
    config.validity = validity;
    REQUIRE(m.store()->add_issuer(renew::create_local_ca(name, config, std::chrono::system_clock::now()).value()).ok());
}

void add_domain(const Mount& m, const std::string& name, const std::string& issuer,
                std::optional<Duration> renew_before = std::nullopt)
{
    store::DomainConfig c;
    c.name = name;
    c.issuer = issuer;
    c.dns_names = {name};
    c.renew_before = renew_before;
    auto st = m.store();
    REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
}

std::int64_t current_gen(const Mount& m, const std::string& name)
{
    return m.store()->get_domain(name).value().current_gen.value_or(0);
}

} // namespace

TEST_CASE("daemon: a new generation is never due: 5 domains with 20-second leaves renew a few times, not thousands")
{
    Mount m(200ms);
    add_issuer(m, "short", 20s);
    const std::vector<std::string> names = {"a.test", "b.test", "c.test", "d.test", "e.test"};
    const auto start = std::chrono::steady_clock::now();
    for (const auto& name : names) {
        add_domain(m, name, "short");
    }
    // The daemon renews each of them by itself, a half lifetime (10 s) after its issue...
    const bool renewed = wait_until(
        [&] { return std::all_of(names.begin(), names.end(), [&](const auto& n) { return current_gen(m, n) >= 3; }); },
        30s);
    CHECK(renewed);
    // ... and no sooner: over 30 s, at most 3 renewals per domain and 20 s of lifetime.
    std::this_thread::sleep_until(start + 30s); // the window the rate is measured over
    std::size_t total = 0;
    auto st = m.store();
    for (const auto& name : names) {
        total += st->history(name).value().size();
        // The current generation was not born due: it is due after its own issue.
        CHECK(renew::due_at(st->get_domain(name).value()).value() > st->current_generation(name).value().created_at);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double bound = static_cast<double>(names.size()) * (1 + 3 * seconds / 20);
    INFO(total << " generations in " << seconds << " s (at most " << bound << ")");
    CHECK(static_cast<double>(total) <= bound);
}
