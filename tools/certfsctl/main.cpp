// certfsctl: the admin tool. Argument parsing and output only; the work is in store/,
// renew/ and fs/. Exit status: 0 success, 1 failure (or `check` found problems), 2 usage.
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "fs/export.hpp"
#include "core/process.hpp"
#include "renew/acme_issuer.hpp"
#include "renew/context.hpp"
#include "renew/deploy.hpp"
#include "renew/health.hpp"
#include "renew/helper.hpp"
#include "renew/local_ca.hpp"
#include "renew/renewer.hpp"
#include "store/store.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {
namespace {

constexpr int k_exit_ok = 0;
constexpr int k_exit_failure = 1;
constexpr int k_exit_usage = 2;

int fail(const Status& status)
{
    std::cerr << "certfsctl: " << status.message() << '\n';
    return k_exit_failure;
}

std::string actor()
{
    return "certfsctl uid=" + std::to_string(::getuid());
}

Result<std::unique_ptr<store::Store>> open_store(const std::string& path)
{
    return store::Store::open(path, {.create = false, .actor = actor(), .clock = nullptr});
}

Result<std::string> read_input_file(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return Status::NotFound("cannot read " + path + ": " + std::strerror(errno));
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Argument checks that CLI11 runs while parsing, so that a malformed value is a usage error.
std::string check_duration(const std::string& text)
{
    auto d = parse_duration(text);
    return d.ok() ? "" : d.status().message();
}

std::string check_key_type(const std::string& text)
{
    auto t = pki::parse_key_type(text);
    return t.ok() ? "" : t.status().message();
}

std::string check_command(const std::string& text)
{
    auto words = split_command(text);
    if (words.ok()) {
        return "";
    }
    std::string message = words.status().message();
    std::replace(message.begin(), message.end(), '\n', ' ');
    return message;
}

Result<std::uint32_t> parse_mode(const std::string& text)
{
    if (text.empty() || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos) {
        return Status::Invalid("invalid mode '" + text + "': give octal permission bits such as 0640");
    }
    return static_cast<std::uint32_t>(std::stoul(text, nullptr, 8));
}

std::string check_mode(const std::string& text)
{
    auto m = parse_mode(text);
    return m.ok() ? "" : m.status().message();
}

Result<std::uint32_t> resolve_user(const std::string& name)
{
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
        return static_cast<std::uint32_t>(std::stoul(name));
    }
    passwd pw{};
    passwd* found = nullptr;
    char buf[4096];
    if (getpwnam_r(name.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
        return Status::Invalid("unknown user '" + name + "'");
    }
    return found->pw_uid;
}

Result<std::uint32_t> resolve_group(const std::string& name)
{
    if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos) {
        return static_cast<std::uint32_t>(std::stoul(name));
    }
    group gr{};
    group* found = nullptr;
    char buf[4096];
    if (getgrnam_r(name.c_str(), &gr, buf, sizeof buf, &found) != 0 || found == nullptr) {
        return Status::Invalid("unknown group '" + name + "'");
    }
    return found->gr_gid;
}

std::string join(const std::vector<std::string>& items, const char* sep = ", ")
{
    std::string out;
    for (const auto& item : items) {
        out += (out.empty() ? "" : sep) + item;
    }
    return out.empty() ? "-" : out;
}

void print_json(const nlohmann::json& j)
{
    std::cout << j.dump(2) << '\n';
}

// ---- commands ------------------------------------------------------------------------------

int cmd_init(const std::string& db_path)
{
    std::error_code ec;
    auto dir = std::filesystem::absolute(db_path).parent_path();
    if (!std::filesystem::exists(dir, ec)) {
        std::filesystem::create_directories(dir, ec);
        if (ec) {
            return fail(Status::IoError("cannot create " + dir.string() + ": " + ec.message()));
        }
        ::chmod(dir.c_str(), 0700);
    }
    auto store = store::Store::open(db_path, {.create = true, .actor = actor(), .clock = nullptr});
    if (!store.ok()) {
        return fail(store.status());
    }
    std::cout << "store ready: " << db_path << " (schema version " << store::k_schema_version << ")\n";
    return k_exit_ok;
}

struct IssuerAddArgs {
    std::string name;
    std::string key_type = "ec-p256";
    std::string validity = "90d";
    std::string ca_validity = "10y";
    std::string subject;
};

int cmd_issuer_add_local(store::Store& st, const IssuerAddArgs& args)
{
    renew::LocalCaConfig config;
    config.key_type = pki::parse_key_type(args.key_type).value();
    config.validity = parse_duration(args.validity).value();
    config.ca_validity = parse_duration(args.ca_validity).value();
    config.subject = args.subject;
    if (config.validity >= config.ca_validity) {
        return fail(Status::Invalid("leaf validity (" + args.validity + ") must be shorter than the CA's (" +
                                    args.ca_validity + ")"));
    }
    if (st.get_issuer(args.name).ok()) {
        return fail(Status::Conflict("issuer " + args.name + " already exists"));
    }
    auto issuer = renew::create_local_ca(args.name, config, st.clock().now());
    if (!issuer.ok()) {
        return fail(issuer.status());
    }
    if (Status s = st.add_issuer(*issuer); !s.ok()) {
        return fail(s);
    }
    std::cout << "added local CA issuer " << args.name << '\n';
    return k_exit_ok;
}

struct HelperAddArgs {
    std::string name;
    std::string command;
    std::string timeout = "5m";
    std::string poll_interval = "60s";
    std::string max_wait = "5m";
    std::string profile;
};

int cmd_issuer_add_helper(store::Store& st, const HelperAddArgs& args)
{
    renew::HelperConfig config;
    config.command = args.command;
    config.timeout = parse_duration(args.timeout).value();
    config.poll_interval = parse_duration(args.poll_interval).value();
    config.max_wait = parse_duration(args.max_wait).value();
    config.profile = args.profile;
    if (st.get_issuer(args.name).ok()) {
        return fail(Status::Conflict("issuer " + args.name + " already exists"));
    }
    auto issuer = renew::create_helper_issuer(args.name, config);
    if (!issuer.ok()) {
        return fail(issuer.status());
    }
    if (Status s = st.add_issuer(issuer->issuer); !s.ok()) {
        return fail(s);
    }
    std::cout << "added helper issuer " << args.name;
    if (issuer->roots > 0) {
        std::cout << " (" << issuer->roots << (issuer->roots == 1 ? " root" : " roots") << " from FETCH-ROOTS)\n";
    } else {
        std::cout << " (no roots stored: FETCH-ROOTS " << issuer->roots_status.message() << ")\n";
    }
    return k_exit_ok;
}

struct AcmeAddArgs {
    std::string name;
    renew::AcmeConfig config;
    std::string account_key_type = "ec-p256";
    std::string eab_hmac_key;
    std::string max_wait = "2m";
};

int cmd_issuer_add_acme(store::Store& st, AcmeAddArgs args)
{
    args.config.account_key_type = pki::parse_key_type(args.account_key_type).value();
    args.config.max_wait = parse_duration(args.max_wait).value();
    if (!args.config.webroot.empty() && args.config.http_listen != ":80") {
        return fail(Status::Invalid("--http-listen and --webroot are two ways to answer http-01: give one"));
    }
    if (st.get_issuer(args.name).ok()) {
        return fail(Status::Conflict("issuer " + args.name + " already exists"));
    }
    auto issuer = renew::create_acme_issuer(args.name, args.config, args.eab_hmac_key);
    if (!issuer.ok()) {
        return fail(issuer.status());
    }
    if (Status s = st.add_issuer(*issuer); !s.ok()) {
        return fail(s);
    }
    std::cout << "added ACME issuer " << args.name << " (" << args.config.directory
              << "; the account is registered at the first renewal)\n";
    return k_exit_ok;
}

// IDENTIFY and FETCH-ROOTS of a helper issuer, as `issuer show` reports them: a helper that
// fails is part of the answer, not a failure of the command.
struct HelperProbe {
    std::string identify;            // first line, or "failed: ..."
    bool identify_ok = false;
    std::vector<std::string> roots;  // subjects of the roots and other trusted roots
    std::string roots_error;         // empty when FETCH-ROOTS succeeded
};

HelperProbe probe_helper(const renew::HelperConfig& config, const std::string& name)
{
    HelperProbe probe;
    auto id = renew::helper_identify(config, name);
    probe.identify_ok = id.ok();
    probe.identify = id.ok() ? *id : "failed: " + id.status().message();
    auto roots = renew::helper_fetch_roots(config, name);
    if (!roots.ok()) {
        probe.roots_error = "failed: " + roots.status().message();
        return probe;
    }
    for (const auto& root : *roots) {
        if (root.list == renew::HelperCert::List::others) {
            continue; // chain certificates, not roots
        }
        auto cert = pki::parse_cert(root.pem);
        auto info = cert.ok() ? pki::cert_info(**cert) : Result<pki::CertInfo>(cert.status());
        probe.roots.push_back(info.ok() ? info->subject : "(unreadable)");
    }
    return probe;
}

int cmd_issuer_list(store::Store& st, bool json)
{
    auto issuers = st.list_issuers();
    if (!issuers.ok()) {
        return fail(issuers.status());
    }
    if (json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& i : *issuers) {
            out.push_back(issuer_json(i));
        }
        print_json(out);
        return k_exit_ok;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& i : *issuers) {
        auto j = issuer_json(i);
        rows.push_back({i.name, i.kind, std::to_string(i.domains), j.value("subject", "-"), j.value("not_after", "-")});
    }
    print_table({"NAME", "KIND", "DOMAINS", "SUBJECT", "NOT AFTER"}, rows);
    return k_exit_ok;
}

