// Issuers turn a CSR into a certificate. The renewal pipeline (renewer.hpp) owns keys, leases
// and commits; an issuer only signs or asks a CA to sign.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "core/pki.hpp"
#include "core/status.hpp"
#include "store/model.hpp"
#include "store/store.hpp"

namespace certfs::renew {

struct IssueRequest {
    const store::Domain* domain = nullptr; // the configuration being issued for
    std::string csr_pem;                   // over the new key, with every name as a SAN
    pki::Names names;                      // canonical names from the configuration
};

// A request the CA has accepted but not decided on yet.
struct PendingAtCa {
    std::string cookie;     // what poll() asks with
    Duration retry_after{}; // when to ask
};

struct Issued {
    std::string cert_pem;  // the leaf
    std::string chain_pem; // its issuer first, up to (and including, for a private CA) the root
    // Set instead of a certificate when the request is pending: the renewal keeps the key, the
    // CSR and the cookie in the store (store::PendingRequest) and polls after retry_after.
    std::optional<PendingAtCa> pending;
};

// A CA's suggested renewal window for one certificate (ACME renewal information, RFC 9773).
struct RenewalWindow {
    TimePoint start;
    TimePoint end;
    std::optional<Duration> retry_after; // when to ask again, if the CA said
};

// Failures are a Status: Code::unavailable for "try again later" (CA unreachable or busy),
// Code::invalid for a request the CA refuses, anything else for a fault that needs the admin.
class Issuer {
public:
    virtual ~Issuer() = default;
    virtual Result<Issued> issue(const IssueRequest& request) = 0;
    // Asks again about a request issue() left pending, with the same CSR. An Unavailable
    // failure keeps the request for a later poll; any other failure ends it. Issuers that never
    // leave a request pending keep this default, which refuses.
    virtual Result<Issued> poll(const IssueRequest& request, const std::string& cookie);
    // The window the CA suggests for renewing `current`, nullopt when it offers none (the
    // default: only ACME CAs with renewalInfo do).
    virtual Result<std::optional<RenewalWindow>> renewal_info(const store::Generation& current);
};

struct RenewContext; // renew/context.hpp

// Makes the issuer that a stored record describes, for a renewal that uses `store` on the
// calling thread. The scheduler calls it from several workers at once: it must be thread-safe.
// The seam where tests put an in-process fake issuer (tests/support/fake_issuer.hpp).
using IssuerFactory = std::function<Result<std::unique_ptr<Issuer>>(store::Store& store, const store::Issuer& record)>;

// The issuers certfs has, by the record's kind: the local CA, certmonger CA helpers and ACME;
// Invalid for another kind. Its ACME issuers share `context` and keep it alive.
IssuerFactory builtin_issuers(std::shared_ptr<RenewContext> context);

// The issuers of an empty factory: builtin_issuers with a context of its own.
IssuerFactory or_builtin_issuers(IssuerFactory issuers);

// Loads the issuer named `name` from the store with `issuers` (or_builtin_issuers).
Result<std::unique_ptr<Issuer>> load_issuer(store::Store& store, std::string_view name,
                                            const IssuerFactory& issuers = {});

} // namespace certfs::renew
