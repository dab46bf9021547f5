// A private Let's Encrypt test CA for ACME tests: pebble plus pebble-challtestsrv (Debian's
// pebble 2.4.0), started on loopback with ports and a temp directory of their own, and stopped
// when the harness goes out of scope, also when the test failed.
//
// How the pair is wired:
// - pebble serves ACME over HTTPS on directory_url() with a TLS certificate the harness makes
//   per instance (SAN 127.0.0.1 and localhost), signed by the CA in ca_bundle().
// - pebble resolves every name through challtestsrv's DNS (-dnsserver), which answers every A
//   query with 127.0.0.1 and no AAAA query at all (pebble dials the first AAAA answer first).
//   TXT records come from set_txt().
// - challtestsrv's own http-01, https-01 and tls-alpn-01 responders are disabled: pebble's VA
//   validates http-01 against 127.0.0.1:http01_port() and tls-alpn-01 against
//   127.0.0.1:tlsalpn01_port(), where the client under test runs its own responder. Both ports
//   were free when chosen and nothing of the harness listens there.
//
// Environment knobs of pebble 2.4 (all read once at start-up; see PebbleOptions):
//   PEBBLE_VA_NOSLEEP=1        always set: otherwise the VA sleeps 0-5 s before each validation.
//   PEBBLE_WFE_NONCEREJECT     % of good nonces refused with badNonce (pebble's default is 5).
//   PEBBLE_AUTHZREUSE          % chance that a new order reuses a valid authorization of the
//                              same account (pebble's default is 50, which makes tests flaky).
//   PEBBLE_VA_ALWAYS_VALID=1   challenges succeed without any request to the client.
//   PEBBLE_CHAIN_LENGTH        intermediates between root and leaf (default 1; 0 panics).
//   PEBBLE_ALTERNATE_ROOTS     extra root chains offered through Link: rel="alternate".
//   PEBBLE_VA_SLEEPTIME, PEBBLE_WFE_ORDERS_PER_PAGE: irrelevant here, left alone.
// Any PEBBLE_* variable in the test's own environment is removed from the children's.
//
// Thread-safety: one Pebble may be used from several threads (all methods are const except
// construction and destruction). Construct it inside a TEST_CASE: failures are Catch2 REQUIREs.
// The children get SIGKILL when the thread that constructed the Pebble ends (PR_SET_PDEATHSIG),
// so a test binary that crashes or hits ctest's timeout leaves no server running; construct it
// in the thread that outlives its use. Its temp directory stays behind in that case.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "tests/support/child.hpp"
#include "tests/support/testutil.hpp"

namespace certfs::test {

// One HTTP exchange over loopback with libcurl: GET, or POST of `json` when given. HTTPS trusts
// only ca_file (e.g. Pebble::ca_bundle()); proxies from the environment are ignored.
struct HttpReply {
    long status = 0; // 0 when there was no HTTP answer; error says why
    std::string body;
    std::string error; // curl's message
};
HttpReply http_request(const std::string& url, const std::string& ca_file, const std::string* json = nullptr,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5));

struct PebbleOptions {
    int nonce_reject_percent = 0; // PEBBLE_WFE_NONCEREJECT
    int authz_reuse_percent = 0;  // PEBBLE_AUTHZREUSE: 0 so every order needs its own validation
    bool always_valid = false;    // PEBBLE_VA_ALWAYS_VALID
    // externalAccountBindingRequired; eab_keys are pebble's externalAccountMACKeys: key id ->
    // HMAC key as unpadded base64url (a padded or otherwise bad key makes pebble exit at start).
    bool require_eab = false;
    std::map<std::string, std::string> eab_keys;
    // pebble's domainBlocklist: newOrder for one of these names or any name below it is refused
    // with urn:ietf:params:acme:error:rejectedIdentifier ("... forbidden by policy").
    std::vector<std::string> blocked_domains;
    // certificateValidityPeriod in seconds; 0 keeps pebble's default (157766400 s, 5 years).
    // Issued certificates run [now, now + period - 1 s] unless the order asks for notAfter.
    std::uint64_t certificate_validity_s = 0;
    int chain_length = 1;    // PEBBLE_CHAIN_LENGTH, at least 1
    int alternate_roots = 0; // PEBBLE_ALTERNATE_ROOTS
    std::chrono::seconds start_timeout{20};
};

class Pebble {
public:
    // Starts challtestsrv and pebble and waits until pebble's directory and management
    // interface answer over HTTPS, challtestsrv's management API answers and its DNS answers
    // over UDP. A start that fails because a chosen port was taken meanwhile is retried with
    // fresh ports; any other failure (or options.start_timeout) FAILs with both logs.
    explicit Pebble(PebbleOptions options = {});
    // Stops both processes (SIGTERM, SIGKILL after 5 s) and removes the temp directory.
    ~Pebble() = default;
    Pebble(const Pebble&) = delete;
    Pebble& operator=(const Pebble&) = delete;

    std::string directory_url() const;  // https://127.0.0.1:PORT/dir
    std::string management_url() const; // https://127.0.0.1:PORT (roots, intermediates, ...)
    // PEM of the CA that signed pebble's HTTPS certificate: what a client passes as --ca-bundle.
    std::string ca_bundle() const { return (m_dir / "tls-ca.pem").string(); }
    // PEM of the root that issues the ACME certificates (GET management_url()/roots/0, fetched
    // once at start: pebble keeps it for its lifetime).
    const std::string& issuing_root_pem() const { return m_issuing_root_pem; }
    int http01_port() const { return m_ports.http01; }
    int tlsalpn01_port() const { return m_ports.tlsalpn01; }
    int dns_port() const { return m_ports.dns; }                      // challtestsrv, UDP and TCP
    std::string challtestsrv_management() const;                      // http://127.0.0.1:PORT
    const std::filesystem::path& dir() const { return m_dir.path(); } // the instance's temp dir

    // challtestsrv's management API. Hosts are DNS names; a missing final dot is added
    // ("_acme-challenge.a.test" -> "_acme-challenge.a.test."). REQUIRE status 200.
    void set_txt(const std::string& host, const std::string& value) const;
    void clear_txt(const std::string& host) const;
    // Any other endpoint (/add-a, /set-servfail, /dns-request-history, ...): POSTs the JSON
    // body and returns the HTTP status (0 when no answer), with the response body in *body.
    long challtestsrv_post(const std::string& path, const std::string& json, std::string* body = nullptr) const;
    // GET on pebble's management interface (e.g. "/intermediates/0",
    // "/cert-status-by-serial/<hex>"); returns the status, the body in *body.
    long management_get(const std::string& path, std::string* body = nullptr) const;

    // Both processes' output so far (pebble first), for INFO() when a test fails.
    std::string log() const;
    pid_t pebble_pid() const { return m_pebble.pid(); }
    pid_t challtestsrv_pid() const { return m_challtestsrv.pid(); }

    struct Ports {
        int acme = 0;
        int management = 0;
        int challtestsrv = 0;
        int dns = 0;
        int http01 = 0;
        int tlsalpn01 = 0;
    };

private:
    enum class Start { ready, port_taken };
    Start start(const PebbleOptions& options);
    void write_config(const PebbleOptions& options) const;
    void stop_children() noexcept;

    // Declared first, destroyed last: the children go before their directory.
    TempDir m_dir;
    Ports m_ports;
    std::string m_issuing_root_pem;
    OwnedProcess m_challtestsrv;
    OwnedProcess m_pebble;
};

} // namespace certfs::test
