#include "fs/errno.hpp"

#include <cerrno>
#include <exception>
#include <new>

#include <spdlog/spdlog.h>

namespace certfs::fs {

int to_errno(const Status& status)
{
    switch (status.code()) {
    case Code::ok:
        return 0;
    case Code::not_found:
        return ENOENT;
    case Code::invalid:
        return EINVAL;
    case Code::conflict:
        return EBUSY;
    case Code::corrupt:
        return EIO;
    case Code::io_error:
        return EIO;
    case Code::unavailable:
        return EAGAIN;
    }
    return EIO;
}

int exception_errno(const char* where) noexcept
{
    // spdlog catches what its own formatting throws, so logging here cannot throw again.
    try {
        throw;
    } catch (const std::bad_alloc&) {
        spdlog::error("{}: out of memory", where);
        return ENOMEM;
    } catch (const std::exception& e) {
        spdlog::error("{}: {}", where, e.what());
        return EIO;
    } catch (...) {
        spdlog::error("{}: an unknown exception", where);
        return EIO;
    }
}

} // namespace certfs::fs
