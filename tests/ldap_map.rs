//! The LDAP map against Debian's slapd, with Perdition's schema and tree: users land on the
//! server their entry names, the entry's user name is used when asked, hostile names are only
//! ever text in the filter, and a directory that is down makes logins unavailable, never
//! wrong. Over TLS (a slapd of the test's own with the test certificate): users route through
//! `ldaps://` and through `ldap://` with StartTLS, and a directory certificate the configured CA
//! did not sign makes logins unavailable.

mod support;

use std::path::Path;
use std::time::Duration;

use support::slapd::{slapd, slapd_with_tls, TlsSlapd};
use support::*;

/// An IMAP proxy on `port` whose map is the directory at `base`; `backend` holds the
/// `[listener.backend]` lines (the fallback server, or `host = ""` for none).
fn ldap_listener(port: u16, base: &str, extra_map: &str, backend: &str) -> String {
    let url = format!("{}/{base}?username,mailhost,port?one?(uid=%s)", slapd().url);
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\n{backend}\n\
         [listener.map]\nkind = \"ldap\"\nurl = \"{url}\"\ntimeout = 3\n{extra_map}\n"
    )
}

const NO_FALLBACK: &str = "host = \"\"";

/// LOGIN and return the tagged answer.
fn login(port: u16, user: &str, pass: &str) -> String {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line(&format!("a LOGIN {user} {pass}"));
    c.read_until_tagged("a").pop().unwrap()
}

/// Whether `user` logged in at `dc` (no waiting: for "never landed there" checks).
fn logged_in_at(dc: &Dovecot, user: &str) -> bool {
    dc.log_text().contains(&format!("Login: user=<{user}>"))
}

#[test]
fn users_land_on_the_server_their_entry_names() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let base = slapd().new_ou("route");
    slapd().add_user(&base, "alice", "127.0.0.1", Some(dc1.imap), None);
    slapd().add_user(&base, "bob", &format!("127.0.0.1:{}", dc2.imap), None, None);
    let port = free_port();
    let _proxy = Proxy::start_toml(&ldap_listener(port, &base, "", NO_FALLBACK), &[port]);

    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
    assert!(login(port, "bob", "bobpw").starts_with("a OK"));
    assert!(dc1.saw_login("alice") && !logged_in_at(&dc2, "alice"));
    assert!(dc2.saw_login("bob") && !logged_in_at(&dc1, "bob"));
    // Not in the directory, no fallback server: an ordinary failure, and the client may retry.
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN nobody pw");
    let no = c.read_until_tagged("a").pop().unwrap();
    assert!(no.starts_with("a NO"), "{no}");
    imap_login(&mut c, "b", "alice", "alicepw");
}

#[test]
fn the_entrys_user_name_is_used_with_username_from_map() {
    let dc = Dovecot::start();
    let base = slapd().new_ou("username");
    slapd().add_user(
        &base,
        "c",
        "127.0.0.1",
        Some(dc.imap),
        Some("carol@example.org"),
    );
    let port = free_port();
    let toml = ldap_listener(port, &base, "username_from_map = true", NO_FALLBACK);
    let _proxy = Proxy::start_toml(&toml, &[port]);
    assert!(login(port, "c", "carolpw").starts_with("a OK"));
    assert!(dc.saw_login("carol@example.org"));
}

#[test]
fn hostile_names_are_text_in_the_filter_and_never_reach_another_users_server() {
    let (dc_alice, dc_default) = (Dovecot::start(), Dovecot::start());
    let base = slapd().new_ou("inject");
    slapd().add_user(&base, "alice", "127.0.0.1", Some(dc_alice.imap), None);
    let port = free_port();
    let backend = format!("host = \"127.0.0.1\"\nport = {}", dc_default.imap);
    let proxy = Proxy::start_toml(&ldap_listener(port, &base, "", &backend), &[port]);
    // Longer than the map looks up (1024 bytes), sent as a literal.
    let long = format!("{{5000+}}\r\n{}", "a".repeat(5000));
    for name in [
        "*",
        "alice*",
        "\"*)(uid=*\"",
        "\"ali\\\\2ace\"",
        "\"alic\\\\65\"",
        "\"alice)(objectClass=*\"",
        &long,
    ] {
        let answer = login(port, name, "alicepw");
        let shown: String = name.chars().take(40).collect();
        assert!(answer.starts_with("a NO"), "{shown:?}: {answer}");
    }
    // Every hostile attempt was sent to the fallback server, none to alice's.
    let alices = format!("server=\"127.0.0.1:{}\"", dc_alice.imap);
    let log = proxy.log_text();
    assert!(
        !log.contains(&alices),
        "a hostile name was routed to alice's server:\n{log}"
    );
    let fallback = format!("server=\"127.0.0.1:{}\"", dc_default.imap);
    assert_eq!(log.matches(&fallback).count(), 7, "{log}");
    // The map still works for alice herself.
    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
}

