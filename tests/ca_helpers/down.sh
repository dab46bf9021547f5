#!/bin/sh
# Test CA helper whose CA is down: every run appends its operation to LOG and says it cannot
# connect (exit status 3, "unreachable": try again later).
# Usage: down.sh LOG
echo "${CERTMONGER_OPERATION-SUBMIT}" >>"$1"
echo "cannot connect to ca.example.test:443: Connection refused"
exit 3
