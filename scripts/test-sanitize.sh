#!/usr/bin/env bash
# Builds certfs with AddressSanitizer and UBSan (-DCERTFS_SANITIZE=ON, warnings as errors) in
# BUILD_DIR (default ./build-asan) and runs the whole ctest suite there. The daemon, certfsctl and
# pair_reader inherit the options below: a leak or a memory error fails the program that had it
# and UBSan stops at its first report, and the tests fail on a report in a child's output
# (check_no_sanitizer_report in tests/support/testutil.hpp). A test's timeout is 900 s in this
# build, not 300 s, for ASan's slowdown (tests/CMakeLists.txt). Extra arguments go to ctest
# (e.g. -R 'fs:').
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-asan}
BUILD_DIR="$build_dir" bash scripts/build.sh -DCERTFS_SANITIZE=ON
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$build_dir"
ctest -j "$(nproc)" --timeout 900 --output-on-failure "$@"
