#include "store/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <set>
#include <sstream>

#include "core/pki.hpp"
#include "store/lease.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"
#include "store/validate.hpp"

namespace certfs::store {

namespace {

std::int64_t to_ms(TimePoint t)
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

TimePoint from_ms(std::int64_t ms) { return TimePoint(std::chrono::milliseconds(ms)); }

std::optional<TimePoint> opt_time(const std::optional<std::int64_t>& ms)
{
    return ms ? std::optional(from_ms(*ms)) : std::nullopt;
}

std::optional<std::int64_t> opt_ms(const std::optional<TimePoint>& t)
{
    return t ? std::optional(to_ms(*t)) : std::nullopt;
}

std::string join_lines(const std::vector<std::string>& items)
{
    std::string out;
    for (const auto& item : items) {
        if (!out.empty()) {
            out += '\n';
        }
        out += item;
    }
    return out;
}

std::vector<std::string> split_lines(const std::string& text)
{
    std::vector<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        out.push_back(line);
    }
    return out;
}

const SystemClock k_system_clock;

} // namespace

namespace {

pki::Names names_of(const DomainConfig& config) { return {config.dns_names, config.ip_addresses}; }

#define CERTFS_DOMAIN_SELECT                                                                                           \
    "SELECT d.id, d.name, i.name, d.dns_names, d.ip_addresses, d.key_type, d.reuse_key,"                               \
    " d.renew_before_ms, d.owner_uid, d.group_gid, d.mode, d.bundle, d.deploy_hooks, d.state,"                         \
    " d.last_error, d.next_attempt, d.failures, d.current_gen, d.created_at, g.not_before, g.not_after,"               \
    " d.hook_error, g.serial, d.ari_gen, d.ari_at, d.ari_next_check, d.move_now_count, g.created_at, g.reason,"        \
    " d.hooks_owed"                                                                                                    \
    " FROM domains d LEFT JOIN issuers i ON i.id = d.issuer_id"                                                        \
    " LEFT JOIN generations g ON g.domain_id = d.id AND g.gen = d.current_gen"

Result<Domain> domain_from_row(const Stmt& row)
{
    Domain d;
    d.id = row.int64(0);
    d.name = row.text(1);
    d.issuer = row.opt_text(2);
    d.dns_names = split_lines(row.text(3));
    d.ip_addresses = split_lines(row.text(4));
    auto key_type = pki::parse_key_type(row.text(5));
    auto state = parse_state(row.text(13));
    if (!key_type.ok() || !state.ok()) {
        return Status::Corrupt("domain " + d.name + ": unreadable key type or state");
    }
    d.key_type = *key_type;
    d.reuse_key = row.int64(6) != 0;
    if (auto ms = row.opt_int64(7)) {
        d.renew_before = Duration(*ms);
    }
    d.owner_uid = static_cast<std::uint32_t>(row.int64(8));
    d.group_gid = static_cast<std::uint32_t>(row.int64(9));
    d.mode = static_cast<std::uint32_t>(row.int64(10));
    d.bundle = row.opt_text(11);
    d.deploy_hooks = split_lines(row.text(12));
    d.state = *state;
    d.last_error = row.text(14);
    d.next_attempt = opt_time(row.opt_int64(15));
    d.failures = row.int64(16);
    d.current_gen = row.opt_int64(17);
    d.created_at = from_ms(row.int64(18));
    d.current_not_before = opt_time(row.opt_int64(19));
    d.current_not_after = opt_time(row.opt_int64(20));
    d.hook_error = row.text(21);
    d.current_serial = row.opt_text(22).value_or("");
    d.ari_gen = row.opt_int64(23);
    d.ari_at = opt_time(row.opt_int64(24));
    d.ari_next_check = opt_time(row.opt_int64(25));
    d.move_now_count = row.int64(26);
    d.current_created_at = opt_time(row.opt_int64(27));
    if (auto reason = row.opt_text(28)) {
        auto parsed = parse_reason(*reason);
        if (!parsed.ok()) {
            return Status::Corrupt("domain " + d.name + ": unreadable reason of its current generation");
        }
        d.current_reason = *parsed;
    }
    d.hooks_owed = row.opt_int64(29);
    return d;
}

#define CERTFS_GENERATION_SELECT                                                                                       \
    "SELECT d.name, g.gen, g.key_pem, g.cert_pem, g.chain_pem, g.issuer_dn, g.serial,"                                 \
    " g.not_before, g.not_after, g.created_at, g.reason, g.gen IS d.current_gen, g.domain_id"                          \
    " FROM generations g JOIN domains d ON d.id = g.domain_id"

// The rows whose secrets are sealed, as their associated data names them (store_key.hpp).
std::string generation_row(std::int64_t domain_id, std::int64_t gen)
{
    return "generations " + std::to_string(domain_id) + " " + std::to_string(gen);
}
std::string pending_row(std::int64_t domain_id, std::int64_t created_at_ms)
{
    return "pending " + std::to_string(domain_id) + " " + std::to_string(created_at_ms);
}
std::string issuer_row(std::string_view name) { return "issuers " + std::string(name); }

constexpr const char* k_store_key_setting = "store_key_id";

Result<Generation> generation_from_row(const Stmt& row)
{
    Generation g;
    g.domain = row.text(0);
    g.gen = row.int64(1);
    g.key_pem = row.text(2);
    g.cert_pem = row.text(3);
    g.chain_pem = row.text(4);
    g.issuer_dn = row.text(5);
    g.serial_hex = row.text(6);
    g.not_before = from_ms(row.int64(7));
    g.not_after = from_ms(row.int64(8));
    g.created_at = from_ms(row.int64(9));
    auto reason = parse_reason(row.text(10));
    if (!reason.ok()) {
        return Status::Corrupt("generation " + std::to_string(g.gen) + " of " + g.domain + ": unreadable reason");
    }
    g.reason = *reason;
    g.current = row.int64(11) != 0;
    return g;
}

// `mode` in octal; with `permissions_only`, only its permission bits (of a stat's st_mode).
std::string octal_mode(std::uint64_t mode, bool permissions_only = true)
{
    char text[24];
    std::snprintf(text, sizeof text, "%04llo",
                  static_cast<unsigned long long>(permissions_only ? (mode & 07777) : mode));
    return text;
}

// The store holds private keys. One that another user could read or write (the file, or its
// -wal and -shm files, with any group or other bit), or replace (its directory writable by its
// group or others), is refused before anything reads or creates it. A path that cannot be
// resolved is left to the open, which names it.
Status check_private(const std::string& path)
{
    std::error_code ec;
    const std::filesystem::path real = std::filesystem::weakly_canonical(path, ec);
    if (ec || !real.has_parent_path()) {
        return Status::Ok();
    }
    struct stat st {};
    // The directory of the path as given (where a symlink could be replaced) and that of the
    // file it leads to.
    const std::filesystem::path given_dir = std::filesystem::absolute(path, ec).parent_path();
    for (const std::filesystem::path& d : {given_dir, real.parent_path()}) {
        const std::string dir = d.string();
        if (!dir.empty() && ::stat(dir.c_str(), &st) == 0 && (st.st_mode & 022) != 0) {
            return Status::Invalid("refusing store " + real.string() + ": its directory " + dir + " has mode " +
                                   octal_mode(st.st_mode) + ", which lets other users replace the store (chmod 700 " +
                                   dir + ")");
        }
    }
    for (const char* suffix : {"", "-wal", "-shm"}) {
        const std::string file = real.string() + suffix;
        if (::stat(file.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
            return Status::Invalid("refusing store " + file + ": its mode " + octal_mode(st.st_mode) +
                                   " lets other users read or write the private keys it holds (chmod 600 " + file +
                                   ")");
        }
    }
    return Status::Ok();
}

std::string gen_text(const std::optional<std::int64_t>& gen)
{
    return gen ? "generation " + std::to_string(*gen) : "no generation";
}

} // namespace

Store::Store(std::string path, std::unique_ptr<Db> db, std::string actor, const Clock* clock)
    : m_path(std::move(path)), m_db(std::move(db)), m_actor(std::move(actor)), m_clock(clock)
{
}

Store::~Store() = default;

Db& Store::db_for_testing() { return *m_db; }

Result<std::unique_ptr<Store>> Store::open(const std::string& path, OpenOptions options,
                                           std::shared_ptr<const StoreKey> key)
{
    TRY(check_private(path));
    if (options.create) {
        // The store holds private keys: it is born 0600 (SQLite gives its -wal and -shm files
        // the same mode), never world-readable for a moment.
        int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ::close(fd);
        } else if (errno != EEXIST) {
            return errno_status("cannot create store " + path);
        }
    }
    ASSIGN_OR_RETURN(auto db, Db::open(path, options.create));
    // FULL: a commit that changes what is served is on disk before it is reported.
    // secure_delete: what a write replaces is overwritten, not left in free pages (a key sealed
    // by rekey() leaves no copy in the clear behind).
    TRY(db->exec("PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;"
                 " PRAGMA secure_delete = ON;")
            .with_context("cannot open store " + path));
    {
        ASSIGN_OR_RETURN(auto wal, db->prepare("PRAGMA journal_mode = WAL"));
        TRY(wal.step().status().with_context("cannot open store " + path));
    }
    std::string actor = options.actor.empty() ? "certfs" : options.actor;
    std::unique_ptr<Store> store(
        new Store(path, std::move(db), std::move(actor), options.clock != nullptr ? options.clock : &k_system_clock));
    if (!options.create) {
        ASSIGN_OR_RETURN(auto version, store->m_db->prepare("PRAGMA user_version"));
        TRY(version.step());
        if (version.int64(0) == 0) {
            return Status::NotFound("store " + path + " is not initialised (run 'certfsctl init')");
        }
    }
    // Stmt handles above are gone before the Store (and its connection) can be destroyed.
    TRY(store->migrate().with_context("store " + path));
    TRY(store->adopt_key(std::move(key)).with_context("store " + path));
    return store;
}

