#!/usr/bin/env bash
# Portcullis benchmark: Dovecot direct vs Portcullis vs Debian's perdition 2.2 (see bench/README.md).
#
#   bash bench/run.sh [load.py options...]      e.g.  bash bench/run.sh --duration 30 --idle 2000
#
# Builds portcullis (cargo build --release), starts on loopback:
#   - one throw-away Dovecot rendered from tests/support/dovecot.conf.in (as scripts/demo.sh does),
#     with higher limits for many sessions, user alice with a ~1 MiB message in her INBOX;
#   - Portcullis: IMAP (plain) and IMAPS (implicit TLS) listeners -> Dovecot plain IMAP;
#   - perdition: IMAP4 (plain) and IMAP4S (ssl_listen only) -> the same Dovecot plain IMAP;
# runs bench/load.py against every front end and prints the results table.
# Everything started here is stopped on exit (trap).
#
# Environment:
#   BENCH_DIR       work directory (default /tmp/portcullis-bench; wiped at start)
#   PORTCULLIS_BIN  use this binary instead of `cargo build --release` + target/release/portcullis
#   BENCH_TARGETS   comma list of rows to run (default: all of
#                   dovecot,portcullis,perdition,dovecot-tls,portcullis-tls,perdition-tls)
#   BENCH_IMAP_SERVICE_COUNT  Dovecot's `service imap { service_count }` (default 1, Dovecot's
#                   default: one imap process per session; 0 = reuse processes, faster logins)
#   BENCH_DOVECOT_LIMIT  process limit for Dovecot (default 20000; client limits are 4x)
#   KEEP=1          keep BENCH_DIR (logs, configs) after the run (it is always kept on failure)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/portcullis-bench}
TEMPLATE=$ROOT/tests/support/dovecot.conf.in
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
TARGETS=${BENCH_TARGETS:-dovecot,portcullis,perdition,dovecot-tls,portcullis-tls,perdition-tls}

say() { printf '== %s\n' "$*" >&2; }

DOVECOT=$(PATH=$PATH:/usr/sbin:/sbin command -v dovecot) || { say "dovecot not installed"; exit 1; }
PERDITION=$(PATH=$PATH:/usr/sbin:/sbin command -v perdition) || { say "perdition not installed (apt-get install perdition)"; exit 1; }
command -v openssl >/dev/null || { say "openssl not installed"; exit 1; }
command -v python3 >/dev/null || { say "python3 not installed"; exit 1; }

# --- build ----------------------------------------------------------------------------------
if [ -n "${PORTCULLIS_BIN:-}" ]; then
    BIN=$PORTCULLIS_BIN
else
    say "cargo build --release"
    cargo build --release
    BIN=$ROOT/target/release/portcullis
fi
[ -x "$BIN" ] || { say "no portcullis binary at $BIN"; exit 1; }

# Many sessions: file descriptors (client + proxy + Dovecot all live here).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- work directory, ports -----------------------------------------------------------------------
DC=$BENCH_DIR/dovecot
if [ -f "$DC/dovecot.conf" ]; then
    "$DOVECOT" -c "$DC/dovecot.conf" stop 2>/dev/null || true
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/certs" "$DC/home/alice/Maildir/"{cur,new,tmp}
chmod 755 "$BENCH_DIR" "$BENCH_DIR/certs" "$DC"
CERTS=$BENCH_DIR/certs

# Twelve free loopback ports (bound at once, so distinct).
read -r DC_IMAP DC_IMAPS DC_POP3 DC_POP3S DC_SIEVE PC_IMAP PC_IMAPS PD_IMAP PD_IMAPS \
    DC_IMAP_HAPROXY DC_SIEVE_HAPROXY _ < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(12)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

