#!/usr/bin/env bash
# Side-by-side benchmark: Portcullis vs nginx's mail proxy vs Debian's perdition vs Dovecot's own
# proxy mode, and direct Dovecot, in one run on one machine (see bench/README.md).
#
#   bash bench/compare.sh                  # everything, about 10 minutes on 2 cores (+ builds)
#   BENCH_TARGETS=portcullis,nginx BENCH_MODES=logins,fetch bash bench/compare.sh
#   BENCH_TARGETS=portcullis BENCH_MODES=idle BENCH_IDLE=1000,5000,9500 bash bench/compare.sh
#   BENCH_TARGETS=postfix,portcullis,nginx BENCH_MODES=submission bash bench/compare.sh
#   BENCH_MODES=pool bash bench/compare.sh  # Portcullis: static back end vs a pool of three
#
# Starts on loopback, on free ports, with one certificate (RSA-2048 unless BENCH_KEY=ec):
#   dovecot        the back end: a throw-away Dovecot (tests/support/dovecot.conf.in, limits
#                  raised), user alice with a 1 MiB and a BENCH_FETCH_MIB MiB message; its own
#                  IMAP and IMAPS ports are the "direct" rows;
#   portcullis     plain IMAP and implicit-TLS listeners -> Dovecot's plain IMAP port;
#   nginx          Debian's nginx with libnginx-mod-mail: imap and imap ssl servers, an auth_http
#                  location served by the same nginx (answers OK, server = the back end), TLS 1.2
#                  and 1.3, a shared session cache (and its default tickets);
#   perdition      Debian's perdition 2.2: -P IMAP4 and -P IMAP4S --ssl_mode ssl_listen;
#   dovecot-proxy  a second Dovecot whose passdb says proxy=y (Dovecot's proxy mode, its login
#                  processes in high-performance mode: service_count = 0);
# and for the submission mode (SMTP, plain, no TLS):
#   postfix        a throw-away Postfix (its own config, queue and data directories, `master` in
#                  the foreground; needs root), AUTH through the bench Dovecot's SASL socket, every
#                  message accepted and discarded; its submission port is the "direct" row;
#   portcullis     a protocol = "submission" listener -> Postfix's submission port (AUTH PLAIN);
#   nginx          an smtp server (smtp_auth plain login, proxy_smtp_auth on: AUTH PLAIN at
#                  Postfix too, xclient off), auth_http answered by the same nginx;
# then runs bench/portcullis-bench against each, mode by mode (every target sees the same
# conditions), and prints one table with ratios against nginx and against direct Dovecot (the
# submission mode: a table of its own, ratios against nginx and against direct Postfix).
# Results: $BENCH_DIR/results/*.json and *.md, the table in $BENCH_DIR/compare.md; a whole run
# (all targets and modes) also writes it to bench/results/latest.md with the machine's
# description. Everything started is stopped on exit.
#
# Environment (defaults in brackets):
#   BENCH_TARGETS   comma list [dovecot,postfix,portcullis,nginx,perdition,dovecot-proxy]
#                   (IMAP modes: rows but postfix; submission: postfix, portcullis, nginx)
#   BENCH_MODES     comma list, run in this order [idle,logins,returning,fetch,submission];
#                   also `sweep`: logins at BENCH_SWEEP [1,4,16,64] clients, an SVG of latency
#                   against load per row and transport in $BENCH_DIR/results/sweep/, and
#                   the rows side by side in logins-plain.svg and logins-tls.svg there.
#                   `submission`: smtp-logins (BENCH_CLIENTS, BENCH_DURATION) and smtp-send
#                   (a BENCH_FETCH_MIB MiB message, BENCH_DURATION) per row; needs root (Postfix)
#                   `pool` (not in the default list; bench/pool.sh): Portcullis alone, a static
#                   back end against kind = "pool" over three addresses of the bench Dovecot,
#                   without and with [fleet] store (a redis-server of its own) and a session
#                   cap; plain logins of BENCH_POOL_USERS users, the store's work per login
#                   counted in redis. With BENCH_MODES=pool alone, BENCH_TARGETS defaults to
#                   dovecot (the back end; the pool's rows are its own)
#   BENCH_KEY       server key: rsa (RSA-2048) or ec (P-256) [rsa]
#   BENCH_CLIENTS   concurrent clients of the logins mode [16]
#   BENCH_DURATION  seconds per logins step and per fetch (and send) run [5]
#   BENCH_RETURNING distinct returning TLS clients [10000]; perdition (a process per connection,
#                   no shared session cache) gets BENCH_RETURNING_SLOW [1000]
#   BENCH_FETCH_MIB size of the fetched (and of the sent) message in MiB [10]
#   BENCH_IDLE      idle sessions; a comma list runs several sizes [1000]
#   BENCH_SOURCES   client source addresses [127.0.0.1-127.0.0.8]
#   BENCH_IDLE_TRANSPORTS  plain,tls, or one of them [plain,tls] (9,500 sessions of each at
#                   once would need more than the 20,000 files a process may open here)
#   BENCH_POOL_USERS     users of the pool mode [10000]
#   BENCH_POOL_DURATION  seconds of each of its two steps (1 client, BENCH_CLIENTS) per row [3]
#   BENCH_POOL_ROUNDS    times each of its four rows runs [5]
#   BENCH_DIR       work directory [/tmp/portcullis-compare] (wiped at start)
#   PORTCULLIS_BIN, PORTCULLIS_BENCH_BIN   binaries to use instead of cargo build --release
#   PORTCULLIS_FEATURES   cargo features for the Portcullis build (e.g. a crypto provider)
#   KEEP=1          keep BENCH_DIR (it is always kept after a failure)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH_DIR=${BENCH_DIR:-/tmp/portcullis-compare}
TEMPLATE=$ROOT/tests/support/dovecot.conf.in
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
# shellcheck source=bench/pool.sh
. "$ROOT/bench/pool.sh"
ALL_TARGETS=dovecot,postfix,portcullis,nginx,perdition,dovecot-proxy
TARGETS=${BENCH_TARGETS:-$ALL_TARGETS}
# Idle first: measured on fresh processes, before the other modes leave freed memory behind
# in the allocators for the sessions to reuse.
ALL_MODES=idle,logins,returning,fetch,submission
MODES=${BENCH_MODES:-$ALL_MODES}
# The pool mode measures Portcullis against itself: alone, it needs no other row.
[ -z "${BENCH_TARGETS:-}" ] && [ "$MODES" = pool ] && TARGETS=dovecot
KEY=${BENCH_KEY:-rsa}
CLIENTS=${BENCH_CLIENTS:-16}
DURATION=${BENCH_DURATION:-5}
RETURNING=${BENCH_RETURNING:-10000}
RETURNING_SLOW=${BENCH_RETURNING_SLOW:-1000}
FETCH_MIB=${BENCH_FETCH_MIB:-10}
IDLE=${BENCH_IDLE:-1000}
SOURCES=${BENCH_SOURCES:-127.0.0.1-127.0.0.8}
IDLE_TRANSPORTS=${BENCH_IDLE_TRANSPORTS:-plain,tls}
SWEEP=${BENCH_SWEEP:-1,4,16,64}

