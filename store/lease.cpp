#include "store/lease.hpp"

#include <utility>

#include "store/store.hpp"

namespace certfs::store {

std::string lease_scope(const DomainConfig& domain)
{
    return domain.bundle ? "bundle:" + *domain.bundle : "domain:" + domain.name;
}

Result<LeaseGuard> LeaseGuard::acquire(Store& store, std::string scope, std::string owner, Duration ttl)
{
    TRY(store.acquire_lease(scope, owner, ttl));
    return LeaseGuard(store, std::move(scope), std::move(owner));
}

LeaseGuard::LeaseGuard(Store& store, std::string scope, std::string owner)
    : m_store(&store), m_scope(std::move(scope)), m_owner(std::move(owner))
{
}

LeaseGuard::LeaseGuard(LeaseGuard&& other) noexcept
    : m_store(std::exchange(other.m_store, nullptr)), m_scope(std::move(other.m_scope)),
      m_owner(std::move(other.m_owner))
{
}

LeaseGuard& LeaseGuard::operator=(LeaseGuard&& other) noexcept
{
    if (this != &other) {
        release();
        m_store = std::exchange(other.m_store, nullptr);
        m_scope = std::move(other.m_scope);
        m_owner = std::move(other.m_owner);
    }
    return *this;
}

LeaseGuard::~LeaseGuard() { release(); }

void LeaseGuard::release() noexcept
{
    Store* store = std::exchange(m_store, nullptr);
    if (store == nullptr) {
        return;
    }
    try {
        (void)store->release_lease(m_scope, m_owner);
    } catch (...) {
        // Out of memory while releasing: the lease expires after its ttl instead.
    }
}

} // namespace certfs::store
