#!/usr/bin/env bash
# The single test command for Portcullis (see README):
#   1. on Debian, installs what the integration tests need (Dovecot, Postfix, OpenSSL, Perdition, ...)
#   2. cargo fmt --check
#   3. cargo clippy --all-targets -- -D warnings
#   4. cargo test --all-targets   (or cargo nextest run --all-targets when installed)
# The tests start their own private Dovecot and Postfix instances on loopback ports; the system
# Dovecot/Postfix/Perdition services are never used (and without systemd they are not even started).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

PKGS=(dovecot-imapd dovecot-pop3d dovecot-managesieved dovecot-lmtpd dovecot-submissiond postfix
      swaks msmtp curl openssl fail2ban perdition perdition-ldap slapd ldap-utils postgresql
      mariadb-server mariadb-client sqlite3 haproxy python3 sieve-connect procps redis-server
      chromium man-db adduser pebble)

say() { printf '== %s\n' "$*" >&2; }

raise_limits() {
    # Load tests open many sessions: more file descriptors, and (best effort, root only)
    # more inotify instances for Dovecot's IDLE (Debian default 128 per user).
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
    local f=/proc/sys/fs/inotify/max_user_instances
    if [ -w "$f" ] && [ "$(cat "$f")" -lt 1024 ]; then
        echo 1024 >"$f" 2>/dev/null || true
    fi
}

# One directory server for the whole run (tests/support/slapd.rs); each test writes under an OU
# of its own. Without it, each test process that needs LDAP starts a private one.
start_shared_slapd() {
    command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || return 0
    local dir port
    dir=$(mktemp -d /tmp/portcullis-slapd.XXXXXX)
    mkdir -p "$dir/db"
    gzip -dc /usr/share/doc/perdition-ldap/perdition.schema.gz >"$dir/perdition.schema" || return 0
    sed -e "s|@DIR@|$dir|g" tests/support/ldap/slapd.conf.in >"$dir/slapd.conf"
    # A port outside the kernel's ephemeral range (scripts/free_port.py); slapd binds it a
    # moment later, so a port taken meanwhile means another try on another.
    local try
    for try in 1 2 3; do
        port=$(python3 scripts/free_port.py) || return 0
        /usr/sbin/slapd -f "$dir/slapd.conf" -h "ldap://127.0.0.1:$port/" && break
        say "slapd did not start on $port (try $try)"
        [ "$try" -eq 3 ] && return 0
    done
    for _ in $(seq 100); do
        ldapadd -x -H "ldap://127.0.0.1:$port" -D cn=admin,dc=nodomain -w adminpw \
            -f tests/support/ldap/base.ldif >/dev/null 2>&1 && break
        sleep 0.1
    done
    export PORTCULLIS_TEST_LDAP="ldap://127.0.0.1:$port"
    STOP_SLAPD="kill \$(cat $dir/slapd.pid)"
    say "slapd for the tests at $PORTCULLIS_TEST_LDAP"
}

# PostgreSQL and MariaDB for the whole run (tests/support/databases.sh); each test makes a
# database of its own.
start_shared_databases() {
    command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || return 0
    local dir line
    dir=$(mktemp -d /tmp/portcullis-db.XXXXXX)
    while IFS= read -r line; do
        case $line in
        PORTCULLIS_TEST_*=*) export "${line?}" ;;
        esac
    done < <(bash tests/support/databases.sh start "$dir" || true)
    STOP_DATABASES="bash tests/support/databases.sh stop $dir"
    say "databases for the tests: ${PORTCULLIS_TEST_POSTGRES:-none} ${PORTCULLIS_TEST_MARIADB:-none}"
}

# One Valkey/Redis server for the whole run (tests/support/redis.rs); each test uses a key
# prefix of its own.
start_shared_redis() {
    command -v redis-server >/dev/null 2>&1 || return 0
    local dir port
    dir=$(mktemp -d /tmp/portcullis-redis.XXXXXX)
    local try up=
    for try in 1 2 3; do
        port=$(python3 scripts/free_port.py) || return 0
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
            --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null ||
            continue
        for _ in $(seq 100); do
            python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" \
                2>/dev/null && { up=1; break; }
            sleep 0.1
        done
        [ -n "$up" ] && break
        say "redis-server did not start on $port (try $try): $(tail -3 "$dir/redis.log" 2>/dev/null)"
    done
    [ -n "$up" ] || return 0
    export PORTCULLIS_TEST_REDIS="redis://127.0.0.1:$port"
    STOP_REDIS="kill \$(cat $dir/redis.pid)"
    say "redis-server for the tests at $PORTCULLIS_TEST_REDIS"
}

stop_shared_services() {
    [ -n "${STOP_REDIS:-}" ] && eval "$STOP_REDIS" 2>/dev/null || true
    [ -n "${STOP_SLAPD:-}" ] && eval "$STOP_SLAPD" 2>/dev/null || true
    [ -n "${STOP_DATABASES:-}" ] && eval "$STOP_DATABASES" || true
}

# Postfix installs with "No configuration": the tests run private instances of their own
# (tests/support/postfix.rs), and nothing system-wide is set up or started.
preseed_postfix() {
    [ "$(id -u)" -eq 0 ] && command -v debconf-set-selections >/dev/null 2>&1 || return 0
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
}

preseed_postfix
install_packages "${PKGS[@]}"
raise_limits
start_shared_slapd
start_shared_databases
start_shared_redis
trap 'stop_shared_services' EXIT

if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust (https://rustup.rs)"
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    for c in rustfmt clippy; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" ||
            rustup component add "$c" || true
    done
fi

say "cargo fmt --check"
cargo fmt --all --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# The Debian package, built and installed, for tests/package.rs (Debian and root only).
install_package() {
    command -v dpkg >/dev/null 2>&1 || return 0
    [ "$(id -u)" -eq 0 ] || { say "not root: the package is not installed (tests/package.rs will say so)"; return 0; }
    if ! cargo deb --version >/dev/null 2>&1; then
        say "cargo install cargo-deb"
        cargo install cargo-deb --locked
    fi
    say "cargo deb, dpkg -i"
    cargo deb
    dpkg -i "${CARGO_TARGET_DIR:-target}"/debian/portcullis_*.deb
}
install_package

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --all-targets"
    cargo nextest run --all-targets
else
    say "cargo test --all-targets"
    cargo test --all-targets
fi
# The benchmark tool, built and run for a few seconds against a throw-away Dovecot and
# Portcullis: it must produce its tables (it measures nothing worth comparing here).
say "bench/smoke.sh"
release=$(cd "${CARGO_TARGET_DIR:-target}" 2>/dev/null && pwd)/release/portcullis
if [ -x "$release" ]; then
    PORTCULLIS_BIN=$release bash bench/smoke.sh
else
    bash bench/smoke.sh
fi
say "all checks passed"
