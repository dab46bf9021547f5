// fs_bench: how long one open+read+close (or one stat) of a small file takes, in a tight loop.
//
//   fs_bench --label L --path FILE [--threads N] [--seconds S | --iterations N]
//            [--op open-read-close|stat] [--warmup N]
//
// Each of N threads runs the operation on FILE until the time is up (--seconds, default 1) or
// until it has done --iterations operations. Before the clock starts, the main thread does
// --warmup operations (default 100) and establishes the expected size: st_size of FILE, which
// the first read must return in full. Every later read and stat must give the same size,
// otherwise fs_bench stops at once and exits 1 with the path, the operation and what it got.
//
// One operation:
//   open-read-close   open(O_RDONLY), one read(2) into a 64 KiB stack buffer, close. The file
//                     must be smaller than the buffer, so a read that returns the expected size
//                     has read the whole file (a second read would only confirm EOF).
//   stat              stat(2) of the path.
//
// Output, one line on stdout (key=value, for scripts):
//   fs_bench label=L op=O threads=N size=B ops=TOTAL elapsed_s=W us_per_op=U ops_per_s=T
// where W is the wall time from releasing the threads to the last one finishing,
//   us_per_op = N * W / TOTAL   (the mean latency of one operation as one thread sees it), and
//   ops_per_s = TOTAL / W       (throughput of all threads together).
// With one thread both say the same thing. Exit status: 0 success, 1 an operation failed,
// 2 usage error.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr std::size_t k_buffer_size = 64 * 1024;
constexpr const char* k_usage = "usage: fs_bench --label L --path FILE [--threads N] [--seconds S | --iterations N] "
                                "[--op open-read-close|stat] [--warmup N]";

enum class Op { open_read_close, stat };

struct Config {
    std::string label;
    std::string path;
    unsigned threads = 1;
    double seconds = 1.0;
    std::optional<std::uint64_t> iterations;
    std::uint64_t warmup = 100;
    Op op = Op::open_read_close;
};

const char* op_name(Op op) { return op == Op::stat ? "stat" : "open-read-close"; }

// The first failure, reported once by main; later failures are dropped.
class Failure {
public:
    void set(std::string message)
    {
        std::lock_guard lock(m_mutex);
        if (!m_failed.load(std::memory_order_relaxed)) {
            m_message = std::move(message);
            m_failed.store(true, std::memory_order_release);
        }
    }
    bool failed() const { return m_failed.load(std::memory_order_acquire); }
    std::string message() const
    {
        std::lock_guard lock(m_mutex);
        return m_message;
    }

private:
    mutable std::mutex m_mutex;
    std::string m_message;
    std::atomic<bool> m_failed{false};
};

std::string errno_text(const char* what, const std::string& path, int err)
{
    return std::string(what) + " " + path + ": " + std::strerror(err) + " (errno " + std::to_string(err) + ")";
}

// One operation. Returns an error message, or an empty string on success.
std::string run_once(const Config& config, off_t expected_size)
{
    if (config.op == Op::stat) {
        struct stat st {};
        if (::stat(config.path.c_str(), &st) != 0) {
            return errno_text("stat", config.path, errno);
        }
        if (st.st_size != expected_size) {
            return "stat " + config.path + ": size " + std::to_string(st.st_size) + ", expected " +
                   std::to_string(expected_size);
        }
        return {};
    }
    char buffer[k_buffer_size];
    int fd = ::open(config.path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno_text("open", config.path, errno);
    }
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    int read_errno = errno;
    if (::close(fd) != 0) {
        return errno_text("close", config.path, errno);
    }
    if (n < 0) {
        return errno_text("read", config.path, read_errno);
    }
    if (n != expected_size) {
        return "read " + config.path + ": got " + std::to_string(n) + " bytes, expected " +
               std::to_string(expected_size) + " (short or wrong-size read)";
    }
    return {};
}

void usage_error(const std::string& message) { std::fprintf(stderr, "fs_bench: %s\n%s\n", message.c_str(), k_usage); }

template <typename T>
bool parse_number(std::string_view text, T& out)
{
    if (text.empty()) {
        return false;
    }
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, out);
    return ec == std::errc() && ptr == end;
}

// Parses argv into config; returns false (after printing why) on a usage error.
bool parse_args(int argc, char** argv, Config& config)
{
    bool have_seconds = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view arg = argv[i];
        if (i + 1 >= argc) {
            usage_error("missing value for " + std::string(arg));
            return false;
        }
        std::string_view value = argv[++i];
        if (arg == "--label") {
            config.label = value;
        } else if (arg == "--path") {
            config.path = value;
        } else if (arg == "--threads") {
            if (!parse_number(value, config.threads) || config.threads == 0 || config.threads > 256) {
                usage_error("--threads wants 1..256, not " + std::string(value));
                return false;
            }
        } else if (arg == "--seconds") {
            std::string text(value);
            char* end = nullptr;
            config.seconds = std::strtod(text.c_str(), &end);
            if (text.empty() || end != text.c_str() + text.size() || !(config.seconds > 0.0) ||
                config.seconds > 3600.0) {
                usage_error("--seconds wants a number in (0, 3600], not " + text);
                return false;
            }
            have_seconds = true;
        } else if (arg == "--iterations") {
            std::uint64_t n = 0;
            if (!parse_number(value, n) || n == 0) {
                usage_error("--iterations wants a positive integer, not " + std::string(value));
                return false;
            }
            config.iterations = n;
        } else if (arg == "--warmup") {
            if (!parse_number(value, config.warmup)) {
                usage_error("--warmup wants a non-negative integer, not " + std::string(value));
                return false;
            }
        } else if (arg == "--op") {
            if (value == "open-read-close") {
                config.op = Op::open_read_close;
            } else if (value == "stat") {
                config.op = Op::stat;
            } else {
                usage_error("--op wants open-read-close or stat, not " + std::string(value));
                return false;
            }
        } else {
            usage_error("unknown option " + std::string(arg));
            return false;
        }
    }
    if (config.label.empty() || config.path.empty()) {
        usage_error("--label and --path are required");
        return false;
    }
    if (have_seconds && config.iterations) {
        usage_error("--seconds and --iterations exclude each other");
        return false;
    }
    return true;
}

