//! IMAP through Portcullis to a real Dovecot: what a mail client sees.

mod support;

use support::*;

/// A proxy with one IMAP listener in front of `dovecot`, configured by `listener_extra`
/// (TOML lines inside `[[listener]]`) and `limits` (lines inside `[limits]`).
fn start(dovecot: &Dovecot, tls: &str, listener_extra: &str, limits: &str) -> (Proxy, u16) {
    let port = free_port();
    let c = certs();
    let toml = format!(
        r#"
[log]
destination = "-"

[limits]
{limits}

[[listener]]
protocol = "imap"
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
        backend = dovecot.imap,
    );
    (Proxy::start_toml(&toml, &[port]), port)
}

fn greeting(client: &mut Client) -> String {
    client.expect_line("* OK [CAPABILITY ")
}

#[test]
fn tls_login_select_fetch_of_a_1mib_message_is_byte_identical_then_logout() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    let hello = greeting(&mut c);
    assert!(hello.contains("ready on"), "{hello}");
    let ok = imap_login(&mut c, "a", "alice", "alicepw");
    // The client learns the back end's post-login capabilities without asking.
    assert!(ok.starts_with("a OK [CAPABILITY IMAP4rev1"), "{ok}");
    assert!(
        ok.contains("MOVE"),
        "post-login capabilities expected: {ok}"
    );
    c.send_line("b SELECT INBOX");
    let lines = c.read_until_tagged("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    let expected = &alice_messages()[2];
    let through_proxy = imap_fetch_raw(&mut c, "c", 3);
    assert!(through_proxy.len() >= 1 << 20);
    assert!(
        through_proxy == *expected,
        "message differs through the proxy"
    );

    // And the same bytes as a direct fetch from Dovecot.
    let mut direct = Client::plain(dovecot.imap);
    direct.expect_line("* OK");
    imap_login(&mut direct, "a", "alice", "alicepw");
    direct.send_line("b EXAMINE INBOX");
    direct.read_until_tagged("b");
    assert!(imap_fetch_raw(&mut direct, "c", 3) == through_proxy);

    c.send_line("z LOGOUT");
    c.expect_line("* BYE");
    c.expect_line("z OK");
    assert!(c.is_closed());
}

#[test]
fn wrong_password_is_refused_under_the_clients_tag_and_retry_works() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("x1 LOGIN alice wrong");
    assert_eq!(
        c.read_line(),
        "x1 NO [AUTHENTICATIONFAILED] Authentication failed."
    );
    imap_login(&mut c, "x2", "alice", "alicepw");
    let log = proxy.log_text();
    assert!(
        log.contains(r#"authentication_id="alice" server="127.0.0.1:"#)
            && log.contains(r#"status="failed: Re-Authentication Failure""#),
        "{log}"
    );
    assert!(!log.contains("wrong"), "a password reached the log:\n{log}");
}

#[test]
fn too_many_failed_logins_close_the_connection() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "max_failed_logins = 2");
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("a LOGIN alice bad1");
    c.expect_line("a NO [AUTHENTICATIONFAILED]");
    c.send_line("b LOGIN alice bad2");
    c.expect_line("b NO [AUTHENTICATIONFAILED]");
    c.expect_line("* BYE Too many failed logins");
    assert!(c.is_closed());
}

#[test]
fn login_with_synchronising_and_non_synchronising_literals() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send(b"a LOGIN {5}\r\n");
    c.expect_line("+ ");
    c.send(b"alice {7}\r\n");
    c.expect_line("+ ");
    c.send(b"alicepw\r\n");
    c.expect_line("a OK [CAPABILITY");
    c.send_line("b LOGOUT");
    c.expect_line("* BYE");

    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send(b"a LOGIN {5+}\r\nalice {7+}\r\nalicepw\r\n");
    c.expect_line("a OK [CAPABILITY");
}

