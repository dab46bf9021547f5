// A store with ACME issuers for one private pebble (tests/support/pebble.hpp), used in-process through
// the renewal pipeline: shared by test_acme and test_acme_e2e.
#pragma once

#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "renew/acme_issuer.hpp"
#include "store/store.hpp"
#include "tests/support/pebble.hpp"
#include "tests/support/testutil.hpp"

namespace certfs::test {

struct AcmeFixture {
    Pebble pebble;
    TempDir dir;
    std::string db = (dir / "certfs.db").string();
    std::unique_ptr<store::Store> store =
        store::Store::open(db, {.create = true, .actor = "test", .clock = nullptr}).value();

    explicit AcmeFixture(PebbleOptions options = {}) : pebble(std::move(options)) {}

    // Settings for this pebble, answering http-01 with the built-in responder on its port.
    renew::AcmeConfig config() const
    {
        renew::AcmeConfig c;
        c.directory = pebble.directory_url();
        c.ca_bundle = pebble.ca_bundle();
        c.http_listen = "127.0.0.1:" + std::to_string(pebble.http01_port());
        c.max_wait = std::chrono::seconds(30);
        return c;
    }

    void add_issuer(const renew::AcmeConfig& c, const std::string& eab_key = "", const std::string& name = "pebble")
    {
        auto issuer = renew::create_acme_issuer(name, c, eab_key);
        INFO(issuer.status().message());
        REQUIRE(issuer.ok());
        REQUIRE(store->add_issuer(*issuer).ok());
    }

    static store::DomainConfig domain(const std::string& name, std::vector<std::string> dns,
                                      std::vector<std::string> ip = {})
    {
        store::DomainConfig c;
        c.name = name;
        c.issuer = "pebble";
        c.dns_names = std::move(dns);
        c.ip_addresses = std::move(ip);
        return c;
    }

    // cert.pem + chain.pem verify against pebble's issuing root, as a TLS client checks them.
    void verify(const std::filesystem::path& cert, const std::filesystem::path& chain) const
    {
        write_file(dir / "root.pem", pebble.issuing_root_pem());
        auto r = run({"/usr/bin/openssl", "verify", "-purpose", "sslserver", "-CAfile", (dir / "root.pem").string(),
                      "-untrusted", chain.string(), cert.string()});
        INFO(r.out << r.err);
        CHECK(r.exit_code == 0);
    }

    // The same for the domain's current generation.
    void verify_served(const std::string& name) const
    {
        auto gen = store->current_generation(name).value();
        write_file(dir / "chain.pem", gen.chain_pem);
        write_file(dir / "cert.pem", gen.cert_pem);
        verify(dir / "cert.pem", dir / "chain.pem");
    }
};

} // namespace certfs::test
