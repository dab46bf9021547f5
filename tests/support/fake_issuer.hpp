// An in-process issuer for tests of the renewal pipeline, the batch runner and the scheduler,
// plugged in through renew::IssuerFactory. Per domain, a test scripts what issue() does: sign
// (the default), fail with a given Status (any Code, any Retry-After), throw (a bug in an
// issuer, as the renewal threads' boundaries must survive), or hang until released;
// and it counts the calls. Signing is done by the store's local CA (renew/local_ca.hpp), so a
// committed generation is as valid as a real one; only the script is fake.
//
// Thread-safety: every member may be called from any thread; the scheduler's workers call the
// issuers it makes concurrently. The factory's issuers share this object's state and keep it
// alive. Destruction releases every hang, so that no worker stays blocked.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/status.hpp"
#include "renew/issuer.hpp"

namespace certfs::test {

class FakeIssuers {
public:
    FakeIssuers();
    ~FakeIssuers();
    FakeIssuers(const FakeIssuers&) = delete;
    FakeIssuers& operator=(const FakeIssuers&) = delete;

    // For Renewer and SchedulerOptions::issuers. A record must be of kind "local" (the CA that
    // signs); another kind is Invalid, naming it.
    renew::IssuerFactory factory() const;

    void fail(const std::string& domain, Status status);     // every issue() for it fails so
    void raise(const std::string& domain, std::string what); // every issue() for it throws
    void hang(const std::string& domain);                    // issue() blocks until release()
    void release(const std::string& domain);                 // hung and later calls sign
    void succeed(const std::string& domain);                 // back to signing

    // Calls of issue() for `domain` so far (each hung call counts once, when it starts).
    int calls(const std::string& domain) const;
    // Waits until `hangs` calls for `domain` are blocked in hang(); false after the timeout.
    bool wait_hanging(const std::string& domain, int hangs = 1, Duration timeout = std::chrono::seconds(10)) const;

    struct State; // shared with the issuers the factory makes

private:
    std::shared_ptr<State> m_state;
};

} // namespace certfs::test
