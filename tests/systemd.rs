//! Running under systemd: readiness, reloads, stopping and a status line told through
//! `NOTIFY_SOCKET` (`Type=notify`), listening sockets passed in by the service manager
//! (Debian's `systemd-socket-activate`), and privileges dropped after binding.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use support::*;

fn listener(port: u16, backend: u16) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n"
    )
}

/// The next notification that says `what` (status updates may come between), as systemd
/// would read it.
fn next(socket: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket
            .recv(&mut buf)
            .expect("a notification within the timeout");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains(what) {
            return message;
        }
    }
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let port = free_port();
    let env = [("NOTIFY_SOCKET", path.to_str().unwrap())];
    let mut proxy = Proxy::start_toml_wrapped(&listener(port, dc.imap), &[port], &["env"], &env);

    let ready = next(&socket, "READY=1");
    assert!(ready.contains("STATUS=0 sessions, 0 logged in"), "{ready}");
    // Not before the listener is there.
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");

    proxy.signal("HUP");
    let reloading = next(&socket, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = next(&socket, "READY=1");
    assert!(ready.contains("STATUS=1 sessions, 1 logged in"), "{ready}");

    drop(c);
    proxy.signal_term();
    next(&socket, "STOPPING=1");
    assert!(proxy.wait_exit(Duration::from_secs(20)).is_some());
}

/// `systemd-socket-activate` binds the port and passes the socket in (`LISTEN_FDS`), as a
/// `.socket` unit would: Portcullis serves on it without binding it again.
#[test]
fn a_socket_passed_in_by_the_service_manager_is_served() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml_wrapped(
        &listener(port, dc.imap),
        &[port],
        &[
            "systemd-socket-activate",
            "-l",
            &format!("127.0.0.1:{port}"),
        ],
        &[],
    );
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    // Portcullis took the socket instead of binding its own (which would have failed: the
    // address was in use by the very socket passed in).
    assert!(proxy.wait_log(&format!("Listening on 127.0.0.1:{port}"), READ_TIMEOUT));
    assert!(!proxy.log_text().contains("cannot listen"));
}

/// Started as root with `[process] user`, the process runs as that user once its sockets are
/// bound (the certificate was read before), and still serves.
#[test]
fn privileges_are_dropped_after_binding() {
    assert!(
        nix::unistd::getuid().is_root(),
        "this test needs root (CI runs as root): it checks the switch to another user"
    );
    let dc = Dovecot::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("portcullis.pid");
    let toml = listener(port, dc.imap).replace(
        "[[listener]]",
        &format!(
            "[process]\nuser = \"nobody\"\npid_file = \"{}\"\n\n[[listener]]",
            pid_file.display()
        ),
    );
    let proxy = Proxy::start_toml(&toml, &[port]);
    assert!(proxy.wait_log("Running as user nobody", READ_TIMEOUT));
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    assert!(
        uid.split_whitespace()
            .skip(1)
            .all(|u| u == nobody.to_string()),
        "{uid}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        proxy.pid().to_string()
    );
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
}