int cmd_issuer_show(store::Store& st, const std::string& name, bool json)
{
    auto issuer = st.get_issuer(name);
    if (!issuer.ok()) {
        return fail(issuer.status());
    }
    auto j = issuer_json(*issuer);
    std::optional<renew::HelperConfig> helper;
    std::optional<HelperProbe> probe;
    if (issuer->kind == "helper") {
        if (auto config = renew::parse_helper_config(issuer->config_json); config.ok()) {
            helper = *config;
            probe = probe_helper(*helper, issuer->name);
            j["identify"] = probe->identify_ok ? nlohmann::json(probe->identify) : nlohmann::json(nullptr);
            j["roots"] = probe->roots;
            j["helper_errors"] = nlohmann::json::array();
            if (!probe->identify_ok) {
                j["helper_errors"].push_back("IDENTIFY " + probe->identify);
            }
            if (!probe->roots_error.empty()) {
                j["helper_errors"].push_back("FETCH-ROOTS " + probe->roots_error);
            }
        }
    }
    std::optional<renew::AcmeConfig> acme_config;
    if (issuer->kind == "acme") {
        // The account (registered now if it is not yet) and the directory's metadata.
        if (auto config = renew::parse_acme_config(issuer->config_json); config.ok()) {
            acme_config = *config;
        }
        auto acme = renew::AcmeIssuer::load(st, *issuer);
        auto described = acme.ok() ? (*acme)->describe() : Result<nlohmann::json>(acme.status());
        if (described.ok()) {
            j["account_url"] = (*described)["account_url"];
            j["meta"] = (*described)["meta"];
        } else {
            j["acme_error"] = described.status().message();
        }
    }
    if (json) {
        print_json(j);
        return k_exit_ok;
    }
    std::cout << "name:       " << issuer->name << '\n' << "kind:       " << issuer->kind << '\n';
    if (helper && probe) {
        std::cout << "command:    " << helper->command << '\n'
                  << "timeout:    " << format_duration(helper->timeout) << " per run\n";
        if (!helper->profile.empty()) {
            std::cout << "profile:    " << helper->profile << '\n';
        }
        std::cout << "waiting:    poll every " << format_duration(helper->poll_interval)
                  << " (or as the CA says), for at most " << format_duration(helper->max_wait) << '\n'
                  << "identify:   " << (probe->identify.empty() ? "-" : probe->identify) << '\n';
        if (!probe->roots_error.empty()) {
            std::cout << "roots:      " << probe->roots_error << '\n';
        } else if (probe->roots.empty()) {
            std::cout << "roots:      none\n";
        }
        for (std::size_t i = 0; i < probe->roots.size(); ++i) {
            std::cout << (i == 0 ? "roots:      " : "            ") << probe->roots[i] << '\n';
        }
    }
    if (acme_config) {
        std::cout << "directory:  " << acme_config->directory << '\n'
                  << "account:    " << j.value("account_url", "-") << '\n'
                  << "challenge:  " << acme_config->challenge;
        if (acme_config->challenge == "dns-01") {
            std::cout << " (hook " << acme_config->dns_hook << ")\n";
        } else if (!acme_config->webroot.empty()) {
            std::cout << " (webroot " << acme_config->webroot << ")\n";
        } else {
            std::cout << " (listening on " << acme_config->http_listen << ")\n";
        }
        if (j.contains("acme_error")) {
            std::cout << "error:      " << j["acme_error"].get<std::string>() << '\n';
        }
        if (j.contains("meta")) {
            for (const auto& [key, value] : j["meta"].items()) {
                std::cout << "meta:       " << key << " = " << (value.is_string() ? value.get<std::string>() : value.dump())
                          << '\n';
            }
        }
    }
    if (issuer->kind == "local") {
        auto config = renew::parse_local_ca_config(issuer->config_json);
        if (config.ok()) {
            std::cout << "subject:    " << j.value("subject", "-") << '\n'
                      << "not after:  " << j.value("not_after", "-") << '\n'
                      << "key type:   " << pki::key_type_name(config->key_type) << '\n'
                      << "validity:   " << format_duration(config->validity) << " per certificate\n";
        }
    }
    std::cout << "domains:    " << issuer->domains << '\n'
              << "created at: " << format_rfc3339(issuer->created_at) << '\n';
    return k_exit_ok;
}

