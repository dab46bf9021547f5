// A thin RAII layer over SQLite: a connection, cached prepared statements, and write
// transactions that roll back unless committed. Only store/ uses it.
//
// Not thread-safe: one Db per thread. Every SQLite error becomes a Status through
// sqlite_status(), the one place that maps SQLite result codes.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sqlite3.h>

#include "core/status.hpp"

namespace certfs::store {

// Maps a SQLite result code (and the connection's message) to a Status.
Status sqlite_status(int rc, sqlite3* db, std::string_view what);

class Db;

// A borrowed, cached statement. Reset and its bindings cleared when it goes out of scope, so
// the next user of the same SQL starts clean.
class Stmt {
public:
    Stmt(Db& db, sqlite3_stmt* stmt) : m_db(&db), m_stmt(stmt) {}
    Stmt(Stmt&& other) noexcept : m_db(other.m_db), m_stmt(other.m_stmt), m_bind_status(std::move(other.m_bind_status))
    {
        other.m_stmt = nullptr;
    }
    Stmt(const Stmt&) = delete;
    Stmt& operator=(const Stmt&) = delete;
    Stmt& operator=(Stmt&&) = delete;
    ~Stmt();

    // Binds parameters 1..n in order; std::nullopt / nullptr bind NULL. Binding returns the
    // statement for chaining; the first failure (a parameter index out of range, a value too
    // big) is kept and returned by step() and run(), which then do not execute it.
    template <typename... Args>
    Stmt& bind_all(const Args&... args)
    {
        int i = 0;
        (bind(++i, args), ...);
        return *this;
    }
    Stmt& bind(int i, std::int64_t v);
    Stmt& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
    Stmt& bind(int i, std::uint32_t v) { return bind(i, static_cast<std::int64_t>(v)); }
    Stmt& bind(int i, bool v) { return bind(i, static_cast<std::int64_t>(v ? 1 : 0)); }
    Stmt& bind(int i, std::string_view v);
    Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
    Stmt& bind(int i, std::nullptr_t);
    template <typename T>
    Stmt& bind(int i, const std::optional<T>& v)
    {
        return v ? bind(i, *v) : bind(i, nullptr);
    }

    // One step: true when a row is ready, false when done. Errors become a Status.
    Result<bool> step();
    // Steps to completion, expecting no rows.
    Status run();

    bool is_null(int col) const;
    std::int64_t int64(int col) const;
    std::string text(int col) const;
    std::optional<std::int64_t> opt_int64(int col) const;
    std::optional<std::string> opt_text(int col) const;

private:
    // Keeps the first failed bind's Status in m_bind_status.
    Stmt& check_bind(int rc, int i);

    Db* m_db;
    sqlite3_stmt* m_stmt;
    Status m_bind_status;
};

// Steps through every row of stmt and returns from_row(stmt) of each; from_row returns T or
// Result<T>, and its first error ends the walk.
template <typename T, typename Fn>
Result<std::vector<T>> collect(Stmt& stmt, Fn from_row)
{
    std::vector<T> out;
    for (;;) {
        ASSIGN_OR_RETURN(bool row, stmt.step());
        if (!row) {
            return out;
        }
        Result<T> item = from_row(stmt);
        if (!item.ok()) {
            return item.status();
        }
        out.push_back(std::move(item).value());
    }
}

class Db {
public:
    // Opens path; creates it only when create is true (NotFound otherwise).
    static Result<std::unique_ptr<Db>> open(const std::string& path, bool create);
    ~Db();
    Db(const Db&) = delete;
    Db& operator=(const Db&) = delete;

    // Runs SQL text with no results (several statements allowed).
    Status exec(std::string_view sql);
    // A cached prepared statement for sql, which must have static storage (a string
    // literal): the cache is keyed by its address. Prepared on first use.
    Result<Stmt> prepare(const char* sql);

    std::int64_t changes() const { return sqlite3_changes64(m_db); }
    sqlite3* handle() const { return m_db; }

private:
    explicit Db(sqlite3* db) : m_db(db) {}

    sqlite3* m_db;
    std::map<const char*, sqlite3_stmt*> m_cache; // keyed by the SQL literal's address
};

// A write transaction (BEGIN IMMEDIATE, so writers queue on the busy timeout instead of
// failing at commit). Rolls back on destruction unless commit() succeeded.
class WriteTxn {
public:
    static Result<WriteTxn> begin(Db& db);
    WriteTxn(WriteTxn&& other) noexcept : m_db(other.m_db) { other.m_db = nullptr; }
    WriteTxn(const WriteTxn&) = delete;
    WriteTxn& operator=(const WriteTxn&) = delete;
    WriteTxn& operator=(WriteTxn&&) = delete;
    ~WriteTxn();

    Status commit();

private:
    explicit WriteTxn(Db& db) : m_db(&db) {}
    Db* m_db; // null once committed or moved from
};

// A read transaction: one consistent snapshot for several SELECTs.
class ReadTxn {
public:
    static Result<ReadTxn> begin(Db& db);
    ReadTxn(ReadTxn&& other) noexcept : m_db(other.m_db) { other.m_db = nullptr; }
    ReadTxn(const ReadTxn&) = delete;
    ReadTxn& operator=(const ReadTxn&) = delete;
    ReadTxn& operator=(ReadTxn&&) = delete;
    ~ReadTxn();

private:
    explicit ReadTxn(Db& db) : m_db(&db) {}
    Db* m_db;
};

} // namespace certfs::store
