# Shell pieces shared by scripts/demo.sh and the bench scripts (sourced, not run).
# The Rust test harness (tests/support/mod.rs) renders the same Dovecot template.

# make_certs DIR NAME DAYS [KEY]: a throw-away CA (DIR/ca.pem) and a server certificate for
# localhost, 127.0.0.1 and ::1 signed by it (DIR/cert.pem, DIR/key.pem). KEY is the server key's
# type: ec (P-256, the default) or rsa (RSA-2048, what the benchmark compares with).
make_certs() {
    local dir=$1 name=$2 days=$3 key=${4:-ec}
    (
        cd "$dir"
        local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes) server
        case $key in
        ec) server=("${ec[@]}") ;;
        rsa) server=(-newkey rsa:2048 -nodes) ;;
        *) echo "make_certs: unknown key type $key" >&2; return 1 ;;
        esac
        openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days "$days" \
            -subj "/CN=$name CA" \
            -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
        openssl req -new "${server[@]}" -keyout key.pem -out server.csr -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' 'basicConstraints=critical,CA:FALSE' \
            'keyUsage=critical,digitalSignature,keyEncipherment' \
            'extendedKeyUsage=serverAuth' \
            'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out cert.pem -days "$days" -extfile server.ext 2>/dev/null
        chmod 644 ca.pem cert.pem key.pem
    )
}

# render_dovecot TEMPLATE DC INSTANCE CERTS [SED_ARGS...]: write DC/dovecot.conf from the
# template for a private instance whose users live under DC/home, with ports from DC_IMAP,
# DC_IMAPS, DC_POP3, DC_POP3S, DC_SIEVE and the PROXY-protocol listeners' DC_IMAP_HAPROXY and
# DC_SIEVE_HAPROXY. Mail runs as nobody when root (Dovecot refuses root),
# else as the caller. Extra sed arguments may adjust the result.
render_dovecot() {
    local template=$1 dc=$2 instance=$3 certs=$4
    shift 4
    local mail_uid mail_gid internal_user login_user internal_group
    if [ "$(id -u)" -eq 0 ]; then
        mail_uid=$(id -u nobody) mail_gid=$(id -g nobody)
        internal_user=dovecot login_user=dovenull
        id -u dovecot >/dev/null 2>&1 || internal_user=nobody
        id -u dovenull >/dev/null 2>&1 || login_user=nobody
        internal_group=$(id -gn "$internal_user")
        chown -R "$mail_uid:$mail_gid" "$dc/home"
    else
        mail_uid=$(id -u) mail_gid=$(id -g)
        internal_user=$(id -un) login_user=$(id -un) internal_group=$(id -gn)
    fi
    chmod -R a+rX "$dc/home"
    sed -e "s|@DIR@|$dc|g" \
        -e "s|@INSTANCE@|$instance|g" \
        -e "s|@IMAP_PORT@|$DC_IMAP|g" -e "s|@IMAPS_PORT@|$DC_IMAPS|g" \
        -e "s|@POP3_PORT@|$DC_POP3|g" -e "s|@POP3S_PORT@|$DC_POP3S|g" \
        -e "s|@SIEVE_PORT@|$DC_SIEVE|g" \
        -e "s|@IMAP_HAPROXY_PORT@|${DC_IMAP_HAPROXY:?}|g" \
        -e "s|@SIEVE_HAPROXY_PORT@|${DC_SIEVE_HAPROXY:?}|g" \
        -e "s|@EXTRA_PASSDB@||g" \
        -e "s|@CERT@|$certs/cert.pem|g" -e "s|@KEY@|$certs/key.pem|g" \
        -e "s|@MAIL_UID@|$mail_uid|g" -e "s|@MAIL_GID@|$mail_gid|g" \
        -e "s|@INTERNAL_USER@|$internal_user|g" -e "s|@INTERNAL_GROUP@|$internal_group|g" \
        -e "s|@LOGIN_USER@|$login_user|g" \
        "$@" "$template" >"$dc/dovecot.conf"
}

# pick_port DEFAULT [TAKEN...]: DEFAULT when nothing listens there on loopback, else the next
# port above it that is free (and not among TAKEN, the ones already picked).
pick_port() {
    local port=$1
    shift
    local end=$((port + 200))
    while [ "$port" -lt "$end" ]; do
        case " $* " in
        *" $port "*) ;;
        *)
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
                echo "$port"
                return 0
            fi
            ;;
        esac
        port=$((port + 1))
    done
    return 1
}