int cmd_issuer_cert(store::Store& st, const std::string& name)
{
    auto issuer = st.get_issuer(name);
    if (!issuer.ok()) {
        return fail(issuer.status());
    }
    if (issuer->cert_pem.empty()) {
        return fail(Status::NotFound("issuer " + name + " has no CA certificate"));
    }
    std::cout << issuer->cert_pem;
    return k_exit_ok;
}

int cmd_issuer_remove(store::Store& st, const std::string& name)
{
    if (Status s = st.remove_issuer(name); !s.ok()) {
        return fail(s);
    }
    std::cout << "removed issuer " << name << '\n';
    return k_exit_ok;
}

struct AddArgs {
    std::string name;
    std::string issuer;
    std::vector<std::string> sans;
    std::vector<std::string> ips;
    std::string key_type = "ec-p256";
    bool reuse_key = false;
    std::string renew_before;
    std::string owner = "root";
    std::string group = "root";
    std::string mode = "0600";
    std::vector<std::string> deploy_hooks;
    std::string bundle;
    bool no_issue = false;
};

int cmd_add(store::Store& st, const AddArgs& args)
{
    store::DomainConfig config;
    config.name = args.name;
    config.issuer = args.issuer;
    config.dns_names = args.sans.empty() ? std::vector<std::string>{args.name} : args.sans;
    config.ip_addresses = args.ips;
    config.key_type = pki::parse_key_type(args.key_type).value();
    config.reuse_key = args.reuse_key;
    if (!args.renew_before.empty()) {
        config.renew_before = parse_duration(args.renew_before).value();
    }
    auto uid = resolve_user(args.owner);
    auto gid = resolve_group(args.group);
    if (!uid.ok() || !gid.ok()) {
        return fail(uid.ok() ? gid.status() : uid.status());
    }
    config.owner_uid = *uid;
    config.group_gid = *gid;
    config.mode = parse_mode(args.mode).value();
    config.deploy_hooks = args.deploy_hooks;
    if (!args.bundle.empty()) {
        config.bundle = args.bundle;
    }
    if (args.no_issue) {
        auto added = st.add_domain(config, std::nullopt);
        if (!added.ok()) {
            return fail(added.status());
        }
        std::cout << "added " << args.name << " (no certificate yet: run 'certfsctl renew " << args.name << "')\n";
        return k_exit_ok;
    }
    // Refuse a duplicate before spending a key and a signature on it.
    if (st.get_domain(args.name).ok()) {
        return fail(Status::Conflict("domain " + args.name + " already exists"));
    }
    renew::Renewer renewer(st, "certfsctl pid " + std::to_string(::getpid()));
    auto added = renewer.add_and_issue(config);
    if (!added.ok()) {
        return fail(added.status());
    }
    if (!added->generation) {
        std::cout << "added " << args.name << ": " << added->message << '\n';
        return k_exit_ok;
    }
    auto domain = st.get_domain(args.name);
    std::cout << "added " << args.name << ": generation " << (domain.ok() ? domain->current_gen.value_or(0) : 0)
              << ", expires " << (domain.ok() ? time_or_dash(domain->current_not_after) : "-") << '\n';
    return k_exit_ok;
}

