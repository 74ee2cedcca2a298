//! The server's behaviour under the conditions a mail admin meets in production: too many
//! clients, a back end that is down or slow, several listeners in one process, restarts,
//! clients that never log in or fall silent, and TLS towards the back end. Native TOML
//! configuration throughout.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::*;

/// `[log]` to the proxy's captured output, then `limits` (TOML lines, may be empty).
fn head(limits: &str) -> String {
    format!("[log]\ndestination = \"-\"\n\n[limits]\n{limits}\n")
}

/// One IMAP `[[listener]]` block. `tls` is the listener's tls mode; cert and key are added
/// for TLS listeners. `backend` holds extra `[listener.backend]` lines.
fn imap_listener(binds: &[String], tls: &str, backend_port: u16, backend: &str) -> String {
    let c = certs();
    let files = if tls == "none" {
        String::new()
    } else {
        format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        )
    };
    let binds: Vec<String> = binds.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "\n[[listener]]\nprotocol = \"imap\"\nbind = [{}]\ntls = \"{tls}\"\n{files}\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend_port}\n{backend}\n",
        binds.join(", ")
    )
}

fn v4(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// LOGIN and return the tagged answer, whatever it is.
fn login_answer(c: &mut Client, tag: &str, user: &str, pass: &str) -> String {
    c.send_line(&format!("{tag} LOGIN {user} {pass}"));
    c.read_until_tagged(tag).pop().unwrap()
}

/// The log line of `kind` ("Auth:", "Closing session:", ...) for the client at `client`.
fn log_line_for(proxy: &Proxy, kind: &str, client: SocketAddr) -> Option<String> {
    let needle = format!("{kind} 127.0.0.1:{}->", client.port());
    proxy
        .log_text()
        .lines()
        .find(|l| l.contains(&needle))
        .map(str::to_string)
}

fn wait_log_line_for(proxy: &Proxy, kind: &str, client: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = log_line_for(proxy, kind, client) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} line for {client}; log:\n{}",
            proxy.log_text()
        );
        sleep(Duration::from_millis(25));
    }
}

/// A logged-in session really reaches alice's mailbox.
fn assert_inbox(c: &mut Client) {
    c.send_line("s EXAMINE INBOX");
    let lines = c.read_until_tagged("s");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// Connection limit
// ---------------------------------------------------------------------------------------------

#[test]
fn connection_limit_turns_away_the_extra_client_and_keeps_serving() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = head("connection_limit = 2") + &imap_listener(&[v4(port)], "none", dc.imap, "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c1 = Client::plain(port);
    c1.expect_line("* OK");
    let mut c2 = Client::plain(port);
    c2.expect_line("* OK");

    // The third is told why, then closed.
    let mut c3 = Client::plain(port);
    let bye = c3.expect_line("* BYE");
    assert!(c3.is_closed(), "over-limit client not closed after {bye:?}");

    // The first two are unaffected.
    imap_login(&mut c2, "a", "bob", "bobpw");

    // One leaves; its place is free again. (Perdition 2.2's listener died at this point.)
    drop(c1);
    let mut c4 = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while c4.is_none() {
        let mut c = Client::plain(port);
        let first = c.read_line();
        if first.starts_with("* OK") {
            c4 = Some(c);
        } else {
            assert!(first.starts_with("* BYE"), "{first:?}");
            assert!(
                Instant::now() < deadline,
                "slot not freed 5 s after a client left; log:\n{}",
                proxy.log_text()
            );
            sleep(Duration::from_millis(100));
        }
    }
    let mut c4 = c4.unwrap();
    imap_login(&mut c4, "a", "alice", "alicepw");
    assert_inbox(&mut c4);
    assert!(
        proxy.log_text().contains("Connection limit"),
        "refusal not logged; log:\n{}",
        proxy.log_text()
    );
}

#[test]
fn logged_out_session_frees_its_slot_even_if_the_client_lingers() {
    // A client that reads the BYE of its LOGOUT but keeps its socket open (a buggy mail app, a
    // hung phone): the back end has ended the session, so the proxy must end it too, log it,
    // and give its place under connection_limit to the next user, as Perdition does.
    let dc = Dovecot::start();
    let port = free_port();
    let toml = head("connection_limit = 1") + &imap_listener(&[v4(port)], "none", dc.imap, "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c1 = Client::plain(port);
    c1.expect_line("* OK");
    imap_login(&mut c1, "a", "alice", "alicepw");
    c1.send_line("z LOGOUT");
    c1.expect_line("* BYE");
    c1.expect_line("z OK");
    assert!(c1.is_closed(), "no EOF after LOGOUT");
    // c1 is still open on this side.
    wait_log_line_for(&proxy, "Closing session:", c1.local_addr());

    let mut c2 = Client::plain(port);
    let greeting = c2.read_line();
    assert!(
        greeting.starts_with("* OK"),
        "a finished session still holds the only slot: {greeting:?}"
    );
    imap_login(&mut c2, "a", "bob", "bobpw");
    drop(c1);
}

// ---------------------------------------------------------------------------------------------
// Back end down or slow
// ---------------------------------------------------------------------------------------------

#[test]
fn back_end_down_answers_unavailable_and_keeps_the_client() {
    let port = free_port();
    let dead = free_port(); // nothing listens there
    let toml = head("") + &imap_listener(&[v4(port)], "none", dead, "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let answer = login_answer(&mut c, "a", "alice", "alicepw");
    assert!(answer.starts_with("a NO [UNAVAILABLE] "), "{answer}");
    // The client may try again later on the same connection.
    c.send_line("b NOOP");
    c.expect_line("b OK");
    let auth = wait_log_line_for(&proxy, "Auth:", c.local_addr());
    assert!(
        auth.ends_with(&format!(
            "server=\"127.0.0.1:{dead}\" protocol=IMAP4 server-secure=plaintext \
             status=\"failed: Could not connect to server\""
        )),
        "{auth}"
    );
}

#[test]
fn back_end_that_never_answers_times_out() {
    // Accepts connections and never says a word.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in mute.incoming().flatten() {
            held.push(s);
        }
    });
    let port = free_port();
    let toml = head("backend_timeout = 2") + &imap_listener(&[v4(port)], "none", mute_port, "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let start = Instant::now();
    let answer = login_answer(&mut c, "a", "alice", "alicepw");
    let took = start.elapsed();
    assert!(answer.starts_with("a NO [UNAVAILABLE] "), "{answer}");
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(6),
        "answer after {took:?}, backend_timeout is 2 s"
    );
    let auth = wait_log_line_for(&proxy, "Auth:", c.local_addr());
    assert!(auth.contains("status=\"failed: "), "{auth}");
    c.send_line("b NOOP");
    c.expect_line("b OK");
}

