#!/usr/bin/env bash
# Fails when OpenSSL, SQLite or libcurl is used outside its wrapper file: every C and C++ source
# of core/, store/, renew/, fs/, migrate/ and tools/ that git knows (committed, staged, or new and not
# ignored) is searched for each library's headers and prefixes; each hit outside the library's
# wrapper files is printed as file:line, and the exit status is 1.
# tests/ and bench/ are not searched: they use the libraries directly, as peers of the code
# (a TLS server for the ACME stub, raw certificates, SQL that breaks invariants on purpose).
# Run by ctest (tests/CMakeLists.txt) and so by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# --- The wrapper files: the only files allowed to use each library. ---
openssl_files=(core/pki.hpp core/pki.cpp core/handles.hpp core/handles.cpp)
sqlite_files=(store/sqlite.hpp store/sqlite.cpp)
# store/sqlite.hpp includes <sqlite3.h>: only store's own .cpp files include it, never a header.
sqlite_header_users=(store/sqlite.cpp store/store.cpp)
curl_files=(renew/acme_http.hpp renew/acme_http.cpp)
# OpenSSL types other layers may name: the opaque handles that core/pki's API passes around.
openssl_types=(EVP_PKEY)

checked_dirs=(core store renew fs migrate tools)

# Headers, prefixed names (EVP_DigestSign, BN_free, ...), and the one-shot HMAC() and SHA256().
openssl_prefixes='EVP|X509|BN|ECDSA|ERR|PEM|BIO|ASN1|OSSL|OPENSSL|RAND|HMAC|SHA[0-9]*|i2d|d2i|RSA|EC|DH|DSA|OBJ|NID|CRYPTO|SSL|TLS|GENERAL_NAMES?|PKCS[0-9]*|sk'
openssl_pattern="<openssl/|\\b($openssl_prefixes)_[A-Za-z0-9_]*|\\b(HMAC|SHA1|SHA224|SHA256|SHA384|SHA512)\\("
sqlite_pattern='<sqlite3\.h>|\bsqlite3_[A-Za-z0-9_]*|\bSQLITE_[A-Z0-9_]*'
curl_pattern='<curl/|\bcurl_[A-Za-z0-9_]*|\bCURL[A-Z0-9_]*'
sqlite_header_pattern='#[[:space:]]*include[[:space:]]*"store/sqlite\.hpp"'

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t sources < <(git ls-files --cached --others --exclude-standard -- "${checked_dirs[@]}" | grep -E '\.(c|cc|cpp|h|hpp)$')
else
    mapfile -t sources < <(find "${checked_dirs[@]}" -type f -regex '.*\.\(c\|cc\|cpp\|h\|hpp\)$' | sort)
fi

failed=0

# check LIBRARY PATTERN ALLOWED_TYPES... -- ALLOWED_FILES...
check() {
    local library=$1 pattern=$2
    shift 2
    local -A types=() allowed=()
    while [[ $1 != -- ]]; do
        types[$1]=1
        shift
    done
    shift
    local file
    for file in "$@"; do
        allowed[$file]=1
    done
    local -a searched=()
    for file in "${sources[@]}"; do
        if [[ -f $file && -z ${allowed[$file]:-} ]]; then
            searched+=("$file")
        fi
    done
    ((${#searched[@]} > 0)) || return 0
    local hit line token last=
    # -H: file:line:token even for one file; each line is reported once, however many hits.
    while IFS= read -r hit; do
        file=${hit%%:*}
        hit=${hit#*:}
        line=${hit%%:*}
        token=${hit#*:}
        if [[ -n ${types[$token]:-} || $file:$line == "$last" ]]; then
            continue
        fi
        printf '%s:%s: %s outside its wrapper files (%s): %s\n' "$file" "$line" "$library" "$*" \
            "$(sed -n "${line}s/^[[:space:]]*//p" "$file")"
        last=$file:$line
        failed=1
    done < <(grep -HnoE -- "$pattern" "${searched[@]}" || true)
}

check OpenSSL "$openssl_pattern" "${openssl_types[@]}" -- "${openssl_files[@]}"
check SQLite "$sqlite_pattern" -- "${sqlite_files[@]}"
check "SQLite (through store/sqlite.hpp)" "$sqlite_header_pattern" -- "${sqlite_header_users[@]}"
check libcurl "$curl_pattern" -- "${curl_files[@]}"

if ((failed)); then
    echo "check-wrappers: move these calls behind the wrapper (core/pki, store/sqlite, renew/acme_http)" >&2
    exit 1
fi
echo "check-wrappers: OpenSSL, SQLite and libcurl are used only in their wrapper files"
