#!/usr/bin/env bash
# Fails when a plain Release configure, as a user or a packager types it
# (`cmake -S . -B b -DCMAKE_BUILD_TYPE=Release`), would make warnings errors: only the project's
# own scripts and CI ask for that (CERTFS_DEV, scripts/build.sh). scripts/test.sh builds Release
# with warnings as errors too, so that such a build also has none. Run by ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/certfs-plain-build.XXXXXX)
log=$(mktemp /tmp/certfs-plain-build.XXXXXX.log)
trap 'rm -rf "$dir" "$log"' EXIT
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
flags=$(grep -o '"command": "[^"]*fs/export.cpp[^"]*"' "$dir/compile_commands.json" || true)
if [ -z "$flags" ]; then
    echo "check-plain-build: no compile command for fs/export.cpp in $dir/compile_commands.json" >&2
    exit 1
fi
case "$flags" in
*-O3*) ;;
*) echo "check-plain-build: a Release build does not compile with -O3: $flags" >&2; exit 1 ;;
esac
case "$flags" in
*-Werror*) echo "check-plain-build: a plain Release build makes warnings errors: $flags" >&2; exit 1 ;;
esac
echo "check-plain-build: a plain Release build compiles with -O3 and without -Werror"