Status Store::migrate()
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    std::int64_t version = 0;
    {
        ASSIGN_OR_RETURN(auto stmt, m_db->prepare("PRAGMA user_version"));
        TRY(stmt.step());
        version = stmt.int64(0);
    }
    auto steps = migrations();
    if (version > static_cast<std::int64_t>(steps.size())) {
        return Status::Invalid("schema version " + std::to_string(version) +
                               " is newer than this certfs understands (" + std::to_string(steps.size()) + ")");
    }
    if (version == static_cast<std::int64_t>(steps.size())) {
        return Status::Ok();
    }
    for (auto i = static_cast<std::size_t>(version); i < steps.size(); ++i) {
        TRY(m_db->exec(steps[i]));
    }
    TRY(m_db->exec("PRAGMA user_version = " + std::to_string(steps.size())));
    TRY(log_event("", "migrate", "schema version " + std::to_string(version) + " -> " + std::to_string(steps.size())));
    return txn.commit();
}

Status Store::log_event(std::string_view domain, std::string_view action, std::string_view detail)
{
    ASSIGN_OR_RETURN(auto stmt,
                     m_db->prepare("INSERT INTO events (at, actor, domain, action, detail) VALUES (?, ?, ?, ?, ?)"));
    return stmt.bind_all(to_ms(m_clock->now()), m_actor, domain, action, detail).run();
}

// ---- issuers -------------------------------------------------------------------------------

Status Store::add_issuer(const NewIssuer& issuer)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    TRY(insert_issuer(issuer));
    return txn.commit();
}

Status Store::insert_issuer(const NewIssuer& issuer)
{
    TRY(check_domain_name(issuer.name, "issuer name"));
    {
        ASSIGN_OR_RETURN(auto exists, m_db->prepare("SELECT 1 FROM issuers WHERE name = ?"));
        ASSIGN_OR_RETURN(bool found, exists.bind_all(issuer.name).step());
        if (found) {
            return Status::Conflict("issuer " + issuer.name + " already exists");
        }
    }
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare("INSERT INTO issuers (name, kind, config, secret, cert, created_at) VALUES (?, ?, ?, ?, ?, ?)"));
    ASSIGN_OR_RETURN(std::string secret, seal_secret(issuer.secret_pem, issuer_row(issuer.name)));
    TRY(stmt.bind_all(issuer.name, issuer.kind, issuer.config_json, secret, issuer.cert_pem, to_ms(m_clock->now()))
            .run());
    return log_event("", "issuer add", issuer.kind + " issuer " + issuer.name);
}

#define CERTFS_ISSUER_SELECT                                                                                           \
    "SELECT i.id, i.name, i.kind, i.config, i.cert, i.created_at,"                                                     \
    " (SELECT COUNT(*) FROM domains d WHERE d.issuer_id = i.id) FROM issuers i"

namespace {
Issuer issuer_from_row(const Stmt& row)
{
    return Issuer{row.int64(0), row.text(1),           row.text(2), row.text(3),
                  row.text(4),  from_ms(row.int64(5)), row.int64(6)};
}
} // namespace

Result<std::vector<Issuer>> Store::list_issuers()
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_ISSUER_SELECT " ORDER BY i.name"));
    return collect<Issuer>(stmt, issuer_from_row);
}

Result<Issuer> Store::get_issuer(std::string_view name)
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_ISSUER_SELECT " WHERE i.name = ?"));
    ASSIGN_OR_RETURN(bool row, stmt.bind_all(name).step());
    if (!row) {
        return Status::NotFound("no issuer named " + shown_name(name));
    }
    return issuer_from_row(stmt);
}

Result<std::string> Store::issuer_secret(std::string_view name)
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("SELECT secret FROM issuers WHERE name = ?"));
    ASSIGN_OR_RETURN(bool row, stmt.bind_all(name).step());
    if (!row) {
        return Status::NotFound("no issuer named " + shown_name(name));
    }
    return open_secret(stmt.text(0), issuer_row(name));
}

Status Store::remove_issuer(std::string_view name)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    TRY(get_issuer(name));
    {
        ASSIGN_OR_RETURN(
            auto users,
            m_db->prepare(
                "SELECT d.name FROM domains d JOIN issuers i ON i.id = d.issuer_id WHERE i.name = ? ORDER BY d.name"));
        users.bind_all(name);
        ASSIGN_OR_RETURN(auto names, collect<std::string>(users, [](const Stmt& row) { return row.text(0); }));
        if (!names.empty()) {
            std::string list;
            for (std::size_t i = 0; i < names.size() && i < 5; ++i) {
                list += (i ? ", " : "") + names[i];
            }
            if (names.size() > 5) {
                list += ", ...";
            }
            return Status::Conflict("issuer " + std::string(name) + " is used by " + std::to_string(names.size()) +
                                    " domain(s): " + list);
        }
    }
    ASSIGN_OR_RETURN(auto del, m_db->prepare("DELETE FROM issuers WHERE name = ?"));
    TRY(del.bind_all(name).run());
    TRY(log_event("", "issuer remove", std::string(name)));
    return txn.commit();
}

