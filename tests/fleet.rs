//! A fleet: HAProxy in front of two Portcullis instances (`send-proxy-v2`), their guards
//! sharing failures and bans through Debian's `redis-server`. The client's address reaches
//! both proxies' logs and Dovecot's; guesses spread over both instances add up to one ban, and
//! the ban holds on both. With the store down, logins go on and the log says so.

mod support;

use std::time::Duration;

use support::haproxy::HaProxy;
use support::redis::{key_prefix, redis_url, Redis};
use support::*;

/// An IMAP listener behind a balancer on `port`, forwarding the client to Dovecot in an ID,
/// its guard sharing state through `store` under `prefix`.
fn instance(port: u16, dc: &Dovecot, store: &str, prefix: &str, guard: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[guard]\nstore = \"{store}\"\nstore_prefix = \"{prefix}\"\n\
         {guard}\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         proxy_protocol = true\nproxy_trusted = [\"127.0.0.1\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\nforward_client = \"id\"\n",
        dc.imap
    )
}

fn client_from(source: &str, port: u16) -> Client {
    Client::from_stream(connect_from(source, port).expect("connect"))
}

/// One wrong password on a fresh connection through the balancer; the tagged answer.
fn one_wrong_login(front: u16, source: &str, password: &str) -> String {
    let mut c = client_from(source, front);
    c.expect_line("* OK");
    c.send_line(&format!("a LOGIN alice {password}"));
    c.read_until_tagged("a").last().unwrap().clone()
}

#[test]
fn behind_haproxy_a_ban_earned_through_one_instance_holds_on_the_other() {
    let dc = Dovecot::start();
    let (store, prefix) = (redis_url(), key_prefix());
    let guard = "penalty_initial_ms = 20\npenalty_max_ms = 40\nban_after = 3\nban_ms = 60000";
    // Each instance on port 0: the kernel's choice, bound at once, read from its log.
    let (one, p1) = Proxy::start_toml_anywhere(&instance(0, &dc, store, &prefix, guard), 1);
    let (two, p2) = Proxy::start_toml_anywhere(&instance(0, &dc, store, &prefix, guard), 1);
    let (p1, p2) = (p1[0], p2[0]);
    let haproxy = HaProxy::start(&[p1, p2]);

    // A good user, twice through the balancer (one login on each instance): both logs and
    // Dovecot's name the client, not HAProxy and not the proxies.
    for tag in ["a", "b"] {
        let mut c = client_from("127.0.0.3", haproxy.port);
        c.expect_line("* OK");
        imap_login(&mut c, tag, "alice", "alicepw");
    }
    for proxy in [&one, &two] {
        assert!(
            proxy.wait_log("Auth: 127.0.0.3:", READ_TIMEOUT),
            "{}",
            proxy.log_text()
        );
    }
    assert!(
        dc.wait_log(
            "Login: user=<alice>, method=PLAIN, rip=127.0.0.3",
            READ_TIMEOUT
        ),
        "{}",
        dc.log_text()
    );

    // Three guesses from 127.0.0.4, taking turns on the two instances: neither saw three,
    // the fleet did, and the third earns the ban.
    for n in 1..=3 {
        let answer = one_wrong_login(haproxy.port, "127.0.0.4", &format!("guess{n}"));
        assert!(answer.starts_with("a NO"), "{answer}");
    }
    let banned_by = |p: &Proxy| {
        p.log_text()
            .contains("banned for 60 s after 3 failed logins")
    };
    assert!(
        banned_by(&one) || banned_by(&two),
        "no ban:\n{}\n{}",
        one.log_text(),
        two.log_text()
    );
    // Back again, twice: turned away by either instance.
    for _ in 0..2 {
        let mut c = client_from("127.0.0.4", haproxy.port);
        c.expect_line("* BYE [UNAVAILABLE] Too many failed logins");
    }
    // And straight to each instance (speaking the balancer's PROXY header), whatever the
    // balancer's turns: banned on both, and both say why.
    for (port, proxy) in [(p1, &one), (p2, &two)] {
        let mut c = client_from("127.0.0.1", port);
        c.send(&proxy_v1("127.0.0.4"));
        c.expect_line("* BYE [UNAVAILABLE] Too many failed logins");
        assert!(
            wait_line(proxy, &["Guard: 127.0.0.4:40000->", "refused: banned for"]),
            "an instance did not refuse the banned client:\n{}",
            proxy.log_text()
        );
    }
    // The good user is untouched by it.
    let mut c = client_from("127.0.0.3", haproxy.port);
    c.expect_line("* OK");
    imap_login(&mut c, "c", "alice", "alicepw");
}

