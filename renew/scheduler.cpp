#include "renew/scheduler.hpp"

#include <algorithm>
#include <array>
#include <limits>

#include <spdlog/spdlog.h>

#include "renew/issuer.hpp"
#include "renew/recovery.hpp"
#include "renew/renewer.hpp"
#include "store/lease.hpp"
#include "store/validate.hpp"

namespace certfs::renew {

namespace {

constexpr std::array<int, 5> k_warning_days = {30, 14, 7, 3, 1};

// Renewal information (ACME ARI): how many fetches at once, and when to ask again.
constexpr std::size_t k_max_ari_fetches = 2;
constexpr Duration k_ari_default_retry = std::chrono::hours(6);
constexpr Duration k_ari_min_retry = std::chrono::minutes(1);
constexpr Duration k_ari_max_retry = std::chrono::hours(24);
constexpr Duration k_ari_retry_after_error = std::chrono::hours(1);
constexpr Duration k_retry_after_unrecorded = std::chrono::minutes(1); // see run_scope(), hold_back()
// While another owner's lease holds a scope: try again when it is released (the store changing
// wakes the loop) or expires, and at the latest after this, in case its holder died.
constexpr Duration k_lease_recheck = std::chrono::minutes(1);

// How long the loop sleeps at most: a clock step or a missed wake-up costs no more than this.
constexpr Duration k_max_sleep = std::chrono::minutes(10);

bool failing(const store::Domain& d)
{
    using S = store::DomainState;
    return d.failures > 0 || d.state == S::backoff || d.state == S::rejected || d.state == S::misconfigured;
}

} // namespace

std::optional<int> expiry_warning_days(const store::Domain& domain, TimePoint now)
{
    if (!domain.current_not_after) {
        return std::nullopt;
    }
    if (now >= *domain.current_not_after) {
        return 0; // expired
    }
    std::optional<int> passed;
    for (int days : k_warning_days) {
        if (*domain.current_not_after - now <= std::chrono::days(days)) {
            passed = days; // the smallest threshold passed
        }
    }
    return passed;
}

namespace {

SchedulerOptions with_issuers(SchedulerOptions options)
{
    options.issuers = or_builtin_issuers(std::move(options.issuers));
    return options;
}

void log_renewed(const std::string& key, const Result<std::vector<RenewOutcome>>& outcomes)
{
    if (!outcomes.ok()) {
        if (outcomes.status().code() == Code::conflict) {
            spdlog::info("{}: {}", key, outcomes.status().message());
        } else {
            spdlog::warn("{}: renewal failed: {}", key, outcomes.status().message());
        }
        return;
    }
    for (const auto& o : *outcomes) {
        spdlog::info("{}: {}", o.domain, o.message); // renewed, pending, or renewed meanwhile
    }
}

BatchRunner scope_runner(const SchedulerOptions& options, const Clock& clock)
{
    BatchOptions batch;
    batch.db_path = options.db_path;
    batch.store_key = options.store_key;
    batch.actor = options.owner;
    batch.owner = options.owner;
    batch.clock = &clock;
    batch.issuers = options.issuers;
    batch.hooks = options.hooks;
    batch.wait_for_flip = options.wait_for_flip;
    return BatchRunner(std::move(batch));
}

} // namespace

Scheduler::Scheduler(SchedulerOptions options, const Clock& clock)
    : m_options(with_issuers(std::move(options))), m_clock(clock), m_batch(scope_runner(m_options, m_clock))
{
}

Scheduler::~Scheduler() { stop(); }

Status Scheduler::start(bool run_thread)
{
    ASSIGN_OR_RETURN(auto store, store::Store::open(m_options.db_path,
                                                    {.create = false, .actor = m_options.owner, .clock = &m_clock},
                                                    m_options.store_key));
    {
        std::lock_guard lock(m_mutex);
        m_store = std::move(store);
        m_stopping = false;
    }
    if (run_thread) {
        m_thread = std::thread([this] { loop(); });
        m_heartbeat = std::make_unique<store::LeaseHeartbeat>(m_options.db_path, m_options.owner, k_lease_ttl,
                                                              m_options.heartbeat, &m_clock);
    }
    return Status::Ok();
}

void Scheduler::stop()
{
    {
        std::lock_guard lock(m_mutex);
        m_stopping = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) {
        m_thread.join();
    }
    wait_idle();
    m_heartbeat.reset(); // after the workers: their leases live until they end
}

void Scheduler::wake()
{
    {
        std::lock_guard lock(m_mutex);
        m_woken = true;
    }
    m_cv.notify_all();
}

void Scheduler::wait_idle()
{
    std::map<std::uint64_t, std::thread> workers;
    {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [this] { return m_busy == 0; });
        workers.swap(m_workers);
        m_ended.clear();
    }
    for (auto& [id, w] : workers) {
        w.join();
    }
}

