#!/bin/sh
# Test CA helper that prints its remaining arguments, one per line, and exits with STATUS,
# whatever the operation.
# Usage: exit-with.sh STATUS [LINE]...
status=$1
shift
for line in "$@"; do
    printf '%s\n' "$line"
done
exit "$status"
