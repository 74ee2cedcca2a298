# The pool mode of bench/compare.sh (BENCH_MODES=pool): sourced by it, not run. See
# bench/README.md, "The pool mode".
#
# The same load generator and the same 10,000 users log in through four Portcullis
# configurations, one at a time, each a fresh process metered alone:
#   static          [listener.backend] host = 127.0.0.11, no map
#   pool            kind = "pool" over 127.0.0.11, .12 and .13, no store
#   pool+store      the same with [fleet] store on the bench's redis-server
#   pool+store+cap  the same with [limits] max_sessions_per_user = 10
# The three servers are three listening addresses of the bench's one Dovecot, on one port: the
# pool places users on hosts, so it needs distinct addresses, and one Dovecot keeps the back-end
# work the same for every row (three Dovecots would triple its idle processes and caches, and
# change what the machine does besides the proxy). Every row has its own store prefix, so the
# store rows start empty as the pool row does, and the rows run in rounds, in the order above in
# odd rounds and reversed in even ones, so that a drift of the machine falls on all rows alike.
# Around each row: redis's INFO commandstats, its reads, and its CPU (every thread's run time
# from /proc/PID/task/*/schedstat, in ns), and which of the three addresses Dovecot logged the logins
# on. bench/pool_report.py makes the tables.
#
# Uses from compare.sh: ROOT, BENCH, BIN, BENCH_DIR, RES, DC, PL_IMAP (the pool listener's port),
# CLIENTS, PIDS, say, bench.

POOL_USERS=${BENCH_POOL_USERS:-10000}
POOL_DURATION=${BENCH_POOL_DURATION:-3}
POOL_ROUNDS=${BENCH_POOL_ROUNDS:-5}
POOL_PASSWORD=poolpw
POOL_HOSTS=(127.0.0.11 127.0.0.12 127.0.0.13)
POOL_ROWS=(static pool pool+store pool+store+cap)
RD_PID=""

# pool_users DC USERS_FILE: user0 ... user(N-1) in Dovecot's passwd with their Maildirs made
# (so that no row pays for creating them), and the load generator's users file.
pool_users() {
    python3 - "$1" "$2" "$POOL_USERS" "$POOL_PASSWORD" <<'PY'
import os, sys
dc, users_file, n, password = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(os.path.join(dc, "passwd"), "a") as passwd, open(users_file, "w") as users:
    for i in range(n):
        passwd.write(f"user{i}:{{PLAIN}}{password}::::::\n")
        users.write(f"user{i}/{password}\n")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(dc, "home", f"user{i}", "Maildir", sub))
PY
}

# pool_dovecot_listener PORT: POOL_SED, sed arguments for render_dovecot that add Dovecot's
# IMAP listener on the three pool addresses.
pool_dovecot_listener() {
    local addresses
    addresses=$(IFS=' '; echo "${POOL_HOSTS[*]}")
    POOL_SED=(-e "/^service imap-login {/a\\
  inet_listener imap_pool {\\
    address = $addresses\\
    port = $1\\
  }")
}

# pool_port: a loopback port for a server about to start, outside the kernel's ephemeral range
# (the bench's own connections come and go by the thousand meanwhile); its callers try again on
# another when the server does not come up.
pool_port() {
    python3 "$ROOT/scripts/free_port.py"
}

# pool_redis: a redis-server of the bench's own on loopback (no persistence); RD_PID, RD_PORT.
pool_redis() {
    local dir=$BENCH_DIR/redis try
    mkdir -p "$dir"
    for try in 1 2 3; do
        RD_PORT=$(pool_port) || return 1
        say "starting redis-server on $RD_PORT, the pool's store (log: $dir/redis.log)"
        redis-server --port "$RD_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
            --logfile "$dir/redis.log" </dev/null >"$dir/redis.out" 2>&1 &
        RD_PID=$!
        PIDS+=("$RD_PID")
        for _ in $(seq 100); do
            [ "$(redis-cli -p "$RD_PORT" ping 2>/dev/null)" = PONG ] && return 0
            kill -0 "$RD_PID" 2>/dev/null || break
            sleep 0.1
        done
        say "redis-server did not come up on $RD_PORT (try $try): $(tail -3 "$dir/redis.log" 2>/dev/null)"
        kill "$RD_PID" 2>/dev/null
        pool_forget "$RD_PID"
        RD_PID=""
    done
    return 1
}

# pool_forget PID: PID is no longer ours to stop (it ended).
pool_forget() {
    local p left=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || left+=("$p"); done
    PIDS=("${left[@]}")
}

# pool_greeted PORT PID: until Portcullis (PID) greets on PORT; fails at once if it ended.
pool_greeted() {
    local _
    for _ in $(seq 100); do
        python3 - "$1" <<'PY' 2>/dev/null && return 0
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1)
sys.exit(0 if s.recv(4096).startswith(b"* OK") else 1)
PY
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# pool_config ROW FILE PORT PREFIX: the Portcullis configuration of one row, a plain IMAP
# listener on PORT; the guard as in the other rows (on, loopback trusted).
pool_config() {
    local row=$1 file=$2 port=$3 prefix=$4 host="" servers=""
    if [ "$row" = static ]; then
        host=${POOL_HOSTS[0]}
    else
        local h
        for h in "${POOL_HOSTS[@]}"; do servers+="${servers:+, }\"$h:$PL_IMAP\""; done
    fi
    {
        echo "# generated by bench/pool.sh: row $row"
        echo "[log]"
        echo "destination = \"$BENCH_DIR/pool/$row.log\""
        echo "ident = \"portcullis\""
        echo
        echo "[limits]"
        echo "connection_limit = 0"
        [ "$row" = pool+store+cap ] && echo "max_sessions_per_user = 10"
        echo
        echo "[guard]"
        echo "max_connections_per_address = 0"
        echo "trusted = [\"127.0.0.0/8\"]"
        case $row in
        pool+store*)
            echo
            echo "[fleet]"
            echo "store = \"redis://127.0.0.1:$RD_PORT\""
            echo "store_prefix = \"$prefix\""
            ;;
        esac
        echo
        echo "[[listener]]"
        echo "protocol = \"imap\""
        echo "bind = [\"127.0.0.1:$port\"]"
        echo "tls = \"none\""
        echo "[listener.backend]"
        echo "host = \"$host\""
        echo "port = $PL_IMAP"
        echo "tls = \"none\""
        if [ -n "$servers" ]; then
            echo "[listener.map]"
            echo "kind = \"pool\""
            echo "servers = [$servers]"
        fi
    } >"$file"
}