// What --now means, said where it takes effect.
std::string moved_now_note(const std::string& domain, std::int64_t gen)
{
    return domain + ": every reader moves to generation " + std::to_string(gen) +
           " at once (--now); one reading its key and certificate at that moment may pair them wrongly once";
}

int cmd_import(store::Store& st, const std::string& name, const std::string& cert_file, const std::string& key_file,
               const std::string& chain_file, bool now)
{
    store::GenerationInput input;
    for (auto [file, field] : {std::pair{&cert_file, &input.cert_pem}, std::pair{&key_file, &input.key_pem},
                               std::pair{&chain_file, &input.chain_pem}}) {
        if (file->empty()) {
            continue;
        }
        auto text = read_input_file(*file);
        if (!text.ok()) {
            return fail(text.status());
        }
        *field = std::move(*text);
    }
    auto gen = st.import_generation(name, input, now);
    if (!gen.ok()) {
        return fail(gen.status());
    }
    std::cout << "imported " << name << ": generation " << *gen << '\n';
    if (now) {
        std::cout << moved_now_note(name, *gen) << '\n';
    }
    return k_exit_ok;
}

int cmd_list(store::Store& st, bool json)
{
    auto domains = st.list_domains();
    if (!domains.ok()) {
        return fail(domains.status());
    }
    if (json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& d : *domains) {
            out.push_back(domain_json(d));
        }
        print_json(out);
        return k_exit_ok;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& d : *domains) {
        std::string state(store::state_name(renew::shown_state(d, st.clock().now())));
        if ((d.failures > 0 || d.state == store::DomainState::pending) && d.next_attempt) {
            state += " (next " + format_rfc3339(*d.next_attempt) + ")";
        }
        std::string errors = d.last_error;
        if (!d.hook_error.empty()) {
            errors += (errors.empty() ? "" : "; ") + ("deploy hook failed: " + d.hook_error);
        }
        // RENEW AT: when the scheduler renews it, jitter included.
        rows.push_back({d.name, d.current_gen ? std::to_string(*d.current_gen) : "-", state,
                        time_or_dash(d.current_not_after), time_or_dash(renew::due_at(d)), d.issuer.value_or("-"),
                        errors});
    }
    print_table({"NAME", "GEN", "STATE", "NOT AFTER", "RENEW AT", "ISSUER", "LAST ERROR"}, rows);
    return k_exit_ok;
}

int cmd_show(store::Store& st, const std::string& name, bool json)
{
    auto d = st.get_domain(name);
    if (!d.ok()) {
        return fail(d.status());
    }
    std::optional<store::Generation> gen;
    if (d->current_gen) {
        auto g = st.get_generation(name, *d->current_gen);
        if (!g.ok()) {
            return fail(g.status());
        }
        gen = std::move(*g);
    }
    if (json) {
        auto j = domain_json(*d);
        j["current"] = gen ? generation_json(*gen) : nlohmann::json(nullptr);
        print_json(j);
        return k_exit_ok;
    }
    auto line = [](const char* label, const std::string& value) {
        std::cout << label << std::string(15 - std::strlen(label), ' ') << value << '\n';
    };
    line("name:", d->name);
    line("issuer:", d->issuer.value_or("- (imported)"));
    line("dns names:", join(d->dns_names));
    line("ip addresses:", join(d->ip_addresses));
    line("key type:", std::string(pki::key_type_name(d->key_type)) +
                          (d->reuse_key ? " (key reused on renewal)" : " (fresh key on every renewal)"));
    line("renew before:", d->renew_before ? format_duration(*d->renew_before) : "a third of the lifetime");
    line("key files:", user_name(d->owner_uid) + ":" + group_name(d->group_gid) + " " + mode_text(d->mode));
    line("bundle:", d->bundle.value_or("-"));
    line("deploy hooks:", join(d->deploy_hooks, "; "));
    line("state:", std::string(store::state_name(renew::shown_state(*d, st.clock().now()))));
    line("last error:", d->last_error.empty() ? "-" : d->last_error);
    line("hook error:", d->hook_error.empty() ? "-" : d->hook_error);
    line("due at:", time_or_dash(renew::due_at(*d)));
    if (d->ari_gen && d->ari_gen == d->current_gen && d->ari_at) {
        line("ca suggests:", format_rfc3339(*d->ari_at) + " (renewal information; next check " +
                                 time_or_dash(d->ari_next_check) + ")");
    }
    line("next attempt:", time_or_dash(d->next_attempt));
    if (gen) {
        line("generation:", std::to_string(gen->gen) + " (" + std::string(store::reason_name(gen->reason)) + " " +
                                format_rfc3339(gen->created_at) + ")");
        line("serial:", gen->serial_hex);
        line("issued by:", gen->issuer_dn);
        line("not before:", format_rfc3339(gen->not_before));
        line("not after:", format_rfc3339(gen->not_after));
        line("renew at:", time_or_dash(renew::renew_at(*d)));
    } else {
        line("generation:", "- (no certificate yet)");
    }
    return k_exit_ok;
}

int cmd_history(store::Store& st, const std::string& name, bool json)
{
    auto gens = st.history(name);
    if (!gens.ok()) {
        return fail(gens.status());
    }
    if (json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& g : *gens) {
            out.push_back(generation_json(g));
        }
        print_json(out);
        return k_exit_ok;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& g : *gens) {
        rows.push_back({std::to_string(g.gen), g.current ? "*" : "", std::string(store::reason_name(g.reason)),
                        format_rfc3339(g.created_at), format_rfc3339(g.not_before), format_rfc3339(g.not_after),
                        g.serial_hex});
    }
    print_table({"GEN", "CURRENT", "REASON", "CREATED", "NOT BEFORE", "NOT AFTER", "SERIAL"}, rows);
    return k_exit_ok;
}

