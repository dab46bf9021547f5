// What the fuzz targets share: cutting one input into fields, wrapping raw DER in PEM, and
// exercising everything core/pki offers on what a parser accepted. A broken promise (a
// round trip that changes the value) aborts, so that libFuzzer records it as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/handles.hpp"

namespace certfs::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size)
{
    return {reinterpret_cast<const char*>(data), size};
}

// The input cut at each "\n====\n" into exactly n fields (the last takes the rest; missing
// fields are empty), so that seeds stay readable text.
std::vector<std::string_view> fields(std::string_view input, std::size_t n);

// DER bytes as one PEM block of the given label ("CERTIFICATE", "PRIVATE KEY", ...).
std::string pem_of(std::string_view label, std::string_view der);

// Aborts with the message on stderr when ok is false.
void require(bool ok, const char* what);

// Every read-only operation of core/pki on a parsed key, certificates or CSR.
void exercise_key(const EVP_PKEY& key);
void exercise_certs(const std::vector<Cert>& certs);
void exercise_csr(const X509_REQ& req);

// Runs each PEM parser of core/pki on text and exercises what it accepts.
void parse_everything(std::string_view text);

} // namespace certfs::fuzz
