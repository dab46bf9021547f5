#!/bin/sh
# Test CA helper: signs $CERTMONGER_CSR with the CA whose certificate and key files are $1 and
# $2, and prints the certificate followed by the CA certificate (its chain). With a third
# argument, a directory, it first writes each variable it was given there, one file each.
# Usage: issue.sh CA_CERT CA_KEY [RECORD_DIR]
set -u
ca_cert=$1
ca_key=$2
case "${CERTMONGER_OPERATION-SUBMIT}" in
SUBMIT | POLL) ;;
*) exit 6 ;;
esac
if [ $# -ge 3 ]; then
    for name in CERTMONGER_OPERATION CERTMONGER_CA_NICKNAME CERTMONGER_CSR CERTMONGER_REQ_SUBJECT \
        CERTMONGER_REQ_HOSTNAME CERTMONGER_REQ_IP_ADDRESS CERTMONGER_KEY_TYPE CERTMONGER_CERTIFICATE \
        CERTMONGER_CA_PROFILE CERTMONGER_CA_COOKIE PATH HOME CERTFS_HELPER_TEST_LEAK; do
        rm -f "$3/$name"
        eval "is_set=\${$name+x}"
        if [ -n "$is_set" ]; then
            eval "printf '%s' \"\$$name\"" >"$3/$name"
        fi
    done
fi
serial=$(openssl rand -hex 16) || exit 4
if ! printf '%s\n' "$CERTMONGER_CSR" | openssl x509 -req -CA "$ca_cert" -CAkey "$ca_key" \
    -set_serial "0x$serial" -days 30 -copy_extensions copyall 2>/dev/null; then
    echo "openssl could not sign the request"
    exit 4
fi
cat "$ca_cert"