int cmd_renew(store::Store& st, std::vector<std::string> names, bool all, bool force, bool now, int jobs)
{
    if (all == !names.empty()) {
        std::cerr << "certfsctl: renew takes domain names or --all, not both and not neither\n";
        return k_exit_usage;
    }
    if (all) {
        auto domains = st.list_domains();
        if (!domains.ok()) {
            return fail(domains.status());
        }
        for (const auto& d : *domains) {
            if (d.issuer) {
                names.push_back(d.name);
            }
        }
    }
    // One renewal per bundle, through whichever member comes first, success or not.
    std::vector<std::string> scopes;
    std::set<std::string> covered;
    for (const auto& name : names) {
        if (!covered.insert(name).second) {
            continue;
        }
        scopes.push_back(name);
        if (auto d = st.get_domain(name); d.ok() && d->bundle) {
            if (auto members = st.bundle_members(*d->bundle); members.ok()) {
                for (const auto& member : *members) {
                    covered.insert(member.name);
                }
            }
        }
    }

    // Up to `jobs` renewals at once, each on a connection of its own (like the daemon's
    // workers); each batch's deploy hooks run after its flip, as the daemon runs them.
    struct Done {
        Result<std::vector<renew::RenewOutcome>> outcomes = Status::Unavailable("not run");
        std::vector<renew::HookRun> runs;
    };
    std::vector<Done> done(scopes.size());
    const renew::DeploySettings mount = renew::deploy_settings(st);
    const std::string owner = "certfsctl pid " + std::to_string(::getpid());
    // One context for the workers: an http-01 address is shared, not bound twice.
    const renew::IssuerFactory issuers = renew::builtin_issuers(std::make_shared<renew::RenewContext>());
    std::atomic<std::size_t> next{0};
    auto work = [&] {
        auto own = open_store(st.path());
        for (std::size_t i = next++; i < scopes.size(); i = next++) {
            if (!own.ok()) {
                done[i].outcomes = own.status();
                continue;
            }
            renew::Renewer renewer(**own, owner, issuers);
            done[i].outcomes = renewer.renew(scopes[i], force || now, now);
            if (done[i].outcomes.ok()) {
                done[i].runs = renew::deploy(**own, *done[i].outcomes, mount.hooks,
                                             [&] { std::this_thread::sleep_for(mount.pin_window); });
            }
        }
    };
    std::vector<std::thread> workers;
    for (int j = 1; j < std::min<int>(jobs, static_cast<int>(scopes.size())); ++j) {
        workers.emplace_back(work);
    }
    work();
    for (auto& w : workers) {
        w.join();
    }

    int rc = k_exit_ok;
    for (std::size_t i = 0; i < scopes.size(); ++i) {
        if (!done[i].outcomes.ok()) {
            fail(done[i].outcomes.status().with_context("renew " + scopes[i]));
            rc = k_exit_failure;
            continue;
        }
        for (const auto& o : *done[i].outcomes) {
            std::cout << o.domain << ": " << o.message << '\n';
            if (now && o.generation) {
                std::cout << moved_now_note(o.domain, *o.generation) << '\n';
            } else if (now) {
                std::cout << o.domain << ": nothing moved (--now): no new generation yet; once the CA has issued it, "
                          << "run 'certfsctl renew " << o.domain << " --now' again\n";
            }
        }
        for (const auto& run : done[i].runs) {
            if (run.status.ok()) {
                std::cout << "deploy hook ran: " << run.command << '\n';
            } else {
                std::cerr << "certfsctl: deploy hook failed (the renewal stays committed): " << run.command << ": "
                          << run.status.message() << '\n';
                rc = k_exit_failure;
            }
        }
    }
    return rc;
}

// The ACME issuer named `name`, or why there is none.
Result<std::unique_ptr<renew::AcmeIssuer>> load_acme(store::Store& st, const std::string& name)
{
    ASSIGN_OR_RETURN(store::Issuer issuer, st.get_issuer(name));
    if (issuer.kind != "acme") {
        return Status::Invalid("issuer " + name + " is a " + issuer.kind + " issuer, not an ACME one");
    }
    return renew::AcmeIssuer::load(st, issuer);
}

int cmd_revoke(store::Store& st, const std::string& name, const std::string& reason_name,
               std::optional<std::int64_t> gen_no)
{
    static const std::map<std::string, int> k_reasons = {{"unspecified", 0},
                                                         {"keyCompromise", 1},
                                                         {"affiliationChanged", 3},
                                                         {"superseded", 4},
                                                         {"cessationOfOperation", 5}};
    auto reason = k_reasons.find(reason_name);
    if (reason == k_reasons.end()) {
        return fail(Status::Invalid("--reason must be one of unspecified, keyCompromise, affiliationChanged, "
                                    "superseded, cessationOfOperation, not '" + reason_name + "'"));
    }
    auto d = st.get_domain(name);
    if (!d.ok()) {
        return fail(d.status());
    }
    if (!d->issuer) {
        return fail(Status::Invalid("domain " + name + " has no issuer (its certificates are imported)"));
    }
    auto acme = load_acme(st, *d->issuer);
    if (!acme.ok()) {
        return fail(acme.status());
    }
    auto gen = gen_no ? st.get_generation(name, *gen_no) : st.current_generation(name);
    if (!gen.ok()) {
        return fail(gen.status());
    }
    if (Status s = (*acme)->revoke(gen->cert_pem, reason->second); !s.ok()) {
        return fail(s.with_context("revoke " + name));
    }
    std::cout << name << ": generation " << gen->gen << " (serial " << gen->serial_hex << ") revoked ("
              << reason_name << ")" << (gen->current ? "; run 'certfsctl renew " + name + " --force' to replace it" : "")
              << '\n';
    return k_exit_ok;
}

