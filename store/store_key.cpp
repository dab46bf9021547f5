#include "store/store_key.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "core/pki.hpp"

namespace certfs::store {

namespace {

constexpr std::string_view k_prefix = "certfs-sealed:1:";
constexpr std::size_t k_key_bytes = 32;
constexpr std::size_t k_id_hex = 16;

std::string hex(std::string_view bytes)
{
    static constexpr char k_digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out += k_digits[c >> 4];
        out += k_digits[c & 0xf];
    }
    return out;
}

std::string key_id(std::string_view key)
{
    std::string label = "certfs store key id\n";
    label.append(key);
    std::string id = hex(pki::sha256(label)).substr(0, k_id_hex);
    pki::cleanse(label);
    return id;
}

} // namespace

StoreKey::StoreKey(std::string bytes, std::string source)
    : m_key(std::move(bytes)), m_id(key_id(m_key)), m_source(std::move(source))
{
}

StoreKey::~StoreKey() { pki::cleanse(m_key); }

Result<std::shared_ptr<const StoreKey>> StoreKey::from_bytes(std::string bytes, std::string source)
{
    if (bytes.size() != k_key_bytes) {
        const std::size_t size = bytes.size();
        pki::cleanse(bytes);
        return Status::Invalid("store key " + source + ": " + std::to_string(size) +
                               " bytes; a store key is 32 random bytes (head -c 32 /dev/urandom)");
    }
    return std::shared_ptr<const StoreKey>(new StoreKey(std::move(bytes), std::move(source)));
}

Result<std::shared_ptr<const StoreKey>> StoreKey::load(const std::string& path)
{
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0) {
        return errno_status("cannot read store key " + path);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        const int err = errno;
        ::close(fd);
        return errno_status("cannot read store key " + path, err);
    }
    if (!S_ISREG(st.st_mode)) {
        ::close(fd);
        return Status::Invalid("store key " + path + " is not a regular file");
    }
    if ((st.st_mode & 077) != 0) {
        ::close(fd);
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        return Status::Invalid("store key " + path + " may be read or written by others (mode " + mode +
                               "): chmod 600 it, and make a new key if others may have read it");
    }
    // One byte more than a key, to tell a longer file.
    std::string bytes(k_key_bytes + 1, '\0');
    std::size_t got = 0;
    while (got < bytes.size()) {
        const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            const int err = errno;
            ::close(fd);
            pki::cleanse(bytes);
            return errno_status("cannot read store key " + path, err);
        }
        if (n == 0) {
            break;
        }
        got += static_cast<std::size_t>(n);
    }
    ::close(fd);
    bytes.resize(got);
    if (got > k_key_bytes) {
        pki::cleanse(bytes);
        return Status::Invalid("store key " + path +
                               ": more than 32 bytes; a store key is 32 random bytes (head -c 32 /dev/urandom)");
    }
    return from_bytes(std::move(bytes), path);
}

Result<std::shared_ptr<const StoreKey>> StoreKey::from_environment(const std::string& flag)
{
    if (!flag.empty()) {
        return load(flag);
    }
    if (const char* env = std::getenv(k_store_key_env); env != nullptr && *env != '\0') {
        return load(env);
    }
    if (const char* creds = std::getenv("CREDENTIALS_DIRECTORY"); creds != nullptr && *creds != '\0') {
        const std::string path = std::string(creds) + "/" + k_store_key_credential;
        if (::access(path.c_str(), F_OK) == 0) {
            return load(path);
        }
    }
    return std::shared_ptr<const StoreKey>();
}

Result<std::string> StoreKey::seal(std::string_view plaintext, std::string_view where) const
{
    ASSIGN_OR_RETURN(std::string sealed, pki::aes256gcm_seal(m_key, where, plaintext));
    return std::string(k_prefix) + m_id + ":" + pki::base64url(sealed);
}

Result<std::string> StoreKey::open(std::string_view sealed, std::string_view where) const
{
    const std::string what = "the sealed secret of " + std::string(where);
    if (!is_sealed(sealed)) {
        return Status::Corrupt(what + " is not a sealed value");
    }
    std::string_view rest = sealed.substr(k_prefix.size());
    const auto colon = rest.find(':');
    if (colon == std::string_view::npos) {
        return Status::Corrupt(what + " has no key id");
    }
    const std::string_view id = rest.substr(0, colon);
    if (id != m_id) {
        return Status::Corrupt(what + " was sealed by the store key with id " + std::string(id) + ", not by " +
                               m_source + " (id " + m_id + ")");
    }
    auto bytes = pki::base64url_decode(rest.substr(colon + 1));
    if (!bytes.ok()) {
        return Status::Corrupt(what + " is damaged: " + bytes.status().message());
    }
    auto plain = pki::aes256gcm_open(m_key, where, *bytes);
    if (!plain.ok()) {
        return Status::Corrupt(what + " " + plain.status().message());
    }
    return plain;
}

bool is_sealed(std::string_view value) { return value.substr(0, k_prefix.size()) == k_prefix; }

} // namespace certfs::store
