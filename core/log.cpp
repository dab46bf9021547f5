#include "core/log.hpp"

#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string_view>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace certfs {

namespace {

// The syslog priority of a message at `level`; info goes out at `info_priority`.
int priority_of(spdlog::level::level_enum level, int info_priority)
{
    switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
        return LOG_DEBUG;
    case spdlog::level::info:
        return info_priority;
    case spdlog::level::warn:
        return LOG_WARNING;
    case spdlog::level::err:
        return LOG_ERR;
    case spdlog::level::critical:
        return LOG_CRIT;
    default:
        return LOG_INFO;
    }
}

// spdlog's syslog sink maps each level to a fixed priority; this one sends info at `info_priority`.
class SyslogSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit SyslogSink(int info_priority) : m_info_priority(info_priority) {}

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override
    {
        ::syslog(priority_of(msg.level, m_info_priority), "%.*s", static_cast<int>(msg.payload.size()),
                 msg.payload.data());
    }
    void flush_() override {}

private:
    const int m_info_priority;
};

// Lines for journald on stderr: "<priority>message", which journald reads as the message's
// priority (sd-daemon(3)); it adds the time and the unit itself. One write(2) a line, so that
// lines of two threads never interleave.
class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit JournalSink(int info_priority) : m_info_priority(info_priority) {}

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override
    {
        // Every line of a message gets the prefix: a hook's output in an error spans several.
        const std::string prefix = "<" + std::to_string(priority_of(msg.level, m_info_priority)) + ">";
        std::string line = prefix;
        for (char c : std::string_view(msg.payload.data(), msg.payload.size())) {
            line += c;
            if (c == '\n') {
                line += prefix;
            }
        }
        line += '\n';
        const char* p = line.data();
        std::size_t left = line.size();
        while (left > 0) {
            const ssize_t n = ::write(STDERR_FILENO, p, left);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                return; // nowhere to say it
            }
            p += n;
            left -= static_cast<std::size_t>(n);
        }
    }
    void flush_() override {}

private:
    const int m_info_priority;
};

} // namespace

bool stderr_is_journal()
{
    // systemd sets JOURNAL_STREAM to "DEV:INODE" of the stream it connects stderr to; a
    // descendant whose stderr was redirected elsewhere inherits the variable but not the stream.
    const char* stream = std::getenv("JOURNAL_STREAM");
    unsigned long long dev = 0;
    unsigned long long ino = 0;
    struct stat st {};
    return stream != nullptr && std::sscanf(stream, "%llu:%llu", &dev, &ino) == 2 && ::fstat(STDERR_FILENO, &st) == 0 &&
           static_cast<unsigned long long>(st.st_dev) == dev && static_cast<unsigned long long>(st.st_ino) == ino;
}

void setup_logging(const std::string& name, bool foreground)
{
    std::shared_ptr<spdlog::logger> main;
    std::shared_ptr<spdlog::logger> notice;
    if (foreground && stderr_is_journal()) {
        main = std::make_shared<spdlog::logger>(name, std::make_shared<JournalSink>(LOG_INFO));
        notice = std::make_shared<spdlog::logger>("notice", std::make_shared<JournalSink>(LOG_NOTICE));
    } else if (foreground) {
        // A sink each: a logger's pattern is its sinks'.
        main = std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
        notice = std::make_shared<spdlog::logger>("notice", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
        notice->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [" + name + "] [notice] %v");
    } else {
        static const std::string ident = name; // openlog keeps the pointer
        ::openlog(ident.c_str(), LOG_PID, LOG_DAEMON);
        main = std::make_shared<spdlog::logger>(name, std::make_shared<SyslogSink>(LOG_INFO));
        notice = std::make_shared<spdlog::logger>("notice", std::make_shared<SyslogSink>(LOG_NOTICE));
    }
    spdlog::register_logger(notice);
    spdlog::set_default_logger(main);
}

} // namespace certfs
