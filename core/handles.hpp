// One owning type per C handle, each a unique_ptr with a non-throwing deleter.
#pragma once

#include <memory>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

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
using X509Name = std::unique_ptr<X509_NAME, CDeleter<X509_NAME_free>>;
using Bignum = std::unique_ptr<BIGNUM, CDeleter<BN_free>>;
using PKeyCtx = std::unique_ptr<EVP_PKEY_CTX, CDeleter<EVP_PKEY_CTX_free>>;
using ParamBld = std::unique_ptr<OSSL_PARAM_BLD, CDeleter<OSSL_PARAM_BLD_free>>;
using Params = std::unique_ptr<OSSL_PARAM, CDeleter<OSSL_PARAM_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, CDeleter<EVP_MD_CTX_free>>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, CDeleter<ECDSA_SIG_free>>;
using Asn1Integer = std::unique_ptr<ASN1_INTEGER, CDeleter<ASN1_INTEGER_free>>;
using Asn1Time = std::unique_ptr<ASN1_TIME, CDeleter<ASN1_TIME_free>>;
using Asn1OctetString = std::unique_ptr<ASN1_OCTET_STRING, CDeleter<ASN1_OCTET_STRING_free>>;
using X509Extension = std::unique_ptr<X509_EXTENSION, CDeleter<X509_EXTENSION_free>>;
using GeneralNames = std::unique_ptr<GENERAL_NAMES, CDeleter<GENERAL_NAMES_free>>;
using BasicConstraints = std::unique_ptr<BASIC_CONSTRAINTS, CDeleter<BASIC_CONSTRAINTS_free>>;
using AuthorityKeyId = std::unique_ptr<AUTHORITY_KEYID, CDeleter<AUTHORITY_KEYID_free>>;

// STACK_OF() frees through a macro, so the deleter needs a function of its own.
inline void free_x509_extensions(STACK_OF(X509_EXTENSION) * exts) { sk_X509_EXTENSION_free(exts); }
using X509Extensions = std::unique_ptr<STACK_OF(X509_EXTENSION), CDeleter<free_x509_extensions>>;

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
