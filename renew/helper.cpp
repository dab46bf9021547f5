#include "renew/helper.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <thread>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "core/process.hpp"

namespace certfs::renew {

namespace {

// certmonger's exit statuses (doc/submit.txt).
constexpr int k_issued = 0;
constexpr int k_wait = 1;
constexpr int k_rejected = 2;
constexpr int k_unreachable = 3;
constexpr int k_underconfigured = 4;
constexpr int k_wait_with_delay = 5;
constexpr int k_unsupported = 6;
constexpr int k_need_scep = 16;
constexpr int k_need_rekey = 17;

std::string_view trim(std::string_view s)
{
    auto begin = s.find_first_not_of(" \t\r\n");
    if (begin == std::string_view::npos) {
        return {};
    }
    auto end = s.find_last_not_of(" \t\r\n");
    return s.substr(begin, end - begin + 1);
}

// The first non-blank line, for messages. A line that looks like key material is never
// repeated: the message goes to logs and `certfsctl list`.
std::string first_line(std::string_view text)
{
    std::size_t pos = 0;
    while (pos < text.size()) {
        auto end = text.find('\n', pos);
        auto line = trim(text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
        if (!line.empty()) {
            if (line.find("PRIVATE KEY") != std::string_view::npos) {
                return {};
            }
            return std::string(line);
        }
        if (end == std::string_view::npos) {
            break;
        }
        pos = end + 1;
    }
    return {};
}

// The helper's own words: its stdout, as the protocol says, or stderr when stdout is empty.
std::string helper_message(const RunResult& r)
{
    std::string line = first_line(r.output);
    return line.empty() ? first_line(r.errors) : line;
}

// "exit status 17 (...)", "timed out after 5m", with what certmonger's statuses mean.
std::string describe(const RunResult& r, Duration timeout)
{
    std::string text = r.describe(timeout);
    if (r.timed_out || r.signal != 0) {
        return text;
    }
    switch (r.exit_code) {
    case k_unsupported:
        return text + " (operation not supported by the helper)";
    case k_need_scep:
        return text + " (the helper wants SCEP data, which certfs does not provide)";
    case k_need_rekey:
        return text + " (the CA wants a new key: turn off --reuse-key)";
    default:
        return text;
    }
}

std::string with_message(std::string text, const RunResult& r)
{
    std::string message = helper_message(r);
    return message.empty() ? text : text + ": " + message;
}

Result<std::vector<std::string>> split_helper_command(const std::string& command)
{
    auto argv = split_command(command);
    if (!argv.ok()) {
        // split_command quotes the whole command; keep the message one line.
        std::string message = argv.status().message();
        std::replace(message.begin(), message.end(), '\n', ' ');
        return Status::Invalid(message);
    }
    return argv;
}

// A bare program name is looked up in the helper's PATH, not in certfs's own: posix_spawnp
// would search the caller's.
Result<std::vector<std::string>> resolve_program(std::vector<std::string> argv)
{
    if (argv.front().find('/') != std::string::npos) {
        return argv;
    }
    std::string_view path = std::string_view(k_helper_path).substr(std::string_view("PATH=").size());
    for (std::string_view dirs = path; !dirs.empty();) {
        auto colon = dirs.find(':');
        std::string candidate = std::string(dirs.substr(0, colon)) + "/" + argv.front();
        if (::access(candidate.c_str(), X_OK) == 0) {
            argv.front() = candidate;
            return argv;
        }
        dirs = colon == std::string_view::npos ? std::string_view() : dirs.substr(colon + 1);
    }
    return Status::NotFound("cannot run " + argv.front() + ": not found in " + std::string(path));
}

Result<RunResult> run_helper(const std::vector<std::string>& argv, std::vector<std::string> env, Duration timeout)
{
    RunOptions options;
    options.inherit_env = false;
    options.env = std::move(env);
    options.env.emplace_back(k_helper_path);
    options.timeout = timeout;
    ASSIGN_OR_RETURN(auto resolved, resolve_program(argv));
    return run_program(resolved, options);
}

Result<RunResult> run_operation(const HelperConfig& config, std::string_view ca_name, std::string_view operation)
{
    ASSIGN_OR_RETURN(auto argv, split_helper_command(config.command));
    std::vector<std::string> env{"CERTMONGER_OPERATION=" + std::string(operation),
                                 "CERTMONGER_CA_NICKNAME=" + std::string(ca_name)};
    return run_helper(argv, std::move(env), config.timeout);
}

struct Candidate {
    std::vector<Cert> cert; // exactly one: the form verify_chain takes
    std::string pem;
    bool used = false;
};

// The chain of leaf from pool: its issuer, that one's issuer, ... up to a self-signed root.
// Links are checked as the store will (names and signatures), so a CA that rolled over to a
// new key under the same name still links. When nothing in the pool issued the leaf, the
// whole pool is returned so that validation names the link that fails.
Result<std::string> link_chain(const X509& leaf, const std::vector<HelperCert>& pool)
{
    if (pki::verify_chain(leaf, {}).ok()) {
        return std::string(); // self-signed: no chain needed
    }
    std::vector<Candidate> candidates;
    std::string everything;
    for (const auto& c : pool) {
        ASSIGN_OR_RETURN(Cert cert, pki::parse_cert(c.pem));
        Candidate candidate;
        candidate.cert.push_back(std::move(cert));
        candidate.pem = c.pem;
        candidates.push_back(std::move(candidate));
        everything += c.pem;
    }
    std::string chain;
    const X509* current = &leaf;
    for (;;) {
        auto it = std::find_if(candidates.begin(), candidates.end(),
                               [&](const Candidate& c) { return !c.used && pki::verify_chain(*current, c.cert).ok(); });
        if (it == candidates.end()) {
            break;
        }
        it->used = true;
        chain += it->pem;
        current = it->cert.front().get();
        if (pki::verify_chain(*current, {}).ok()) {
            break; // a root
        }
    }
    return chain.empty() ? everything : chain;
}

} // namespace

std::string helper_config_json(const HelperConfig& config)
{
    nlohmann::json j = {
        {"command", config.command},
        {"timeout_ms", config.timeout.count()},
        {"poll_interval_ms", config.poll_interval.count()},
        {"max_wait_ms", config.max_wait.count()},
        {"profile", config.profile},
    };
    return j.dump();
}

Result<HelperConfig> parse_helper_config(const std::string& json)
{
    auto j = nlohmann::json::parse(json, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
        return Status::Corrupt("helper settings are not valid JSON");
    }
    HelperConfig config;
    // A duration is a whole number of milliseconds: nlohmann would cast a float (3.0e63)
    // to an integer, which is undefined beyond the integer's range.
    for (const char* name : {"timeout_ms", "poll_interval_ms", "max_wait_ms"}) {
        if (j.contains(name) && !j[name].is_number_integer()) {
            return Status::Corrupt(std::string("helper settings: ") + name + " is not a whole number of milliseconds");
        }
    }
    try {
        config.command = j.value("command", "");
        config.timeout = Duration(j.value("timeout_ms", config.timeout.count()));
        config.poll_interval = Duration(j.value("poll_interval_ms", config.poll_interval.count()));
        config.max_wait = Duration(j.value("max_wait_ms", config.max_wait.count()));
        config.profile = j.value("profile", "");
    } catch (const nlohmann::json::exception&) {
        return Status::Corrupt("helper settings have a value of the wrong type");
    }
    if (config.command.empty()) {
        return Status::Corrupt("helper settings name no command");
    }
    if (config.timeout <= Duration::zero() || config.poll_interval <= Duration::zero() ||
        config.max_wait < Duration::zero()) {
        return Status::Corrupt("helper settings have a negative or zero duration");
    }
    return config;
}

Result<HelperWait> parse_helper_wait(std::string_view output)
{
    // Like certmonger, the number must end the first line.
    auto newline = output.find('\n');
    auto number = trim(output.substr(0, newline));
    long long seconds = -1;
    auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), seconds);
    if (number.empty() || ec != std::errc() || end != number.data() + number.size() || seconds < 0) {
        return Status::Invalid("the CA helper asked to wait (exit status 5) without a delay in seconds on its "
                               "first line");
    }
    auto capped =
        std::min<long long>(seconds, std::chrono::duration_cast<std::chrono::seconds>(k_helper_max_delay).count());
    HelperWait wait;
    wait.delay = std::max(Duration(std::chrono::seconds(capped)), k_helper_min_delay);
    wait.cookie = newline == std::string_view::npos ? std::string() : std::string(trim(output.substr(newline + 1)));
    return wait;
}