#[test]
fn a_directory_that_is_down_makes_logins_unavailable_not_wrong() {
    let port = free_port();
    let dead = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:{dead}/dc=nodomain?username,mailhost,port?one?(uid=%s)\"\ntimeout = 2\n"
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let answer = login(port, "alice", "alicepw");
    assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
    assert!(proxy.wait_log(
        "status=\"failed: Could not connect to server\"",
        READ_TIMEOUT
    ));
    assert!(proxy.wait_log("map: cannot connect to ldap://127.0.0.1", READ_TIMEOUT));
}

#[test]
fn perdition_mode_reads_its_ldap_map_library_options() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let base = slapd().new_ou("perdition");
    slapd().add_user(&base, "bob", "127.0.0.1", Some(dc2.imap), None);
    let port = free_port();
    let url = format!(
        "3:{}/{base}?username,mailhost,port?one?(uid=%s)",
        slapd().url
    );
    let args: Vec<String> = [
        "perdition",
        "-f",
        "/dev/null",
        "--no_daemon",
        "-n",
        "-P",
        "IMAP4",
        "--bind_address",
        "127.0.0.1",
        "--listen_port",
        &port.to_string(),
        "-F",
        "-",
        "-M",
        "/usr/lib/x86_64-linux-gnu/libperditiondb_ldap.so.0",
        "-m",
        &url,
        "-s",
        &format!("127.0.0.1:{}", dc1.imap),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _proxy = Proxy::start_args(&args, &[port]);
    assert!(login(port, "bob", "bobpw").starts_with("a OK"));
    // Not in the directory: Perdition's fallback to outgoing_server.
    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(dc2.saw_login("bob") && !logged_in_at(&dc1, "bob"));
    assert!(dc1.saw_login("alice"));
}

#[test]
fn answers_are_cached_for_their_lifetime_and_unknown_users_for_theirs() {
    let (dc1, dc2) = (Dovecot::start(), Dovecot::start());
    let base = slapd().new_ou("cache");
    slapd().add_user(&base, "alice", "127.0.0.1", Some(dc1.imap), None);
    let port = free_port();
    let toml = ldap_listener(
        port,
        &base,
        "cache_seconds = 600\nnegative_cache_seconds = 1",
        NO_FALLBACK,
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
    assert!(login(port, "bob", "bobpw").starts_with("a NO"));
    // The directory changes: alice moves, bob arrives.
    slapd().modify(&format!(
        "dn: uid=alice,{base}\nchangetype: modify\nreplace: port\nport: {}\n",
        dc2.imap
    ));
    slapd().add_user(&base, "bob", "127.0.0.1", Some(dc2.imap), None);
    // alice's answer is kept: she still lands on dc1, without the directory being asked.
    assert!(login(port, "alice", "alicepw").starts_with("a OK"));
    assert!(!logged_in_at(&dc2, "alice"));
    // bob's "no such user" is kept one second only.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(login(port, "bob", "bobpw").starts_with("a OK"));
    assert!(dc2.saw_login("bob"));
}

#[test]
fn check_says_when_the_directory_cannot_be_reached() {
    let dir = tempfile::tempdir().unwrap();
    let base = slapd().new_ou("check");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        ldap_listener(free_port(), &base, "", "host = \"127.0.0.1\""),
    )
    .unwrap();
    let out = run_portcullis(&["check", "--config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = free_port();
    let bad = dir.path().join("bad.toml");
    let toml = ldap_listener(free_port(), &base, "", "host = \"127.0.0.1\"")
        .replace(&slapd().url, &format!("ldap://127.0.0.1:{dead}"));
    std::fs::write(&bad, toml).unwrap();
    let out = run_portcullis(&["check", "--config", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to ldap://127.0.0.1:{dead}")),
        "{stderr}"
    );
}

/// A directory that accepts connections and never answers: logins waiting for it are told
/// to try later within the map's timeout, not one after another.
#[test]
fn a_stalled_directory_answers_every_waiting_login_in_time() {
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = stalled.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for s in stalled.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"\"\n\
         [listener.map]\nkind = \"ldap\"\nurl = \"ldap://127.0.0.1:{dead}/dc=nodomain?username,mailhost,port?one?(uid=%s)\"\n\
         bind_dn = \"cn=reader,dc=nodomain\"\nbind_password = \"pw\"\ntimeout = 2\n"
    );
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let start = std::time::Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || login(port, "alice", "alicepw")))
        .collect();
    for c in clients {
        let answer = c.join().unwrap();
        assert!(answer.starts_with("a NO [UNAVAILABLE]"), "{answer}");
    }
    // One timeout's worth, not eight one after another (16 s).
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
}