// ---- domains -------------------------------------------------------------------------------

Result<Domain> Store::read_domain(std::string_view name)
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_DOMAIN_SELECT " WHERE d.name = ?"));
    ASSIGN_OR_RETURN(bool row, stmt.bind_all(name).step());
    if (!row) {
        return Status::NotFound("no domain named " + shown_name(name));
    }
    return domain_from_row(stmt);
}

Result<Domain> Store::get_domain(std::string_view name) { return read_domain(name); }

Result<std::vector<Domain>> Store::list_domains()
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_DOMAIN_SELECT " ORDER BY d.name"));
    return collect<Domain>(stmt, domain_from_row);
}

Result<std::vector<Domain>> Store::bundle_members(std::string_view bundle)
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_DOMAIN_SELECT " WHERE d.bundle = ? ORDER BY d.name"));
    stmt.bind_all(bundle);
    return collect<Domain>(stmt, domain_from_row);
}

Result<std::int64_t> Store::add_domain(const DomainConfig& raw, const std::optional<GenerationInput>& first)
{
    ASSIGN_OR_RETURN(DomainConfig config, normalize_config(raw));
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(std::int64_t id, insert_domain(config, first));
    TRY(txn.commit());
    return id;
}

Result<std::int64_t> Store::insert_domain(const DomainConfig& config, const std::optional<GenerationInput>& first)
{
    if (read_domain(config.name).ok()) {
        return Status::Conflict("domain " + config.name + " already exists");
    }
    std::optional<std::int64_t> issuer_id;
    if (config.issuer) {
        ASSIGN_OR_RETURN(Issuer issuer, get_issuer(*config.issuer));
        issuer_id = issuer.id;
    }
    {
        ASSIGN_OR_RETURN(
            auto stmt,
            m_db->prepare(
                "INSERT INTO domains (name, issuer_id, dns_names, ip_addresses, key_type, reuse_key, renew_before_ms,"
                " owner_uid, group_gid, mode, bundle, deploy_hooks, state, last_error, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'monitoring', '', ?)"));
        std::optional<std::int64_t> renew_before_ms;
        if (config.renew_before) {
            renew_before_ms = config.renew_before->count();
        }
        TRY(stmt.bind_all(config.name, issuer_id, join_lines(config.dns_names), join_lines(config.ip_addresses),
                          pki::key_type_name(config.key_type), config.reuse_key, renew_before_ms, config.owner_uid,
                          config.group_gid, config.mode, config.bundle, join_lines(config.deploy_hooks),
                          to_ms(m_clock->now()))
                .run());
    }
    TRY(log_event(config.name, "add", config.issuer ? "issuer " + *config.issuer : "no issuer"));
    ASSIGN_OR_RETURN(Domain domain, read_domain(config.name));
    if (first) {
        ASSIGN_OR_RETURN(std::int64_t gen, insert_generation(domain, *first));
        TRY(make_current(domain, gen));
    }
    return domain.id;
}

Status Store::remove_domain(std::string_view name)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(Domain domain, read_domain(name));
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("DELETE FROM domains WHERE id = ?"));
    TRY(stmt.bind_all(domain.id).run());
    TRY(log_event(name, "remove", gen_text(domain.current_gen) + " was current"));
    return txn.commit();
}

Status Store::set_access(std::string_view name, const Access& access)
{
    if (!access.uid && !access.gid && !access.mode) {
        return Status::Invalid("nothing to change: give --owner, --group or --mode");
    }
    if (access.mode && *access.mode > 0777) {
        return Status::Invalid("invalid mode " + octal_mode(*access.mode, false) +
                               ": only permission bits (0 to 0777) are allowed");
    }
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(Domain domain, read_domain(name));
    const std::uint32_t uid = access.uid.value_or(domain.owner_uid);
    const std::uint32_t gid = access.gid.value_or(domain.group_gid);
    const std::uint32_t mode = access.mode.value_or(domain.mode);
    ASSIGN_OR_RETURN(auto stmt,
                     m_db->prepare("UPDATE domains SET owner_uid = ?, group_gid = ?, mode = ? WHERE id = ?"));
    TRY(stmt.bind_all(static_cast<std::int64_t>(uid), static_cast<std::int64_t>(gid), static_cast<std::int64_t>(mode),
                      domain.id)
            .run());
    TRY(log_event(name, "access",
                  "key files " + std::to_string(domain.owner_uid) + ":" + std::to_string(domain.group_gid) + " " +
                      octal_mode(domain.mode) + " -> " + std::to_string(uid) + ":" + std::to_string(gid) + " " +
                      octal_mode(mode)));
    return txn.commit();
}

// ---- generations ---------------------------------------------------------------------------

Result<Generation> Store::read_generation(std::string_view name, std::int64_t gen, bool with_key)
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_GENERATION_SELECT " WHERE d.name = ? AND g.gen = ?"));
    ASSIGN_OR_RETURN(bool row, stmt.bind_all(name, gen).step());
    if (!row) {
        return Status::NotFound("domain " + std::string(name) + " has no generation " + std::to_string(gen));
    }
    ASSIGN_OR_RETURN(Generation g, generation_from_row(stmt));
    if (!with_key) {
        pki::cleanse(g.key_pem);
        g.key_pem.clear();
        return g;
    }
    ASSIGN_OR_RETURN(g.key_pem, open_secret(g.key_pem, generation_row(stmt.int64(12), g.gen)));
    return g;
}

Result<Generation> Store::get_certificate(std::string_view name, std::int64_t gen)
{
    TRY(read_domain(name));
    return read_generation(name, gen, false);
}

Result<Generation> Store::get_generation(std::string_view name, std::int64_t gen)
{
    TRY(read_domain(name));
    return read_generation(name, gen);
}

Result<Generation> Store::current_generation(std::string_view name)
{
    ASSIGN_OR_RETURN(auto txn, ReadTxn::begin(*m_db));
    ASSIGN_OR_RETURN(Domain domain, read_domain(name));
    if (!domain.current_gen) {
        return Status::NotFound("domain " + std::string(name) + " has no certificate yet");
    }
    return read_generation(name, *domain.current_gen);
}

Result<std::vector<Generation>> Store::history(std::string_view name)
{
    ASSIGN_OR_RETURN(auto txn, ReadTxn::begin(*m_db));
    TRY(read_domain(name));
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_GENERATION_SELECT " WHERE d.name = ? ORDER BY g.gen"));
    stmt.bind_all(name);
    // Without the key of a sealed store, the certificates and no key (its key_pem empty).
    const bool keys = check_secrets_readable().ok();
    return collect<Generation>(stmt, [&](const Stmt& row) -> Result<Generation> {
        ASSIGN_OR_RETURN(Generation g, generation_from_row(row));
        if (keys) {
            ASSIGN_OR_RETURN(g.key_pem, open_secret(g.key_pem, generation_row(row.int64(12), g.gen)));
        } else {
            g.key_pem.clear();
        }
        return g;
    });
}

