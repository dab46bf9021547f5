// What certfsctl import-certbot moves into the store from certbot's configuration directory
// (/etc/letsencrypt). certbot keeps, for each lineage NAME:
//
//   renewal/NAME.conf            its settings (configobj): the paths below, the ACME server and
//                                account, the authenticator, key type, renew_before_expiry and
//                                renew_hook (the --deploy-hook it was given)
//   archive/NAME/{cert,chain,fullchain,privkey}N.pem
//                                every generation N it made, the oldest first
//   live/NAME/*.pem              symlinks to the generation it serves
//   accounts/<host>/<path>/<id>/ the account: private_key.json (a JWK) and regr.json (its URL)
//   renewal-hooks/deploy/        programs run after every lineage's renewal
//
// read_certbot reads all of it and changes nothing: the plan it returns is committed by
// Store::import_domains in one transaction. A file that cannot be read or understood stops the
// whole import (Invalid, naming the file); what certfs cannot carry over (a lineage whose
// certificate has expired, pre and post hooks, an authenticator certfs does not have) is left
// out with a note saying so.
#pragma once

#include <string>
#include <vector>

#include "store/store.hpp"

namespace certfs::migrate {

struct CertbotOptions {
    std::string config_dir = "/etc/letsencrypt";
    // The name of the issuer made for certbot's ACME server; empty: "certbot-<host>".
    std::string issuer_name;
    // The CA bundle trusted for the server's HTTPS (the issuer's --ca-bundle); empty: the
    // system's.
    std::string ca_bundle;
};

struct CertbotLineage {
    std::string name;
    std::string issuer;       // the certfs issuer it renews through
    bool new_issuer = false;  // made by this import
    std::size_t archived = 0; // generations imported
    std::size_t current = 0;  // certbot's number of the one served
    TimePoint not_after;      // of the one served
};

struct CertbotPlan {
    std::vector<store::NewIssuer> issuers; // to add
    std::vector<store::ImportedDomain> domains;
    std::vector<CertbotLineage> lineages; // one per domain, in the same order
    std::vector<std::string> notes;       // one line each: what is left out, and why
};

Result<CertbotPlan> read_certbot(store::Store& st, const CertbotOptions& options);

// certbot's renew_before_expiry ("30 days", "2 weeks", "12 hours", a bare number of days).
Result<Duration> parse_certbot_interval(std::string_view text);

} // namespace certfs::migrate
