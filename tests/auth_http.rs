//! nginx's `auth_http` protocol as a map, against a small real HTTP service started by each
//! test: the requests carry nginx's headers, the replies route users (host names too), rewrite
//! the back-end user and password, refuse with words the client sees, ask to wait, and a
//! service that is down makes logins unavailable.

mod support;

use std::time::{Duration, Instant};

use support::auth_service::*;
use support::*;

fn proxy(port: u16, service: &AuthService) -> Proxy {
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\ntimeout = 3\n\
         headers = {{ \"X-Auth-Key\" = \"s3cret-key\" }}\n",
        service.port
    );
    Proxy::start_toml(&toml, &[port])
}

/// Whether `user` logged in at `dc` (no waiting: for "never landed there" checks).
fn logged_in_at(dc: &Dovecot, user: &str) -> bool {
    dc.log_text().contains(&format!("Login: user=<{user}>"))
}

#[test]
fn the_service_routes_users_and_gets_nginxs_headers() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let (p1, p2) = (dc1.imap, dc2.imap);
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "alice" => ok(p1),
        "bob" => ok(p2),
        _ => vec![("Auth-Status".into(), "Invalid login or password".into())],
    });
    let port = free_port();
    let _proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN nobody pw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Invalid login or password");
    imap_login(&mut c, "b", "alice", "alicepw");
    let mut c2 = Client::plain(port);
    c2.expect_line("* OK");
    imap_login(&mut c2, "a", "bob", "bobpw");
    assert!(dc1.saw_login("alice") && !logged_in_at(&dc2, "alice"));
    assert!(dc2.saw_login("bob"));

    let requests = service.requests();
    let alice = requests.iter().find(|h| h["auth-user"] == "alice").unwrap();
    assert_eq!(alice["auth-method"], "plain");
    assert_eq!(alice["auth-pass"], "alicepw");
    assert_eq!(alice["auth-protocol"], "imap");
    assert_eq!(
        alice["auth-login-attempt"], "2",
        "second login of the connection"
    );
    assert_eq!(alice["client-ip"], "127.0.0.1");
    assert_eq!(alice["x-auth-key"], "s3cret-key");
    assert!(!alice.contains_key("auth-ssl"));
}

#[test]
fn passwords_are_escaped_as_nginx_escapes_them_and_the_reply_can_rewrite_the_login() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, _| {
        let mut reply = ok(p);
        if h["auth-user"] == "c" {
            reply.push(("Auth-User".into(), "carol@example.org".into()));
            reply.push(("Auth-Pass".into(), "carolpw".into()));
        }
        reply
    });
    let port = free_port();
    let _proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "c", "a-token");
    assert!(dc.saw_login("carol@example.org"));
    let mut d = Client::plain(port);
    d.expect_line("* OK");
    d.send_line("a LOGIN dave \"p@ss \\\"w0rd\\\" \\\\ x\"");
    let answer = d.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a OK"), "{answer}");
    let requests = service.requests();
    let dave = requests.iter().find(|h| h["auth-user"] == "dave").unwrap();
    assert_eq!(dave["auth-pass"], "p@ss%20\"w0rd\"%20\\%20x");
}

#[test]
fn wait_asks_again_and_a_refusal_with_auth_wait_comes_late() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, n| match (h["auth-user"].as_str(), n) {
        ("alice", 1) => vec![
            ("Auth-Status".into(), "WAIT".into()),
            ("Auth-Wait".into(), "1".into()),
        ],
        ("alice", _) => ok(p),
        _ => vec![
            ("Auth-Status".into(), "Too many attempts".into()),
            ("Auth-Wait".into(), "1".into()),
        ],
    });
    let port = free_port();
    let _proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    let requests = service.requests();
    assert_eq!(requests.len(), 2, "the same request, asked twice");
    assert_eq!(requests[1]["auth-login-attempt"], "1");

    let mut m = Client::plain(port);
    m.expect_line("* OK");
    let start = Instant::now();
    m.send_line("a LOGIN mallory x");
    let no = m.read_until_tagged("a").pop().unwrap();
    assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Too many attempts");
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    // The connection stays open: the client may try again.
    m.send_line("b NOOP");
    m.expect_line("b OK");
}

