#include "migrate/certbot.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "migrate/configobj.hpp"
#include "renew/acme_issuer.hpp"
#include "store/validate.hpp"

namespace certfs::migrate {

namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

// certbot's default server, when a renewal conf names none.
constexpr const char* k_letsencrypt = "https://acme-v02.api.letsencrypt.org/directory";

Result<std::string> read_file(const stdfs::path& path)
{
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return errno_status("cannot read " + path.string());
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) {
        return errno_status("cannot read " + path.string());
    }
    return ss.str();
}

// A word for a command line that split_command reads back as it is.
std::string shell_word(const std::string& word)
{
    if (!word.empty() &&
        word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:@,") ==
            std::string::npos) {
        return word;
    }
    std::string out = "'";
    for (char c : word) {
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    }
    return out + "'";
}

// The N of "<kind>N.pem", or none.
std::optional<std::size_t> generation_number(const std::string& file, std::string_view kind)
{
    if (!file.starts_with(kind) || !file.ends_with(".pem")) {
        return std::nullopt;
    }
    const std::string_view digits = std::string_view(file).substr(kind.size(), file.size() - kind.size() - 4);
    std::size_t n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size()) {
        return std::nullopt;
    }
    return n;
}

// The programs in renewal-hooks/<kind>/, sorted as certbot runs them.
std::vector<std::string> hook_programs(const stdfs::path& dir)
{
    std::vector<std::string> out;
    std::error_code ec;
    for (const auto& entry : stdfs::directory_iterator(dir, ec)) {
        struct stat st {};
        if (::stat(entry.path().c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111) != 0) {
            out.push_back(entry.path().string());
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

// The key type certbot renews with: key_type (rsa or ecdsa, since certbot 1.10), with
// rsa_key_size or elliptic_curve; none when the conf predates them.
Result<std::optional<pki::KeyType>> key_type_of_conf(const ConfigSection& params, const std::string& file)
{
    const std::string type = params.get("key_type");
    if (type.empty()) {
        return std::optional<pki::KeyType>();
    }
    std::string name;
    if (type == "rsa") {
        name = "rsa-" + params.get("rsa_key_size", "2048");
    } else if (type == "ecdsa") {
        const std::string curve = params.get("elliptic_curve", "secp256r1");
        name = curve == "secp256r1" ? "ec-p256" : curve == "secp384r1" ? "ec-p384" : curve;
    } else {
        name = type;
    }
    auto parsed = pki::parse_key_type(name);
    if (!parsed.ok()) {
        return Status::Invalid(file + ": key type '" + name + "' is not one certfs makes (" +
                               parsed.status().message() + ")");
    }
    return std::optional<pki::KeyType>(*parsed);
}

// The account at accounts/<server's host and path>/<id>/: its key (a JWK) and URL.
Result<renew::AcmeAccount> read_account(const stdfs::path& dir, const std::string& server, const std::string& id)
{
    std::string where = server.substr(server.find("://") + 3);
    const stdfs::path account = dir / "accounts" / where / id;
    ASSIGN_OR_RETURN(std::string key_text, read_file(account / "private_key.json"));
    ASSIGN_OR_RETURN(std::string regr_text, read_file(account / "regr.json"));
    const json key = json::parse(key_text, nullptr, false);
    const json regr = json::parse(regr_text, nullptr, false);
    pki::cleanse(key_text);
    if (!key.is_object()) {
        return Status::Invalid((account / "private_key.json").string() + ": not a JSON object");
    }
    pki::JwkPrivate jwk;
    auto member = [&](const char* name, std::string& out) -> Status {
        if (!key.contains(name)) {
            return Status::Ok();
        }
        if (!key[name].is_string()) {
            return Status::Invalid((account / "private_key.json").string() + ": '" + name + "' is not a string");
        }
        if (std::string_view(name) == "kty" || std::string_view(name) == "crv") {
            out = key[name].get<std::string>();
            return Status::Ok();
        }
        auto bytes = pki::base64url_decode(key[name].get<std::string>());
        if (!bytes.ok()) {
            return Status::Invalid((account / "private_key.json").string() + ": '" + name + "' is not base64url");
        }
        out = std::move(*bytes);
        return Status::Ok();
    };
    for (auto [name, out] : {std::pair{"kty", &jwk.kty},
                             {"crv", &jwk.crv},
                             {"x", &jwk.x},
                             {"y", &jwk.y},
                             {"n", &jwk.n},
                             {"e", &jwk.e},
                             {"d", &jwk.d},
                             {"p", &jwk.p},
                             {"q", &jwk.q},
                             {"dp", &jwk.dp},
                             {"dq", &jwk.dq},
                             {"qi", &jwk.qi}}) {
        TRY(member(name, *out));
    }
    auto pkey = pki::private_key_from_jwk(jwk);
    for (std::string* secret : {&jwk.d, &jwk.p, &jwk.q, &jwk.dp, &jwk.dq, &jwk.qi}) {
        pki::cleanse(*secret);
    }
    if (!pkey.ok()) {
        return pkey.status().with_context((account / "private_key.json").string());
    }
    renew::AcmeAccount out;
    ASSIGN_OR_RETURN(out.key_pem, pki::private_key_pem(**pkey));
    if (regr.is_object() && regr.contains("uri") && regr["uri"].is_string()) {
        out.url = regr["uri"].get<std::string>();
    }
    return out;
}

// The host of a URL, for an issuer's name: "https://acme.example:14000/dir" gives "acme.example".
std::string url_host(const std::string& url)
{
    std::string rest = url.substr(url.find("://") == std::string::npos ? 0 : url.find("://") + 3);
    rest = rest.substr(0, rest.find('/'));
    if (!rest.empty() && rest.front() == '[') {
        return "ipv6";
    }
    rest = rest.substr(0, rest.find(':'));
    std::transform(rest.begin(), rest.end(), rest.begin(), [](unsigned char c) { return std::tolower(c); });
    return rest;
}

struct Reader {
    store::Store& st;
    const CertbotOptions& options;
    stdfs::path dir;
    CertbotPlan plan;
    std::vector<std::string> global_hooks;
    // The store's ACME issuers by directory URL.
    std::map<std::string, std::string> existing;
    // This plan's issuers by what tells them apart: server, listen address, webroot.
    std::map<std::string, std::string> planned;

    bool name_taken(const std::string& name)
    {
        return st.get_issuer(name).ok() ||
               std::any_of(plan.issuers.begin(), plan.issuers.end(), [&](const auto& i) { return i.name == name; });
    }

    // The issuer a lineage renews through: the store's for the same directory, or one this
    // import makes with certbot's account.
    Result<std::pair<std::string, bool>> issuer_for(const std::string& lineage, const ConfigSection& params,
                                                    const std::vector<std::string>& names)
    {
        const std::string server = params.get("server", k_letsencrypt);
        if (auto it = existing.find(server); it != existing.end()) {
            return std::pair{it->second, false};
        }
        renew::AcmeConfig config;
        config.directory = server;
        config.ca_bundle = options.ca_bundle;
        const std::string authenticator = params.get("authenticator", "standalone");
        if (authenticator == "standalone") {
            config.http_listen = params.get("http01_address") + ":" + params.get("http01_port", "80");
        } else if (authenticator == "webroot") {
            const ConfigSection* map = params.section("webroot_map");
            const ConfigValue* paths = params.find("webroot_path");
            if (map != nullptr && !names.empty() && map->find(names.front()) != nullptr) {
                config.webroot = map->get(names.front());
            } else if (paths != nullptr && !paths->items.empty()) {
                config.webroot = paths->items.front();
            }
            if (config.webroot.empty()) {
                return Status::Invalid("renewal/" + lineage + ".conf: webroot authenticator without a webroot_path");
            }
        } else {
            plan.notes.push_back(lineage + ": certbot's authenticator '" + authenticator +
                                 "' is not one certfs has; it renews with http-01 on port 80 (certfsctl issuer add "
                                 "acme --webroot or --challenge dns-01 for another)");
        }
        const std::string key = server + "\n" + config.http_listen + "\n" + config.webroot;
        if (auto it = planned.find(key); it != planned.end()) {
            return std::pair{it->second, true};
        }
        const std::string account_id = params.get("account");
        if (account_id.empty()) {
            return Status::Invalid("renewal/" + lineage + ".conf: no account in [renewalparams]");
        }
        ASSIGN_OR_RETURN(renew::AcmeAccount account, read_account(dir, server, account_id));
        std::string base =
            !options.issuer_name.empty() && plan.issuers.empty() ? options.issuer_name : "certbot-" + url_host(server);
        std::string name = base;
        for (int n = 2; name_taken(name); ++n) {
            if (!options.issuer_name.empty() && name == options.issuer_name) {
                return Status::Conflict("issuer " + name + " already exists");
            }
            name = base + "-" + std::to_string(n);
        }
        ASSIGN_OR_RETURN(store::NewIssuer issuer, renew::create_acme_issuer(name, config, "", account));
        pki::cleanse(account.key_pem);
        plan.issuers.push_back(std::move(issuer));
        planned.emplace(key, name);
        return std::pair{name, true};
    }

    Status lineage(const stdfs::path& conf_path)
    {
        const std::string name = conf_path.stem().string();
        const std::string conf_name = "renewal/" + conf_path.filename().string();
        if (Status s = store::check_domain_name(name); !s.ok()) {
            plan.notes.push_back(store::quote_name(name) + ": not imported, not a name certfs serves (" + s.message() +
                                 ")");
            return Status::Ok();
        }
        if (st.get_domain(name).ok()) {
            plan.notes.push_back(name + ": already in the store, left as it is");
            return Status::Ok();
        }
        ASSIGN_OR_RETURN(std::string text, read_file(conf_path));
        ASSIGN_OR_RETURN(ConfigSection conf, parse_configobj(text, conf_name));
        const ConfigSection empty;
        const ConfigSection* found = conf.section("renewalparams");
        const ConfigSection& params = found != nullptr ? *found : empty;

        // The generation certbot serves: where live/NAME/cert.pem points.
        const stdfs::path live_cert = conf.get("cert", (dir / "live" / name / "cert.pem").string());
        std::error_code ec;
        const stdfs::path served = stdfs::canonical(live_cert, ec);
        if (ec) {
            return Status::Invalid(conf_name + ": cert " + live_cert.string() + ": " + ec.message());
        }
        auto current_n = generation_number(served.filename().string(), "cert");
        if (!current_n) {
            return Status::Invalid(conf_name + ": cert " + live_cert.string() + " is " + served.string() +
                                   ", not a certN.pem of certbot's archive");
        }
        const stdfs::path archive = served.parent_path();

        std::vector<std::size_t> numbers;
        for (const auto& entry : stdfs::directory_iterator(archive, ec)) {
            if (auto n = generation_number(entry.path().filename().string(), "cert")) {
                numbers.push_back(*n);
            }
        }
        if (ec) {
            return Status::Invalid(archive.string() + ": " + ec.message());
        }
        std::sort(numbers.begin(), numbers.end());

        auto files = [&](std::size_t n) -> Result<store::GenerationInput> {
            store::GenerationInput input;
            const std::string suffix = std::to_string(n) + ".pem";
            ASSIGN_OR_RETURN(input.cert_pem, read_file(archive / ("cert" + suffix)));
            ASSIGN_OR_RETURN(input.chain_pem, read_file(archive / ("chain" + suffix)));
            ASSIGN_OR_RETURN(input.key_pem, read_file(archive / ("privkey" + suffix)));
            input.reason = store::Reason::imported;
            return input;
        };
        auto leaf_of = [](const store::GenerationInput& input) -> Result<pki::CertInfo> {
            ASSIGN_OR_RETURN(auto certs, pki::parse_certs(input.cert_pem));
            if (certs.empty()) {
                return Status::Invalid("no certificate");
            }
            return pki::cert_info(*certs.front());
        };

        ASSIGN_OR_RETURN(store::GenerationInput current, files(*current_n));
        auto leaf = leaf_of(current);
        if (!leaf.ok()) {
            return leaf.status().with_context((archive / ("cert" + std::to_string(*current_n) + ".pem")).string());
        }
        if (leaf->not_after <= st.clock().now()) {
            plan.notes.push_back(name + ": not imported, its certificate expired on " +
                                 format_rfc3339(leaf->not_after) +
                                 " (renew it with certbot first, or add it to certfs anew)");
            return Status::Ok();
        }

        store::ImportedDomain domain;
        domain.config.name = name;
        domain.config.dns_names = leaf->dns_names;
        domain.config.ip_addresses = leaf->ip_addresses;
        for (std::size_t n : numbers) {
            if (n == *current_n) {
                domain.current = domain.generations.size();
                domain.generations.push_back(std::move(current));
                continue;
            }
            auto older = files(n);
            if (!older.ok()) {
                plan.notes.push_back(name + ": archived generation " + std::to_string(n) + " left out (" +
                                     older.status().message() + ")");
                continue;
            }
            auto info = leaf_of(*older);
            const bool covers =
                info.ok() && std::all_of(leaf->dns_names.begin(), leaf->dns_names.end(), [&](const std::string& want) {
                    return std::any_of(info->dns_names.begin(), info->dns_names.end(),
                                       [&](const std::string& san) { return store::san_covers(san, want); });
                });
            if (!covers) {
                plan.notes.push_back(name + ": archived generation " + std::to_string(n) +
                                     " left out (it does not cover every name the current one does)");
                continue;
            }
            domain.generations.push_back(std::move(*older));
        }

        ASSIGN_OR_RETURN(auto key_type, key_type_of_conf(params, conf_name));
        if (!key_type) {
            ASSIGN_OR_RETURN(auto key, pki::parse_private_key(domain.generations[domain.current].key_pem));
            ASSIGN_OR_RETURN(key_type, pki::key_type_of(*key));
        }
        domain.config.key_type = *key_type;
        domain.config.reuse_key = params.get("reuse_key") == "True";
        if (const ConfigValue* before = conf.find("renew_before_expiry")) {
            auto parsed = parse_certbot_interval(before->text());
            if (!parsed.ok()) {
                return Status::Invalid(conf_name + ":" + std::to_string(before->line) +
                                       ": renew_before_expiry: " + parsed.status().message());
            }
            domain.config.renew_before = *parsed;
        }
        struct stat key_stat {};
        const stdfs::path key_file = archive / ("privkey" + std::to_string(*current_n) + ".pem");
        if (::stat(key_file.c_str(), &key_stat) != 0) {
            return errno_status("cannot stat " + key_file.string());
        }
        domain.config.owner_uid = key_stat.st_uid;
        domain.config.group_gid = key_stat.st_gid;
        domain.config.mode = key_stat.st_mode & 0777;

        if (const std::string hook = params.get("renew_hook"); !hook.empty()) {
            domain.config.deploy_hooks.push_back("sh -c " + shell_word(hook));
        }
        for (const auto& program : global_hooks) {
            domain.config.deploy_hooks.push_back(shell_word(program));
        }
        for (const char* kind : {"pre_hook", "post_hook"}) {
            if (!params.get(kind).empty()) {
                plan.notes.push_back(name + ": its " + std::string(kind) + " is not imported (certfs renews without " +
                                     "stopping anything; the deploy hook runs after each renewal)");
            }
        }

        ASSIGN_OR_RETURN(auto issuer, issuer_for(name, params, leaf->dns_names));
        domain.config.issuer = issuer.first;
        plan.lineages.push_back(
            CertbotLineage{name, issuer.first, issuer.second, domain.generations.size(), *current_n, leaf->not_after});
        plan.domains.push_back(std::move(domain));
        return Status::Ok();
    }
};

} // namespace

Result<Duration> parse_certbot_interval(std::string_view text)
{
    // "<number> <unit>" parts, as certbot's parsedatetime reads them, or a bare number of days.
    static const std::map<std::string, std::int64_t, std::less<>> seconds = {
        {"", 86400},      {"d", 86400},      {"day", 86400}, {"days", 86400},    {"w", 604800},
        {"week", 604800}, {"weeks", 604800}, {"h", 3600},    {"hour", 3600},     {"hours", 3600},
        {"m", 60},        {"min", 60},       {"minute", 60}, {"minutes", 60},    {"s", 1},
        {"sec", 1},       {"second", 1},     {"seconds", 1}, {"month", 2592000}, {"months", 2592000}};
    const std::string bad = "'" + std::string(text) + "' is not an interval such as '30 days'";
    std::int64_t total = 0;
    std::string_view rest = text;
    auto skip = [&rest](auto pred) {
        std::size_t n = 0;
        while (n < rest.size() && pred(static_cast<unsigned char>(rest[n]))) {
            ++n;
        }
        std::string_view taken = rest.substr(0, n);
        rest.remove_prefix(n);
        return taken;
    };
    skip([](unsigned char c) { return c == ' '; });
    if (rest.empty()) {
        return Status::Invalid(bad);
    }
    while (!rest.empty()) {
        const std::string_view digits = skip([](unsigned char c) { return std::isdigit(c) != 0; });
        std::int64_t n = 0;
        if (digits.empty() || std::from_chars(digits.data(), digits.data() + digits.size(), n).ec != std::errc()) {
            return Status::Invalid(bad);
        }
        skip([](unsigned char c) { return c == ' '; });
        std::string unit(skip([](unsigned char c) { return std::isalpha(c) != 0; }));
        std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return std::tolower(c); });
        auto it = seconds.find(unit);
        if (it == seconds.end()) {
            return Status::Invalid("'" + std::string(text) + "': unknown unit '" + unit + "'");
        }
        if (n > std::int64_t(100) * 365 * 86400 / it->second) {
            return Status::Invalid("'" + std::string(text) + "' is over a hundred years");
        }
        total += n * it->second;
        skip([](unsigned char c) { return c == ' ' || c == ','; });
    }
    if (total == 0 || total > std::int64_t(100) * 365 * 86400) {
        return Status::Invalid(bad);
    }
    return std::chrono::duration_cast<Duration>(std::chrono::seconds(total));
}

