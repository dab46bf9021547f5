#!/usr/bin/env bash
# ACME issuance benchmark: certfs against certbot, lego and uacme, all against one local pebble
# with real http-01 validation (run as root; about 1-2 minutes):
#
#   bash bench/acme_bench.sh [BUILD_DIR]      (default build)
#
# It installs certbot, lego and uacme from Debian if one is missing, builds certfsctl if needed,
# starts pebble (Debian package pebble) with pebble-challtestsrv as its DNS server (every name
# resolves to 127.0.0.1), all on loopback, and then runs the clients one after the other. Each
# client has its own state in a temp folder, trusts the system's CAs plus pebble's TLS CA (as it
# would trust the system's against a public CA), and answers http-01 on the one port pebble
# validates:
#
#   certfs   certfsctl, its built-in responder (issuer --http-listen 127.0.0.1:PORT --ca-bundle)
#   certbot  certonly --standalone --http-01-port PORT       (CA: REQUESTS_CA_BUNDLE)
#   lego     run --http --http.port 127.0.0.1:PORT            (CA: LEGO_CA_CERTIFICATES)
#   uacme    issue with a hook writing the token into a folder served by python3 -m http.server
#            (uacme 1.7 has no CA option and libcurl-gnutls ignores CURL_CA_BUNDLE: uacme runs
#            in a private mount namespace where /etc/ssl/certs is a copy with pebble's CA added)
#
# Beware when reading uacme's figure: libcurl-gnutls re-reads every file of /etc/ssl/certs for
# each request, and uacme, when its first poll finds the challenge still pending, waits 5 s.
# With Debian's /etc/ssl/certs the re-reading makes it slow enough that pebble has validated by
# then; with a trust store of pebble's CA alone many uacme runs take 5 s instead.
#
# Every client uses EC P-256 keys (account and certificate). Per client: the first issuance,
# account creation included (certfs: issuer add + add; uacme: new + issue), then the median of
# N further issuances for new names. Every run is one process start, as a cron job or an admin
# would run it. Then for certfs only: BATCH domains added with --no-issue and issued by one
# `certfsctl renew --all` (4 at a time), then renewed again one at a time and 16 at a time.
#
# Environment: N (default 10) further issuances per client, BATCH (default 50), KEEP=1 keeps the
# temp folder (its path is printed), NO_BUILD=1 uses BUILD_DIR's certfsctl without building.
# Exit status 0 when every client issued every certificate, 1 otherwise, with the reason and the
# end of the failing client's log on stderr.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

build_dir=${1:-build}
n_more=${N:-10}
batch=${BATCH:-50}
python=/usr/bin/python3 # Debian's, which certbot depends on (not a pyenv shim from PATH)
client_timeout=120      # seconds for one client run

die() {
    echo "acme_bench.sh: $*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || die "run as root: it installs packages and gives uacme a private mount namespace"
[[ "$n_more" =~ ^[1-9][0-9]*$ && "$batch" =~ ^[1-9][0-9]*$ ]] || die "N and BATCH must be positive integers"

# ---- prerequisites -----------------------------------------------------------------------------
install_clients() {
    local missing=0 tool
    for tool in certbot lego uacme; do
        command -v "$tool" >/dev/null || missing=1
    done
    [[ -x $python ]] || missing=1
    ((missing)) || return 0
    echo "installing certbot lego uacme with apt-get ..."
    local log
    log=$(mktemp /tmp/acme-bench-apt.XXXXXX)
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        certbot lego uacme; } >"$log" 2>&1; then
        tail -20 "$log" >&2
        rm -f "$log"
        die "apt-get install certbot lego uacme failed"
    fi
    rm -f "$log"
}

install_clients
for tool in pebble pebble-challtestsrv openssl certbot lego uacme unshare nsenter mount timeout awk; do
    command -v "$tool" >/dev/null || die "$tool is missing (pebble: Debian package pebble)"
done
[[ -x $python ]] || die "$python is missing (it comes with certbot)"