bool Store::serial_exists(std::string_view issuer_dn, std::string_view serial_hex)
{
    auto stmt = m_db->prepare("SELECT 1 FROM generations WHERE issuer_dn = ? AND serial = ?");
    if (!stmt.ok()) {
        return false;
    }
    auto row = stmt->bind_all(issuer_dn, serial_hex).step();
    return row.ok() && *row;
}

Result<std::map<std::string, std::vector<std::pair<std::int64_t, TimePoint>>>> Store::generation_index()
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare("SELECT d.name, g.gen, g.created_at FROM generations g JOIN domains d ON d.id = g.domain_id"
                      " ORDER BY d.name, g.gen"));
    std::map<std::string, std::vector<std::pair<std::int64_t, TimePoint>>> out;
    for (;;) {
        ASSIGN_OR_RETURN(bool row, stmt.step());
        if (!row) {
            return out;
        }
        out[stmt.text(0)].emplace_back(stmt.int64(1), from_ms(stmt.int64(2)));
    }
}

Result<std::int64_t> Store::data_version()
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("PRAGMA data_version"));
    TRY(stmt.step());
    return stmt.int64(0);
}

Result<std::int64_t> Store::insert_generation(const Domain& domain, const GenerationInput& input,
                                              std::optional<TimePoint> valid_at)
{
    ASSIGN_OR_RETURN(ValidGeneration valid,
                     validate_generation(input, names_of(domain), valid_at.value_or(m_clock->now())));
    {
        ASSIGN_OR_RETURN(auto dup,
                         m_db->prepare("SELECT d.name, g.gen FROM generations g JOIN domains d ON d.id = g.domain_id"
                                       " WHERE g.issuer_dn = ? AND g.serial = ?"));
        ASSIGN_OR_RETURN(bool found, dup.bind_all(valid.leaf.issuer, valid.leaf.serial_hex).step());
        if (found) {
            return Status::Conflict("duplicate serial: " + valid.leaf.issuer + " already issued serial " +
                                    valid.leaf.serial_hex + " (generation " + std::to_string(dup.int64(1)) + " of " +
                                    dup.text(0) + ")");
        }
    }
    std::int64_t gen = 1;
    {
        ASSIGN_OR_RETURN(auto last, m_db->prepare("SELECT last_gen FROM generation_numbers WHERE name = ?"));
        ASSIGN_OR_RETURN(bool found, last.bind_all(domain.name).step());
        if (found) {
            gen = last.int64(0) + 1;
        }
    }
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare("INSERT INTO generations (domain_id, gen, key_pem, cert_pem, chain_pem, issuer_dn, serial,"
                      " not_before, not_after, created_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    ASSIGN_OR_RETURN(std::string key, seal_secret(valid.key_pem, generation_row(domain.id, gen)));
    TRY(stmt.bind_all(domain.id, gen, key, valid.cert_pem, valid.chain_pem, valid.leaf.issuer, valid.leaf.serial_hex,
                      to_ms(valid.leaf.not_before), to_ms(valid.leaf.not_after), to_ms(m_clock->now()),
                      reason_name(input.reason))
            .run());
    TRY(log_event(domain.name, reason_name(input.reason),
                  "generation " + std::to_string(gen) + ", serial " + valid.leaf.serial_hex + ", expires " +
                      format_rfc3339(valid.leaf.not_after)));
    return gen;
}

Status Store::make_current(const Domain& domain, std::int64_t gen, bool move_now)
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare("UPDATE domains SET current_gen = ?, state = 'monitoring', last_error = '', next_attempt = NULL,"
                      " failures = 0, move_now_count = move_now_count + ? WHERE id = ?"));
    TRY(stmt.bind_all(gen, move_now ? 1 : 0, domain.id).run());
    if (move_now) {
        TRY(log_event(domain.name, "move now", "every reader moves to generation " + std::to_string(gen) + " at once"));
    }
    return Status::Ok();
}

Result<std::vector<std::int64_t>> Store::commit(const std::vector<CommitRequest>& requests, bool move_now)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    std::vector<std::int64_t> gens;
    for (const auto& req : requests) {
        ASSIGN_OR_RETURN(Domain domain, read_domain(req.domain));
        if (domain.current_gen != req.expected_gen) {
            return Status::Conflict("domain " + req.domain + ": " + gen_text(domain.current_gen) + " is current, not " +
                                    gen_text(req.expected_gen) + " (another writer committed first)");
        }
        auto gen = insert_generation(domain, req.input);
        if (!gen.ok()) {
            return gen.status().with_context("domain " + req.domain);
        }
        TRY(make_current(domain, *gen, move_now));
        ASSIGN_OR_RETURN(auto drop, m_db->prepare("DELETE FROM pending WHERE domain_id = ?"));
        TRY(drop.bind_all(domain.id).run());
        if (!domain.deploy_hooks.empty()) {
            // Owed from this transaction on: a crash before the hooks ran leaves the debt.
            ASSIGN_OR_RETURN(auto owe, m_db->prepare("UPDATE domains SET hooks_owed = ? WHERE id = ?"));
            TRY(owe.bind_all(*gen, domain.id).run());
        }
        gens.push_back(*gen);
    }
    TRY(txn.commit());
    return gens;
}

Result<std::int64_t> Store::commit_one(const CommitRequest& request)
{
    ASSIGN_OR_RETURN(auto gens, commit({request}));
    return gens.front();
}

Result<std::int64_t> Store::import_generation(std::string_view name, GenerationInput input, bool move_now)
{
    TRY(check_domain_name(name));
    input.reason = Reason::imported;
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    auto existing = read_domain(name);
    if (existing.ok()) {
        // A domain with an issuer makes keys of its type at each renewal: an import of another
        // type would change what servers load now and back again at the next renewal. A domain
        // without one takes the type of what it was given.
        if (auto key = pki::parse_private_key(input.key_pem); key.ok()) {
            if (auto type = pki::key_type_of(**key); type.ok() && *type != existing->key_type) {
                if (existing->issuer) {
                    return Status::Invalid("validation failed (key type): the key is " +
                                           std::string(pki::key_type_name(*type)) + ", but " + std::string(name) +
                                           " renews with " + std::string(pki::key_type_name(existing->key_type)) +
                                           " keys; import it under another name, or remove the domain first");
                }
                ASSIGN_OR_RETURN(auto retype, m_db->prepare("UPDATE domains SET key_type = ? WHERE id = ?"));
                TRY(retype.bind_all(std::string(pki::key_type_name(*type)), existing->id).run());
            }
        }
        ASSIGN_OR_RETURN(std::int64_t gen, insert_generation(*existing, input));
        TRY(make_current(*existing, gen, move_now));
        TRY(txn.commit());
        return gen;
    }
    if (existing.status().code() != Code::not_found) {
        return existing.status();
    }
    // A new domain certifies what the certificate names.
    ASSIGN_OR_RETURN(ValidGeneration valid, validate_generation(input, {}, m_clock->now()));
    DomainConfig config;
    config.name = std::string(name);
    config.dns_names = valid.leaf.dns_names;
    config.ip_addresses = valid.leaf.ip_addresses;
    ASSIGN_OR_RETURN(auto key, pki::parse_private_key(valid.key_pem));
    ASSIGN_OR_RETURN(config.key_type, pki::key_type_of(*key));
    if (config.dns_names.empty() && config.ip_addresses.empty()) {
        return Status::Invalid("the certificate has no subjectAltName: no name to serve it for");
    }
    ASSIGN_OR_RETURN(config, normalize_config(std::move(config)));
    TRY(insert_domain(config, input));
    ASSIGN_OR_RETURN(Domain added, read_domain(name));
    TRY(txn.commit());
    return added.current_gen.value_or(0);
}

