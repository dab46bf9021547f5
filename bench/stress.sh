#!/usr/bin/env bash
# The filesystem stress tests at a size that runs for minutes, with the settings a user gets:
#
# 1. The worst looping readers (tests/test_fs_pairs.cpp): twelve reader processes of six kinds
#    (the symmetric fast looper key first and certificate first, two threads of one process,
#    work between the key and the certificate, parsing every pair, openat() through a
#    directory descriptor; each never pausing and pausing now and then) under two CPU hogs,
#    through PAIRS_RENEWALS renewals (default 100) that each flip under them, at the default
#    pin window of 2 s. About 4 minutes. Passes only with zero mismatched pairs, every reader
#    moving as the README says.
# 2. fs (4) in tests/test_fs.cpp: READERS reader processes (default 4) that check every pair
#    with OpenSSL while RENEWALS renewals (default 20000) commit as fast as they can.
#
#   bash bench/stress.sh
#   PAIRS_RENEWALS=300 READERS=8 RENEWALS=50000 bash bench/stress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake --build "$build_dir" --target test_fs test_fs_pairs >/dev/null

export CERTFS_PAIRS_WINDOW_MS=2000
export CERTFS_PAIRS_RENEWALS=${PAIRS_RENEWALS:-100}
echo "stress 1: the worst loops, $CERTFS_PAIRS_RENEWALS renewals, pin window 2 s, two CPU hogs"
time "$build_dir/tests/test_fs_pairs" --durations yes

export CERTFS_STRESS_READERS=${READERS:-4}
export CERTFS_STRESS_RENEWALS=${RENEWALS:-20000}
echo "stress 2: $CERTFS_STRESS_READERS reader processes, $CERTFS_STRESS_RENEWALS renewals as fast as they commit"
time "$build_dir/tests/test_fs" "fs (4)*" --durations yes
