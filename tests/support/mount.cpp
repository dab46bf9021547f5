#include "tests/support/mount.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <sstream>

#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"

extern char** environ;

namespace certfs::test {

namespace {

constexpr long k_fuse_super_magic = 0x65735546;

// Reaps pid, waiting at most `timeout`; true when it exited.
bool reap(pid_t pid, Duration timeout, int* status = nullptr)
{
    int st = 0;
    bool done = wait_until([&] { return ::waitpid(pid, &st, WNOHANG) == pid; }, timeout);
    if (done && status != nullptr) {
        *status = st;
    }
    return done;
}

void kill_and_reap(pid_t pid)
{
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
}

} // namespace

bool is_fuse_mount(const std::filesystem::path& dir)
{
    struct statfs sf {};
    return ::statfs(dir.c_str(), &sf) == 0 && sf.f_type == k_fuse_super_magic;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& out_path, int* stdin_fd, int* stdout_fd)
{
    int in[2] = {-1, -1};
    int out[2] = {-1, -1};
    if (stdin_fd != nullptr) {
        REQUIRE(::pipe2(in, O_CLOEXEC) == 0);
    }
    if (stdout_fd != nullptr) {
        REQUIRE(::pipe2(out, O_CLOEXEC) == 0);
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (stdin_fd != nullptr) {
        posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    }
    if (stdout_fd != nullptr) {
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    }
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    std::vector<std::string> copy = argv;
    std::vector<char*> argp;
    for (auto& s : copy) {
        argp.push_back(s.data());
    }
    argp.push_back(nullptr);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argp[0], &actions, nullptr, argp.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (stdin_fd != nullptr) {
        ::close(in[0]);
        *stdin_fd = in[1];
    }
    if (stdout_fd != nullptr) {
        ::close(out[1]);
        *stdout_fd = out[0];
    }
    INFO(argv[0]);
    REQUIRE(rc == 0);
    return pid;
}

// ---- Daemon ----------------------------------------------------------------------------------

Daemon::Daemon(const std::filesystem::path& db, const std::filesystem::path& mnt, const std::filesystem::path& log,
               Duration pin_window, const std::vector<std::string>& extra)
    : m_mnt(mnt), m_log(log)
{
    std::vector<std::string> argv{
        CERTFS_PATH, "--db", db.string(), "--pin-window", std::to_string(pin_window.count()) + "ms", "-f"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(m_mnt.string());
    m_pid = spawn(argv, m_log.string());
    // A dead mount on m_mnt is a fuse mount too, but its root cannot be read (ENOTCONN).
    if (!wait_until([&] { return is_fuse_mount(m_mnt) && ::access((m_mnt / "live").c_str(), F_OK) == 0; })) {
        // The destructor will not run: stop it here.
        kill_and_reap(m_pid);
        run({"/usr/bin/fusermount3", "-uz", m_mnt.string()});
        FAIL("certfs did not mount " << m_mnt << "; its log:\n" << this->log());
    }
}

Daemon::~Daemon()
{
    // Unmount even when the test failed; then the daemon exits by itself.
    if (m_unmount) {
        run({"/usr/bin/fusermount3", "-u", m_mnt.string()});
    }
    if (m_pid > 0 && !wait_exit(std::chrono::seconds(10))) {
        kill_and_reap(m_pid);
        run({"/usr/bin/fusermount3", "-uz", m_mnt.string()});
    }
    // Its stderr is in the log: a sanitizer's report there (LeakSanitizer's comes as it exits)
    // fails the test, whatever the test looked at.
    check_no_sanitizer_report(log(), "the daemon");
}

bool Daemon::wait_exit(Duration timeout, int* status)
{
    bool done = reap(m_pid, timeout, status);
    if (done) {
        m_pid = -1;
    }
    return done;
}

// ---- CaMount --------------------------------------------------------------------------------

CaMount::CaMount(Duration pin_window, const std::vector<std::string>& extra)
{
    // mkdtemp made the directory 0700; other users must reach the mount point.
    namespace stdfs = std::filesystem;
    stdfs::permissions(m_dir.path(), stdfs::perms::owner_all | stdfs::perms::group_read | stdfs::perms::group_exec |
                                         stdfs::perms::others_read | stdfs::perms::others_exec);
    stdfs::create_directory(m_dir / "mnt");
    auto st = store::Store::open(db().string(), {.create = true, .actor = "test", .clock = nullptr}).value();
    REQUIRE(st->add_issuer(renew::create_local_ca("ca", {}, std::chrono::system_clock::now()).value()).ok());
    st.reset();
    m_daemon = std::make_unique<Daemon>(db(), m_dir / "mnt", m_dir / "certfs.log", pin_window, extra);
}

std::unique_ptr<store::Store> CaMount::store() const
{
    return store::Store::open(db().string(), {.create = false, .actor = "test", .clock = nullptr}).value();
}

void CaMount::add(const std::string& name, std::uint32_t mode, std::uint32_t uid)
{
    auto st = store();
    store::DomainConfig c;
    c.name = name;
    c.issuer = "ca";
    c.dns_names = {name};
    c.mode = mode;
    c.owner_uid = uid;
    REQUIRE(renew::Renewer(*st, "test").add_and_issue(c).ok());
    REQUIRE(wait_until([&] { return std::filesystem::exists(live(name) / "cert.pem"); }));
}

std::string CaMount::renew(const std::string& name)
{
    auto st = store();
    REQUIRE(renew::Renewer(*st, "test").renew(name, true).ok());
    return st->current_generation(name).value().serial_hex;
}

void CaMount::wait_flip(const std::string& name, const std::string& serial)
{
    const bool seen = wait_until([&] { return serial_seen_by_new_process(live(name) / "cert.pem") == serial; },
                                 std::chrono::seconds(15));
    INFO("waited for serial " << serial << " in " << name << "; the daemon said:\n" << log());
    REQUIRE(seen);
}

std::string serial_seen_by_new_process(const std::filesystem::path& cert)
{
    auto r = run({"/usr/bin/openssl", "x509", "-noout", "-serial", "-in", cert.string()});
    std::string out = r.out;
    if (out.rfind("serial=", 0) != 0) {
        return "";
    }
    std::string hex = out.substr(7, out.find('\n') - 7);
    std::transform(hex.begin(), hex.end(), hex.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    hex.erase(0, std::min(hex.find_first_not_of('0'), hex.size() - 1));
    return hex;
}

// ---- CpuHogs ---------------------------------------------------------------------------------

CpuHogs::CpuHogs(int count)
{
    for (int i = 0; i < count; ++i) {
        m_pids.push_back(spawn({"/usr/bin/yes"}, "/dev/null"));
    }
}

CpuHogs::~CpuHogs()
{
    for (pid_t pid : m_pids) {
        kill_and_reap(pid);
    }
}

// ---- PairReader ------------------------------------------------------------------------------

// ---- Child -----------------------------------------------------------------------------------

Child::Child(const std::vector<std::string>& argv) { m_pid = spawn(argv, "", &m_stdin, &m_stdout); }

Child::~Child()
{
    close_stdin();
    if (m_stdout >= 0) {
        ::close(m_stdout);
    }
    if (m_pid > 0) {
        kill_and_reap(m_pid);
    }
}

bool Child::wait_for_output(const std::string& text, Duration timeout)
{
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (m_out.find(text) == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return false;
        }
        fd_set set;
        FD_ZERO(&set);
        FD_SET(m_stdout, &set);
        timeval tv{static_cast<time_t>(left.count() / 1000), static_cast<suseconds_t>(left.count() % 1000 * 1000)};
        if (::select(m_stdout + 1, &set, nullptr, nullptr, &tv) <= 0) {
            continue;
        }
        char buf[4096];
        ssize_t n = ::read(m_stdout, buf, sizeof buf);
        if (n <= 0) {
            return false;
        }
        m_out.append(buf, static_cast<std::size_t>(n));
    }
    return true;
}

void Child::write(const std::string& text)
{
    REQUIRE(::write(m_stdin, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}

void Child::close_stdin()
{
    if (m_stdin >= 0) {
        ::close(m_stdin);
        m_stdin = -1;
    }
}

std::optional<int> Child::wait(Duration timeout)
{
    int status = 0;
    if (!reap(m_pid, timeout, &status)) {
        return std::nullopt;
    }
    m_pid = -1;
    char buf[4096];
    for (ssize_t n = 0; (n = ::read(m_stdout, buf, sizeof buf)) > 0;) {
        m_out.append(buf, static_cast<std::size_t>(n));
    }
    return status;
}

// ---- PairReader ------------------------------------------------------------------------------

namespace {

std::vector<std::string> pair_reader_argv(const std::filesystem::path& dir, const std::vector<std::string>& args)
{
    std::vector<std::string> argv{PAIR_READER_PATH, dir.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

} // namespace

PairReader::PairReader(const std::filesystem::path& dir, const std::vector<std::string>& args)
    : m_child(pair_reader_argv(dir, args))
{
}

PairReader::Report PairReader::stop(Duration timeout)
{
    m_child.close_stdin();
    auto status = m_child.wait(timeout);
    const std::string& out = m_child.output();
    INFO("pair_reader said: " << out);
    REQUIRE(status);
    REQUIRE((WIFEXITED(*status) && WEXITSTATUS(*status) == 0));
    REQUIRE(out.find("rounds=") != std::string::npos);
    Report report;
    std::istringstream words(out.substr(out.rfind("rounds=")));
    for (std::string word; words >> word;) {
        auto eq = word.find('=');
        const std::string key = word.substr(0, eq);
        if (key == "last" || key == "final") {
            report.serials[key] = word.substr(eq + 1);
        } else {
            report.counts[key] = std::stol(word.substr(eq + 1));
        }
    }
    return report;
}

std::vector<std::unique_ptr<PairReader>> pausing_readers(const std::filesystem::path& dir, Duration window)
{
    const auto ms = [&](long times_ten) { return std::to_string(window.count() * times_ten / 10); };
    std::vector<std::unique_ptr<PairReader>> readers;
    for (const char* threads : {"1", "2"}) {
        readers.push_back(std::make_unique<PairReader>(dir, std::vector<std::string>{"--window-ms", ms(10), "--threads",
                                                                                     threads, "--pause-ms", ms(25),
                                                                                     "--pause-every-ms", ms(20)}));
        REQUIRE(readers.back()->wait_ready(std::chrono::seconds(30)));
    }
    return readers;
}

} // namespace certfs::test