void Scheduler::start_worker(std::function<void()> work)
{
    const std::uint64_t id = m_next_worker++;
    ++m_busy;
    // The thread cannot queue itself before it is in m_workers: that needs m_mutex, which the
    // caller holds until then.
    m_workers.emplace(id, std::thread([this, id, work = std::move(work)] {
                          try {
                              work();
                          } catch (...) {
                              // The thread's boundary: the work catches its own failures; this is the last resort.
                              spdlog::error("scheduler: {}", exception_status("worker").message());
                          }
                          {
                              std::lock_guard lock(m_mutex);
                              m_ended.push_back(id);
                              --m_busy;
                              m_woken = true; // room for another renewal or fetch
                          }
                          m_cv.notify_all();
                      }));
}

void Scheduler::reap_ended()
{
    // Joined outside the lock: an ended worker has only its return left, but needs no lock for it.
    std::vector<std::thread> ended;
    {
        std::lock_guard lock(m_mutex);
        for (auto id : m_ended) {
            if (auto node = m_workers.extract(id)) {
                ended.push_back(std::move(node.mapped()));
            }
        }
        m_ended.clear();
    }
    for (auto& t : ended) {
        t.join();
    }
}

void Scheduler::loop()
{
    std::unique_lock lock(m_mutex);
    while (!m_stopping) {
        lock.unlock();
        Result<TimePoint> next = Status::Unavailable("not planned");
        try {
            next = step();
        } catch (...) {
            next = exception_status("planning failed"); // the thread's boundary; a minute's pause
        }
        if (!next.ok()) {
            spdlog::warn("scheduler: {}", next.status().message());
        }
        const auto now = m_clock.now();
        Duration sleep = std::chrono::minutes(1); // after an error
        if (next.ok()) {
            sleep = *next - now > k_max_sleep ? k_max_sleep : std::chrono::duration_cast<Duration>(*next - now);
        }
        sleep = std::max(sleep, Duration(0));
        lock.lock();
        m_cv.wait_for(lock, sleep, [this] { return m_stopping || m_woken; });
        m_woken = false;
    }
}

std::vector<Scheduler::HeldScope> Scheduler::drop_unserved(std::vector<store::Domain>& domains)
{
    std::map<std::string, std::string> refused; // scope -> why, of such domains
    for (const auto& d : domains) {
        if (Status s = store::check_served_name(d.name); !s.ok()) {
            refused.emplace(store::lease_scope(d), s.message());
            if (m_unserved_said.insert(d.name).second) {
                spdlog::error("not renewing a domain of the store (nor the rest of its bundle): {}", s.message());
            }
        }
    }
    std::map<std::string, HeldScope> held;
    for (auto& d : domains) {
        const std::string scope = store::lease_scope(d);
        auto r = refused.find(scope);
        if (r == refused.end() || !store::check_served_name(d.name).ok()) {
            continue;
        }
        HeldScope& h = held[scope];
        h.scope.key = scope;
        h.why = "its bundle holds a name the mount refuses: " + r->second;
        h.scope.members.push_back(d);
    }
    if (!refused.empty()) {
        std::erase_if(domains, [&](const store::Domain& d) { return refused.contains(store::lease_scope(d)); });
    }
    std::vector<HeldScope> out;
    for (auto& [scope, h] : held) {
        out.push_back(std::move(h));
    }
    return out;
}

