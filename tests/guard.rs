//! The brute-force guard seen from the network: logins after failures tried late, an address that
//! keeps failing banned on every listener and told so, other addresses untouched, trusted
//! networks exempt, a repeated wrong password counted once. Each test uses its own 127.0.0.x
//! source addresses and its own proxy, so no penalty leaks between tests.

mod support;

use std::time::Instant;

use support::*;

fn config(imap: u16, pop3: u16, dc: &Dovecot, guard: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[limits]\nmax_failed_logins = 10\n\n[guard]\n{guard}\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{imap}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n\n\
         [[listener]]\nprotocol = \"pop3\"\nbind = [\"127.0.0.1:{pop3}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        dc.imap, dc.pop3
    )
}

/// A client connecting from `source`.
fn client_from(source: &str, port: u16) -> Client {
    Client::from_stream(connect_from(source, port).expect("connect"))
}

/// `LOGIN` with a wrong password; the tagged answer.
fn wrong_login(c: &mut Client, tag: &str, password: &str) -> String {
    c.send_line(&format!("{tag} LOGIN alice {password}"));
    c.read_until_tagged(tag).last().unwrap().clone()
}

#[test]
fn failures_are_answered_late_then_banned_on_every_listener() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let guard = "penalty_initial_ms = 600\npenalty_max_ms = 1200\nban_after = 3\nban_ms = 60000";
    let proxy = Proxy::start_toml(&config(imap, pop3, &dc, guard), &[imap, pop3]);

    let mut c = client_from("127.0.0.3", imap);
    c.expect_line("* OK");
    assert!(wrong_login(&mut c, "a", "wrong1").starts_with("a NO"));
    // The next try waits before it is even tried.
    let started = Instant::now();
    assert!(wrong_login(&mut c, "b", "wrong2").starts_with("b NO"));
    let second = started.elapsed();
    assert!(
        second.as_millis() >= 550,
        "the second try was answered after {second:?}, before the 600 ms penalty"
    );
    // The third failure is answered, then the client is told why it is being let go.
    assert!(wrong_login(&mut c, "c", "wrong3").starts_with("c NO"));
    c.expect_line("* BYE [UNAVAILABLE] Too many failed logins");
    assert!(c.is_closed());

    // Back again, on either listener: turned away at once.
    let mut again = client_from("127.0.0.3", imap);
    again.expect_line("* BYE [UNAVAILABLE] Too many failed logins");
    let mut pop = client_from("127.0.0.3", pop3);
    pop.expect_line("-ERR [SYS/TEMP] Too many failed logins");

    // Someone else is not touched by it.
    let mut other = client_from("127.0.0.4", imap);
    other.expect_line("* OK");
    imap_login(&mut other, "a", "alice", "alicepw");

    assert!(proxy.wait_log("Guard: 127.0.0.3:", READ_TIMEOUT));
    let log = proxy.log_text();
    assert!(
        log.contains("delayed 600 ms after 1 failed logins"),
        "{log}"
    );
    assert!(
        log.contains("delayed 1200 ms after 2 failed logins"),
        "{log}"
    );
    assert!(
        log.contains("banned for 60 s after 3 failed logins"),
        "{log}"
    );
    assert!(log.contains("refused: banned for"), "{log}");
    assert!(!log.contains("Guard: 127.0.0.4:"), "{log}");
}

#[test]
fn a_repeated_wrong_password_counts_once_and_a_good_login_forgives() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let guard = "penalty_initial_ms = 50\npenalty_max_ms = 100\nban_after = 2\nban_ms = 60000";
    let proxy = Proxy::start_toml(&config(imap, pop3, &dc, guard), &[imap, pop3]);

    // A phone retrying an old password, over and over: one failure, never a ban.
    for tag in ["a", "b", "c", "d"] {
        let mut c = client_from("127.0.0.5", imap);
        c.expect_line("* OK");
        assert!(wrong_login(&mut c, tag, "oldpassword").starts_with(&format!("{tag} NO")));
    }
    // A different wrong password would be the second; a good login first forgives the one.
    let mut c = client_from("127.0.0.5", imap);
    c.expect_line("* OK");
    imap_login(&mut c, "g", "alice", "alicepw");
    let mut c = client_from("127.0.0.5", imap);
    c.expect_line("* OK");
    assert!(wrong_login(&mut c, "e", "another").starts_with("e NO"));
    let mut c = client_from("127.0.0.5", imap);
    c.expect_line("* OK");
    let log = proxy.log_text();
    assert!(!log.contains("banned"), "{log}");
    assert!(!log.contains("after 2 failed logins"), "{log}");
}

#[test]
fn trusted_networks_are_never_delayed_nor_banned() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let guard = "penalty_initial_ms = 5000\nban_after = 1\ntrusted = [\"127.0.0.6/32\"]";
    let proxy = Proxy::start_toml(&config(imap, pop3, &dc, guard), &[imap, pop3]);
    for tag in ["a", "b", "c"] {
        let mut c = client_from("127.0.0.6", imap);
        c.expect_line("* OK");
        let started = Instant::now();
        assert!(wrong_login(&mut c, tag, tag).starts_with(&format!("{tag} NO")));
        assert!(started.elapsed().as_millis() < 5000);
    }
    assert!(!proxy.log_text().contains("Guard:"));
}

