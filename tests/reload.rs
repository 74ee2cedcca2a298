//! Reload (SIGHUP, `portcullis reload`): live sessions keep going, unchanged addresses keep
//! their sockets (not one connection refused meanwhile), new sessions get the new settings,
//! removed listeners stop and new ones start; a configuration that does not build changes
//! nothing and says why; guard state survives unless `[guard]` changed; the connection limit
//! follows.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

fn imap(port: u16, backend: u16, name: &str) -> String {
    format!(
        "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\ngreeting_name = \"{name}\"\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n\n"
    )
}

fn pop3(port: u16, backend: u16) -> String {
    format!(
        "[[listener]]\nprotocol = \"pop3\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n\n"
    )
}

fn config(admin: u16, head: &str, listeners: &str) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{head}\n\n{listeners}"
    )
}

const NO_GUARD: &str = "[guard]\nenabled = false";

/// A guard that bans after two failures, with penalties too short to wait for.
fn quick_guard(ban_ms: u32) -> String {
    format!(
        "[guard]\npenalty_initial_ms = 10\npenalty_max_ms = 10\nban_after = 2\nban_ms = {ban_ms}"
    )
}

/// Dovecot, and a proxy in front of it with a quick guard and an admin endpoint; the IMAP and
/// admin ports.
fn with_a_quick_guard() -> (Dovecot, Proxy, u16, u16) {
    let dc = Dovecot::start();
    let (p1, admin) = (free_port(), free_port());
    let proxy = Proxy::start_toml(
        &config(admin, &quick_guard(60_000), &imap(p1, dc.imap, "Before")),
        &[p1, admin],
    );
    (dc, proxy, p1, admin)
}

/// `portcullis reload` against the admin endpoint: exit status, stdout, stderr.
fn reload(admin: u16) -> (bool, String, String) {
    let out = run_portcullis(&["reload", "--admin", &format!("127.0.0.1:{admin}")]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn greeting(port: u16) -> std::io::Result<String> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line)
}

