#include "store/sqlite.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <limits>

namespace certfs::store {

namespace {

// Whether the filesystem holding `path` (a file or directory, or when it does not exist its
// directory) refuses writes: mounted read-only by an admin, or turned read-only by the kernel
// after a disk error. The second shows in no mount flag on every kernel (ext4's emergency_ro
// since Linux 6.15), so a nameless file the directory cannot hold is the test. It never opens
// the store itself: closing a descriptor of it would drop this process's SQLite locks.
bool on_read_only_filesystem(const std::string& path)
{
    std::error_code ec;
    const std::filesystem::path dir = std::filesystem::is_directory(path, ec)
                                          ? std::filesystem::path(path)
                                          : std::filesystem::path(path).parent_path();
    struct statvfs st {};
    if (::statvfs(dir.c_str(), &st) == 0 && (st.f_flag & ST_RDONLY) != 0) {
        return true;
    }
    const int fd = ::open(dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) {
        return errno == EROFS;
    }
    ::close(fd); // it had no name: nothing is left behind
    return false;
}

constexpr const char* k_read_only_why = " (the filesystem holding the store is read-only; nothing was changed)";
constexpr const char* k_read_only_closed_why =
    " (the filesystem holding the store is read-only, and SQLite cannot open a WAL store there once every program "
    "has closed it; make it writable)";

} // namespace

Status sqlite_status(int rc, sqlite3* db, std::string_view what)
{
    std::string msg = std::string(what) + ": " + (db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    // What a read-only filesystem makes of a write (SQLITE_READONLY, an I/O error of EROFS) and
    // of the first read of a store every program had closed (SQLITE_CANTOPEN: SQLite cannot
    // make its -shm file there).
    const int primary = rc & 0xff;
    if (db != nullptr && (primary == SQLITE_READONLY || primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN)) {
        const char* file = sqlite3_db_filename(db, "main");
        if (sqlite3_system_errno(db) == EROFS || (file != nullptr && *file != '\0' && on_read_only_filesystem(file))) {
            return Status::IoError(msg + (primary == SQLITE_CANTOPEN ? k_read_only_closed_why : k_read_only_why));
        }
    }
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return Status::Ok();
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return Status::Unavailable(msg);
    case SQLITE_CONSTRAINT:
        return Status::Conflict(msg);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return Status::Corrupt(msg);
    case SQLITE_CANTOPEN:
        return Status::NotFound(msg);
    case SQLITE_FULL:
        // Nothing was written: the transaction rolled back whole.
        return Status::IoError(msg + " (the filesystem holding the store has no space left; nothing was changed)");
    default:
        return Status::IoError(msg);
    }
}

Stmt::~Stmt()
{
    if (m_stmt != nullptr) {
        sqlite3_reset(m_stmt);
        sqlite3_clear_bindings(m_stmt);
    }
}

Stmt& Stmt::check_bind(int rc, int i)
{
    if (rc != SQLITE_OK && m_bind_status.ok()) {
        // sqlite3_errstr, not the connection's message: a later call may have replaced that.
        m_bind_status = sqlite_status(rc, nullptr, "store: bind parameter " + std::to_string(i));
    }
    return *this;
}

Stmt& Stmt::bind(int i, std::int64_t v) { return check_bind(sqlite3_bind_int64(m_stmt, i, v), i); }

Stmt& Stmt::bind(int i, std::string_view v)
{
    if (v.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
        return check_bind(SQLITE_TOOBIG, i);
    }
    return check_bind(sqlite3_bind_text(m_stmt, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT), i);
}

Stmt& Stmt::bind(int i, std::nullptr_t) { return check_bind(sqlite3_bind_null(m_stmt, i), i); }

Result<bool> Stmt::step()
{
    if (!m_bind_status.ok()) {
        return m_bind_status;
    }
    int rc = sqlite3_step(m_stmt);
    if (rc == SQLITE_ROW) {
        return true;
    }
    if (rc == SQLITE_DONE) {
        return false;
    }
    return sqlite_status(rc, m_db->handle(), "store");
}

Status Stmt::run()
{
    for (;;) {
        ASSIGN_OR_RETURN(bool row, step());
        if (!row) {
            return Status::Ok();
        }
    }
}

bool Stmt::is_null(int col) const { return sqlite3_column_type(m_stmt, col) == SQLITE_NULL; }

std::int64_t Stmt::int64(int col) const { return sqlite3_column_int64(m_stmt, col); }

std::string Stmt::text(int col) const
{
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(m_stmt, col));
    return p != nullptr ? std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(m_stmt, col))) : std::string();
}

std::optional<std::int64_t> Stmt::opt_int64(int col) const
{
    return is_null(col) ? std::nullopt : std::optional(int64(col));
}

std::optional<std::string> Stmt::opt_text(int col) const
{
    return is_null(col) ? std::nullopt : std::optional(text(col));
}

Result<std::unique_ptr<Db>> Db::open(const std::string& path, bool create)
{
    sqlite3* raw = nullptr;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
    std::unique_ptr<Db> db(new Db(raw));
    if (rc != SQLITE_OK) {
        std::error_code ec;
        if (rc == SQLITE_CANTOPEN && !create && !std::filesystem::exists(path, ec)) {
            return Status::NotFound("store " + path + " does not exist (run 'certfsctl init')");
        }
        return sqlite_status(rc, raw, "cannot open store " + path);
    }
    sqlite3_extended_result_codes(raw, 1);
    return db;
}

Db::~Db()
{
    for (auto& [sql, stmt] : m_cache) {
        sqlite3_finalize(stmt);
    }
    sqlite3_close_v2(m_db);
}

Status Db::exec(std::string_view sql)
{
    std::string text(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(m_db, text.c_str(), nullptr, nullptr, &err);
    sqlite3_free(err);
    return sqlite_status(rc, m_db, "store");
}

Result<Stmt> Db::prepare(const char* sql)
{
    auto it = m_cache.find(sql);
    if (it == m_cache.end()) {
        sqlite3_stmt* stmt = nullptr;
        int rc = sqlite3_prepare_v3(m_db, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
        if (rc != SQLITE_OK) {
            return sqlite_status(rc, m_db, "store: prepare");
        }
        it = m_cache.emplace(sql, stmt).first;
    }
    return Stmt(*this, it->second);
}

Result<WriteTxn> WriteTxn::begin(Db& db)
{
    TRY(db.exec("BEGIN IMMEDIATE"));
    return WriteTxn(db);
}

WriteTxn::~WriteTxn()
{
    if (m_db != nullptr) {
        (void)m_db->exec("ROLLBACK");
    }
}

Status WriteTxn::commit()
{
    Status s = m_db->exec("COMMIT");
    if (s.ok()) {
        m_db = nullptr;
    }
    return s;
}

Result<ReadTxn> ReadTxn::begin(Db& db)
{
    TRY(db.exec("BEGIN DEFERRED"));
    return ReadTxn(db);
}

ReadTxn::~ReadTxn()
{
    if (m_db != nullptr) {
        (void)m_db->exec("COMMIT");
    }
}

} // namespace certfs::store
