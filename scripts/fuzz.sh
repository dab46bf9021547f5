#!/usr/bin/env bash
# Builds the fuzz targets (fuzz/, clang's libFuzzer with ASan and UBSan) in BUILD_DIR (default
# ./build-fuzz) and runs each for FUZZ_SECONDS (default 60) on a copy of its seed corpus
# fuzz/corpus/<target>/, one after the other. Prints per target the executions, executions per
# second and whether it crashed; a crash's input is kept as BUILD_DIR/crashes/<target>/crash-*
# and its log as BUILD_DIR/logs/<target>.log. Exit status 1 when any target crashed.
# Arguments name the targets to run (default: all). FUZZ_JOBS is not supported: one process
# per target, since the machine has few cores.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build-fuzz}
seconds=${FUZZ_SECONDS:-60}
all_targets=(fuzz_pem fuzz_der fuzz_csr fuzz_validate fuzz_helper fuzz_acme_json fuzz_http01 fuzz_text)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCERTFS_FUZZ=ON \
    -DCERTFS_DEV=ON -DBUILD_TESTING=OFF >/dev/null
cmake --build "$build_dir" -j "$(nproc)" --target certfs_fuzz

failed=0
printf '%-16s %12s %10s  %s\n' target executions 'execs/s' result
for target in "${targets[@]}"; do
    corpus="$build_dir/corpus/$target"
    crashes="$build_dir/crashes/$target"
    log="$build_dir/logs/$target.log"
    rm -rf "$corpus" "$crashes"
    mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
    cp fuzz/corpus/"$target"/* "$corpus"/
    rc=0
    # Leaks are not crashes here: OpenSSL keeps per-thread state until exit.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} \
        "$build_dir/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$crashes/" "$corpus" >"$log" 2>&1 || rc=$?
    # "Done 123456 runs in 60 second(s)" ends a run that did not crash; otherwise the last
    # "#N ... exec/s: M" stat line tells how far it got.
    runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if [ -z "$runs" ]; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    fi
    rate=$(sed -n 's/^stat::average_exec_per_sec: *\([0-9]*\).*/\1/p' "$log" | tail -1)
    if [ -z "$rate" ]; then
        rate=$(sed -n 's/.* exec\/s: \([0-9]*\).*/\1/p' "$log" | tail -1)
    fi
    if [ "$rc" -eq 0 ]; then
        result=ok
    else
        result="CRASHED (exit $rc): $(ls "$crashes" | head -1), see $log"
        failed=1
    fi
    printf '%-16s %12s %10s  %s\n' "$target" "${runs:-?}" "${rate:-?}" "$result"
done
exit "$failed"
