// The renewal scheduler inside the daemon: renews every domain with an issuer when it is due,
// through the same batch runner, pipeline and leases as `certfsctl renew` (batch.hpp,
// renewer.hpp), which runs the deploy hooks of each committed batch after the flip.
//
// - Due time: renew_at() pulled earlier by a jitter of up to 10% of the renewal window. The
//   jitter comes from the current certificate's serial number (random for the local CA and for
//   ACME CAs), so it is stable across restarts, new with every certificate, and different
//   between hosts and domains. Never before renewal_floor(): a new generation is never due.
// - After a failure, the attempt the renewer recorded (next_attempt, backoff with jitter).
//   When the scheduler starts, attempts that are already overdue are spread over
//   restart_spread instead of all running at once. A run that leaves its scope due without
//   recording why (another owner holds the lease, the store was busy or full, an exception)
//   never makes the next pass start it again at once: while another owner's lease is live, the
//   scope waits until that lease is released (the store changing wakes the loop) or expires,
//   and tries again after a minute at the latest; otherwise it waits a minute.
// - At most `concurrency` renewals at a time, never two for one domain or bundle (the in-memory
//   set of running scopes here, the store's lease across processes); the longest overdue first.
// - ACME renewal information (RFC 9773): for each ACME domain's current certificate, the
//   window the CA suggests; a random time in it becomes the due time when earlier. Fetched
//   when the certificate is new and again after the CA's Retry-After (1 min to 24 h, 6 h when
//   it gives none). A fetch that could not record its answer waits a minute, not a loop.
// - Threads: a worker per renewal or fetch, at most `concurrency` plus 2 at once; each is
//   joined by the pass after it ends, so a daemon's thread count stays flat.
// - Warnings at 30, 14, 7, 3 and 1 days before expiry of a certificate that is not being
//   renewed normally (a failed renewal, or an imported certificate).
//
// step() does one pass and returns when it wants to run again; start() runs passes on a thread
// that sleeps until then or until wake(). Tests drive step() with a fake clock.
// Thread-safety: every public member may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "renew/batch.hpp"
#include "renew/hooks.hpp"
#include "renew/issuer.hpp"
#include "store/lease.hpp"
#include "store/store.hpp"

namespace certfs::renew {

struct SchedulerOptions {
    std::string db_path;
    std::shared_ptr<const store::StoreKey> store_key; // opens the store's secrets (store_key.hpp)
    std::string owner;                                // names this process in leases ("certfs pid 123")
    int concurrency = 4;
    FlipWaiter wait_for_flip; // the daemon's filesystem's flips (flip.hpp); empty: hooks right after the commit
    HookOptions hooks;
    Duration restart_spread = std::chrono::minutes(5);
    Duration heartbeat = std::chrono::minutes(1); // how often held leases are extended
    // Makes the issuers of renewals and renewal-information fetches, from any worker thread;
    // empty: the built-in kinds, with one context for the scheduler (or_builtin_issuers).
    IssuerFactory issuers;
};

// The expiry warning threshold (30, 14, 7, 3, 1 days) `domain` has passed at `now`, if any;
// 0 once it has expired.
std::optional<int> expiry_warning_days(const store::Domain& domain, TimePoint now);

class Scheduler {
public:
    Scheduler(SchedulerOptions options, const Clock& clock);
    ~Scheduler(); // stop()
    Scheduler(const Scheduler&) = delete;
    Scheduler& operator=(const Scheduler&) = delete;

    // Opens the scheduler's store connection; with run_thread, starts the loop thread.
    Status start(bool run_thread = true);
    void stop(); // waits for running renewals and hooks
    void wake(); // the store changed: plan again now

    // One pass: starts the due renewals it has room for; returns when the next is due
    // (TimePoint::max() when nothing ever is).
    Result<TimePoint> step();
    // Waits until no renewal or hook run is in flight (tests).
    void wait_idle();

private:
    struct Scope {
        std::string key; // "domain:NAME" or "bundle:B"
        std::vector<store::Domain> members;
    };