Result<TimePoint> Scheduler::step()
{
    reap_ended(); // every thread is joined soon after it ends, not at shutdown
    std::lock_guard lock(m_mutex);
    if (!m_store) {
        return Status::Unavailable("the scheduler is not started");
    }
    recover(*m_store); // what dead renewals left (recovery.hpp), before planning on it
    ASSIGN_OR_RETURN(auto domains, m_store->list_domains());
    const std::vector<HeldScope> not_renewed = drop_unserved(domains);
    ASSIGN_OR_RETURN(const std::vector<store::Lease> leases, m_store->leases()); // all live after recover()
    const TimePoint now = m_clock.now();
    TimePoint next = TimePoint::max();
    for (const HeldScope& h : not_renewed) {
        warn_expiring(h.scope, now, next, h.why);
    }
    plan_renewal_info(domains, now, next);
    std::map<std::string, Scope> scopes;
    for (auto& d : domains) {
        std::string key = store::lease_scope(d);
        Scope& s = scopes[key];
        s.key = std::move(key);
        s.members.push_back(std::move(d));
    }

    struct Ready {
        TimePoint due;
        std::string key;
        std::string first; // the member the renewal is asked for
    };
    std::vector<Ready> ready; // due scopes not running
    for (const auto& [key, scope] : scopes) {
        warn_expiring(scope, now, next);
        // An init-capture: clang before 16 cannot capture a structured binding.
        const bool held = std::any_of(leases.begin(), leases.end(),
                                      [&scope_key = key](const auto& l) { return l.scope == scope_key; });
        std::optional<TimePoint> due = owed_hooks_at(scope.members, held, now); // hooks a crash left owed
        for (const auto& d : scope.members) {
            if (auto at = due_at(d); at && (!due || *at < *due)) {
                due = at;
            }
        }
        if (!due) {
            continue; // imported: never renewed here
        }
        due = hold_back(key, *due, now, leases);
        if (m_first_step && *due <= now && std::any_of(scope.members.begin(), scope.members.end(), failing)) {
            // Overdue retries after a restart: spread, not all at once.
            auto spread = std::chrono::duration_cast<Duration>(m_options.restart_spread * random_unit());
            m_not_before[key] = now + spread;
        }
        if (auto nb = m_not_before.find(key); nb != m_not_before.end()) {
            if (nb->second > now) {
                due = std::max(*due, nb->second);
            } else {
                m_not_before.erase(nb);
            }
        }
        if (*due > now) {
            next = std::min(next, *due);
            continue;
        }
        if (!m_running.contains(key)) {
            ready.push_back({*due, key, scope.members.front().name});
        }
    }
    // The longest overdue first: with more due than room, the ones that wait are the most
    // recently due, not whichever sort last by name (a domain renewed again and again while
    // others wait). A worker finishing wakes the loop for the rest.
    std::sort(ready.begin(), ready.end(), [](const Ready& a, const Ready& b) { return a.due < b.due; });
    for (const Ready& r : ready) {
        if (static_cast<int>(m_running.size()) >= m_options.concurrency) {
            break;
        }
        m_running.insert(r.key);
        start_worker([this, key = r.key, first = r.first] { run_scope(key, first); });
    }
    m_first_step = false;
    m_settling.clear(); // of scopes gone from the store
    std::erase_if(m_lease_wait, [&](const auto& w) { return !scopes.contains(w.first); });
    return next;
}

