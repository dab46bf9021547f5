#!/usr/bin/env bash
# The filesystem stress test at a size that runs for minutes: reader processes loop over
# privkey.pem + fullchain.pem and check with OpenSSL that the key matches the certificate,
# while renewals commit as fast as they can. Passes only with zero mismatches and zero read
# errors. The test suite runs the same test with 3 readers and 200 renewals.
#   READERS=4 RENEWALS=20000 bash bench/stress.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build "${BUILD_DIR:-build}" --target test_fs >/dev/null
export CERTFS_STRESS_READERS=${READERS:-4}
export CERTFS_STRESS_RENEWALS=${RENEWALS:-20000}
echo "stress: $CERTFS_STRESS_READERS reader processes, $CERTFS_STRESS_RENEWALS renewals"
time "${BUILD_DIR:-build}/tests/test_fs" "fs (4)*" --durations yes
