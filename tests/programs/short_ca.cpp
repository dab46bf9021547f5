// short_ca: a certmonger-protocol CA helper for the kill tests (tests/test_crash.cpp) that issues
// certificates of any lifetime, down to seconds, which `openssl x509 -req -days` cannot.
//
//   short_ca CA_CERT CA_KEY DIR VALIDITY_FILE DELAY_MS
//
// For SUBMIT and POLL it appends "start PID" to DIR/<first host name>.ca.log, sleeps DELAY_MS,
// signs $CERTMONGER_CSR for the names in $CERTMONGER_REQ_HOSTNAME, valid from a second ago for
// the number of milliseconds in VALIDITY_FILE (read at each request, so that a test can
// lengthen the certificates it gets), appends "issued SERIAL" to the log, and prints the
// certificate and then the CA certificate: exit 0. Other operations: exit 6 (not supported).
// Anything wrong: one line on stdout (certmonger's channel for the reason), exit 4.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "core/pki.hpp"

namespace {

using namespace certfs;

std::string env_or_empty(const char* name)
{
    const char* value = std::getenv(name);
    return value == nullptr ? std::string() : std::string(value);
}

std::string read_all(const std::string& path)
{
    std::ifstream in(path);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

// One line, in one write, so that lines of helpers running at once do not interleave.
void append_line(const std::string& path, const std::string& line)
{
    std::ofstream(path, std::ios::app) << line + "\n" << std::flush;
}

int fail(const std::string& why)
{
    std::cout << "short_ca: " << why << '\n';
    return 4;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 6) {
        std::cerr << "usage: short_ca CA_CERT CA_KEY DIR VALIDITY_FILE DELAY_MS\n";
        return 2;
    }
    const std::string operation = env_or_empty("CERTMONGER_OPERATION");
    if (!operation.empty() && operation != "SUBMIT" && operation != "POLL") {
        return 6;
    }
    const std::string dir = argv[3];
    pki::Names names;
    std::istringstream hosts(env_or_empty("CERTMONGER_REQ_HOSTNAME"));
    for (std::string host; std::getline(hosts, host);) {
        names.dns.push_back(host);
    }
    if (names.dns.empty()) {
        return fail("no CERTMONGER_REQ_HOSTNAME");
    }
    const std::string log = dir + "/" + names.dns.front() + ".ca.log";
    append_line(log, "start " + std::to_string(::getpid()));
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(argv[5])));

    const long validity_ms = std::atol(read_all(argv[4]).c_str());
    if (validity_ms <= 0) {
        return fail(std::string("no validity in ") + argv[4]);
    }
    auto ca_cert = pki::parse_cert(read_all(argv[1]));
    auto ca_key = pki::parse_private_key(read_all(argv[2]));
    auto csr = pki::parse_csr(env_or_empty("CERTMONGER_CSR"));
    if (!ca_cert.ok() || !ca_key.ok() || !csr.ok()) {
        return fail("cannot read the CA or the request");
    }
    auto subject_key = pki::csr_public_key(**csr);
    auto serial = pki::random_serial_hex();
    if (!subject_key.ok() || !serial.ok()) {
        return fail("cannot read the request's key");
    }
    const TimePoint now = std::chrono::system_clock::now();
    pki::LeafParams params;
    params.names = names;
    params.not_before = now - std::chrono::seconds(1);
    params.not_after = now + std::chrono::milliseconds(validity_ms);
    params.serial_hex = *serial;
    auto leaf = pki::sign_leaf(**subject_key, **ca_cert, **ca_key, params);
    if (!leaf.ok()) {
        return fail("cannot sign: " + leaf.status().message());
    }
    append_line(log, "issued " + *serial);
    std::cout << pki::cert_pem(**leaf) << pki::cert_pem(**ca_cert) << std::flush;
    return 0;
}
