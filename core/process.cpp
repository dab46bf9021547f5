#include "core/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "core/handles.hpp"

extern char** environ;

namespace certfs {

Result<std::vector<std::string>> split_command(std::string_view command)
{
    std::vector<std::string> words;
    std::string word;
    bool in_word = false;
    for (std::size_t i = 0; i < command.size(); ++i) {
        char c = command[i];
        if (c == ' ' || c == '\t' || c == '\n') {
            if (in_word) {
                words.push_back(std::move(word));
                word.clear();
                in_word = false;
            }
            continue;
        }
        in_word = true;
        if (c == '\\') {
            if (++i == command.size()) {
                return Status::Invalid("command ends with a backslash: " + std::string(command));
            }
            word += command[i];
        } else if (c == '\'') {
            auto end = command.find('\'', i + 1);
            if (end == std::string_view::npos) {
                return Status::Invalid("unterminated ' in command: " + std::string(command));
            }
            word += command.substr(i + 1, end - i - 1);
            i = end;
        } else if (c == '"') {
            for (++i;; ++i) {
                if (i == command.size()) {
                    return Status::Invalid("unterminated \" in command: " + std::string(command));
                }
                if (command[i] == '"') {
                    break;
                }
                if (command[i] == '\\' && i + 1 < command.size() && std::strchr("\"\\$`", command[i + 1]) != nullptr) {
                    ++i;
                }
                word += command[i];
            }
        } else {
            word += c;
        }
    }
    if (in_word) {
        words.push_back(std::move(word));
    }
    if (words.empty()) {
        return Status::Invalid("empty command");
    }
    return words;
}

std::string RunResult::describe(Duration timeout) const
{
    if (timed_out) {
        return "timed out after " + format_duration(timeout);
    }
    if (signal != 0) {
        return "killed by signal " + std::to_string(signal);
    }
    return "exit status " + std::to_string(exit_code);
}

namespace {

// True when the inherited "KEY=VALUE" entry is not passed on: options.unset names KEY, or
// options.env sets it. A variable given twice is read as the first by some programs (C's
// getenv()) and as the last by others (sh): never give one twice.
bool is_replaced(std::string_view entry, const RunOptions& options)
{
    const std::string_view key = entry.substr(0, entry.find('='));
    for (std::string_view u : options.unset) {
        if (!u.empty() && u.back() == '*' ? key.substr(0, u.size() - 1) == u.substr(0, u.size() - 1) : key == u) {
            return true;
        }
    }
    return std::any_of(options.env.begin(), options.env.end(),
                       [&](std::string_view e) { return e.substr(0, e.find('=')) == key; });
}

} // namespace

Result<RunResult> run_program(const std::vector<std::string>& argv, const RunOptions& options)
{
    if (argv.empty()) {
        return Status::Invalid("empty command");
    }
    int out_pipe[2];
    int err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
        return errno_status("pipe");
    }
    UniqueFd out_read(out_pipe[0]);
    UniqueFd out_write(out_pipe[1]);
    if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
        return errno_status("pipe");
    }
    UniqueFd err_read(err_pipe[0]);
    UniqueFd err_write(err_pipe[1]);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out_write.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    // A group of its own, so a timeout reaches the children it started; default signals.
    sigset_t all;
    sigfillset(&all);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

    std::vector<std::string> env_strings;
    if (options.inherit_env) {
        for (char** e = environ; *e != nullptr; ++e) {
            if (!is_replaced(*e, options)) {
                env_strings.emplace_back(*e);
            }
        }
    }
    env_strings.insert(env_strings.end(), options.env.begin(), options.env.end());
    std::vector<char*> envp;
    for (auto& s : env_strings) {
        envp.push_back(s.data());
    }
    envp.push_back(nullptr);
    std::vector<std::string> args = argv;
    std::vector<char*> argp;
    for (auto& s : args) {
        argp.push_back(s.data());
    }
    argp.push_back(nullptr);

    pid_t pid = -1;
    int rc = ::posix_spawnp(&pid, argp[0], &actions, &attr, argp.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    out_write.reset();
    err_write.reset();
    if (rc != 0) {
        return errno_status("cannot run " + argv[0], rc);
    }

    RunResult result;
    auto deadline = std::chrono::steady_clock::now() + options.timeout;
    std::optional<std::chrono::steady_clock::time_point> kill_at;
    pollfd fds[2] = {{out_read.get(), POLLIN, 0}, {err_read.get(), POLLIN, 0}};
    std::string* sinks[2] = {&result.output, &result.errors};
    int open_fds = 2;
    int status = 0;
    bool reaped = false;
    while (open_fds > 0) {
        // A program that exits may leave a daemon it started holding the pipes: stop reading
        // when the program itself is done, not when every descendant closed its output.
        if (!reaped && ::waitpid(pid, &status, WNOHANG) == pid) {
            reaped = true;
            for (auto& f : fds) {
                f.events = POLLIN;
            }
        }
        auto now = std::chrono::steady_clock::now();
        if (!result.timed_out && now >= deadline) {
            result.timed_out = true;
            ::kill(-pid, SIGTERM);
            kill_at = now + options.kill_grace;
        }
        if (kill_at && now >= *kill_at) {
            ::kill(-pid, SIGKILL);
            break;
        }
        auto until = kill_at ? *kill_at : deadline;
        auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
        int ready = ::poll(fds, 2, reaped ? 0 : static_cast<int>(std::clamp<long long>(wait_ms, 1, 50)));
        if (ready < 0 && errno != EINTR) {
            break;
        }
        if (reaped && ready == 0) {
            break; // drained what the program wrote
        }
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) {
                continue;
            }
            char buf[4096];
            ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
            if (n > 0) {
                std::size_t room = options.max_output - std::min(options.max_output, sinks[i]->size());
                sinks[i]->append(buf, std::min(room, static_cast<std::size_t>(n)));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                --open_fds;
            }
        }
    }
    while (!reaped && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && !result.timed_out) {
        result.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        result.signal = WTERMSIG(status);
    }
    return result;
}

Status forbid_core_dumps()
{
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        return errno_status("cannot forbid core dumps (prctl PR_SET_DUMPABLE)");
    }
    return Status::Ok();
}

} // namespace certfs
