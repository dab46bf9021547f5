// The `helper` issuer: an external program that speaks certmonger's CA helper protocol
// (docs/helpers.md is the contract). Every run goes through run_program(): no shell, stdin
// /dev/null, a clean environment holding only PATH and the CERTMONGER_* variables, the
// configured timeout.
//
// Errors follow issuer.hpp: Code::invalid when the CA rejects the request (exit 2),
// Code::unavailable to try again later (exit 3),
// Code::corrupt when the helper needs more configuration (exit 4; status.hpp has no "failed
// precondition", and like corrupt settings it needs the admin to fix the issuer), and
// Code::io_error for a helper that broke the protocol (another exit status, a signal, a
// timeout, exit 0 without a certificate). No message holds key material.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "renew/issuer.hpp"

namespace certfs::renew {

inline constexpr const char* k_helper_path = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
// A delay asked for with exit status 5 is kept within these bounds.
inline constexpr Duration k_helper_min_delay = std::chrono::seconds(1);
inline constexpr Duration k_helper_max_delay = std::chrono::hours(1);

struct HelperConfig {
    std::string command;                               // as the admin wrote it; split at each run
    Duration timeout = std::chrono::minutes(5);        // of each run of the helper
    Duration poll_interval = std::chrono::seconds(60); // after exit status 1 (wait, no delay given)
    Duration max_wait = std::chrono::minutes(5);       // sleeping between polls in one attempt
    std::string profile;                               // CERTMONGER_CA_PROFILE when not empty
};

std::string helper_config_json(const HelperConfig& config);
// Corrupt when the JSON is unreadable or holds no command.
Result<HelperConfig> parse_helper_config(const std::string& json);

// One certificate of a helper's listing (SUBMIT's stdout, or FETCH-ROOTS's).
struct HelperCert {
    enum class List { roots, other_roots, others }; // FETCH-ROOTS's three blank-line separated lists
    std::string nickname;                           // the text line before it; empty when there was none
    std::string pem;                                // canonical PEM of the one certificate
    List list = List::roots;
};

// Parses every CERTIFICATE PEM block of a helper's stdout, in order, with the nickname line
// before each and the list it belongs to (each blank line after a certificate starts the next
// list). Other text is skipped. Invalid for a damaged or unterminated block, or a PEM block
// that is not a certificate. An output without certificates gives an empty vector.
Result<std::vector<HelperCert>> parse_helper_certs(std::string_view output);

// What a helper prints with exit status 5 (wait, and ask again after a delay): "SECONDS\nCOOKIE".
// The delay is kept within k_helper_min_delay..k_helper_max_delay; the cookie is the rest of
// the output, trimmed (empty when there is none). Invalid when the first line is not a
// number of seconds.
struct HelperWait {
    Duration delay;
    std::string cookie;
};
Result<HelperWait> parse_helper_wait(std::string_view output);

// The outcome of running IDENTIFY or FETCH-ROOTS, for `issuer add` and `issuer show`. An error
// Status says why the helper gave nothing (NotFound when the program cannot be started,
// otherwise IoError naming the exit status, e.g. "exit status 6 (operation not supported)").
Result<std::string> helper_identify(const HelperConfig& config, std::string_view ca_name); // first line
Result<std::vector<HelperCert>> helper_fetch_roots(const HelperConfig& config, std::string_view ca_name);

struct NewHelperIssuer {
    store::NewIssuer issuer; // ready for Store::add_issuer; cert_pem holds the roots, if any
    std::size_t roots = 0;   // how many roots cert_pem holds
    Status roots_status;     // why there are none: FETCH-ROOTS failed or is not supported
};

// Checks the command (Invalid on bad quoting), runs FETCH-ROOTS once (NotFound when the
// program cannot be started) and builds the issuer. A helper that fails FETCH-ROOTS, or does
// not support it, still gives an issuer, without roots; roots_status says why.
Result<NewHelperIssuer> create_helper_issuer(std::string_view name, const HelperConfig& config);

// Thread-safety: like the Store it holds, one thread at a time.
class HelperIssuer final : public Issuer {
public:
    // How issue() waits between polls; tests inject one that does not sleep.
    using Sleeper = std::function<void(Duration)>;

    static Result<std::unique_ptr<HelperIssuer>> load(store::Store& store, const store::Issuer& issuer);

    // SUBMIT, then POLL while the helper says "wait", sleeping between runs, for at most
    // max_wait in total; a request still waiting then is returned pending, with its cookie and
    // the delay the helper asked for (the renewer keeps both in the store). A certificate
    // printed alone gets its chain from FETCH-ROOTS (or the roots stored at add time); the
    // store validates that the chain links.
    Result<Issued> issue(const IssueRequest& request) override;
    // POLL with the cookie (SUBMIT again when the helper gave none), then as issue().
    Result<Issued> poll(const IssueRequest& request, const std::string& cookie) override;

    void set_sleeper(Sleeper sleeper) { m_sleep = std::move(sleeper); }
    const HelperConfig& config() const { return m_config; }

private:
    HelperIssuer(store::Store& store, std::string name, HelperConfig config, std::vector<std::string> argv,
                 std::string stored_roots_pem);

    Result<Issued> exchange(const IssueRequest& request, std::string cookie);
    Result<std::vector<std::string>> request_env(const IssueRequest& request);
    Result<Issued> complete(const std::string& output);

    store::Store& m_store;
    std::string m_name;
    HelperConfig m_config;
    std::vector<std::string> m_argv;
    std::string m_stored_roots_pem;
    Sleeper m_sleep;
};

} // namespace certfs::renew