Status Store::import_domains(const std::vector<NewIssuer>& issuers, const std::vector<ImportedDomain>& domains)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    for (const auto& issuer : issuers) {
        TRY(insert_issuer(issuer));
    }
    for (const auto& imported : domains) {
        const std::string& name = imported.config.name;
        if (imported.current >= imported.generations.size()) {
            return Status::Invalid("domain " + name + ": no generation to serve");
        }
        ASSIGN_OR_RETURN(DomainConfig config, normalize_config(imported.config));
        TRY(insert_domain(config, std::nullopt));
        ASSIGN_OR_RETURN(Domain domain, read_domain(name));
        std::optional<std::int64_t> current;
        for (std::size_t i = 0; i < imported.generations.size(); ++i) {
            GenerationInput input = imported.generations[i];
            input.reason = Reason::imported;
            std::optional<TimePoint> valid_at;
            if (i != imported.current) {
                auto certs = pki::parse_certs(input.cert_pem);
                auto info = certs.ok() && !certs->empty() ? pki::cert_info(*certs->front())
                                                          : Result<pki::CertInfo>(Status::Invalid("no certificate"));
                if (info.ok()) {
                    valid_at = info->not_before + (info->not_after - info->not_before) / 2;
                }
            }
            auto gen = insert_generation(domain, input, valid_at);
            if (!gen.ok()) {
                return gen.status().with_context("domain " + name + ", archived certificate " + std::to_string(i + 1));
            }
            if (i == imported.current) {
                current = *gen;
            }
        }
        TRY(make_current(domain, *current));
    }
    return txn.commit();
}

Result<std::int64_t> Store::rollback(std::string_view name, std::optional<std::int64_t> to, bool move_now)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(Domain domain, read_domain(name));
    if (!domain.current_gen) {
        return Status::NotFound("domain " + std::string(name) + " has no certificate to roll back");
    }
    std::int64_t target = 0;
    if (to) {
        target = *to;
    } else {
        ASSIGN_OR_RETURN(auto prev, m_db->prepare("SELECT MAX(gen) FROM generations WHERE domain_id = ? AND gen < ?"));
        TRY(prev.bind_all(domain.id, *domain.current_gen).step());
        if (prev.is_null(0)) {
            return Status::NotFound("domain " + std::string(name) + " has no generation older than " +
                                    std::to_string(*domain.current_gen));
        }
        target = prev.int64(0);
    }
    if (target == *domain.current_gen) {
        return Status::Invalid("generation " + std::to_string(target) + " of " + std::string(name) +
                               " is already current");
    }
    ASSIGN_OR_RETURN(Generation old, read_generation(name, target));
    auto valid =
        validate_generation({old.key_pem, old.cert_pem, old.chain_pem, old.reason}, names_of(domain), m_clock->now());
    if (!valid.ok()) {
        return valid.status().with_context("generation " + std::to_string(target) + " cannot become current");
    }
    TRY(make_current(domain, target, move_now));
    TRY(log_event(name, "rollback",
                  "generation " + std::to_string(*domain.current_gen) + " -> " + std::to_string(target)));
    TRY(txn.commit());
    return target;
}

Status Store::set_state(std::string_view name, DomainState state, std::string_view last_error,
                        std::optional<TimePoint> next_attempt, bool count_failure)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(auto stmt,
                     m_db->prepare("UPDATE domains SET state = ?, last_error = ?, next_attempt = ?,"
                                   " failures = CASE WHEN ? THEN failures + 1 ELSE failures END WHERE name = ?"));
    TRY(stmt.bind_all(state_name(state), last_error, opt_ms(next_attempt), count_failure, name).run());
    if (m_db->changes() == 0) {
        return Status::NotFound("no domain named " + shown_name(name));
    }
    if (!last_error.empty()) {
        TRY(log_event(name, "error", last_error));
    }
    return txn.commit();
}

Status Store::set_hook_error(std::string_view name, std::string_view error, std::optional<std::int64_t> ran_for)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    // A debt for a newer generation than the one the hooks ran for stays owed.
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("UPDATE domains SET hook_error = ?,"
                                              " hooks_owed = CASE WHEN hooks_owed <= ? THEN NULL ELSE hooks_owed END"
                                              " WHERE name = ?"));
    TRY(stmt.bind_all(error, ran_for, name).run());
    if (m_db->changes() == 0) {
        return Status::NotFound("no domain named " + shown_name(name));
    }
    if (!error.empty()) {
        TRY(log_event(name, "hook failed", error));
    }
    return txn.commit();
}

Status Store::update_issuer(std::string_view name, std::string_view config_json, std::optional<std::string_view> secret)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(auto stmt,
                     m_db->prepare("UPDATE issuers SET config = ?, secret = COALESCE(?, secret) WHERE name = ?"));
    std::optional<std::string> stored;
    if (secret) {
        ASSIGN_OR_RETURN(stored, seal_secret(*secret, issuer_row(name)));
    }
    TRY(stmt.bind_all(config_json, stored, name).run());
    if (m_db->changes() == 0) {
        return Status::NotFound("no issuer named " + shown_name(name));
    }
    TRY(log_event("", secret ? "issuer rekey" : "issuer update", "issuer " + std::string(name)));
    return txn.commit();
}

Status Store::set_renewal_info(std::string_view name, std::int64_t gen, std::optional<TimePoint> at,
                               TimePoint next_check)
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare(
            "UPDATE domains SET ari_gen = ?, ari_at = ?, ari_next_check = ? WHERE name = ? AND current_gen = ?"));
    TRY(stmt.bind_all(gen, opt_ms(at), to_ms(next_check), name, gen).run());
    if (m_db->changes() == 0) {
        return Status::Conflict("domain " + std::string(name) + ": generation " + std::to_string(gen) +
                                " is not current (renewal information is per certificate)");
    }
    return Status::Ok();
}

Status Store::save_pending(const PendingRequest& request)
{
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(Domain domain, read_domain(request.domain));
    ASSIGN_OR_RETURN(Issuer issuer, get_issuer(request.issuer));
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare(
            "INSERT OR REPLACE INTO pending (domain_id, issuer_id, based_on, key_pem, csr_pem, cookie, cert_pem,"
            " chain_pem, created_at, poll_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    ASSIGN_OR_RETURN(std::string key, seal_secret(request.key_pem, pending_row(domain.id, to_ms(request.created_at))));
    TRY(stmt.bind_all(domain.id, issuer.id, request.based_on, key, request.csr_pem, request.cookie, request.cert_pem,
                      request.chain_pem, to_ms(request.created_at), to_ms(request.poll_at))
            .run());
    return txn.commit();
}

Result<std::optional<PendingRequest>> Store::pending(std::string_view domain)
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare(
            "SELECT d.name, i.name, p.based_on, p.key_pem, p.csr_pem, p.cookie, p.cert_pem, p.chain_pem, p.created_at,"
            " p.poll_at, p.domain_id FROM pending p JOIN domains d ON d.id = p.domain_id JOIN issuers i ON i.id = "
            "p.issuer_id"
            " WHERE d.name = ?"));
    ASSIGN_OR_RETURN(bool row, stmt.bind_all(domain).step());
    if (!row) {
        return std::optional<PendingRequest>();
    }
    ASSIGN_OR_RETURN(std::string key, open_secret(stmt.text(3), pending_row(stmt.int64(10), stmt.int64(8))));
    return std::optional<PendingRequest>(PendingRequest{stmt.text(0), stmt.text(1), stmt.opt_int64(2), std::move(key),
                                                        stmt.text(4), stmt.text(5), stmt.text(6), stmt.text(7),
                                                        from_ms(stmt.int64(8)), from_ms(stmt.int64(9))});
}

