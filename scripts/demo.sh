#!/usr/bin/env bash
# Portcullis demo for a fresh Debian machine (see README):
#   - installs Dovecot (IMAP, POP3, ManageSieve) and OpenSSL if missing,
#   - builds portcullis (cargo build --release),
#   - creates $DEMO_DIR (default /tmp/portcullis-demo) with a test CA + localhost certificate,
#     a private Dovecot (users alice/alicepw and bob/bobpw) on loopback plain ports, and a
#     Portcullis config with TLS front ends (default ports; a port already taken is replaced
#     by the next free one, and the chosen ones are printed):
#         IMAPS        127.0.0.1:9993  (implicit TLS)       DEMO_IMAPS_PORT
#         IMAP         127.0.0.1:9143  (STARTTLS)           DEMO_IMAP_PORT
#         POP3S        127.0.0.1:9995  (implicit TLS)       DEMO_POP3S_PORT
#         POP3         127.0.0.1:9110  (STARTTLS)           DEMO_POP3_PORT
#         ManageSieve  127.0.0.1:9419  (STARTTLS)           DEMO_SIEVE_PORT
#   - runs portcullis in the foreground; Ctrl-C stops it and the demo Dovecot.
# Environment: DEMO_DIR, PORTCULLIS_BIN (use this binary instead of building a release one),
# the DEMO_*_PORT above (used as given).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO_DIR=${DEMO_DIR:-/tmp/portcullis-demo}
TEMPLATE=$ROOT/tests/support/dovecot.conf.in
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"

# Ports: the environment's, else the default when free, else the next free one.
picked=()
choose() { # VAR DEFAULT
    local value=${!1:-}
    if [ -z "$value" ]; then
        value=$(pick_port "$2" "${picked[@]}") || { say "no free port near $2"; exit 1; }
    fi
    picked+=("$value")
    printf -v "$1" '%s' "$value"
}

say() { printf '== %s\n' "$*" >&2; }

choose DEMO_IMAPS_PORT 9993
choose DEMO_IMAP_PORT 9143
choose DEMO_POP3S_PORT 9995
choose DEMO_POP3_PORT 9110
choose DEMO_SIEVE_PORT 9419
# Dovecot back-end ports (loopback only).
choose DC_IMAP 10143
choose DC_IMAPS 10993
choose DC_POP3 10110
choose DC_POP3S 10995
choose DC_SIEVE 14190
choose DC_IMAP_HAPROXY 10144
choose DC_SIEVE_HAPROXY 14191

# --- prerequisites -----------------------------------------------------------------------
PKGS=(dovecot-imapd dovecot-pop3d dovecot-managesieved openssl)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' ||
            missing+=("$p")
    done
fi
if [ "${#missing[@]}" -gt 0 ]; then
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            say "please install as root: apt-get install -y ${missing[*]}"
            exit 1
        fi
    fi
    say "installing ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
DOVECOT=$(PATH=$PATH:/usr/sbin:/sbin command -v dovecot) || { say "dovecot not found"; exit 1; }

# --- build ---------------------------------------------------------------------------------
if [ -n "${PORTCULLIS_BIN:-}" ]; then
    BIN=$PORTCULLIS_BIN
else
    say "cargo build --release"
    cargo build --release
    BIN=$ROOT/target/release/portcullis
fi

# --- demo directory --------------------------------------------------------------------------
# Stop a Dovecot left over from an earlier run of the demo.
if [ -f "$DEMO_DIR/dovecot/dovecot.conf" ]; then
    "$DOVECOT" -c "$DEMO_DIR/dovecot/dovecot.conf" stop 2>/dev/null || true
fi
rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR/certs" "$DEMO_DIR/dovecot/home/alice/Maildir/"{cur,new,tmp}
chmod 755 "$DEMO_DIR" "$DEMO_DIR/certs" "$DEMO_DIR/dovecot"
CERTS=$DEMO_DIR/certs

say "creating certificates in $CERTS"
make_certs "$CERTS" "Portcullis Demo" 825