    void loop();
    void run_scope(const std::string& key, const std::string& first_member);
    // Starts `work` on a worker thread that reaps itself: when it ends it queues itself in
    // m_ended, which the next pass joins. Caller holds m_mutex.
    void start_worker(std::function<void()> work);
    void reap_ended(); // joins the workers that ended; takes m_mutex
    // Holds back a scope that is due: after a run that left it due, or while another owner's
    // lease on it is live. Returns when it may run (now when it is not held back); caller holds
    // m_mutex. `leases`: the live leases, as the pass read them.
    TimePoint hold_back(const std::string& key, TimePoint due, TimePoint now, const std::vector<store::Lease>& leases);
    // Logs a warning when a member's certificate passes a threshold before its expiry without
    // being renewed. `not_renewed`: why the scope is not renewed at all, said in the warning
    // instead of the last error; empty for a scope renewed as usual.
    void warn_expiring(const Scope& scope, TimePoint now, TimePoint& next, const std::string& not_renewed = {});
    // A scope that is not renewed, and why.
    struct HeldScope {
        Scope scope;
        std::string why;
    };
    // Drops the domains whose name the mount does not serve (store::check_served_name: a row
    // written by hand), with the rest of their bundle, logging each name once; caller holds m_mutex.
    // Returns the members dropped with them whose names can be served: they are not renewed
    // either, but their expiry is still warned of.
    std::vector<HeldScope> drop_unserved(std::vector<store::Domain>& domains);
    // Starts fetches of ACME renewal information that are due; caller holds m_mutex.
    void plan_renewal_info(const std::vector<store::Domain>& domains, TimePoint now, TimePoint& next);
    void refresh_renewal_info(const std::string& name, std::int64_t gen); // a worker

    const SchedulerOptions m_options;
    const Clock& m_clock;
    const BatchRunner m_batch; // renews one scope at a time on each worker, hooks included

    std::mutex m_mutex;
    std::condition_variable m_cv;          // wakes the loop, and wait_idle()
    std::unique_ptr<store::Store> m_store; // the loop's connection; guarded by m_mutex
    std::set<std::string> m_running;       // scopes being renewed; guarded by m_mutex
    std::set<std::string> m_ari_running;   // domains whose ARI is being fetched; guarded
    std::map<std::string, TimePoint>
        m_not_before; // overdue at start: spread; a failure not in the store: a minute; guarded by m_mutex
    struct Run {
        TimePoint started, ended;
    };
    std::map<std::string, Run> m_settling;         // scope -> its last run, until the next pass; guarded
    std::map<std::string, TimePoint> m_lease_wait; // scope -> retry at the latest, while another owner
                                                   // holds its lease; guarded by m_mutex
    // Domain -> (generation, time): no fetch of renewal information for that generation before
    // the time, whatever the store says (a fetch that could not record its answer); guarded.
    std::map<std::string, std::pair<std::int64_t, TimePoint>> m_ari_not_before;
    std::map<std::pair<std::string, std::int64_t>, int> m_warned; // (domain, gen) -> days; guarded
    std::set<std::string> m_unserved_said;                        // names drop_unserved() logged; guarded by m_mutex
    bool m_first_step = true;                                     // guarded by m_mutex
    bool m_woken = false;                                         // guarded by m_mutex
    bool m_stopping = false;                                      // guarded by m_mutex
    int m_busy = 0;                                               // worker threads not yet finished; guarded by m_mutex
    std::map<std::uint64_t, std::thread> m_workers;               // by id; guarded by m_mutex
    std::vector<std::uint64_t> m_ended;                           // workers that ended, to join; guarded
    std::uint64_t m_next_worker = 0;                              // guarded by m_mutex
    std::thread m_thread;
    std::unique_ptr<store::LeaseHeartbeat> m_heartbeat; // extends the leases of `owner`; with the loop
};

} // namespace certfs::renew
