#!/usr/bin/env bash
# Builds the Debian package certfs_<version>_<arch>.deb from the tree: a Release build in
# BUILD_DIR (default ./build-deb) configured for /usr, then `cpack -G DEB`. Prints the
# package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-deb}
# No tests: a host that builds only to install needs no Catch2 (install-deps.sh --build-only).
BUILD_DIR="$build_dir" BUILD_TYPE="${BUILD_TYPE:-Release}" bash scripts/build.sh -DCMAKE_INSTALL_PREFIX=/usr \
    -DBUILD_TESTING="${BUILD_TESTING:-OFF}" >/dev/null
(cd "$build_dir" && cpack -G DEB >/dev/null)
ls "$(pwd)/$build_dir"/certfs_*.deb