int cmd_issuer_rekey(store::Store& st, const std::string& name)
{
    auto acme = load_acme(st, name);
    if (!acme.ok()) {
        return fail(acme.status());
    }
    if (Status s = (*acme)->rekey(); !s.ok()) {
        return fail(s.with_context("rekey " + name));
    }
    std::cout << "issuer " << name << ": the ACME account now uses a new key\n";
    return k_exit_ok;
}

int cmd_rollback(store::Store& st, const std::string& name, std::optional<std::int64_t> to, bool now)
{
    auto before = st.get_domain(name);
    if (!before.ok()) {
        return fail(before.status());
    }
    auto gen = st.rollback(name, to, now);
    if (!gen.ok()) {
        return fail(gen.status().with_context("rollback " + name));
    }
    std::cout << name << ": generation " << *gen << " is current again (was " << before->current_gen.value_or(0)
              << ")\n";
    if (now) {
        std::cout << moved_now_note(name, *gen) << '\n';
    }
    return k_exit_ok;
}

int cmd_remove(store::Store& st, const std::string& name)
{
    if (Status s = st.remove_domain(name); !s.ok()) {
        return fail(s);
    }
    std::cout << "removed " << name << '\n';
    return k_exit_ok;
}

int cmd_export(store::Store& st, const std::string& name, const std::string& dir, std::optional<std::int64_t> gen_no)
{
    auto d = st.get_domain(name);
    if (!d.ok()) {
        return fail(d.status());
    }
    auto gen = gen_no ? st.get_generation(name, *gen_no) : st.current_generation(name);
    if (!gen.ok()) {
        return fail(gen.status());
    }
    if (Status s = fs::export_generation(*d, *gen, dir); !s.ok()) {
        return fail(s);
    }
    std::cout << "exported generation " << gen->gen << " of " << name << " to " << dir << '\n';
    return k_exit_ok;
}

int cmd_check(store::Store& st, bool json)
{
    auto problems = renew::check_store(st);
    if (!problems.ok()) {
        return fail(problems.status());
    }
    if (json) {
        print_json({{"ok", problems->empty()}, {"problems", *problems}});
    } else if (problems->empty()) {
        std::cout << "ok: no problems found\n";
    } else {
        for (const auto& p : *problems) {
            std::cout << p << '\n';
        }
    }
    return problems->empty() ? k_exit_ok : k_exit_failure;
}

int cmd_log(store::Store& st, const std::string& name, int limit, bool json)
{
    if (!name.empty()) {
        if (auto d = st.get_domain(name); !d.ok()) {
            return fail(d.status());
        }
    }
    auto events = st.events(name.empty() ? std::nullopt : std::optional<std::string_view>(name), limit);
    if (!events.ok()) {
        return fail(events.status());
    }
    if (json) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& e : *events) {
            out.push_back({{"at", format_rfc3339(e.at)}, {"actor", e.actor}, {"domain", e.domain},
                           {"action", e.action}, {"detail", e.detail}});
        }
        print_json(out);
        return k_exit_ok;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& e : *events) {
        rows.push_back({format_rfc3339(e.at), e.actor, e.domain.empty() ? "-" : e.domain, e.action, e.detail});
    }
    print_table({"AT", "ACTOR", "DOMAIN", "ACTION", "DETAIL"}, rows);
    return k_exit_ok;
}

} // namespace

