// Long-running children of a test (servers: pebble, nginx, haproxy), owned by their pid and
// stopped when the test ends, also when it failed: never by name (no pkill).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace certfs::test {

// A child process owned by its pid: stop() sends SIGTERM, waits up to `grace`, then SIGKILLs,
// and reaps it. The destructor stops it. Never throws.
class OwnedProcess {
public:
    OwnedProcess() = default;
    explicit OwnedProcess(pid_t pid) : m_pid(pid) {}
    OwnedProcess(OwnedProcess&& other) noexcept;
    OwnedProcess& operator=(OwnedProcess&& other) noexcept;
    OwnedProcess(const OwnedProcess&) = delete;
    OwnedProcess& operator=(const OwnedProcess&) = delete;
    ~OwnedProcess() { stop(); }

    pid_t pid() const { return m_pid; }
    // True, with a description ("exit status 1", "killed by signal 9") in `how`, once the
    // process has ended; it is reaped then. Never blocks.
    bool exited(std::string* how = nullptr);
    void stop(std::chrono::milliseconds grace = std::chrono::seconds(5)) noexcept;

private:
    pid_t m_pid = -1;
    bool m_reaped = false;
    std::string m_how;
};

// Starts argv (argv[0] looked up in PATH unless it holds a '/') with the environment `env`,
// stdin from /dev/null and stdout and stderr appended to log_path. The child gets SIGKILL if
// the thread that started it ends (PR_SET_PDEATHSIG), so a test binary that crashes or is
// killed by ctest's timeout leaves no server behind: start it from the thread that outlives
// its use. Throws std::runtime_error when it cannot be started (the reason from execve).
OwnedProcess spawn(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                   const std::filesystem::path& log_path);

// This process's environment ("NAME=value" entries), for spawn().
std::vector<std::string> current_environment();

} // namespace certfs::test
