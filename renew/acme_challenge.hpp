// Answering ACME challenges (RFC 8555 §8.3 http-01 and §8.4 dns-01) for the duration of one
// order, and cleaning up afterwards.
//
// http-01 is answered either by files under a webroot that another web server serves, or by a
// small built-in HTTP server. The built-in servers belong to an Http01Servers (one per
// RenewContext, renew/context.hpp): several ChallengeSets (renewals on different threads) on
// one address share one listening socket, which opens with the first and closes when the last
// is destroyed.
//
// dns-01 is answered by an external hook, run without a shell, stdin /dev/null:
//     HOOK [ARGS...] set   _acme-challenge.<identifier>. <txt-value>
//     HOOK [ARGS...] clear _acme-challenge.<identifier>. <txt-value>
// Exit 0 from "set" means the record is in place and visible to the CA (the hook waits for
// propagation itself). "set" must add a value, not replace the record: a wildcard and its base
// name share one record name with two values. "clear" removes only the value it is given.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.hpp"
#include "core/status.hpp"

namespace certfs::renew::acme {

// One challenge the ACME client wants answered.
struct ChallengeSpec {
    std::string type;              // "http-01" or "dns-01"
    std::string identifier;        // "www.example.com"; "example.com" (or "*.example.com") for a
                                   // wildcard authorization; an IP address (http-01 only)
    std::string token;             // base64url characters only
    std::string key_authorization; // token + "." + base64url(account key thumbprint)
};

class Http01Servers;

struct ResponderConfig {
    std::string http_listen = ":80";                 // "ADDR:PORT", "[V6ADDR]:PORT", or ":PORT" for every address
                                                     // (IPv6 and IPv4); numeric addresses only
    std::string webroot;                             // set: http-01 via WEBROOT/.well-known/acme-challenge/TOKEN
    std::string dns_hook;                            // command line for dns-01, split with split_command()
    Duration hook_timeout = std::chrono::minutes(5); // per hook run
    // The built-in servers to answer http-01 on; null: servers of the set's own, shared with
    // no other set (a second set on the same address then cannot listen).
    Http01Servers* servers = nullptr;
};

// The TXT value for a dns-01 challenge: base64url(SHA-256(key_authorization)), no padding.
std::string dns01_txt_value(std::string_view key_authorization);

// "_acme-challenge.example.com." for "example.com", "*.example.com" or "example.com.".
std::string dns01_record_name(std::string_view identifier);

// How the built-in http-01 server reads a request's head (the request line and the header
// lines, without the blank line that ends them): a GET or HEAD of
// /.well-known/acme-challenge/TOKEN (origin or absolute form) with a base64url TOKEN is status
// 200 and the token to look up; anything else is 400 (not an HTTP/1.x request line), 405
// (another method) or 404 (another path), with no token. Any bytes are a valid input.
struct Http01Request {
    int status = 404;
    std::string token;
};
Http01Request parse_http01_request(std::string_view head);

class HttpTokens;

// The built-in http-01 servers of one RenewContext, by listen address. Thread-safe; it must
// outlive every ChallengeSet that uses it.
class Http01Servers {
public:
    Http01Servers();
    ~Http01Servers();
    Http01Servers(const Http01Servers&) = delete;
    Http01Servers& operator=(const Http01Servers&) = delete;

private:
    friend class HttpTokens;
    struct Registry;
    std::unique_ptr<Registry> m_registry;
};

// Every challenge of one order, answerable from prepare() until destruction. Destruction
// removes the webroot files, runs the dns hook's "clear" for each record set, and withdraws
// the tokens from the built-in server; it never throws, and failures there are logged
// (spdlog::warn), not returned.
//
// Thread-safety: prepare() may be called from several threads at once; one ChallengeSet is
// used (and destroyed) by one thread.
class ChallengeSet {
public:
    // Validates every spec before doing anything (Invalid: unknown type, bad token, dns-01 for
    // an IP address or without a hook, unparsable listen address, missing webroot). Then
    // writes webroot files or registers tokens with the built-in server (Unavailable when it
    // cannot listen), then runs the dns hook's "set" for each dns-01 spec in order (IoError
    // naming the exit status and the first line of output). On any error what was already
    // done is undone before returning.
    static Result<std::unique_ptr<ChallengeSet>> prepare(const ResponderConfig& config,
                                                         std::vector<ChallengeSpec> specs);

    ~ChallengeSet();
    ChallengeSet(const ChallengeSet&) = delete;
    ChallengeSet& operator=(const ChallengeSet&) = delete;

private:
    struct DnsRecord {
        std::string name;
        std::string value;
    };

    ChallengeSet() = default;
    Status write_webroot_file(const std::filesystem::path& dir, const ChallengeSpec& spec);
    Status set_dns_record(const ChallengeSpec& spec);

    ResponderConfig m_config;
    std::vector<std::string> m_hook_argv;
    std::vector<std::filesystem::path> m_webroot_files; // written, removed on destruction
    std::vector<DnsRecord> m_dns_records;               // set, cleared on destruction
    std::unique_ptr<Http01Servers> m_own_servers;       // when the config names none
    std::unique_ptr<HttpTokens> m_http;                 // tokens on the built-in server
};

} // namespace certfs::renew::acme
