// The store's data model: issuers, domains, generations, events and leases.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "core/pki.hpp"

namespace certfs::store {

inline constexpr std::uint32_t k_default_key_mode = 0600;

enum class DomainState { monitoring, due, issuing, pending, hooks, backoff, rejected, misconfigured };
std::string_view state_name(DomainState state);
Result<DomainState> parse_state(std::string_view name);

// Why a generation was committed.
enum class Reason { issued, renewed, imported };
std::string_view reason_name(Reason reason);
Result<Reason> parse_reason(std::string_view name);

struct NewIssuer {
    std::string name;
    std::string kind;        // "local", "acme" or "helper" (renew/issuers.cpp builds each)
    std::string config_json; // kind-specific settings, interpreted by renew/
    std::string secret_pem;  // e.g. the local CA's private key; never listed
    std::string cert_pem;    // e.g. the local CA's certificate
};

struct Issuer {
    std::int64_t id = 0;
    std::string name;
    std::string kind;
    std::string config_json;
    std::string cert_pem;
    TimePoint created_at;
    std::int64_t domains = 0; // how many domains use it
};

// What the admin configures for a domain.
struct DomainConfig {
    std::string name;
    std::optional<std::string> issuer; // none for imported certificates
    std::vector<std::string> dns_names;
    std::vector<std::string> ip_addresses;
    pki::KeyType key_type = pki::k_default_key_type;
    bool reuse_key = false;
    std::optional<Duration> renew_before; // none: the default share of the lifetime
    std::uint32_t owner_uid = 0;
    std::uint32_t group_gid = 0;
    std::uint32_t mode = k_default_key_mode; // of privkey.pem and combined.pem
    std::optional<std::string> bundle;
    std::vector<std::string> deploy_hooks;
};

struct Domain : DomainConfig {
    std::int64_t id = 0;
    DomainState state = DomainState::monitoring;
    std::string last_error;
    std::string hook_error; // the last deploy-hook failure, empty when the last run succeeded
    std::optional<TimePoint> next_attempt;
    std::int64_t failures = 0;
    std::optional<std::int64_t> current_gen;
    std::optional<TimePoint> current_not_before; // of the current generation
    std::optional<TimePoint> current_not_after;
    std::string current_serial; // hex, of the current generation's leaf; empty without one
    // When the current generation was committed, and why: the renewal window is measured from
    // its issue, not from a backdated not_before (renew/renewer.hpp renew_at).
    std::optional<TimePoint> current_created_at;
    std::optional<Reason> current_reason;
    // ACME renewal information (RFC 9773): the generation it was fetched for, the time picked
    // in the CA's suggested window (none when the CA suggested none), and the next fetch.
    std::optional<std::int64_t> ari_gen;
    std::optional<TimePoint> ari_at;
    std::optional<TimePoint> ari_next_check;
    // How many commits were made with --now: when it grows, the filesystem moves every reader to
    // the current generation at once instead of holding those that have not paused (fs/pins.hpp).
    std::int64_t move_now_count = 0;
    // The generation whose deploy hooks are owed: set by the commit that made it current (for a
    // domain with hooks), cleared once they ran. Still set after a crash between the two, so
    // that the next holder of the domain's lease runs them (renew/recovery.hpp).
    std::optional<std::int64_t> hooks_owed;
    TimePoint created_at;
};

// A generation as a caller hands it in. The store parses, validates and normalises it.
struct GenerationInput {
    std::string key_pem;
    std::string cert_pem;  // the leaf, optionally followed by chain certificates
    std::string chain_pem; // intermediates (may be empty when cert_pem holds them)
    Reason reason = Reason::issued;
};

// A committed generation: immutable.
struct Generation {
    std::string domain;
    std::int64_t gen = 0;
    std::string key_pem;   // PKCS#8 PEM
    std::string cert_pem;  // leaf only
    std::string chain_pem; // intermediates, leaf's issuer first
    std::string issuer_dn;
    std::string serial_hex;
    TimePoint not_before;
    TimePoint not_after;
    TimePoint created_at;
    Reason reason = Reason::issued;
    bool current = false;

    std::string fullchain_pem() const { return cert_pem + chain_pem; }
    std::string combined_pem() const { return key_pem + cert_pem + chain_pem; }
};

// A request an issuer has accepted but not yet answered (a CA helper said "wait"), or, for a
// bundle, a member's certificate that waits for the other members. Kept in the store so that
// a restart polls the same request with the same key instead of submitting a new one.
struct PendingRequest {
    std::string domain;
    std::string issuer;                   // the issuer it was submitted to
    std::optional<std::int64_t> based_on; // the domain's current generation when it started
    std::string key_pem;                  // the new key (PKCS#8 PEM)
    std::string csr_pem;
    std::string cookie;   // what the issuer polls with; empty once issued
    std::string cert_pem; // set once issued: the member waits for the rest of its bundle
    std::string chain_pem;
    TimePoint created_at;
    TimePoint poll_at; // when to ask again
};

struct Event {
    std::int64_t id = 0;
    TimePoint at;
    std::string actor;
    std::string domain; // empty for store-wide events
    std::string action;
    std::string detail;
};

// The process holding a lease, named well enough to tell whether it still runs: its host (the
// machine id, the boot id and the pid namespace) and the process itself (pid and start time,
// field 22 of /proc/<pid>/stat, so that a reused pid is not mistaken for it). Threads of one
// process share it. A lease written before schema v6 has none (machine_id empty).
struct LeaseHolder {
    std::string machine_id;
    std::string boot_id;
    std::string pid_ns;
    std::int64_t pid = 0;
    std::int64_t start_time = 0; // clock ticks after boot
};

struct Lease {
    std::string scope; // "domain:<name>" or "bundle:<name>"
    std::string owner; // for display: "certfs pid 123"
    TimePoint acquired_at;
    TimePoint expires_at;
    LeaseHolder holder;
};

} // namespace certfs::store