Result<std::vector<HelperCert>> parse_helper_certs(std::string_view output)
{
    constexpr std::string_view k_begin = "-----BEGIN ";
    constexpr std::string_view k_begin_cert = "-----BEGIN CERTIFICATE-----";
    constexpr std::string_view k_end = "-----END ";
    std::vector<HelperCert> certs;
    std::string nickname;
    std::string block;
    bool in_block = false;
    bool after_cert = false; // only blank lines since the last certificate
    int list = 0;
    std::size_t pos = 0;
    while (pos < output.size()) {
        auto end = output.find('\n', pos);
        auto raw = output.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
        pos = end == std::string_view::npos ? output.size() : end + 1;
        auto line = trim(raw);
        if (in_block) {
            block.append(line).push_back('\n');
            if (line.starts_with(k_end)) {
                in_block = false;
                auto cert = pki::parse_cert(block);
                if (!cert.ok()) {
                    return cert.status().with_context("certificate " + std::to_string(certs.size() + 1));
                }
                certs.push_back({nickname, pki::cert_pem(**cert), static_cast<HelperCert::List>(list)});
                nickname.clear();
                after_cert = true;
            }
            continue;
        }
        if (line.starts_with(k_begin)) {
            if (line != k_begin_cert) {
                return Status::Invalid("expected certificates, found a " + std::string(line) + " block");
            }
            in_block = true;
            block.assign(line).push_back('\n');
            continue;
        }
        if (line.empty()) {
            if (after_cert && list < static_cast<int>(HelperCert::List::others)) {
                ++list; // each blank line after a certificate ends a list
            }
            continue;
        }
        nickname = line;
        after_cert = false;
    }
    if (in_block) {
        return Status::Invalid("certificate " + std::to_string(certs.size() + 1) + " has no END line");
    }
    return certs;
}

