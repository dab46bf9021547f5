#!/bin/sh
# Test CA helper whose CA refuses every request (exit status 2, the reason on the first line).
echo "name ${CERTMONGER_REQ_HOSTNAME-?} is not allowed by policy"
echo "this second line is not part of the reason"
exit 2
