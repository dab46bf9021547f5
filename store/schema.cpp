#include "store/schema.hpp"

namespace certfs::store {

namespace {

// Times are Unix milliseconds. Name lists are newline-separated (names never hold one).
// The triggers make two invariants hold even against plain SQL: generations are immutable,
// and a name's generation numbers only grow (generation_numbers outlives the domain row, so
// remove + add never reuses a number).
constexpr std::string_view k_v1 = R"sql(
CREATE TABLE issuers (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    config      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    cert        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE domains (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    issuer_id       INTEGER REFERENCES issuers(id) ON DELETE RESTRICT,
    dns_names       TEXT NOT NULL,
    ip_addresses    TEXT NOT NULL,
    key_type        TEXT NOT NULL,
    reuse_key       INTEGER NOT NULL,
    renew_before_ms INTEGER,
    owner_uid       INTEGER NOT NULL,
    group_gid       INTEGER NOT NULL,
    mode            INTEGER NOT NULL CHECK (mode BETWEEN 0 AND 511),
    bundle          TEXT,
    deploy_hooks    TEXT NOT NULL,
    state           TEXT NOT NULL,
    last_error      TEXT NOT NULL,
    next_attempt    INTEGER,
    failures        INTEGER NOT NULL DEFAULT 0,
    current_gen     INTEGER,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX domains_bundle ON domains(bundle) WHERE bundle IS NOT NULL;

CREATE TABLE generations (
    domain_id   INTEGER NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    gen         INTEGER NOT NULL CHECK (gen > 0),
    key_pem     TEXT NOT NULL,
    cert_pem    TEXT NOT NULL,
    chain_pem   TEXT NOT NULL,
    issuer_dn   TEXT NOT NULL,
    serial      TEXT NOT NULL,
    not_before  INTEGER NOT NULL,
    not_after   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    reason      TEXT NOT NULL CHECK (reason IN ('issued', 'renewed', 'imported')),
    PRIMARY KEY (domain_id, gen),
    UNIQUE (issuer_dn, serial)
) STRICT;

CREATE TABLE generation_numbers (
    name     TEXT PRIMARY KEY,
    last_gen INTEGER NOT NULL
) STRICT;

CREATE TRIGGER generations_immutable BEFORE UPDATE ON generations
BEGIN
    SELECT RAISE(ABORT, 'generations are immutable');
END;

CREATE TRIGGER generations_grow BEFORE INSERT ON generations
WHEN NEW.gen <= COALESCE((SELECT n.last_gen FROM generation_numbers n JOIN domains d ON d.name = n.name
                          WHERE d.id = NEW.domain_id), 0)
BEGIN
    SELECT RAISE(ABORT, 'generation numbers only grow');
END;

CREATE TRIGGER generations_count AFTER INSERT ON generations
BEGIN
    INSERT INTO generation_numbers (name, last_gen)
        VALUES ((SELECT name FROM domains WHERE id = NEW.domain_id), NEW.gen)
        ON CONFLICT (name) DO UPDATE SET last_gen = excluded.last_gen;
END;

CREATE TRIGGER domains_current_exists BEFORE UPDATE OF current_gen ON domains
WHEN NEW.current_gen IS NOT NULL
     AND NOT EXISTS (SELECT 1 FROM generations WHERE domain_id = NEW.id AND gen = NEW.current_gen)
BEGIN
    SELECT RAISE(ABORT, 'the current generation must exist');
END;

CREATE TABLE leases (
    scope       TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE events (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    domain  TEXT NOT NULL,
    action  TEXT NOT NULL,
    detail  TEXT NOT NULL
) STRICT;
CREATE INDEX events_domain ON events(domain, id);
)sql";

// v2: the outcome of the last deploy-hook run on each domain, and store-wide settings (the
// daemon records its mount point and pin window there for certfsctl's hooks).
constexpr std::string_view k_v2 = R"sql(
ALTER TABLE domains ADD COLUMN hook_error TEXT NOT NULL DEFAULT '';

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
)sql";

// v3: requests pending at an issuer (model.hpp, PendingRequest), one per domain at most.
constexpr std::string_view k_v3 = R"sql(
CREATE TABLE pending (
    domain_id   INTEGER PRIMARY KEY REFERENCES domains(id) ON DELETE CASCADE,
    issuer_id   INTEGER NOT NULL REFERENCES issuers(id) ON DELETE CASCADE,
    based_on    INTEGER,
    key_pem     TEXT NOT NULL,
    csr_pem     TEXT NOT NULL,
    cookie      TEXT NOT NULL,
    cert_pem    TEXT NOT NULL,
    chain_pem   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    poll_at     INTEGER NOT NULL
) STRICT;
)sql";

// v4: ACME renewal information per domain (model.hpp, Domain::ari_*).
constexpr std::string_view k_v4 = R"sql(
ALTER TABLE domains ADD COLUMN ari_gen INTEGER;
ALTER TABLE domains ADD COLUMN ari_at INTEGER;
ALTER TABLE domains ADD COLUMN ari_next_check INTEGER;
)sql";

// v5: how many commits `renew --now`, `rollback --now` or `import --now` made on each domain:
// when it grows, the filesystem moves every reader at once (Domain::move_now_count). A count,
// so that a commit right after it cannot hide it from a daemon that polls.
constexpr std::string_view k_v5 = R"sql(
ALTER TABLE domains ADD COLUMN move_now_count INTEGER NOT NULL DEFAULT 0;
)sql";

