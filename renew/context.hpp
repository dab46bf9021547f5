// What the renewals of one process share, instead of process-wide globals: HTTP connections
// kept for reuse across renewals, and the built-in http-01 servers (one listening socket per
// address, shared by the orders in flight on it). The daemon and certfsctl each make one and
// hand it to their issuers through builtin_issuers() (issuer.hpp); a test makes its own.
//
// Thread-safety: both members are thread-safe. Every issuer made with a context keeps it
// alive (shared_ptr), so it outlives the connections and servers lent from it.
#pragma once

#include "renew/acme_challenge.hpp"
#include "renew/acme_http.hpp"

namespace certfs::renew {

struct RenewContext {
    acme::HttpClientPool http;
    acme::Http01Servers http01;
};

} // namespace certfs::renew
