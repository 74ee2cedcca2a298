//! Proves the test harness itself against Dovecot directly (no proxy involved).

mod support;

use std::time::Duration;

use support::*;

#[test]
fn certs_verify_against_ca_only() {
    let c = certs();
    for f in [&c.ca, &c.cert, &c.key, &c.other_ca] {
        assert!(f.is_file(), "{} missing", f.display());
    }
    // Both calls return the same, cached PKI.
    assert_eq!(certs().cert, c.cert);
}

#[test]
fn dovecot_imap_and_imaps() {
    let dc = Dovecot::start();
    let msgs = alice_messages();
    assert!(msgs[2].len() >= 1 << 20);

    // Plain IMAP, then STARTTLS, then login and fetch everything.
    let mut c = Client::plain(dc.imap);
    let greeting = c.expect_line("* OK");
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    c.send_line("s STARTTLS");
    c.expect_line("s OK");
    c.starttls();
    assert!(c.is_tls());
    imap_login(&mut c, "a", "alice", "alicepw");
    c.send_line("b SELECT INBOX");
    let lines = c.read_until_tagged("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    for (i, m) in msgs.iter().enumerate() {
        let got = imap_fetch_raw(&mut c, &format!("f{i}"), i as u32 + 1);
        assert_eq!(got.len(), m.len(), "message {}", i + 1);
        assert!(got == *m, "message {} differs", i + 1);
    }
    c.send_line("z LOGOUT");
    c.expect_line("* BYE");
    c.expect_line("z OK");
    assert!(c.is_closed());

    // Implicit TLS; other users; wrong password.
    let mut t = Client::tls(dc.imaps);
    t.expect_line("* OK");
    imap_login(&mut t, "a", "carol@example.org", "carolpw");
    t.send_line("b LOGIN bob wrong");
    let _ = t.read_until_tagged("b");
    let mut t2 = Client::tls(dc.imaps);
    t2.expect_line("* OK");
    t2.send_line("a LOGIN bob wrong");
    let last = t2.read_until_tagged("a").pop().unwrap();
    assert!(last.starts_with("a NO"), "{last}");
    imap_login(&mut t2, "b", "bob", "bobpw");
    let _ = Client::plain(dc.imap); // probe connections are harmless
}

#[test]
fn dovecot_pop3_sieve_and_tls_negative() {
    let dc = Dovecot::start();
    let msgs = alice_messages();

    let mut p = Client::plain(dc.pop3);
    p.expect_line("+OK");
    p.send_line("STLS");
    p.expect_line("+OK");
    p.starttls();
    p.send_line("USER alice");
    p.expect_line("+OK");
    p.send_line("PASS alicepw");
    p.expect_line("+OK");
    p.send_line("STAT");
    let stat = p.expect_line("+OK 3 ");
    let total: usize = msgs.iter().map(Vec::len).sum();
    assert_eq!(stat, format!("+OK 3 {total}"));
    assert!(pop3_retr(&mut p, 1) == msgs[0]);
    assert!(pop3_retr(&mut p, 3) == msgs[2]);
    p.send_line("QUIT");
    p.expect_line("+OK");
    assert!(p.is_closed());

    let mut ps = Client::tls(dc.pop3s);
    ps.expect_line("+OK");
    ps.send_line("USER bob");
    ps.expect_line("+OK");
    ps.send_line("PASS bobpw");
    ps.expect_line("+OK");

    // ManageSieve: greeting, STARTTLS, AUTHENTICATE PLAIN, PUTSCRIPT/LISTSCRIPTS.
    let mut s = Client::plain(dc.sieve);
    let greeting = sieve_read_response(&mut s);
    assert!(greeting.iter().any(|l| l == "\"STARTTLS\""), "{greeting:?}");
    assert!(greeting.last().unwrap().starts_with("OK"), "{greeting:?}");
    s.send_line("STARTTLS");
    s.expect_line("OK");
    s.starttls();
    let caps = sieve_read_response(&mut s);
    assert!(caps.last().unwrap().starts_with("OK"), "{caps:?}");
    // base64("\0alice\0alicepw")
    s.send_line("AUTHENTICATE \"PLAIN\" \"AGFsaWNlAGFsaWNlcHc=\"");
    let r = sieve_read_response(&mut s);
    assert!(r.last().unwrap().starts_with("OK"), "{r:?}");
    let script = "keep;\r\n";
    s.send_line(&format!("PUTSCRIPT \"test\" {{{}+}}", script.len()));
    s.send(script.as_bytes());
    s.send_line("");
    let r = sieve_read_response(&mut s);
    assert!(r.last().unwrap().starts_with("OK"), "{r:?}");
    s.send_line("LISTSCRIPTS");
    let r = sieve_read_response(&mut s);
    assert!(r.iter().any(|l| l.starts_with("\"test\"")), "{r:?}");
    assert!(dc.home("alice").join("sieve").join("test.sieve").is_file());

    // TLS verification negatives: wrong CA, wrong name.
    let c = certs();
    assert!(Client::try_tls_with(dc.imaps, "localhost", &c.other_ca).is_err());
    assert!(Client::try_tls_with(dc.imaps, "wrong.example", &c.ca).is_err());
    assert!(Client::try_tls_with(dc.imaps, "127.0.0.1", &c.ca).is_ok());

    assert!(dc.log_text().contains("Login: user=<alice>"));
}