say() { printf '== %s\n' "$*" >&2; }
has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }

# A fresh Debian machine: what the rows need (nginx's package may start its own service on
# port 80; nothing here uses it).
install_packages dovecot-imapd openssl python3 perdition nginx libnginx-mod-mail
has "$MODES" submission && install_packages postfix
if has "$MODES" pool; then
    install_packages redis-server
    for tool in redis-server redis-cli; do
        command -v "$tool" >/dev/null || { say "$tool not installed (apt-get install redis-server)"; exit 1; }
    done
fi
DOVECOT=$(PATH=$PATH:/usr/sbin:/sbin command -v dovecot) || { say "dovecot not installed"; exit 1; }
for tool in openssl python3; do
    command -v "$tool" >/dev/null || { say "$tool not installed"; exit 1; }
done
if has "$TARGETS" perdition; then
    PERDITION=$(PATH=$PATH:/usr/sbin:/sbin command -v perdition) ||
        { say "perdition not installed (apt-get install perdition)"; exit 1; }
fi
NGINX_MAIL=/usr/lib/nginx/modules/ngx_mail_module.so
if has "$TARGETS" nginx; then
    NGINX=$(PATH=$PATH:/usr/sbin:/sbin command -v nginx) ||
        { say "nginx not installed (apt-get install nginx libnginx-mod-mail)"; exit 1; }
    [ -f "$NGINX_MAIL" ] || { say "no $NGINX_MAIL (apt-get install libnginx-mod-mail)"; exit 1; }
