// The store: one SQLite file holding issuers, domains, their generations, leases and the
// event log. Every write and every invariant of the design goes through this class:
//
//   - a generation is immutable once committed (the schema refuses UPDATE, but of its sealed
//     key by rekey(), which checks it opens to the same key);
//   - it becomes current only after validate_generation() passed;
//   - switching a domain's current generation is one write transaction, conditional on the
//     generation the writer started from (a stale writer gets Code::conflict);
//   - a bundle's members switch in one transaction, all or none;
//   - (issuer, serial) is unique across the store;
//   - generation numbers of a name only grow, even across remove and re-add.
//
// Thread-safety: a Store is one SQLite connection; use it from one thread at a time. Several
// Stores (threads, processes) may share a file: writers queue on SQLite's lock (busy timeout)
// and the compare-and-swap rules above keep them from overwriting each other.
// Errors: every failure is a Status and leaves the store as it was.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/clock.hpp"
#include "store/model.hpp"
#include "store/store_key.hpp"

namespace certfs::store {

class Db; // store/sqlite.hpp, internal to store/: SQLite's header reaches no other layer

inline constexpr const char* k_default_db_path = "/var/lib/certfs/certfs.db";
inline constexpr int k_schema_version = 8;

struct OpenOptions {
    bool create = false;          // create the file (and run migrations) if missing
    std::string actor;            // who acts, for the event log ("certfsctl uid=0")
    const Clock* clock = nullptr; // defaults to the system clock
};

// What rekey() re-sealed, and whether the WAL could be emptied afterwards.
struct RekeyReport {
    int generations = 0;
    int pending = 0;
    int issuers = 0;
    // After the commit: VACUUM rewrote the file without its free pages (where rows deleted
    // before secure_delete was on, such as old pending requests, kept their keys), and the WAL
    // was emptied. False when another process had the store open (a running certfs); then
    // `cleanup` says why, and the old bytes stay until it is run again.
    bool cleaned = false;
    std::string cleanup;
};

// One member of a commit: the domain, the generation the writer started from (none when the
// domain had no generation yet), and the new generation.
struct CommitRequest {
    std::string domain;
    std::optional<std::int64_t> expected_gen;
    GenerationInput input;
};

// A domain moved in from another tool (certfsctl import-certbot): its settings and every
// generation it had, oldest first, of which `current` (an index into them) is served.
struct ImportedDomain {
    DomainConfig config;
    std::vector<GenerationInput> generations;
    std::size_t current = 0;
};

class Store {
public:
    // `key`: the store key (store_key.hpp). A sealed store opens without it, but its secrets do
    // not (Unavailable, saying how to give it). An empty store given a key is sealed by it; a
    // store with secrets in the clear refuses one (rekey() seals it); another key is refused.
    static Result<std::unique_ptr<Store>> open(const std::string& path, OpenOptions options,
                                               std::shared_ptr<const StoreKey> key = nullptr);

    const std::string& path() const { return m_path; }
    const Clock& clock() const { return *m_clock; }

    // The id of the store key that seals its secrets; nullopt when they are in the clear.
    const std::optional<std::string>& sealed_by() const { return m_sealed_by; }
    // The key this Store was opened with (nullptr: none), for the other Stores a command opens.
    const std::shared_ptr<const StoreKey>& key() const { return m_key; }
    // Unavailable when the secrets are sealed and no key (or another) was given, saying how to
    // give it: what the mount checks before it starts.
    Status check_secrets_readable() const;
    // Re-seals every secret with `next` (nullptr: leaves them in the clear) in one write
    // transaction, each checked to open again before the commit, then VACUUMs and empties the
    // WAL, so that the old bytes leave the files (RekeyReport::cleaned). Needs the current key
    // when the store is sealed. The Store goes on with `next`. Another process's Store that
    // opened the store before keeps the old key: its next write of a secret is refused
    // (Conflict, "rekeyed since"), nothing written with the old key.
    Result<RekeyReport> rekey(std::shared_ptr<const StoreKey> next);

    // Issuers.
    Status add_issuer(const NewIssuer& issuer);
    Result<std::vector<Issuer>> list_issuers();
    Result<Issuer> get_issuer(std::string_view name);
    // The issuer's secret (e.g. the local CA key). Only issuers call this.
    Result<std::string> issuer_secret(std::string_view name);
    // Conflict while a domain uses it.
    Status remove_issuer(std::string_view name);
    // Replaces an issuer's settings (an ACME issuer records its account URL once registered)
    // and, when given, its secret (a new account key).
    Status update_issuer(std::string_view name, std::string_view config_json,
                         std::optional<std::string_view> secret = std::nullopt);

