// pair_reader: one process that loops over a domain's key and certificate the way one kind of
// real reader does, checks every pair it reads, and reports what it saw. The pairing tests
// (tests/test_fs_pairs.cpp) and bench/stress.sh run several at once against a real mount.
//
//   pair_reader DIR --window-ms W [--name NAME] [--cert-first] [--threads N] [--parse-every]
//               [--work-us U] [--rest-us R] [--dir-fd | --combined | --fork] [--pause-ms P --pause-every-ms E]
//               [--visible FILE] [--print-serials]
//
// DIR is live/<domain>. Each thread loops: open, read and close the first file (privkey.pem, or
// cert.pem with --cert-first), spin for U µs, then the second file, then sleep R µs before the
// next round (a monitor's loop, if R is under the window). A pair whose bytes are those
// of the last pair it verified is taken as verified, so the loop is as fast as a real server's; other pairs
// are parsed and checked with OpenSSL, every pair with --parse-every. With --dir-fd a round
// opens DIR as a directory and openat()s both files through it; with --combined it reads the
// key and the chain from combined.pem, in one open. With --fork each round is read by a child
// forked for it, which opens privkey.pem and then fullchain.pem and hands their bytes back
// through a pipe: postfix's way (smtpd_tls_chain_files in a process per connection), a reader
// that is always new to the mount.
//
// With --pause-every-ms every thread stops between rounds every E ms, the process stays away
// from the mount for P ms, and then goes on. FILE (outside the mount) holds the serial of the
// generation the test last saw become visible: a pause that starts while it differs from the
// reader's own is *due*, and a due pause must move the reader. Without FILE no pause is due.
//
// It prints "ready" after its first pair (and with --print-serials "read SERIAL" after the first
// matching pair of each certificate: a test that reads its output as it goes), runs until its stdin ends, then stays
// away from the mount for 3 windows, reads one pair more, prints one line of counts and exits 0 (non-zero on a usage
// error). The counts: rounds; mismatches (a key that does not match its certificate); errors (an open or read that
// failed); generations (distinct certificates read); moves (opens that returned other bytes than the previous read of
// that file); early_moves (with one thread: moves at an open that ended less than W after the previous open began,
// which the daemon must never make); pauses_due and pauses_moved; last (the serial of the last pair read before it was
// told to stop); final (the serial of the pair read after that).
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "tests/support/pairs.hpp"

namespace {

using certfs::test::matching_serial;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Options {
    std::string dir;
    std::string name = "pair_reader";
    bool cert_first = false;
    int threads = 1;
    bool parse_every = false;
    long work_us = 0;
    long rest_us = 0;
    bool dir_fd = false;
    bool combined = false;
    bool fork_each = false;
    long pause_ms = 0;
    long pause_every_ms = 0;
    std::string visible;
    bool print_serials = false;
    long window_ms = 0;
};

struct Read {
    std::optional<std::string> bytes;
    Clock::time_point start;
    Clock::time_point end;
};

Read read_at(int dirfd, const std::string& path)
{
    Read r;
    r.start = Clock::now();
    int fd = ::openat(dirfd, path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        std::string out;
        char buf[8192];
        ssize_t n = 0;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) {
            out.append(buf, static_cast<std::size_t>(n));
        }
        ::close(fd);
        if (n == 0) {
            r.bytes = std::move(out);
        }
    }
    r.end = Clock::now();
    return r;
}

// Writes all of `data` to fd; false on an error. Async-signal-safe.
bool write_all(int fd, const void* data, std::size_t size)
{
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        const ssize_t n = ::write(fd, p, size);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

// In a child forked for it: opens and reads each of `paths` in turn, and writes each file's
// length (4 bytes) and bytes to `out`; exits 0, or 1 when an open or read failed. Only
// async-signal-safe calls: the parent has other threads.
[[noreturn]] void child_reads(const std::vector<const char*>& paths, int out)
{
    static char buf[1 << 16];
    for (const char* path : paths) {
        const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            _exit(1);
        }
        std::size_t got = 0;
        ssize_t n = 0;
        while (got < sizeof buf && ((n = ::read(fd, buf + got, sizeof buf - got)) > 0 || (n < 0 && errno == EINTR))) {
            got += n > 0 ? static_cast<std::size_t>(n) : 0;
        }
        ::close(fd);
        const auto size = static_cast<std::uint32_t>(got);
        if (n < 0 || got == sizeof buf || !write_all(out, &size, sizeof size) || !write_all(out, buf, got)) {
            _exit(1);
        }
    }
    _exit(0);
}