Status Store::drop_pending(std::string_view domain)
{
    ASSIGN_OR_RETURN(auto stmt,
                     m_db->prepare("DELETE FROM pending WHERE domain_id = (SELECT id FROM domains WHERE name = ?)"));
    return stmt.bind_all(domain).run();
}

Status Store::set_setting(std::string_view key, std::string_view value)
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare(
            "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"));
    return stmt.bind_all(key, value).run();
}

Result<std::string> Store::setting(std::string_view key)
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("SELECT value FROM settings WHERE key = ?"));
    ASSIGN_OR_RETURN(bool row, stmt.bind_all(key).step());
    if (!row) {
        return Status::NotFound("no setting " + std::string(key));
    }
    return stmt.text(0);
}

// ---- the store key ---------------------------------------------------------------------------

namespace {

std::string no_key_message(const std::string& id)
{
    return "the store's private keys are sealed by a store key (id " + id + ") and none was given: --store-key FILE, " +
           k_store_key_env + "=FILE, or the systemd credential " + k_store_key_credential;
}

} // namespace

Result<std::optional<std::string>> Store::store_key_id()
{
    auto id = setting(k_store_key_setting);
    if (id.ok()) {
        return std::optional<std::string>(std::move(*id));
    }
    if (id.status().code() == Code::not_found) {
        return std::optional<std::string>();
    }
    return id.status();
}

Status Store::adopt_key(std::shared_ptr<const StoreKey> key)
{
    ASSIGN_OR_RETURN(m_sealed_by, store_key_id());
    if (!key) {
        return Status::Ok();
    }
    if (m_sealed_by) {
        if (*m_sealed_by != key->id()) {
            return Status::Invalid("store key " + key->source() + " (id " + key->id() +
                                   ") is not the key this store is sealed by (id " + *m_sealed_by + ")");
        }
        m_key = std::move(key);
        return Status::Ok();
    }
    // A store with no secret yet (just made by `certfsctl init`) is sealed by the key from now
    // on; one holding secrets in the clear is sealed only by an explicit rekey.
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    ASSIGN_OR_RETURN(auto count, m_db->prepare("SELECT (SELECT COUNT(*) FROM issuers) + (SELECT COUNT(*) FROM "
                                               "generations) + (SELECT COUNT(*) FROM pending)"));
    TRY(count.step());
    if (count.int64(0) != 0) {
        return Status::Invalid("store key " + key->source() +
                               " given, but this store keeps its private keys in the clear: 'certfsctl rekey-store "
                               "--new-key " +
                               key->source() + "' seals them");
    }
    TRY(set_setting(k_store_key_setting, key->id()));
    TRY(log_event("", "store key", "sealed by store key id " + key->id()));
    TRY(txn.commit());
    m_sealed_by = key->id();
    m_key = std::move(key);
    return Status::Ok();
}

Status Store::check_secrets_readable() const
{
    if (m_sealed_by && !m_key) {
        return Status::Unavailable(no_key_message(*m_sealed_by));
    }
    return Status::Ok();
}

Result<std::string> Store::seal_secret(std::string_view plaintext, std::string_view where)
{
    // Another process may have run rekey-store since this Store opened: what it would write
    // with the setting it read then would not open with the store's key now.
    ASSIGN_OR_RETURN(std::optional<std::string> now, store_key_id());
    if (now != m_sealed_by) {
        return Status::Conflict("the store was rekeyed since this process opened it (its private keys are now " +
                                (now ? "sealed by store key id " + *now : std::string("in the clear")) +
                                "): nothing was written; run it again" + (now ? " with that key" : ""));
    }
    if (!m_sealed_by) {
        return std::string(plaintext);
    }
    TRY(check_secrets_readable());
    return m_key->seal(plaintext, where);
}

Result<std::string> Store::open_secret(std::string_view stored, std::string_view where) const
{
    if (!is_sealed(stored)) {
        if (m_sealed_by) {
            return Status::Corrupt("the secret of " + std::string(where) +
                                   " is in the clear in a store sealed by a store key: certfs did not write it");
        }
        return std::string(stored);
    }
    if (!m_key) {
        return Status::Unavailable(no_key_message(m_sealed_by.value_or("unknown")));
    }
    return m_key->open(stored, where);
}