fn refused_soon(port: u16) -> bool {
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_err() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn a_reload_keeps_live_sessions_and_sockets_and_new_sessions_get_the_new_settings() {
    let dc = Dovecot::start();
    let (p1, p2, p3, admin) = (free_port(), free_port(), free_port(), free_port());
    let before = imap(p1, dc.imap, "Before") + &pop3(p2, dc.pop3);
    let proxy = Proxy::start_toml(&config(admin, NO_GUARD, &before), &[p1, p2, admin]);
    let file = proxy.config.clone().unwrap();

    let mut live: Vec<Client> = (0..20)
        .map(|i| {
            let mut c = Client::plain(p1);
            c.expect_line("* OK");
            imap_login(
                &mut c,
                "a",
                if i % 2 == 0 { "alice" } else { "bob" },
                if i % 2 == 0 { "alicepw" } else { "bobpw" },
            );
            c
        })
        .collect();

    // Clients keep arriving on p1 all through the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let (tries, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hammer = {
        let (stop, tries, failures) = (stop.clone(), tries.clone(), failures.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tries.fetch_add(1, Ordering::Relaxed);
                match greeting(p1) {
                    Ok(line) if line.starts_with("* OK") => seen.push(line),
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            seen
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let after = imap(p1, dc.imap, "After") + &pop3(p3, dc.pop3);
    std::fs::write(&file, config(admin, NO_GUARD, &after)).unwrap();
    let (ok, stdout, stderr) = reload(admin);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout.trim(),
        "reloaded: 2 listeners; addresses kept 1, added 1, removed 1"
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let seen = hammer.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "connections to the kept address failed during the reload ({} tries)",
        tries.load(Ordering::Relaxed)
    );
    assert!(seen.iter().any(|l| l.contains("Before")), "{seen:?}");
    assert!(seen.last().is_some_and(|l| l.contains("After")), "{seen:?}");

    // Every live session goes on.
    for (i, c) in live.iter_mut().enumerate() {
        let tag = format!("n{i}");
        c.send_line(&format!("{tag} NOOP"));
        assert!(c
            .read_until_tagged(&tag)
            .last()
            .unwrap()
            .starts_with(&format!("{tag} OK")));
    }
    // The removed listener is gone, the new one serves.
    assert!(refused_soon(p2), "the removed listener still accepts");
    assert!(greeting(p3).unwrap().starts_with("+OK"));
    assert!(proxy.wait_log("Reloaded: 2 listeners", READ_TIMEOUT));
}

#[test]
fn a_configuration_that_does_not_build_changes_nothing_and_says_why() {
    let dc = Dovecot::start();
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let proxy = Proxy::start_toml(
        &config(admin, NO_GUARD, &imap(p1, dc.imap, "Before")),
        &[p1, admin],
    );
    let file = proxy.config.clone().unwrap();
    let mut live = Client::plain(p1);
    live.expect_line("* OK");
    imap_login(&mut live, "a", "alice", "alicepw");

    // A certificate that is not there.
    let broken = imap(p1, dc.imap, "After").replace(
        "greeting_name",
        "tls = \"implicit\"\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\ngreeting_name",
    );
    std::fs::write(&file, config(admin, NO_GUARD, &broken)).unwrap();
    let (ok, stdout, stderr) = reload(admin);
    assert!(!ok, "{stdout}");
    assert!(
        stderr.contains("not reloaded, the running configuration stays"),
        "{stderr}"
    );
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    assert!(proxy.wait_log(
        "Reload failed, the running configuration stays",
        READ_TIMEOUT
    ));

    // An address someone else holds: the whole reload fails, the new name included.
    let taken = std::net::TcpListener::bind(("127.0.0.1", p2)).unwrap();
    let both = imap(p1, dc.imap, "After") + &pop3(p2, dc.pop3);
    std::fs::write(&file, config(admin, NO_GUARD, &both)).unwrap();
    let (ok, _, stderr) = reload(admin);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{p2}")),
        "{stderr}"
    );
    drop(taken);
    // TOML that does not parse.
    std::fs::write(&file, "[[listener]\nprotocol = ").unwrap();
    assert!(!reload(admin).0);

    assert!(greeting(p1).unwrap().contains("Before"));
    live.send_line("b NOOP");
    assert!(live
        .read_until_tagged("b")
        .last()
        .unwrap()
        .starts_with("b OK"));
}

#[test]
fn bans_survive_a_reload_even_one_that_changes_the_guard() {
    let (dc, proxy, p1, admin) = with_a_quick_guard();
    let file = proxy.config.clone().unwrap();
    let mut c = Client::from_stream(connect_from("127.0.0.7", p1).unwrap());
    c.expect_line("* OK");
    for tag in ["a", "b"] {
        c.send_line(&format!("{tag} LOGIN alice wrong{tag}"));
        c.read_until_tagged(tag);
    }
    let banned = || {
        let mut c = Client::from_stream(connect_from("127.0.0.7", p1).unwrap());
        c.read_line()
            .starts_with("* BYE [UNAVAILABLE] Too many failed logins")
    };
    assert!(banned());
    // Another greeting, the same guard: still banned.
    std::fs::write(
        &file,
        config(admin, &quick_guard(60_000), &imap(p1, dc.imap, "After")),
    )
    .unwrap();
    assert!(reload(admin).0);
    assert!(banned(), "a reload forgot the ban");
    // The guard's own settings changed: its new self takes over what it knew.
    std::fs::write(
        &file,
        config(admin, &quick_guard(30_000), &imap(p1, dc.imap, "After")),
    )
    .unwrap();
    assert!(reload(admin).0);
    assert!(
        banned(),
        "a change of the guard settings released a banned address"
    );
}

/// A session opened before a reload that changes `[guard]` is judged by the new guard from
/// then on: its failures add to what the new guard took over, and earn the ban there.
#[test]
fn a_session_opened_before_a_guard_change_fails_into_the_new_guard() {
    let (dc, proxy, p1, admin) = with_a_quick_guard();
    let file = proxy.config.clone().unwrap();
    let mut c = Client::from_stream(connect_from("127.0.0.8", p1).unwrap());
    c.expect_line("* OK");
    c.send_line("a LOGIN alice wronga");
    c.read_until_tagged("a");
    std::fs::write(
        &file,
        config(admin, &quick_guard(30_000), &imap(p1, dc.imap, "After")),
    )
    .unwrap();
    assert!(reload(admin).0, "{}", proxy.log_text());
    c.send_line("b LOGIN alice wrongb");
    c.read_until_tagged("b");
    let mut again = Client::from_stream(connect_from("127.0.0.8", p1).unwrap());
    let line = again.read_line();
    assert!(
        line.starts_with("* BYE [UNAVAILABLE] Too many failed logins"),
        "the old session's failure went to a discarded guard: {line}\n{}",
        proxy.log_text()
    );
}

#[test]
fn the_connection_limit_follows_a_reload() {
    let dc = Dovecot::start();
    let (p1, admin) = (free_port(), free_port());
    let limit = |n: u32| format!("{NO_GUARD}\n\n[limits]\nconnection_limit = {n}");
    let proxy = Proxy::start_toml(
        &config(admin, &limit(1), &imap(p1, dc.imap, "Before")),
        &[p1, admin],
    );
    let file = proxy.config.clone().unwrap();
    let first = greeting_client(p1);
    assert!(
        !greeting(p1).unwrap().starts_with("* OK"),
        "over the limit of 1"
    );
    std::fs::write(
        &file,
        config(admin, &limit(3), &imap(p1, dc.imap, "Before")),
    )
    .unwrap();
    assert!(reload(admin).0);
    let second = greeting_client(p1);
    let third = greeting_client(p1);
    assert!(
        !greeting(p1).unwrap().starts_with("* OK"),
        "over the limit of 3"
    );
    // Lowered to 1 with three open: nobody is cut off, and room comes back only as they go.
    let lowered = config(admin, &limit(1), &imap(p1, dc.imap, "Before"));
    std::fs::write(&file, lowered).unwrap();
    assert!(reload(admin).0);
    let mut first = first;
    first.send_line("a NOOP");
    assert!(first
        .read_until_tagged("a")
        .last()
        .unwrap()
        .starts_with("a OK"));
    drop((second, third));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !greeting(p1).unwrap().starts_with("* OK"),
        "one open, limit 1"
    );
    drop(first);
    let deadline = Instant::now() + READ_TIMEOUT;
    while !greeting(p1).unwrap().starts_with("* OK") {
        assert!(Instant::now() < deadline, "no room after everyone left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Two listeners cannot share an address: such a configuration neither starts nor reloads.
#[test]
fn two_listeners_on_one_address_are_refused() {
    let dc = Dovecot::start();
    let (p1, admin) = (free_port(), free_port());
    let proxy = Proxy::start_toml(
        &config(admin, NO_GUARD, &imap(p1, dc.imap, "Before")),
        &[p1, admin],
    );
    let file = proxy.config.clone().unwrap();
    let both = imap(p1, dc.imap, "Before") + &pop3(p1, dc.pop3);
    std::fs::write(&file, config(admin, NO_GUARD, &both)).unwrap();
    let (ok, _, stderr) = reload(admin);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("127.0.0.1:{p1} is also listener 1's")),
        "{stderr}"
    );
    assert!(
        greeting(p1).unwrap().starts_with("* OK"),
        "the IMAP port changed hands"
    );
    let out = run_portcullis(&["check", "--config", file.to_str().unwrap()]);
    assert!(!out.status.success());
}

/// A client that has been greeted, kept open.
fn greeting_client(port: u16) -> Client {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c
}

/// The DER of the first certificate in a PEM file.
fn der(pem: &std::path::Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(pem)
        .unwrap()
        .next()
        .expect("a certificate")
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The certificate a new client is served on `port` (trusting the test CA, asking for
/// localhost), after the greeting came through it.
fn served(port: u16) -> Vec<u8> {
    let mut c = Client::tls(port);
    c.expect_line("* OK");
    c.peer_certificate().expect("a TLS connection")
}

/// A certificate renewed in place (the same file names, new contents, as certbot or an
/// operator's copy does) is what new clients get once the proxy was told SIGHUP; until then
/// the old one is served.
#[test]
fn a_certificate_replaced_in_its_files_is_served_after_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(&certs().cert, &cert).unwrap();
    std::fs::copy(&certs().key, &key).unwrap();
    let renewed_dir = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = issued_by_the_test_ca(renewed_dir.path(), "localhost renewed");
    let (old_der, new_der) = (der(&certs().cert), der(&new_cert));
    assert_ne!(old_der, new_der);

    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n{NO_GUARD}\n\n[[listener]]\nprotocol = \"imap\"\n\
         bind = [\"127.0.0.1:{port}\"]\ntls = \"implicit\"\ncert = \"{}\"\nkey = \"{}\"\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        cert.display(),
        key.display(),
        free_port()
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    assert!(served(port) == old_der, "not the first certificate");

    // Replaced in place; until the reload, still the old one.
    for (from, to) in [(&new_key, &key), (&new_cert, &cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
    assert!(
        served(port) == old_der,
        "the new certificate before any reload"
    );
    proxy.signal("HUP");
    assert!(
        proxy.wait_log("Reloaded:", READ_TIMEOUT),
        "{}",
        proxy.log_text()
    );
    let now = served(port);
    assert!(
        now == new_der,
        "after SIGHUP the old certificate is still served:\n{}",
        proxy.log_text()
    );
}
