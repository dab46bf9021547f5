// The store key: an optional 32-byte key that seals the secrets of a store (every private key
// of a generation or a pending request, and each issuer's secret) with AES-256-GCM, so that a
// copy of the database file (a backup, a disk that left the host) holds no usable key. The
// certificates stay in the clear: `certfsctl list`, `show` and `history` need no key.
//
// A sealed value is the text "certfs-sealed:1:<key id>:<base64url of nonce, ciphertext, tag>".
// Its associated data is the row it belongs to ("generations 3 7": domain id and generation),
// so that a sealed key copied into another row does not decrypt. The key id is the first 8
// bytes of SHA-256 over a fixed label and the key, in hex: it tells which key sealed a value
// without saying anything of the key.
//
// Where the key comes from (from_environment): --store-key FILE, else the file named by
// $CERTFS_STORE_KEY, else the systemd credential "certfs-store-key" ($CREDENTIALS_DIRECTORY,
// from LoadCredential= or LoadCredentialEncrypted=, which a TPM can seal). The file holds the
// 32 bytes and nothing else, and neither its group nor others may read or write it.
//
// Thread-safety: a StoreKey is immutable; share it freely (std::shared_ptr<const StoreKey>).
// Its bytes are overwritten when it is destroyed.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "core/status.hpp"

namespace certfs::store {

inline constexpr const char* k_store_key_env = "CERTFS_STORE_KEY";
inline constexpr const char* k_store_key_credential = "certfs-store-key";

class StoreKey {
public:
    // Reads the key file at `path`. Invalid, naming the path and what is wrong, when it is
    // not a regular file, others may read or write it, or it does not hold exactly 32 bytes.
    static Result<std::shared_ptr<const StoreKey>> load(const std::string& path);
    // The key named by `flag` (--store-key; empty when not given), the environment or the
    // systemd credential, in that order; nullptr when none names one.
    static Result<std::shared_ptr<const StoreKey>> from_environment(const std::string& flag);
    // A key of the given 32 bytes, named `source` in messages (for tests and rekey).
    static Result<std::shared_ptr<const StoreKey>> from_bytes(std::string bytes, std::string source);

    StoreKey(const StoreKey&) = delete;
    StoreKey& operator=(const StoreKey&) = delete;
    ~StoreKey();

    const std::string& id() const { return m_id; }
    const std::string& source() const { return m_source; } // the file it was read from

    // Seals `plaintext` for the row `where`.
    Result<std::string> seal(std::string_view plaintext, std::string_view where) const;
    // Opens a value seal() made for `where`. Corrupt when another key sealed it (naming both
    // ids), when it was made for another row, or when a byte of it changed.
    Result<std::string> open(std::string_view sealed, std::string_view where) const;

private:
    StoreKey(std::string bytes, std::string source);

    std::string m_key;
    std::string m_id;
    std::string m_source;
};

// True when `value` is a sealed value (it may still fail to open).
bool is_sealed(std::string_view value);

} // namespace certfs::store