/// Perdition mode has no guard, as Perdition has none: failures are answered without delay
/// and never banned.
#[test]
fn perdition_mode_has_no_guard() {
    let dc = Dovecot::start();
    let port = free_port();
    let args: Vec<String> = [
        "perdition",
        "-P",
        "IMAP4",
        "--log_facility",
        "-",
        "--listen_port",
        &port.to_string(),
        "--bind_address",
        "127.0.0.1",
        "-s",
        &format!("127.0.0.1:{}", dc.imap),
        "--no_daemon",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proxy = Proxy::start_args(&args, &[port]);
    for tag in ["a", "b", "c"] {
        let mut c = client_from("127.0.0.7", port);
        c.expect_line("* OK");
        assert!(wrong_login(&mut c, tag, tag).starts_with(&format!("{tag} NO")));
    }
    assert!(!proxy.log_text().contains("Guard:"));
}

/// Credential stuffing: one user tried from many addresses, each under the per-address limits.
/// The user's next logins wait before they are tried, except from an address the user logged
/// in from, so the real user is never slowed.
#[test]
fn a_user_failing_from_many_addresses_waits_except_from_its_own() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let guard = "penalty_initial_ms = 300\npenalty_max_ms = 600\nban_after = 0\n\
                 user_failures_before_wait = 2";
    let proxy = Proxy::start_toml(&config(imap, pop3, &dc, guard), &[imap, pop3]);
    // The real user, from home.
    let mut c = client_from("127.0.0.10", imap);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    // Two attackers, one wrong password each.
    for source in ["127.0.0.11", "127.0.0.12"] {
        let mut c = client_from(source, imap);
        c.expect_line("* OK");
        assert!(wrong_login(&mut c, "x", "guess").starts_with("x NO"));
    }
    // A third address waits before its attempt is even tried.
    let mut c = client_from("127.0.0.13", imap);
    c.expect_line("* OK");
    assert!(wrong_login(&mut c, "y", "guess2").starts_with("y NO"));
    // Home does not.
    let mut c = client_from("127.0.0.10", imap);
    c.expect_line("* OK");
    imap_login(&mut c, "b", "alice", "alicepw");
    assert!(proxy.wait_log("Guard: 127.0.0.13:", READ_TIMEOUT));
    let log = proxy.log_text();
    assert!(
        log.contains("user=\"alice\" waits 300 ms: failing from many addresses"),
        "{log}"
    );
    assert!(!log.contains("Guard: 127.0.0.10:"), "{log}");
}

/// One address may hold only so many connections at once; others are not affected, and a
/// connection that ends frees its slot.
#[test]
fn connections_per_address_are_limited() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let guard = "max_connections_per_address = 2";
    let proxy = Proxy::start_toml(&config(imap, pop3, &dc, guard), &[imap, pop3]);
    let mut first = client_from("127.0.0.20", imap);
    first.expect_line("* OK");
    let mut second = client_from("127.0.0.20", pop3); // every listener counts
    second.expect_line("+OK");
    let mut third = client_from("127.0.0.20", imap);
    third.expect_line("* BYE [UNAVAILABLE] Too many connections from your address");
    let mut other = client_from("127.0.0.21", imap);
    other.expect_line("* OK");
    first.send_line("a LOGOUT");
    first.read_until_tagged("a");
    // The slot is free once the proxy has seen the end of the session.
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        let mut again = client_from("127.0.0.20", imap);
        if again.read_line().starts_with("* OK") {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(proxy.log_text().contains("Guard: 127.0.0.20:"));
    assert!(proxy
        .log_text()
        .contains("refused: 2 connections open from this address"));
}

/// A process-wide rate of new connections: a burst beyond it is turned away right after accept.
#[test]
fn new_connections_beyond_the_rate_are_turned_away() {
    let dc = Dovecot::start();
    let (imap, pop3) = (free_port(), free_port());
    let guard = "new_connections_per_second = 1";
    let proxy = Proxy::start_toml(&config(imap, pop3, &dc, guard), &[imap, pop3]);
    // Free_port's probe and the harness's readiness check may have used the burst already;
    // of ten connections at once, some must be refused.
    let answers: Vec<String> = (0..10)
        .map(|i| client_from(&format!("127.0.0.{}", 30 + i), imap).read_line())
        .collect();
    assert!(
        answers
            .iter()
            .any(|a| a.starts_with("* BYE [UNAVAILABLE] Too many connections")),
        "{answers:?}"
    );
    assert!(proxy
        .log_text()
        .contains("refused: new connections over the process-wide rate"));
}

/// `check` shows the configuration, but never the fleet's shared secret.
#[test]
fn check_does_not_show_the_store_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("portcullis.toml");
    let secret = "a-fleet-secret-nobody-may-read";
    std::fs::write(
        &path,
        format!(
            "[guard]\nstore = \"redis://127.0.0.1:1\"\nstore_secret = \"{secret}\"\n\n\
             [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\n\
             [listener.backend]\nhost = \"127.0.0.1\"\n"
        ),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", path.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("store = \"redis://127.0.0.1:1\""), "{text}");
    assert!(!text.contains(secret), "the secret is shown:\n{text}");
}
