#!/bin/sh
# Test CA helper that cannot reach its CA (exit status 3).
echo "cannot connect to ca.example.test:443: Connection refused"
exit 3
