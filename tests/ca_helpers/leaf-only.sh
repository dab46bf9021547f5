#!/bin/sh
# Test CA helper in the manner of certmonger's local-submit and ipa-submit: prints the issued
# certificate alone, and answers IDENTIFY and FETCH-ROOTS. FETCH-ROOTS prints ROOTS_FILE when
# given, else the nickname "certfs test root" and the CA certificate.
# Usage: leaf-only.sh CA_CERT CA_KEY [ROOTS_FILE]
set -u
ca_cert=$1
ca_key=$2
case "${CERTMONGER_OPERATION-SUBMIT}" in
IDENTIFY)
    echo "certfs test leaf-only helper 1.0 for ${CERTMONGER_CA_NICKNAME-?}"
    echo "a second line that is not shown"
    exit 0
    ;;
FETCH-ROOTS)
    if [ $# -ge 3 ]; then
        cat "$3"
    else
        echo "certfs test root"
        cat "$ca_cert"
    fi
    exit 0
    ;;
SUBMIT | POLL) ;;
*) exit 6 ;;
esac
serial=$(openssl rand -hex 16) || exit 4
if ! printf '%s\n' "$CERTMONGER_CSR" | openssl x509 -req -CA "$ca_cert" -CAkey "$ca_key" \
    -set_serial "0x$serial" -days 30 -copy_extensions copyall 2>/dev/null; then
    echo "openssl could not sign the request"
    exit 4
fi
