#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <limits>

#include "core/clock.hpp"
#include "core/log.hpp"
#include "core/status.hpp"

using namespace certfs;
using namespace std::chrono_literals;

TEST_CASE("durations parse in every unit the admin writes")
{
    CHECK(parse_duration("90d").value() == 90 * 24h);
    CHECK(parse_duration("12h").value() == 12h);
    CHECK(parse_duration("30m").value() == 30min);
    CHECK(parse_duration("45s").value() == 45s);
    CHECK(parse_duration("500ms").value() == 500ms);
    CHECK(parse_duration("10y").value() == 3650 * 24h);
    CHECK(parse_duration("1h30m").value() == 90min);
}

TEST_CASE("bad durations are refused with the reason")
{
    auto check = [](std::string_view text, std::string_view why) {
        auto r = parse_duration(text);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().code() == Code::invalid);
        CHECK_THAT(r.status().message(), Catch::Contains(std::string(why)));
    };
    check("", "empty");
    check("90", "missing unit");
    check("90x", "unknown unit");
    check("d", "expected a number");
    check("-5d", "expected a number");
    check("0d", "greater than zero");
    check("99999999999999999y", "too large");
}

TEST_CASE("durations format back to a form that parses to the same value")
{
    for (auto text : {"90d", "1h30m", "500ms", "10y", "1d1s"}) {
        CHECK(format_duration(parse_duration(text).value()) == text);
    }
}

TEST_CASE("times print as RFC 3339 UTC")
{
    CHECK(format_rfc3339(from_unix(0)) == "1970-01-01T00:00:00Z");
    CHECK(format_rfc3339(from_unix(1795467600)) == "2026-11-23T21:00:00Z");
}

TEST_CASE("TRY and ASSIGN_OR_RETURN pass errors up and values through")
{
    auto half = [](int x) -> Result<int> {
        if (x % 2 != 0) {
            return Status::Invalid("odd");
        }
        return x / 2;
    };
    auto quarter = [&](int x) -> Result<int> {
        ASSIGN_OR_RETURN(int h, half(x));
        ASSIGN_OR_RETURN(int q, half(h));
        return q;
    };
    CHECK(quarter(8).value() == 2);
    CHECK(quarter(6).status().message() == "odd");
    auto checked = [&](int x) -> Status {
        TRY(half(x));
        return Status::Ok();
    };
    CHECK(checked(2).ok());
    CHECK(checked(3).code() == Code::invalid);
    CHECK(Status::NotFound("x").with_context("domain a").message() == "domain a: x");
}