Result<CertbotPlan> read_certbot(store::Store& st, const CertbotOptions& options)
{
    Reader reader{st, options, options.config_dir, {}, {}, {}, {}};
    std::error_code ec;
    if (!stdfs::is_directory(reader.dir / "renewal", ec)) {
        return Status::Invalid(options.config_dir +
                               " has no renewal/ directory: it is not certbot's configuration directory");
    }
    ASSIGN_OR_RETURN(auto issuers, st.list_issuers());
    for (const auto& issuer : issuers) {
        if (issuer.kind != "acme") {
            continue;
        }
        if (auto config = renew::parse_acme_config(issuer.config_json); config.ok()) {
            reader.existing.emplace(config->directory, issuer.name);
        }
    }
    reader.global_hooks = hook_programs(reader.dir / "renewal-hooks" / "deploy");
    for (const char* kind : {"pre", "post"}) {
        if (!hook_programs(reader.dir / "renewal-hooks" / kind).empty()) {
            reader.plan.notes.push_back("renewal-hooks/" + std::string(kind) +
                                        "/ is not imported (certfs renews without stopping anything; "
                                        "renewal-hooks/deploy/ runs after each renewal)");
        }
    }
    std::vector<stdfs::path> confs;
    for (const auto& entry : stdfs::directory_iterator(reader.dir / "renewal", ec)) {
        if (entry.path().extension() == ".conf") {
            confs.push_back(entry.path());
        }
    }
    if (ec) {
        return Status::Invalid((reader.dir / "renewal").string() + ": " + ec.message());
    }
    std::sort(confs.begin(), confs.end());
    for (const auto& conf : confs) {
        TRY(reader.lineage(conf));
    }
    return std::move(reader.plan);
}

} // namespace certfs::migrate
