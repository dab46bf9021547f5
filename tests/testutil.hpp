// Helpers shared by the tests: temporary directories that clean up after themselves and
// running a program with its output captured.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

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
void write_file(const std::filesystem::path& path, const std::string& content);

struct RunResult {
    int exit_code = -1; // -1 when killed by a signal or the timeout
    std::string out;
    std::string err;
};

// Runs argv (argv[0] is a path, no shell) with stdin from /dev/null and the given extra
// environment entries ("KEY=VALUE") added, and waits at most timeout_s seconds.
RunResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env = {},
              int timeout_s = 60);

} // namespace certfs::test
