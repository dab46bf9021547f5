// Logging, on top of spdlog: the daemon's loggers, and syslog's "notice" priority (normal but
// significant, such as a reader held on an old generation), which spdlog has no level for.
#pragma once

#include <string>
#include <utility>

#include <spdlog/spdlog.h>

namespace certfs {

// Makes the default logger (`name`, to stderr in the foreground, else to syslog with facility
// daemon) and a second one, "notice", whose info messages go out as notices: LOG_NOTICE in
// syslog, "[notice]" on stderr. In the foreground with stderr connected to journald (systemd's
// JOURNAL_STREAM names it), each line is "<priority>message" instead, so that the journal
// keeps every message's level (`journalctl -p warning -u certfs` shows the warnings and worse).
void setup_logging(const std::string& name, bool foreground);

// Whether stderr is the stream systemd connected to journald (JOURNAL_STREAM is its device and
// inode).
bool stderr_is_journal();

// A notice, through the "notice" logger when setup_logging() made one, else at info level.
template <typename... Args>
void log_notice(spdlog::format_string_t<Args...> fmt, Args&&... args)
{
    auto logger = spdlog::get("notice");
    (logger ? logger : spdlog::default_logger())->info(fmt, std::forward<Args>(args)...);
}

} // namespace certfs
