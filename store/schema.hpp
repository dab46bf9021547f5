// Schema migrations: migrations()[i] takes the store from user_version i to i + 1.
#pragma once

#include <span>
#include <string_view>

namespace certfs::store {

std::span<const std::string_view> migrations();

} // namespace certfs::store
