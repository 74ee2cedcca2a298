//! A binary upgrade without systemd (SIGUSR2, `portcullis upgrade`): the running process starts
//! the binary on disk with its listening sockets, waits until it is ready, then drains; not one
//! connection is refused meanwhile, and the new process serves, the admin endpoint included.

mod support;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// `env` without the variables that say systemd started the process.
const NOT_SYSTEMD: [&str; 5] = ["env", "-u", "INVOCATION_ID", "-u", "NOTIFY_SOCKET"];

fn greeting(port: u16) -> bool {
    let Ok(s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(READ_TIMEOUT));
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("* OK")
}

/// Kills the successor at the end of the test, however it ends.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.to_string())
            .status();
    }
}

#[test]
fn the_new_binary_takes_the_sockets_and_the_old_one_drains() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("portcullis.pid");
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[guard]\nenabled = false\n\n[limits]\nshutdown_grace = 1\n\n\
         [process]\npid_file = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        pid_file.display(),
        dc.imap
    );
    // Not started by systemd, whatever the test runner was started by.
    let mut old = Proxy::start_toml_wrapped(&toml, &[port, admin], &NOT_SYSTEMD, &[]);
    let old_pid = old.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let (tries, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hammer = {
        let (stop, tries, failures) = (stop.clone(), tries.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tries.fetch_add(1, Ordering::Relaxed);
                if !greeting(port) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let out = run_portcullis(&["upgrade", "--admin", &format!("127.0.0.1:{admin}")]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new_pid: u32 = said
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said:?}"));
    let _successor = Successor(new_pid);
    assert_ne!(new_pid, old_pid);

    // The old one drains and exits; clients keep arriving all along.
    assert!(
        old.wait_exit(Duration::from_secs(15)).is_some(),
        "the old process stayed"
    );
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    hammer.join().unwrap();
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "connections failed during the upgrade ({} tries)",
        tries.load(Ordering::Relaxed)
    );

    // The new one serves: logins, the admin endpoint, and the pid file is its own.
    assert!(std::path::Path::new(&format!("/proc/{new_pid}")).exists());
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    let out = run_portcullis(&["sessions", "--admin", &format!("127.0.0.1:{admin}")]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        new_pid.to_string()
    );
}

#[test]
fn a_successor_that_cannot_start_changes_nothing() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[guard]\nenabled = false\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        dc.imap
    );
    std::fs::write(&config, &toml).unwrap();
    let proxy = Proxy::start_args(
        &[
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        &[port, admin],
    );
    // The configuration the successor would read no longer parses.
    std::fs::write(&config, "[[listener]\n").unwrap();
    let out = run_portcullis(&["upgrade", "--admin", &format!("127.0.0.1:{admin}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not upgraded, this process goes on"));
    assert!(proxy.wait_log("Upgrade failed, this process goes on", READ_TIMEOUT));
    assert!(greeting(port), "the old process stopped serving");
}

/// Under systemd the process's cgroup is systemd's: a successor started by hand would be
/// killed with it, so the upgrade is refused, with the way to do it instead.
#[test]
fn under_systemd_an_upgrade_is_refused() {
    let dc = Dovecot::start();
    let (port, admin) = (free_port(), free_port());
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {}\n",
        dc.imap
    );
    let proxy = Proxy::start_toml_wrapped(
        &toml,
        &[port, admin],
        &["env"],
        &[("INVOCATION_ID", "0123")],
    );
    let out = run_portcullis(&["upgrade", "--admin", &format!("127.0.0.1:{admin}")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("started by systemd: use portcullis.socket"),
        "{stderr}"
    );
    assert!(proxy.wait_log("Upgrade refused", READ_TIMEOUT));
    assert!(greeting(port));
}

/// A FIFO put where the pid file goes (issue 16): opened the usual way it would block until
/// someone opened its other end, and the start would hang for ever with the listeners bound.
/// The start is refused instead, at once, naming the file.
#[test]
fn a_fifo_at_the_pid_file_stops_the_start_at_once_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("portcullis.pid");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let port = free_port();
    let toml = format!(
        "[log]\ndestination = \"-\"\n\n[process]\npid_file = \"{}\"\n\n\
         [[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = 1\n",
        fifo.display()
    );
    let mut proxy = Proxy::start_toml(&toml, &[]);
    // Generous: this is about never, not about how fast.
    let status = proxy.wait_exit(Duration::from_secs(20));
    let log = proxy.log_text();
    let status =
        status.unwrap_or_else(|| panic!("still starting after 20 s with a FIFO pid file:\n{log}"));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "pid file {}: a FIFO, not a regular file",
            fifo.display()
        )),
        "{log}"
    );
}