// The expected size: st_size, which the first read (and every warm-up operation) must match.
std::optional<off_t> establish_size(const Config& config, Failure& failure)
{
    struct stat st {};
    if (::stat(config.path.c_str(), &st) != 0) {
        failure.set(errno_text("stat", config.path, errno));
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode)) {
        failure.set(config.path + " is not a regular file");
        return std::nullopt;
    }
    if (st.st_size <= 0 || static_cast<std::size_t>(st.st_size) >= k_buffer_size) {
        failure.set(config.path + ": size " + std::to_string(st.st_size) + " is not in [1, " +
                    std::to_string(k_buffer_size - 1) + "]");
        return std::nullopt;
    }
    Config first = config;
    first.op = Op::open_read_close;
    if (std::string error = run_once(first, st.st_size); !error.empty()) {
        failure.set("first read: " + error);
        return std::nullopt;
    }
    for (std::uint64_t i = 0; i < config.warmup; ++i) {
        if (std::string error = run_once(config, st.st_size); !error.empty()) {
            failure.set("warm-up: " + error);
            return std::nullopt;
        }
    }
    return st.st_size;
}

} // namespace

int main(int argc, char** argv)
{
    Config config;
    if (argc == 2 && (std::string_view(argv[1]) == "-h" || std::string_view(argv[1]) == "--help")) {
        std::puts(k_usage);
        return 0;
    }
    if (!parse_args(argc, argv, config)) {
        return 2;
    }
    Failure failure;
    auto size = establish_size(config, failure);
    if (!size) {
        std::fprintf(stderr, "fs_bench: %s: %s\n", config.label.c_str(), failure.message().c_str());
        return 1;
    }
    const off_t expected_size = *size;

    std::atomic<bool> go{false};
    std::atomic<bool> stop{false};
    std::atomic<unsigned> ready{0};
    std::vector<std::uint64_t> counts(config.threads, 0);
    std::vector<std::thread> workers;
    workers.reserve(config.threads);
    for (unsigned t = 0; t < config.threads; ++t) {
        workers.emplace_back([&, t] {
            ready.fetch_add(1, std::memory_order_acq_rel);
            while (!go.load(std::memory_order_acquire)) {
                std::this_thread::yield();
            }
            const std::uint64_t limit = config.iterations.value_or(UINT64_MAX);
            std::uint64_t done = 0;
            while (done < limit && !stop.load(std::memory_order_relaxed)) {
                if (std::string error = run_once(config, expected_size); !error.empty()) {
                    failure.set(error);
                    stop.store(true, std::memory_order_relaxed);
                    break;
                }
                ++done;
            }
            counts[t] = done;
        });
    }
    while (ready.load(std::memory_order_acquire) < config.threads) {
        std::this_thread::yield();
    }

    const auto start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    if (!config.iterations) {
        // Sleep in short steps so that a failing worker ends the run early.
        const auto deadline = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                          std::chrono::duration<double>(config.seconds));
        for (auto now = start; !failure.failed() && now < deadline; now = std::chrono::steady_clock::now()) {
            std::this_thread::sleep_for(
                std::min<std::chrono::steady_clock::duration>(std::chrono::milliseconds(10), deadline - now));
        }
        stop.store(true, std::memory_order_relaxed);
    }
    for (auto& w : workers) {
        w.join();
    }
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (failure.failed()) {
        std::fprintf(stderr, "fs_bench: %s: FAILED: %s\n", config.label.c_str(), failure.message().c_str());
        return 1;
    }
    std::uint64_t total = 0;
    for (auto c : counts) {
        total += c;
    }
    if (total == 0) {
        std::fprintf(stderr, "fs_bench: %s: no operation completed\n", config.label.c_str());
        return 1;
    }
    const double us_per_op = static_cast<double>(config.threads) * elapsed * 1e6 / static_cast<double>(total);
    const double ops_per_s = static_cast<double>(total) / elapsed;
    std::printf("fs_bench label=%s op=%s threads=%u size=%lld ops=%llu elapsed_s=%.3f us_per_op=%.3f ops_per_s=%.0f\n",
                config.label.c_str(), op_name(config.op), config.threads, static_cast<long long>(expected_size),
                static_cast<unsigned long long>(total), elapsed, us_per_op, ops_per_s);
    return 0;
}