# --- cleanup -----------------------------------------------------------------------------------
PIDS=()
INOTIFY_OLD=""
OK=0
cleanup() {
    set +e
    trap '' PIPE INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    [ -f "$DC/dovecot.conf" ] && "$DOVECOT" -c "$DC/dovecot.conf" stop 2>/dev/null
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    # perdition children (one per session) that outlived their master.
    pkill -KILL -P "$(IFS=,; echo "${PIDS[*]:-0}")" 2>/dev/null
    if [ -n "$INOTIFY_OLD" ]; then
        echo "$INOTIFY_OLD" >/proc/sys/fs/inotify/max_user_instances 2>/dev/null
    fi
    if [ "$OK" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$BENCH_DIR"
    else
        say "logs and configs kept in $BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- certificates (as scripts/demo.sh) ------------------------------------------------------------
say "creating certificates in $CERTS"
make_certs "$CERTS" "Portcullis Bench" 30

# --- Dovecot (template rendered as scripts/demo.sh does, then limits raised) -----------------------
printf '%s\n' 'alice:{PLAIN}alicepw::::::' 'bob:{PLAIN}bobpw::::::' >"$DC/passwd"
chmod 644 "$DC/passwd"
# The ~1 MiB message of tests/support (alice_messages()[2]) plus a small one.
python3 "$ROOT/bench/load.py" seed "$DC/home/alice/Maildir/cur"

# Bench limits (see /work/shared/reference/dovecot-notes.md): many processes and clients, no
# per-user/IP cap, login processes serving many clients each (service_count = 0).
LIMIT=${BENCH_DOVECOT_LIMIT:-20000}
render_dovecot "$TEMPLATE" "$DC" "portcullis-bench-$$" "$CERTS" \
    -e "s|^default_process_limit = .*|default_process_limit = $LIMIT|" \
    -e "s|^default_client_limit = .*|default_client_limit = $((LIMIT * 4))|" \
    -e "s|^mail_max_userip_connections = .*|mail_max_userip_connections = $((LIMIT * 4))|" \
    -e "/^service imap-login {/a\\
  service_count = 0\\
  process_min_avail = $(nproc)\\
  client_limit = $((LIMIT * 4))"
cat >>"$DC/dovecot.conf" <<CONF

# --- added by bench/run.sh ---
service imap {
  process_limit = $LIMIT
  client_limit = 1
  service_count = ${BENCH_IMAP_SERVICE_COUNT:-1}
}
service auth {
  client_limit = $((LIMIT * 4))
}
CONF
grep -q '^  service_count = 0' "$DC/dovecot.conf" || { say "could not patch the Dovecot template"; exit 1; }

# Each IDLE session holds an inotify instance of the mail user (default 128 per user).
want=$((LIMIT + 1024))
cur=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
if [ "$cur" -lt "$want" ] && [ -w /proc/sys/fs/inotify/max_user_instances ]; then
    INOTIFY_OLD=$cur
    echo "$want" >/proc/sys/fs/inotify/max_user_instances
fi

say "starting Dovecot (log: $DC/dovecot.log)"
"$DOVECOT" -c "$DC/dovecot.conf" || { cat "$DC/dovecot.log" >&2; exit 1; }
wait_greeting() { # port: wait until the port sends a real greeting (auth is up)
    python3 - "$1" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); end = time.time() + 20
while time.time() < end:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        if b"ready" in s.recv(4096):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"port {port}: no greeting")
PY
}
wait_greeting "$DC_IMAP"
DC_PID=$(cat "$DC/run/master.pid")

# --- Portcullis -------------------------------------------------------------------------------------
cat >"$BENCH_DIR/portcullis.toml" <<TOML
# generated by bench/run.sh
[log]
destination = "$BENCH_DIR/portcullis.log"
ident = "portcullis"

[limits]
connection_limit = 0

# The guard stays on (its cost is part of the figures), with loopback trusted: every bench
# client comes from 127.0.0.1, and an untrusted address with more logins under way than
# ban_after would take turns (a 2-6 s tail that measures the guard, not the proxy).
[guard]
max_connections_per_address = 0
trusted = ["127.0.0.0/8"]

[[listener]]
protocol = "imap"
bind = ["127.0.0.1:$PC_IMAP"]
tls = "none"
[listener.backend]
host = "127.0.0.1"
port = $DC_IMAP
tls = "none"