#[test]
fn back_end_without_the_required_starttls_is_tls_not_present() {
    // An IMAP server that does not offer STARTTLS (Dovecot with `ssl = no` says the same).
    let plain_only = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_port = plain_only.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in plain_only.incoming().flatten() {
            let _ = s.write_all(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plaintext only\r\n");
            std::thread::sleep(Duration::from_secs(2));
        }
    });
    let port = free_port();
    let toml = head("") + &imap_listener(&[v4(port)], "none", backend_port, "tls = \"starttls\"");
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let answer = login_answer(&mut c, "a", "alice", "alicepw");
    assert!(answer.starts_with("a NO [UNAVAILABLE] "), "{answer}");
    let auth = wait_log_line_for(&proxy, "Auth:", c.local_addr());
    assert!(
        auth.contains("server-secure=starttls status=\"failed: TLS not present\""),
        "{auth}"
    );
}

// ---------------------------------------------------------------------------------------------
// Several listeners
// ---------------------------------------------------------------------------------------------

/// A plain IMAP login over any address family (the harness Client speaks 127.0.0.1 only).
/// Returns the greeting and the LOGIN answer.
fn raw_imap_login(addr: SocketAddr, user: &str, pass: &str) -> (String, String, SocketAddr) {
    let sock = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let local = sock.local_addr().unwrap();
    let mut w = sock.try_clone().unwrap();
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    let greeting = line.trim_end().to_string();
    write!(w, "a LOGIN {user} {pass}\r\n").unwrap();
    let answer = loop {
        line.clear();
        assert!(
            r.read_line(&mut line).expect("answer") > 0,
            "EOF from {addr}"
        );
        if line.starts_with("a ") {
            break line.trim_end().to_string();
        }
    };
    write!(w, "z LOGOUT\r\n").unwrap();
    (greeting, answer, local)
}

/// The loopback address for the third bind: `[::1]` where IPv6 is available (it is on the
/// machines this was written on). Where it is not, 127.0.0.2 stands in, so that the test
/// still proves a third address in the same process, only not an IPv6 one.
fn third_loopback(port: u16) -> (String, SocketAddr) {
    if TcpListener::bind("[::1]:0").is_ok() {
        (
            format!("[::1]:{port}"),
            format!("[::1]:{port}").parse().unwrap(),
        )
    } else {
        (
            format!("127.0.0.2:{port}"),
            format!("127.0.0.2:{port}").parse().unwrap(),
        )
    }
}

