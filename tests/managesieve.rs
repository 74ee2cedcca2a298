//! ManageSieve through Portcullis to a real Dovecot (Pigeonhole).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::*;

/// A proxy with one ManageSieve listener in front of `dovecot`.
fn start(dovecot: &Dovecot, tls: &str, backend_tls: &str) -> (Proxy, u16) {
    let port = free_port();
    let c = certs();
    let toml = format!(
        r#"
[log]
destination = "-"

[[listener]]
protocol = "managesieve"
bind = ["127.0.0.1:{port}"]
tls = "{tls}"
cert = "{cert}"
key = "{key}"

[listener.backend]
host = "localhost"
port = {backend}
tls = "{backend_tls}"
ca_file = "{ca}"
"#,
        cert = c.cert.display(),
        key = c.key.display(),
        ca = c.ca.display(),
        backend = dovecot.sieve,
    );
    (Proxy::start_toml(&toml, &[port]), port)
}

/// `AUTHENTICATE "PLAIN" "<base64 of \0user\0pass>"`.
fn authenticate(c: &mut Client, user: &str, pass: &str) -> Vec<String> {
    let b64 = plain_b64(user, pass);
    c.send_line(&format!("AUTHENTICATE \"PLAIN\" \"{b64}\""));
    sieve_read_response(c)
}

fn plain_b64(user: &str, pass: &str) -> String {
    let raw = format!("\0{user}\0{pass}");
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(raw.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn starttls_login_then_putscript_listscripts_getscript_round_trip() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "starttls", "starttls");
    let mut c = Client::plain(port);
    let greeting = sieve_read_response(&mut c);
    assert!(greeting.iter().any(|l| l == "\"STARTTLS\""), "{greeting:?}");
    assert!(greeting.last().unwrap().starts_with("OK"), "{greeting:?}");
    c.send(b"STARTTLS\r\nLISTSCRIPTS\r\n");
    c.expect_line("OK");
    c.starttls();
    // RFC 5804: the capabilities come again, unasked, after the handshake.
    let again = sieve_read_response(&mut c);
    assert!(!again.iter().any(|l| l == "\"STARTTLS\""), "{again:?}");
    assert!(
        again.iter().any(|l| l.starts_with("\"SASL\" \"PLAIN")),
        "{again:?}"
    );
    let ok = authenticate(&mut c, "alice", "alicepw");
    assert!(ok.last().unwrap().starts_with("OK"), "{ok:?}");

    let script = "require \"fileinto\";\r\nif header :contains \"subject\" \"spam\" { fileinto \"Junk\"; }\r\n";
    c.send(
        format!(
            "PUTSCRIPT \"filters\" {{{}+}}\r\n{script}\r\n",
            script.len()
        )
        .as_bytes(),
    );
    let put = sieve_read_response(&mut c);
    assert!(put.last().unwrap().starts_with("OK"), "{put:?}");
    c.send_line("SETACTIVE \"filters\"");
    assert!(sieve_read_response(&mut c)
        .last()
        .unwrap()
        .starts_with("OK"));
    c.send_line("LISTSCRIPTS");
    let list = sieve_read_response(&mut c);
    assert!(list.iter().any(|l| l == "\"filters\" ACTIVE"), "{list:?}");
    c.send_line("GETSCRIPT \"filters\"");
    let header = c.read_line();
    assert_eq!(header, format!("{{{}}}", script.len()));
    assert_eq!(c.read_exact(script.len()), script.as_bytes());
    let rest = sieve_read_response(&mut c);
    assert!(rest.last().unwrap().starts_with("OK"), "{rest:?}");
    c.send_line("LOGOUT");
    c.expect_line("OK");
    let log = proxy.log_text();
    assert!(
        log.contains("protocol=MANAGESIEVE server-secure=starttls status=\"ok\""),
        "{log}"
    );
    assert!(log.contains("client-secure=starttls"), "{log}");
}

