#!/usr/bin/env bash
# Fails, naming each file and its first difference, when a C++ file of the tree is not formatted
# as .clang-format says (Debian 12's clang-format 14). `scripts/check-format.sh --fix` formats
# them in place. The test suite runs it (ctest -R format).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v clang-format >/dev/null; then
    echo "check-format: clang-format is not installed (scripts/install-deps.sh installs it)" >&2
    exit 2
fi

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.cpp' '*.hpp')
else
    mapfile -t files < <(find core store renew fs tools tests bench -name '*.cpp' -o -name '*.hpp' | sort)
fi

if [ "${1:-}" = "--fix" ]; then
    clang-format -i "${files[@]}"
    exit 0
fi

bad=0
for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    if ! out=$(clang-format "$f" | diff -u --label "$f" --label "$f (formatted)" "$f" -); then
        echo "check-format: $f is not formatted (scripts/check-format.sh --fix formats it):" >&2
        echo "$out" | head -12 >&2
        bad=1
    fi
done
if [ "$bad" -ne 0 ]; then
    exit 1
fi
echo "check-format: ${#files[@]} files formatted"
