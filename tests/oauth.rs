//! OAUTHBEARER and XOAUTH2 from the client, passed to Dovecot unchanged: Dovecot's oauth2
//! passdb checks the token at a small token-introspection service started by each test, and
//! the proxy routes by the user the response names.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use support::*;

/// RFC 7662 introspection: `token=good-token` is alice's, anything else is not active.
struct Introspection {
    url: String,
    tokens_seen: Arc<Mutex<Vec<String>>>,
}

impl Introspection {
    fn start() -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}/introspect",
            listener.local_addr().unwrap().port()
        );
        let tokens_seen = Arc::new(Mutex::new(Vec::new()));
        let seen = tokens_seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end().to_ascii_lowercase();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let body = String::from_utf8_lossy(&body).into_owned();
                seen.lock().unwrap().push(body.clone());
                let json = if body.split('&').any(|kv| kv == "token=good-token") {
                    r#"{"active": true, "username": "alice"}"#
                } else {
                    r#"{"active": false}"#
                };
                let mut stream = stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                );
            }
        });
        Introspection { url, tokens_seen }
    }
}

fn proxy(port: u16, protocol: &str, backend_port: u16, tls: &str) -> Proxy {
    let c = certs();
    Proxy::start_toml(
        &format!(
            "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"{protocol}\"\n\
             bind = [\"127.0.0.1:{port}\"]\ntls = \"{tls}\"\ncert = \"{}\"\nkey = \"{}\"\noauth = true\n\
             [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend_port}\n",
            c.cert.display(),
            c.key.display()
        ),
        &[port],
    )
}

fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

fn oauthbearer(user: &str, token: &str) -> String {
    STANDARD.encode(format!("n,a={user},\x01auth=Bearer {token}\x01\x01"))
}

#[test]
fn imap_xoauth2_and_oauthbearer_reach_dovecot_unchanged() {
    let tokens = Introspection::start();
    let dc = Dovecot::start_with_oauth2(&tokens.url);
    let port = free_port();
    let _proxy = proxy(port, "imap", dc.imap, "implicit");

    let mut c = Client::tls(port);
    let hello = c.read_line();
    assert!(
        hello.contains("AUTH=OAUTHBEARER") && hello.contains("AUTH=XOAUTH2"),
        "{hello}"
    );
    c.send_line(&format!(
        "a AUTHENTICATE XOAUTH2 {}",
        xoauth2("alice", "good-token")
    ));
    c.expect_line("a OK");
    c.send_line("b SELECT INBOX");
    let lines = c.read_until_tagged("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    assert!(dc.saw_login("alice"));
    assert!(tokens
        .tokens_seen
        .lock()
        .unwrap()
        .iter()
        .any(|b| b.contains("token=good-token")));

    // A token the service does not know: refused, and the client may try again.
    let mut c = Client::tls(port);
    c.read_line();
    c.send_line(&format!(
        "a AUTHENTICATE OAUTHBEARER {}",
        oauthbearer("alice", "stolen-token")
    ));
    let no = c.read_until_tagged("a").pop().unwrap();
    assert!(no.starts_with("a NO"), "{no}");
    c.send_line(&format!(
        "b AUTHENTICATE OAUTHBEARER {}",
        oauthbearer("alice", "good-token")
    ));
    c.expect_line("b OK");
}

#[test]
fn pop3_and_managesieve_pass_the_token_through_too() {
    let tokens = Introspection::start();
    let dc = Dovecot::start_with_oauth2(&tokens.url);

    let port = free_port();
    let _pop3 = proxy(port, "pop3", dc.pop3, "implicit");
    let mut c = Client::tls(port);
    c.expect_line("+OK");
    c.send_line("CAPA");
    let mut caps = Vec::new();
    loop {
        let l = c.read_line();
        if l == "." {
            break;
        }
        caps.push(l);
    }
    assert!(
        caps.iter()
            .any(|l| l.starts_with("SASL") && l.contains("XOAUTH2")),
        "{caps:?}"
    );
    c.send_line(&format!(
        "AUTH OAUTHBEARER {}",
        oauthbearer("alice", "good-token")
    ));
    c.expect_line("+OK");
    c.send_line("STAT");
    c.expect_line("+OK 3 ");

    let port = free_port();
    let _sieve = proxy(port, "managesieve", dc.sieve, "starttls");
    let mut s = Client::plain(port);
    let block = sieve_read_response(&mut s);
    assert!(
        block
            .iter()
            .any(|l| l.starts_with("\"SASL\"") && l.contains("OAUTHBEARER")),
        "{block:?}"
    );
    s.send_line(&format!(
        "AUTHENTICATE \"XOAUTH2\" \"{}\"",
        xoauth2("alice", "good-token")
    ));
    assert!(sieve_read_response(&mut s)
        .last()
        .unwrap()
        .starts_with("OK"));
}