#[test]
fn one_process_serves_several_listeners_and_addresses() {
    let dc = Dovecot::start();
    let (imaps, imap, extra_port) = (free_port(), free_port(), free_port());
    let (extra_bind, extra_addr) = third_loopback(extra_port);
    let toml = head("")
        + &imap_listener(&[v4(imaps)], "implicit", dc.imap, "")
        + &imap_listener(&[v4(imap), extra_bind], "starttls", dc.imap, "");
    let proxy = Proxy::start_toml(&toml, &[imaps, imap, extra_port]);

    // Implicit TLS.
    let mut t = Client::tls(imaps);
    t.expect_line("* OK");
    imap_login(&mut t, "a", "alice", "alicepw");
    assert_inbox(&mut t);

    // Plain with STARTTLS.
    let mut s = Client::plain(imap);
    let greeting = s.expect_line("* OK");
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    s.send_line("t STARTTLS");
    s.expect_line("t OK");
    s.starttls();
    imap_login(&mut s, "a", "bob", "bobpw");

    // The same listener on its second address.
    let (greeting, answer, local) = raw_imap_login(extra_addr, "carol@example.org", "carolpw");
    assert!(greeting.starts_with("* OK"), "{greeting}");
    assert!(greeting.contains("STARTTLS"), "{greeting}");
    assert!(answer.starts_with("a OK"), "{answer}");
    // Perdition writes IPv6 addresses without brackets.
    let connect = format!(
        "Connect:  {}:{}->{}:{}",
        local.ip(),
        local.port(),
        extra_addr.ip(),
        extra_port
    );
    assert!(
        proxy.wait_log(&connect, Duration::from_secs(5)),
        "no {connect:?}; log:\n{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    for (user, secure) in [
        ("alice", "client-secure=ssl"),
        ("bob", "client-secure=starttls"),
        ("carol@example.org", "client-secure=plaintext"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(secure)
                && l.contains(&format!("authentication_id=\"{user}\""))
                && l.ends_with("status=\"ok\"")),
            "no ok Auth line for {user} with {secure}; log:\n{log}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Restart and timeouts
// ---------------------------------------------------------------------------------------------

#[test]
fn sigterm_says_bye_to_waiting_clients_and_exits_cleanly() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = head("shutdown_grace = 3") + &imap_listener(&[v4(port)], "none", dc.imap, "");
    let mut proxy = Proxy::start_toml(&toml, &[port]);

    let mut waiting = Client::plain(port);
    waiting.expect_line("* OK");
    let mut busy = Client::plain(port);
    busy.expect_line("* OK");
    imap_login(&mut busy, "a", "alice", "alicepw");

    let start = Instant::now();
    proxy.signal_term();
    // The client that has not logged in yet is told, then closed.
    let bye = waiting.expect_line("* BYE");
    assert!(waiting.is_closed(), "not closed after {bye:?}");
    // No new connections once shutting down.
    sleep(Duration::from_millis(300));
    assert!(!port_open(port), "still accepting after SIGTERM");
    // The logged-in user gets the grace period, then the process ends, successfully.
    let status = proxy
        .wait_exit(Duration::from_secs(3 + 5))
        .unwrap_or_else(|| panic!("still running; log:\n{}", proxy.log_text()));
    let took = start.elapsed();
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        proxy.log_text()
    );
    assert!(
        took >= Duration::from_millis(2500),
        "exited after {took:?}, before the 3 s grace for the logged-in session"
    );
}

#[test]
fn login_timeout_says_bye_to_a_client_that_never_logs_in() {
    let port = free_port();
    let toml = head("login_timeout = 2") + &imap_listener(&[v4(port)], "none", free_port(), "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c = Client::plain(port);
    let start = Instant::now();
    c.expect_line("* OK");
    let bye = c.expect_line("* BYE");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took <= Duration::from_secs(6),
        "{bye:?} after {took:?}, login_timeout is 2 s"
    );
    assert!(c.is_closed(), "not closed after {bye:?}");
    let line = wait_log_line_for(
        &proxy,
        "Fatal Error: Timeout reading authentication information from client",
        c.local_addr(),
    );
    assert!(
        line.ends_with(&format!("->127.0.0.1:{port}: Exiting child")),
        "{line}"
    );
    assert!(
        log_line_for(&proxy, "Auth:", c.local_addr()).is_none(),
        "{}",
        proxy.log_text()
    );
}

