// fs's errno edge: the one place where a Status becomes an errno for a FUSE reply, and where an
// exception that reached a boundary no exception may cross (an op_* handler, the watcher thread)
// becomes one.
#pragma once

#include "core/status.hpp"

namespace certfs::fs {

// ok -> 0; not_found -> ENOENT; invalid -> EINVAL; conflict -> EBUSY; corrupt -> EIO;
// io_error -> EIO; unavailable -> EAGAIN.
int to_errno(const Status& status);

// Call only inside a catch block, at the boundary: logs the exception being handled as an error
// of `where` (this is the one place it is logged) and returns the errno a reply gives for it:
// ENOMEM for std::bad_alloc, EIO for anything else. As libfuse's example/passthrough_hp.cc.
int exception_errno(const char* where) noexcept;

} // namespace certfs::fs