#[test]
fn a_service_that_is_down_makes_logins_unavailable() {
    let service = AuthService::dead();
    let port = free_port();
    let proxy = proxy(port, &service);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert!(no.starts_with("a NO [UNAVAILABLE]"), "{no}");
    assert!(proxy.wait_log(
        "status=\"failed: Could not connect to server\"",
        READ_TIMEOUT
    ));
}

/// The service checks the client's password (here a one-time token Dovecot knows nothing of);
/// the proxy then logs in to Dovecot as its master user on the client's behalf.
#[test]
fn after_the_service_checks_the_password_the_proxy_logs_in_as_a_master_user() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, _| {
        if h["auth-user"] == "alice" && h["auth-pass"] == "one-time-token" {
            ok(p)
        } else {
            vec![("Auth-Status".into(), "Invalid login or password".into())]
        }
    });
    let port = free_port();
    let (master, master_password) = MASTER;
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\n\
         master_user = \"{master}\"\nmaster_password = \"{master_password}\"\n",
        service.port
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "one-time-token");
    c.send_line("b SELECT INBOX");
    let lines = c.read_until_tagged("b");
    assert!(lines.iter().any(|l| l == "* 3 EXISTS"), "{lines:?}");
    assert!(dc.saw_login("alice"));
    // The master password appears nowhere in the proxy's log.
    assert!(!proxy.log_text().contains(master_password));
}

/// A master user behind a map that does not check passwords would let any password in.
#[test]
fn check_refuses_a_master_user_behind_a_map_that_does_not_check_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("popmap");
    std::fs::write(&map, "alice:127.0.0.1\n").unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{}\"]\n\
             [listener.backend]\nhost = \"\"\n\
             [listener.map]\nkind = \"popmap\"\npath = \"{}\"\n\
             master_user = \"m\"\nmaster_password = \"x\"\n",
            free_port(),
            map.display()
        ),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", config.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("master_user needs a map that checks"),
        "{stderr}"
    );
}

/// A service that is down must not be skipped: the listener's own server is not used, or its
/// checks (bans, disabled accounts) would be bypassed by making it fail.
#[test]
fn a_failing_service_is_not_bypassed_through_the_listeners_own_server() {
    let dc = Dovecot::start();
    // Reserved for this process and never bound: nothing listens there.
    let dead_port = free_port();
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1:{}\"\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{dead_port}/auth\"\n",
        dc.imap
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert!(no.starts_with("a NO [UNAVAILABLE]"), "{no}");
    assert!(!logged_in_at(&dc, "alice"));
}

/// With a cache and a lookup key shared by many users (the domain), one user's answer is
/// never given to another user with the same password.
#[test]
fn the_cache_never_gives_one_users_answer_to_another() {
    let dc = Dovecot::start();
    let p = dc.imap;
    let service = AuthService::start(move |h, _| match h["auth-user"].as_str() {
        "bob@x.test" => {
            let mut reply = ok(p);
            reply.push(("Auth-User".into(), "bob".into()));
            reply.push(("Auth-Pass".into(), "bobpw".into()));
            reply
        }
        _ => vec![("Auth-Status".into(), "Invalid login or password".into())],
    });
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.users]\nquery_key = ['\\d']\n\
         [listener.map]\nkind = \"http\"\nurl = \"http://127.0.0.1:{}/auth\"\ncache_seconds = 60\n",
        service.port
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "bob@x.test", "same-password");
    let mut m = Client::plain(port);
    m.expect_line("* OK");
    m.send_line("a LOGIN mallory@x.test same-password");
    let no = m.read_until_tagged("a").pop().unwrap();
    assert_eq!(no, "a NO [AUTHENTICATIONFAILED] Invalid login or password");
    assert_eq!(
        service.requests().len(),
        2,
        "mallory's login was asked, not cached"
    );
    // bob again, same password: from the cache.
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "bob@x.test", "same-password");
    assert_eq!(service.requests().len(), 2);
}

/// `check` shows the effective configuration without the secrets in it.
#[test]
fn check_does_not_show_map_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{}\"]\n\
             [listener.backend]\nhost = \"\"\n\
             [listener.map]\nkind = \"http\"\nurl = \"http://u:url-secret@127.0.0.1:9/auth\"\n\
             headers = {{ \"X-Auth-Key\" = \"header-secret\" }}\n",
            free_port()
        ),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[listener.map]"), "{stdout}");
    assert!(
        !stdout.contains("url-secret") && !stdout.contains("header-secret"),
        "{stdout}"
    );
}