[[listener]]
protocol = "imap"
bind = ["127.0.0.1:$PC_IMAPS"]
tls = "implicit"
cert = "$CERTS/cert.pem"
key = "$CERTS/key.pem"
[listener.backend]
host = "127.0.0.1"
port = $DC_IMAP
tls = "none"
TOML
say "starting Portcullis ($BIN)"
"$BIN" run --config "$BENCH_DIR/portcullis.toml" >"$BENCH_DIR/portcullis.out" 2>&1 &
PC_PID=$!
PIDS+=("$PC_PID")

# --- perdition -------------------------------------------------------------------------------------
say "starting perdition IMAP4 and IMAP4S ($PERDITION)"
# perdition drops to user nobody and then reopens its log file: it must be writable for it
# (else every session prints "fopen: Permission denied" to stderr and logs nothing).
touch "$BENCH_DIR/perdition.log" "$BENCH_DIR/perdition-tls.log"
chmod 666 "$BENCH_DIR/perdition.log" "$BENCH_DIR/perdition-tls.log"
perdition_common=(-f /dev/null --no_daemon -M "" -n --pid_file ""
    --bind_address 127.0.0.1 --outgoing_server 127.0.0.1 --outgoing_port "$DC_IMAP")
"$PERDITION" "${perdition_common[@]}" -P IMAP4 --listen_port "$PD_IMAP" \
    --log_facility "$BENCH_DIR/perdition.log" >"$BENCH_DIR/perdition.out" 2>&1 &
PD_PID=$!
PIDS+=("$PD_PID")
"$PERDITION" "${perdition_common[@]}" -P IMAP4S --listen_port "$PD_IMAPS" --ssl_mode ssl_listen \
    --ssl_cert_file "$CERTS/cert.pem" --ssl_key_file "$CERTS/key.pem" \
    --log_facility "$BENCH_DIR/perdition-tls.log" >"$BENCH_DIR/perdition-tls.out" 2>&1 &
PDS_PID=$!
PIDS+=("$PDS_PID")

for port in $PC_IMAP $PD_IMAP; do wait_greeting "$port"; done
for pid in "$PC_PID" "$PD_PID" "$PDS_PID"; do
    kill -0 "$pid" 2>/dev/null || { say "a proxy died at start; see $BENCH_DIR/*.out"; exit 1; }
done

# --- load -----------------------------------------------------------------------------------------
declare -A SPEC=(
    [dovecot]="dovecot,port=$DC_IMAP,tls=0,pid=$DC_PID,mem=tree"
    [portcullis]="portcullis,port=$PC_IMAP,tls=0,pid=$PC_PID,mem=tree,base=dovecot"
    [perdition]="perdition,port=$PD_IMAP,tls=0,pid=$PD_PID,mem=tree,base=dovecot"
    [dovecot-tls]="dovecot-tls,port=$DC_IMAPS,tls=1,pid=$DC_PID,mem=tree"
    [portcullis-tls]="portcullis-tls,port=$PC_IMAPS,tls=1,pid=$PC_PID,mem=tree,base=dovecot-tls"
    [perdition-tls]="perdition-tls,port=$PD_IMAPS,tls=1,pid=$PDS_PID,mem=tree,base=dovecot-tls"
)
args=()
IFS=, read -r -a rows <<<"$TARGETS"
for t in "${rows[@]}"; do
    [ -n "${SPEC[$t]:-}" ] || { say "unknown target $t"; exit 1; }
    args+=(--target "${SPEC[$t]}")
done

say "$("$BIN" --version 2>/dev/null) ($BIN), tree commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ' (+ uncommitted changes in src/)')"
python3 "$ROOT/bench/load.py" bench --ca "$CERTS/ca.pem" --dovecot-pid "$DC_PID" \
    --json "$BENCH_DIR/results.json" "${args[@]}" "$@"
cp "$BENCH_DIR/results.json" "$ROOT/bench/last-results.json" 2>/dev/null || true
for pid in "$PC_PID" "$PD_PID" "$PDS_PID"; do
    kill -0 "$pid" 2>/dev/null || say "WARNING: proxy pid $pid died during the run (see $BENCH_DIR)"
done
OK=1
