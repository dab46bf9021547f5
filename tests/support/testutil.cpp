#include "tests/support/testutil.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "core/handles.hpp"
#include "core/pki.hpp"
#include "core/process.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <vector>

namespace certfs::test {

TempDir::TempDir()
{
    const char* base = std::getenv("TMPDIR");
    std::string templ = std::string(base != nullptr ? base : "/tmp") + "/certfs-test-XXXXXX";
    if (mkdtemp(templ.data()) == nullptr) {
        throw std::runtime_error("mkdtemp failed");
    }
    m_path = templ;
}

TempDir::~TempDir()
{
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
}

std::optional<std::string> slurp(const std::filesystem::path& path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return std::nullopt;
    }
    std::string out;
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) {
        out.append(buf, static_cast<std::size_t>(n));
    }
    const int saved = errno;
    ::close(fd);
    if (n < 0) {
        errno = saved; // the read's error, for the caller's message
        return std::nullopt;
    }
    return out;
}

std::string read_file(const std::filesystem::path& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read " + path.string());
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string join(const std::vector<std::string>& words)
{
    std::string out;
    for (const auto& w : words) {
        out += (out.empty() ? "" : " ") + w;
    }
    return out;
}

void check_no_sanitizer_report(const std::string& output, const std::string& what)
{
    // The first line of each report: ASan's and LSan's "==PID==ERROR: ...Sanitizer: ...", UBSan's
    // "FILE:LINE:COL: runtime error: ...".
    // TSan's "WARNING: ThreadSanitizer: data race" and the like (scripts/test-tsan.sh).
    for (const char* marker :
         {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer", ": runtime error: ", "WARNING: ThreadSanitizer"}) {
        INFO(what << " printed:\n" << output);
        CHECK_THAT(output, !Catch::Contains(marker));
    }
}

DetachedSanitizerLogs::DetachedSanitizerLogs(const std::filesystem::path& dir) : m_prefix(dir / "sanitizer")
{
    for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"}) {
        const char* given = std::getenv(name);
        std::string value = given != nullptr ? given : "";
        m_env.push_back(std::string(name) + "=" + value + (value.empty() ? "" : ":") + "log_path=" + m_prefix.string());
    }
}

void DetachedSanitizerLogs::check(const std::string& what) const
{
    for (const auto& e : std::filesystem::directory_iterator(m_prefix.parent_path())) {
        const std::string name = e.path().filename().string();
        if (name.rfind(m_prefix.filename().string() + ".", 0) == 0) {
            check_no_sanitizer_report(read_file(e.path()), what + " (" + name + ")");
        }
    }
}

std::optional<pid_t> find_process(const std::vector<std::string>& parts)
{
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        const std::string pid = e.path().filename().string();
        if (pid.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::ifstream in(e.path() / "cmdline");
        std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
        if (!cmdline.empty() && std::all_of(parts.begin(), parts.end(), [&](const std::string& part) {
                return cmdline.find(part) != std::string::npos;
            })) {
            return static_cast<pid_t>(std::stol(pid));
        }
    }
    return std::nullopt;
}

bool wait_process_gone(pid_t pid, Duration timeout)
{
    return wait_until(
        [&] {
            std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
            std::string line;
            if (!std::getline(stat, line)) {
                return true; // reaped
            }
            const auto paren = line.rfind(')');
            return paren != std::string::npos && line.size() > paren + 2 && line[paren + 2] == 'Z';
        },
        timeout);
}

sockaddr_in loopback_address(int port)
{
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return addr;
}

int free_port()
{
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_in addr = loopback_address(0);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    return ntohs(addr.sin_port);
}

long env_number(const char* name, long fallback)
{
    const char* v = std::getenv(name);
    return v != nullptr && std::atol(v) > 0 ? std::atol(v) : fallback;
}

std::string file_or_empty(const std::filesystem::path& path)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string pem_der(const std::string& pem)
{
    std::string body;
    std::istringstream in(pem);
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("-----", 0) != 0) {
            body += line;
        }
    }
    std::replace(body.begin(), body.end(), '+', '-');
    std::replace(body.begin(), body.end(), '/', '_');
    return pki::base64url_decode(body).value();
}

std::string store_files(const std::string& db)
{
    std::string all;
    for (const char* suffix : {"", "-wal", "-shm"}) {
        all += file_or_empty(db + suffix);
    }
    return all;
}

std::string private_number(const std::string& pem)
{
    PKey key = pki::parse_private_key(pem).value();
    BIGNUM* bn = nullptr;
    if (EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_PRIV_KEY, &bn) != 1 &&
        EVP_PKEY_get_bn_param(key.get(), OSSL_PKEY_PARAM_RSA_D, &bn) != 1) {
        throw std::runtime_error("no private number in the key");
    }
    std::string out(static_cast<std::size_t>(BN_num_bytes(bn)), '\0');
    BN_bn2bin(bn, reinterpret_cast<unsigned char*>(out.data()));
    BN_clear_free(bn);
    return out;
}

std::string key_in_store_files(const std::string& db, const std::string& pem)
{
    const std::string files = store_files(db);
    if (files.find(pem_der(pem)) != std::string::npos) {
        return "its DER";
    }
    // The secret itself, in any encoding that keeps its bytes.
    if (files.find(private_number(pem)) != std::string::npos) {
        return "its private number";
    }
    // Each line of the PEM's body but the last (which may be short), as text.
    std::istringstream in(pem);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
        lines.push_back(line);
    }
    for (std::size_t i = 1; i + 2 < lines.size(); ++i) {
        if (files.find(lines[i]) != std::string::npos) {
            return "line " + std::to_string(i) + " of its PEM";
        }
    }
    return "";
}

void write_file(const std::filesystem::path& path, const std::string& content)
{
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
}

RunResult run(const std::vector<std::string>& argv, const std::vector<std::string>& env, int timeout_s)
{
    RunOptions options;
    options.env = env;
    options.timeout = std::chrono::seconds(timeout_s);
    options.max_output = 64 * 1024 * 1024;
    auto r = run_program(argv, options);
    if (!r.ok()) {
        throw std::runtime_error(r.status().message());
    }
    return RunResult{r->exit_code, std::move(r->output), std::move(r->errors)};
}

TestCa::TestCa(const std::string& subject, TimePoint now)
{
    key = pki::generate_key(pki::KeyType::ec_p256).value();
    pki::CaParams params{subject, now - std::chrono::hours(24), now + std::chrono::days(3650),
                         pki::random_serial_hex().value()};
    cert = pki::make_ca_cert(*key, params).value();
    cert_pem = pki::cert_pem(*cert);
}

TestLeaf make_leaf(const TestCa& ca, const pki::Names& names, TimePoint not_before, TimePoint not_after,
                   const std::string& serial_hex, const EVP_PKEY* key)
{
    PKey fresh;
    if (key == nullptr) {
        fresh = pki::generate_key(pki::KeyType::ec_p256).value();
        key = fresh.get();
    }
    std::string serial = serial_hex.empty() ? pki::random_serial_hex().value() : serial_hex;
    pki::LeafParams params{names, not_before, not_after, serial};
    Cert leaf = pki::sign_leaf(*key, *ca.cert, *ca.key, params).value();
    return {pki::private_key_pem(*key).value(), pki::cert_pem(*leaf), serial};
}

TestLeaf make_leaf(const TestCa& ca, const pki::Names& names)
{
    auto now = std::chrono::system_clock::now();
    return make_leaf(ca, names, now - std::chrono::hours(1), now + std::chrono::days(90));
}

} // namespace certfs::test
