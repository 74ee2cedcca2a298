//! POP3 and POP3S through Portcullis to a real Dovecot.

mod support;

use std::process::Command;

use support::*;

/// A proxy with one POP3 listener in front of `dovecot`'s plain POP3 port.
fn start(dovecot: &Dovecot, tls: &str, listener_extra: &str) -> (Proxy, u16) {
    let port = free_port();
    let c = certs();
    let toml = format!(
        r#"
[log]
destination = "-"

[[listener]]
protocol = "pop3"
bind = ["127.0.0.1:{port}"]
tls = "{tls}"
cert = "{cert}"
key = "{key}"
{listener_extra}

[listener.backend]
host = "127.0.0.1"
port = {backend}
"#,
        cert = c.cert.display(),
        key = c.key.display(),
        backend = dovecot.pop3,
    );
    (Proxy::start_toml(&toml, &[port]), port)
}

fn login(c: &mut Client, user: &str, pass: &str) {
    c.send_line(&format!("USER {user}"));
    c.expect_line("+OK");
    c.send_line(&format!("PASS {pass}"));
    c.expect_line("+OK");
}

#[test]
fn pop3s_login_stat_retr_byte_identical_quit() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "implicit", "");
    let mut c = Client::tls(port);
    let hello = c.expect_line("+OK");
    assert!(hello.contains("ready on"), "{hello}");
    c.send_line("CAPA");
    c.expect_line("+OK");
    let mut caps = Vec::new();
    loop {
        let l = c.read_line();
        if l == "." {
            break;
        }
        caps.push(l);
    }
    assert!(caps.iter().any(|l| l == "USER"), "{caps:?}");
    assert!(caps.iter().any(|l| l == "SASL PLAIN LOGIN"), "{caps:?}");
    assert!(!caps.iter().any(|l| l == "STLS"), "implicit TLS: {caps:?}");
    login(&mut c, "alice", "alicepw");
    c.send_line("STAT");
    let stat = c.expect_line("+OK 3 ");
    let size: usize = alice_messages().iter().map(Vec::len).sum();
    assert_eq!(stat, format!("+OK 3 {size}"));
    let through_proxy = pop3_retr(&mut c, 3);
    assert!(through_proxy == alice_messages()[2], "RETR 3 differs");
    assert!(
        pop3_retr(&mut c, 1) == alice_messages()[0],
        "RETR 1 differs"
    );

    let mut direct = Client::plain(dovecot.pop3);
    direct.expect_line("+OK");
    login(&mut direct, "alice", "alicepw");
    assert!(pop3_retr(&mut direct, 3) == through_proxy);
    direct.send_line("QUIT");
    direct.expect_line("+OK");

    c.send_line("QUIT");
    c.expect_line("+OK");
    assert!(c.is_closed());
    assert!(
        proxy.wait_log("Closing session:", std::time::Duration::from_secs(5)),
        "{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    assert!(
        log.contains(r#"authentication_id="alice""#) && log.contains("protocol=POP3S"),
        "{log}"
    );
}

#[test]
fn auth_plain_with_initial_response_and_with_continuation() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "");
    let mut c = Client::tls(port);
    c.expect_line("+OK");
    // "\0bob\0bobpw"
    c.send_line("AUTH PLAIN AGJvYgBib2Jwdw==");
    c.expect_line("+OK");
    c.send_line("STAT");
    c.expect_line("+OK 0 0");

    let mut c = Client::tls(port);
    c.expect_line("+OK");
    c.send_line("AUTH PLAIN");
    assert_eq!(c.read_line(), "+ ");
    c.send_line("*");
    c.expect_line("-ERR");
    c.send_line("AUTH PLAIN");
    c.expect_line("+ ");
    c.send_line("AGJvYgBib2Jwdw==");
    c.expect_line("+OK");
}

