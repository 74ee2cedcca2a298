//! TLS session resumption: a returning client resumes (stateless tickets), on another listener
//! of the process too, and after a reload; 300 distinct returning clients all resume (rustls'
//! defaults alone let none of them once 256 others had come).

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use support::*;

/// A client with its own session memory (a phone, say), TLS 1.3 (or 1.2 only).
fn client(tls12: bool) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&certs().ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12 {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = Resumption::in_memory_sessions(4);
    Arc::new(config)
}

/// Connect, read the greeting (which also takes in TLS 1.3's tickets), say how the handshake went.
fn handshake(config: &Arc<ClientConfig>, port: u16) -> HandshakeKind {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    let mut buf = [0u8; 512];
    let n = tls.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"* OK"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    conn.handshake_kind().unwrap()
}

fn listeners(p1: u16, p2: u16, backend: u16, admin: u16) -> String {
    let c = certs();
    let one = |port: u16| {
        format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\ntls = \"implicit\"\n\
             cert = \"{}\"\nkey = \"{}\"\n[listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n\n",
            c.cert.display(),
            c.key.display()
        )
    };
    format!(
        "[log]\ndestination = \"-\"\n\n[guard]\nenabled = false\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n{}{}",
        one(p1),
        one(p2)
    )
}

#[test]
fn a_returning_client_resumes_on_any_listener_and_after_a_reload() {
    let dc = Dovecot::start();
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let _proxy = Proxy::start_toml(&listeners(p1, p2, dc.imap, admin), &[p1, p2, admin]);
    for tls12 in [false, true] {
        let phone = client(tls12);
        assert_eq!(handshake(&phone, p1), HandshakeKind::Full);
        assert_eq!(
            handshake(&phone, p1),
            HandshakeKind::Resumed,
            "tls12={tls12}"
        );
        // Another listener of the same process takes the same tickets.
        assert_eq!(
            handshake(&phone, p2),
            HandshakeKind::Resumed,
            "tls12={tls12}"
        );
    }
    // A reload keeps the ticket keys.
    let phone = client(false);
    assert_eq!(handshake(&phone, p1), HandshakeKind::Full);
    let out = run_portcullis(&["reload", "--admin", &format!("127.0.0.1:{admin}")]);
    assert!(out.status.success());
    assert_eq!(handshake(&phone, p1), HandshakeKind::Resumed);
}

#[test]
fn three_hundred_distinct_returning_clients_all_resume() {
    let dc = Dovecot::start();
    let (p1, p2, admin) = (free_port(), free_port(), free_port());
    let _proxy = Proxy::start_toml(&listeners(p1, p2, dc.imap, admin), &[p1, p2, admin]);
    let clients: Vec<Arc<ClientConfig>> = (0..300).map(|_| client(false)).collect();
    for c in &clients {
        assert_eq!(handshake(c, p1), HandshakeKind::Full);
    }
    let resumed = clients
        .iter()
        .filter(|c| handshake(c, p1) == HandshakeKind::Resumed)
        .count();
    assert_eq!(resumed, 300);
}

/// A fleet: two instances given the same `ticket_keys` file resume each other's clients (a
/// balancer may send a returning phone to either); without it, they cannot.
#[test]
fn instances_sharing_ticket_keys_resume_each_others_clients() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ticket.keys");
    std::fs::write(
        &keys,
        format!("# openssl rand -hex 32\n{}\n", "5a".repeat(32)),
    )
    .unwrap();
    // As the README says to keep it, whatever the umask.
    chmod(&keys, 0o640);
    let instance = |shared: bool| {
        let (port, admin) = (free_port(), free_port());
        let mut toml = listeners(port, free_port(), dc.imap, admin);
        if shared {
            toml = toml.replace(
                "tls = \"implicit\"\n",
                &format!("tls = \"implicit\"\nticket_keys = \"{}\"\n", keys.display()),
            );
        }
        (Proxy::start_toml(&toml, &[port]), port)
    };
    let ((_a, a), (_b, b)) = (instance(true), instance(true));
    let phone = client(false);
    assert_eq!(handshake(&phone, a), HandshakeKind::Full);
    assert_eq!(handshake(&phone, b), HandshakeKind::Resumed);
    let (_c, c) = instance(false);
    assert_eq!(
        handshake(&phone, c),
        HandshakeKind::Full,
        "resumed without the shared keys"
    );
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The key file is as secret as a TLS key (issue 16): readable by others is a warning from
/// `check`, at start and at reload; writable by others or by its group (whoever writes it can
/// put in a key of their own) is refused by `check` and by the start.
#[test]
fn a_ticket_key_file_others_may_read_is_warned_of_and_one_others_may_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("ticket.keys");
    std::fs::write(&keys, format!("{}\n", "5a".repeat(32))).unwrap();
    let (port, admin) = (free_port(), free_port());
    let toml = listeners(port, free_port(), 1, admin).replace(
        "tls = \"implicit\"\n",
        &format!("tls = \"implicit\"\nticket_keys = \"{}\"\n", keys.display()),
    );
    let file = dir.path().join("portcullis.toml");
    std::fs::write(&file, &toml).unwrap();
    let check = || {
        let out = run_portcullis(&["check", "--offline", "--config", file.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), said)
    };
    let readable = format!("tls.ticket_keys {} is readable by others", keys.display());

    chmod(&keys, 0o640);
    let (ok, said) = check();
    assert!(ok && !said.contains("ticket_keys"), "{said}");

    chmod(&keys, 0o644);
    let (ok, said) = check();
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("warning: {readable} (mode 0644)")),
        "{said}"
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    let log = proxy.log_text();
    assert_eq!(
        log.matches(&readable).count(),
        2,
        "one per listener at start:\n{log}"
    );
    proxy.signal("HUP");
    assert!(
        proxy.wait_log("Reloaded", READ_TIMEOUT),
        "{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    assert_eq!(
        log.matches(&readable).count(),
        4,
        "and again at reload:\n{log}"
    );
    drop(proxy);

    for (mode, by) in [(0o666, "others"), (0o646, "others"), (0o660, "its group")] {
        chmod(&keys, mode);
        let refused = format!("is writable by {by} (mode {mode:04o})");
        let (ok, said) = check();
        assert!(!ok && said.contains(&refused), "{mode:o}: {said}");
        let mut proxy = Proxy::start_toml(&toml, &[]);
        let status = proxy.wait_exit(READ_TIMEOUT);
        let log = proxy.log_text();
        assert!(
            status.is_some_and(|s| !s.success()),
            "{mode:o} started:\n{log}"
        );
        assert!(log.contains(&refused), "{mode:o}:\n{log}");
    }
}
