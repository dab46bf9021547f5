#include "tests/support/servers.hpp"

#include "tests/support/pairs.hpp"

namespace certfs::test {

Handshake handshake(int port, const std::string& name, const std::string& ca_file)
{
    auto r = run({k_openssl, "s_client", "-connect", "127.0.0.1:" + std::to_string(port), "-servername", name,
                  "-CAfile", ca_file, "-verify_hostname", name, "-verify_return_error"},
                 {}, 20);
    Handshake h;
    const auto begin = r.out.find("-----BEGIN CERTIFICATE-----");
    const auto end = r.out.find("-----END CERTIFICATE-----", begin);
    if (begin != std::string::npos && end != std::string::npos) {
        h.serial = serial_of(r.out.substr(begin, end + 26 - begin));
    }
    h.verified = r.exit_code == 0 && r.out.find("Verify return code: 0 (ok)") != std::string::npos;
    if (!h.verified) {
        h.error = "exit " + std::to_string(r.exit_code) + ": " + r.err.substr(0, 400);
    }
    return h;
}

Handshake first_answer(OwnedProcess& server, int port, const std::string& name, const std::string& ca_file)
{
    Handshake h;
    wait_until(
        [&] {
            h = handshake(port, name, ca_file);
            return h.verified || server.exited();
        },
        std::chrono::seconds(20));
    return h;
}

Nginx::Nginx(std::filesystem::path at, const std::filesystem::path& live, std::string site)
    : dir(std::move(at)), name(std::move(site))
{
    std::filesystem::create_directories(dir / "tmp");
    serve_from(live);
}

void Nginx::serve_from(const std::filesystem::path& live) const
{
    write_file(conf().string(), "pid " + (dir / "nginx.pid").string() + ";\nerror_log " + error_log().string() +
                                    " notice;\nworker_processes 2;\nevents { worker_connections 64; }\n"
                                    "http {\n    access_log off;\n    client_body_temp_path " +
                                    (dir / "tmp").string() +
                                    ";\n    server {\n        listen 127.0.0.1:" + std::to_string(port) +
                                    " ssl;\n        server_name " + name + ";\n        ssl_certificate " +
                                    live.string() + "/fullchain.pem;\n        ssl_certificate_key " + live.string() +
                                    "/privkey.pem;\n        location / { return 200 \"ok\\n\"; }\n"
                                    "    }\n}\n");
}

std::vector<std::string> Nginx::argv() const
{
    return {k_nginx, "-p", dir.string(), "-c", conf().string(), "-e", error_log().string()};
}

OwnedProcess Nginx::start(const std::string& user) const
{
    std::vector<std::string> full;
    if (!user.empty()) {
        full = {"/usr/bin/setpriv", "--reuid=" + user, "--regid=" + user, "--init-groups", "--"};
    }
    for (const auto& a : argv()) {
        full.push_back(a);
    }
    full.insert(full.end(), {"-g", "daemon off;"});
    return spawn(full, current_environment(), dir / "nginx.out");
}

} // namespace certfs::test
