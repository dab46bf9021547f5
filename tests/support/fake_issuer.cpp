#include "tests/support/fake_issuer.hpp"

#include <stdexcept>

#include "renew/local_ca.hpp"

namespace certfs::test {

namespace {

struct Script {
    std::optional<Status> failure;    // set: fail with it
    std::optional<std::string> raise; // set: throw a std::runtime_error with it
    bool hang = false;                // block until released
    int calls = 0;
    int hanging = 0; // calls blocked now
};

} // namespace

struct FakeIssuers::State {
    mutable std::mutex mutex;
    std::condition_variable cv;            // a hang released, or a call started hanging
    std::map<std::string, Script> scripts; // by domain; guarded by mutex
    bool ending = false;                   // the FakeIssuers is gone: nothing hangs; guarded
};

namespace {

class FakeIssuer final : public renew::Issuer {
public:
    FakeIssuer(std::shared_ptr<FakeIssuers::State> state, std::unique_ptr<renew::Issuer> signer)
        : m_state(std::move(state)), m_signer(std::move(signer))
    {
    }

    Result<renew::Issued> issue(const renew::IssueRequest& request) override
    {
        const std::string name = request.domain != nullptr ? request.domain->name : std::string();
        {
            std::unique_lock lock(m_state->mutex);
            Script& script = m_state->scripts[name];
            ++script.calls;
            if (script.hang && !m_state->ending) {
                ++script.hanging;
                m_state->cv.notify_all();
                m_state->cv.wait(lock, [&] { return !script.hang || m_state->ending; });
                --script.hanging;
            }
            if (script.failure) {
                return *script.failure;
            }
            if (script.raise) {
                throw std::runtime_error(*script.raise);
            }
        }
        return m_signer->issue(request);
    }

private:
    std::shared_ptr<FakeIssuers::State> m_state;
    std::unique_ptr<renew::Issuer> m_signer;
};

} // namespace

FakeIssuers::FakeIssuers() : m_state(std::make_shared<State>()) {}

FakeIssuers::~FakeIssuers()
{
    {
        std::lock_guard lock(m_state->mutex);
        m_state->ending = true;
    }
    m_state->cv.notify_all();
}

renew::IssuerFactory FakeIssuers::factory() const
{
    return
        [state = m_state](store::Store& store, const store::Issuer& record) -> Result<std::unique_ptr<renew::Issuer>> {
            if (record.kind != "local") {
                return Status::Invalid("the fake issuer signs with a local CA, and issuer " + record.name +
                                       " is of kind " + record.kind);
            }
            ASSIGN_OR_RETURN(auto signer, renew::LocalCa::load(store, record));
            return std::unique_ptr<renew::Issuer>(new FakeIssuer(state, std::move(signer)));
        };
}

void FakeIssuers::fail(const std::string& domain, Status status)
{
    std::lock_guard lock(m_state->mutex);
    m_state->scripts[domain].failure = std::move(status);
}

void FakeIssuers::raise(const std::string& domain, std::string what)
{
    std::lock_guard lock(m_state->mutex);
    m_state->scripts[domain].raise = std::move(what);
}

void FakeIssuers::hang(const std::string& domain)
{
    std::lock_guard lock(m_state->mutex);
    m_state->scripts[domain].hang = true;
}

void FakeIssuers::release(const std::string& domain)
{
    {
        std::lock_guard lock(m_state->mutex);
        m_state->scripts[domain].hang = false;
    }
    m_state->cv.notify_all();
}

void FakeIssuers::succeed(const std::string& domain)
{
    {
        std::lock_guard lock(m_state->mutex);
        Script& script = m_state->scripts[domain];
        script.failure.reset();
        script.raise.reset();
        script.hang = false;
    }
    m_state->cv.notify_all();
}

int FakeIssuers::calls(const std::string& domain) const
{
    std::lock_guard lock(m_state->mutex);
    auto it = m_state->scripts.find(domain);
    return it == m_state->scripts.end() ? 0 : it->second.calls;
}

bool FakeIssuers::wait_hanging(const std::string& domain, int hangs, Duration timeout) const
{
    std::unique_lock lock(m_state->mutex);
    return m_state->cv.wait_for(lock, timeout, [&] { return m_state->scripts[domain].hanging >= hangs; });
}

} // namespace certfs::test