fi
POSTFIX=/usr/sbin/postfix
POSTFIX_MASTER=/usr/lib/postfix/sbin/master
if has "$MODES" submission; then
    # Postfix's master runs only as root. Asked for, the mode fails without it; in the default
    # list, it is left out with a word.
    why=""
    [ -x "$POSTFIX" ] && [ -x "$POSTFIX_MASTER" ] || why="postfix not installed"
    [ "$(id -u)" -eq 0 ] || why="the submission mode needs root (Postfix's master)"
    if [ -n "$why" ] && [ -n "${BENCH_MODES:-}" ]; then
        say "$why"
        exit 1
    elif [ -n "$why" ]; then
        say "$why: submission left out"
        MODES=${MODES%,submission}
        ALL_MODES=$MODES
    fi
fi

# --- binaries ------------------------------------------------------------------------------------
bench_binaries "$ROOT" || exit 1

# Many sessions: the client, the proxies and Dovecot all live on this machine.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- work directory, ports, cleanup --------------------------------------------------------------
DC=$BENCH_DIR/dovecot
DP=$BENCH_DIR/dovecot-proxy
for d in "$DC" "$DP"; do
    [ -f "$d/dovecot.conf" ] && "$DOVECOT" -c "$d/dovecot.conf" stop 2>/dev/null || true
done
rm -rf "$BENCH_DIR"
RES=$BENCH_DIR/results
mkdir -p "$BENCH_DIR/certs" "$RES" "$DC/home/alice/Maildir/"{cur,new,tmp} "$DP/home" \
    "$BENCH_DIR/nginx/tmp"
chmod 755 "$BENCH_DIR" "$BENCH_DIR/certs" "$DC" "$DP"
CERTS=$BENCH_DIR/certs

# Free loopback ports, all bound at once so they are distinct.
read -r DC_IMAP DC_IMAPS DC_POP3 DC_POP3S DC_SIEVE DC_IMAP_HAPROXY DC_SIEVE_HAPROXY \
    DP_IMAP DP_IMAPS DP_POP3 DP_POP3S DP_SIEVE DP_IMAP_HAPROXY DP_SIEVE_HAPROXY \
    PC_IMAP PC_IMAPS NG_IMAP NG_IMAPS NG_AUTH PD_IMAP PD_IMAPS PF_SUB PC_SUB NG_SMTP \
    PL_IMAP \
    < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(25)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
)

PIDS=()
PF_PID=""
INOTIFY_OLD=""
OK=0
cleanup() {
    set +e
    trap '' PIPE INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for d in "$DC" "$DP"; do
        [ -f "$d/dovecot.conf" ] && "$DOVECOT" -c "$d/dovecot.conf" stop 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    done
    # Postfix's master leads a process group of its own (its smtpd, cleanup, qmgr...), which it
    # tells to stop without waiting: wait for the group, so nothing writes into BENCH_DIR after.
    if [ -n "$PF_PID" ]; then
        for _ in $(seq 50); do kill -0 -- "-$PF_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$PF_PID" 2>/dev/null
    fi
    # perdition's per-session children that outlived their master.
    [ "${#PIDS[@]}" -gt 0 ] && pkill -KILL -P "$(IFS=,; echo "${PIDS[*]}")" 2>/dev/null
    if [ -n "$INOTIFY_OLD" ]; then
        echo "$INOTIFY_OLD" >/proc/sys/fs/inotify/max_user_instances 2>/dev/null
    fi
    if [ "$OK" = 1 ] && [ "${KEEP:-0}" != 1 ]; then
        rm -rf "$BENCH_DIR"
    else
        say "logs, configs and results kept in $BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_greeting() { # port [prefix [host]]: until it sends a real greeting (IMAP's, or SMTP's 220)
    python3 - "$1" "${2:-* OK}" "${3:-127.0.0.1}" <<'PY'
import socket, sys, time
port = int(sys.argv[1]); want = sys.argv[2].encode(); host = sys.argv[3]; end = time.time() + 20
while time.time() < end:
    try:
        s = socket.create_connection((host, port), timeout=2)
        if s.recv(4096).startswith(want):
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.1)
sys.exit(f"{host}:{port}: no greeting")
PY
}

# --- certificates, the back end ------------------------------------------------------------------
say "certificates ($KEY) in $CERTS"
make_certs "$CERTS" "Portcullis Bench" 30 "$KEY"

printf '%s\n' 'alice:{PLAIN}alicepw::::::' 'bob:{PLAIN}bobpw::::::' >"$DC/passwd"
chmod 644 "$DC/passwd"
python3 "$ROOT/bench/seed.py" "$DC/home/alice/Maildir/cur" --big-mib "$FETCH_MIB"
POOL_SED=()
if has "$MODES" pool; then
    mkdir -p "$BENCH_DIR/pool" "$RES/pool"
    say "pool mode: $POOL_USERS users"
    pool_users "$DC" "$BENCH_DIR/pool/users"
    pool_dovecot_listener "$PL_IMAP"
