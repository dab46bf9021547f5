#!/usr/bin/env bash
# Configures and builds certfs in BUILD_DIR (default ./build), of BUILD_TYPE (default
# RelWithDebInfo), with warnings as errors (CERTFS_DEV). Extra arguments go to cmake.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" -DCERTFS_DEV=ON "$@" >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
