#!/usr/bin/env bash
# Builds the Debian package (scripts/package.sh), installs it with dpkg, checks what an admin
# gets (the programs in /usr/bin, /var/lib/certfs 0700, the unit naming /usr/bin/certfs, the
# man pages, the completion, a store made and listed by the installed certfsctl), then removes
# it and checks that the programs are gone and the store stays. Run as root, on a machine
# where no certfs package is installed (it is skipped otherwise, so as not to touch one).
set -euo pipefail
cd "$(dirname "$0")/.."
if dpkg-query -W -f='${Status}' certfs 2>/dev/null | grep -q "install ok installed"; then
    echo "test-package: skipped: a certfs package is installed here already"
    exit 0
fi
deb=$(bash scripts/package.sh)
fail() {
    echo "test-package: FAILED: $*" >&2
    exit 1
}
echo "test-package: $deb ($(du -h "$deb" | cut -f1))"
control=$(dpkg-deb -I "$deb") # not piped into grep -q: with pipefail, its early exit fails dpkg-deb
grep -q "Depends: fuse3, .*libfuse3-3" <<<"$control" || fail "the package does not depend on fuse3 and libfuse3"
dpkg -i "$deb" >/dev/null
trap 'dpkg -r certfs >/dev/null 2>&1 || true' EXIT
[ "$(/usr/bin/certfs --version)" = "certfs $(sed -n 's/^project(certfs VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)" ] ||
    fail "certfs --version: $(/usr/bin/certfs --version)"
[ "$(stat -c %a /var/lib/certfs)" = 700 ] || fail "/var/lib/certfs is $(stat -c %a /var/lib/certfs), not 700"
grep -qx 'ExecStart=/usr/bin/certfs -f -o allow_other /var/lib/certfs/certfs.db /etc/certs' \
    /usr/lib/systemd/system/certfs.service || fail "the unit does not start /usr/bin/certfs"
systemd-analyze verify /usr/lib/systemd/system/certfs.service || fail "systemd-analyze verify"
[ "$(man -w certfsctl)" = /usr/share/man/man8/certfsctl.8 ] || fail "man -w certfsctl: $(man -w certfsctl)"
man -w certfs >/dev/null || fail "no certfs(8)"
[ -f /usr/share/bash-completion/completions/certfsctl ] || fail "no bash completion"
store=$(mktemp -d)
chmod 700 "$store"
/usr/bin/certfsctl --db "$store/certfs.db" init >/dev/null
/usr/bin/certfsctl --db "$store/certfs.db" issuer add local ca >/dev/null
/usr/bin/certfsctl --db "$store/certfs.db" add pkg.example.test --issuer ca >/dev/null
[ "$(/usr/bin/certfsctl --db "$store/certfs.db" list --names)" = pkg.example.test ] || fail "certfsctl list"
dpkg -r certfs >/dev/null
trap - EXIT
[ ! -e /usr/bin/certfs ] && [ ! -e /usr/bin/certfsctl ] || fail "dpkg -r left the programs"
[ -d /var/lib/certfs ] || fail "dpkg -r removed /var/lib/certfs"
[ -f "$store/certfs.db" ] || fail "the store went with the package"
rm -rf "$store"
echo "test-package: installed, checked and removed: ok"