Result<RekeyReport> Store::rekey(std::shared_ptr<const StoreKey> next)
{
    TRY(check_secrets_readable());
    RekeyReport report;
    {
        ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
        // Each secret: opened with the current key, sealed with the next, and checked to open
        // to the same bytes before it is written.
        auto reseal = [&](std::string_view stored, const std::string& where) -> Result<std::string> {
            ASSIGN_OR_RETURN(std::string plain, open_secret(stored, where));
            if (!next) {
                return plain; // in the clear from now on
            }
            auto sealed = next->seal(plain, where);
            auto back = sealed.ok() ? next->open(*sealed, where) : Result<std::string>(sealed.status());
            const bool same = back.ok() && *back == plain;
            pki::cleanse(plain);
            if (back.ok()) {
                pki::cleanse(*back);
            }
            if (!sealed.ok()) {
                return sealed.status();
            }
            if (!same) {
                return Status::Corrupt("a secret sealed with the new key did not open to itself: nothing changed");
            }
            return sealed;
        };
        struct Row {
            std::int64_t a = 0;
            std::int64_t b = 0;
            std::string name;
            std::string stored;
        };
        auto rows_of = [&](const char* sql, auto read) -> Result<std::vector<Row>> {
            ASSIGN_OR_RETURN(auto stmt, m_db->prepare(sql));
            return collect<Row>(stmt, read);
        };
        // Re-seals each row and writes it back. The rows read and the values written may hold
        // keys in the clear: they are overwritten once done with, whatever the outcome.
        auto reseal_all = [&](std::vector<Row> rows, auto where_of, const char* update, auto bind,
                              int& count) -> Status {
            Status result = Status::Ok();
            for (auto& row : rows) {
                auto value = reseal(row.stored, where_of(row));
                if (!value.ok()) {
                    result = value.status();
                    break;
                }
                auto up = m_db->prepare(update);
                result = up.ok() ? bind(*up, *value, row).run() : up.status();
                pki::cleanse(*value);
                if (!result.ok()) {
                    break;
                }
                ++count;
            }
            for (auto& row : rows) {
                pki::cleanse(row.stored);
            }
            return result;
        };
        ASSIGN_OR_RETURN(auto gens, rows_of("SELECT domain_id, gen, key_pem FROM generations", [](const Stmt& r) {
                             return Row{r.int64(0), r.int64(1), "", r.text(2)};
                         }));
        TRY(reseal_all(
            std::move(gens), [](const Row& r) { return generation_row(r.a, r.b); },
            "UPDATE generations SET key_pem = ? WHERE domain_id = ? AND gen = ?",
            [](Stmt& up, const std::string& v, const Row& r) -> Stmt& { return up.bind_all(v, r.a, r.b); },
            report.generations));
        ASSIGN_OR_RETURN(auto pend, rows_of("SELECT domain_id, created_at, key_pem FROM pending", [](const Stmt& r) {
                             return Row{r.int64(0), r.int64(1), "", r.text(2)};
                         }));
        TRY(reseal_all(
            std::move(pend), [](const Row& r) { return pending_row(r.a, r.b); },
            "UPDATE pending SET key_pem = ? WHERE domain_id = ?",
            [](Stmt& up, const std::string& v, const Row& r) -> Stmt& { return up.bind_all(v, r.a); }, report.pending));
        ASSIGN_OR_RETURN(auto iss, rows_of("SELECT name, secret FROM issuers", [](const Stmt& r) {
                             return Row{0, 0, r.text(0), r.text(1)};
                         }));
        TRY(reseal_all(
            std::move(iss), [](const Row& r) { return issuer_row(r.name); },
            "UPDATE issuers SET secret = ? WHERE name = ?",
            [](Stmt& up, const std::string& v, const Row& r) -> Stmt& { return up.bind_all(v, r.name); },
            report.issuers));
        if (next) {
            TRY(set_setting(k_store_key_setting, next->id()));
        } else {
            ASSIGN_OR_RETURN(auto del, m_db->prepare("DELETE FROM settings WHERE key = ?"));
            TRY(del.bind_all(k_store_key_setting).run());
        }
        TRY(log_event("", "rekey-store",
                      (next ? "sealed by store key id " + next->id() : std::string("secrets in the clear")) + ", " +
                          std::to_string(report.generations + report.pending + report.issuers) + " secrets"));
        TRY(txn.commit());
    }
    m_sealed_by = next ? std::optional<std::string>(next->id()) : std::nullopt;
    m_key = std::move(next);
    // Committed: what follows only takes the old bytes away, and says so if it cannot. Free
    // pages may hold keys of rows deleted before secure_delete was on (pending requests are
    // deleted at each commit): VACUUM rewrites the file without them. The WAL's frames hold
    // them too until a checkpoint copies the new pages over and the WAL restarts: TRUNCATE.
    if (Status vacuumed = m_db->exec("VACUUM"); !vacuumed.ok()) {
        report.cleanup = "VACUUM: " + vacuumed.message();
        return report;
    }
    auto cp = m_db->prepare("PRAGMA wal_checkpoint(TRUNCATE)");
    if (!cp.ok()) {
        report.cleanup = "checkpoint: " + cp.status().message();
        return report;
    }
    if (auto stepped = cp->step(); !stepped.ok()) {
        report.cleanup = "checkpoint: " + stepped.status().message();
        return report;
    }
    report.cleaned = cp->int64(0) == 0;
    if (!report.cleaned) {
        report.cleanup = "another process is reading the store, so its WAL could not be emptied";
    }
    return report;
}

// ---- leases --------------------------------------------------------------------------------

namespace {

#define CERTFS_LEASE_SELECT                                                                                            \
    "SELECT scope, owner, acquired_at, expires_at, machine_id, boot_id, pid_ns, pid, start_time FROM leases"

Lease lease_from_row(const Stmt& row)
{
    return Lease{row.text(0),
                 row.text(1),
                 from_ms(row.int64(2)),
                 from_ms(row.int64(3)),
                 {row.text(4), row.text(5), row.text(6), row.int64(7), row.int64(8)}};
}

bool same_process(const LeaseHolder& a, const LeaseHolder& b)
{
    return a.machine_id == b.machine_id && a.boot_id == b.boot_id && a.pid_ns == b.pid_ns && a.pid == b.pid &&
           a.start_time == b.start_time;
}

std::string held_by(const Lease& lease) { return lease.owner + " (" + describe_holder(lease.holder) + ")"; }

} // namespace

Status Store::reset_abandoned(std::string_view scope, std::string_view why)
{
    ASSIGN_OR_RETURN(auto stmt,
                     m_db->prepare("SELECT d.id, d.name, d.bundle, d.state, p.poll_at FROM domains d"
                                   " LEFT JOIN pending p ON p.domain_id = d.id WHERE d.state IN ('issuing', 'hooks')"));
    struct Left {
        std::int64_t id;
        std::string name;
        std::string state;
        std::optional<std::int64_t> poll_at;
    };
    using ScopedLeft = std::pair<std::string, Left>;
    ASSIGN_OR_RETURN(
        auto rows, collect<ScopedLeft>(stmt, [](const Stmt& row) {
            DomainConfig config;
            config.name = row.text(1);
            config.bundle = row.opt_text(2);
            return std::pair(lease_scope(config), Left{row.int64(0), row.text(1), row.text(3), row.opt_int64(4)});
        }));
    std::vector<Left> left;
    for (auto& [in_scope, d] : rows) {
        if (in_scope == scope) {
            left.push_back(std::move(d));
        }
    }
    for (const auto& d : left) {
        // An interrupted issuance waits for its request at the CA when one is kept, or is due
        // again (monitoring, shown `due`); hooks still owed stay owed (hooks_owed).
        const bool waits = d.state == "issuing" && d.poll_at;
        ASSIGN_OR_RETURN(auto reset, m_db->prepare("UPDATE domains SET state = ?, next_attempt = ? WHERE id = ?"));
        const std::string_view state = waits ? "pending" : "monitoring";
        TRY(reset.bind_all(state, waits ? d.poll_at : std::nullopt, d.id).run());
        TRY(log_event(d.name, "recovered",
                      "state " + d.state + " left by " + std::string(why) + ", now " + std::string(state)));
    }
    return Status::Ok();
}

Status Store::acquire_lease(std::string_view scope, std::string_view owner, Duration ttl,
                            const std::optional<LeaseHolder>& as)
{
    const LeaseHolder holder = as ? *as : this_process();
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    auto now = m_clock->now();
    {
        ASSIGN_OR_RETURN(auto held, m_db->prepare(CERTFS_LEASE_SELECT " WHERE scope = ?"));
        ASSIGN_OR_RETURN(bool found, held.bind_all(scope).step());
        if (found) {
            const Lease lease = lease_from_row(held);
            // Ours: the same owner in the same process. A lease from before v6 names no process, so
            // it is nobody's: an owner string such as "certfs pid 1" repeats across containers
            // and restarts, and it expires like another host's.
            const bool ours =
                lease.owner == owner && !lease.holder.machine_id.empty() && same_process(lease.holder, holder);
            if (!ours) {
                if (lease_holds(lease, now)) {
                    const std::string until = lease.expires_at > now
                                                  ? " until " + format_rfc3339(lease.expires_at)
                                                  : ", which still runs; its lease expired at " +
                                                        format_rfc3339(lease.expires_at) +
                                                        " without a heartbeat, and it is kept until the holder ends";
                    return Status::Conflict("renewal already in progress (" + std::string(scope) + " is held by " +
                                            held_by(lease) + until + ")");
                }
                const std::string why = held_by(lease) + why_lease_ended(lease, now);
                TRY(log_event("", "lease taken", std::string(scope) + " from " + why));
                TRY(reset_abandoned(scope, why));
            }
        }
    }
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare("INSERT INTO leases (scope, owner, acquired_at, expires_at, machine_id, boot_id, pid_ns, pid,"
                      " start_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                      " ON CONFLICT (scope) DO UPDATE SET owner = excluded.owner, acquired_at = excluded.acquired_at,"
                      " expires_at = excluded.expires_at, machine_id = excluded.machine_id,"
                      " boot_id = excluded.boot_id, pid_ns = excluded.pid_ns, pid = excluded.pid,"
                      " start_time = excluded.start_time"));
    TRY(stmt.bind_all(scope, owner, to_ms(now), to_ms(now + ttl), holder.machine_id, holder.boot_id, holder.pid_ns,
                      holder.pid, holder.start_time)
            .run());
    return txn.commit();
}