fi

# Limits for many sessions (see ../shared/reference/dovecot-notes.md): login processes serving
# many clients each, one imap process per session (Dovecot's default), no per-user/IP cap.
LIMIT=20000
dovecot_limits=(
    -e "s|^default_process_limit = .*|default_process_limit = $LIMIT|"
    -e "s|^default_client_limit = .*|default_client_limit = $((LIMIT * 4))|"
    -e "s|^mail_max_userip_connections = .*|mail_max_userip_connections = $((LIMIT * 4))|"
    -e "/^service imap-login {/a\\
  service_count = 0\\
  process_min_avail = $(nproc)\\
  client_limit = $LIMIT"
)
render_dovecot "$TEMPLATE" "$DC" "portcullis-bench-$$" "$CERTS" "${dovecot_limits[@]}" "${POOL_SED[@]}"
cat >>"$DC/dovecot.conf" <<CONF

# --- added by bench/compare.sh ---
service imap {
  process_limit = $LIMIT
  client_limit = 1
}
service auth {
  client_limit = $((LIMIT * 4))
  # The bench Postfix's SASL (smtpd_sasl_type = dovecot), as the postfix user.
  unix_listener postfix-auth {
    mode = 0666
  }
}
CONF
grep -q '^  service_count = 0' "$DC/dovecot.conf" || { say "could not patch the Dovecot template"; exit 1; }
if has "$MODES" pool; then
    grep -q 'inet_listener imap_pool' "$DC/dovecot.conf" || { say "could not add the pool's listener"; exit 1; }
fi

# Each IDLE session holds an inotify instance of the mail user (default 128 per user).
want=$((LIMIT + 1024))
cur=$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 0)
if [ "$cur" -lt "$want" ] && [ -w /proc/sys/fs/inotify/max_user_instances ]; then
    INOTIFY_OLD=$cur
    echo "$want" >/proc/sys/fs/inotify/max_user_instances
fi
say "starting Dovecot, the back end (log: $DC/dovecot.log)"
"$DOVECOT" -c "$DC/dovecot.conf" || { cat "$DC/dovecot.log" >&2; exit 1; }
wait_greeting "$DC_IMAP"
DC_PID=$(cat "$DC/run/master.pid")
if has "$MODES" pool; then
    for h in "${POOL_HOSTS[@]}"; do wait_greeting "$PL_IMAP" "* OK" "$h"; done
    pool_redis || exit 1
fi

# --- Postfix, the submission back end -----------------------------------------------------------
declare -A PLAIN_PORT TLS_PORT SMTP_PORT METER
if has "$MODES" submission; then
    # As tests/support/postfix.rs: its own configuration, queue and data directories, loopback,
    # `master` in the foreground. SASL through the bench Dovecot; XCLIENT taken from loopback
    # (offered in EHLO, used by no row); every message relayed to the discard transport: accepted,
    # queued and thrown away, the same back-end work for every row.
    PF=$BENCH_DIR/postfix
    mkdir -p "$PF/conf" "$PF/queue" "$PF/data"
    chmod 755 "$PF"
    # master takes its lock in the data directory as the postfix user (it exits 1 silently else).
    chown postfix "$PF/data"
    cat >"$PF/conf/main.cf" <<CONF
# generated by bench/compare.sh
compatibility_level = 3.6
config_directory = $PF/conf
queue_directory = $PF/queue
data_directory = $PF/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = portcullis-bench-$$
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
smtpd_peername_lookup = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = postfix.portcullis.test
mydomain = portcullis.test
myorigin = portcullis.test
mynetworks = 127.0.0.0/8
mydestination =
relay_domains =
relayhost =
alias_maps =
alias_database =
smtp_dns_support_level = disabled
default_transport = discard:portcullis-bench
local_transport = discard:portcullis-bench
message_size_limit = $(awk -v m="$FETCH_MIB" 'BEGIN { printf "%d", (m * 2 + 1) * 1048576 }')
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DC/run/postfix-auth
smtpd_authorized_xclient_hosts = 127.0.0.0/8
default_process_limit = 200
CONF
    {
        echo "# generated by bench/compare.sh; the services from tests/support/postfix.master.cf.in"
        echo "127.0.0.1:$PF_SUB inet n - n - - smtpd"
        echo "  -o syslog_name=portcullis-bench-$$/submission"
        echo "  -o smtpd_sasl_auth_enable=yes"
        echo "  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject"
        echo "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject"
        sed -n '/^pickup /,$p' "$ROOT/tests/support/postfix.master.cf.in"
    } >"$PF/conf/master.cf"
    # A minute old: Postfix waits for younger configuration files to settle.
    touch -d '-1 min' "$PF/conf/main.cf" "$PF/conf/master.cf"
    "$POSTFIX" -c "$PF/conf" check || { cat "$PF/maillog" >&2 2>/dev/null; exit 1; }
    say "starting Postfix, the submission back end (log: $PF/maillog)"
    "$POSTFIX_MASTER" -c "$PF/conf" -s </dev/null >"$PF/master.out" 2>&1 &
    PF_PID=$!
    PIDS+=("$PF_PID")
    SMTP_PORT[postfix]=$PF_SUB METER[postfix]="--pid $PF_PID --tree"
    wait_greeting "$PF_SUB" 220
