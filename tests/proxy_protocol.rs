//! The PROXY protocol in front of Portcullis: a trusted balancer's header (v1 or v2, whole or
//! in pieces, with TLS right behind it) makes its client the session's client in every log
//! line; anything else is closed before the greeting and logged.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::sleep;
use std::time::Duration;

use support::*;

fn listener(port: u16, tls: &str, trusted: &str, backend: u16) -> String {
    let c = certs();
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         tls = \"{tls}\"\ncert = \"{}\"\nkey = \"{}\"\nproxy_protocol = true\nproxy_trusted = [{trusted}]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n",
        c.cert.display(),
        c.key.display()
    )
}

fn v2_header(source: SocketAddr, destination: SocketAddr, crc_ok: bool) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else {
        panic!("IPv4 only here")
    };
    let mut addresses = s.ip().octets().to_vec();
    addresses.extend_from_slice(&d.ip().octets());
    addresses.extend_from_slice(&s.port().to_be_bytes());
    addresses.extend_from_slice(&d.port().to_be_bytes());
    let tlvs = [0x03, 0, 4, 0, 0, 0, 0]; // CRC32C, filled in below
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11]);
    h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
    h.extend_from_slice(&addresses);
    h.extend_from_slice(&tlvs);
    let crc = crc32c::crc32c(&h) ^ if crc_ok { 0 } else { 1 };
    let at = h.len() - 4;
    h[at..].copy_from_slice(&crc.to_be_bytes());
    h
}

/// Whether the server closed without sending anything.
fn closed_silently(mut s: TcpStream) -> bool {
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn a_v1_header_makes_its_client_the_sessions_client() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&listener(port, "none", "\"127.0.0.0/8\"", dc.imap), &[port]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 143\r\n")
        .unwrap();
    let mut c = Client::from_stream(s);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    assert!(proxy.wait_log("Connect:  192.0.2.7:51000->198.51.100.1:143", READ_TIMEOUT));
    assert!(proxy.wait_log(
        "Auth: 192.0.2.7:51000->198.51.100.1:143 client-secure=plaintext",
        READ_TIMEOUT
    ));
}

#[test]
fn a_v2_header_in_pieces_with_tls_right_behind_it() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(
        &listener(port, "implicit", "\"127.0.0.1\"", dc.imap),
        &[port],
    );
    let header = v2_header(
        "203.0.113.9:40000".parse().unwrap(),
        "198.51.100.1:993".parse().unwrap(),
        true,
    );
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    for piece in header.chunks(5) {
        s.write_all(piece).unwrap();
        sleep(Duration::from_millis(20));
    }
    let config = tls_client_config(&certs().ca);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(&config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, s);
    let mut greeting = [0u8; 4];
    tls.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"* OK");
    assert!(proxy.wait_log(
        "Connect:  203.0.113.9:40000->198.51.100.1:993",
        READ_TIMEOUT
    ));
}

#[test]
fn untrusted_senders_and_bad_headers_are_closed_before_the_greeting() {
    let port = free_port();
    let proxy = Proxy::start_toml(&listener(port, "none", "\"10.0.0.0/8\"", 1), &[port]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 143\r\n")
        .unwrap();
    assert!(closed_silently(s));
    assert!(proxy.wait_log("PROXY header refused from 127.0.0.1", READ_TIMEOUT));
    assert!(proxy.wait_log("not in proxy_trusted", READ_TIMEOUT));

    let port = free_port();
    let proxy = Proxy::start_toml(&listener(port, "none", "\"127.0.0.1\"", 1), &[port]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"a LOGIN alice alicepw\r\n").unwrap();
    assert!(closed_silently(s));
    assert!(proxy.wait_log("not a PROXY protocol header", READ_TIMEOUT));
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let bad = v2_header(
        "203.0.113.9:40000".parse().unwrap(),
        "198.51.100.1:993".parse().unwrap(),
        false,
    );
    s.write_all(&bad).unwrap();
    assert!(closed_silently(s));
    assert!(proxy.wait_log("CRC32C mismatch", READ_TIMEOUT));
}

/// Debian's HAProxy in front, `send-proxy-v2`: a client connecting from 127.0.0.2 is
/// 127.0.0.2 in Portcullis's log, although HAProxy is what connects to Portcullis.
#[test]
fn behind_haproxy_the_client_address_survives() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&listener(port, "none", "\"127.0.0.1\"", dc.imap), &[port]);
    let haproxy = support::haproxy::HaProxy::start(&[port]);

    let mut c = Client::from_stream(connect_from("127.0.0.2", haproxy.port).unwrap());
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    assert!(proxy.wait_log("Connect:  127.0.0.2:", READ_TIMEOUT));
    assert!(proxy.wait_log("Auth: 127.0.0.2:", READ_TIMEOUT));
}

