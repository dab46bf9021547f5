#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the whole test suite with ctest; then builds
# Release (-O3, what packagers and most users build) with warnings as errors, so that a warning
# only the optimiser gives is found here and not by a user, and from it the Debian package,
# which it installs, checks and removes (scripts/test-package.sh); then builds the fuzz targets and
# runs each for FUZZ_SECONDS (default 10; 0 skips them), printing executions per target; then
# runs the whole suite again under the sanitizers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
(cd "${BUILD_DIR:-build}" && ctest --output-on-failure --timeout 300 -j "$(nproc)")
BUILD_DIR="${RELEASE_BUILD_DIR:-build-release}" BUILD_TYPE=Release bash scripts/build.sh -DCMAKE_INSTALL_PREFIX=/usr
# The Debian package, from that build: installed with dpkg, checked, removed. PACKAGE=0 skips it.
if [ "${PACKAGE:-1}" != 0 ]; then
    BUILD_DIR="${RELEASE_BUILD_DIR:-build-release}" BUILD_TESTING=ON bash scripts/test-package.sh
fi
if [ "${FUZZ_SECONDS:-10}" != 0 ]; then
    FUZZ_SECONDS="${FUZZ_SECONDS:-10}" bash scripts/fuzz.sh
fi
# The whole suite once more, built with AddressSanitizer and UBSan (build-asan): a memory error,
# a leak or undefined behaviour in any test or in a daemon or certfsctl it runs fails it.
# SANITIZE=0 skips it.
if [ "${SANITIZE:-1}" != 0 ]; then
    bash scripts/test-sanitize.sh
fi
