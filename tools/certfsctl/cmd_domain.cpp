// certfsctl add, list, show and remove: domains and their settings.
#include "tools/certfsctl/commands.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <optional>

#include "renew/renewer.hpp"
#include "store/validate.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

namespace {

// A user or group given by number: its id, Invalid past the largest one (4294967294; the next
// is (uid_t)-1, which means "unchanged" to chown), or nothing when `name` is not a number.
std::optional<Result<std::uint32_t>> numeric_id(const std::string& name, const char* what)
{
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
        return std::nullopt;
    }
    constexpr std::uint64_t k_largest = 4294967294ULL;
    std::uint64_t id = 0;
    for (char c : name) {
        id = id * 10 + static_cast<std::uint64_t>(c - '0');
        if (id > k_largest) {
            return Result<std::uint32_t>(Status::Invalid(std::string("invalid ") + what + " id " +
                                                         store::quote_name(name) + ": at most 4294967294"));
        }
    }
    return Result<std::uint32_t>(static_cast<std::uint32_t>(id));
}

Result<std::uint32_t> resolve_user(const std::string& name)
{
    if (auto id = numeric_id(name, "user")) {
        return *id;
    }
    passwd pw{};
    passwd* found = nullptr;
    char buf[4096];
    if (getpwnam_r(name.c_str(), &pw, buf, sizeof buf, &found) != 0 || found == nullptr) {
        return Status::Invalid("unknown user " + store::quote_name(name));
    }
    return found->pw_uid;
}

Result<std::uint32_t> resolve_group(const std::string& name)
{
    if (auto id = numeric_id(name, "group")) {
        return *id;
    }
    group gr{};
    group* found = nullptr;
    char buf[4096];
    if (getgrnam_r(name.c_str(), &gr, buf, sizeof buf, &found) != 0 || found == nullptr) {
        return Status::Invalid("unknown group " + store::quote_name(name));
    }
    return found->gr_gid;
}

} // namespace

int cmd_set(store::Store& st, const SetArgs& args)
{
    store::Store::Access access;
    if (!args.owner.empty()) {
        auto uid = resolve_user(args.owner);
        if (!uid.ok()) {
            return fail(uid.status());
        }
        access.uid = *uid;
    }
    if (!args.group.empty()) {
        auto gid = resolve_group(args.group);
        if (!gid.ok()) {
            return fail(gid.status());
        }
        access.gid = *gid;
    }
    if (!args.mode.empty()) {
        access.mode = store::parse_mode(args.mode).value();
    }
    if (Status s = st.set_access(args.name, access); !s.ok()) {
        return fail(s);
    }
    auto d = st.get_domain(args.name);
    if (!d.ok()) {
        return fail(d.status());
    }
    std::cout << args.name << ": key files are " << user_name(d->owner_uid) << ":" << group_name(d->group_gid) << " "
              << mode_text(d->mode) << " for new opens; descriptors already open keep working\n";
    return k_exit_ok;
}

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
    config.mode = store::parse_mode(args.mode).value();
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

int cmd_list(store::Store& st, bool json, bool names_only)
{
    auto domains = st.list_domains();
    if (!domains.ok()) {
        return fail(domains.status());
    }
    if (names_only) {
        for (const auto& d : *domains) {
            if (store::check_served_name(d.name).ok()) { // not one written by hand: it could drive a terminal
                std::cout << d.name << '\n';
            }
        }
        return k_exit_ok;
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
        // A row written by hand that the mount does not serve: its name quoted, and why.
        Status served = store::check_served_name(d.name);
        if (!served.ok()) {
            errors = served.message() + ": not served or renewed" + (errors.empty() ? "" : "; " + errors);
        }
        // RENEW AT: when the scheduler renews it, jitter included.
        rows.push_back({served.ok() ? d.name : store::quote_name(d.name),
                        d.current_gen ? std::to_string(*d.current_gen) : "-", state, time_or_dash(d.current_not_after),
                        time_or_dash(renew::due_at(d)), d.issuer.value_or("-"), errors});
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
        auto g = st.get_certificate(name, *d->current_gen); // no key: show works without the store key
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
        std::cout << label << std::string(15 - std::strlen(label), ' ') << terminal_safe(value) << '\n';
    };
    line("name:", d->name);
    line("issuer:", d->issuer.value_or("- (imported)"));
    line("dns names:", join(d->dns_names));
    line("ip addresses:", join(d->ip_addresses));
    line("key type:", std::string(pki::key_type_name(d->key_type)) +
                          (d->reuse_key ? " (key reused on renewal)" : " (fresh key on every renewal)"));
    line("renew before:",
         d->renew_before ? format_duration(*d->renew_before) : "a third of the lifetime (half under 10 days)");
    line("key files:", user_name(d->owner_uid) + ":" + group_name(d->group_gid) + " " + mode_text(d->mode));
    line("bundle:", d->bundle.value_or("-"));
    line("deploy hooks:", join(d->deploy_hooks, "; "));
    line("state:", std::string(store::state_name(renew::shown_state(*d, st.clock().now()))));
    line("last error:", d->last_error.empty() ? "-" : d->last_error);
    line("hook error:", d->hook_error.empty() ? "-" : d->hook_error);
    line("due at:", time_or_dash(renew::due_at(*d)));
    if (d->ari_gen && d->ari_gen == d->current_gen && d->ari_at) {
        line("ca suggests:",
             format_rfc3339(*d->ari_at) + " (renewal information; next check " + time_or_dash(d->ari_next_check) + ")");
    }
    line("next attempt:", time_or_dash(d->next_attempt));
    if (gen) {
        line("generation:", std::to_string(gen->gen) + " (" + std::string(store::reason_name(gen->reason)) + " " +
                                format_rfc3339(gen->created_at) + ")");
        line("serial:", gen->serial_hex);
        line("issued by:", gen->issuer_dn);
        line("not before:", format_rfc3339(gen->not_before));
        line("not after:", format_rfc3339(gen->not_after));
        const auto renew_at = renew::renew_at(*d);
        const bool floored = renew_at && renew_at == renew::renewal_floor(*d);
        line("renew at:",
             time_or_dash(renew_at) + (floored ? " (the earliest: a quarter of the lifetime after issue)" : ""));
    } else {
        line("generation:", "- (no certificate yet)");
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

} // namespace certfs::ctl