TimePoint Scheduler::hold_back(const std::string& key, TimePoint due, TimePoint now,
                               const std::vector<store::Lease>& leases)
{
    // A run of this scope ended since the last pass and left it due as it found it: its due
    // time did not move past the run's start. One that fell due while the run went on (the
    // owed hooks of a crash took their time) is not held back.
    std::optional<TimePoint> left_due;
    if (auto ran = m_settling.find(key); ran != m_settling.end()) {
        if (due <= ran->second.started) {
            left_due = ran->second.ended;
        }
        m_settling.erase(ran);
    }
    auto waiting = m_lease_wait.find(key);
    if (due > now || (!left_due && waiting == m_lease_wait.end())) {
        return due;
    }
    // Another owner's live lease: that renewal is running (or its holder died; the lease says
    // which once it expires).
    std::optional<TimePoint> held_until;
    for (const auto& l : leases) {
        if (l.scope == key && l.owner != m_options.owner && l.expires_at > now) {
            held_until = l.expires_at;
        }
    }
    if (held_until) {
        if (waiting == m_lease_wait.end()) {
            waiting = m_lease_wait.emplace(key, left_due.value_or(now) + k_lease_recheck).first;
        }
        if (waiting->second > now) {
            return std::min(*held_until, waiting->second);
        }
        waiting->second = now + k_lease_recheck; // a minute has passed: try again now
        return due;
    }
    if (waiting != m_lease_wait.end()) {
        m_lease_wait.erase(waiting); // released or expired: try again now
        return due;
    }
    // The run left the scope due with no lease in its way: nothing recorded when to try again
    // (the store refused the write, or the renewal could not start). A minute's pause after the
    // run, not a loop.
    auto& nb = m_not_before[key];
    nb = std::max(nb, *left_due + k_retry_after_unrecorded);
    return std::max(due, nb);
}

void Scheduler::plan_renewal_info(const std::vector<store::Domain>& domains, TimePoint now, TimePoint& next)
{
    // ACME renewal information (RFC 9773), fetched for each ACME domain's current certificate
    // when it is new, and again when the CA's Retry-After (or our default) has passed.
    auto issuers = m_store->list_issuers();
    if (!issuers.ok()) {
        return;
    }
    std::set<std::string> acme;
    for (const auto& i : *issuers) {
        if (i.kind == "acme") {
            acme.insert(i.name);
        }
    }
    for (const auto& d : domains) {
        if (!d.issuer || !acme.contains(*d.issuer) || !d.current_gen) {
            continue;
        }
        const bool fresh = d.ari_gen == d.current_gen && d.ari_next_check;
        if (fresh && *d.ari_next_check > now) {
            next = std::min(next, *d.ari_next_check);
            continue;
        }
        if (auto nb = m_ari_not_before.find(d.name); nb != m_ari_not_before.end()) {
            if (nb->second.first == *d.current_gen && nb->second.second > now) {
                next = std::min(next, nb->second.second);
                continue; // the last fetch for this certificate could not record its answer
            }
            m_ari_not_before.erase(nb);
        }
        if (m_ari_running.contains(d.name) || m_ari_running.size() >= k_max_ari_fetches) {
            continue; // a fetch finishing wakes the loop
        }
        m_ari_running.insert(d.name);
        start_worker([this, name = d.name, gen = *d.current_gen] { refresh_renewal_info(name, gen); });
    }
}

void Scheduler::refresh_renewal_info(const std::string& name, std::int64_t gen)
{
    auto fetch = [&]() -> Status {
        ASSIGN_OR_RETURN(auto store, store::Store::open(m_options.db_path,
                                                        {.create = false, .actor = m_options.owner, .clock = &m_clock},
                                                        m_options.store_key));
        ASSIGN_OR_RETURN(store::Domain d, store->get_domain(name));
        if (!d.issuer || !d.current_gen) {
            return Status::Ok();
        }
        ASSIGN_OR_RETURN(store::Generation current, store->get_generation(name, *d.current_gen));
        ASSIGN_OR_RETURN(auto issuer, load_issuer(*store, *d.issuer, m_options.issuers));
        auto window = issuer->renewal_info(current);
        const TimePoint now = m_clock.now();
        std::optional<TimePoint> at = d.ari_gen == d.current_gen ? d.ari_at : std::nullopt;
        Duration again = k_ari_retry_after_error;
        if (window.ok() && *window) {
            const auto span = std::chrono::duration_cast<Duration>((*window)->end - (*window)->start);
            at = (*window)->start + std::chrono::duration_cast<Duration>(span * random_unit());
            again = std::clamp((*window)->retry_after.value_or(k_ari_default_retry), k_ari_min_retry, k_ari_max_retry);
            spdlog::info("{}: the CA suggests renewing between {} and {}; picked {}", name,
                         format_rfc3339((*window)->start), format_rfc3339((*window)->end), format_rfc3339(*at));
        } else if (window.ok()) {
            at.reset(); // the CA keeps no renewal information: ask again now and then
            again = k_ari_max_retry;
        } else {
            spdlog::warn("{}: no renewal information: {}", name, window.status().message());
            again = std::clamp(window.status().retry_after().value_or(k_ari_retry_after_error), k_ari_min_retry,
                               k_ari_max_retry);
        }
        return store->set_renewal_info(name, current.gen, at, now + again);
    };
    Status s = Status::Ok();
    try {
        s = fetch();
    } catch (...) {
        s = exception_status("fetching renewal information"); // the worker's boundary
    }
    if (!s.ok() && s.code() != Code::conflict) {
        spdlog::warn("{}: cannot record renewal information: {}", name, s.message());
    }
    std::lock_guard lock(m_mutex);
    m_ari_running.erase(name);
    if (!s.ok()) {
        // Nothing recorded when to ask again, so the plan still finds the fetch due: not for
        // this certificate before the shortest retry, so that a failing store or issuer cannot
        // make the loop refetch at once. A new certificate is fetched for at once.
        m_ari_not_before[name] = {gen, m_clock.now() + k_ari_min_retry};
    }
}

