#include "tests/support/ctl.hpp"

#include <algorithm>

namespace certfs::test {

namespace {

std::vector<std::string> with_db(const std::string& db, const std::vector<std::string>& args)
{
    std::vector<std::string> argv{"--db", db};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
}

} // namespace

const char* certfsctl_path() { return CERTFSCTL_PATH; }

void check_no_key_material(const RunResult& r)
{
    // Each stream on its own, so that the failure names the one that leaked.
    CHECK_THAT(r.out, !Catch::Contains("PRIVATE KEY"));
    CHECK_THAT(r.err, !Catch::Contains("PRIVATE KEY"));
}

RunResult run_certfsctl(const std::vector<std::string>& args, const std::vector<std::string>& env)
{
    std::vector<std::string> argv{CERTFSCTL_PATH};
    argv.insert(argv.end(), args.begin(), args.end());
    RunResult r = run(argv, env, 120);
    INFO(join(argv) << "\nstdout: " << r.out << "\nstderr: " << r.err);
    check_no_key_material(r);
    check_no_sanitizer_report(r.err, "certfsctl");
    CHECK(r.exit_code != -1);
    return r;
}

void expect_failure(const RunResult& r, int code, const std::string& needle)
{
    INFO("stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.exit_code == code);
    CHECK_THAT(r.err, Catch::StartsWith("certfsctl: ") && Catch::Contains(needle));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK((!r.err.empty() && r.err.back() == '\n'));
}

Ctl::Ctl()
{
    m_dir.emplace();
    m_db = m_dir->path() / "certfs.db";
}

Ctl::Ctl(std::filesystem::path db) : m_db(std::move(db)) {}

RunResult Ctl::operator()(const std::vector<std::string>& args) const { return run_certfsctl(with_db(db(), args)); }

RunResult Ctl::unchecked(const std::vector<std::string>& args) const
{
    std::vector<std::string> argv = with_db(db(), args);
    argv.insert(argv.begin(), CERTFSCTL_PATH);
    return run(argv, {}, 120);
}

RunResult Ctl::ok(const std::vector<std::string>& args) const
{
    RunResult r = (*this)(args);
    INFO("certfsctl " << join(args) << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.exit_code == 0);
    return r;
}

nlohmann::json Ctl::js(std::vector<std::string> args) const
{
    args.push_back("--json");
    RunResult r = ok(args);
    INFO("certfsctl " << join(args) << "\nstdout:\n" << r.out);
    // --json prints JSON and nothing else on stdout: no log line before it.
    auto j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE_FALSE(j.is_discarded());
    return j;
}

std::string Ctl::snapshot() const
{
    return ok({"list", "--json"}).out + ok({"issuer", "list", "--json"}).out +
           ok({"log", "--limit", "100000", "--json"}).out;
}

void Ctl::init_with_ca() const
{
    ok({"init"});
    ok({"issuer", "add", "local", "ca"});
}

std::filesystem::path Ctl::export_to(const std::string& name, const std::string& dir_name, std::optional<int> gen) const
{
    std::vector<std::string> args{"export", name, path(dir_name).string()};
    if (gen) {
        args.push_back("--gen");
        args.push_back(std::to_string(*gen));
    }
    ok(args);
    return path(dir_name);
}

} // namespace certfs::test
