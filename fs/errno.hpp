// The one place where a Status becomes an errno for a FUSE reply.
#pragma once

#include "core/status.hpp"

namespace certfs::fs {

// ok -> 0; not_found -> ENOENT; invalid -> EINVAL; conflict -> EBUSY; corrupt -> EIO;
// io_error -> EIO; unavailable -> EAGAIN.
int to_errno(const Status& status);

} // namespace certfs::fs