# pool_snapshot FILE: redis's command counts and its CPU so far.
pool_snapshot() {
    {
        redis-cli -p "$RD_PORT" info all | tr -d '\r' | grep -E '^(cmdstat_|total_reads_processed:)'
        local ns=0 t
        for t in /proc/"$RD_PID"/task/*/schedstat; do
            ns=$((ns + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0)))
        done
        echo "cpu_ns:$ns"
    } >"$1"
}

# pool_hosts LOG OFFSET FILE: the Dovecot logins logged since OFFSET, by local address.
pool_hosts() {
    tail -c +"$(($2 + 1))" "$1" | { grep 'imap-login: .*Login: user=' || true; } |
        sed -n 's/.*lip=\([0-9.]*\).*/\1/p' | sort | uniq -c | awk '{print $2, $1}' >"$3"
}

# pool_start ROW NAME: start the row's Portcullis on a port of its own; PC_PID, PC_PORT.
pool_start() {
    local row=$1 name=$2 try conf=$BENCH_DIR/pool/$2.toml
    for try in 1 2 3; do
        PC_PORT=$(pool_port) || return 1
        pool_config "$row" "$conf" "$PC_PORT" "portcullis-bench:$name:"
        "$BIN" check --config "$conf" >"$BENCH_DIR/pool/$name.check" 2>&1 ||
            { say "$row: portcullis check failed"; cat "$BENCH_DIR/pool/$name.check" >&2; return 1; }
        "$BIN" run --config "$conf" >"$BENCH_DIR/pool/$name.out" 2>&1 &
        PC_PID=$!
        PIDS+=("$PC_PID")
        pool_greeted "$PC_PORT" "$PC_PID" && return 0
        say "$row: Portcullis did not come up on $PC_PORT (try $try): $(tail -3 "$BENCH_DIR/pool/$row.log" 2>/dev/null)"
        kill "$PC_PID" 2>/dev/null
        wait "$PC_PID" 2>/dev/null
        pool_forget "$PC_PID"
    done
    return 1
}

# pool_row ROW ROUND: one row once: start its Portcullis, measure, stop it.
pool_row() {
    local row=$1 round=$2 name="r$2-$1"
    local out=$RES/pool/$name
    pool_start "$row" "$name" || return 1
    local pid=$PC_PID port=$PC_PORT offset
    offset=$(stat -c %s "$DC/dovecot.log")
    [ -z "$RD_PID" ] || pool_snapshot "$out.redis-before"
    # A one-client step for the latency a login adds (nothing queues), then CLIENTS clients for
    # the CPU per login; the users in turn, each login the next one.
    bench "$row" "pool/$name" logins --target "127.0.0.1:$port" --pid "$pid" \
        --users-file "$BENCH_DIR/pool/users" --clients "1,$CLIENTS" --duration "$POOL_DURATION"
    [ -z "$RD_PID" ] || pool_snapshot "$out.redis-after"
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    pool_forget "$pid"
    pool_hosts "$DC/dovecot.log" "$offset" "$out.hosts"
}

# pool_mode: every row, POOL_ROUNDS times; the tables in $BENCH_DIR/compare-pool.md (printed
# with the others at the end).
pool_mode() {
    local round rows i
    for round in $(seq "$POOL_ROUNDS"); do
        rows=("${POOL_ROWS[@]}")
        if [ $((round % 2)) = 0 ]; then
            rows=()
            for ((i = ${#POOL_ROWS[@]} - 1; i >= 0; i--)); do rows+=("${POOL_ROWS[$i]}"); done
        fi
        for i in "${!rows[@]}"; do
            pool_row "${rows[$i]}" "$round" || return 1
        done
    done
    python3 "$ROOT/bench/pool_report.py" --users "$POOL_USERS" --clients "$CLIENTS" \
        --duration "$POOL_DURATION" --rounds "$POOL_ROUNDS" "$RES/pool" >"$BENCH_DIR/compare-pool.md"
}