// Reads `paths` in a fresh child process (child_reads); the files' bytes, or nullopt when the
// child failed.
std::optional<std::vector<std::string>> read_in_child(const std::vector<std::string>& paths)
{
    std::vector<const char*> c_paths;
    for (const auto& p : paths) {
        c_paths.push_back(p.c_str());
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) {
        return std::nullopt;
    }
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(fds[0]);
        child_reads(c_paths, fds[1]);
    }
    ::close(fds[1]);
    std::string all;
    char buf[8192];
    ssize_t n = 0;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
        all.append(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    }
    ::close(fds[0]);
    int status = 0;
    while (pid > 0 && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (pid < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        return std::nullopt;
    }
    std::vector<std::string> out;
    std::size_t at = 0;
    while (at + sizeof(std::uint32_t) <= all.size()) {
        std::uint32_t size = 0;
        std::memcpy(&size, all.data() + at, sizeof size);
        at += sizeof size;
        out.push_back(all.substr(at, size));
        at += size;
    }
    if (out.size() != paths.size()) {
        return std::nullopt;
    }
    return out;
}

std::string read_visible(const std::string& path)
{
    if (path.empty()) {
        return "";
    }
    std::ifstream in(path);
    std::string serial;
    in >> serial;
    return serial;
}

class Reader {
public:
    explicit Reader(Options options) : m_o(std::move(options)), m_window(std::chrono::milliseconds(m_o.window_ms)) {}

    int run()
    {
        ::prctl(PR_SET_NAME, m_o.name.c_str(), 0, 0, 0); // threads started below inherit it
        std::thread stdin_watch([this] {
            char c = 0;
            while (::read(0, &c, 1) > 0) {
            }
            stop();
        });
        std::vector<std::thread> threads;
        for (int i = 0; i < m_o.threads; ++i) {
            threads.emplace_back([this] { loop(); });
        }
        if (m_o.pause_every_ms > 0) {
            pauses();
        }
        for (auto& t : threads) {
            t.join();
        }
        stdin_watch.join();
        const std::string last_looping = m_last_serial;
        // Away for three windows, then one pair more: it must be the newest generation.
        std::this_thread::sleep_for(3 * m_window);
        Worker last;
        round(last);
        std::cout << "rounds=" << m_rounds << " mismatches=" << m_mismatches << " errors=" << m_errors
                  << " generations=" << m_serials.size() << " moves=" << m_moves << " early_moves=" << m_early_moves
                  << " pauses_due=" << m_pauses_due << " pauses_moved=" << m_pauses_moved
                  << " last=" << (last_looping.empty() ? "none" : last_looping)
                  << " final=" << (last.serial.empty() ? "none" : last.serial) << std::endl;
        return 0;
    }

private:
    struct Worker {
        std::string last_read[2]; // the bytes of the previous read of the first and second file
        std::string verified[2];  // the last pair that matched
        std::string serial;       // its certificate's serial
        Clock::time_point prev_open{};
    };

    void stop()
    {
        {
            std::lock_guard lock(m_mutex);
            m_stopping = true;
        }
        m_cv.notify_all();
    }

