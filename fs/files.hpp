// The five files of a generation's directory (live/<name>/ and archive/<name>/<gen>/): the one
// table of their names, what each holds and which are private. Everything that names, counts or
// indexes them uses it; readdir lists them in its order.
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "store/model.hpp"

namespace certfs::fs {

// What a file holds, in the table's order.
enum class FileKind { cert, chain, fullchain, privkey, combined };

struct FileSpec {
    const char* name;
    FileKind kind;
    bool is_private; // holds the key: the domain's owner, group and mode (others are root's, 0644)
};

inline constexpr std::array<FileSpec, 5> k_files = {{
    {"cert.pem", FileKind::cert, false},
    {"chain.pem", FileKind::chain, false},
    {"fullchain.pem", FileKind::fullchain, false},
    {"privkey.pem", FileKind::privkey, true},
    {"combined.pem", FileKind::combined, true},
}};
inline constexpr std::size_t k_file_count = k_files.size();

// The index in k_files of the file called `name`, if it is one of them.
constexpr std::optional<std::size_t> file_index(std::string_view name)
{
    for (std::size_t i = 0; i < k_file_count; ++i) {
        if (name == k_files[i].name) {
            return i;
        }
    }
    return std::nullopt;
}

// The index in k_files of the file that holds `kind`.
constexpr std::size_t file_index(FileKind kind)
{
    for (std::size_t i = 0; i < k_file_count; ++i) {
        if (k_files[i].kind == kind) {
            return i;
        }
    }
    return k_file_count;
}

inline constexpr std::size_t k_privkey_index = file_index(FileKind::privkey);
static_assert(k_privkey_index < k_file_count && k_files[k_privkey_index].is_private);

// What the file of `kind` holds for generation g (PEM text; privkey and combined hold the key).
std::string file_content(FileKind kind, const store::Generation& g);

} // namespace certfs::fs