#[test]
fn authenticate_plain_with_sasl_ir_and_with_continuation_and_cancel() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    // "\0alice\0alicepw"
    let response = "AGFsaWNlAGFsaWNlcHc=";
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line(&format!("a AUTHENTICATE PLAIN {response}"));
    c.expect_line("a OK [CAPABILITY");

    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("a AUTHENTICATE PLAIN");
    assert_eq!(c.read_line(), "+ ");
    c.send_line("*");
    c.expect_line("a BAD");
    c.send_line("b AUTHENTICATE PLAIN");
    assert_eq!(c.read_line(), "+ ");
    c.send_line(response);
    c.expect_line("b OK [CAPABILITY");
    c.send_line("c SELECT INBOX");
    let lines = c.read_until_tagged("c");
    assert!(lines.last().unwrap().starts_with("c OK"), "{lines:?}");
}

#[test]
fn pre_login_commands_are_answered_by_the_proxy() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("a CAPABILITY");
    let caps = c.read_until_tagged("a");
    assert!(caps[0].starts_with("* CAPABILITY IMAP4rev1"), "{caps:?}");
    assert!(caps[0].contains("LITERAL+") && caps[0].contains("AUTH=PLAIN"));
    assert!(!caps[0].contains("STARTTLS"), "implicit TLS: no STARTTLS");
    c.send_line("b NOOP");
    c.expect_line("b OK");
    c.send_line("c ID (\"name\" \"test-suite\")");
    let id = c.read_until_tagged("c");
    assert!(id[0].starts_with("* ID (\"name\" \"Portcullis\""), "{id:?}");
    c.send_line("d SELECT INBOX");
    c.expect_line("d BAD");
    c.send_line("e LOGOUT");
    c.expect_line("* BYE");
    c.expect_line("e OK");
    assert!(c.is_closed());
}

#[test]
fn split_input_and_pipelined_commands_including_after_login() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    for byte in b"a NOOP\r\n" {
        c.send(&[*byte]);
    }
    c.expect_line("a OK");
    // Pipelined: pre-login commands, the login, and a command meant for the back end.
    c.send(b"b NOOP\r\nc LOGIN alice alicepw\r\nd SELECT INBOX\r\n");
    c.expect_line("b OK");
    c.expect_line("c OK [CAPABILITY");
    let lines = c.read_until_tagged("d");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
}

#[test]
fn starttls_ignores_plaintext_injected_before_the_handshake() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "starttls", "", "");
    let mut c = Client::plain(port);
    let hello = greeting(&mut c);
    assert!(hello.contains("STARTTLS"), "{hello}");
    // An attacker on the path appends a command to the client's STARTTLS (CVE-2011-0411).
    c.send(b"a STARTTLS\r\nx LOGIN alice alicepw\r\n");
    c.expect_line("a OK");
    c.starttls();
    c.send_line("b CAPABILITY");
    let caps = c.read_until_tagged("b");
    assert!(!caps[0].contains("STARTTLS"), "{caps:?}");
    assert_eq!(
        caps.len(),
        2,
        "the injected LOGIN must not be answered: {caps:?}"
    );
    c.send_line("c NOOP");
    assert_eq!(c.read_line(), "c OK NOOP completed");
    imap_login(&mut c, "d", "alice", "alicepw");
    // The log is written by its own thread, shortly after the answer.
    assert!(proxy.wait_log("Auth:", READ_TIMEOUT));
    let log = proxy.log_text();
    assert_eq!(log.matches("Auth:").count(), 1, "{log}");
    assert!(log.contains("client-secure=starttls"), "{log}");
}

