// Time: one Clock interface so that the store, the issuers and the scheduler can be driven by
// a fake clock in tests. Times are std::chrono::system_clock time points; the store keeps
// them as Unix milliseconds (store/schema.cpp), certificates as whole seconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/status.hpp"

namespace certfs {

using TimePoint = std::chrono::system_clock::time_point;
using Duration = std::chrono::milliseconds;

class Clock {
public:
    virtual ~Clock() = default;
    virtual TimePoint now() const = 0;
};

// The real wall clock. Thread-safe.
class SystemClock final : public Clock {
public:
    TimePoint now() const override { return std::chrono::system_clock::now(); }
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
public:
    explicit FakeClock(TimePoint start) : m_now(start) {}
    TimePoint now() const override;
    void set(TimePoint t);
    void advance(Duration d);

private:
    mutable std::mutex m_mutex;
    TimePoint m_now; // guarded by m_mutex
};

// Whole Unix seconds, as X.509 times and RFC 3339 text carry them (sub-seconds are dropped).
// A TimePoint counts nanoseconds, so it holds only 1677-09-21 to 2262-04-11: from_unix
// saturates at those ends (a certificate valid until 9999 is valid as far as a TimePoint
// reaches), in whole seconds, so that the Unix milliseconds of the result convert back.
std::int64_t to_unix(TimePoint t);
TimePoint from_unix(std::int64_t seconds);

// RFC 3339 in UTC with a Z: "2026-11-23T21:08:09Z". Whole seconds.
std::string format_rfc3339(TimePoint t);
// Reads RFC 3339: "2026-11-23T21:08:09Z", with optional fractional seconds (kept to the
// millisecond) and a "Z" or "+HH:MM" offset. Invalid, naming the text, otherwise.
Result<TimePoint> parse_rfc3339(std::string_view text);

// A duration as the admin writes it: one or more <number><unit> parts, units ms, s, m, h, d,
// w, y (365 days): "90d", "12h", "1h30m", "500ms", "10y". Refuses an empty string, a missing
// unit, an unknown unit, zero, and overflow, with a message naming the text.
Result<Duration> parse_duration(std::string_view text);

// The shortest exact form parse_duration accepts back: "90d", "1h30m", "500ms".
std::string format_duration(Duration d);

} // namespace certfs
