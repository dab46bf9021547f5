#!/usr/bin/env bash
# Builds certfs with ThreadSanitizer (-DCERTFS_TSAN=ON, warnings as errors) in BUILD_DIR (default
# ./build-tsan) and runs the tests of its threaded parts there: the filesystem and its pins, the
# flip, the scheduler, renewals and their hooks, the daemon renewing on a mount, and the crash
# tests. The daemon those tests start is the TSan build too: a data race or a lock-order
# inversion in any of its threads ends it with a report, and the tests fail on a report in a
# child's output (check_no_sanitizer_report in tests/support/testutil.hpp). A test's timeout is
# 900 s in this build (tests/CMakeLists.txt). Extra arguments go to ctest (e.g. -R 'fs:').
#
# GCC 12's TSan runtime cannot map its shadow memory under Linux's larger address-space
# randomisation ("unexpected memory mapping"), so the tests run with it off, under setarch -R.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-tsan}
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCERTFS_DEV=ON -DCERTFS_TSAN=ON >/dev/null
# Only what those tests run: the programs and their test binaries.
cmake --build "$build_dir" -j "$(nproc)" --target certfs certfsctl pair_reader short_ca test_pins test_fs_nodes \
    test_fs test_fs_pairs test_flip test_scheduler test_renew test_daemon_renew test_hooks test_batch test_crash
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
cd "$build_dir"
tests='^(fs|fs nodes|fs pairs|pins|flip|move now|scheduler|backoff|renew|batch|hooks|hooks owed|recovery|leases|lease guard|daemon|crash|access|check): '
setarch "$(uname -m)" -R ctest -j "$(nproc)" --timeout 900 --output-on-failure -R "$tests" "$@"
