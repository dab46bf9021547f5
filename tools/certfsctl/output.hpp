// certfsctl's output: aligned tables for people, stable JSON for machines.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/clock.hpp"
#include "core/status.hpp"
#include "store/model.hpp"

namespace certfs::ctl {

// `text` with what could steer a terminal written \xNN: C0 controls and DEL, the C1 controls
// (U+0080..U+009F, CSI among them), and bytes that are not UTF-8. A name or an error written
// into the store by hand, or a CA's or a hook's message, cannot move the cursor or clear the
// admin's screen. Everything certfsctl prints for people goes through it.
std::string terminal_safe(std::string_view text);

// Prints rows under a header, columns separated by two spaces and padded to the widest cell
// (each cell terminal_safe()).
void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

std::string time_or_dash(const std::optional<TimePoint>& t);
nlohmann::json time_or_null(const std::optional<TimePoint>& t);
std::string user_name(std::uint32_t uid);
std::string group_name(std::uint32_t gid);
std::string mode_text(std::uint32_t mode); // "0600"

// The JSON forms. Their keys are part of certfsctl's interface: only ever add keys.
nlohmann::json domain_json(const store::Domain& d);
nlohmann::json generation_json(const store::Generation& g);
nlohmann::json issuer_json(const store::Issuer& i);

// An error, as one line on stderr ("certfsctl: ..."); returns the failure exit status, 1.
int fail(const Status& status);
// The items separated by sep, "-" when there are none.
std::string join(const std::vector<std::string>& items, const char* sep = ", ");
void print_json(const nlohmann::json& j);
// What --now means, said where it takes effect.
std::string moved_now_note(const std::string& domain, std::int64_t gen);

} // namespace certfs::ctl
