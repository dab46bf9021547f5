#!/usr/bin/env bash
# Installs the dependencies, builds, sets up a demo store in ./demo with the built-in CA and a
# few example domains, lists them, and mounts the store at ./demo/certs with the certfs daemon
# (it keeps running in the background; `fusermount3 -u demo/certs` stops it). Safe to run
# again: it reuses the store and the mount.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
ctl=("$PWD/${BUILD_DIR:-build}/tools/certfsctl/certfsctl" --db "$PWD/demo/certfs.db")
certfs="$PWD/${BUILD_DIR:-build}/tools/certfs/certfs"

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

mkdir -p demo/certs
if ! grep -q " $PWD/demo/certs fuse.certfs " /proc/mounts; then
    "$certfs" --db "$PWD/demo/certfs.db" --no-renew demo/certs
fi
echo
echo "mounted at demo/certs:"
ls -l demo/certs/live/www.example.test
echo "the key matches the certificate:"
diff <(openssl pkey -pubout -in demo/certs/live/www.example.test/privkey.pem) \
     <(openssl x509 -pubkey -noout -in demo/certs/live/www.example.test/cert.pem) && echo "  yes"
echo
echo "The store is demo/certfs.db, mounted at demo/certs (stop: fusermount3 -u demo/certs). Try:"
echo "  ${ctl[*]} renew www.example.test --force   # new opens see it 2 s later"
echo "  ls demo/certs/archive/www.example.test"