Result<std::string> helper_identify(const HelperConfig& config, std::string_view ca_name)
{
    ASSIGN_OR_RETURN(RunResult r, run_operation(config, ca_name, "IDENTIFY"));
    if (!r.succeeded()) {
        return Status::IoError(with_message(describe(r, config.timeout), r));
    }
    return first_line(r.output);
}

Result<std::vector<HelperCert>> helper_fetch_roots(const HelperConfig& config, std::string_view ca_name)
{
    ASSIGN_OR_RETURN(RunResult r, run_operation(config, ca_name, "FETCH-ROOTS"));
    if (!r.succeeded()) {
        return Status::IoError(with_message(describe(r, config.timeout), r));
    }
    auto certs = parse_helper_certs(r.output);
    if (!certs.ok()) {
        return certs.status().with_context("FETCH-ROOTS output");
    }
    return certs;
}

Result<NewHelperIssuer> create_helper_issuer(std::string_view name, const HelperConfig& config)
{
    TRY(split_helper_command(config.command));
    NewHelperIssuer out;
    out.issuer = store::NewIssuer{std::string(name), "helper", helper_config_json(config), "", ""};
    auto roots = helper_fetch_roots(config, name);
    if (!roots.ok()) {
        if (roots.status().code() == Code::not_found) {
            return roots.status(); // the program is missing: refuse rather than store a dead issuer
        }
        out.roots_status = roots.status();
        return out;
    }
    for (const auto& c : *roots) {
        if (c.list != HelperCert::List::others) {
            out.issuer.cert_pem += c.pem;
            ++out.roots;
        }
    }
    if (out.roots == 0) {
        out.roots_status = Status::NotFound("printed no root certificate");
    }
    return out;
}

