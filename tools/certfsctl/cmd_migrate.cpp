// certfsctl import-certbot: every certbot lineage, with its archive, into the store.
#include "tools/certfsctl/commands.hpp"

#include <iostream>

#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

int cmd_import_certbot(store::Store& st, const migrate::CertbotOptions& options, bool dry_run)
{
    auto plan = migrate::read_certbot(st, options);
    if (!plan.ok()) {
        return fail(plan.status().with_context("import-certbot"));
    }
    if (!dry_run && !plan->domains.empty()) {
        if (Status s = st.import_domains(plan->issuers, plan->domains); !s.ok()) {
            return fail(s.with_context("import-certbot (nothing was imported)"));
        }
    }
    const std::string verb = dry_run ? "would import " : "imported ";
    for (const auto& issuer : plan->issuers) {
        std::cout << (dry_run ? "would add" : "added") << " ACME issuer " << terminal_safe(issuer.name)
                  << " with certbot's account";
        if (auto config = renew::parse_acme_config(issuer.config_json); config.ok()) {
            std::cout << " (" << terminal_safe(config->directory) << ", http-01 "
                      << (config->webroot.empty() ? "listening on " + terminal_safe(config->http_listen)
                                                  : "through the webroot " + terminal_safe(config->webroot))
                      << ")";
        }
        std::cout << '\n';
    }
    for (const auto& l : plan->lineages) {
        std::cout << verb << terminal_safe(l.name) << ": " << l.archived
                  << (l.archived == 1 ? " generation" : " generations") << ", serving certbot's cert" << l.current
                  << ".pem (expires " << format_rfc3339(l.not_after) << "), renewed by " << terminal_safe(l.issuer)
                  << '\n';
    }
    for (const auto& note : plan->notes) {
        std::cout << "note: " << terminal_safe(note) << '\n';
    }
    std::cout << verb << plan->lineages.size() << (plan->lineages.size() == 1 ? " lineage" : " lineages") << " from "
              << terminal_safe(options.config_dir);
    if (!dry_run && !plan->lineages.empty()) {
        std::cout << "; certfs renews them from now on: stop certbot's timer (systemctl disable --now certbot.timer)";
    }
    std::cout << '\n';
    return k_exit_ok;
}

} // namespace certfs::ctl