fi

# --- the front ends ------------------------------------------------------------------------------
PLAIN_PORT[dovecot]=$DC_IMAP TLS_PORT[dovecot]=$DC_IMAPS METER[dovecot]="--pid $DC_PID --tree"

if has "$TARGETS" portcullis; then
    bench_portcullis_config "$BENCH_DIR" "$PC_IMAP" "$PC_IMAPS" "$DC_IMAP" "$CERTS"
    if has "$MODES" submission; then
        # Plain, as the other rows: AUTH PLAIN with the client's credentials at Postfix.
        cat >>"$BENCH_DIR/portcullis.toml" <<TOML

[[listener]]
protocol = "submission"
bind = ["127.0.0.1:$PC_SUB"]
tls = "none"
[listener.backend]
host = "127.0.0.1"
port = $PF_SUB
tls = "none"
TOML
        SMTP_PORT[portcullis]=$PC_SUB
    fi
    say "starting Portcullis ($BIN)"
    "$BIN" run --config "$BENCH_DIR/portcullis.toml" >"$BENCH_DIR/portcullis.out" 2>&1 &
    PIDS+=("$!")
    PLAIN_PORT[portcullis]=$PC_IMAP TLS_PORT[portcullis]=$PC_IMAPS METER[portcullis]="--pid $!"
    wait_greeting "$PC_IMAP"
    [ -z "${SMTP_PORT[portcullis]:-}" ] || wait_greeting "$PC_SUB" 220
fi

if has "$TARGETS" nginx; then
    NG=$BENCH_DIR/nginx
    nginx_user=""
    # SMTP: nginx authenticates the client through auth_http, then logs in to Postfix itself
    # with AUTH PLAIN and the client's credentials (proxy_smtp_auth), as Portcullis does; no
    # XCLIENT (with it, nginx would send LOGIN= instead and Postfix would check no password).
    nginx_smtp=""
    if has "$MODES" submission; then
        nginx_smtp="
    server {
        listen 127.0.0.1:$NG_SMTP;
        protocol smtp;
        smtp_auth plain login;
        auth_http 127.0.0.1:$NG_AUTH/auth-smtp;
        proxy_smtp_auth on;
        xclient off;
    }"
        SMTP_PORT[nginx]=$NG_SMTP
    fi
    [ "$(id -u)" -eq 0 ] && nginx_user="user nobody $(id -gn nobody);"
    # auth_http is answered by nginx itself: every login goes to the back end, which checks the
    # password (as Portcullis's static back end does). One worker per core, as nginx advises.
    cat >"$NG/nginx.conf" <<CONF
# generated by bench/compare.sh
load_module $NGINX_MAIL;
$nginx_user
daemon off;
worker_processes $(nproc);
worker_rlimit_nofile $(ulimit -Hn);
pid $NG/nginx.pid;
error_log $NG/error.log warn;
events {
    worker_connections $(( $(ulimit -Hn) - 100 ));
}
http {
    access_log off;
    client_body_temp_path $NG/tmp/body;
    proxy_temp_path $NG/tmp/proxy;
    fastcgi_temp_path $NG/tmp/fastcgi;
    uwsgi_temp_path $NG/tmp/uwsgi;
    scgi_temp_path $NG/tmp/scgi;
    server {
        listen 127.0.0.1:$NG_AUTH;
        location = /auth {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $DC_IMAP;
            return 204;
        }
        location = /auth-smtp {
            add_header Auth-Status OK;
            add_header Auth-Server 127.0.0.1;
            add_header Auth-Port $PF_SUB;
            return 204;
        }
    }
}
mail {
    server_name localhost;
    auth_http 127.0.0.1:$NG_AUTH/auth;
    proxy_pass_error_message on;
    imap_capabilities IMAP4rev1 LITERAL+ SASL-IR ID ENABLE IDLE;
    ssl_certificate $CERTS/cert.pem;
    ssl_certificate_key $CERTS/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:MAIL:20m;
    ssl_session_timeout 1h;
    server {
        listen 127.0.0.1:$NG_IMAP;
        protocol imap;
    }
    server {
        listen 127.0.0.1:$NG_IMAPS ssl;
        protocol imap;
    }$nginx_smtp
}
CONF
    say "starting nginx ($NGINX)"
    "$NGINX" -p "$NG" -c "$NG/nginx.conf" -e "$NG/error.log" >"$NG/nginx.out" 2>&1 &
    PIDS+=("$!")
    PLAIN_PORT[nginx]=$NG_IMAP TLS_PORT[nginx]=$NG_IMAPS METER[nginx]="--pid $! --tree"
    wait_greeting "$NG_IMAP"
    [ -z "${SMTP_PORT[nginx]:-}" ] || wait_greeting "$NG_SMTP" 220
