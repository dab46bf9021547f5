#include "core/status.hpp"

#include <cstring>

namespace certfs {

std::string_view code_name(Code code)
{
    switch (code) {
    case Code::ok:
        return "ok";
    case Code::not_found:
        return "not found";
    case Code::conflict:
        return "conflict";
    case Code::invalid:
        return "invalid";
    case Code::corrupt:
        return "corrupt";
    case Code::io_error:
        return "I/O error";
    case Code::unavailable:
        return "unavailable";
    }
    return "unknown";
}

Status Status::with_context(std::string_view context) const
{
    if (ok()) {
        return *this;
    }
    Status out(m_code, std::string(context) + ": " + m_message);
    out.m_retry_after = m_retry_after;
    return out;
}

Status Status::with_retry_after(std::chrono::milliseconds delay) const
{
    Status out = *this;
    if (!ok()) {
        out.m_retry_after = delay;
    }
    return out;
}

Status exception_status(std::string_view where)
{
    try {
        throw;
    } catch (const std::bad_alloc&) {
        return Status::IoError(std::string(where) + ": out of memory");
    } catch (const std::exception& e) {
        return Status::IoError(std::string(where) + ": " + e.what());
    } catch (...) {
        return Status::IoError(std::string(where) + ": an unknown exception");
    }
}

Status errno_status(std::string_view what, int err)
{
    std::string msg = std::string(what) + ": " + std::strerror(err);
    return err == ENOENT ? Status::NotFound(std::move(msg)) : Status::IoError(std::move(msg));
}

} // namespace certfs