#[test]
fn dovecot_stops_on_drop() {
    let dc = Dovecot::start();
    let (port, dir) = (dc.imap, dc.dir.clone());
    drop(dc);
    assert!(!port_open(port), "port {port} still open");
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
#[should_panic(expected = "exited early")]
fn proxy_start_reports_early_exit() {
    // Whatever the binary's state, an invalid config must make `run` exit.
    let _p = Proxy::start_toml("this is [[[ not toml", &[free_port()]);
}

#[test]
fn client_sees_close() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let h = std::thread::spawn(move || {
        use std::io::Write;
        let (mut s, _) = l.accept().unwrap();
        s.write_all(b"hello\r\n{5}\r\nabcde").unwrap();
        std::thread::sleep(Duration::from_millis(100));
    });
    let mut c = Client::plain(port);
    assert_eq!(c.read_line(), "hello");
    assert_eq!(c.read_line(), "{5}");
    assert_eq!(c.read_exact(5), b"abcde");
    h.join().unwrap();
    assert!(c.is_closed());
}

#[test]
fn proxy_start_greet_and_terminate() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:{port}\"]\ntls = \"none\"\n\n[listener.backend]\n\
         host = \"127.0.0.1\"\nport = {}\n",
        dc.imap
    );
    let mut p = Proxy::start_toml(&toml, &[port]);
    assert!(p.config.as_ref().unwrap().is_file());
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    drop(c);
    p.signal_term();
    let status = p.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some(),
        "no exit after TERM; log:\n{}",
        p.log_text()
    );
}

/// A proxy that cannot start says why in the test's failure, also when its log goes to a file
/// of its own (`-F FILE`) rather than to its output.
#[test]
fn a_proxy_that_cannot_bind_shows_its_log_files_words() {
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let args: Vec<String> = [
        "perdition",
        "-f",
        "",
        "-P",
        "IMAP4",
        "--no_daemon",
        "-b",
        "127.0.0.1",
        "-l",
        &port.to_string(),
        "-s",
        "127.0.0.1",
        "-p",
        "1",
        "-F",
        &log.display().to_string(),
    ]
    .map(str::to_string)
    .to_vec();
    let failure = std::panic::catch_unwind(|| Proxy::start_args(&args, &[port]))
        .err()
        .expect("the proxy started on a port already taken");
    let message = failure
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && message.contains("Address already in use"),
        "{message}"
    );
}

/// The ports handed out lie outside the kernel's ephemeral range, and each is reserved for this
/// process: another process cannot take its lock.
#[test]
fn free_ports_are_outside_the_ephemeral_range_and_reserved() {
    let (low, high) = support::ports::ephemeral_range();
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    for port in ports {
        assert!(!(low..=high).contains(&port), "{port} in {low}-{high}");
        let me = nix::unistd::geteuid().as_raw();
        let lock = std::env::temp_dir()
            .join(format!("portcullis-test-ports-{me}"))
            .join(port.to_string());
        let other = std::process::Command::new("flock")
            .args(["-n", "-E", "75"])
            .arg(&lock)
            .arg("true")
            .status()
            .expect("run flock (util-linux)");
        assert_eq!(other.code(), Some(75), "{} not held", lock.display());
    }
}

/// A proxy listening on port 0 tells the test which port it got.
#[test]
fn a_proxy_on_port_zero_says_its_port() {
    let toml = "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\n\
                bind = [\"127.0.0.1:0\"]\n[listener.backend]\nhost = \"127.0.0.1:1\"\n";
    let (_proxy, ports) = Proxy::start_toml_anywhere(toml, 1);
    assert_eq!(ports.len(), 1);
    let mut c = Client::plain(ports[0]);
    c.expect_line("* OK");
}

/// `port_listening` reads the kernel's tables: true for a listener, false for a free port,
/// without connecting.
#[test]
fn port_listening_sees_listeners_only() {
    let port = free_port();
    assert!(!port_listening(port));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    assert!(port_listening(port));
    drop(listener);
    assert!(!port_listening(port));
}