#[test]
fn wrong_password_is_no_and_pre_login_commands_are_answered() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "starttls", "none");
    let mut c = Client::plain(port);
    sieve_read_response(&mut c);
    c.send_line("NOOP");
    c.expect_line("OK");
    c.send_line("NOOP \"probe\"");
    c.expect_line("OK (TAG \"probe\")");
    c.send_line("CAPABILITY");
    let caps = sieve_read_response(&mut c);
    assert!(
        caps.iter().any(|l| l.starts_with("\"IMPLEMENTATION\"")),
        "{caps:?}"
    );
    c.send_line("LISTSCRIPTS");
    c.expect_line("NO");
    let no = authenticate(&mut c, "alice", "wrong");
    assert_eq!(no.last().unwrap(), "NO \"Authentication failed.\"");
    // Unquoted mechanism names are allowed by RFC 5804.
    let b64 = plain_b64("alice", "alicepw");
    c.send_line(&format!("AUTHENTICATE PLAIN \"{b64}\""));
    assert!(sieve_read_response(&mut c)
        .last()
        .unwrap()
        .starts_with("OK"));
    c.send_line("LISTSCRIPTS");
    assert!(sieve_read_response(&mut c)
        .last()
        .unwrap()
        .starts_with("OK"));
    let log = proxy.log_text();
    assert!(log.contains("protocol=MANAGESIEVE server-secure=plaintext status=\"failed: Re-Authentication Failure\""), "{log}");
}

#[test]
fn authenticate_with_literal_and_with_the_continuation_exchange() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "starttls", "none");
    let b64 = plain_b64("bob", "bobpw");
    let mut c = Client::plain(port);
    sieve_read_response(&mut c);
    c.send(format!("AUTHENTICATE \"PLAIN\" {{{}+}}\r\n{b64}\r\n", b64.len()).as_bytes());
    assert!(sieve_read_response(&mut c)
        .last()
        .unwrap()
        .starts_with("OK"));

    let mut c = Client::plain(port);
    sieve_read_response(&mut c);
    c.send_line("AUTHENTICATE \"PLAIN\"");
    assert_eq!(c.read_line(), "\"\"");
    c.send_line(&format!("\"{b64}\""));
    assert!(sieve_read_response(&mut c)
        .last()
        .unwrap()
        .starts_with("OK"));
}

#[test]
fn sieve_connect_uploads_and_lists_through_the_proxy() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "starttls", "none");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("vacation.sieve");
    std::fs::write(&script, "require \"vacation\";\nvacation \"I am away\";\n").unwrap();
    let run = |action: &[&str]| {
        let mut child = Command::new("sieve-connect")
            .args(["--server", "localhost", "--port", &port.to_string()])
            .args(["--user", "bob", "--passwordfd", "0"])
            .args(["--tlscafile", &certs().ca.display().to_string()])
            .args(action)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sieve-connect is installed by scripts/test.sh");
        child.stdin.take().unwrap().write_all(b"bobpw\n").unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "sieve-connect {action:?} failed:\n{text}"
        );
        text
    };
    run(&[
        "--upload",
        "--localsieve",
        &script.display().to_string(),
        "--remotesieve",
        "vacation",
    ]);
    let listed = run(&["--list"]);
    assert!(listed.contains("vacation"), "{listed}");
}

#[test]
fn capabilities_are_learned_from_the_back_end() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, "starttls", "none");
    assert!(
        proxy.wait_log(
            "Learned MANAGESIEVE capabilities",
            std::time::Duration::from_secs(10)
        ),
        "{}",
        proxy.log_text()
    );
    let mut direct = Client::plain(dovecot.sieve);
    let real = sieve_read_response(&mut direct);
    let real_sieve = real.iter().find(|l| l.starts_with("\"SIEVE\"")).unwrap();

    let mut c = Client::plain(port);
    let offered = sieve_read_response(&mut c);
    assert!(offered.contains(real_sieve), "{offered:?} vs {real:?}");
    assert!(
        offered.iter().any(|l| l == "\"SASL\" \"PLAIN LOGIN\""),
        "{offered:?}"
    );
    assert!(offered.iter().any(|l| l == "\"STARTTLS\""), "{offered:?}");
    assert!(!offered.iter().any(|l| l == "\"XCLIENT\""), "{offered:?}");
}

/// ManageSieve AUTHENTICATE "LOGIN": the prompts come as quoted base64 strings.
#[test]
fn authenticate_login_with_quoted_prompts() {
    let dovecot = Dovecot::start();
    let (_proxy, port) = start(&dovecot, "starttls", "none");
    let mut c = Client::plain(port);
    let caps = sieve_read_response(&mut c);
    assert!(
        caps.iter()
            .any(|l| l.starts_with("\"SASL\"") && l.contains("LOGIN")),
        "{caps:?}"
    );
    c.send_line("AUTHENTICATE \"LOGIN\"");
    assert_eq!(c.read_line(), "\"VXNlcm5hbWU6\"");
    c.send_line("\"YWxpY2U=\"");
    assert_eq!(c.read_line(), "\"UGFzc3dvcmQ6\"");
    c.send_line("\"YWxpY2Vwdw==\"");
    assert!(sieve_read_response(&mut c)
        .last()
        .unwrap()
        .starts_with("OK"));
    assert!(dovecot.saw_login("alice"));
}