/// Credential stuffing spread over the fleet: failures for one user from many addresses,
/// through both instances, make that user's next login from a stranger wait; the address the
/// user logged in from before, through the other instance, does not.
#[test]
fn a_users_failures_and_known_good_addresses_are_shared_by_the_fleet() {
    let dc = Dovecot::start();
    let (store, prefix) = (redis_url(), key_prefix());
    let guard = "penalty_initial_ms = 1500\npenalty_max_ms = 1500\nban_after = 0\n\
                 user_failures_before_wait = 2";
    let (p1, p2) = (free_port(), free_port());
    let _one = Proxy::start_toml(&instance(p1, &dc, store, &prefix, guard), &[p1]);
    let two = Proxy::start_toml(&instance(p2, &dc, store, &prefix, guard), &[p2]);
    // Each instance as the balancer would reach it: a PROXY header naming the client.
    let through = |port: u16, source: &str| {
        let mut c = client_from("127.0.0.1", port);
        c.send(&proxy_v1(source));
        c.expect_line("* OK");
        c
    };
    let guess = |port: u16, source: &str| {
        let mut c = through(port, source);
        c.send_line("a LOGIN alice guess");
        c.read_until_tagged("a").last().unwrap().clone()
    };

    // Home logs in through one; two strangers guess, one through each.
    imap_login(&mut through(p1, "192.0.2.20"), "a", "alice", "alicepw");
    assert!(guess(p2, "192.0.2.21").starts_with("a NO"));
    assert!(guess(p1, "192.0.2.22").starts_with("a NO"));
    // A third stranger, through two, waits before its try is even made...
    let started = std::time::Instant::now();
    assert!(guess(p2, "192.0.2.23").starts_with("a NO"));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "the stranger was not held back"
    );
    assert!(
        wait_line(&two, &["192.0.2.23", "user=\"alice\" waits 1500 ms"]),
        "{}",
        two.log_text()
    );
    // ...while home, through two, which never saw it log in, goes straight through.
    let started = std::time::Instant::now();
    imap_login(&mut through(p2, "192.0.2.20"), "b", "alice", "alicepw");
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "the real user was held back from home:\n{}",
        two.log_text()
    );
}

/// The store down at start: logins work, counted locally, and the log says the store does
/// not answer; once it is up, the log says so and the state is shared again.
#[test]
fn with_the_store_down_logins_go_on_and_the_log_says_so() {
    let dc = Dovecot::start();
    let (port, store_port) = (free_port(), free_port());
    let store = format!("redis://127.0.0.1:{store_port}");
    let guard = "store_retry_ms = 100\nstore_timeout_ms = 100\nban_after = 2\nban_ms = 60000\n\
                 penalty_initial_ms = 10\npenalty_max_ms = 10";
    let proxy = Proxy::start_toml(&instance(port, &dc, &store, &key_prefix(), guard), &[port]);
    let header = |source: &str| {
        let mut c = client_from("127.0.0.1", port);
        c.send(&proxy_v1(source));
        c
    };
    let mut c = header("192.0.2.10");
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    assert!(
        proxy.wait_log(
            &format!("Guard store 127.0.0.1:{store_port} unavailable"),
            READ_TIMEOUT
        ),
        "{}",
        proxy.log_text()
    );
    // The guard still works, on its own: two failures, a ban.
    for n in 1..=2 {
        let mut c = header("192.0.2.11");
        c.expect_line("* OK");
        c.send_line(&format!("a LOGIN alice wrong{n}"));
        assert!(c.read_until_tagged("a").last().unwrap().starts_with("a NO"));
    }
    header("192.0.2.11").expect_line("* BYE [UNAVAILABLE] Too many failed logins");

    // The store comes up: shared again, and said so.
    let _redis = Redis::start(store_port);
    std::thread::sleep(Duration::from_millis(150));
    let mut c = header("192.0.2.12");
    c.expect_line("* OK");
    imap_login(&mut c, "b", "alice", "alicepw");
    assert!(
        proxy.wait_log(
            &format!("Guard store 127.0.0.1:{store_port} answers again"),
            READ_TIMEOUT
        ),
        "{}",
        proxy.log_text()
    );
}

