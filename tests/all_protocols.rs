//! One Portcullis process serving IMAP, POP3 and ManageSieve side by side, natively and in
//! Perdition mode, with fail2ban reading what it logged.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

#[test]
fn one_process_serves_imap_pop3_and_managesieve_at_once() {
    let dovecot = Dovecot::start();
    let c = certs();
    let (imaps, pop3s, sieve) = (free_port(), free_port(), free_port());
    let toml = format!(
        r#"
[log]
destination = "-"

[[listener]]
protocol = "imap"
bind = ["127.0.0.1:{imaps}"]
tls = "implicit"
cert = "{cert}"
key = "{key}"
backend = {{ host = "127.0.0.1", port = {dc_imap} }}

[[listener]]
protocol = "pop3"
bind = ["127.0.0.1:{pop3s}"]
tls = "implicit"
cert = "{cert}"
key = "{key}"
backend = {{ host = "127.0.0.1", port = {dc_pop3} }}

[[listener]]
protocol = "managesieve"
bind = ["127.0.0.1:{sieve}"]
tls = "starttls"
cert = "{cert}"
key = "{key}"
backend = {{ host = "127.0.0.1", port = {dc_sieve} }}
"#,
        cert = c.cert.display(),
        key = c.key.display(),
        dc_imap = dovecot.imap,
        dc_pop3 = dovecot.pop3,
        dc_sieve = dovecot.sieve,
    );
    let proxy = Proxy::start_toml(&toml, &[imaps, pop3s, sieve]);

    // All three clients logged in at the same time.
    let mut imap = Client::tls(imaps);
    imap.expect_line("* OK");
    imap_login(&mut imap, "a", "alice", "alicepw");
    let mut pop = Client::tls(pop3s);
    pop.expect_line("+OK");
    pop.send_line("USER bob");
    pop.expect_line("+OK");
    pop.send_line("PASS bobpw");
    pop.expect_line("+OK");
    let mut ms = Client::plain(sieve);
    sieve_read_response(&mut ms);
    ms.send_line("STARTTLS");
    ms.expect_line("OK");
    ms.starttls();
    sieve_read_response(&mut ms);
    // "\0alice\0alicepw"
    ms.send_line("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAGFsaWNlcHc=\"");
    assert!(sieve_read_response(&mut ms)
        .last()
        .unwrap()
        .starts_with("OK"));

    imap.send_line("b STATUS INBOX (MESSAGES)");
    let status = imap.read_until_tagged("b");
    assert!(status[0].contains("MESSAGES 3"), "{status:?}");
    pop.send_line("STAT");
    pop.expect_line("+OK 0 0");
    ms.send_line("LISTSCRIPTS");
    assert!(sieve_read_response(&mut ms)
        .last()
        .unwrap()
        .starts_with("OK"));

    let log = proxy.log_text();
    for protocol in ["IMAP4S", "POP3S", "MANAGESIEVE"] {
        assert!(
            log.contains(&format!(
                "protocol={protocol} server-secure=plaintext status=\"ok\""
            )),
            "{protocol}: {log}"
        );
    }
}

/// Perdition mode for each protocol, the way Debian's init script would start it, with
/// the log in a file that fail2ban's stock filter then reads.
#[test]
fn perdition_mode_pop3_and_managesieve_and_fail2ban_sees_a_failed_pop3_login() {
    let dovecot = Dovecot::start();
    let c = certs();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");

    let pop3 = free_port();
    let conf = dir.path().join("perdition.pop3.conf");
    std::fs::write(
        &conf,
        format!(
            "outgoing_server 127.0.0.1\noutgoing_port {}\nssl_mode tls_listen\nssl_cert_file {}\nssl_key_file {}\npop_capability \"USER.UIDL.TOP\"\n",
            dovecot.pop3,
            c.cert.display(),
            c.key.display()
        ),
    )
    .unwrap();
    let args: Vec<String> = [
        "perdition",
        "-f",
        &conf.display().to_string(),
        "-P",
        "POP3",
        "--no_daemon",
        "--bind_address",
        "127.0.0.1",
        "--listen_port",
        &pop3.to_string(),
        "--log_facility",
        &log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _pop_proxy = Proxy::start_args(&args, &[pop3]);

    let mut p = Client::plain(pop3);
    p.expect_line("+OK");
    p.send_line("CAPA");
    p.expect_line("+OK");
    let mut caps = Vec::new();
    loop {
        let l = p.read_line();
        if l == "." {
            break;
        }
        caps.push(l);
    }
    assert_eq!(caps, ["USER", "UIDL", "TOP", "STLS"]);
    p.send_line("STLS");
    p.expect_line("+OK");
    p.starttls();
    p.send_line("USER alice");
    p.expect_line("+OK");
    p.send_line("PASS guessed");
    p.expect_line("-ERR");
    p.send_line("USER alice");
    p.expect_line("+OK");
    p.send_line("PASS alicepw");
    assert_eq!(p.read_line(), "+OK You are so in");

    let sieve = free_port();
    let args: Vec<String> = [
        "perdition",
        "-P",
        "MANAGESIEVE",
        "--no_daemon",
        "-s",
        &format!("127.0.0.1:{}", dovecot.sieve),
        "-b",
        "127.0.0.1",
        "-l",
        &sieve.to_string(),
        "-F",
        &log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _sieve_proxy = Proxy::start_args(&args, &[sieve]);
    let mut s = Client::plain(sieve);
    let greeting = sieve_read_response(&mut s);
    assert!(greeting.last().unwrap().starts_with("OK"), "{greeting:?}");
    // "\0bob\0bobpw"
    s.send_line("AUTHENTICATE \"PLAIN\" \"AGJvYgBib2Jwdw==\"");
    assert_eq!(
        sieve_read_response(&mut s).last().unwrap(),
        "OK \"You are so in\""
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("protocol=MANAGESIEVE") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.contains(" perdition.pop3["), "{text}");
    assert!(text.contains(" perdition.managesieve["), "{text}");
    assert!(
        text.contains("client-secure=starttls authorisation_id=NONE authentication_id=\"alice\" server=\"127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("guessed"), "password in the log:\n{text}");

    // fail2ban reads the lines `text` holds: lines written since (a probe's, late) would
    // be counted there and not here.
    let snapshot = log.with_extension("snapshot");
    std::fs::write(&snapshot, &text).unwrap();
    let out = Command::new("fail2ban-regex")
        .arg(&snapshot)
        .arg("/etc/fail2ban/filter.d/perdition.conf")
        .output()
        .expect("fail2ban-regex is installed by scripts/test.sh");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    // Hits of the filter's first regex, the failed Auth line.
    let auth_hits = report
        .lines()
        .find(|l| l.trim_start().starts_with("|   1) ["))
        .and_then(|l| l.split('[').nth(1))
        .and_then(|n| n.split(']').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no failregex summary in\n{report}"));
    assert_eq!(
        auth_hits, 1,
        "exactly the one failed POP3 login:\n{report}\n{text}"
    );
    // Every other match is a client that left before logging in (the harness probing the
    // port): Perdition logs those too, and the stock filter counts them.
    let matched = report
        .lines()
        .find(|l| l.trim_start().starts_with("Lines:"))
        .and_then(|l| l.split(',').nth(2))
        .and_then(|m| m.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no Lines: summary in\n{report}"));
    let fatal = text
        .matches("Fatal Error reading authentication information")
        .count();
    assert_eq!(matched, 1 + fatal, "{report}");
}