/// Forwarding the client to Dovecot: with `forward_client = "id"` (IMAP `ID` before the login)
/// or `"proxy-v2"` (a PROXY header to Dovecot's haproxy listener), Dovecot's own log names the
/// real client (`rip=`), not the proxy.
#[test]
fn dovecot_sees_the_real_client_with_id_and_with_proxy_v2() {
    let dc = Dovecot::start();
    for (forward, backend_port, user, pass) in [
        ("id", dc.imap, "alice", "alicepw"),
        ("proxy-v2", dc.imap_haproxy, "bob", "bobpw"),
    ] {
        let port = free_port();
        let toml = listener(port, "none", "\"127.0.0.1\"", backend_port)
            + &format!("forward_client = \"{forward}\"\n");
        let proxy = Proxy::start_toml(&toml, &[port]);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"PROXY TCP4 192.0.2.77 198.51.100.1 51000 143\r\n")
            .unwrap();
        let mut c = Client::from_stream(s);
        c.expect_line("* OK");
        imap_login(&mut c, "a", user, pass);
        assert!(
            dc.wait_log(
                &format!("Login: user=<{user}>, method=PLAIN, rip=192.0.2.77"),
                READ_TIMEOUT
            ),
            "{forward}: Dovecot does not name the client:\n{}",
            dc.log_text()
        );
        if forward == "id" {
            // The session id Dovecot was given is in our log too.
            assert!(proxy.wait_log("Forwarded: 192.0.2.77->198.51.100.1 session=", READ_TIMEOUT));
            let log = proxy.log_text();
            let line = log.lines().find(|l| l.contains("Forwarded:")).unwrap();
            let session = line
                .split("session=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            assert!(
                dc.log_text().contains(&format!("session=<{session}>")),
                "{session} not in Dovecot's log:\n{}",
                dc.log_text()
            );
        }
    }
}

/// POP3 and ManageSieve carry the client in Dovecot's `XCLIENT`, sent only when Dovecot shows
/// it trusts the proxy (`[XCLIENT]` in the POP3 greeting, `"XCLIENT"` among the ManageSieve
/// capabilities); Dovecot's own log then names the real client.
#[test]
fn dovecot_sees_the_real_client_over_pop3_and_managesieve_with_xclient() {
    let dc = Dovecot::start();
    for (protocol, backend_port, client) in [
        ("pop3", dc.pop3, "192.0.2.78"),
        ("managesieve", dc.sieve, "192.0.2.79"),
    ] {
        let port = free_port();
        let toml = format!(
            "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"{protocol}\"\n\
             bind = [\"127.0.0.1:{port}\"]\nproxy_protocol = true\nproxy_trusted = [\"127.0.0.1\"]\n\
             [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend_port}\nforward_client = \"id\"\n"
        );
        let _proxy = Proxy::start_toml(&toml, &[port]);
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(format!("PROXY TCP4 {client} 198.51.100.1 51000 110\r\n").as_bytes())
            .unwrap();
        let mut c = Client::from_stream(s);
        if protocol == "pop3" {
            c.expect_line("+OK");
            c.send_line("USER alice");
            c.expect_line("+OK");
            c.send_line("PASS alicepw");
            c.expect_line("+OK");
        } else {
            sieve_read_response(&mut c);
            c.send_line("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAGFsaWNlcHc=\"");
            let answer = sieve_read_response(&mut c);
            assert!(answer.last().unwrap().starts_with("OK"), "{answer:?}");
        }
        assert!(
            dc.wait_log(
                &format!("Login: user=<alice>, method=PLAIN, rip={client}"),
                READ_TIMEOUT
            ),
            "{protocol}: Dovecot does not name the client:\n{}",
            dc.log_text()
        );
    }
}

/// The client's own `ID` (its name and version) reaches Dovecot in the one `ID` the proxy sends
/// before the login, next to the address; an `x-originating-ip` of the client's own making does
/// not.
#[test]
fn the_clients_own_id_reaches_dovecot_but_not_its_x_fields() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = listener(port, "none", "\"127.0.0.1\"", dc.imap) + "forward_client = \"id\"\n";
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.80 198.51.100.1 51000 143\r\n")
        .unwrap();
    let mut c = Client::from_stream(s);
    c.expect_line("* OK");
    c.send_line("i ID (\"name\" \"Thunderbird\" \"x-originating-ip\" \"10.6.6.6\")");
    c.read_until_tagged("i");
    imap_login(&mut c, "a", "alice", "alicepw");
    assert!(
        dc.wait_log("rip=192.0.2.80", READ_TIMEOUT),
        "{}",
        dc.log_text()
    );
    let log = dc.log_text();
    assert!(log.contains("name=Thunderbird"), "{log}");
    assert!(!log.contains("10.6.6.6"), "{log}");
}

