// What a crash leaves behind, finished by whoever comes next (README, "At a crash and at a
// restart"). A SIGKILLed renewal leaves its lease, maybe a domain showing `issuing` or `hooks`,
// and, when it died between the commit and its deploy hooks, hooks still owed (the commit
// records them in its own transaction: store::Domain::hooks_owed).
//
// - Leases: one held by a dead process on this host is taken at once (store/lease.hpp); one
//   from another host waits for its ttl. recover() frees them and resets the states they left.
// - Owed hooks: whoever next holds the scope's lease runs them, for the generation current
//   then: the daemon's scheduler at once (its step() plans a scope that owes hooks and whose
//   lease is free as due now), and `certfsctl renew` for every scope it renews
//   (BatchRunner, with append_owed_hooks). So they run at least once after the commit.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "renew/renewer.hpp"
#include "store/lease.hpp"
#include "store/store.hpp"

namespace certfs::renew {

// Frees the leases of dead or expired holders and resets the states their renewals left
// (store::Store::recover_abandoned), logging each; a failure is logged, not returned (the next
// pass tries again).
void recover(store::Store& store);

// Adds to `batch` the members of `name`'s scope that owe deploy hooks and are not in it yet,
// each with its current generation, for deploy() to run. Takes the scope's lease into `lease`
// when it is not held yet; when another live process holds it, adds nothing (that holder runs
// them). Logs what it adds.
void append_owed_hooks(store::Store& store, const std::string& name, const std::string& owner, Duration lease_ttl,
                       std::optional<store::LeaseGuard>& lease, std::vector<RenewOutcome>& batch);

// When the scheduler should run `members` (one scope) for the hooks they owe: now when one owes
// hooks and no live process holds the scope (`held`), a minute from now when one does (a holder
// that dies leaves no change in the store to wake the scheduler), nullopt when none owes any.
std::optional<TimePoint> owed_hooks_at(const std::vector<store::Domain>& members, bool held, TimePoint now);

} // namespace certfs::renew