    // Domains. add_domain validates the configuration; with `first` it also commits the first
    // generation in the same transaction, so a failed issuance leaves no half-added domain.
    Result<std::int64_t> add_domain(const DomainConfig& config, const std::optional<GenerationInput>& first);
    Result<Domain> get_domain(std::string_view name);
    Result<std::vector<Domain>> list_domains();
    Result<std::vector<Domain>> bundle_members(std::string_view bundle);
    // Removes the domain and its generations (the admin's explicit prune). Its generation
    // numbers stay used.
    Status remove_domain(std::string_view name);
    // Changes who may read a domain's privkey.pem and combined.pem: each field given replaces
    // the domain's, in every generation, live and archived. Invalid when none is given or the
    // mode has bits beyond 0777.
    struct Access {
        std::optional<std::uint32_t> uid, gid, mode;
    };
    Status set_access(std::string_view name, const Access& access);

    // Generations.
    Result<Generation> get_generation(std::string_view name, std::int64_t gen);
    // The same without its key (key_pem empty): what `show` and `revoke` need, with or without
    // the store key.
    Result<Generation> get_certificate(std::string_view name, std::int64_t gen);
    Result<Generation> current_generation(std::string_view name);
    Result<std::vector<Generation>> history(std::string_view name); // oldest first
    bool serial_exists(std::string_view issuer_dn, std::string_view serial_hex);
    // Generation numbers and commit times of every domain, without the PEMs: what a listing
    // of archive/ needs. Keyed by domain name, oldest generation first.
    Result<std::map<std::string, std::vector<std::pair<std::int64_t, TimePoint>>>> generation_index();

    // SQLite's data_version: changes whenever another connection commits to the file.
    Result<std::int64_t> data_version();

    // Validates and commits new generations for one domain or a whole bundle in one write
    // transaction: all become current, or none does. Returns the new generation numbers in
    // request order. Conflict when a domain's current generation is no longer the expected
    // one or a serial is already used by its issuer; Invalid when validation fails. With
    // move_now the filesystem moves every reader to them at once (Domain::move_now_count).
    Result<std::vector<std::int64_t>> commit(const std::vector<CommitRequest>& requests, bool move_now = false);
    Result<std::int64_t> commit_one(const CommitRequest& request);

    // Imports a certificate and key as a new generation of `name` (reason imported). An
    // existing domain must be covered by it and switches conditionally on its current
    // generation; a missing one is created, without an issuer, for the leaf's SANs. move_now as
    // for commit().
    Result<std::int64_t> import_generation(std::string_view name, GenerationInput input, bool move_now = false);

    // Adds `issuers`, then `domains` with all their generations (reason imported), in one write
    // transaction: everything, or nothing. A generation other than the current one is checked
    // as at the middle of its own validity period, since an older one may have expired; the
    // current one is checked now. No hooks are owed: what is imported was deployed already.
    // Conflict when an issuer or a domain exists; Invalid naming the domain and generation
    // that failed validation.
    Status import_domains(const std::vector<NewIssuer>& issuers, const std::vector<ImportedDomain>& domains);

    // Makes an older generation current again (default: the newest one older than the
    // current). The target must still validate. Returns the new current generation. move_now
    // as for commit().
    Result<std::int64_t> rollback(std::string_view name, std::optional<std::int64_t> to, bool move_now = false);

    // Renewal state shown by `certfsctl list`.
    Status set_state(std::string_view name, DomainState state, std::string_view last_error,
                     std::optional<TimePoint> next_attempt, bool count_failure);

    // The outcome of the last deploy-hook run on a domain: empty for success. With ran_for, the
    // hooks ran for that generation: the hooks it owed (Domain::hooks_owed), up to it, are paid.
    Status set_hook_error(std::string_view name, std::string_view error,
                          std::optional<std::int64_t> ran_for = std::nullopt);

    // The renewal time an ACME CA suggested for generation `gen` (ARI, RFC 9773), none when it
    // suggested nothing, and when to ask again. Conflict when gen is no longer current.
    Status set_renewal_info(std::string_view name, std::int64_t gen, std::optional<TimePoint> at, TimePoint next_check);

