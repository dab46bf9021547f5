#!/bin/sh
# Test CA helper whose CA decides when a file says so. Every run appends its operation (and
# cookie) to LOG. SUBMIT answers exit 1 with cookie "req-9". POLL with req-9 issues like
# issue.sh once GATE exists, is rejected when GATE holds "reject", and otherwise says wait
# again. A POLL with any other cookie is rejected.
# Usage: gated.sh CA_CERT CA_KEY GATE LOG
set -u
gate=$3
log=$4
echo "${CERTMONGER_OPERATION-SUBMIT} ${CERTMONGER_CA_COOKIE-}" >>"$log"
case "${CERTMONGER_OPERATION-SUBMIT}" in
SUBMIT)
    echo "req-9"
    exit 1
    ;;
POLL) ;;
*) exit 6 ;;
esac
if [ "${CERTMONGER_CA_COOKIE-}" != "req-9" ]; then
    echo "unknown request cookie '${CERTMONGER_CA_COOKIE-}'"
    exit 2
fi
if [ ! -e "$gate" ]; then
    echo "req-9"
    exit 1
fi
if [ "$(cat "$gate")" = reject ]; then
    echo "request denied by the officer"
    exit 2
fi
exec "$(dirname "$0")/issue.sh" "$1" "$2"