    void loop()
    {
        Worker w;
        std::unique_lock lock(m_mutex);
        while (!m_stopping) {
            if (m_paused) {
                ++m_idle;
                m_cv.notify_all();
                m_cv.wait(lock, [&] { return !m_paused || m_stopping; });
                --m_idle;
                if (m_stopping) {
                    break;
                }
                // The first pair after the pause: a due pause must have moved it.
                const bool due = m_due_before != w.serial && !m_due_before.empty();
                const std::string before = w.serial;
                lock.unlock();
                round(w);
                lock.lock();
                if (due) {
                    ++m_pauses_due;
                    m_pauses_moved += w.serial != before ? 1 : 0;
                }
                continue;
            }
            lock.unlock();
            round(w);
            if (m_o.rest_us > 0) {
                std::this_thread::sleep_for(std::chrono::microseconds(m_o.rest_us));
            }
            lock.lock();
        }
    }

    // Every pause_every: stop the threads between rounds, stay away for pause_ms, go on.
    void pauses()
    {
        std::unique_lock lock(m_mutex);
        for (;;) {
            if (m_cv.wait_for(lock, std::chrono::milliseconds(m_o.pause_every_ms), [&] { return m_stopping; })) {
                return;
            }
            m_paused = true;
            m_cv.wait(lock, [&] { return m_idle == m_o.threads || m_stopping; });
            if (m_stopping) {
                m_paused = false;
                m_cv.notify_all();
                return;
            }
            m_due_before = read_visible(m_o.visible);
            m_cv.wait_for(lock, std::chrono::milliseconds(m_o.pause_ms), [&] { return m_stopping; });
            m_paused = false;
            m_cv.notify_all();
        }
    }

    // One open of `file` (0: first, 1: second) through dirfd, with the move bookkeeping: the
    // first open of a round whose bytes differ from the file's previous read is a move (the
    // second file of that round then differs too, as it should).
    std::optional<std::string> open_one(Worker& w, int dirfd, int file, bool timed, bool& moved_in_round)
    {
        const std::string name = m_o.combined                    ? "combined.pem"
                                 : (file == 0) == m_o.cert_first ? "cert.pem"
                                                                 : "privkey.pem";
        Read r = read_at(dirfd, m_o.dir_fd ? name : m_o.dir + "/" + name);
        if (!r.bytes) {
            return std::nullopt;
        }
        if (!w.last_read[file].empty() && *r.bytes != w.last_read[file] && !moved_in_round) {
            moved_in_round = true;
            std::lock_guard lock(m_mutex);
            ++m_moves;
            if (timed && m_o.threads == 1 && r.end - w.prev_open < m_window) {
                ++m_early_moves;
            }
        }
        w.last_read[file] = *r.bytes;
        if (timed) {
            w.prev_open = r.start;
        }
        return r.bytes;
    }