#[test]
fn logindisabled_until_starttls_when_tls_is_required() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "starttls-required", "", "");
    let mut c = Client::plain(port);
    let hello = greeting(&mut c);
    assert!(
        hello.contains("LOGINDISABLED") && hello.contains("STARTTLS"),
        "{hello}"
    );
    c.send_line("a LOGIN alice alicepw");
    c.expect_line("a NO [PRIVACYREQUIRED]");
    c.send_line("b AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlcHc=");
    c.expect_line("b NO [PRIVACYREQUIRED]");
    c.send_line("c STARTTLS");
    c.expect_line("c OK");
    c.starttls();
    c.send_line("d CAPABILITY");
    let caps = c.read_until_tagged("d");
    assert!(!caps[0].contains("LOGINDISABLED"), "{caps:?}");
    imap_login(&mut c, "e", "alice", "alicepw");
    // The refused attempts are logged as Perdition logs them.
    let log = proxy.log_text();
    assert!(
        log.contains(r#"client-secure=plaintext authorisation_id=NONE authentication_id="alice" server="(null):(null)" protocol=IMAP4 server-secure=plaintext status="failed: Login Disabled""#),
        "{log}"
    );
    assert_eq!(log.matches("failed: Login Disabled").count(), 2, "{log}");
}

#[test]
fn login_disabled_refuses_everyone() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "login_disabled = true", "");
    let mut c = Client::tls(port);
    assert!(greeting(&mut c).contains("LOGINDISABLED"));
    c.send_line("a LOGIN alice alicepw");
    c.expect_line("a NO");
}

#[test]
fn upper_case_user_name_works_with_lower_case_all() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "implicit", "lower_case = \"all\"", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    imap_login(&mut c, "a", "ALICE", "alicepw");
    // Perdition logs the name as typed.
    assert!(proxy.log_text().contains(r#"authentication_id="ALICE""#));

    // Without the rewrite the harness Dovecot (which does not lower-case) refuses it.
    let (_plain, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("a LOGIN ALICE alicepw");
    c.expect_line("a NO [AUTHENTICATIONFAILED]");
}

#[test]
fn ok_line_replaces_the_back_end_text() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "ok_line = \"You are so in\"", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    let ok = imap_login(&mut c, "a", "alice", "alicepw");
    assert!(ok.ends_with("] You are so in"), "{ok}");
}

#[test]
fn pre_login_bounds_give_a_reason_and_close() {
    let dovecot = Dovecot::start();
    let limits = "max_line_length = 200\nmax_literal_size = 100\nmax_commands = 5";
    let (_proxy, port) = start(&dovecot, "implicit", "", limits);

    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line(&format!("a LOGIN {} x", "u".repeat(300)));
    c.expect_line("a BAD Line too long");
    c.expect_line("* BYE");
    assert!(c.is_closed());

    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("a LOGIN {101}");
    c.expect_line("a BAD [TOOBIG]");
    c.send_line("b NOOP");
    c.expect_line("b OK");
    c.send(b"c LOGIN {5000+}\r\n");
    c.expect_line("c BAD [TOOBIG]");
    c.expect_line("* BYE");
    assert!(c.is_closed());

    let mut c = Client::tls(port);
    greeting(&mut c);
    for i in 0..5 {
        c.send_line(&format!("n{i} NOOP"));
        c.expect_line(&format!("n{i} OK"));
    }
    c.send_line("n5 NOOP");
    c.expect_line("* BYE Too many commands");
    assert!(c.is_closed());

    // Invalid tags and garbage get BAD, not a crash; the session goes on.
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send(b"\x00\xff{}\r\n");
    c.expect_line("* BAD");
    c.send_line("ok NOOP");
    c.expect_line("ok OK");
}

#[test]
fn back_end_reached_with_starttls_and_with_implicit_tls() {
    let dovecot = Dovecot::start();
    let c = certs();
    for (tls, port) in [("starttls", dovecot.imap), ("implicit", dovecot.imaps)] {
        let listen = free_port();
        let toml = format!(
            r#"
[log]
destination = "-"

[[listener]]
protocol = "imap"
bind = ["127.0.0.1:{listen}"]

[listener.backend]
host = "localhost"
port = {port}
tls = "{tls}"
ca_file = "{ca}"
"#,
            ca = c.ca.display()
        );
        let proxy = Proxy::start_toml(&toml, &[listen]);
        let mut client = Client::plain(listen);
        greeting(&mut client);
        imap_login(&mut client, "a", "bob", "bobpw");
        client.send_line("b SELECT INBOX");
        let lines = client.read_until_tagged("b");
        assert!(lines.last().unwrap().starts_with("b OK"), "{lines:?}");
        let expected = if tls == "starttls" { "starttls" } else { "ssl" };
        assert!(
            proxy
                .log_text()
                .contains(&format!("server-secure={expected} status=\"ok\"")),
            "{}",
            proxy.log_text()
        );
    }
}

#[test]
fn deeply_nested_or_literal_stuffed_commands_are_refused_and_the_proxy_lives_on() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "none", "", "");
    let mut c = Client::plain(port);
    greeting(&mut c);
    // Nesting carried across literal-terminated lines, as a stack-exhaustion attack would.
    let mut attack = b"a ID ".to_vec();
    for paren in [b'(', b'(', b'(', b'(', b')', b')', b')', b')'] {
        attack.extend_from_slice(&[paren; 8000]);
        attack.extend_from_slice(b"{0+}\r\n");
    }
    attack.extend_from_slice(b"\r\n");
    c.send(&attack);
    let answer = c.read_line();
    assert!(answer.starts_with("a BAD"), "{answer}");
    c.send_line("z NOOP");
    c.expect_line("z OK");

    let mut c = Client::plain(port);
    greeting(&mut c);
    c.send(b"b LOGIN {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx {1+}\r\nx\r\n");
    c.expect_line("b BAD");
    // Another client is served as if nothing happened.
    let mut d = Client::plain(port);
    greeting(&mut d);
    imap_login(&mut d, "c", "alice", "alicepw");
}

