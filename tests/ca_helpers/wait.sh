#!/bin/sh
# Test CA helper that makes the client wait before issuing like issue.sh.
#   delay:   SUBMIT answers exit 5 "1\nreq-42"; POLL with cookie req-42 issues.
#   plain:   SUBMIT answers exit 1 "req-7"; POLL with cookie req-7 issues.
#   forever: SUBMIT and POLL always answer exit 5 "1\nreq-42".
# A POLL with any other cookie is rejected.
# Usage: wait.sh CA_CERT CA_KEY [delay|plain|forever]
set -u
mode=${3-delay}
case "${CERTMONGER_OPERATION-SUBMIT}" in
SUBMIT)
    if [ "$mode" = plain ]; then
        echo "req-7"
        exit 1
    fi
    printf '1\nreq-42\n'
    exit 5
    ;;
POLL) ;;
*) exit 6 ;;
esac
expected=req-42
if [ "$mode" = plain ]; then
    expected=req-7
fi
if [ "${CERTMONGER_CA_COOKIE-}" != "$expected" ]; then
    echo "unknown request cookie '${CERTMONGER_CA_COOKIE-}'"
    exit 2
fi
if [ "$mode" = forever ]; then
    printf '1\nreq-42\n'
    exit 5
fi
exec "$(dirname "$0")/issue.sh" "$1" "$2"