fi

if has "$TARGETS" perdition; then
    say "starting perdition IMAP4 and IMAP4S ($PERDITION)"
    # perdition drops to nobody and then reopens its log file: it must be writable for it.
    touch "$BENCH_DIR/perdition.log" "$BENCH_DIR/perdition-tls.log"
    chmod 666 "$BENCH_DIR/perdition.log" "$BENCH_DIR/perdition-tls.log"
    perdition_common=(-f /dev/null --no_daemon -M "" -n --pid_file ""
        --bind_address 127.0.0.1 --outgoing_server 127.0.0.1 --outgoing_port "$DC_IMAP")
    "$PERDITION" "${perdition_common[@]}" -P IMAP4 --listen_port "$PD_IMAP" \
        --log_facility "$BENCH_DIR/perdition.log" >"$BENCH_DIR/perdition.out" 2>&1 &
    PIDS+=("$!")
    pd_plain=$!
    "$PERDITION" "${perdition_common[@]}" -P IMAP4S --listen_port "$PD_IMAPS" --ssl_mode ssl_listen \
        --ssl_cert_file "$CERTS/cert.pem" --ssl_key_file "$CERTS/key.pem" \
        --log_facility "$BENCH_DIR/perdition-tls.log" >"$BENCH_DIR/perdition-tls.out" 2>&1 &
    PIDS+=("$!")
    # Two processes, one per port: each row meters the one it talks to.
    PLAIN_PORT[perdition]=$PD_IMAP TLS_PORT[perdition]=$PD_IMAPS
    METER[perdition]="--pid $pd_plain --tree" METER[perdition-tls]="--pid $! --tree"
    wait_greeting "$PD_IMAP"
fi

if has "$TARGETS" dovecot-proxy; then
    # Dovecot's proxy mode: the passdb answers proxy=y with the back end, and no password of its
    # own, so the client's password is passed on and the back end checks it.
    backend_port=$DC_IMAP
    (
        DC_IMAP=$DP_IMAP DC_IMAPS=$DP_IMAPS DC_POP3=$DP_POP3 DC_POP3S=$DP_POP3S DC_SIEVE=$DP_SIEVE
        DC_IMAP_HAPROXY=$DP_IMAP_HAPROXY DC_SIEVE_HAPROXY=$DP_SIEVE_HAPROXY
        render_dovecot "$TEMPLATE" "$DP" "portcullis-bench-proxy-$$" "$CERTS" "${dovecot_limits[@]}" \
            -e "/^# A master user for the proxy/i\\
passdb {\\
  driver = static\\
  args = proxy=y host=127.0.0.1 port=$backend_port nopassword=y\\
}\\
"
    )
    grep -q 'proxy=y' "$DP/dovecot.conf" || { say "could not write the proxy's passdb"; exit 1; }
    : >"$DP/passwd"
    : >"$DP/masters"
    say "starting Dovecot in proxy mode (log: $DP/dovecot.log)"
    "$DOVECOT" -c "$DP/dovecot.conf" || { cat "$DP/dovecot.log" >&2; exit 1; }
    wait_greeting "$DP_IMAP"
    PLAIN_PORT[dovecot-proxy]=$DP_IMAP TLS_PORT[dovecot-proxy]=$DP_IMAPS
    METER[dovecot-proxy]="--pid $(cat "$DP/run/master.pid") --tree"
fi

# --- runs ----------------------------------------------------------------------------------------
IFS=, read -r -a rows <<<"$TARGETS"
for t in "${rows[@]}"; do
    has "$ALL_TARGETS" "$t" || { say "unknown target $t"; exit 1; }