/// A balancer's health check (a PROXY LOCAL header, as HAProxy's `check` with `send-proxy-v2`
/// sends) is greeted like anyone, but writes none of the lines fail2ban counts: they would get
/// the balancer banned, and every client with it.
#[test]
fn a_health_check_writes_no_line_fail2ban_counts() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&listener(port, "none", "\"127.0.0.1\"", dc.imap), &[port]);
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]); // version 2, LOCAL, no addresses
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&local).unwrap();
    let mut c = Client::from_stream(s);
    c.expect_line("* OK");
    drop(c);
    // A real client afterwards, so that the log has caught up when it is read.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"PROXY TCP4 192.0.2.81 198.51.100.1 51000 143\r\n")
        .unwrap();
    let mut c = Client::from_stream(s);
    c.expect_line("* OK");
    drop(c);
    assert!(proxy.wait_log(
        "Fatal Error reading authentication information from client 192.0.2.81",
        READ_TIMEOUT
    ));
    let log = proxy.log_text();
    assert!(!log.contains("client 127.0.0.1:"), "{log}");
    assert!(!log.contains("Connect:  127.0.0.1:"), "{log}");
}

/// A health check has no client address the guard could slow or ban: it may greet and log out
/// (v2 LOCAL, v1 UNKNOWN), but a login, even with a right password, is refused and closed,
/// and never reaches the back end.
#[test]
fn a_health_check_may_greet_and_log_out_but_not_log_in() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&listener(port, "none", "\"127.0.0.1\"", dc.imap), &[port]);
    let mut v1 = TcpStream::connect(("127.0.0.1", port)).unwrap();
    v1.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    let mut c = Client::from_stream(v1);
    c.expect_line("* OK");
    c.send_line("a LOGOUT");
    c.expect_line("* BYE");
    c.expect_line("a OK");
    for header in [
        &b"PROXY UNKNOWN\r\n"[..],
        &b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..],
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(header).unwrap();
        let mut c = Client::from_stream(s);
        c.expect_line("* OK");
        c.send_line("a LOGIN alice alicepw");
        let answer = c.read_until_tagged("a").pop().unwrap();
        assert!(
            answer.starts_with("a NO [UNAVAILABLE]"),
            "{answer}; log:\n{}",
            proxy.log_text()
        );
        assert!(c.is_closed(), "the health check may try again");
    }
    assert!(
        proxy.wait_log("Login refused on a health-check connection", READ_TIMEOUT),
        "{}",
        proxy.log_text()
    );
    assert!(!dc.log_text().contains("user=<alice>"), "{}", dc.log_text());
}

/// A back end that is the proxy itself is a loop: the second hop is closed at once and logged,
/// and the client gets an unavailable answer instead of a chain of connections.
#[test]
fn a_back_end_pointing_at_the_proxy_itself_is_a_loop_cut_at_the_first_hop() {
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:{port}\"]\n[listener.backend]\nhost = \"127.0.0.1\"\nport = {port}\n"
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let answer = c.read_until_tagged("a");
    assert!(
        answer.last().unwrap().starts_with("a NO [UNAVAILABLE]"),
        "{answer:?}"
    );
    assert!(proxy.wait_log("Proxy loop: 127.0.0.1:", READ_TIMEOUT));
    // One hop was refused, not a chain: a single Connect line besides the client's.
    let log = proxy.log_text();
    assert_eq!(log.matches("Connect:").count(), 1, "{log}");
}

/// A ManageSieve back end behind `haproxy = yes` wants a PROXY header from every connection,
/// the capability probe's too (a LOCAL one, naming no client).
#[test]
fn the_managesieve_probe_sends_a_proxy_header_too() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"managesieve\"\n\
         bind = [\"127.0.0.1:{port}\"]\n[listener.backend]\nhost = \"127.0.0.1\"\n\
         port = {}\nforward_client = \"proxy-v2\"\n",
        dc.sieve_haproxy
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    assert!(
        proxy.wait_log("Learned MANAGESIEVE capabilities", READ_TIMEOUT),
        "{}",
        proxy.log_text()
    );
    let mut c = Client::plain(port);
    sieve_read_response(&mut c);
    c.send_line("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAGFsaWNlcHc=\"");
    let answer = sieve_read_response(&mut c);
    assert!(answer.last().unwrap().starts_with("OK"), "{answer:?}");
}

/// Over the connection limit, a PROXY listener cannot know the client yet: the refusal says
/// the address is the balancer's, and a plain listener still answers in IMAP's words.
#[test]
fn a_refusal_over_the_limit_behind_a_balancer_says_so() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = listener(port, "none", "\"127.0.0.1\"", dc.imap)
        .replace("[log]\n", "[limits]\nconnection_limit = 1\n\n[log]\n");
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut first = TcpStream::connect(("127.0.0.1", port)).unwrap();
    first
        .write_all(b"PROXY TCP4 192.0.2.82 198.51.100.1 51000 143\r\n")
        .unwrap();
    let mut first = Client::from_stream(first);
    first.expect_line("* OK");
    let mut second = Client::plain(port);
    second.expect_line("* BYE [UNAVAILABLE] Too many connections");
    assert!(proxy.wait_log(
        "Connection limit reached: refusing 127.0.0.1:",
        READ_TIMEOUT
    ));
    assert!(proxy
        .log_text()
        .contains("(a balancer: its client is named in the PROXY header"));
}