# --- Dovecot ----------------------------------------------------------------------------------
DC=$DEMO_DIR/dovecot
printf '%s\n' 'alice:{PLAIN}alicepw::::::' 'bob:{PLAIN}bobpw::::::' >"$DC/passwd"
chmod 644 "$DC/passwd"
printf '%s\r\n' \
    'From: Portcullis <postmaster@example.org>' \
    'To: Alice <alice@example.org>' \
    'Subject: Welcome to the Portcullis demo' \
    'Date: Mon, 20 Nov 2023 10:00:00 +0000' \
    'Message-ID: <welcome@portcullis.demo>' \
    '' \
    'Hello Alice,' \
    'you are reading this through Portcullis.' >"$DC/home/alice/Maildir/cur/1700000000.M1P1.demo:2,"

render_dovecot "$TEMPLATE" "$DC" portcullis-demo "$CERTS"

stop_dovecot() {
    "$DOVECOT" -c "$DC/dovecot.conf" stop 2>/dev/null || true
}
trap stop_dovecot EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting Dovecot (log: $DC/dovecot.log)"
if ! "$DOVECOT" -c "$DC/dovecot.conf"; then
    say "Dovecot failed to start; its log:"
    cat "$DC/dovecot.log" >&2 || true
    exit 1
fi
for port in $DC_IMAP $DC_POP3 $DC_SIEVE; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
done

# --- Portcullis config -------------------------------------------------------------------------
CONF=$DEMO_DIR/portcullis.toml
listener() { # protocol bind tls backend_port
    cat <<TOML

[[listener]]
protocol = "$1"
bind = ["$2"]
tls = "$3"
cert = "$CERTS/cert.pem"
key = "$CERTS/key.pem"

[listener.backend]
host = "127.0.0.1"
port = $4
tls = "none"
TOML
}
{
    cat <<TOML
# Portcullis demo configuration (generated by scripts/demo.sh)
[log]
destination = "-"
ident = "portcullis"
log_passwd = "never"

[limits]
login_timeout = 60
TOML
    listener imap "127.0.0.1:$DEMO_IMAPS_PORT" implicit "$DC_IMAP"
    listener imap "127.0.0.1:$DEMO_IMAP_PORT" starttls "$DC_IMAP"
    listener pop3 "127.0.0.1:$DEMO_POP3S_PORT" implicit "$DC_POP3"
    listener pop3 "127.0.0.1:$DEMO_POP3_PORT" starttls "$DC_POP3"
    listener managesieve "127.0.0.1:$DEMO_SIEVE_PORT" starttls "$DC_SIEVE"
} >"$CONF"

CA=$CERTS/ca.pem
cat <<TXT

Portcullis demo in $DEMO_DIR  (users: alice/alicepw, bob/bobpw; config: $CONF)

  Ports: IMAPS $DEMO_IMAPS_PORT, IMAP $DEMO_IMAP_PORT, POP3S $DEMO_POP3S_PORT, POP3 $DEMO_POP3_PORT, ManageSieve $DEMO_SIEVE_PORT

  IMAPS (implicit TLS):
    openssl s_client -connect 127.0.0.1:$DEMO_IMAPS_PORT -CAfile $CA -crlf
    then type:   a login alice alicepw      a select inbox      a fetch 1 body[]      a logout
  IMAP with STARTTLS:
    openssl s_client -connect 127.0.0.1:$DEMO_IMAP_PORT -starttls imap -CAfile $CA -crlf
  POP3S (implicit TLS):
    openssl s_client -connect 127.0.0.1:$DEMO_POP3S_PORT -CAfile $CA -crlf -quiet
    then type:   user alice    pass alicepw    list    quit
  POP3 with STLS:
    openssl s_client -connect 127.0.0.1:$DEMO_POP3_PORT -starttls pop3 -CAfile $CA -crlf -quiet
  ManageSieve with STARTTLS:
    sieve-connect --server 127.0.0.1 --port $DEMO_SIEVE_PORT --tlscafile $CA --user alice --list   (password alicepw)
    openssl s_client -connect 127.0.0.1:$DEMO_SIEVE_PORT -starttls sieve -CAfile $CA -crlf
  (in openssl s_client, a line starting with capital R or Q renegotiates/quits unless
   -quiet is given: type commands in lower case)

Press Ctrl-C to stop Portcullis and the demo Dovecot.

TXT

"$BIN" run --config "$CONF"