namespace {

// The WHERE clause of a lease `owner` holds from one process: parameters 2 to 7 (1 is the
// statement's own).
#define CERTFS_HELD_BY_PROCESS                                                                                         \
    " WHERE owner = ?2 AND machine_id = ?3 AND boot_id = ?4 AND pid_ns = ?5 AND pid = ?6 AND start_time = ?7"

} // namespace

Status Store::extend_leases(std::string_view owner, Duration ttl, const std::optional<LeaseHolder>& as)
{
    const LeaseHolder h = as ? *as : this_process();
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("UPDATE leases SET expires_at = ?1" CERTFS_HELD_BY_PROCESS));
    return stmt.bind_all(to_ms(m_clock->now() + ttl), owner, h.machine_id, h.boot_id, h.pid_ns, h.pid, h.start_time)
        .run();
}

Status Store::release_lease(std::string_view scope, std::string_view owner, const std::optional<LeaseHolder>& as)
{
    const LeaseHolder h = as ? *as : this_process();
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare("DELETE FROM leases" CERTFS_HELD_BY_PROCESS " AND scope = ?1"));
    return stmt.bind_all(scope, owner, h.machine_id, h.boot_id, h.pid_ns, h.pid, h.start_time).run();
}

Result<std::vector<Lease>> Store::leases()
{
    ASSIGN_OR_RETURN(auto stmt, m_db->prepare(CERTFS_LEASE_SELECT " ORDER BY scope"));
    return collect<Lease>(stmt, lease_from_row);
}

Result<std::vector<std::string>> Store::recover_abandoned()
{
    const auto now = m_clock->now();
    // Every domain left `issuing` or `hooks`, with its lease scope.
    auto stuck_domains = [&]() -> Result<std::vector<std::pair<std::string, std::string>>> {
        ASSIGN_OR_RETURN(auto stmt, m_db->prepare("SELECT name, bundle, state FROM domains"
                                                  " WHERE state IN ('issuing', 'hooks')"));
        return collect<std::pair<std::string, std::string>>(stmt, [](const Stmt& row) {
            DomainConfig config;
            config.name = row.text(0);
            config.bundle = row.opt_text(1);
            return std::pair(lease_scope(config), row.text(0) + " (" + row.text(2) + ")");
        });
    };
    {
        // The daemon calls this at every pass: most find nothing to do, and take no write lock,
        // also while renewals run (their domains are `issuing`, and their leases hold).
        ASSIGN_OR_RETURN(auto before, leases());
        const bool any_abandoned =
            std::any_of(before.begin(), before.end(), [&](const Lease& l) { return !lease_holds(l, now); });
        ASSIGN_OR_RETURN(auto stuck, stuck_domains());
        const bool any_left = std::any_of(stuck.begin(), stuck.end(), [&](const auto& s) {
            return std::none_of(before.begin(), before.end(), [&](const Lease& l) { return l.scope == s.first; });
        });
        if (!any_left && !any_abandoned) {
            return std::vector<std::string>{};
        }
    }
    ASSIGN_OR_RETURN(auto txn, WriteTxn::begin(*m_db));
    std::vector<std::string> notes;
    ASSIGN_OR_RETURN(auto all, leases());
    std::set<std::string> held;
    for (const auto& lease : all) {
        if (lease_holds(lease, now)) {
            held.insert(lease.scope);
            continue;
        }
        const std::string why = held_by(lease) + why_lease_ended(lease, now);
        ASSIGN_OR_RETURN(auto drop, m_db->prepare("DELETE FROM leases WHERE scope = ?"));
        TRY(drop.bind_all(lease.scope).run());
        TRY(log_event("", "lease freed", lease.scope + " held by " + why));
        notes.push_back("freed the lease on " + lease.scope + " held by " + why);
    }
    // Every domain left `issuing` or `hooks` by a renewal that holds no lease any more.
    ASSIGN_OR_RETURN(auto stuck, stuck_domains());
    std::set<std::string> reset;
    for (const auto& [scope, what] : stuck) {
        if (held.contains(scope)) {
            continue; // a live renewal's own state
        }
        if (reset.insert(scope).second) {
            TRY(reset_abandoned(scope, "a renewal that ended without finishing"));
        }
        notes.push_back("reset " + what + ": left by a renewal that ended without finishing");
    }
    TRY(txn.commit());
    return notes;
}

// ---- events and checks ---------------------------------------------------------------------

Result<std::vector<Event>> Store::events(std::optional<std::string_view> domain, int limit)
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare("SELECT id, at, actor, domain, action, detail FROM"
                      " (SELECT * FROM events WHERE ?1 IS NULL OR domain = ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id"));
    stmt.bind(1, domain ? std::optional<std::string>(std::string(*domain)) : std::nullopt).bind(2, limit);
    return collect<Event>(stmt, [](const Stmt& row) {
        return Event{row.int64(0), from_ms(row.int64(1)), row.text(2), row.text(3), row.text(4), row.text(5)};
    });
}

Result<std::vector<std::string>> Store::integrity_problems()
{
    std::vector<std::string> out;
    {
        ASSIGN_OR_RETURN(auto stmt, m_db->prepare("PRAGMA integrity_check"));
        ASSIGN_OR_RETURN(auto rows, collect<std::string>(stmt, [](const Stmt& row) { return row.text(0); }));
        for (const auto& r : rows) {
            if (r != "ok") {
                out.push_back("integrity: " + r);
            }
        }
    }
    ASSIGN_OR_RETURN(auto fk, m_db->prepare("PRAGMA foreign_key_check"));
    ASSIGN_OR_RETURN(auto missing, collect<std::string>(fk, [](const Stmt& row) {
                         return "integrity: table " + row.text(0) + " row " + row.text(1) + " refers to a missing " +
                                row.text(2);
                     }));
    out.insert(out.end(), missing.begin(), missing.end());
    return out;
}

Result<std::vector<std::string>> Store::duplicate_serials()
{
    ASSIGN_OR_RETURN(
        auto stmt,
        m_db->prepare(
            "SELECT issuer_dn, serial, COUNT(*) FROM generations GROUP BY issuer_dn, serial HAVING COUNT(*) > 1"));
    return collect<std::string>(stmt, [](const Stmt& row) {
        return row.text(0) + " serial " + row.text(1) + " used " + row.text(2) + " times";
    });
}

} // namespace certfs::store
