// What counts as a matching key and certificate, for every reader the tests run: the threads of
// test_fs and the pair_reader processes (tests/programs/pair_reader.cpp). No Catch here, so that
// pair_reader can link it. Thread-safe: each call parses its own copies.
#pragma once

#include <optional>
#include <string>

namespace certfs::test {

// The serial of cert_pem's first certificate when key_pem is its key; nullopt when it is not,
// or when either does not parse.
std::optional<std::string> matching_serial(const std::string& key_pem, const std::string& cert_pem);

// Whether key_pem is the key of cert_pem's first certificate.
inline bool pair_matches(const std::string& key_pem, const std::string& cert_pem)
{
    return matching_serial(key_pem, cert_pem).has_value();
}

// The serial of pem's first certificate (lower-case hex), or "unreadable".
std::string serial_of(const std::string& pem);

} // namespace certfs::test