#[test]
fn awkward_passwords_reach_the_back_end_intact() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    for (user, pass) in [
        ("dave", r#"p@ss "w0rd" \ x"#),
        ("erin", "p\u{e4}ssw\u{f6}rd"),
    ] {
        // As literals, the form a client must use for such bytes; then, for dave, quoted.
        let mut c = Client::tls(port);
        greeting(&mut c);
        c.send(
            format!(
                "a LOGIN {{{}+}}\r\n{user} {{{}+}}\r\n",
                user.len(),
                pass.len()
            )
            .as_bytes(),
        );
        c.send(pass.as_bytes());
        c.send(b"\r\n");
        c.expect_line("a OK");
    }
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line(r#"a LOGIN dave "p@ss \"w0rd\" \\ x""#);
    c.expect_line("a OK");
}

#[test]
fn a_back_end_that_refuses_login_is_unavailable_with_a_reason_in_the_log() {
    // Without the PLAIN mechanism Dovecot advertises LOGINDISABLED: there is no way to pass
    // the password on, and the client must not be told its password was wrong.
    let dovecot = Dovecot::start_with_mechanisms("login");
    let (proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    greeting(&mut c);
    c.send_line("a LOGIN alice alicepw");
    c.expect_line("a NO [UNAVAILABLE]");
    let log = proxy.log_text();
    assert!(log.contains("server advertises LOGINDISABLED"), "{log}");
    assert!(
        log.contains(r#"status="failed: Connection Negotiation Failure""#),
        "{log}"
    );
}

/// Outlook's way: AUTHENTICATE LOGIN, the user name and then the password, each base64, each
/// after its prompt; the proxy logs in to Dovecot with them.
#[test]
fn authenticate_login_as_outlook_does_it() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "implicit", "", "");
    let mut c = Client::tls(port);
    let hello = greeting(&mut c);
    assert!(hello.contains("AUTH=LOGIN"), "{hello}");
    c.send_line("a AUTHENTICATE LOGIN");
    assert_eq!(c.read_line(), "+ VXNlcm5hbWU6");
    c.send_line("YWxpY2U="); // alice
    assert_eq!(c.read_line(), "+ UGFzc3dvcmQ6");
    c.send_line("YWxpY2Vwdw=="); // alicepw
    c.expect_line("a OK [CAPABILITY");
    c.send_line("b SELECT INBOX");
    let lines = c.read_until_tagged("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    assert!(dovecot.saw_login("alice"));
}
