// One owning type per C handle, each a unique_ptr with a non-throwing deleter.
#pragma once

#include <memory>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

namespace certfs {

template <auto Fn>
struct CDeleter {
    template <typename T>
    void operator()(T* p) const noexcept
    {
        if (p != nullptr) {
            Fn(p);
        }
    }
};

using PKey = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, CDeleter<X509_free>>;
using CertReq = std::unique_ptr<X509_REQ, CDeleter<X509_REQ_free>>;
using Bio = std::unique_ptr<BIO, CDeleter<BIO_free_all>>;

// A file descriptor that closes itself.
class UniqueFd {
public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : m_fd(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : m_fd(other.release()) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept;
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return m_fd; }
    explicit operator bool() const { return m_fd >= 0; }
    int release() noexcept
    {
        int fd = m_fd;
        m_fd = -1;
        return fd;
    }
    void reset(int fd = -1) noexcept;

private:
    int m_fd = -1;
};

} // namespace certfs
