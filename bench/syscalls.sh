#!/usr/bin/env bash
# The system calls of a plain IMAP login through a running proxy, counted with strace
# (docs/src/performance.md, "The floor of a login", was written with it).
#
#   bash bench/syscalls.sh PORT PID...          # strace -c over BENCH_LOGINS logins, per login
#   BENCH_LOGINS=1 SYSCALLS_TRACE=FILE bash bench/syscalls.sh PORT PID...   # one login, traced
#
# PORT is the proxy's plain IMAP port on 127.0.0.1; each PID is followed with its threads
# (strace -f), so give every process that works for a login: Portcullis's one, or nginx's
# worker processes (`pgrep -P MASTER`: the auth_http request is served by one of them). The
# logins are sequential, one client: connect, greeting, `a LOGIN alice alicepw`, the tagged OK,
# `b LOGOUT`, its OK, close. The processes are the ones `KEEP=1 bash bench/compare.sh` leaves
# set up in BENCH_DIR (start Dovecot, Portcullis and nginx again by hand from its configs).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 PORT PID..." >&2; exit 2; }
PORT=$1
shift
LOGINS=${BENCH_LOGINS:-200}
USER_NAME=${BENCH_USER:-alice}
PASSWORD=${BENCH_PASSWORD:-alicepw}
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

attach=()
for pid in "$@"; do attach+=(-p "$pid"); done
if [ -n "${SYSCALLS_TRACE:-}" ]; then
    strace -f -tt "${attach[@]}" -o "$SYSCALLS_TRACE" 2>/dev/null &
else
    strace -f -c "${attach[@]}" -o "$OUT" 2>/dev/null &
fi
STRACE=$!
# strace says nothing once it has attached: wait until each process names it as its tracer.
for pid in "$@"; do
    for _ in $(seq 100); do
        grep -q "^TracerPid:[[:space:]]*$STRACE\$" "/proc/$pid/status" && break
        sleep 0.05
    done
done

python3 - "$PORT" "$LOGINS" "$USER_NAME" "$PASSWORD" <<'PY'
import socket, sys
port, logins = int(sys.argv[1]), int(sys.argv[2])
login = f"a LOGIN {sys.argv[3]} {sys.argv[4]}\r\n".encode()

def until(s, want):
    data = b""
    while want not in data:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"closed before {want!r}: {data!r}")
        data += chunk

for _ in range(logins):
    s = socket.create_connection(("127.0.0.1", port))
    until(s, b"\r\n")
    s.sendall(login)
    until(s, b"a OK")
    s.sendall(b"b LOGOUT\r\n")
    until(s, b"b OK")
    s.close()
PY
# The last login's log lines and closes: the writer may wait a few milliseconds for company.
sleep 0.5
kill -INT "$STRACE"
wait "$STRACE" 2>/dev/null || true
[ -n "${SYSCALLS_TRACE:-}" ] && exit 0

# strace -c's table: calls (and errors) per system call, divided by the logins.
python3 - "$OUT" "$LOGINS" <<'PY'
import sys
path, logins = sys.argv[1], int(sys.argv[2])
rows = []
for line in open(path):
    parts = line.split()
    if len(parts) < 5 or not parts[3].isdigit() or parts[-1] == "total":
        continue
    calls = int(parts[3])
    errors = int(parts[4]) if len(parts) == 6 else 0
    rows.append((parts[-1], calls, errors))
rows.sort(key=lambda r: -r[1])
total = sum(r[1] for r in rows)
print(f"| system call | per login | errors per login |")
print(f"|---|---:|---:|")
for name, calls, errors in rows:
    print(f"| {name} | {calls / logins:.2f} | {errors / logins:.2f} |")
print(f"| **total** | **{total / logins:.2f}** | |")
PY
