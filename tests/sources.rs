//! Source addresses towards the back ends (`source = [...]`, Dovecot's `login_source_ips`):
//! logins leave from the configured local addresses in turn, as a real Dovecot sees them; a
//! source the host does not have makes the login unavailable, not wrong, and the log and
//! `check --probe` name it. Loopback addresses other than 127.0.0.1 need no setup on Linux.

mod support;

use std::time::{Duration, Instant};

use support::*;

/// A proxy with one IMAP listener on a port of the kernel's choice, in front of `dovecot`,
/// its back-end connections coming from `source` (a TOML array). The client's address is not
/// forwarded, so that Dovecot's `rip=` is the proxy's own source address.
fn start(dovecot: &Dovecot, source: &str) -> (Proxy, u16) {
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:0\"]\n\n[listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n\
         forward_client = \"none\"\nsource = {source}\n",
        dovecot.imap
    );
    let (proxy, ports) = Proxy::start_toml_anywhere(&toml, 1);
    (proxy, ports[0])
}

/// How many of Dovecot's login lines for alice name `source` as the address it came from.
fn logins_from(dovecot: &Dovecot, source: &str) -> usize {
    let line = format!("Login: user=<alice>, method=PLAIN, rip={source},");
    dovecot.log_text().matches(&line).count()
}

/// Waits until Dovecot's log has `n` login lines for alice (its log process writes them a
/// moment after the client's OK); false after `READ_TIMEOUT`.
fn wait_for_logins(dovecot: &Dovecot, n: usize) -> bool {
    let deadline = Instant::now() + READ_TIMEOUT;
    while dovecot.log_text().matches("Login: user=<alice>,").count() < n {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    true
}

#[test]
fn logins_leave_from_each_source_in_turn() {
    let dovecot = Dovecot::start();
    let (proxy, port) = start(&dovecot, r#"["127.0.0.2", "127.0.0.3"]"#);
    let _logs = LogsOnPanic(|| proxy.everything_logged() + "\ndovecot:\n" + &dovecot.log_text());
    for tag in ["a", "b", "c", "d"] {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        imap_login(&mut c, tag, "alice", "alicepw");
        c.send_line("z LOGOUT");
        c.expect_line("* BYE");
    }
    assert!(
        wait_for_logins(&dovecot, 4),
        "Dovecot logged fewer than 4 logins"
    );
    // Two from each address: spread evenly, and none from the kernel's choice, 127.0.0.1.
    let from = |source| logins_from(&dovecot, source);
    assert_eq!(
        (from("127.0.0.2"), from("127.0.0.3"), from("127.0.0.1")),
        (2, 2, 0)
    );
}

#[test]
fn a_source_the_host_does_not_have_makes_logins_unavailable_and_is_named() {
    let dovecot = Dovecot::start();
    // 192.0.2.1 (TEST-NET-1) is on no interface of this host.
    let (proxy, port) = start(&dovecot, r#"["192.0.2.1"]"#);
    let _logs = LogsOnPanic(|| proxy.everything_logged() + "\ndovecot:\n" + &dovecot.log_text());
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let answer = c.read_until_tagged("a").last().unwrap().clone();
    // Try later, not a wrong password: the client keeps its password and comes back.
    assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
    assert!(
        proxy.wait_log("cannot bind the source address 192.0.2.1", READ_TIMEOUT),
        "the log does not name the source"
    );
    assert!(proxy
        .log_text()
        .contains("status=\"failed: Could not connect to server\""));
    // Nothing reached Dovecot.
    assert!(!dovecot.log_text().contains("Login: user=<alice>"));

    // `check --probe` connects the same way, and says the same.
    let config = proxy.config.as_ref().unwrap().to_str().unwrap();
    let out = run_portcullis(&["check", "--config", config, "--probe"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("BROKEN: unreachable: cannot bind the source address 192.0.2.1"),
        "{said}"
    );
}
