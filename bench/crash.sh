#!/usr/bin/env bash
# The crash test (tests/test_crash.cpp) at the issue's size: the daemon SIGKILLed KILLS times
# (default 25) while its CA helper runs, restarted after each kill; then the variant killed
# during the deploy hook. Each restart must reach the CA again within seconds (not the 10-minute
# lease), the last renewal must finish, its hook run once, and `certfsctl check` pass. About
# 5 s per kill.
#
#   bash bench/crash.sh
#   KILLS=100 bash bench/crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake --build "$build_dir" --target test_crash >/dev/null

export CERTFS_CRASH_KILLS=${KILLS:-25}
echo "crash: $CERTFS_CRASH_KILLS kills of the daemon during a renewal, then one during its hook"
time "$build_dir/tests/test_crash" --durations yes
