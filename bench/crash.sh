#!/usr/bin/env bash
# The crash tests (tests/test_crash.cpp) at the issue's size:
#  - the daemon SIGKILLed KILLS times (default 25) while its CA helper runs, restarted after each
#    kill; then the variant killed during the deploy hook. Each restart must reach the CA again
#    within seconds (not the 10-minute lease), the last renewal must finish, its hook run once,
#    and `certfsctl check` pass. About 5 s per kill.
#  - RANDOM_KILLS (default 200) kills -9 at random instants, two in three of the daemon and one in
#    three of `certfsctl renew`, aimed at key generation, the CA's work, the commit, the flip, the
#    hooks or no phase at all, with readers on the mount. It prints the renewals the kills
#    interrupted by phase, the generations, the readers' counts and the errors they saw. About
#    1 s per kill. SEED=N repeats a run (its seed is printed).
#
#   bash bench/crash.sh
#   KILLS=100 RANDOM_KILLS=1000 bash bench/crash.sh
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
cmake --build "$build_dir" --target test_crash >/dev/null

export CERTFS_CRASH_KILLS=${KILLS:-25}
export CERTFS_RANDOM_KILLS=${RANDOM_KILLS:-200}
if [[ -n "${SEED:-}" ]]; then
    export CERTFS_KILL_SEED=$SEED
fi
echo "crash: $CERTFS_CRASH_KILLS kills of the daemon during a renewal, then one during its hook;"
echo "       $CERTFS_RANDOM_KILLS kills at random instants of the daemon and of certfsctl renew"
time "$build_dir/tests/test_crash" --durations yes
