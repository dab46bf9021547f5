#include "store/model.hpp"

#include <array>
#include <utility>

namespace certfs::store {

namespace {

constexpr std::array<std::pair<DomainState, std::string_view>, 8> k_states = {{
    {DomainState::monitoring, "monitoring"},
    {DomainState::due, "due"},
    {DomainState::issuing, "issuing"},
    {DomainState::pending, "pending"},
    {DomainState::hooks, "hooks"},
    {DomainState::backoff, "backoff"},
    {DomainState::rejected, "rejected"},
    {DomainState::misconfigured, "misconfigured"},
}};

constexpr std::array<std::pair<Reason, std::string_view>, 3> k_reasons = {{
    {Reason::issued, "issued"},
    {Reason::renewed, "renewed"},
    {Reason::imported, "imported"},
}};

template <typename E, std::size_t N>
std::string_view name_of(const std::array<std::pair<E, std::string_view>, N>& table, E value)
{
    for (const auto& [v, name] : table) {
        if (v == value) {
            return name;
        }
    }
    return "unknown";
}

template <typename E, std::size_t N>
Result<E> parse_name(const std::array<std::pair<E, std::string_view>, N>& table, std::string_view name,
                     std::string_view what)
{
    for (const auto& [v, n] : table) {
        if (n == name) {
            return v;
        }
    }
    return Status::Invalid("unknown " + std::string(what) + " '" + std::string(name) + "'");
}

} // namespace

std::string_view state_name(DomainState state) { return name_of(k_states, state); }

Result<DomainState> parse_state(std::string_view name) { return parse_name(k_states, name, "state"); }

std::string_view reason_name(Reason reason) { return name_of(k_reasons, reason); }

Result<Reason> parse_reason(std::string_view name) { return parse_name(k_reasons, name, "reason"); }

} // namespace certfs::store
