//! A trusted peer (a webmail host, another proxy) names the client it speaks for, with IMAP
//! `ID` `x-originating-ip` or POP3/ManageSieve `XCLIENT`, as it would to Dovecot; from anyone
//! else the same words are ignored. Its TTL is lowered hop by hop, and a loop between two
//! proxies ends when it runs out.

mod support;

use support::*;

fn listener(protocol: &str, port: u16, backend: u16, trusted: &str) -> String {
    format!(
        "[[listener]]\nprotocol = \"{protocol}\"\nbind = [\"127.0.0.1:{port}\"]\n\
         login_trusted = [{trusted}]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\nforward_client = \"id\"\n"
    )
}

const LOG: &str = "[log]\ndestination = \"-\"\n\n";

#[test]
fn a_trusted_webmail_names_its_client_over_imap_and_pop3() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let toml = format!(
        "{LOG}{}\n{}",
        listener("imap", imap, dc.imap, "\"127.0.0.1\""),
        listener("pop3", pop3, dc.pop3, "\"127.0.0.1\"")
    );
    let proxy = Proxy::start_toml(&toml, &[imap, pop3]);

    let mut c = Client::plain(imap);
    c.expect_line("* OK");
    c.send_line("i ID (\"name\" \"Roundcube\" \"x-originating-ip\" \"192.0.2.90\" \"x-originating-port\" \"4000\")");
    c.read_until_tagged("i");
    imap_login(&mut c, "a", "alice", "alicepw");
    assert!(
        dc.wait_log(
            "Login: user=<alice>, method=PLAIN, rip=192.0.2.90",
            READ_TIMEOUT
        ),
        "{}",
        dc.log_text()
    );
    assert!(proxy.wait_log("Auth: 192.0.2.90:4000->", READ_TIMEOUT));

    let mut p = Client::plain(pop3);
    p.expect_line("+OK [XCLIENT]");
    p.send_line("XCLIENT ADDR=192.0.2.91 PORT=4001");
    p.expect_line("+OK Updated");
    p.send_line("USER bob");
    p.expect_line("+OK");
    p.send_line("PASS bobpw");
    p.expect_line("+OK");
    assert!(
        dc.wait_log(
            "Login: user=<bob>, method=PLAIN, rip=192.0.2.91",
            READ_TIMEOUT
        ),
        "{}",
        dc.log_text()
    );
}

#[test]
fn from_an_untrusted_peer_the_words_are_ignored() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let toml = format!(
        "{LOG}{}\n{}",
        listener("imap", imap, dc.imap, "\"192.0.2.250\""),
        listener("pop3", pop3, dc.pop3, "\"192.0.2.250\"")
    );
    let proxy = Proxy::start_toml(&toml, &[imap, pop3]);
    let mut c = Client::plain(imap);
    c.expect_line("* OK");
    c.send_line("i ID (\"x-originating-ip\" \"192.0.2.92\")");
    c.read_until_tagged("i");
    imap_login(&mut c, "a", "alice", "alicepw");
    let mut p = Client::plain(pop3);
    let greeting = p.read_line();
    assert!(!greeting.contains("XCLIENT"), "{greeting}");
    p.send_line("XCLIENT ADDR=192.0.2.93");
    p.expect_line("-ERR");
    assert!(proxy.wait_log("Auth: 127.0.0.1:", READ_TIMEOUT));
    assert!(dc.wait_log(
        "Login: user=<alice>, method=PLAIN, rip=127.0.0.1",
        READ_TIMEOUT
    ));
    let log = dc.log_text() + &proxy.log_text();
    assert!(
        !log.contains("192.0.2.92") && !log.contains("192.0.2.93"),
        "{log}"
    );
}

/// Two proxies pointing at each other, each trusting the other: every hop lowers the TTL, and
/// the login ends as unavailable instead of circling until file descriptors run out.
#[test]
fn a_loop_between_two_proxies_ends_when_the_ttl_runs_out() {
    let (a, b) = (free_port(), free_port());
    let proxy_a = Proxy::start_toml(
        &format!("{LOG}{}", listener("imap", a, b, "\"127.0.0.1\"")),
        &[a],
    );
    let proxy_b = Proxy::start_toml(
        &format!("{LOG}{}", listener("imap", b, a, "\"127.0.0.1\"")),
        &[b],
    );
    let mut c = Client::plain(a);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let answer = c.read_until_tagged("a");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let logs = proxy_a.log_text() + &proxy_b.log_text();
    assert!(
        answer.last().unwrap().starts_with("a NO [UNAVAILABLE]"),
        "{answer:?}\n{logs}"
    );
    assert!(logs.contains("Proxy loop: the peer naming"), "{logs}");
    // Five hops at most: a few Connect lines, not hundreds.
    assert!(logs.matches("Connect:").count() <= 6, "{logs}");
}

/// Client → proxy A → proxy B (which trusts A) → Dovecot. The client's own `ID` may not smuggle
/// `XCLIENT`'s words ("addr", "ttl") through A to name someone else at B, or lift the hop count.
#[test]
fn a_client_cannot_name_itself_through_a_trusted_hop() {
    let dc = Dovecot::start();
    let (a, b) = (free_port(), free_port());
    let proxy_b = Proxy::start_toml(
        &format!("{LOG}{}", listener("imap", b, dc.imap, "\"127.0.0.1\"")),
        &[b],
    );
    let front = format!(
        "{LOG}[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{a}\"]\n\
         proxy_protocol = true\nproxy_trusted = [\"127.0.0.1\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {b}\nforward_client = \"id\"\n"
    );
    let _proxy_a = Proxy::start_toml(&front, &[a]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", a)).unwrap();
    std::io::Write::write_all(&mut s, b"PROXY TCP4 192.0.2.95 198.51.100.1 51000 143\r\n").unwrap();
    let mut c = Client::from_stream(s);
    c.expect_line("* OK");
    c.send_line("i ID (\"addr\" \"203.0.113.66\" \"ttl\" \"4000000000\" \"session\" \"mine\")");
    c.read_until_tagged("i");
    imap_login(&mut c, "a", "alice", "alicepw");
    assert!(
        proxy_b.wait_log("Auth: 192.0.2.95:51000->", READ_TIMEOUT),
        "{}",
        proxy_b.log_text()
    );
    assert!(
        dc.wait_log(
            "Login: user=<alice>, method=PLAIN, rip=192.0.2.95",
            READ_TIMEOUT
        ),
        "{}",
        dc.log_text()
    );
    let logs = proxy_b.log_text() + &dc.log_text();
    assert!(!logs.contains("203.0.113.66"), "{logs}");
    assert!(
        !logs.contains("session=<mine>") && !logs.contains("session=mine"),
        "{logs}"
    );
}
