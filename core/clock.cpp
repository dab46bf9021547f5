#include "core/clock.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <limits>

namespace certfs {

TimePoint FakeClock::now() const
{
    std::lock_guard lock(m_mutex);
    return m_now;
}

void FakeClock::set(TimePoint t)
{
    std::lock_guard lock(m_mutex);
    m_now = t;
}

void FakeClock::advance(Duration d)
{
    std::lock_guard lock(m_mutex);
    m_now += d;
}

std::int64_t to_unix(TimePoint t)
{
    return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

namespace {

// The whole seconds that a TimePoint holds, with room for a fraction of a second on either side.
// constexpr, so that other files' static TimePoints can use from_unix.
constexpr std::int64_t k_latest_unix =
    std::chrono::duration_cast<std::chrono::seconds>(TimePoint::max().time_since_epoch()).count() - 1;
constexpr std::int64_t k_earliest_unix =
    std::chrono::duration_cast<std::chrono::seconds>(TimePoint::min().time_since_epoch()).count() + 1;

} // namespace

TimePoint from_unix(std::int64_t seconds)
{
    return TimePoint(std::chrono::seconds(std::clamp(seconds, k_earliest_unix, k_latest_unix)));
}

std::string format_rfc3339(TimePoint t)
{
    std::time_t secs = to_unix(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

Result<TimePoint> parse_rfc3339(std::string_view text)
{
    const std::string t(text);
    auto bad = [&] { return Status::Invalid("not an RFC 3339 time: '" + t + "'"); };
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, used = 0;
    if (std::sscanf(t.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second,
                    &used) != 6 ||
        used != 19) {
        return bad();
    }
    std::size_t pos = 19;
    std::int64_t ms = 0;
    if (pos < t.size() && t[pos] == '.') {
        std::int64_t scale = 100;
        for (++pos; pos < t.size() && t[pos] >= '0' && t[pos] <= '9'; ++pos) {
            ms += (t[pos] - '0') * scale;
            scale /= 10;
        }
    }
    std::int64_t offset_s = 0;
    if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
        ++pos;
    } else if (pos + 6 == t.size() && (t[pos] == '+' || t[pos] == '-') && t[pos + 3] == ':') {
        int oh = 0, om = 0;
        if (std::sscanf(t.c_str() + pos + 1, "%2d:%2d", &oh, &om) != 2) {
            return bad();
        }
        offset_s = (t[pos] == '-' ? -1 : 1) * (oh * 3600 + om * 60);
        pos += 6;
    } else {
        return bad();
    }
    if (pos != t.size() || month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
        return bad();
    }
    std::tm tm{};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = second;
    const std::int64_t seconds = static_cast<std::int64_t>(timegm(&tm)) - offset_s;
    if (seconds < k_earliest_unix || seconds > k_latest_unix) {
        return Status::Invalid("not an RFC 3339 time: '" + t + "' is out of range (1677 to 2262)");
    }
    return from_unix(seconds) + std::chrono::milliseconds(ms);
}

namespace {

struct Unit {
    std::string_view name;
    std::int64_t ms;
};

// Longest names first so that "ms" is not read as "m".
constexpr Unit k_units[] = {
    {"ms", 1},
    {"s", 1000},
    {"m", 60 * 1000},
    {"h", 3600 * 1000},
    {"d", 86400 * 1000LL},
    {"w", 7 * 86400 * 1000LL},
    {"y", 365 * 86400 * 1000LL},
};

} // namespace

Result<Duration> parse_duration(std::string_view text)
{
    auto bad = [&](std::string_view why) {
        return Status::Invalid("invalid duration '" + std::string(text) + "': " + std::string(why) +
                               " (use e.g. 90d, 12h, 30m, 45s, 500ms, 10y)");
    };
    if (text.empty()) {
        return bad("empty");
    }
    std::int64_t total = 0;
    std::string_view rest = text;
    while (!rest.empty()) {
        std::int64_t number = 0;
        if (rest.front() < '0' || rest.front() > '9') {
            return bad("expected a number");
        }
        auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), number);
        if (ec != std::errc() || end == rest.data()) {
            return bad("expected a number");
        }
        rest.remove_prefix(static_cast<std::size_t>(end - rest.data()));
        const Unit* unit = nullptr;
        for (const auto& u : k_units) {
            if (rest.starts_with(u.name)) {
                unit = &u;
                break;
            }
        }
        if (unit == nullptr) {
            return bad(rest.empty() ? "missing unit" : "unknown unit");
        }
        rest.remove_prefix(unit->name.size());
        if (number > (std::numeric_limits<std::int64_t>::max() - total) / unit->ms) {
            return bad("too large");
        }
        total += number * unit->ms;
    }
    if (total == 0) {
        return bad("must be greater than zero");
    }
    return Duration(total);
}

std::string format_duration(Duration d)
{
    std::int64_t ms = d.count();
    if (ms <= 0) {
        return "0s";
    }
    std::string out;
    for (auto it = std::rbegin(k_units); it != std::rend(k_units); ++it) {
        // Weeks read poorly next to days; years and days are what admins write.
        if (it->name == "w") {
            continue;
        }
        if (ms >= it->ms) {
            out += std::to_string(ms / it->ms);
            out += it->name;
            ms %= it->ms;
        }
    }
    return out;
}

} // namespace certfs