done
mkdir -p "$RES/submission"
# bench NAME FILE MODE ARGS...: one run of the tool, its table kept beside its JSON.
bench() {
    local name=$1 file=$2 mode=$3
    shift 3
    say "$mode: $name ($*)"
    "$BENCH" "$mode" --name "$name" --quiet --json "$RES/$file.json" "$@" \
        >"$RES/$file.md" 2>"$RES/$file.err" || say "WARNING: $file: portcullis-bench exited $? (see $RES/$file.err)"
    cat "$RES/$file.md"
}
plain() { # target: its plain address and meter
    # shellcheck disable=SC2086
    echo --target "127.0.0.1:${PLAIN_PORT[$1]}" ${METER[$1]}
}
tls() { # target: its TLS address and meter
    # shellcheck disable=SC2086
    echo --target "127.0.0.1:${TLS_PORT[$1]}" --tls --ca "$CERTS/ca.pem" --server-name localhost \
        ${METER[$1-tls]:-${METER[$1]}}
}
# shellcheck disable=SC2046
for mode in ${MODES//,/ }; do
    if [ "$mode" = pool ]; then
        # Rows of its own: Portcullis in four configurations (bench/pool.sh).
        pool_mode || { say "pool mode failed"; exit 1; }
        continue
    fi
    for t in "${rows[@]}"; do
        # A row only in the modes of its protocol: postfix has no IMAP, Dovecot and perdition
        # here no SMTP.
        if [ "$mode" = submission ]; then
            [ -n "${SMTP_PORT[$t]:-}" ] || continue
        else
            [ -n "${PLAIN_PORT[$t]:-}" ] || continue
        fi
        case $mode in
        logins)
            bench "$t" "logins-$t-plain" logins $(plain "$t") --clients "$CLIENTS" --duration "$DURATION"
            bench "$t" "logins-$t-tls" logins $(tls "$t") --clients "$CLIENTS" --duration "$DURATION"
            bench "$t" "logins-$t-resumed" logins $(tls "$t") --resume --clients "$CLIENTS" \
                --duration "$DURATION"
            ;;
        returning)
            n=$RETURNING
            [ "$t" = perdition ] && n=$RETURNING_SLOW
            bench "$t" "returning-$t" returning $(tls "$t") --clients "$n" --source "$SOURCES"
            ;;
        fetch)
            bench "$t" "fetch-$t-plain" fetch $(plain "$t") --duration "$DURATION"
            bench "$t" "fetch-$t-tls" fetch $(tls "$t") --duration "$DURATION"
            ;;
        idle)
            # The plain sessions stay open while the TLS ones are opened and measured: closed,
            # they would leave free memory in the allocator for the TLS sessions to reuse, and
            # those would look nearly free.
            for n in ${IDLE//,/ }; do
                suffix=""
                [ "$IDLE" = "$n" ] || suffix="-$n"
                if [ "$IDLE_TRANSPORTS" != plain,tls ]; then
                    # One transport (the largest runs: both at once would need twice the files).
                    if has "$IDLE_TRANSPORTS" plain; then
                        bench "$t$suffix" "idle-$t$suffix-plain" idle $(plain "$t") \
                            --sessions "$n" --source "$SOURCES"
                    else
                        bench "$t$suffix" "idle-$t$suffix-tls" idle $(tls "$t") \
                            --sessions "$n" --source "$SOURCES"
                    fi
                    continue
                fi
                hold=$BENCH_DIR/hold-$t$suffix ready=$BENCH_DIR/ready-$t$suffix
                : >"$hold"
                bench "$t$suffix" "idle-$t$suffix-plain" idle $(plain "$t") --sessions "$n" \
                    --source "$SOURCES" --hold-while "$hold" --ready-file "$ready" &
                plain_run=$!
                while [ ! -e "$ready" ] && kill -0 "$plain_run" 2>/dev/null; do sleep 0.2; done
                bench "$t$suffix" "idle-$t$suffix-tls" idle $(tls "$t") --sessions "$n" \
                    --source "$SOURCES"
                rm -f "$hold"
                wait "$plain_run" || true
            done
            ;;
        submission)
            # shellcheck disable=SC2086
            bench "$t" "submission/logins-$t" smtp-logins --target "127.0.0.1:${SMTP_PORT[$t]}" \
                ${METER[$t]} --clients "$CLIENTS" --duration "$DURATION"
            # shellcheck disable=SC2086
            bench "$t" "submission/send-$t" smtp-send --target "127.0.0.1:${SMTP_PORT[$t]}" \
                ${METER[$t]} --duration "$DURATION" --message-mib "$FETCH_MIB"
            ;;
        sweep)
            # Latency against load, one SVG per row and transport; kept out of the tables
            # (its own directory), which take one step per row.
            mkdir -p "$RES/sweep"
            for transport in plain tls; do
                "$BENCH" logins --name "$t" --quiet --json "$RES/sweep/$t-$transport.json" \
                    $($transport "$t") --clients "$SWEEP" --duration "$DURATION" \
                    --svg "$RES/sweep/$t-$transport.svg" >"$RES/sweep/$t-$transport.md" ||
                    say "WARNING: sweep $t $transport: portcullis-bench exited $?"
                cat "$RES/sweep/$t-$transport.md"
            done
            ;;
        *) say "unknown mode $mode"; exit 1 ;;
        esac
    done