/// Whether a line of the proxy's log holds all of `parts`, waiting for it a while.
fn wait_line(proxy: &Proxy, parts: &[&str]) -> bool {
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let log = proxy.log_text();
        if log.lines().any(|l| parts.iter().all(|p| l.contains(p))) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A wrong password retried (a phone with an old one) through both instances counts once
/// across the fleet when the instances share a `store_secret`; different guesses still add up.
#[test]
fn with_a_shared_secret_an_old_password_retried_through_the_fleet_counts_once() {
    let dc = Dovecot::start();
    let (store, prefix) = (redis_url(), key_prefix());
    let guard = "penalty_initial_ms = 10\npenalty_max_ms = 10\nban_after = 2\nban_ms = 60000\n\
                 store_secret = \"a fleet-wide secret of some length\"";
    let (p1, p2) = (free_port(), free_port());
    let _one = Proxy::start_toml(&instance(p1, &dc, store, &prefix, guard), &[p1]);
    let _two = Proxy::start_toml(&instance(p2, &dc, store, &prefix, guard), &[p2]);
    let attempt = |port: u16, source: &str, password: &str| {
        let mut c = client_from("127.0.0.1", port);
        c.send(&proxy_v1(source));
        c.expect_line("* OK");
        c.send_line(&format!("a LOGIN alice {password}"));
        c.read_until_tagged("a").last().unwrap().clone()
    };
    for port in [p1, p2, p1, p2] {
        assert!(attempt(port, "192.0.2.30", "old-password").starts_with("a NO"));
    }
    // Still not banned: the four were one failure.
    assert!(attempt(p1, "192.0.2.30", "old-password").starts_with("a NO"));
    // Two different guesses through the two instances are two, and ban.
    assert!(attempt(p2, "192.0.2.31", "guess1").starts_with("a NO"));
    assert!(attempt(p1, "192.0.2.31", "guess2").starts_with("a NO"));
    let mut c = client_from("127.0.0.1", p2);
    c.send(&proxy_v1("192.0.2.31"));
    c.expect_line("* BYE [UNAVAILABLE] Too many failed logins");
}

/// What the fleet leaves in the store: every key under the prefix, every key expiring on its
/// own, and no user name in clear.
#[test]
fn every_key_in_the_store_expires_and_names_no_user() {
    let dc = Dovecot::start();
    let (store, prefix) = (redis_url(), key_prefix());
    let port = free_port();
    let guard = "penalty_initial_ms = 10\npenalty_max_ms = 10";
    let _proxy = Proxy::start_toml(&instance(port, &dc, store, &prefix, guard), &[port]);
    let connect = |source: &str| {
        let mut c = client_from("127.0.0.1", port);
        c.send(&proxy_v1(source));
        c.expect_line("* OK");
        c
    };
    let mut c = connect("192.0.2.40");
    c.send_line("a LOGIN alice wrong");
    assert!(c.read_until_tagged("a").last().unwrap().starts_with("a NO"));
    imap_login(&mut connect("192.0.2.41"), "b", "alice", "alicepw");

    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-u", store])
            .args(args)
            .output()
            .expect("run redis-cli (install redis-tools)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys = cli(&["--scan", "--pattern", &format!("{prefix}*")]);
    let keys: Vec<&str> = keys.lines().collect();
    assert!(
        keys.iter().any(|k| k.contains(":fail:192.0.2.40")),
        "{keys:?}"
    );
    assert!(keys.iter().any(|k| k.contains(":good:")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains(":user:")), "{keys:?}");
    for key in &keys {
        assert!(!key.to_lowercase().contains("alice"), "{key}");
        let ttl: i64 = cli(&["PTTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} does not expire ({ttl})");
    }
}

/// A store that accepts connections and never answers: each question gives up after
/// `store_timeout_ms`, the log says so, and logins go on.
#[test]
fn a_store_that_never_answers_costs_a_login_its_timeout_at_most() {
    let dc = Dovecot::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let store = format!("redis://{}", silent.local_addr().unwrap());
    // Accept and hold every connection, saying nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let port = free_port();
    let guard = "store_timeout_ms = 300\nstore_retry_ms = 60000";
    let proxy = Proxy::start_toml(&instance(port, &dc, &store, &key_prefix(), guard), &[port]);
    let started = std::time::Instant::now();
    let mut c = client_from("127.0.0.1", port);
    c.send(&proxy_v1("192.0.2.50"));
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    // One question waited 300 ms; then the store is left alone for a minute.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        proxy.wait_log("unavailable (no answer within 300 ms)", READ_TIMEOUT),
        "{}",
        proxy.log_text()
    );
}

fn proxy_v1(source: &str) -> Vec<u8> {
    format!("PROXY TCP4 {source} 127.0.0.1 40000 143\r\n").into_bytes()
}
