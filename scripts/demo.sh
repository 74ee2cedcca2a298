#!/usr/bin/env bash
# Portcullis demo for a fresh Debian machine (see README):
#   - installs Dovecot (IMAP, POP3, ManageSieve) and OpenSSL if missing,
#   - builds portcullis (cargo build --release),
#   - creates $DEMO_DIR (default /tmp/portcullis-demo) with a test CA + localhost certificate,
#     a private Dovecot (users alice/alicepw and bob/bobpw) on loopback plain ports, and a
#     Portcullis config with TLS front ends:
#         IMAPS        127.0.0.1:9993  (implicit TLS)
#         IMAP         127.0.0.1:9143  (STARTTLS)
#         POP3S        127.0.0.1:9995  (implicit TLS)
#         POP3         127.0.0.1:9110  (STARTTLS)
#         ManageSieve  127.0.0.1:9419  (STARTTLS)
#   - runs portcullis in the foreground; Ctrl-C stops it and the demo Dovecot.
# Environment: DEMO_DIR, PORTCULLIS_BIN (use this binary instead of building a release one).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DEMO_DIR=${DEMO_DIR:-/tmp/portcullis-demo}
TEMPLATE=$ROOT/tests/support/dovecot.conf.in

# Dovecot back-end ports (loopback only).
DC_IMAP=10143 DC_IMAPS=10993 DC_POP3=10110 DC_POP3S=10995 DC_SIEVE=14190

say() { printf '== %s\n' "$*" >&2; }

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
(
    cd "$CERTS"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 825 \
        -subj "/CN=Portcullis Demo CA" \
        -addext basicConstraints=critical,CA:TRUE \
        -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
    openssl req -new "${ec[@]}" -keyout key.pem -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
        'keyUsage=critical,digitalSignature,keyEncipherment' \
        'extendedKeyUsage=serverAuth' \
        'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out cert.pem -days 825 -extfile server.ext 2>/dev/null
    chmod 644 ca.pem cert.pem key.pem
)

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

if [ "$(id -u)" -eq 0 ]; then
    MAIL_UID=$(id -u nobody) MAIL_GID=$(id -g nobody)
    INTERNAL_USER=dovecot LOGIN_USER=dovenull
    id -u dovecot >/dev/null 2>&1 || INTERNAL_USER=nobody
    id -u dovenull >/dev/null 2>&1 || LOGIN_USER=nobody
    INTERNAL_GROUP=$(id -gn "$INTERNAL_USER")
    chown -R "$MAIL_UID:$MAIL_GID" "$DC/home"
else
    MAIL_UID=$(id -u) MAIL_GID=$(id -g)
    INTERNAL_USER=$(id -un) LOGIN_USER=$(id -un) INTERNAL_GROUP=$(id -gn)
fi
chmod -R a+rX "$DC/home"

sed -e "s|@DIR@|$DC|g" \
    -e "s|@INSTANCE@|portcullis-demo|g" \
    -e "s|@IMAP_PORT@|$DC_IMAP|g" -e "s|@IMAPS_PORT@|$DC_IMAPS|g" \
    -e "s|@POP3_PORT@|$DC_POP3|g" -e "s|@POP3S_PORT@|$DC_POP3S|g" \
    -e "s|@SIEVE_PORT@|$DC_SIEVE|g" \
    -e "s|@CERT@|$CERTS/cert.pem|g" -e "s|@KEY@|$CERTS/key.pem|g" \
    -e "s|@MAIL_UID@|$MAIL_UID|g" -e "s|@MAIL_GID@|$MAIL_GID|g" \
    -e "s|@INTERNAL_USER@|$INTERNAL_USER|g" -e "s|@INTERNAL_GROUP@|$INTERNAL_GROUP|g" \
    -e "s|@LOGIN_USER@|$LOGIN_USER|g" \
    "$TEMPLATE" >"$DC/dovecot.conf"

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
    listener imap 127.0.0.1:9993 implicit $DC_IMAP
    listener imap 127.0.0.1:9143 starttls $DC_IMAP
    listener pop3 127.0.0.1:9995 implicit $DC_POP3
    listener pop3 127.0.0.1:9110 starttls $DC_POP3
    listener managesieve 127.0.0.1:9419 starttls $DC_SIEVE
} >"$CONF"

CA=$CERTS/ca.pem
cat <<TXT

Portcullis demo in $DEMO_DIR  (users: alice/alicepw, bob/bobpw; config: $CONF)

  IMAPS (implicit TLS):
    openssl s_client -connect 127.0.0.1:9993 -CAfile $CA -crlf
    then type:   a login alice alicepw      a select inbox      a fetch 1 body[]      a logout
  IMAP with STARTTLS:
    openssl s_client -connect 127.0.0.1:9143 -starttls imap -CAfile $CA -crlf
  POP3S (implicit TLS):
    openssl s_client -connect 127.0.0.1:9995 -CAfile $CA -crlf -quiet
    then type:   user alice    pass alicepw    list    quit
  POP3 with STLS:
    openssl s_client -connect 127.0.0.1:9110 -starttls pop3 -CAfile $CA -crlf -quiet
  ManageSieve with STARTTLS:
    sieve-connect --server 127.0.0.1 --port 9419 --tlscafile $CA --user alice --list   (password alicepw)
    openssl s_client -connect 127.0.0.1:9419 -starttls sieve -CAfile $CA -crlf
  (in openssl s_client, a line starting with capital R or Q renegotiates/quits unless
   -quiet is given: type commands in lower case)

Press Ctrl-C to stop Portcullis and the demo Dovecot.

TXT

"$BIN" run --config "$CONF"