#[test]
fn wrong_password_gets_err_auth_and_a_perdition_log_line() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "implicit", "");
    let mut c = Client::tls(port);
    c.expect_line("+OK");
    c.send_line("USER alice");
    c.expect_line("+OK");
    c.send_line("PASS not the password");
    assert_eq!(c.read_line(), "-ERR [AUTH] Authentication failed.");
    login(&mut c, "alice", "alicepw");
    let log = proxy.log_text();
    assert!(
        log.contains(
            r#"protocol=POP3S server-secure=plaintext status="failed: Re-Authentication Failure""#
        ),
        "{log}"
    );
    assert!(!log.contains("not the password"), "{log}");
}

#[test]
fn stls_upgrade_discards_injected_plaintext_and_required_tls_refuses_user() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "starttls-required", "");
    let mut c = Client::plain(port);
    c.expect_line("+OK");
    c.send_line("USER alice");
    c.expect_line("-ERR");
    c.send(b"STLS\r\nUSER alice\r\nPASS alicepw\r\n");
    c.expect_line("+OK");
    c.starttls();
    c.send_line("NOOP");
    // Had the injected USER/PASS run, their answers would come first.
    assert_eq!(c.read_line(), "+OK");
    c.send_line("PASS alicepw");
    c.expect_line("-ERR");
    login(&mut c, "alice", "alicepw");
    c.send_line("STAT");
    c.expect_line("+OK 3");
}

#[test]
fn back_end_reached_over_pop3s_and_with_stls() {
    let dovecot = Dovecot::start();
    let ca = certs().ca.display().to_string();
    for (tls, port) in [("implicit", dovecot.pop3s), ("starttls", dovecot.pop3)] {
        let listen = free_port();
        let toml = format!(
            r#"
[log]
destination = "-"

[[listener]]
protocol = "pop3"
bind = ["127.0.0.1:{listen}"]

[listener.backend]
host = "localhost"
port = {port}
tls = "{tls}"
ca_file = "{ca}"
"#
        );
        let _proxy = Proxy::start_toml(&toml, &[listen]);
        let mut c = Client::plain(listen);
        c.expect_line("+OK");
        login(&mut c, "bob", "bobpw");
        c.send_line("STAT");
        c.expect_line("+OK 0 0");
    }
}

#[test]
fn pythons_poplib_logs_in_and_retrieves_through_the_proxy() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "");
    let script = format!(
        r#"
import poplib, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
p = poplib.POP3_SSL("127.0.0.1", {port}, context=ctx, timeout=10)
p.user("alice")
p.pass_("alicepw")
count, size = p.stat()
resp, lines, octets = p.retr(1)
print(count, size, len(lines), lines[0].decode())
p.quit()
"#,
        ca = certs().ca.display().to_string(),
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size: usize = alice_messages().iter().map(Vec::len).sum();
    let first_line = String::from_utf8_lossy(&alice_messages()[0])
        .lines()
        .next()
        .unwrap()
        .to_string();
    let lines = alice_messages()[0].split(|&b| b == b'\n').count() - 1;
    assert_eq!(stdout.trim(), format!("3 {size} {lines} {first_line}"));
}

#[test]
fn pass_takes_the_rest_of_the_line_spaces_and_quotes_included() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "");
    let mut c = Client::tls(port);
    c.expect_line("+OK");
    login(&mut c, "dave", r#"p@ss "w0rd" \ x"#);
    c.send_line("STAT");
    c.expect_line("+OK 0 0");
}

/// POP3 AUTH LOGIN (Outlook): prompts for the user name and the password, base64.
#[test]
fn auth_login_as_outlook_does_it() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "");
    let mut c = Client::tls(port);
    c.expect_line("+OK");
    c.send_line("AUTH");
    c.expect_line("+OK");
    assert_eq!(c.read_line(), "PLAIN");
    assert_eq!(c.read_line(), "LOGIN");
    assert_eq!(c.read_line(), ".");
    c.send_line("AUTH LOGIN");
    assert_eq!(c.read_line(), "+ VXNlcm5hbWU6");
    c.send_line("Ym9i"); // bob
    assert_eq!(c.read_line(), "+ UGFzc3dvcmQ6");
    c.send_line("Ym9icHc="); // bobpw
    c.expect_line("+OK");
    c.send_line("STAT");
    c.expect_line("+OK");
    assert!(dovecot.saw_login("bob"));
}