void Scheduler::warn_expiring(const Scope& scope, TimePoint now, TimePoint& next, const std::string& not_renewed)
{
    for (const auto& d : scope.members) {
        if (!d.current_not_after || !d.current_gen) {
            continue;
        }
        // Certificates being renewed normally are not worth a warning.
        if (not_renewed.empty() && d.issuer && !failing(d)) {
            continue;
        }
        auto days = expiry_warning_days(d, now);
        auto warned = m_warned.find({d.name, *d.current_gen});
        if (days && (warned == m_warned.end() || warned->second > *days)) {
            const std::string why = !not_renewed.empty() ? " (" + not_renewed + ")"
                                    : d.issuer           ? " (last error: " + d.last_error + ")"
                                                         : " (imported: renew it by hand)";
            if (*days == 0) {
                spdlog::error("{}: the certificate expired at {} and has not been renewed{}; it is still served",
                              d.name, format_rfc3339(*d.current_not_after), why);
            } else {
                // Whole hours, and seconds in the last hour: "29d23h", "42m10s".
                const auto exact = *d.current_not_after - now;
                const Duration left = exact >= std::chrono::hours(1)
                                          ? Duration(std::chrono::floor<std::chrono::hours>(exact))
                                          : Duration(std::chrono::floor<std::chrono::seconds>(exact));
                spdlog::warn("{}: the certificate expires in {} and has not been renewed{}", d.name,
                             format_duration(left), why);
            }
            // One entry a domain: that of its current generation.
            m_warned.erase(m_warned.lower_bound({d.name, std::numeric_limits<std::int64_t>::min()}),
                           m_warned.upper_bound({d.name, std::numeric_limits<std::int64_t>::max()}));
            m_warned[{d.name, *d.current_gen}] = *days;
        }
        // Wake for the next threshold too.
        for (int threshold : k_warning_days) {
            auto at = *d.current_not_after - std::chrono::days(threshold);
            if (at > now) {
                next = std::min(next, at);
            }
        }
        if (*d.current_not_after > now) {
            next = std::min(next, *d.current_not_after);
        }
    }
}

void Scheduler::run_scope(const std::string& key, const std::string& first_member)
{
    const TimePoint started = m_clock.now();
    bool unrecorded = false;
    try {
        unrecorded =
            m_batch.run_one(first_member, [&key](const auto& outcomes) { log_renewed(key, outcomes); }).unrecorded;
    } catch (...) {
        // The worker's boundary: its deploy hooks threw after the commit.
        spdlog::error("{}: {}", key, exception_status("deploy hooks failed").message());
        unrecorded = true;
    }
    std::lock_guard lock(m_mutex);
    if (unrecorded) {
        // Nothing recorded the failure in the store, so nothing set the next attempt: a
        // minute's pause, so that a renewal that always throws, or a store that cannot be
        // opened, cannot make the loop spin.
        m_not_before[key] = m_clock.now() + k_retry_after_unrecorded;
    }
    m_running.erase(key);
    // The next pass checks that the run did not leave it as due as it found it (hold_back).
    m_settling[key] = {started, m_clock.now()};
}

} // namespace certfs::renew
