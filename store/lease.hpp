// Leases on the store, held for the length of one scope: at most one renewal of a domain (or of
// a whole bundle) at a time, across threads, processes and hosts sharing the store file.
#pragma once

#include <string>
#include <string_view>

#include "core/clock.hpp"
#include "core/status.hpp"
#include "store/model.hpp"

namespace certfs::store {

class Store;

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

} // namespace certfs::store
