#include "fs/errno.hpp"

#include <cerrno>

namespace certfs::fs {

int to_errno(const Status& status)
{
    switch (status.code()) {
    case Code::ok: return 0;
    case Code::not_found: return ENOENT;
    case Code::invalid: return EINVAL;
    case Code::conflict: return EBUSY;
    case Code::corrupt: return EIO;
    case Code::io_error: return EIO;
    case Code::unavailable: return EAGAIN;
    }
    return EIO;
}

} // namespace certfs::fs
