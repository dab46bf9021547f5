#!/usr/bin/env bash
# The daemon left running, as the suite's test_soak does, or bigger: RENEWALS renewals (default 10000)
# across DOMAINS domains (default 100) by the daemon's own scheduler, with readers on the mount
# (tests/test_soak.cpp). It prints the daemon's RSS and thread count after the first FIRST
# renewals (default 1000), every 1000 after and at the end, and passes when the threads stayed flat
# and the RSS grew by under 512 bytes a renewal. About 100 s on 2 cores with the store on a tmpfs
# (the default here: TMPDIR=/dev/shm), run as root.
#
#   bash bench/soak.sh
#   RENEWALS=50000 DOMAINS=200 bash bench/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake --build "$build_dir" --target test_soak >/dev/null

export TMPDIR=${TMPDIR:-/dev/shm}
export CERTFS_SOAK_RENEWALS=${RENEWALS:-10000}
export CERTFS_SOAK_DOMAINS=${DOMAINS:-100}
export CERTFS_SOAK_FIRST=${FIRST:-1000}
echo "soak: $CERTFS_SOAK_RENEWALS renewals across $CERTFS_SOAK_DOMAINS domains, load average $(cut -d' ' -f1-3 /proc/loadavg)"
time "$build_dir/tests/test_soak" --durations yes