#[test]
fn idle_timeout_closes_a_silent_logged_in_session() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = head("idle_timeout = 2") + &imap_listener(&[v4(port)], "none", dc.imap, "");
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    // Activity keeps the session alive past the timeout...
    for tag in ["n1", "n2", "n3"] {
        sleep(Duration::from_millis(1200));
        c.send_line(&format!("{tag} NOOP"));
        let last = c.read_until_tagged(tag).pop().unwrap();
        assert!(last.starts_with(&format!("{tag} OK")), "{last}");
    }
    // ...silence ends it.
    let silent = Instant::now();
    assert!(c.is_closed(), "session still open after 5 s of silence");
    let took = silent.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "closed after {took:?} of silence, idle_timeout is 2 s"
    );
    let closing = wait_log_line_for(&proxy, "Closing session:", c.local_addr());
    let log = proxy.log_text();
    let timeout_at = log.find("Timeout piping data.");
    let closing_at = log.find(&closing);
    assert!(
        timeout_at.is_some() && timeout_at < closing_at,
        "no 'Timeout piping data.' before {closing:?}; log:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS towards the back end
// ---------------------------------------------------------------------------------------------

/// Dovecot logs `, TLS,` in the Login line of an encrypted connection.
fn dovecot_saw_tls_login(dc: &Dovecot, user: &str) -> bool {
    let needle = format!("Login: user=<{user}>");
    dc.log_text()
        .lines()
        .any(|l| l.contains(&needle) && l.contains(", TLS"))
}

#[test]
fn back_end_tls_implicit_and_starttls_with_verified_certificates() {
    let dc = Dovecot::start();
    let ca = certs().ca.display().to_string();
    let other_ca = certs().other_ca.display().to_string();
    let (p_imaps, p_noverify, p_starttls) = (free_port(), free_port(), free_port());
    let toml = head("")
        + &imap_listener(
            &[v4(p_imaps)],
            "none",
            dc.imaps,
            &format!("tls = \"implicit\"\nca_file = \"{ca}\"\n"),
        )
        + &imap_listener(
            &[v4(p_noverify)],
            "none",
            dc.imaps,
            &format!("tls = \"implicit\"\nca_file = \"{other_ca}\"\nverify = false\n"),
        )
        + &imap_listener(
            &[v4(p_starttls)],
            "none",
            dc.imap,
            &format!("tls = \"starttls\"\nca_file = \"{ca}\"\n"),
        );
    let proxy = Proxy::start_toml(&toml, &[p_imaps, p_noverify, p_starttls]);

    for (port, user, pass, secure) in [
        (p_imaps, "alice", "alicepw", "ssl"),
        (p_noverify, "bob", "bobpw", "ssl"),
        (p_starttls, "carol@example.org", "carolpw", "starttls"),
    ] {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        let answer = login_answer(&mut c, "a", user, pass);
        assert!(
            answer.starts_with("a OK"),
            "{user} via {port}: {answer}; log:\n{}",
            proxy.log_text()
        );
        c.send_line("b LIST \"\" INBOX");
        let last = c.read_until_tagged("b").pop().unwrap();
        assert!(last.starts_with("b OK"), "{last}");
        let auth = wait_log_line_for(&proxy, "Auth:", c.local_addr());
        assert!(
            auth.ends_with(&format!("server-secure={secure} status=\"ok\"")),
            "{auth}"
        );
        assert!(
            dovecot_saw_tls_login(&dc, user),
            "Dovecot did not see an encrypted login for {user}:\n{}",
            dc.log_text()
        );
    }
}

#[test]
fn back_end_tls_refuses_an_unverified_certificate_or_wrong_name() {
    let dc = Dovecot::start();
    let ca = certs().ca.display().to_string();
    let other_ca = certs().other_ca.display().to_string();
    let (p_wrong_ca, p_wrong_name, p_starttls_wrong_ca) = (free_port(), free_port(), free_port());
    let toml = head("")
        + &imap_listener(
            &[v4(p_wrong_ca)],
            "none",
            dc.imaps,
            &format!("tls = \"implicit\"\nca_file = \"{other_ca}\"\n"),
        )
        + &imap_listener(
            &[v4(p_wrong_name)],
            "none",
            dc.imaps,
            &format!("tls = \"implicit\"\nca_file = \"{ca}\"\nserver_name = \"wrong.example\"\n"),
        )
        + &imap_listener(
            &[v4(p_starttls_wrong_ca)],
            "none",
            dc.imap,
            &format!("tls = \"starttls\"\nca_file = \"{other_ca}\"\n"),
        );
    let proxy = Proxy::start_toml(&toml, &[p_wrong_ca, p_wrong_name, p_starttls_wrong_ca]);

    for port in [p_wrong_ca, p_wrong_name, p_starttls_wrong_ca] {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        let answer = login_answer(&mut c, "a", "alice", "alicepw");
        assert!(
            answer.starts_with("a NO [UNAVAILABLE] "),
            "listener {port}: {answer}"
        );
        let auth = wait_log_line_for(&proxy, "Auth:", c.local_addr());
        assert!(
            auth.ends_with("status=\"failed: Connection Negotiation Failure\""),
            "{auth}"
        );
        // The client may still try again later.
        c.send_line("b NOOP");
        c.expect_line("b OK");
    }
    // The password never travelled to the unverified server.
    assert!(!dc.log_text().contains("user=<alice>"), "{}", dc.log_text());
}

#[test]
fn ctrl_c_stops_the_server_like_sigterm() {
    let port = free_port();
    let toml = head("shutdown_grace = 1") + &imap_listener(&[v4(port)], "none", free_port(), "");
    let mut proxy = Proxy::start_toml(&toml, &[port]);
    let mut waiting = Client::plain(port);
    waiting.expect_line("* OK");
    proxy.signal("INT");
    waiting.expect_line("* BYE");
    let status = proxy
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("still running after SIGINT; log:\n{}", proxy.log_text()));
    assert!(status.success(), "exit {status}");
}

