// certfsctl renew and revoke: asking the CA for a domain's certificates, or to revoke one.
// The renewals themselves run in renew/batch.hpp, as the daemon runs them.
#include "tools/certfsctl/commands.hpp"

#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <map>

#include "renew/batch.hpp"
#include "renew/context.hpp"
#include "renew/deploy.hpp"
#include "store/validate.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

namespace {

// Prints what one scope's renewal did: its members' outcomes on stdout, its failure and its
// failed hooks on stderr. `progress` ("[3/200] ") starts its first line. Returns the exit code.
int print_scope(const renew::ScopeResult& r, bool now, const std::string& progress)
{
    if (!r.outcomes.ok()) {
        std::cout << std::flush;
        std::cerr << progress;
        fail(r.outcomes.status().with_context("renew " + store::shown_name(r.name)));
        return k_exit_failure;
    }
    int rc = k_exit_ok;
    std::string prefix = progress;
    for (const auto& o : *r.outcomes) {
        std::cout << prefix << o.domain << ": " << o.message << '\n';
        prefix.clear();
        if (now && o.generation) {
            std::cout << moved_now_note(o.domain, *o.generation) << '\n';
        } else if (now) {
            std::cout << o.domain << ": nothing moved (--now): no new generation yet; once the CA has issued it, "
                      << "run 'certfsctl renew " << o.domain << " --now' again\n";
        }
    }
    for (const auto& run : r.runs) {
        if (run.status.ok()) {
            std::cout << "deploy hook ran: " << run.command << '\n';
        } else {
            std::cout << std::flush;
            std::cerr << "certfsctl: deploy hook failed (the renewal stays committed): " << run.command << ": "
                      << run.status.message() << '\n';
            rc = k_exit_failure;
        }
    }
    std::cout << std::flush;
    return rc;
}

} // namespace

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
    // One renewal per bundle, through whichever member comes first, success or not; each
    // batch's deploy hooks run after its flip, as the daemon runs them, which certfsctl learns
    // from the mount.
    const renew::DeploySettings mount =
        renew::deploy_settings(st, [](const std::string& line) { std::cerr << "certfsctl: warning: " + line + "\n"; });
    renew::BatchOptions options;
    options.db_path = st.path();
    options.store_key = st.key();
    options.actor = actor();
    options.owner = "certfsctl pid " + std::to_string(::getpid());
    // One context for the workers: an http-01 address is shared, not bound twice.
    options.issuers = renew::builtin_issuers(std::make_shared<renew::RenewContext>());
    options.force = force || now;
    options.move_now = now;
    options.hooks = mount.hooks;
    options.wait_for_flip = mount.wait_for_flip;
    options.jobs = jobs;
    // On a terminal each scope is told as it ends, counted ("[3/200] "); piped, in the order
    // asked once all have ended, without the counts.
    const bool terminal = ::isatty(STDOUT_FILENO) == 1;
    int rc = k_exit_ok;
    renew::BatchRunner::OnScopeDone told;
    if (terminal) {
        told = [&](const renew::ScopeResult& r, std::size_t ended, std::size_t total) {
            const std::string progress =
                total > 1 ? "[" + std::to_string(ended) + "/" + std::to_string(total) + "] " : std::string();
            rc = std::max(rc, print_scope(r, now, progress));
        };
    }
    const std::vector<renew::ScopeResult> done = renew::BatchRunner(std::move(options)).run(st, names, told);
    if (!terminal) {
        for (const auto& r : done) {
            rc = std::max(rc, print_scope(r, now, ""));
        }
    }
    return rc;
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
                                    "superseded, cessationOfOperation, not '" +
                                    reason_name + "'"));
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
    std::cout << name << ": generation " << gen->gen << " (serial " << gen->serial_hex << ") revoked (" << reason_name
              << ")" << (gen->current ? "; run 'certfsctl renew " + name + " --force' to replace it" : "") << '\n';
    return k_exit_ok;
}

} // namespace certfs::ctl