done
for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null || say "WARNING: pid $pid died during the run (see $BENCH_DIR)"
done
# The sweep's rows side by side: one SVG per transport (bench/sweep_plot.py).
if has "$MODES" sweep; then
    python3 "$ROOT/bench/sweep_plot.py" "$RES/sweep" || say "WARNING: bench/sweep_plot.py failed"
fi

# --- the table -----------------------------------------------------------------------------------
baseline=nginx
has "$TARGETS" nginx || baseline=portcullis
# IMAP against direct Dovecot, SMTP submission (results/submission/) against direct Postfix.
: >"$BENCH_DIR/compare.md"
if compgen -G "$RES/*.json" >/dev/null; then
    "$BENCH" compare --baseline "$baseline" --direct dovecot --markdown-out "$BENCH_DIR/compare-imap.md" \
        "$RES"/*.json >/dev/null
    cat "$BENCH_DIR/compare-imap.md" >>"$BENCH_DIR/compare.md"
fi
if compgen -G "$RES/submission/*.json" >/dev/null; then
    "$BENCH" compare --baseline "$baseline" --direct postfix \
        --markdown-out "$BENCH_DIR/compare-submission.md" "$RES"/submission/*.json >/dev/null
    {
        [ -s "$BENCH_DIR/compare.md" ] && echo
        echo "## SMTP submission (plain; direct = Postfix's submission port)"
        echo
        echo "smtp-logins: connect, 220, EHLO, AUTH PLAIN, 235 (then QUIT); smtp-send: one client"
        echo "sending a ${FETCH_MIB} MiB message back to back (MAIL, RCPT, DATA), MiB/s and CPU per MiB"
        echo "of the message (the \"fetch\" table)."
        echo
        cat "$BENCH_DIR/compare-submission.md"
    } >>"$BENCH_DIR/compare.md"
fi
if [ -s "$BENCH_DIR/compare-pool.md" ]; then
    [ -s "$BENCH_DIR/compare.md" ] && echo >>"$BENCH_DIR/compare.md"
    cat "$BENCH_DIR/compare-pool.md" >>"$BENCH_DIR/compare.md"
fi
{
    echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r)."
    echo "Portcullis $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ' (with uncommitted changes)')${PORTCULLIS_FEATURES:+ (features $PORTCULLIS_FEATURES)},"\
        "$("$DOVECOT" --version 2>/dev/null | sed 's/^/Dovecot /')${NGINX:+, $("$NGINX" -v 2>&1 | sed 's|nginx version: nginx/|nginx |')}${PERDITION:+, perdition $(dpkg-query -W -f '${Version}' perdition 2>/dev/null)}${PF_PID:+, Postfix $(postconf -dh mail_version 2>/dev/null)}${RD_PID:+, $(redis-server --version | cut -d' ' -f1-3)};"\
        "$KEY certificate; $CLIENTS login clients, ${DURATION} s per step; ${FETCH_MIB} MiB FETCH (and sent message); $IDLE idle sessions; $RETURNING returning clients$(has "$MODES" pool && echo "; pool mode: $POOL_USERS users, ${POOL_DURATION} s per step, $POOL_ROUNDS rounds")."
    echo
    cat "$BENCH_DIR/compare.md"
} >"$BENCH_DIR/compare-with-header.md"
# Only a whole run (every target, every mode; submission unless left out for want of root or
# Postfix) replaces the one the README quotes.
if [ "$TARGETS" = "$ALL_TARGETS" ] && [ "$MODES" = "$ALL_MODES" ]; then
    mkdir -p "$ROOT/bench/results"
    cp "$BENCH_DIR/compare-with-header.md" "$ROOT/bench/results/latest.md"
fi
echo
cat "$BENCH_DIR/compare-with-header.md"
OK=1
