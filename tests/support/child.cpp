#include "tests/support/child.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <utility>

#include "core/handles.hpp"

extern char** environ;

namespace certfs::test {

namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

std::string describe_wait_status(int status)
{
    if (WIFEXITED(status)) {
        return "exit status " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        return "killed by signal " + std::to_string(WTERMSIG(status));
    }
    return "wait status " + std::to_string(status);
}

std::string find_program(const std::string& name)
{
    if (name.find('/') != std::string::npos) {
        return name;
    }
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / name;
        if (access(candidate.c_str(), X_OK) == 0) {
            return candidate.string();
        }
    }
    throw std::runtime_error(name + " not found in PATH");
}

} // namespace

// fork/execve rather than posix_spawn, for PR_SET_PDEATHSIG; between the two only
// async-signal-safe calls.
OwnedProcess spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                   const std::filesystem::path& log_path)
{
    std::string program = find_program(argv.at(0));
    UniqueFd log(open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
    int pipe_fds[2];
    if (!log || !null || pipe2(pipe_fds, O_CLOEXEC) != 0) {
        throw std::runtime_error("cannot prepare to start " + program + ": " + std::strerror(errno));
    }
    UniqueFd report_read(pipe_fds[0]);
    UniqueFd report_write(pipe_fds[1]);

    std::vector<char*> args;
    for (const auto& a : argv) {
        args.push_back(const_cast<char*>(a.c_str()));
    }
    args.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& e : env) {
        envp.push_back(const_cast<char*>(e.c_str()));
    }
    envp.push_back(nullptr);

    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) {
            _exit(127);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, nullptr);
        if (dup2(null.get(), 0) < 0 || dup2(log.get(), 1) < 0 || dup2(log.get(), 2) < 0) {
            int err = errno;
            (void)!write(report_write.get(), &err, sizeof err);
            _exit(127);
        }
        execve(program.c_str(), args.data(), envp.data());
        int err = errno;
        (void)!write(report_write.get(), &err, sizeof err);
        _exit(127);
    }
    OwnedProcess child(pid);
    report_write.reset();
    int err = 0;
    ssize_t n;
    do {
        n = read(report_read.get(), &err, sizeof err);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        child.stop(0ms);
        throw std::runtime_error("cannot start " + program + ": " + std::strerror(err));
    }
    return child;
}

std::vector<std::string> current_environment()
{
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
        env.emplace_back(*e);
    }
    return env;
}

OwnedProcess::OwnedProcess(OwnedProcess&& other) noexcept
    : m_pid(std::exchange(other.m_pid, -1)), m_reaped(other.m_reaped), m_how(std::move(other.m_how))
{
}

OwnedProcess& OwnedProcess::operator=(OwnedProcess&& other) noexcept
{
    if (this != &other) {
        stop();
        m_pid = std::exchange(other.m_pid, -1);
        m_reaped = other.m_reaped;
        m_how = std::move(other.m_how);
    }
    return *this;
}

bool OwnedProcess::exited(std::string* how)
{
    if (m_pid > 0 && !m_reaped) {
        int status = 0;
        pid_t r = waitpid(m_pid, &status, WNOHANG);
        if (r == m_pid) {
            m_reaped = true;
            m_how = describe_wait_status(status);
        } else if (r < 0 && errno == ECHILD) {
            m_reaped = true;
            m_how = "reaped elsewhere";
        }
    }
    if (how != nullptr) {
        *how = m_how;
    }
    return m_pid <= 0 || m_reaped;
}

void OwnedProcess::stop(std::chrono::milliseconds grace) noexcept
{
    if (exited()) {
        return;
    }
    kill(m_pid, SIGTERM);
    const auto deadline = Clock::now() + grace;
    while (Clock::now() < deadline) {
        if (exited()) {
            return;
        }
        std::this_thread::sleep_for(5ms);
    }
    kill(m_pid, SIGKILL);
    int status = 0;
    pid_t r;
    do {
        r = waitpid(m_pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    m_reaped = true;
    m_how = r == m_pid ? describe_wait_status(status) : "reaped elsewhere";
}

} // namespace certfs::test