build_certfsctl() {
    [[ ${NO_BUILD:-0} == 1 ]] && return 0
    local log
    log=$(mktemp /tmp/acme-bench-build.XXXXXX)
    if [[ ! -f "$build_dir/build.ninja" ]]; then
        cmake -S . -B "$build_dir" -G Ninja >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; die "cmake failed"; }
    fi
    cmake --build "$build_dir" --target certfsctl >"$log" 2>&1 ||
        { cat "$log" >&2; rm -f "$log"; die "build of certfsctl failed (NO_BUILD=1 uses the binary as it is)"; }
    rm -f "$log"
}

build_certfsctl
ctl=$(realpath "$build_dir")/tools/certfsctl/certfsctl
[[ -x $ctl ]] || die "$ctl was not built"

# ---- scratch space, background processes, cleanup ----------------------------------------------
work=$(mktemp -d /tmp/acme-bench.XXXXXX)
pids=()             # background processes we started, stopped in reverse order
declare -A reaped=() # those already stopped and reaped: their pid may be someone else's now

running() { # PID: true while it runs (an exited child that is not yet reaped does not count)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

stop_pid() { # PID: SIGTERM, then SIGKILL after 5 s; reaps it
    local pid=$1 i
    [[ -z ${reaped[$pid]:-} ]] || return 0
    reaped[$pid]=1
    if running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_pid "${pids[i]}"
    done
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Shows the end of a log and fails.
fail_with_log() { # LOG MESSAGE
    echo "--- end of $1 ---" >&2
    tail -25 "$1" >&2 || true
    die "$2"
}

# ---- pebble ------------------------------------------------------------------------------------
# Free loopback ports, all different: acme, management, challtestsrv, http-01, tls-alpn-01 (TCP),
# then one free for both TCP and UDP (challtestsrv's DNS). Chosen while all are held open.
read -r port_acme port_mgmt port_chall port_http port_tls port_dns < <("$python" - <<'EOF'
import socket
held, ports = [], []
def tcp(port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", port)); held.append(s)
    return s.getsockname()[1]
for _ in range(5):
    ports.append(tcp())
for _ in range(50):
    p = tcp()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); held.append(u); ports.append(p); break
    except OSError:
        u.close()
print(*ports)
EOF
)
[[ -n ${port_dns:-} ]] || die "found no free loopback ports"
directory=https://127.0.0.1:$port_acme/dir

make_pebble_tls() { # pebble's own HTTPS certificate, signed by a CA made here
    local d=$work/pebble
    mkdir -p "$d"
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=acme_bench pebble TLS CA" -keyout "$d/ca-key.pem" -out "$d/ca.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
        -keyout "$d/key.pem" -out "$d/cert.csr" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$d/leaf.ext"
    openssl x509 -req -in "$d/cert.csr" -CA "$d/ca.pem" -CAkey "$d/ca-key.pem" -CAcreateserial -days 2 \
        -extfile "$d/leaf.ext" -out "$d/cert.pem" 2>/dev/null
    [[ -s $d/cert.pem ]] || die "openssl could not make pebble's TLS certificate"
}

start_pebble() {
    local d=$work/pebble
    cat >"$d/config.json" <<EOF
{
  "pebble": {
    "listenAddress": "127.0.0.1:$port_acme",
    "managementListenAddress": "127.0.0.1:$port_mgmt",
    "certificate": "$d/cert.pem",
    "privateKey": "$d/key.pem",
    "httpPort": $port_http,
    "tlsPort": $port_tls,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
EOF
    # challtestsrv answers every A query with 127.0.0.1 and no AAAA query (pebble would dial ::1).
    pebble-challtestsrv -management "127.0.0.1:$port_chall" -dns01 "127.0.0.1:$port_dns" \
        -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
        </dev/null >"$d/challtestsrv.log" 2>&1 &
    pids+=($!)
    # No sleep before validations, no refused nonces, no reuse of valid authorizations; any other
    # PEBBLE_* variable of ours is left out.
    local unset_args=() var
    for var in $(compgen -e | grep '^PEBBLE_' || true); do
        unset_args+=(-u "$var")
    done
    env "${unset_args[@]}" PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
        pebble -config "$d/config.json" -dnsserver "127.0.0.1:$port_dns" </dev/null >"$d/pebble.log" 2>&1 &
    pids+=($!)
    local i
    for ((i = 0; i < 200; i++)); do
        if "$python" - "$directory" "$d/ca.pem" 2>/dev/null <<'EOF'; then return 0; fi
import ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
urllib.request.urlopen(sys.argv[1], context=ctx, timeout=1).read()
EOF
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { cat "$d/challtestsrv.log" >&2; fail_with_log "$d/pebble.log" "pebble or challtestsrv exited during start-up"; }
        done
        sleep 0.1
    done
    fail_with_log "$d/pebble.log" "pebble's directory $directory did not answer within 20 s"
}

make_pebble_tls
start_pebble
ca=$work/pebble/ca.pem # pebble's TLS CA alone
trust=$work/trust.pem  # what the clients trust: the system's CAs and pebble's
{ cat /etc/ssl/certs/ca-certificates.crt 2>/dev/null || true; cat "$ca"; } >"$trust"
echo "pebble at $directory, http-01 validated on 127.0.0.1:$port_http, work dir $work"

# ---- measuring ---------------------------------------------------------------------------------
# timed LOG DESCRIPTION CMD...: runs CMD (stdout and stderr appended to LOG) under a timeout;
# sets $elapsed (seconds, 3 decimals); a failure ends the benchmark with LOG's tail.
elapsed=
timed() {
    local log=$1 what=$2
    shift 2
    local t0=$EPOCHREALTIME rc=0
    echo "+ $*" >>"$log"
    timeout "$client_timeout" "$@" </dev/null >>"$log" 2>&1 || rc=$?
    local t1=$EPOCHREALTIME
    ((rc == 0)) || fail_with_log "$log" "$what failed (exit status $rc)"
    elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

median() { # numbers as arguments
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A first_s median_s
clients=()

# bench_client NAME: runs NAME_setup (optional), NAME_first DOMAIN, then NAME_issue DOMAIN for N
# new domains; records the figures.
bench_client() {
    local name=$1 i times=()
    clients+=("$name")
    mkdir -p "$work/$name"
    echo "== $name"
    if declare -F "${name}_setup" >/dev/null; then "${name}_setup"; fi
    "${name}_first" "a0.$name.bench.test"
    first_s[$name]=$elapsed
    for ((i = 1; i <= n_more; i++)); do
        "${name}_issue" "b$i.$name.bench.test"
        times+=("$elapsed")
    done
    if declare -F "${name}_teardown" >/dev/null; then "${name}_teardown"; fi
    median_s[$name]=$(median "${times[@]}")
    printf '   first %ss, further issuances: %s s\n' "${first_s[$name]}" "${times[*]}"
}

# ---- certfs ------------------------------------------------------------------------------------
certfs_db=$work/certfs/certfs.db
certfs_setup() {
    timed "$work/certfs/log" "certfsctl init" "$ctl" --db "$certfs_db" init
}
certfs_first() { # issuer add (makes the account key) + add (registers the account, issues)
    local t
    timed "$work/certfs/log" "certfsctl issuer add acme" "$ctl" --db "$certfs_db" issuer add acme pebble \
        --directory "$directory" --ca-bundle "$trust" --http-listen "127.0.0.1:$port_http"
    t=$elapsed
    certfs_issue "$1"
    elapsed=$(awk -v a="$t" -v b="$elapsed" 'BEGIN { printf "%.3f", a + b }')
}
certfs_issue() {
    timed "$work/certfs/log" "certfsctl add $1" "$ctl" --db "$certfs_db" add "$1" --issuer pebble
}

# ---- certbot -----------------------------------------------------------------------------------
certbot_run() {
    local d=$work/certbot
    timed "$d/log" "certbot certonly -d $1" env REQUESTS_CA_BUNDLE="$trust" certbot certonly --non-interactive \
        --server "$directory" --config-dir "$d/config" --work-dir "$d/work" --logs-dir "$d/logs" \
        --agree-tos --register-unsafely-without-email --no-eff-email \
        --standalone --preferred-challenges http --http-01-address 127.0.0.1 --http-01-port "$port_http" \
        --key-type ecdsa --elliptic-curve secp256r1 -d "$1"
}
certbot_first() { certbot_run "$1"; }
certbot_issue() { certbot_run "$1"; }

# ---- lego --------------------------------------------------------------------------------------
lego_run() {
    timed "$work/lego/log" "lego run -d $1" env LEGO_CA_CERTIFICATES="$trust" lego --server "$directory" \
        --path "$work/lego/data" --accept-tos --email bench@example.org --key-type ec256 \
        --http --http.port "127.0.0.1:$port_http" -d "$1" run
}
lego_first() { lego_run "$1"; }
lego_issue() { lego_run "$1"; }

# ---- uacme -------------------------------------------------------------------------------------
# uacme 1.7 has no CA option and its libcurl-gnutls reads no CA variable. A holder process keeps a
# private mount namespace where /etc/ssl/certs is a copy with pebble's CA added; each uacme run
# enters it with nsenter (about 2 ms more than a plain start; the rest of the machine is untouched).
uacme_http_pid=
uacme_ns_pid=
uacme_setup() {
    local d=$work/uacme i
    mkdir -p "$d/conf" "$d/www/.well-known/acme-challenge" "$d/certs"
    cp -a /etc/ssl/certs/. "$d/certs/" 2>/dev/null || true
    rm -f "$d/certs/ca-certificates.crt" # a copy, never a link into the system's files
    cp "$trust" "$d/certs/ca-certificates.crt"
    cp "$ca" "$d/certs/acme-bench-pebble.pem"
    # shellcheck disable=SC2016 # $1 is the inner sh's
    unshare --mount sh -c 'mount --bind "$1" /etc/ssl/certs && exec sleep 3600' sh "$d/certs" </dev/null &
    uacme_ns_pid=$!
    pids+=("$uacme_ns_pid")
    for ((i = 0; i < 100; i++)); do
        nsenter --mount="/proc/$uacme_ns_pid/ns/mnt" test -f /etc/ssl/certs/acme-bench-pebble.pem 2>/dev/null && break
        kill -0 "$uacme_ns_pid" 2>/dev/null || die "unshare --mount failed: uacme cannot be made to trust pebble's CA"
        sleep 0.05
    done
    ((i < 100)) || die "the mount namespace for uacme did not come up"

    # The hook (uacme.sh style): publishes the key authorization for the web server below.
    cat >"$d/hook.sh" <<EOF
#!/bin/sh
# uacme hook: METHOD TYPE IDENT TOKEN AUTH; accepts only http-01.
dir='$d/www/.well-known/acme-challenge'
[ "\$2" = http-01 ] || exit 1
case "\$1" in
begin) printf '%s' "\$5" >"\$dir/\$4" ;;
done | failed) rm -f "\$dir/\$4" ;;
*) exit 1 ;;
esac
EOF
    chmod +x "$d/hook.sh"
    "$python" -m http.server --bind 127.0.0.1 --directory "$d/www" "$port_http" </dev/null >"$d/http.log" 2>&1 &
    uacme_http_pid=$!
    pids+=("$uacme_http_pid")
    for ((i = 0; i < 100; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port_http") 2>/dev/null; then return 0; fi
        kill -0 "$uacme_http_pid" 2>/dev/null || fail_with_log "$d/http.log" "python3 -m http.server did not start"
        sleep 0.05
    done
    fail_with_log "$d/http.log" "python3 -m http.server does not answer on port $port_http"
}
uacme_teardown() {
    stop_pid "$uacme_http_pid"
    stop_pid "$uacme_ns_pid"
}
uacme_cmd() { # uacme ARGS...
    local d=$work/uacme
    timed "$d/log" "uacme $*" nsenter --mount="/proc/$uacme_ns_pid/ns/mnt" \
        uacme -v -c "$d/conf" -a "$directory" -t EC -b 256 -h "$d/hook.sh" "$@"
}
uacme_first() { # new (account) + issue
    local t
    uacme_cmd -y new
    t=$elapsed
    uacme_cmd issue "$1"
    elapsed=$(awk -v a="$t" -v b="$elapsed" 'BEGIN { printf "%.3f", a + b }')
}
uacme_issue() { uacme_cmd issue "$1"; }

# ---- the runs ----------------------------------------------------------------------------------
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
bench_client certfs
bench_client certbot
bench_client lego
bench_client uacme

# certfs: BATCH domains at once, in a store of their own whose account is already registered.
echo "== certfs, $batch domains"
batch_db=$work/certfs-batch/certfs.db
batch_log=$work/certfs-batch/log
mkdir -p "$work/certfs-batch"
timed "$batch_log" "certfsctl init" "$ctl" --db "$batch_db" init
timed "$batch_log" "certfsctl issuer add" "$ctl" --db "$batch_db" issuer add acme pebble \
    --directory "$directory" --ca-bundle "$trust" --http-listen "127.0.0.1:$port_http"
timed "$batch_log" "certfsctl add warmup" "$ctl" --db "$batch_db" add warmup.batch.bench.test --issuer pebble
for ((i = 1; i <= batch; i++)); do
    timed "$batch_log" "certfsctl add --no-issue" "$ctl" --db "$batch_db" add "c$i.batch.bench.test" \
        --issuer pebble --no-issue
done
timed "$batch_log" "certfsctl renew --all" "$ctl" --db "$batch_db" renew --all
renew_all_s=$elapsed
issued=$(awk '/^\+ .* renew --all$/ { on = 1; next } on && /^c[0-9]+\.batch\.bench\.test: renewed/' "$batch_log" | wc -l)
echo "   renew --all: ${renew_all_s}s, $issued of $batch domains issued"
((issued == batch)) || fail_with_log "$batch_log" "certfsctl renew --all issued $issued of $batch certificates"

# The same BATCH domains again (--force), one at a time and 16 at a time, to show what the
# concurrency buys. (Separate certfsctl processes cannot share the http-01 port; one process's
# renewals share its built-in responder.)
declare -A jobs_s
for jobs in 1 16; do
    timed "$batch_log" "certfsctl renew --all --force --jobs $jobs" "$ctl" --db "$batch_db" renew --all --force \
        --jobs "$jobs"
    jobs_s[$jobs]=$elapsed
    echo "   renew --all --force --jobs $jobs: ${elapsed}s"
done

# ---- report ------------------------------------------------------------------------------------
echo
echo "ACME issuance against pebble on loopback, http-01, EC P-256; one process per issuance"
echo "load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) CPUs; other work skews the figures)"
printf '%-8s %10s %12s %18s\n' client "first s" "median s" "certfs/client"
for c in "${clients[@]}"; do
    ratio=$(awk -v a="${median_s[certfs]}" -v b="${median_s[$c]}" 'BEGIN { printf "%.2f", a / b }')
    printf '%-8s %10s %12s %18s\n' "$c" "${first_s[$c]}" "${median_s[$c]}" "$ratio"
done
echo "(first: account creation + one certificate; median: of $n_more further certificates for new names)"
echo
for c in "${clients[@]}"; do
    [[ $c == certfs ]] && continue
    awk -v a="${median_s[certfs]}" -v b="${median_s[$c]}" -v c="$c" 'BEGIN {
        if (a <= b) printf "certfs is %.1fx faster than %s per certificate\n", b / a, c
        else printf "certfs is %.1fx slower than %s per certificate\n", a / b, c }'
done
echo
for label in "--all (default --jobs 4):$renew_all_s" "--all --force --jobs 1:${jobs_s[1]}" "--all --force --jobs 16:${jobs_s[16]}"; do
    awk -v l="${label%:*}" -v t="${label##*:}" -v n="$batch" \
        'BEGIN { printf "certfs renew %s, %d domains: %.3f s total, %.3f s per certificate\n", l, n, t, t / n }'
done
