// certfsctl init, check and log: the store as a whole.
#include "tools/certfsctl/commands.hpp"

#include <sys/stat.h>

#include <filesystem>
#include <iostream>

#include "renew/health.hpp"
#include "store/mount.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

int cmd_init(const std::string& db_path, const std::string& key_path)
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
    auto store = open_store(db_path, key_path, true);
    if (!store.ok()) {
        return fail(store.status());
    }
    std::cout << "store ready: " << db_path << " (schema version " << store::k_schema_version << ")";
    if (const auto& id = (*store)->sealed_by()) {
        std::cout << ", private keys sealed by store key id " << *id;
    }
    std::cout << '\n';
    return k_exit_ok;
}

int cmd_rekey_store(store::Store& st, const std::string& new_key_path)
{
    // Held until the rekey has returned: no daemon serves the store meanwhile (store/mount.hpp).
    auto use = store::StoreUse::take(st.path(), store::StoreUse::Mode::rekey);
    if (!use.ok()) {
        return fail(use.status().with_context("rekey-store"));
    }
    std::shared_ptr<const store::StoreKey> next;
    if (!new_key_path.empty()) {
        auto key = store::StoreKey::load(new_key_path);
        if (!key.ok()) {
            return fail(key.status());
        }
        next = *key;
    }
    auto report = st.rekey(next);
    if (!report.ok()) {
        return fail(report.status());
    }
    std::cout << "rekey-store: " << report->generations << " generation keys, " << report->pending
              << " pending keys and " << report->issuers << " issuer secrets "
              << (next ? "sealed by store key id " + next->id() + " (" + next->source() + ")" : "in the clear") << '\n';
    if (!report->cleaned) {
        std::cout << "note: the old bytes may still be in the store's files (" << report->cleanup
                  << "): run rekey-store again when no other process has the store open, to take them away\n";
    }
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
            std::cout << terminal_safe(p) << '\n';
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
            out.push_back({{"at", format_rfc3339(e.at)},
                           {"actor", e.actor},
                           {"domain", e.domain},
                           {"action", e.action},
                           {"detail", e.detail}});
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

} // namespace certfs::ctl
