#!/usr/bin/env bash
# Installs the dependencies, builds, and sets up a demo store in ./demo with the built-in CA
# and a few example domains, then lists them. Safe to run again: it reuses the store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
ctl=("$PWD/${BUILD_DIR:-build}/tools/certfsctl/certfsctl" --db "$PWD/demo/certfs.db")

"${ctl[@]}" init
"${ctl[@]}" issuer show demo-ca >/dev/null 2>&1 ||
    "${ctl[@]}" issuer add local demo-ca --subject "/CN=certfs demo CA/O=certfs demo"

add() {
    local name=$1
    shift
    "${ctl[@]}" show "$name" >/dev/null 2>&1 || "${ctl[@]}" add "$name" --issuer demo-ca "$@"
}
add www.example.test --san www.example.test --san example.test
add mail.example.test --key-type rsa-2048 --group mail --mode 0640
add api.example.test --san api.example.test --ip 127.0.0.1 --ip ::1 --key-type ed25519
add wildcard.example.test --san '*.example.test' --bundle example-test
add ecdsa.example.test --san ecdsa.example.test --bundle example-test

echo
"${ctl[@]}" list
echo
"${ctl[@]}" check
echo
mkdir -p demo/export
"${ctl[@]}" export www.example.test demo/export/www.example.test
echo "verify the exported chain:"
openssl verify -CAfile demo/export/www.example.test/chain.pem demo/export/www.example.test/cert.pem
echo
echo "The demo store is demo/certfs.db. Try:"
echo "  ${ctl[*]} show www.example.test"
echo "  ${ctl[*]} renew --all --force && ${ctl[*]} history www.example.test"
