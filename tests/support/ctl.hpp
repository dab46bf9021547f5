// certfsctl, the real binary (CERTFSCTL_PATH), for end-to-end tests. Every run checks what the
// program printed: key material never appears, on stdout or on stderr (keys only ever go to
// exported files), and the program ended by itself rather than by the timeout or a signal.
// The checks are Catch assertions: run certfsctl only from the test's own thread, or use
// Ctl::unchecked there and check_no_key_material() on the test's thread afterwards.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/testutil.hpp"

namespace certfs::test {

// The certfsctl binary the tests run, for a hook or a script that runs it.
const char* certfsctl_path();

// CHECKs that neither stdout nor stderr of r contains "PRIVATE KEY".
void check_no_key_material(const RunResult& r);

// Runs certfsctl with `args` as given (no --db added) and the extra environment entries `env`,
// at most 120 s; checks that it printed no key material and was not killed.
RunResult run_certfsctl(const std::vector<std::string>& args, const std::vector<std::string>& env = {});

// The error contract of certfsctl: exit code `code` and exactly one line on stderr, starting
// "certfsctl: " and containing `needle`.
void expect_failure(const RunResult& r, int code, const std::string& needle);

// certfsctl against one store: <a temporary directory of its own>/certfs.db, or the store `db`
// given. path() names a file in the store's directory.
class Ctl {
public:
    Ctl();
    explicit Ctl(std::filesystem::path db);
    Ctl(const Ctl&) = delete;
    Ctl& operator=(const Ctl&) = delete;

    std::filesystem::path path(const std::string& name) const { return m_db.parent_path() / name; }
    std::string db() const { return m_db.string(); }

    // Runs `certfsctl --db DB args...` with the checks above.
    RunResult operator()(const std::vector<std::string>& args) const;
    // The same without any check, for threads other than the test's.
    RunResult unchecked(const std::vector<std::string>& args) const;
    // Runs and requires success.
    RunResult ok(const std::vector<std::string>& args) const;
    // Runs with --json, requires success and that stdout is JSON and nothing else; returns it.
    nlohmann::json js(std::vector<std::string> args) const;

    nlohmann::json show(const std::string& name) const { return js({"show", name}); }
    nlohmann::json history(const std::string& name) const { return js({"history", name}); }

    // Everything a listing can see: domains, issuers and the event log. Equal snapshots
    // before and after a refused command mean the command changed nothing.
    std::string snapshot() const;

    // init plus a local CA issuer "ca" (ec-p256, 90-day leaves).
    void init_with_ca() const;

    // Exports the current (or a given) generation to path(dir_name) and returns that.
    std::filesystem::path export_to(const std::string& name, const std::string& dir_name,
                                    std::optional<int> gen = {}) const;

private:
    std::optional<TempDir> m_dir; // the directory of its own, when no store was given
    std::filesystem::path m_db;
};

} // namespace certfs::test