// v6: what a crash leaves behind can be told and finished. Each lease names the process that
// holds it (model.hpp, LeaseHolder), so that one held by a dead process on this host is taken
// at once instead of after its ttl; each domain records the generation whose deploy hooks are
// still owed (Domain::hooks_owed), set in the commit's own transaction.
constexpr std::string_view k_v6 = R"sql(
ALTER TABLE leases ADD COLUMN machine_id TEXT NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN boot_id TEXT NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN pid_ns TEXT NOT NULL DEFAULT '';
ALTER TABLE leases ADD COLUMN pid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE leases ADD COLUMN start_time INTEGER NOT NULL DEFAULT 0;
ALTER TABLE domains ADD COLUMN hooks_owed INTEGER;
)sql";

// v7: the filesystem's index of every domain's generations (Store::generation_index, read at
// each change of the store) comes from this index alone, without reading the rows' PEM: with
// 7,000 generations the read took 20 ms under the filesystem's store lock, with it under 5 ms.
constexpr std::string_view k_v7 = R"sql(
CREATE INDEX generations_created ON generations(domain_id, gen, created_at);
)sql";

// v8: a generation's key may be sealed, re-sealed or unsealed (Store::rekey, with a store key),
// nothing else of it changes: the first trigger covers every other column, the second refuses
// a key in the clear replaced by another in the clear.
constexpr std::string_view k_v8 = R"sql(
DROP TRIGGER generations_immutable;
CREATE TRIGGER generations_immutable
BEFORE UPDATE OF domain_id, gen, cert_pem, chain_pem, issuer_dn, serial, not_before, not_after, created_at, reason
ON generations
BEGIN
    SELECT RAISE(ABORT, 'generations are immutable');
END;
CREATE TRIGGER generations_key_immutable
BEFORE UPDATE OF key_pem ON generations
WHEN OLD.key_pem NOT LIKE 'certfs-sealed:%' AND NEW.key_pem NOT LIKE 'certfs-sealed:%'
BEGIN
    SELECT RAISE(ABORT, 'generations are immutable');
END;
)sql";

constexpr std::string_view k_migrations[] = {k_v1, k_v2, k_v3, k_v4, k_v5, k_v6, k_v7, k_v8};

} // namespace

std::span<const std::string_view> migrations() { return k_migrations; }

std::string schema_for_testing(int version)
{
    std::string out;
    for (int i = 0; i < version && i < static_cast<int>(std::size(k_migrations)); ++i) {
        out += k_migrations[i];
    }
    return out;
}

} // namespace certfs::store
