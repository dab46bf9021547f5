// certfsctl issuer ...: adding, listing, showing, rekeying and removing issuers.
#include "tools/certfsctl/commands.hpp"

#include <iostream>

#include "renew/helper.hpp"
#include "renew/local_ca.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

namespace {

// IDENTIFY and FETCH-ROOTS of a helper issuer, as `issuer show` reports them: a helper that
// fails is part of the answer, not a failure of the command.
struct HelperProbe {
    std::string identify; // first line, or "failed: ..."
    bool identify_ok = false;
    std::vector<std::string> roots; // subjects of the roots and other trusted roots
    std::string roots_error;        // empty when FETCH-ROOTS succeeded
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

} // namespace

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

int cmd_issuer_list(store::Store& st, bool json, bool names_only)
{
    auto issuers = st.list_issuers();
    if (!issuers.ok()) {
        return fail(issuers.status());
    }
    if (names_only) {
        for (const auto& i : *issuers) {
            std::cout << terminal_safe(i.name) << '\n';
        }
        return k_exit_ok;
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
                std::cout << "meta:       " << key << " = "
                          << (value.is_string() ? value.get<std::string>() : value.dump()) << '\n';
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

// The ACME issuer named `name`, or why there is none.
Result<std::unique_ptr<renew::AcmeIssuer>> load_acme(store::Store& st, const std::string& name)
{
    ASSIGN_OR_RETURN(store::Issuer issuer, st.get_issuer(name));
    if (issuer.kind != "acme") {
        return Status::Invalid("issuer " + name + " is a " + issuer.kind + " issuer, not an ACME one");
    }
    return renew::AcmeIssuer::load(st, issuer);
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

} // namespace certfs::ctl