HelperIssuer::HelperIssuer(store::Store& store, std::string name, HelperConfig config, std::vector<std::string> argv,
                           std::string stored_roots_pem)
    : m_store(store), m_name(std::move(name)), m_config(std::move(config)), m_argv(std::move(argv)),
      m_stored_roots_pem(std::move(stored_roots_pem)), m_sleep([](Duration d) { std::this_thread::sleep_for(d); })
{
}

Result<std::unique_ptr<HelperIssuer>> HelperIssuer::load(store::Store& store, const store::Issuer& issuer)
{
    auto context = "issuer " + issuer.name;
    auto config = parse_helper_config(issuer.config_json);
    if (!config.ok()) {
        return config.status().with_context(context);
    }
    auto argv = split_helper_command(config->command);
    if (!argv.ok()) {
        return Status::Corrupt(context + ": the stored command is unusable: " + argv.status().message());
    }
    return std::unique_ptr<HelperIssuer>(
        new HelperIssuer(store, issuer.name, std::move(*config), std::move(argv).value(), issuer.cert_pem));
}

Result<std::vector<std::string>> HelperIssuer::request_env(const IssueRequest& request)
{
    auto join = [](const std::vector<std::string>& items) {
        std::string out;
        for (const auto& item : items) {
            out += (out.empty() ? "" : "\n") + item;
        }
        return out;
    };
    std::vector<std::string> env{"CERTMONGER_CA_NICKNAME=" + m_name, "CERTMONGER_CSR=" + request.csr_pem};
    // The subject make_csr() writes: CN = the first DNS name, when it fits.
    if (!request.names.dns.empty() && request.names.dns.front().size() <= 64) {
        env.push_back("CERTMONGER_REQ_SUBJECT=CN=" + request.names.dns.front());
    }
    if (!request.names.dns.empty()) {
        env.push_back("CERTMONGER_REQ_HOSTNAME=" + join(request.names.dns));
    }
    if (!request.names.ip.empty()) {
        env.push_back("CERTMONGER_REQ_IP_ADDRESS=" + join(request.names.ip));
    }
    ASSIGN_OR_RETURN(CertReq csr, pki::parse_csr(request.csr_pem));
    ASSIGN_OR_RETURN(PKey key, pki::csr_public_key(*csr));
    if (pki::is_rsa(*key)) {
        env.emplace_back("CERTMONGER_KEY_TYPE=RSA");
    } else if (auto type = pki::key_type_of(*key);
               type.ok() && (*type == pki::KeyType::ec_p256 || *type == pki::KeyType::ec_p384)) {
        env.emplace_back("CERTMONGER_KEY_TYPE=EC");
    }
    // The certificate being renewed: the generation this renewal started from.
    if (request.domain != nullptr && request.domain->current_gen) {
        auto current = m_store.get_generation(request.domain->name, *request.domain->current_gen);
        if (current.ok()) {
            env.push_back("CERTMONGER_CERTIFICATE=" + current->cert_pem);
        }
    }
    if (!m_config.profile.empty()) {
        env.push_back("CERTMONGER_CA_PROFILE=" + m_config.profile);
    }
    return env;
}

Result<Issued> HelperIssuer::issue(const IssueRequest& request) { return exchange(request, ""); }

Result<Issued> HelperIssuer::poll(const IssueRequest& request, const std::string& cookie)
{
    return exchange(request, cookie);
}

