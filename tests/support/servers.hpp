// Debian's TLS servers and client as the integration tests drive them: `openssl s_client`
// handshakes, and nginx serving one site from a directory of PEM files (the mount's live/<name>/,
// or certbot's live/ before a move).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "tests/support/child.hpp"
#include "tests/support/testutil.hpp"

namespace certfs::test {

inline constexpr const char* k_openssl = "/usr/bin/openssl";
inline constexpr const char* k_nginx = "/usr/sbin/nginx";

// What one TLS client saw: the serial of the server's certificate, and whether its chain
// verified against the local CA for the name asked.
struct Handshake {
    std::string serial; // empty when there was no certificate
    bool verified = false;
    std::string error; // s_client's own words when it did not verify or connect
};

// One `openssl s_client` handshake with 127.0.0.1:port for `name`, verified against ca_file.
Handshake handshake(int port, const std::string& name, const std::string& ca_file);

// Waits until `server` answers a verified handshake for `name`, or has exited; returns the
// last handshake.
Handshake first_answer(OwnedProcess& server, int port, const std::string& name, const std::string& ca_file);

// nginx serving one TLS site, `name`, from fullchain.pem and privkey.pem in `live`, with its
// prefix, pid file and logs in `dir`: an ordinary site, where only the two paths name the files.
struct Nginx {
    std::filesystem::path dir;
    std::string name;
    int port = free_port();

    Nginx(std::filesystem::path at, const std::filesystem::path& live, std::string site);
    // Rewrites the config to read from `live` (a reload makes nginx take it).
    void serve_from(const std::filesystem::path& live) const;
    std::filesystem::path conf() const { return dir / "nginx.conf"; }
    std::filesystem::path error_log() const { return dir / "error.log"; }
    std::vector<std::string> argv() const;
    // The deploy hook: `nginx -s reload`, as root (it signals the master named in the pid file).
    std::string reload_hook() const { return join(argv()) + " -s reload"; }
    // Starts the master in the foreground (`-g 'daemon off;'`), as `user` when given: all of
    // nginx then runs as that user and its groups (setpriv, which execs nginx in its place, so
    // that the process owned is nginx's master).
    OwnedProcess start(const std::string& user = "") const;
    std::string log() const { return file_or_empty(error_log()) + file_or_empty(dir / "nginx.out"); }
};

} // namespace certfs::test
