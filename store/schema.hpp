// Schema migrations: migrations()[i] takes the store from user_version i to i + 1.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace certfs::store {

std::span<const std::string_view> migrations();

// All migrations up to `version` in one text, for tests that build an old store.
std::string schema_for_testing(int version);

} // namespace certfs::store
