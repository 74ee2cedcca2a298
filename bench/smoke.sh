#!/usr/bin/env bash
# Smoke run of the Rust bench tool (bench/portcullis-bench) for CI: a few seconds, no fixed ports.
#
#   bash bench/smoke.sh
#
# Starts on loopback, on free ports: a throw-away Dovecot (tests/support/dovecot.conf.in rendered
# as scripts/demo.sh does; alice/alicepw with a ~1 MiB message) and Portcullis with a plain IMAP
# and an implicit-TLS IMAP listener in front of it. Runs `portcullis-bench smoke` against
# Portcullis over plain IMAP and over TLS with resumption, and checks that each printed its
# tables and exited 0 (i.e. logins, FETCHes and idle sessions all succeeded at least once).
# Everything started here is stopped on exit; the work directory is removed unless KEEP=1 or
# the run failed. A smoke run measures nothing worth comparing: it proves the tool works.
#
# Environment:
#   PORTCULLIS_BIN        proxy binary (default: cargo build --release, target/release/portcullis)
#   PORTCULLIS_BENCH_BIN  bench binary (default: cargo build --release of bench/portcullis-bench)
#   SMOKE_DIR             work directory (default: a new mktemp -d)
#   KEEP=1                keep the work directory
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TEMPLATE=$ROOT/tests/support/dovecot.conf.in
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

say() { printf '== smoke: %s\n' "$*" >&2; }

DOVECOT=$(PATH=$PATH:/usr/sbin:/sbin command -v dovecot) || { say "dovecot not installed"; exit 1; }
for tool in openssl python3; do
    command -v "$tool" >/dev/null || { say "$tool not installed"; exit 1; }
done

# --- binaries ------------------------------------------------------------------------------------
bench_binaries "$ROOT" || exit 1

# --- work directory, ports, cleanup --------------------------------------------------------------
DIR=${SMOKE_DIR:-$(mktemp -d /tmp/portcullis-smoke.XXXXXX)}
DC=$DIR/dovecot
mkdir -p "$DIR/certs" "$DC/home/alice/Maildir/"{cur,new,tmp}
chmod 755 "$DIR" "$DIR/certs" "$DC"
CERTS=$DIR/certs

# Free loopback ports, all bound at once so they are distinct.
read -r DC_IMAP DC_IMAPS DC_POP3 DC_POP3S DC_SIEVE DC_IMAP_HAPROXY DC_SIEVE_HAPROXY PC_IMAP PC_IMAPS \
    < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

PC_PID=""
OK=0
cleanup() {
    set +e
    if [ -n "$PC_PID" ]; then
        kill -TERM "$PC_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$PC_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PC_PID" 2>/dev/null
        wait "$PC_PID" 2>/dev/null
    fi
    [ -f "$DC/dovecot.conf" ] && "$DOVECOT" -c "$DC/dovecot.conf" stop 2>/dev/null
    if [ "$OK" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$DIR"
    else
        say "logs and results kept in $DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Dovecot -------------------------------------------------------------------------------------
make_certs "$CERTS" "Portcullis Smoke" 2
printf '%s\n' 'alice:{PLAIN}alicepw::::::' 'bob:{PLAIN}bobpw::::::' >"$DC/passwd"
chmod 644 "$DC/passwd"
python3 "$ROOT/bench/seed.py" "$DC/home/alice/Maildir/cur"
render_dovecot "$TEMPLATE" "$DC" "portcullis-smoke-$$" "$CERTS"
"$DOVECOT" -c "$DC/dovecot.conf" || { cat "$DC/dovecot.log" >&2; exit 1; }

# --- Portcullis ----------------------------------------------------------------------------------
bench_portcullis_config "$DIR" "$PC_IMAP" "$PC_IMAPS" "$DC_IMAP" "$CERTS"
"$BIN" run --config "$DIR/portcullis.toml" >"$DIR/portcullis.out" 2>&1 &
PC_PID=$!

# Ready when Dovecot (behind the proxy) greets through it.
ready=0
for _ in $(seq 100); do
    if python3 - "$PC_IMAP" <<'PY' 2>/dev/null; then ready=1; break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
sys.exit(0 if s.recv(4096).startswith(b"* OK") else 1)
PY
    kill -0 "$PC_PID" 2>/dev/null || break
    sleep 0.1
done
[ "$ready" = 1 ] || { say "Portcullis did not come up"; cat "$DIR/portcullis.out" >&2; exit 1; }

# --- smoke runs ----------------------------------------------------------------------------------
run_smoke() { # name, then extra arguments
    local name=$1
    shift
    say "portcullis-bench smoke: $name"
    local rc=0
    "$BENCH" smoke --name "$name" --pid "$PC_PID" --quiet --json "$DIR/$name.json" "$@" \
        >"$DIR/$name.md" || rc=$?
    cat "$DIR/$name.md"
    [ "$rc" = 0 ] || { say "$name: portcullis-bench exited $rc"; return 1; }
    # The three tables: logins, fetch, idle (a header row each, and a row for the target).
    [ "$(grep -c '^| target |' "$DIR/$name.md")" = 3 ] || { say "$name: tables missing"; return 1; }
    [ "$(grep -c "^| $name |" "$DIR/$name.md")" = 3 ] || { say "$name: result rows missing"; return 1; }
    [ -s "$DIR/$name.json" ] || { say "$name: no JSON"; return 1; }
}
run_smoke portcullis --target "127.0.0.1:$PC_IMAP"
run_smoke portcullis-tls --target "127.0.0.1:$PC_IMAPS" --tls --ca "$CERTS/ca.pem" --resume
kill -0 "$PC_PID" 2>/dev/null || { say "Portcullis died during the run"; exit 1; }
say "ok"
OK=1