int main(int argc, char** argv)
{
    // stdout carries command output only (JSON must parse), and stderr one line per error:
    // the libraries' informational logging (an ACME account registered, a hook's output) is
    // not certfsctl's to print, and their errors reach the user as the command's own.
    spdlog::set_default_logger(spdlog::stderr_color_mt("certfsctl"));
    spdlog::set_level(spdlog::level::err);
    CLI::App app{"certfsctl: manage the certfs certificate store"};
    app.set_help_all_flag("--help-all", "Show help for every command");
    app.require_subcommand(1);
    std::string db_path = store::k_default_db_path;
    app.add_option("--db", db_path, "The store (default " + db_path + ")")->envname("CERTFS_DB");

    std::function<int(store::Store&)> action;
    bool needs_init = false;
    auto run = [&](std::function<int(store::Store&)> fn) { action = std::move(fn); };

    auto* init = app.add_subcommand("init", "Create the store (idempotent)");
    init->callback([&] { needs_init = true; });

    // issuer ...
    auto* issuer = app.add_subcommand("issuer", "Manage issuers");
    issuer->require_subcommand(1);
    auto* issuer_add = issuer->add_subcommand("add", "Add an issuer");
    issuer_add->require_subcommand(1);
    auto* add_local = issuer_add->add_subcommand("local", "A local CA whose key lives in the store");
    IssuerAddArgs local_args;
    add_local->add_option("NAME", local_args.name, "Issuer name")->required();
    add_local->add_option("--key-type", local_args.key_type, "CA key type")->check(check_key_type);
    add_local->add_option("--validity", local_args.validity, "Validity of each certificate (default 90d)")
        ->check(check_duration);
    add_local->add_option("--ca-validity", local_args.ca_validity, "Validity of the CA certificate (default 10y)")
        ->check(check_duration);
    add_local->add_option("--subject", local_args.subject, "CA subject, e.g. '/CN=Example CA/O=Example'");
    add_local->callback([&] { run([&](store::Store& st) { return cmd_issuer_add_local(st, local_args); }); });
    auto* add_helper = issuer_add->add_subcommand("helper", "An external program speaking certmonger's CA helper "
                                                            "protocol (docs/helpers.md)");
    HelperAddArgs helper_args;
    add_helper->add_option("NAME", helper_args.name, "Issuer name (CERTMONGER_CA_NICKNAME)")->required();
    add_helper->add_option("--command", helper_args.command, "The helper and its arguments, split like a shell "
                                                             "would but never run by one")
        ->required()
        ->check(check_command);
    add_helper->add_option("--timeout", helper_args.timeout, "Limit on each run of the helper (default 5m)")
        ->check(check_duration);
    add_helper->add_option("--profile", helper_args.profile, "Passed as CERTMONGER_CA_PROFILE");
    add_helper->add_option("--poll-interval", helper_args.poll_interval,
                           "Wait before polling when the CA gives no delay (default 60s)")
        ->check(check_duration);
    add_helper->add_option("--max-wait", helper_args.max_wait,
                           "Wait this long for a pending request, then keep it and poll later (default 5m)")
        ->check(check_duration);
    add_helper->callback([&] { run([&](store::Store& st) { return cmd_issuer_add_helper(st, helper_args); }); });

    auto* add_acme = issuer_add->add_subcommand("acme", "An ACME (RFC 8555) CA such as Let's Encrypt");
    AcmeAddArgs acme_args;
    add_acme->add_option("NAME", acme_args.name, "Issuer name")->required();
    add_acme->add_option("--directory", acme_args.config.directory, "The CA's directory URL")->required();
    add_acme->add_option("--email", acme_args.config.email, "Contact address for the account");
    add_acme->add_option("--ca-bundle", acme_args.config.ca_bundle,
                         "PEM file of CAs to trust for the directory's HTTPS (default: the system's)");
    add_acme->add_option("--eab-kid", acme_args.config.eab_kid, "External account binding key id");
    add_acme->add_option("--eab-hmac-key", acme_args.eab_hmac_key, "External account binding HMAC key (base64url)");
    add_acme->add_option("--account-key-type", acme_args.account_key_type,
                         "Account key type: ec-p256 (default), ec-p384, rsa-2048...")
        ->check(check_key_type);
    add_acme->add_option("--challenge", acme_args.config.challenge, "http-01 (default) or dns-01");
    add_acme->add_option("--http-listen", acme_args.config.http_listen,
                         "Where the built-in http-01 responder listens (default :80)");
    add_acme->add_option("--webroot", acme_args.config.webroot,
                         "Answer http-01 with files in DIR/.well-known/acme-challenge/ for a running web server");
    add_acme->add_option("--dns-hook", acme_args.config.dns_hook,
                         "dns-01: command run as 'CMD set|clear NAME VALUE'; it returns once the record is visible")
        ->check(check_command);
    add_acme->add_option("--profile", acme_args.config.profile, "Certificate profile, when the CA offers it");
    add_acme->add_option("--max-wait", acme_args.max_wait,
                         "Wait this long for validation and issuance, then keep the order and poll later (default 2m)")
        ->check(check_duration);
    add_acme->callback([&] { run([&](store::Store& st) { return cmd_issuer_add_acme(st, acme_args); }); });

    bool json = false;
    std::string name;
    auto* issuer_list = issuer->add_subcommand("list", "List issuers");
    issuer_list->add_flag("--json", json, "JSON output");
    issuer_list->callback([&] { run([&](store::Store& st) { return cmd_issuer_list(st, json); }); });
    auto* issuer_show = issuer->add_subcommand("show", "Show one issuer");
    issuer_show->add_option("NAME", name)->required();
    issuer_show->add_flag("--json", json, "JSON output");
    issuer_show->callback([&] { run([&](store::Store& st) { return cmd_issuer_show(st, name, json); }); });
    auto* issuer_cert = issuer->add_subcommand("cert", "Print the CA certificate (PEM) for trust stores");
    issuer_cert->add_option("NAME", name)->required();
    issuer_cert->callback([&] { run([&](store::Store& st) { return cmd_issuer_cert(st, name); }); });
    auto* issuer_rekey = issuer->add_subcommand("rekey", "Roll an ACME account over to a new key");
    issuer_rekey->add_option("NAME", name)->required();
    issuer_rekey->callback([&] { run([&](store::Store& st) { return cmd_issuer_rekey(st, name); }); });
    auto* issuer_remove = issuer->add_subcommand("remove", "Remove an issuer no domain uses");
    issuer_remove->add_option("NAME", name)->required();
    issuer_remove->callback([&] { run([&](store::Store& st) { return cmd_issuer_remove(st, name); }); });

    // add
    AddArgs add_args;
    auto* add = app.add_subcommand("add", "Add a domain and issue its first certificate");
    add->add_option("NAME", add_args.name, "Domain name (the directory under live/)")->required();
    add->add_option("--issuer", add_args.issuer, "Issuer to use")->required();
    add->add_option("--san", add_args.sans, "DNS name to certify (repeatable; default NAME, also with --ip)")->allow_extra_args(false);
    add->add_option("--ip", add_args.ips, "IP address to certify (repeatable)")->allow_extra_args(false);
    add->add_option("--key-type", add_args.key_type, "ec-p256 (default), ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519")
        ->check(check_key_type);
    add->add_flag("--reuse-key", add_args.reuse_key, "Keep the key across renewals");
    add->add_option("--renew-before", add_args.renew_before, "Renew this long before expiry (default a third of "
                                                             "the lifetime)")
        ->check(check_duration);
    add->add_option("--owner", add_args.owner, "Owner of privkey.pem and combined.pem (default root)");
    add->add_option("--group", add_args.group, "Group of privkey.pem and combined.pem (default root)");
    add->add_option("--mode", add_args.mode, "Mode of privkey.pem and combined.pem (default 0600)")->check(check_mode);
    add->add_option("--deploy-hook", add_args.deploy_hooks, "Command to run after a renewal (repeatable)")
        ->allow_extra_args(false);
    add->add_option("--bundle", add_args.bundle, "Renew together with the other domains of this bundle");
    add->add_flag("--no-issue", add_args.no_issue, "Add without issuing a certificate now");
    add->callback([&] { run([&](store::Store& st) { return cmd_add(st, add_args); }); });

    // --now, for renew, rollback and import
    bool now = false;
    const std::string now_help = "Move every reader to it at once, even one between its key and its certificate "
                                 "(for a compromised key)";

    // import
    std::string cert_file;
    std::string key_file;
    std::string chain_file;
    auto* import = app.add_subcommand("import", "Import a certificate and key as a new generation");
    import->add_option("NAME", name)->required();
    import->add_option("--cert", cert_file, "Certificate PEM (may include the chain)")->required();
    import->add_option("--key", key_file, "Private key PEM")->required();
    import->add_option("--chain", chain_file, "Intermediate certificates PEM");
    import->add_flag("--now", now, now_help);
    import->callback(
        [&] { run([&](store::Store& st) { return cmd_import(st, name, cert_file, key_file, chain_file, now); }); });

    auto* list = app.add_subcommand("list", "List domains with their state and expiry");
    list->add_flag("--json", json, "JSON output");
    list->callback([&] { run([&](store::Store& st) { return cmd_list(st, json); }); });

    auto* show = app.add_subcommand("show", "Show one domain");
    show->add_option("NAME", name)->required();
    show->add_flag("--json", json, "JSON output");
    show->callback([&] { run([&](store::Store& st) { return cmd_show(st, name, json); }); });

    auto* history = app.add_subcommand("history", "List a domain's generations");
    history->add_option("NAME", name)->required();
    history->add_flag("--json", json, "JSON output");
    history->callback([&] { run([&](store::Store& st) { return cmd_history(st, name, json); }); });

    std::vector<std::string> names;
    bool all = false;
    bool force = false;
    auto* renew_cmd = app.add_subcommand("renew", "Renew what is due now");
    renew_cmd->add_option("NAME", names, "Domains to renew");
    renew_cmd->add_flag("--all", all, "Every domain with an issuer");
    renew_cmd->add_flag("--force", force, "Renew even if not due");
    renew_cmd->add_flag("--now", now, now_help + "; implies --force");
    int jobs = 4;
    renew_cmd->add_option("--jobs", jobs, "Renewals at once (default 4)")->check(CLI::Range(1, 64));
    renew_cmd->callback([&] { run([&](store::Store& st) { return cmd_renew(st, names, all, force, now, jobs); }); });

    std::optional<std::int64_t> gen;
    auto* rollback = app.add_subcommand("rollback", "Make an older generation current again");
    rollback->add_option("NAME", name)->required();
    rollback->add_option("--to", gen, "Generation (default: the one before the current)")->check(CLI::PositiveNumber);
    rollback->add_flag("--now", now, now_help);
    rollback->callback([&] { run([&](store::Store& st) { return cmd_rollback(st, name, gen, now); }); });

    std::string reason = "unspecified";
    std::optional<std::int64_t> revoke_gen;
    auto* revoke = app.add_subcommand("revoke", "Revoke a certificate at its ACME CA");
    revoke->add_option("NAME", name)->required();
    revoke->add_option("--reason", reason,
                       "unspecified (default), keyCompromise, affiliationChanged, superseded, cessationOfOperation");
    revoke->add_option("--gen", revoke_gen, "Generation (default: the current one)")->check(CLI::PositiveNumber);
    revoke->callback([&] { run([&](store::Store& st) { return cmd_revoke(st, name, reason, revoke_gen); }); });

    auto* remove = app.add_subcommand("remove", "Remove a domain and its history");
    remove->add_option("NAME", name)->required();
    remove->callback([&] { run([&](store::Store& st) { return cmd_remove(st, name); }); });

    std::string dir;
    auto* exp = app.add_subcommand("export", "Write a generation's files to a directory, switched atomically");
    exp->add_option("NAME", name)->required();
    exp->add_option("DIR", dir)->required();
    exp->add_option("--gen", gen, "Generation (default: the current one)")->check(CLI::PositiveNumber);
    exp->callback([&] { run([&](store::Store& st) { return cmd_export(st, name, dir, gen); }); });

    auto* check = app.add_subcommand("check", "Check the store; exit 1 if anything is wrong");
    check->add_flag("--json", json, "JSON output");
    check->callback([&] { run([&](store::Store& st) { return cmd_check(st, json); }); });

    int limit = 50;
    auto* log = app.add_subcommand("log", "Show the event log (who did what when)");
    log->add_option("NAME", name, "Only this domain");
    log->add_option("--limit", limit, "Most recent events to show (default 50)")->check(CLI::PositiveNumber);
    log->add_flag("--json", json, "JSON output");
    log->callback([&] { run([&](store::Store& st) { return cmd_log(st, name, limit, json); }); });

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "certfsctl: " << e.what() << " (see certfsctl --help)\n";
        return k_exit_usage;
    }
    if (needs_init) {
        return cmd_init(db_path);
    }
    auto st = open_store(db_path);
    if (!st.ok()) {
        return fail(st.status());
    }
    return action(**st);
}

} // namespace certfs::ctl

int main(int argc, char** argv)
{
    return certfs::ctl::main(argc, argv);
}
