#!/bin/sh
# Test CA helper that takes its time, as a CA with a queue does: for each request (SUBMIT or
# POLL) it appends its pid to PIDS (it leads a process group of its own, as certfs starts each
# helper), sleeps DELAY seconds, then issues like issue.sh. Other operations are answered at
# once (not supported). A test that SIGKILLs certfs meanwhile stops it by that pid.
# Usage: slow.sh CA_CERT CA_KEY PIDS DELAY
set -u
case "${CERTMONGER_OPERATION-SUBMIT}" in
SUBMIT | POLL) ;;
*) exit 6 ;;
esac
echo $$ >>"$3"
sleep "$4"
exec "$(dirname "$0")/issue.sh" "$1" "$2"
