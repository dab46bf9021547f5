// certfsctl: the admin tool. Argument parsing and dispatch only: each command is in a cmd_*.cpp
// of its group (commands.hpp), its output in output.cpp, and the work in store/, renew/ and fs/.
// Exit status: 0 success, 1 failure (or `check` found problems), 2 usage.
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <iostream>
#include <optional>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "core/process.hpp"
#include "store/validate.hpp"
#include "tools/certfsctl/commands.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

std::string actor() { return "certfsctl uid=" + std::to_string(::getuid()); }

Result<std::unique_ptr<store::Store>> open_store(const std::string& path, const std::string& key_path, bool create,
                                                 bool with_key)
{
    if (!with_key) {
        return store::Store::open(path, {.create = create, .actor = actor(), .clock = nullptr});
    }
    ASSIGN_OR_RETURN(auto key, store::StoreKey::from_environment(key_path));
    return store::Store::open(path, {.create = create, .actor = actor(), .clock = nullptr}, std::move(key));
}

namespace {

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

std::string check_mode(const std::string& text)
{
    auto m = store::parse_mode(text);
    return m.ok() ? "" : m.status().message();
}

} // namespace

int main(int argc, char** argv)
{
    // stdout carries command output only (JSON must parse), and stderr one line per error:
    // the libraries' informational logging (an ACME account registered, a hook's output) is
    // not certfsctl's to print, and their errors reach the user as the command's own.
    spdlog::set_default_logger(spdlog::stderr_color_mt("certfsctl"));
    spdlog::set_level(spdlog::level::err);
    if (Status s = forbid_core_dumps(); !s.ok()) {
        return fail(s);
    }
    CLI::App app{"certfsctl: manage the certfs certificate store"};
    app.set_version_flag("--version", "certfsctl " CERTFS_VERSION);
    app.set_help_all_flag("--help-all", "Show help for every command");
    app.require_subcommand(1);
    std::string db_path = store::k_default_db_path;
    app.add_option("--db", db_path, "The store (default " + db_path + ")")->envname("CERTFS_DB");
    std::string store_key_path;
    app.add_option("--store-key", store_key_path,
                   "The key that seals the store's private keys (default $CERTFS_STORE_KEY, or the systemd "
                   "credential certfs-store-key)");

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
    add_helper
        ->add_option("--command", helper_args.command,
                     "The helper and its arguments, split like a shell "
                     "would but never run by one")
        ->required()
        ->check(check_command);
    add_helper->add_option("--timeout", helper_args.timeout, "Limit on each run of the helper (default 5m)")
        ->check(check_duration);
    add_helper->add_option("--profile", helper_args.profile, "Passed as CERTMONGER_CA_PROFILE");
    add_helper
        ->add_option("--poll-interval", helper_args.poll_interval,
                     "Wait before polling when the CA gives no delay (default 60s)")
        ->check(check_duration);
    add_helper
        ->add_option("--max-wait", helper_args.max_wait,
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
    add_acme
        ->add_option("--account-key-type", acme_args.account_key_type,
                     "Account key type: ec-p256 (default), ec-p384, rsa-2048...")
        ->check(check_key_type);
    add_acme->add_option("--challenge", acme_args.config.challenge, "http-01 (default) or dns-01");
    add_acme->add_option("--http-listen", acme_args.config.http_listen,
                         "Where the built-in http-01 responder listens (default :80)");
    add_acme->add_option("--webroot", acme_args.config.webroot,
                         "Answer http-01 with files in DIR/.well-known/acme-challenge/ for a running web server");
    add_acme
        ->add_option("--dns-hook", acme_args.config.dns_hook,
                     "dns-01: command run as 'CMD set|clear NAME VALUE'; it returns once the record is visible")
        ->check(check_command);
    add_acme->add_option("--profile", acme_args.config.profile, "Certificate profile, when the CA offers it");
    add_acme
        ->add_option("--max-wait", acme_args.max_wait,
                     "Wait this long for validation and issuance, then keep the order and poll later (default 2m)")
        ->check(check_duration);
    add_acme->callback([&] { run([&](store::Store& st) { return cmd_issuer_add_acme(st, acme_args); }); });

    bool json = false;
    std::string name;
    auto* issuer_list = issuer->add_subcommand("list", "List issuers");
    bool names_only = false;
    issuer_list->add_flag("--json", json, "JSON output");
    issuer_list->add_flag("--names", names_only, "Only the names, one a line (for scripts and completion)")
        ->excludes("--json");
    issuer_list->callback([&] { run([&](store::Store& st) { return cmd_issuer_list(st, json, names_only); }); });
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
    add->add_option("--san", add_args.sans, "DNS name to certify (repeatable; default NAME, also with --ip)")
        ->allow_extra_args(false);
    add->add_option("--ip", add_args.ips, "IP address to certify (repeatable)")->allow_extra_args(false);
    add->add_option("--key-type", add_args.key_type,
                    "ec-p256 (default), ec-p384, rsa-2048, rsa-3072, rsa-4096, ed25519")
        ->check(check_key_type);
    add->add_flag("--reuse-key", add_args.reuse_key, "Keep the key across renewals");
    add->add_option("--renew-before", add_args.renew_before,
                    "Renew this long before expiry (default a third of "
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
    auto* import_cmd = app.add_subcommand("import", "Import a certificate and key as a new generation");
    import_cmd->add_option("NAME", name)->required();
    import_cmd->add_option("--cert", cert_file, "Certificate PEM (may include the chain)")->required();
    import_cmd->add_option("--key", key_file, "Private key PEM")->required();
    import_cmd->add_option("--chain", chain_file, "Intermediate certificates PEM");
    import_cmd->add_flag("--now", now, now_help);
    import_cmd->callback(
        [&] { run([&](store::Store& st) { return cmd_import(st, name, cert_file, key_file, chain_file, now); }); });

    // import-certbot
    migrate::CertbotOptions certbot;
    bool dry_run = false;
    auto* import_certbot = app.add_subcommand(
        "import-certbot", "Import every certbot lineage: its generations, settings, deploy hooks and ACME account");
    import_certbot->add_option("DIR", certbot.config_dir,
                               "certbot's configuration directory (default /etc/letsencrypt)");
    import_certbot->add_option("--issuer", certbot.issuer_name,
                               "Name of the ACME issuer made for certbot's server (default certbot-<host>)");
    import_certbot->add_option("--ca-bundle", certbot.ca_bundle,
                               "PEM file of the CAs trusted for the ACME server's HTTPS (default: the system's)");
    import_certbot->add_flag("--dry-run", dry_run, "Say what would be imported, and change nothing");
    import_certbot->callback([&] { run([&](store::Store& st) { return cmd_import_certbot(st, certbot, dry_run); }); });

    auto* list = app.add_subcommand("list", "List domains with their state and expiry");
    list->add_flag("--json", json, "JSON output");
    list->add_flag("--names", names_only, "Only the names the mount serves, one a line (for scripts and completion)")
        ->excludes("--json");
    list->callback([&] { run([&](store::Store& st) { return cmd_list(st, json, names_only); }); });

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

    SetArgs set_args;
    auto* set =
        app.add_subcommand("set", "Change who may read a domain's key files (takes effect on the mount at once)");
    set->add_option("NAME", set_args.name)->required();
    set->add_option("--owner", set_args.owner, "Owner of privkey.pem and combined.pem");
    set->add_option("--group", set_args.group, "Group of privkey.pem and combined.pem");
    set->add_option("--mode", set_args.mode, "Mode of privkey.pem and combined.pem, such as 0640")->check(check_mode);
    set->callback([&] { run([&](store::Store& st) { return cmd_set(st, set_args); }); });

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
    std::string new_key_path;
    bool clear_key = false;
    auto* rekey_store = app.add_subcommand("rekey-store", "Seal the store's private keys with a new store key, in one "
                                                          "transaction (or, with --clear, keep them in the clear)");
    auto* new_key_opt = rekey_store->add_option("--new-key", new_key_path, "The new key file (32 random bytes, 0600)");
    auto* clear_opt = rekey_store->add_flag("--clear", clear_key, "Keep the private keys in the clear from now on");
    new_key_opt->excludes(clear_opt);
    rekey_store->callback([&] {
        if (new_key_path.empty() && !clear_key) {
            throw CLI::RequiredError("--new-key or --clear");
        }
        run([&](store::Store& st) { return cmd_rekey_store(st, new_key_path); });
    });

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
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << "certfsctl: " << e.what() << " (see certfsctl --help)\n";
        return k_exit_usage;
    }
    if (needs_init) {
        return cmd_init(db_path, store_key_path);
    }
    // rekey-store seals a store in the clear, whatever key the environment names (it may name
    // the new one already); a sealed store it opens with its current key.
    const bool clear_first = rekey_store->parsed();
    auto st = clear_first ? open_store(db_path, "", false, false) : open_store(db_path, store_key_path, false);
    if (st.ok() && clear_first && (*st)->sealed_by()) {
        st = open_store(db_path, store_key_path, false);
    }
    if (!st.ok()) {
        return fail(st.status());
    }
    return action(**st);
}

} // namespace certfs::ctl

int main(int argc, char** argv) { return certfs::ctl::main(argc, argv); }