    // Pending requests (model.hpp). save_pending inserts or replaces the domain's request;
    // pending() is nullopt when the domain has none. commit() drops the requests of the
    // domains it commits, in the same transaction.
    Status save_pending(const PendingRequest& request);
    Result<std::optional<PendingRequest>> pending(std::string_view domain);
    Status drop_pending(std::string_view domain);

    // Store-wide settings (the mount's, through store/mount.hpp); NotFound when unset.
    Status set_setting(std::string_view key, std::string_view value);
    Result<std::string> setting(std::string_view key);

    // Leases: at most one live lease per scope, each naming its holder's process (`as`, default
    // this one; tests name others). Conflict (naming the holder) while another owner's lease is
    // live; an expired lease, or one whose holder is dead (store/lease.hpp, holder_fate), is
    // taken over at once, logged, and the states its renewal left (`issuing`, `hooks`) reset.
    Status acquire_lease(std::string_view scope, std::string_view owner, Duration ttl,
                         const std::optional<LeaseHolder>& as = std::nullopt);
    Status release_lease(std::string_view scope, std::string_view owner,
                         const std::optional<LeaseHolder>& as = std::nullopt);
    // The heartbeat of a long renewal: every lease `owner` holds from this process (or `as`)
    // now expires ttl from now.
    Status extend_leases(std::string_view owner, Duration ttl, const std::optional<LeaseHolder>& as = std::nullopt);
    Result<std::vector<Lease>> leases();
    // What a crash left: frees every lease that expired or whose holder is dead, and resets
    // the domains left `issuing` or `hooks` with no live lease on their scope (an interrupted
    // issuance to `monitoring`, or `pending` when its request at the CA is kept; hooks stay
    // owed, Domain::hooks_owed). One transaction; returns one line per thing done, for the log.
    Result<std::vector<std::string>> recover_abandoned();

    Result<std::vector<Event>> events(std::optional<std::string_view> domain, int limit);

    // PRAGMA integrity_check and foreign_key_check: one line per problem, empty when sound.
    Result<std::vector<std::string>> integrity_problems();
    // (issuer, serial) pairs used more than once, as "issuer serial".
    Result<std::vector<std::string>> duplicate_serials();

    // The raw connection, for tests that try to break invariants with plain SQL; they include
    // store/sqlite.hpp to use it.
    Db& db_for_testing();

    ~Store(); // in store.cpp, where Db is complete

private:
    Store(std::string path, std::unique_ptr<Db> db, std::string actor, const Clock* clock);

    Status migrate();
    Status log_event(std::string_view domain, std::string_view action, std::string_view detail);
    // Resets the domains of `scope` left `issuing` or `hooks` (recover_abandoned); `why` names
    // the renewal that left them. The caller holds a WriteTxn.
    Status reset_abandoned(std::string_view scope, std::string_view why);
    Result<Domain> read_domain(std::string_view name);
    // Inserts a normalised domain (and its first generation); the caller holds a WriteTxn.
    Result<std::int64_t> insert_domain(const DomainConfig& config, const std::optional<GenerationInput>& first);
    // Validates `input` as at `valid_at` (default: now) and inserts it, not yet current.
    Result<std::int64_t> insert_generation(const Domain& domain, const GenerationInput& input,
                                           std::optional<TimePoint> valid_at = std::nullopt);
    // add_issuer's insert; the caller holds a WriteTxn.
    Status insert_issuer(const NewIssuer& issuer);
    Status make_current(const Domain& domain, std::int64_t gen, bool move_now = false);
    Result<Generation> read_generation(std::string_view name, std::int64_t gen, bool with_key = true);
    // A secret as stored for the row `where`: sealed when the store is; Unavailable without
    // the key.
    // It reads the store's key id again (inside the caller's write transaction): a store
    // rekeyed since this Store opened it is Conflict.
    Result<std::string> seal_secret(std::string_view plaintext, std::string_view where);
    // The inverse; a value in the clear is returned as it is, but in a sealed store it is
    // Corrupt (certfs never writes one there).
    Result<std::string> open_secret(std::string_view stored, std::string_view where) const;
    // The id of the key the store says seals its secrets (the settings' store_key_id), if any.
    Result<std::optional<std::string>> store_key_id();
    // Decides, at open, how the store's secrets are sealed (open()'s key).
    Status adopt_key(std::shared_ptr<const StoreKey> key);

    std::string m_path;
    std::unique_ptr<Db> m_db;
    std::string m_actor;
    const Clock* m_clock;
    std::shared_ptr<const StoreKey> m_key;
    std::optional<std::string> m_sealed_by; // the settings' store_key_id
};

} // namespace certfs::store
