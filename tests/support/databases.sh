#!/usr/bin/env bash
# Start a throw-away PostgreSQL and MariaDB on loopback for the SQL map tests, in DIR.
#   databases.sh start DIR   prints PORTCULLIS_TEST_POSTGRES=... and PORTCULLIS_TEST_MARIADB=...
#   databases.sh stop DIR    stops both
# scripts/test.sh starts them once per run; a test process started without them runs this
# script itself (tests/support/databases.rs). Both servers refuse to run as root, so they run
# as their own users (postgres, mysql) when started by root.
set -euo pipefail

cmd=${1:?start|stop}
dir=${2:?directory}

as_user() {
    local user=$1
    shift
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$user" -- "$@"
    else
        "$@"
    fi
}

# A port outside the kernel's ephemeral range that nothing holds now (scripts/free_port.py);
# the server binds it a moment later, so each start is tried again on a new port.
free_port() {
    python3 "$(dirname "${BASH_SOURCE[0]}")/../../scripts/free_port.py"
}

# wait_port PORT [PID]: until PORT accepts connections; fails at once when PID is gone.
wait_port() {
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            echo "the server for port $1 exited" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "nothing listening on $1" >&2
    return 1
}

start_postgres() {
    local bin port
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    mkdir -p "$dir/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$dir/pg"
    as_user postgres "$bin/initdb" -D "$dir/pg/data" -A trust -U postgres >"$dir/pg/initdb.log" 2>&1
    local try
    for try in 1 2 3; do
        port=$(free_port)
        as_user postgres "$bin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w \
            -o "-p $port -k $dir/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null &&
            wait_port "$port" && break
        echo "postgres did not start on $port (try $try): $(tail -3 "$dir/pg/server.log")" >&2
        [ "$try" -eq 3 ] && return 1
    done
    echo "PORTCULLIS_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port"
}

start_mariadb() {
    local port
    mkdir -p "$dir/mariadb"
    [ "$(id -u)" -eq 0 ] && chown mysql: "$dir/mariadb"
    as_user mysql mariadb-install-db --no-defaults --datadir="$dir/mariadb/data" \
        --auth-root-authentication-method=normal >"$dir/mariadb/install.log" 2>&1
    local try pid
    for try in 1 2 3; do
        port=$(free_port)
        as_user mysql mariadbd --no-defaults --datadir="$dir/mariadb/data" --port="$port" \
            --bind-address=127.0.0.1 --socket="$dir/mariadb/sock" \
            --pid-file="$dir/mariadb/pid" --skip-log-bin --innodb-flush-log-at-trx-commit=0 \
            >"$dir/mariadb/server.log" 2>&1 &
        pid=$!
        wait_port "$port" "$pid" && break
        echo "mariadbd did not start on $port (try $try): $(tail -3 "$dir/mariadb/server.log")" >&2
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        [ "$try" -eq 3 ] && return 1
    done
    # 127.0.0.1 counts as localhost, where an anonymous user would win over '%'.
    mariadb --no-defaults -S "$dir/mariadb/sock" -u root -e \
        "DELETE FROM mysql.user WHERE User='';
         CREATE USER 'portcullis'@'%' IDENTIFIED BY 'portcullispw';
         CREATE USER 'portcullis'@'localhost' IDENTIFIED BY 'portcullispw';
         GRANT ALL ON *.* TO 'portcullis'@'%';
         GRANT ALL ON *.* TO 'portcullis'@'localhost';
         FLUSH PRIVILEGES;"
    echo "PORTCULLIS_TEST_MARIADB=mysql://portcullis:portcullispw@127.0.0.1:$port"
}

case $cmd in
start)
    mkdir -p "$dir"
    chmod 755 "$dir"
    start_postgres
    start_mariadb
    ;;
stop)
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    as_user postgres "$bin/pg_ctl" -D "$dir/pg/data" -m immediate stop >/dev/null 2>&1 || true
    [ -f "$dir/mariadb/pid" ] && kill "$(cat "$dir/mariadb/pid")" 2>/dev/null || true
    ;;
esac
