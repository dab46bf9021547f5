// Issuers turn a CSR into a certificate. The renewal pipeline (renewer.hpp) owns keys, leases
// and commits; an issuer only signs or asks a CA to sign.
#pragma once

#include <memory>
#include <string>

#include "core/pki.hpp"
#include "core/status.hpp"
#include "store/model.hpp"
#include "store/store.hpp"

namespace certfs::renew {

struct IssueRequest {
    const store::Domain* domain = nullptr; // the configuration being issued for
    std::string csr_pem;                    // over the new key, with every name as a SAN
    pki::Names names;                       // canonical names from the configuration
};

struct Issued {
    std::string cert_pem;  // the leaf
    std::string chain_pem; // its issuer first, up to (and including, for a private CA) the root
};

// Failures are a Status: Code::unavailable for "try again later" (CA unreachable or busy),
// Code::invalid for a request the CA refuses, anything else for a fault that needs the admin.
class Issuer {
public:
    virtual ~Issuer() = default;
    virtual Result<Issued> issue(const IssueRequest& request) = 0;
};

// Loads the issuer named `name` from the store, whatever its kind.
Result<std::unique_ptr<Issuer>> load_issuer(store::Store& store, std::string_view name);

} // namespace certfs::renew
