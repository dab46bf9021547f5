// certfsctl's commands, one file per group (cmd_*.cpp), declared for main.cpp, which parses
// the command line and calls them. Each command prints its output (output.hpp) and returns the
// exit status: 0 success, 1 failure (or `check` found problems), 2 usage.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "migrate/certbot.hpp"
#include "renew/acme_issuer.hpp"
#include "store/store.hpp"

namespace certfs::ctl {

inline constexpr int k_exit_ok = 0;
inline constexpr int k_exit_failure = 1;
inline constexpr int k_exit_usage = 2;

// Who acts, for the event log ("certfsctl uid=0"), and the store opened as that actor.
std::string actor();
// The store at `path`, with the store key `key_path` names (or the environment's, StoreKey::
// from_environment); with_key false: with none.
Result<std::unique_ptr<store::Store>> open_store(const std::string& path, const std::string& key_path, bool create,
                                                 bool with_key = true);

// cmd_store.cpp: the store as a whole.
int cmd_init(const std::string& db_path, const std::string& key_path);
// Re-seals every secret with the key in `new_key_path` (empty: in the clear).
int cmd_rekey_store(store::Store& st, const std::string& new_key_path);
int cmd_check(store::Store& st, bool json);
int cmd_log(store::Store& st, const std::string& name, int limit, bool json);

// cmd_issuer.cpp: issuers.
struct IssuerAddArgs {
    std::string name;
    std::string key_type = "ec-p256";
    std::string validity = "90d";
    std::string ca_validity = "10y";
    std::string subject;
};

struct HelperAddArgs {
    std::string name;
    std::string command;
    std::string timeout = "5m";
    std::string poll_interval = "60s";
    std::string max_wait = "5m";
    std::string profile;
};

struct AcmeAddArgs {
    std::string name;
    renew::AcmeConfig config;
    std::string account_key_type = "ec-p256";
    std::string eab_hmac_key;
    std::string max_wait = "2m";
};

int cmd_issuer_add_local(store::Store& st, const IssuerAddArgs& args);
int cmd_issuer_add_helper(store::Store& st, const HelperAddArgs& args);
int cmd_issuer_add_acme(store::Store& st, AcmeAddArgs args);
int cmd_issuer_list(store::Store& st, bool json, bool names_only);
int cmd_issuer_show(store::Store& st, const std::string& name, bool json);
int cmd_issuer_cert(store::Store& st, const std::string& name);
int cmd_issuer_rekey(store::Store& st, const std::string& name);
int cmd_issuer_remove(store::Store& st, const std::string& name);
// The ACME issuer named `name`, or why there is none (also for revoke).
Result<std::unique_ptr<renew::AcmeIssuer>> load_acme(store::Store& st, const std::string& name);

// cmd_domain.cpp: domains and their settings.
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

int cmd_add(store::Store& st, const AddArgs& args);
int cmd_list(store::Store& st, bool json, bool names_only);
int cmd_show(store::Store& st, const std::string& name, bool json);
int cmd_remove(store::Store& st, const std::string& name);
// certfsctl set NAME [--owner U] [--group G] [--mode M]: empty strings are not given.
struct SetArgs {
    std::string name, owner, group, mode;
};
int cmd_set(store::Store& st, const SetArgs& args);

// cmd_generation.cpp: a domain's generations.
int cmd_import(store::Store& st, const std::string& name, const std::string& cert_file, const std::string& key_file,
               const std::string& chain_file, bool now);
int cmd_history(store::Store& st, const std::string& name, bool json);
int cmd_rollback(store::Store& st, const std::string& name, std::optional<std::int64_t> to, bool now);
int cmd_export(store::Store& st, const std::string& name, const std::string& dir, std::optional<std::int64_t> gen_no);

// cmd_migrate.cpp: moving over from certbot (migrate/certbot.hpp). Imports every lineage not
// in the store yet, in one transaction; with dry_run it says what it would import.
int cmd_import_certbot(store::Store& st, const migrate::CertbotOptions& options, bool dry_run);

// cmd_renew.cpp: asking the CA for a domain's certificates, or to revoke one.
int cmd_renew(store::Store& st, std::vector<std::string> names, bool all, bool force, bool now, int jobs);
int cmd_revoke(store::Store& st, const std::string& name, const std::string& reason_name,
               std::optional<std::int64_t> gen_no);

} // namespace certfs::ctl