    void round(Worker& w)
    {
        std::optional<std::string> first;
        std::optional<std::string> second;
        bool moved = false;
        if (m_o.dir_fd) {
            // The lookup the daemon sees is the directory's: time the moves by it.
            const auto start = Clock::now();
            int dirfd = ::open(m_o.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (dirfd >= 0) {
                const auto end = Clock::now();
                first = open_one(w, dirfd, 0, false, moved);
                spin();
                second = open_one(w, dirfd, 1, false, moved);
                ::close(dirfd);
                if (moved && m_o.threads == 1 && end - w.prev_open < m_window) {
                    std::lock_guard lock(m_mutex);
                    ++m_early_moves;
                }
                w.prev_open = start;
            }
        } else if (m_o.fork_each) {
            // A fresh process each round: it reads the key, then the chain.
            if (auto files = read_in_child({m_o.dir + "/privkey.pem", m_o.dir + "/fullchain.pem"})) {
                if (!w.last_read[0].empty() && (*files)[0] != w.last_read[0]) {
                    std::lock_guard lock(m_mutex);
                    ++m_moves;
                }
                w.last_read[0] = (*files)[0];
                first = std::move((*files)[0]);
                second = std::move((*files)[1]);
            }
        } else if (m_o.combined) {
            // One open: the key and the chain come out of one file.
            auto both = open_one(w, AT_FDCWD, 0, true, moved);
            const std::string end = "-----END PRIVATE KEY-----\n";
            const std::size_t cut = both ? both->find(end) : std::string::npos;
            if (cut != std::string::npos) {
                first = both->substr(0, cut + end.size());
                second = both->substr(cut + end.size());
            }
        } else {
            first = open_one(w, AT_FDCWD, 0, true, moved);
            spin();
            second = open_one(w, AT_FDCWD, 1, true, moved);
        }
        std::lock_guard lock(m_mutex);
        if (!first || !second) {
            ++m_errors;
            return;
        }
        ++m_rounds;
        if (!m_ready) {
            m_ready = true;
            std::cout << "ready" << std::endl;
        }
        if (!m_o.parse_every && *first == w.verified[0] && *second == w.verified[1]) {
            m_last_serial = w.serial;
            return;
        }
        const std::string& key = m_o.cert_first && !m_o.combined ? *second : *first;
        const std::string& cert = m_o.cert_first && !m_o.combined ? *first : *second;
        auto serial = matching_serial(key, cert);
        if (!serial) {
            ++m_mismatches;
            return;
        }
        w.verified[0] = *first;
        w.verified[1] = *second;
        w.serial = *serial;
        m_last_serial = *serial;
        if (m_serials.insert(*serial).second && m_o.print_serials) {
            std::cout << "read " << *serial << std::endl;
        }
    }

    void spin() const
    {
        if (m_o.work_us <= 0) {
            return;
        }
        const auto until = Clock::now() + std::chrono::microseconds(m_o.work_us);
        while (Clock::now() < until) {
        }
    }

    const Options m_o;
    const std::chrono::milliseconds m_window;

    std::mutex m_mutex;
    std::condition_variable m_cv;
    bool m_stopping = false;  // guarded by m_mutex
    bool m_paused = false;    // guarded by m_mutex
    int m_idle = 0;           // threads waiting out a pause; guarded by m_mutex
    std::string m_due_before; // the visible serial when the pause began; guarded by m_mutex
    bool m_ready = false;     // guarded by m_mutex
    long m_rounds = 0, m_mismatches = 0, m_errors = 0, m_moves = 0, m_early_moves = 0; // guarded by m_mutex
    long m_pauses_due = 0, m_pauses_moved = 0;                                         // guarded by m_mutex
    std::set<std::string> m_serials;                                                   // guarded by m_mutex
    std::string m_last_serial; // of the last pair any thread read; guarded by m_mutex
};

} // namespace

int main(int argc, char** argv)
{
    Options o;
    CLI::App app{"pair_reader: loop over a domain's key and certificate and check every pair"};
    app.add_option("DIR", o.dir, "live/<domain>")->required();
    app.add_option("--window-ms", o.window_ms, "The mount's pin window")->required()->check(CLI::PositiveNumber);
    app.add_option("--name", o.name, "Process name");
    app.add_flag("--cert-first", o.cert_first, "Open cert.pem first");
    app.add_option("--threads", o.threads, "Looping threads")->check(CLI::Range(1, 16));
    app.add_flag("--parse-every", o.parse_every, "Parse every pair");
    app.add_option("--work-us", o.work_us, "Busy work between the two files")->check(CLI::NonNegativeNumber);
    app.add_option("--rest-us", o.rest_us, "Sleep after each round")->check(CLI::NonNegativeNumber);
    app.add_flag("--dir-fd", o.dir_fd, "Open both files through a directory descriptor");
    app.add_flag("--combined", o.combined, "Read the pair from combined.pem, one open");
    app.add_flag("--fork", o.fork_each, "Read each round in a fresh child: privkey.pem, then fullchain.pem");
    app.add_option("--pause-ms", o.pause_ms, "Length of each pause")->check(CLI::NonNegativeNumber);
    app.add_option("--pause-every-ms", o.pause_every_ms, "Pause this often")->check(CLI::NonNegativeNumber);
    app.add_option("--visible", o.visible, "File holding the serial last seen visible");
    app.add_flag("--print-serials", o.print_serials, "Print each certificate's serial when first read");
    CLI11_PARSE(app, argc, argv);
    return Reader(o).run();
}