#[test]
fn a_client_that_vanishes_after_login_ends_the_back_end_session_too() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = head("") + &imap_listener(&[v4(port)], "none", dc.imap, "");
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    c.send_line("b SELECT INBOX");
    c.read_until_tagged("b");
    let me = c.local_addr();
    drop(c); // no LOGOUT: the laptop lid closes
    let line = wait_log_line_for(&proxy, "Closing session:", me);
    assert!(line.contains(r#"authentication_id="alice""#), "{line}");
    // Dovecot saw its side of the session end too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dc
        .log_text()
        .lines()
        .any(|l| l.contains("imap(alice)") && l.contains("Disconnected"))
    {
        assert!(Instant::now() < deadline, "{}", dc.log_text());
        sleep(Duration::from_millis(100));
    }
}

#[test]
fn log_destination_plus_writes_to_stderr_and_minus_to_stdout() {
    for (destination, logged_on_stderr) in [("+", true), ("-", false)] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let toml = head("").replace(
            "destination = \"-\"",
            &format!("destination = \"{destination}\""),
        ) + &imap_listener(&[v4(port)], "none", free_port(), "");
        let config = dir.path().join("p.toml");
        std::fs::write(&config, toml).unwrap();
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let mut child = std::process::Command::new(portcullis_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        assert!(wait_for_port(port, Duration::from_secs(10)));
        let logged = if logged_on_stderr { &err } else { &out };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !std::fs::read_to_string(logged)
            .unwrap_or_default()
            .contains("Connect:")
            && Instant::now() < deadline
        {
            sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        let (out, err) = (
            std::fs::read_to_string(&out).unwrap(),
            std::fs::read_to_string(&err).unwrap(),
        );
        let (with, without) = if logged_on_stderr {
            (&err, &out)
        } else {
            (&out, &err)
        };
        assert!(
            with.contains("Connect:  127.0.0.1:"),
            "{destination}: {with:?}"
        );
        assert!(!without.contains("Connect:"), "{destination}: {without:?}");
    }
}

#[test]
fn sighup_reopens_the_log_file_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let port = free_port();
    let toml = head("").replace(
        "destination = \"-\"",
        &format!("destination = \"{}\"", log.display()),
    ) + &imap_listener(&[v4(port)], "none", free_port(), "");
    let proxy = Proxy::start_toml(&toml, &[port]);
    // What logrotate does: move the file away, then signal.
    let rotated = dir.path().join("mail.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "no new log file after SIGHUP");
        sleep(Duration::from_millis(50));
    }
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let me = c.local_addr();
    drop(c);
    let needle = format!("Connect:  127.0.0.1:{}->", me.port());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&needle)
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        sleep(Duration::from_millis(50));
    }
    assert!(!std::fs::read_to_string(&rotated).unwrap().contains(&needle));
    // Still running: HUP did not kill it.
    assert!(port_open(port));
}
