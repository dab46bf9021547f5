#!/usr/bin/env bash
# Installs what certfs needs to build and test, from Debian 12 packages, if it is missing.
# Run as root. Safe to run again: it does nothing when everything is present.
# --build-only: only what building and running certfs needs (for a host that runs it), not the
# test peers and tools (servers, pebble, clang...).
set -euo pipefail

build_packages=(
    # toolchain
    g++ cmake ninja-build pkg-config
    # libraries (see README "Dependencies")
    libssl-dev libsqlite3-dev libspdlog-dev libcli11-dev nlohmann-json3-dev libfuse3-dev fuse3
    libcurl4-openssl-dev
    # sd_notify: certfs.service is Type=notify
    libsystemd-dev
    # the man pages are made by help2man from the programs' --help
    help2man
    # the Debian package (scripts/package.sh): cpack's DEB generator finds its library
    # dependencies with dpkg-shlibdeps
    dpkg-dev
)
test_packages=(
    # tests: pebble is Let's Encrypt's ACME test server (with pebble-challtestsrv)
    catch2 openssl pebble
    # the real servers the integration tests reload onto the mount (tests/test_servers.cpp)
    nginx haproxy
    # certbot makes the configuration that certfsctl import-certbot moves in (tests/test_import_certbot.cpp)
    certbot
    # test_systemd checks the unit with systemd-analyze; the completion test runs
    # bash-completion; man renders the pages in a test
    systemd bash-completion man-db
    # the read-only store test makes an ext4 image (mkfs.ext4, e2fsck)
    e2fsprogs
    # the format check (scripts/check-format.sh): the tree is formatted by Debian's clang-format 14
    clang-format git
    # the fuzz targets (scripts/fuzz.sh, a short run in scripts/test.sh): clang's libFuzzer and
    # sanitizer runtimes, which clang only recommends
    clang libclang-rt-14-dev
)
packages=("${build_packages[@]}")
if [ "${1:-}" != --build-only ]; then
    packages+=("${test_packages[@]}")
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages (${missing[*]}); run as root to install them" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Servers installed for the tests are not started: nginx's package would listen on port 80
    # of every interface. policy-rc.d(8) tells invoke-rc.d to start nothing while it is there.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
