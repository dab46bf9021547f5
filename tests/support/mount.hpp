// A real certfs mount for a test and the processes around it: the daemon itself, CPU hogs,
// and pair_reader processes (tests/programs/pair_reader.cpp). Every process started here is
// stopped by its pid in a destructor, also when the test failed, and a mount is always
// unmounted.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "store/store.hpp"
#include "tests/support/testutil.hpp"

namespace certfs::test {

bool is_fuse_mount(const std::filesystem::path& dir);

// Starts argv (argv[0] a path) with stdin from /dev/null, or from a pipe whose write end is
// returned in *stdin_fd; stdout to out_path, or into a pipe whose read end is returned in
// *stdout_fd; stderr with stdout.
pid_t spawn(const std::vector<std::string>& argv, const std::string& out_path, int* stdin_fd = nullptr,
            int* stdout_fd = nullptr);

// The certfs daemon in the foreground on `mnt` for the store `db`, logging to `log`. The
// constructor returns once the mount serves (a dead mount left on `mnt` does not count); the destructor unmounts and
// reaps the daemon and CHECKs that its log holds no sanitizer report (check_no_sanitizer_report).
class Daemon {
public:
    Daemon(const std::filesystem::path& db, const std::filesystem::path& mnt, const std::filesystem::path& log,
           Duration pin_window, const std::vector<std::string>& extra = {});
    ~Daemon();
    Daemon(const Daemon&) = delete;
    Daemon& operator=(const Daemon&) = delete;

    // Waits for the daemon to exit; its wait status in *status.
    bool wait_exit(Duration timeout, int* status = nullptr);
    // For a daemon that was SIGKILLed: the destructor leaves its dead mount where it is, for the
    // next daemon to recover.
    void leave_dead_mount() { m_unmount = false; }

    pid_t pid() const { return m_pid; }
    std::string log() const { return file_or_empty(m_log); }
    const std::filesystem::path& mnt() const { return m_mnt; }
    std::filesystem::path live(const std::string& name) const { return m_mnt / "live" / name; }

private:
    std::filesystem::path m_mnt;
    std::filesystem::path m_log;
    pid_t m_pid = -1;
    bool m_unmount = true;
};

// A store of its own with a local CA named "ca", mounted by a Daemon: what most filesystem
// tests start from. The directory is reachable by other users (for allow_other tests).
class CaMount {
public:
    explicit CaMount(Duration pin_window = std::chrono::seconds(2), const std::vector<std::string>& extra = {});

    std::unique_ptr<store::Store> store() const;
    // Adds a domain issued by the local CA and waits until the mount shows it.
    void add(const std::string& name, std::uint32_t mode = 0600, std::uint32_t uid = 0);
    // Commits a new generation (renew --force); returns its serial.
    std::string renew(const std::string& name);
    // Waits until a fresh process sees `serial` in live/<name>/cert.pem (the flip happened).
    void wait_flip(const std::string& name, const std::string& serial);

    Daemon& daemon() { return *m_daemon; }
    std::filesystem::path live(const std::string& name) const { return m_daemon->live(name); }
    const std::filesystem::path& mnt() const { return m_daemon->mnt(); }
    const std::filesystem::path& dir() const { return m_dir.path(); }
    std::filesystem::path db() const { return m_dir / "certfs.db"; }
    std::string log() const { return m_daemon->log(); }
    pid_t pid() const { return m_daemon->pid(); }

private:
    TempDir m_dir;
    std::unique_ptr<Daemon> m_daemon;
};

// The serial a process with no pins of its own (openssl x509) sees in a certificate file now,
// lower-case hex without leading zeros; "" when it cannot read one.
std::string serial_seen_by_new_process(const std::filesystem::path& cert);

// `count` processes of /usr/bin/yes writing to /dev/null: the load the concurrency tests run
// under ("two CPU hogs on 2 cores").
class CpuHogs {
public:
    explicit CpuHogs(int count = 2);
    ~CpuHogs();
    CpuHogs(const CpuHogs&) = delete;
    CpuHogs& operator=(const CpuHogs&) = delete;

private:
    std::vector<pid_t> m_pids;
};

// A program with its stdin and stdout on pipes (stderr goes with stdout). The destructor closes
// both and kills and reaps it if it still runs.
class Child {
public:
    explicit Child(const std::vector<std::string>& argv);
    ~Child();
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;

    // Reads its output until it holds `text`; false when the timeout passed or it ended first.
    bool wait_for_output(const std::string& text, Duration timeout);
    void write(const std::string& text);
    void close_stdin();
    // Waits for it to exit and reads the rest of its output: its wait status, nullopt on timeout.
    std::optional<int> wait(Duration timeout);

    const std::string& output() const { return m_out; }
    pid_t pid() const { return m_pid; }

private:
    pid_t m_pid = -1;
    int m_stdin = -1;  // write end
    int m_stdout = -1; // read end
    std::string m_out; // what it printed so far
};

// One pair_reader process (see its header for the options and the counts it reports).
class PairReader {
public:
    // args: pair_reader's options after DIR.
    PairReader(const std::filesystem::path& dir, const std::vector<std::string>& args);

    // Waits until it has read its first pair.
    bool wait_ready(Duration timeout) { return m_child.wait_for_output("ready\n", timeout); }
    // Waits until its loop has read a matching pair of the certificate of serial `serial`
    // (started with --print-serials).
    bool wait_read(const std::string& serial, Duration timeout)
    {
        return m_child.wait_for_output("read " + serial + "\n", timeout);
    }
    // Ends its loop and returns its counts (key -> value). The serials: `last` read while it
    // looped, `final` after it stopped, in serials["last"] and serials["final"].
    struct Report {
        std::map<std::string, long> counts;
        std::map<std::string, std::string> serials;
        long operator[](const std::string& key) const { return counts.count(key) ? counts.at(key) : -1; }
    };
    Report stop(Duration timeout = std::chrono::seconds(60));

    pid_t pid() const { return m_child.pid(); }

private:
    Child m_child;
};

// Two pair_readers of dir, of one thread and of two, that pause for 2.5 windows every 2 windows:
// readers that move along with the renewals. Returns once both have read a pair.
std::vector<std::unique_ptr<PairReader>> pausing_readers(const std::filesystem::path& dir, Duration window);

} // namespace certfs::test
