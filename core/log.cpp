#include "core/log.hpp"

#include <syslog.h>

#include <memory>
#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace certfs {

namespace {

// spdlog's syslog sink maps each level to a fixed priority; this one sends info at `info_priority`.
class SyslogSink final : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit SyslogSink(int info_priority) : m_info_priority(info_priority) {}

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override
    {
        int priority = LOG_INFO;
        switch (msg.level) {
        case spdlog::level::trace:
        case spdlog::level::debug:
            priority = LOG_DEBUG;
            break;
        case spdlog::level::info:
            priority = m_info_priority;
            break;
        case spdlog::level::warn:
            priority = LOG_WARNING;
            break;
        case spdlog::level::err:
            priority = LOG_ERR;
            break;
        case spdlog::level::critical:
            priority = LOG_CRIT;
            break;
        default:
            break;
        }
        ::syslog(priority, "%.*s", static_cast<int>(msg.payload.size()), msg.payload.data());
    }
    void flush_() override {}

private:
    const int m_info_priority;
};

} // namespace

void setup_logging(const std::string& name, bool foreground)
{
    std::shared_ptr<spdlog::logger> main;
    std::shared_ptr<spdlog::logger> notice;
    if (foreground) {
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