TEST_CASE("parse_rfc3339 reads what format_rfc3339 writes and the forms ACME servers send")
{
    const TimePoint t = from_unix(1'795'000'000);
    CHECK(parse_rfc3339(format_rfc3339(t)).value() == t);
    CHECK(parse_rfc3339("2026-11-23T21:08:09Z").value() == from_unix(1'795'468'089));
    CHECK(parse_rfc3339("2026-11-23T21:08:09.25Z").value() ==
          from_unix(1'795'468'089) + std::chrono::milliseconds(250));
    CHECK(parse_rfc3339("2026-11-23T22:08:09+01:00").value() == from_unix(1'795'468'089));
    CHECK(parse_rfc3339("2026-11-23T20:38:09-00:30").value() == from_unix(1'795'468'089));
    for (const char* bad :
         {"", "2026-11-23", "2026-11-23T21:08:09", "2026-13-23T21:08:09Z", "2026-11-23T21:08:09Zx", "yesterday"}) {
        INFO(bad);
        auto r = parse_rfc3339(bad);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().code() == Code::invalid);
        CHECK_THAT(r.status().message(), Catch::Contains("not an RFC 3339 time"));
    }
}

// Found by fuzz_text and fuzz_acme_json (fuzz/regressions/rfc3339-year-0226,
// renewal-window-year-6676): a TimePoint counts nanoseconds, so it holds only 1677-2262, and
// these overflowed it.
TEST_CASE("parse_rfc3339 refuses times that a TimePoint cannot hold")
{
    for (const char* far : {"0226-12-02 12:30:33Z", "6676-01-02T04:00:00Z", "1677-01-01T00:00:00Z"}) {
        INFO(far);
        auto r = parse_rfc3339(far);
        REQUIRE_FALSE(r.ok());
        CHECK(r.status().code() == Code::invalid);
        CHECK_THAT(r.status().message(), Catch::Contains("out of range"));
    }
    CHECK(parse_rfc3339("2200-01-01T00:00:00.5Z").value() == from_unix(7'258'118'400) + std::chrono::milliseconds(500));
}

TEST_CASE("from_unix saturates at the ends of what a TimePoint holds")
{
    const TimePoint latest = from_unix(to_unix(TimePoint::max()));
    const TimePoint earliest = from_unix(to_unix(TimePoint::min()));
    CHECK(from_unix(253'402'300'799) == latest); // 9999-12-31T23:59:59Z
    CHECK(from_unix(std::numeric_limits<std::int64_t>::max()) == latest);
    CHECK(from_unix(-62'135'596'800) == earliest); // 0001-01-01T00:00:00Z
    CHECK(from_unix(std::numeric_limits<std::int64_t>::min()) == earliest);
    CHECK(format_rfc3339(latest) == "2262-04-11T23:47:15Z");
    CHECK(latest > from_unix(7'258'118'400));
}

TEST_CASE("a failure's Retry-After survives added context and an ok status takes none")
{
    Status s = Status::Unavailable("busy").with_retry_after(std::chrono::seconds(90));
    CHECK(s.retry_after() == std::chrono::milliseconds(90'000));
    Status outer = s.with_context("new order");
    CHECK(outer.message() == "new order: busy");
    CHECK(outer.retry_after() == std::chrono::milliseconds(90'000));
    CHECK_FALSE(Status::Unavailable("busy").retry_after().has_value());
    CHECK_FALSE(Status::Ok().with_retry_after(std::chrono::seconds(1)).retry_after().has_value());
}

TEST_CASE("logging to journald's stream: each line of a message carries its priority, and the notice logger's is 5")
{
    // stderr becomes a file, named by JOURNAL_STREAM as systemd names the stream it connects.
    char path[] = "/tmp/certfs-journal-XXXXXX";
    const int fd = ::mkstemp(path);
    REQUIRE(fd >= 0);
    const int saved = ::dup(STDERR_FILENO);
    REQUIRE(::dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    const std::string stream = std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
    ::setenv("JOURNAL_STREAM", stream.c_str(), 1);
    const bool journal = certfs::stderr_is_journal();
    const auto before = spdlog::default_logger();
    certfs::setup_logging("certfs-test", true);
    spdlog::info("mounted");
    spdlog::warn("a hook failed: exit status 1: first line\nsecond line");
    certfs::log_notice("a reader is held");
    spdlog::error("broken");
    spdlog::default_logger()->flush();
    spdlog::set_default_logger(before);
    spdlog::drop("notice");
    ::dup2(saved, STDERR_FILENO);
    ::close(saved);
    ::unsetenv("JOURNAL_STREAM");
    std::string text(static_cast<std::size_t>(::lseek(fd, 0, SEEK_END)), '\0');
    REQUIRE(::pread(fd, text.data(), text.size(), 0) == static_cast<ssize_t>(text.size()));
    ::close(fd);
    ::unlink(path);
    CHECK(journal);
    CHECK(text == "<6>mounted\n<4>a hook failed: exit status 1: first line\n<4>second line\n<5>a reader is held\n"
                  "<3>broken\n");
    // Another stream (a descendant whose stderr went elsewhere): not the journal.
    ::setenv("JOURNAL_STREAM", "1:2", 1);
    CHECK_FALSE(certfs::stderr_is_journal());
    ::unsetenv("JOURNAL_STREAM");
}
