#include "renew/health.hpp"

#include <algorithm>
#include <map>

#include "renew/renewer.hpp"
#include "store/lease.hpp"
#include "store/validate.hpp"

namespace certfs::renew {

namespace {

// A renewal of `d` failed and is to be tried again (or waits for the admin).
bool failing(const store::Domain& d)
{
    using S = store::DomainState;
    return d.failures > 0 || d.state == S::backoff || d.state == S::rejected || d.state == S::misconfigured;
}

} // namespace

Result<std::vector<std::string>> check_store(store::Store& store)
{
    ASSIGN_OR_RETURN(std::vector<std::string> problems, store.integrity_problems());
    auto now = store.clock().now();
    ASSIGN_OR_RETURN(auto leases, store.leases());
    auto live = [&](const std::string& scope) {
        return std::any_of(leases.begin(), leases.end(),
                           [&](const store::Lease& l) { return l.scope == scope && store::lease_holds(l, now); });
    };
    for (const auto& lease : leases) {
        if (lease.expires_at <= now) {
            const bool runs = store::holder_fate(lease.holder, lease.acquired_at) == store::HolderFate::alive;
            problems.push_back("stuck renewal: the lease on " + lease.scope + " held by " + lease.owner +
                               " expired at " + format_rfc3339(lease.expires_at) +
                               (runs ? ", but its holder (" + store::describe_holder(lease.holder) +
                                           ") still runs: it no longer heartbeats, and nobody else may renew "
                                           "this until it ends"
                                     : std::string()));
        } else if (store::holder_fate(lease.holder, lease.acquired_at) == store::HolderFate::dead) {
            problems.push_back("stuck renewal: the lease on " + lease.scope + " is held by " + lease.owner + " (" +
                               store::describe_holder(lease.holder) + "), which no longer runs");
        }
    }
    // A sealed store opened without its key: everything but the keys is checked.
    const Status keys = store.check_secrets_readable();
    if (!keys.ok()) {
        problems.push_back("private keys not checked: " + keys.message());
    }
    ASSIGN_OR_RETURN(auto domains, store.list_domains());
    std::map<std::string, std::string> unserved_in; // scope -> a member the mount does not serve, quoted
    for (const auto& d : domains) {
        if (!store::check_served_name(d.name).ok()) {
            unserved_in.emplace(store::lease_scope(d), store::quote_name(d.name));
        }
    }
    for (const auto& d : domains) {
        if (auto bad = unserved_in.find(store::lease_scope(d));
            bad != unserved_in.end() && store::check_served_name(d.name).ok()) {
            problems.push_back("domain " + d.name + ": not renewed: its bundle has a member whose name the mount " +
                               "does not serve (" + bad->second + ")");
        }
        if (Status served = store::check_served_name(d.name); !served.ok()) {
            // A row written by hand: nothing else about it matters until it is fixed.
            problems.push_back(served.message() + ": the mount does not serve it and it is not renewed (remove it, "
                                                  "or give it a valid name in the store)");
            continue;
        }
        const std::string who = "domain " + d.name + ": ";
        const bool held = live(store::lease_scope(d));
        if ((d.state == store::DomainState::issuing || d.state == store::DomainState::hooks) && !held) {
            problems.push_back(who + "stuck renewal: state " + std::string(store::state_name(d.state)) +
                               " but no running renewal holds its lease");
        }
        if (d.hooks_owed && !held) {
            problems.push_back(who + "the deploy hooks of generation " + std::to_string(*d.hooks_owed) +
                               " have not run (the renewal ended before them): 'certfsctl renew " + d.name +
                               "' or the daemon runs them");
        }
        if (!d.current_gen) {
            problems.push_back(who + "has no certificate");
            continue;
        }
        if (keys.ok()) {
            ASSIGN_OR_RETURN(store::Generation gen, store.get_generation(d.name, *d.current_gen));
            auto valid = store::validate_generation({gen.key_pem, gen.cert_pem, gen.chain_pem, gen.reason},
                                                    {d.dns_names, d.ip_addresses}, now);
            if (!valid.ok()) {
                problems.push_back(who + "current generation " + std::to_string(gen.gen) + ": " +
                                   valid.status().message());
                continue;
            }
        }
        // Past its renewal time and not renewed; or failing since the scheduler first tried (its
        // jitter and the CA's renewal window pull that earlier): a failure then is news
        // already. A renewal under way before its renewal time is no problem.
        std::optional<TimePoint> due = renew_at(d);
        if (d.issuer && failing(d)) {
            store::Domain first_try = d;
            first_try.next_attempt.reset();
            if (auto tried = due_at(first_try); tried && *tried <= now && (!due || *tried < *due)) {
                due = tried;
            }
        }
        if (due && *due <= now) {
            std::string note = !d.issuer              ? "; imported: import a new certificate"
                               : d.last_error.empty() ? ""
                                                      : "; last error: " + d.last_error;
            problems.push_back(who + "due for renewal since " + format_rfc3339(*due) + " but not renewed (expires " +
                               (d.current_not_after ? format_rfc3339(*d.current_not_after) : std::string("?")) + note +
                               ")");
        }
    }
    ASSIGN_OR_RETURN(auto duplicates, store.duplicate_serials());
    for (const auto& dup : duplicates) {
        problems.push_back("duplicate serial: " + dup);
    }
    return problems;
}

} // namespace certfs::renew
