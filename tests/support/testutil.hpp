// Helpers shared by the tests: temporary directories that clean up after themselves and
// running a program with its output captured.
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include "core/clock.hpp"
#include "core/pki.hpp"
#include "core/status.hpp"

namespace certfs::test {

// A fresh directory under $TMPDIR, removed with everything in it on destruction.
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return m_path; }
    std::filesystem::path operator/(const std::string& name) const { return m_path / name; }

private:
    std::filesystem::path m_path;
};

std::string read_file(const std::filesystem::path& path);
// The whole file, or "" when it cannot be read (for logs that may not exist yet).
std::string file_or_empty(const std::filesystem::path& path);
// Reads a whole file with open/read/close, as a server reads its certificate; nullopt on any
// error, with errno set by the open or read that failed (for reads through a mount, where an
// error is what the test looks for).
std::optional<std::string> slurp(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& content);
// The DER a PEM block encodes (its base64 body, decoded): what a key looks like in raw bytes.
std::string pem_der(const std::string& pem);
// Every byte SQLite keeps of the store `db` on disk: the database, its WAL and its shared memory.
std::string store_files(const std::string& db);
// The private key's secret number (EC's private scalar, RSA's d), as big-endian bytes.
std::string private_number(const std::string& pem);
// What of the private key `pem` the store's files hold in the clear ("its DER", "its private
// number", "line 2 of its PEM"): "" when nothing.
std::string key_in_store_files(const std::string& db, const std::string& pem);
// `word` in single quotes, one word of a command line that certfs splits as a shell would (a
// helper's --command, a hook): for the paths of test directories, which hold no quote.
inline std::string quote(const std::string& word) { return "'" + word + "'"; }

struct RunResult {
    int exit_code = -1; // -1 when killed by a signal or the timeout
    std::string out;
    std::string err;
};

// CHECKs that `output` (what a program of ours printed: certfsctl's stderr, the daemon's log)
// holds no report of AddressSanitizer, LeakSanitizer or UBSan, so that in a -DCERTFS_SANITIZE=ON
// build (scripts/test-sanitize.sh) a child's memory error, leak or undefined behaviour fails the
// test that ran it, also where the child's exit status is not looked at. `what` names the
// program in the failure. A Catch assertion: call it on the test's own thread.
void check_no_sanitizer_report(const std::string& output, const std::string& what);

// Whether this is a sanitizer build (-DCERTFS_SANITIZE=ON or -DCERTFS_TSAN=ON). ASan keeps
// freed memory in quarantine (up to 256 MB) and TSan its shadow, so bounds on a process's RSS
// hold only in the plain build; the sanitizers find leaks there themselves.
#ifdef CERTFS_SANITIZED
inline constexpr bool k_sanitized = true;
#else
inline constexpr bool k_sanitized = false;
#endif

// Where a daemon that detaches (no -f: its stderr is /dev/null) writes its sanitizer reports:
// env() are the environment entries that send them to files <dir>/sanitizer.<pid>, and check()
// runs check_no_sanitizer_report on each such file. Call check() once the daemon has exited
// (wait_process_gone), since LeakSanitizer reports at the exit. Without a sanitizer build the
// entries are ignored and there are no files.
class DetachedSanitizerLogs {
public:
    explicit DetachedSanitizerLogs(const std::filesystem::path& dir);
    const std::vector<std::string>& env() const { return m_env; }
    void check(const std::string& what) const;

private:
    std::filesystem::path m_prefix;
    std::vector<std::string> m_env;
};

// The pid of a running process whose command line (its arguments joined by spaces) contains
// each of `parts`, if there is one: a daemon that detached.
std::optional<pid_t> find_process(const std::vector<std::string>& parts);
// Waits until process `pid`, not a child of ours, has ended (gone, or a zombie); false on timeout.
bool wait_process_gone(pid_t pid, Duration timeout);

// The words separated by single spaces (a command line in a test's messages).
std::string join(const std::vector<std::string>& words);

// Runs argv (argv[0] is a path, no shell) with stdin from /dev/null and the given extra
// environment entries ("KEY=VALUE") added, and waits at most timeout_s seconds.
RunResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {}, int timeout_s = 60);

// 127.0.0.1:port, for bind() and connect().
sockaddr_in loopback_address(int port);

// A TCP port on 127.0.0.1 that nothing listened on a moment ago (bound to port 0, then released).
int free_port();

// The environment variable `name` as a positive number, or fallback (for sizes bench/ raises).
long env_number(const char* name, long fallback);

// Polls pred every 10 ms until it holds or timeout passed; returns its last answer.
template <typename Pred>
bool wait_until(Pred pred, Duration timeout = std::chrono::seconds(10))
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) {
            return true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return pred();
}

// Asserts that s failed with `code` and a message containing `part`.
inline void require_error(const Status& s, Code code, const std::string& part)
{
    INFO(s.message());
    REQUIRE(s.code() == code);
    REQUIRE_THAT(s.message(), Catch::Contains(part));
}

template <typename T>
void require_error(const Result<T>& r, Code code, const std::string& part)
{
    REQUIRE_FALSE(r.ok());
    require_error(r.status(), code, part);
}

// A CA made with the pki wrappers, for tests that need certificates without the renew/ layer.
struct TestCa {
    explicit TestCa(const std::string& subject = "/CN=certfs test CA",
                    TimePoint now = std::chrono::system_clock::now());

    PKey key;
    Cert cert;
    std::string cert_pem;
};

// A leaf for `names` signed by ca, valid [not_before, not_after). With no key given a fresh
// P-256 key is made; key_pem returns it (PKCS#8).
struct TestLeaf {
    std::string key_pem;
    std::string cert_pem;
    std::string serial_hex;
};
TestLeaf make_leaf(const TestCa& ca, const pki::Names& names, TimePoint not_before, TimePoint not_after,
                   const std::string& serial_hex = "", const EVP_PKEY* key = nullptr);
// The same, valid from an hour ago for 90 days.
TestLeaf make_leaf(const TestCa& ca, const pki::Names& names);

// What the default logger says while it lives ("<level> <message>" a line): warnings as an
// admin reads them in syslog. Make it before whatever logs from its threads (a scheduler) and
// destroy it after, so that no thread logs while the sinks change.
class LogCapture {
public:
    LogCapture() : m_sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(m_out))
    {
        m_sink->set_pattern("%l %v");
        spdlog::default_logger()->sinks().push_back(m_sink);
    }
    ~LogCapture()
    {
        auto& sinks = spdlog::default_logger()->sinks();
        sinks.erase(std::remove(sinks.begin(), sinks.end(), m_sink), sinks.end());
    }
    LogCapture(const LogCapture&) = delete;
    LogCapture& operator=(const LogCapture&) = delete;

    // The lines that contain `part`.
    std::vector<std::string> lines_with(const std::string& part)
    {
        m_sink->flush();
        std::istringstream in(m_out.str());
        std::vector<std::string> out;
        for (std::string line; std::getline(in, line);) {
            if (line.find(part) != std::string::npos) {
                out.push_back(line);
            }
        }
        return out;
    }

private:
    std::ostringstream m_out;
    std::shared_ptr<spdlog::sinks::ostream_sink_mt> m_sink;
};

} // namespace certfs::test