/// An IMAP proxy on `port` whose map is the directory at `server` (an `ldap://` or `ldaps://`
/// URL) under `base`, trusting only `ca` for its certificate; `starttls` as given.
fn tls_ldap_listener(port: u16, server: &str, base: &str, starttls: bool, ca: &Path) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\n{NO_FALLBACK}\n\
         [listener.map]\nkind = \"ldap\"\n\
         url = \"{server}/{base}?username,mailhost,port?one?(uid=%s)\"\ntimeout = 3\n\
         starttls = {starttls}\nca_file = \"{}\"\n",
        ca.display()
    )
}

/// A directory with TLS whose OU `ou` routes alice to a Dovecot of her own.
fn alice_in_a_directory_with_tls(ou: &str) -> (&'static TlsSlapd, Dovecot, String) {
    let directory = slapd_with_tls();
    let dc = Dovecot::start();
    let base = directory.slapd.new_ou(ou);
    directory
        .slapd
        .add_user(&base, "alice", "127.0.0.1", Some(dc.imap), None);
    (directory, dc, base)
}

/// A user routes through the directory over `ldaps://` and over `ldap://` with StartTLS, the
/// directory's certificate checked against the configured CA.
#[test]
fn users_route_through_ldaps_and_through_starttls() {
    let (directory, dc, base) = alice_in_a_directory_with_tls("tls");
    for (server, starttls) in [
        (directory.ldaps_url.as_str(), false),
        (directory.slapd.url.as_str(), true),
    ] {
        let port = free_port();
        let toml = tls_ldap_listener(port, server, &base, starttls, &certs().ca);
        let proxy = Proxy::start_toml(&toml, &[port]);
        let answer = login(port, "alice", "alicepw");
        assert!(
            answer.starts_with("a OK"),
            "{server} starttls={starttls}: {answer}\n{}",
            proxy.log_text()
        );
        let to_dovecot = format!("server=\"127.0.0.1:{}\"", dc.imap);
        assert!(
            proxy.wait_log(&to_dovecot, READ_TIMEOUT),
            "{}",
            proxy.log_text()
        );
    }
    assert!(dc.saw_login("alice"));
}

/// A directory whose certificate the configured CA did not sign: over `ldaps://` and over
/// StartTLS the login is unavailable (try later), never "wrong password", and nobody is routed.
#[test]
fn a_directory_certificate_from_another_ca_makes_logins_unavailable() {
    let (directory, dc, base) = alice_in_a_directory_with_tls("wrongca");
    for (server, starttls) in [
        (directory.ldaps_url.as_str(), false),
        (directory.slapd.url.as_str(), true),
    ] {
        let port = free_port();
        let toml = tls_ldap_listener(port, server, &base, starttls, &certs().other_ca);
        let proxy = Proxy::start_toml(&toml, &[port]);
        let answer = login(port, "alice", "alicepw");
        assert!(
            answer.starts_with("a NO [UNAVAILABLE]"),
            "{server} starttls={starttls}: {answer}\n{}",
            proxy.log_text()
        );
        assert!(
            proxy.wait_log(
                "status=\"failed: Could not connect to server\"",
                READ_TIMEOUT
            ) && proxy.wait_log(
                &format!("map: cannot connect to {server}: I/O error: invalid peer certificate"),
                READ_TIMEOUT
            ),
            "{}",
            proxy.log_text()
        );
    }
    assert!(!logged_in_at(&dc, "alice"), "{}", dc.log_text());
}
