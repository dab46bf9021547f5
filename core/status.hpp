// Status and Result<T>: the one error type that crosses layers.
//
// A Status is either ok or carries a Code and a one-line message meant for the admin
// ("domain example.com: key does not match the certificate"). Not-found is data, not an
// exception. Result<T> holds a T or a non-ok Status. Both are cheap to move and never throw
// except Result::value() on an error, which is a programming bug (asserted).
#pragma once

#include <cassert>
#include <cerrno>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace certfs {

enum class Code {
    ok,
    not_found,   // the named thing does not exist
    conflict,    // lost a race or would break uniqueness: retry or report
    invalid,     // bad input: nothing was changed
    corrupt,     // stored data is damaged
    io_error,    // the OS or SQLite failed
    unavailable, // busy or unreachable: try again later
};

std::string_view code_name(Code code);

class [[nodiscard]] Status {
public:
    Status() = default;

    static Status Ok() { return {}; }
    static Status NotFound(std::string msg) { return {Code::not_found, std::move(msg)}; }
    static Status Conflict(std::string msg) { return {Code::conflict, std::move(msg)}; }
    static Status Invalid(std::string msg) { return {Code::invalid, std::move(msg)}; }
    static Status Corrupt(std::string msg) { return {Code::corrupt, std::move(msg)}; }
    static Status IoError(std::string msg) { return {Code::io_error, std::move(msg)}; }
    static Status Unavailable(std::string msg) { return {Code::unavailable, std::move(msg)}; }

    bool ok() const { return m_code == Code::ok; }
    Code code() const { return m_code; }
    const std::string& message() const { return m_message; }

    // The same status with "context: " put in front of its message.
    Status with_context(std::string_view context) const;

    // A failure may say when it is worth trying again (an HTTP server's Retry-After).
    Status with_retry_after(std::chrono::milliseconds delay) const;
    std::optional<std::chrono::milliseconds> retry_after() const { return m_retry_after; }

private:
    Status(Code code, std::string msg) : m_code(code), m_message(std::move(msg)) {}

    Code m_code = Code::ok;
    std::string m_message;
    std::optional<std::chrono::milliseconds> m_retry_after;
};

// The one conversion of a failed system call's errno (or a returned error number, as
// posix_spawn and negated libfuse codes give) to a Status: "what: strerror(err)", NotFound for
// ENOENT and IoError otherwise. Read errno before anything else can change it.
Status errno_status(std::string_view what, int err = errno);

// The exception being handled, as a Status for a thread's boundary (call it in a catch block):
// IoError "where: what()", or "where: out of memory". It logs nothing: the caller reports the
// Status where it handles it.
Status exception_status(std::string_view where);

template <typename T>
class [[nodiscard]] Result {
public:
    Result(T value) : m_value(std::move(value)) {}
    Result(Status status) : m_status(std::move(status)) { assert(!m_status.ok()); }

    bool ok() const { return m_value.has_value(); }
    const Status& status() const { return m_status; }

    T& value() &
    {
        assert(ok());
        return *m_value;
    }
    const T& value() const&
    {
        assert(ok());
        return *m_value;
    }
    T&& value() &&
    {
        assert(ok());
        return std::move(*m_value);
    }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

private:
    std::optional<T> m_value;
    Status m_status;
};

} // namespace certfs

#define CERTFS_CONCAT_INNER(a, b) a##b
#define CERTFS_CONCAT(a, b) CERTFS_CONCAT_INNER(a, b)

// TRY(expr): return the Status of expr from the enclosing function unless it is ok.
#define TRY(expr)                                                                                                      \
    do {                                                                                                               \
        if (::certfs::Status try_status_ = ::certfs::detail::to_status(expr); !try_status_.ok()) {                     \
            return try_status_;                                                                                        \
        }                                                                                                              \
    } while (false)

// ASSIGN_OR_RETURN(decl, expr): evaluate the Result expr; return its Status on error,
// otherwise move its value into decl (e.g. `auto key`, or an existing variable).
#define ASSIGN_OR_RETURN(decl, expr) ASSIGN_OR_RETURN_IMPL(CERTFS_CONCAT(result_, __LINE__), decl, expr)
#define ASSIGN_OR_RETURN_IMPL(tmp, decl, expr)                                                                         \
    auto tmp = (expr);                                                                                                 \
    if (!tmp.ok()) {                                                                                                   \
        return tmp.status();                                                                                           \
    }                                                                                                                  \
    decl = std::move(tmp).value()

namespace certfs::detail {
inline Status to_status(Status s) { return s; }
template <typename T>
Status to_status(const Result<T>& r)
{
    return r.ok() ? Status::Ok() : r.status();
}
} // namespace certfs::detail