Result<Issued> HelperIssuer::exchange(const IssueRequest& request, std::string cookie)
{
    ASSIGN_OR_RETURN(std::vector<std::string> base_env, request_env(request));
    Duration waited{0};
    for (;;) {
        auto env = base_env;
        if (cookie.empty()) {
            env.emplace_back("CERTMONGER_OPERATION=SUBMIT");
        } else {
            env.emplace_back("CERTMONGER_OPERATION=POLL");
            env.push_back("CERTMONGER_CA_COOKIE=" + cookie);
        }
        ASSIGN_OR_RETURN(RunResult r, run_helper(m_argv, std::move(env), m_config.timeout));
        Duration delay = m_config.poll_interval;
        if (r.timed_out || r.signal != 0) {
            return Status::IoError("the CA helper failed: " + describe(r, m_config.timeout));
        }
        switch (r.exit_code) {
        case k_issued:
            return complete(r.output);
        case k_wait:
            cookie = std::string(trim(r.output));
            break;
        case k_wait_with_delay: {
            auto wait = parse_helper_wait(r.output);
            if (!wait.ok()) {
                return Status::IoError(wait.status().message());
            }
            delay = wait->delay;
            cookie = std::move(wait->cookie);
            break;
        }
        case k_rejected: {
            std::string reason = helper_message(r);
            return Status::Invalid("CA rejected the request: " + (reason.empty() ? "no reason given" : reason));
        }
        case k_unreachable:
            return Status::Unavailable(with_message("CA unreachable (helper exit status 3)", r));
        case k_underconfigured:
            return Status::Corrupt(with_message("the CA helper needs more configuration (exit status 4)", r));
        default:
            return Status::IoError(with_message("the CA helper failed: " + describe(r, m_config.timeout), r));
        }
        Duration remaining = m_config.max_wait - waited;
        if (remaining <= Duration::zero()) {
            // Long enough in this process: the renewal keeps the request in the store.
            spdlog::info("issuer {}: the request is pending at the CA; keeping it, to poll in {}", m_name,
                         format_duration(delay));
            Issued later;
            later.pending = PendingAtCa{cookie, delay};
            return later;
        }
        delay = std::min(delay, remaining);
        spdlog::info("issuer {}: the request is pending at the CA; polling in {}", m_name, format_duration(delay));
        m_sleep(delay);
        waited += delay;
    }
}

Result<Issued> HelperIssuer::complete(const std::string& output)
{
    auto certs = parse_helper_certs(output);
    if (!certs.ok()) {
        return Status::IoError("the CA helper's certificate is unreadable: " + certs.status().message());
    }
    if (certs->empty()) {
        return Status::IoError("the CA helper exited with status 0 but printed no certificate");
    }
    Issued issued;
    issued.cert_pem = certs->front().pem;
    if (certs->size() > 1) {
        for (std::size_t i = 1; i < certs->size(); ++i) {
            issued.chain_pem += (*certs)[i].pem;
        }
        return issued;
    }
    // The certificate alone: its chain comes from the CA's roots.
    ASSIGN_OR_RETURN(Cert leaf, pki::parse_cert(issued.cert_pem));
    if (pki::verify_chain(*leaf, {}).ok()) {
        return issued;
    }
    auto pool = helper_fetch_roots(m_config, m_name);
    Status fetch_status = pool.ok() ? Status::Ok() : pool.status();
    std::vector<HelperCert> roots = pool.ok() ? std::move(pool).value() : std::vector<HelperCert>{};
    if (roots.empty() && !m_stored_roots_pem.empty()) {
        auto stored = parse_helper_certs(m_stored_roots_pem);
        if (stored.ok()) {
            roots = std::move(stored).value();
        }
    }
    if (roots.empty()) {
        return Status::IoError("the CA helper printed the certificate without its chain, and there are no roots to "
                               "complete it (FETCH-ROOTS: " +
                               (fetch_status.ok() ? std::string("no certificates") : fetch_status.message()) + ")");
    }
    ASSIGN_OR_RETURN(issued.chain_pem, link_chain(*leaf, roots));
    return issued;
}

} // namespace certfs::renew
