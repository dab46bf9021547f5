// Leases on the store, held for the length of one scope: at most one renewal of a domain (or of
// a whole bundle) at a time, across threads, processes and hosts sharing the store file.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "core/clock.hpp"
#include "core/status.hpp"
#include "store/model.hpp"

namespace certfs::store {

class Store;

// This process as a lease names it (model.hpp, LeaseHolder); read again after a fork.
LeaseHolder this_process();
// Process `pid` of this host as a lease would name it; none when it does not run.
std::optional<LeaseHolder> holder_of(std::int64_t pid);

// What `self` can tell of the holder of a lease acquired at `acquired_at`. dead: it certainly
// runs no more (on this host, and its pid is gone, a zombie, or another process's: its start
// time differs; or it ran in an earlier boot of this machine: another boot id, and the lease is
// older than this boot); alive: it runs on this host; unknown: it runs, or ran, on another host
// (or in another pid namespace, or under another boot id after this boot began: a clone that
// kept this machine's id), or the lease does not say (written before schema v6).
enum class HolderFate { alive, dead, unknown };
HolderFate holder_fate(const LeaseHolder& holder, TimePoint acquired_at, const LeaseHolder& self = this_process());

// Whether `lease` keeps everyone else out at `now`: its holder runs on this host, even past the
// expiry (a heartbeat that failed, a clock that jumped: taking it would ask the CA twice), or it
// has not expired and its holder is not known to be dead. An expired lease of a holder that
// cannot be told is taken; a live holder's only when it ends.
bool lease_holds(const Lease& lease, TimePoint now);
// Why a lease that no longer holds does not: ", which no longer runs" or ", whose lease expired".
std::string why_lease_ended(const Lease& lease, TimePoint now);
// "pid 123 on this host", "pid 123 on host <machine id>", for messages.
std::string describe_holder(const LeaseHolder& holder);

// The scope a renewal of `domain` holds: "bundle:<bundle>" for a bundle member (its bundle
// renews as one), "domain:<name>" otherwise. The one place that spells it.
std::string lease_scope(const DomainConfig& domain);

// A lease held on `scope` by `owner` until destruction or release(). Acquire with acquire();
// the destructor releases on every path and never throws (a failed release is left to expire
// after its ttl, as a crashed holder's would). Movable, not copyable; a moved-from guard holds
// nothing. Uses the Store it was acquired on, which must outlive it, from the same thread.
class LeaseGuard {
public:
    // Conflict (naming the holder) while another owner's lease on scope is live.
    static Result<LeaseGuard> acquire(Store& store, std::string scope, std::string owner, Duration ttl);

    LeaseGuard(LeaseGuard&& other) noexcept;
    LeaseGuard& operator=(LeaseGuard&& other) noexcept;
    LeaseGuard(const LeaseGuard&) = delete;
    LeaseGuard& operator=(const LeaseGuard&) = delete;
    ~LeaseGuard();

    // Releases now; a second call, or one on a moved-from guard, does nothing.
    void release() noexcept;

    const std::string& scope() const { return m_scope; }

private:
    LeaseGuard(Store& store, std::string scope, std::string owner);

    Store* m_store; // null once released or moved from
    std::string m_scope;
    std::string m_owner;
};

// Keeps every lease `owner` holds from this process alive while a renewal outlives its ttl (a
// slow CA helper, a long wait at the CA): every `every`, on a thread and a store connection of
// its own, they are extended to expire ttl later. The daemon's scheduler and `certfsctl renew`
// (renew/batch.hpp) each run one. Stops, and joins its thread, on destruction.
class LeaseHeartbeat {
public:
    LeaseHeartbeat(std::string db_path, std::string owner, Duration ttl, Duration every, const Clock* clock = nullptr);
    ~LeaseHeartbeat();
    LeaseHeartbeat(const LeaseHeartbeat&) = delete;
    LeaseHeartbeat& operator=(const LeaseHeartbeat&) = delete;

private:
    void loop();

    const std::string m_db_path;
    const std::string m_owner;
    const Duration m_ttl;
    const Duration m_every;
    const Clock* m_clock;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_stopping = false; // guarded by m_mutex
    std::thread m_thread;
};

} // namespace certfs::store
