// certfsctl import, history, rollback and export: a domain's generations.
#include "tools/certfsctl/commands.hpp"

#include <cerrno>
#include <fstream>
#include <iostream>
#include <sstream>

#include "fs/export.hpp"
#include "tools/certfsctl/output.hpp"

namespace certfs::ctl {

namespace {

Result<std::string> read_input_file(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return errno_status("cannot read " + path);
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

} // namespace

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

} // namespace certfs::ctl
