#!/bin/sh
# Test CA helper that never answers: certfs must kill it when its timeout expires.
sleep 600
echo "woke up"
exit 0
