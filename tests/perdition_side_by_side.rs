//! Debian's own perdition and `portcullis perdition`, started with the same command line in
//! front of the same Dovecot, must write the same log lines for the same sessions.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Perdition 2.2 as Debian ships it.
const PERDITION: &str = "/usr/sbin/perdition";

/// The flags both programs get; only the port and the log file differ.
fn flags(dovecot: &Dovecot, port: u16, log: &Path) -> Vec<String> {
    [
        "-f",
        "/dev/null",
        "--no_daemon",
        "-M",
        "",
        "-n",
        "--pid_file",
        "",
        "-P",
        "IMAP4",
        "--bind_address",
        "127.0.0.1",
        "--outgoing_server",
        "127.0.0.1",
        "--outgoing_port",
        &dovecot.imap.to_string(),
        "--listen_port",
        &port.to_string(),
        "--log_facility",
        &log.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Kills the real perdition (and its per-session children) when the test ends.
struct Perdition(Child);

impl Drop for Perdition {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.0.id().to_string()])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same story told to both: a wrong password, the right one, LOGOUT; then a client that
/// leaves without logging in.
fn session(port: u16) {
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice wrong");
    c.expect_line("a NO");
    c.send_line("b LOGIN alice alicepw");
    let ok = c.read_until_tagged("b");
    assert!(ok.last().unwrap().starts_with("b OK"), "{ok:?}");
    c.send_line("c LOGOUT");
    c.read_until_tagged("c");
    assert!(c.is_closed());
    drop(c);
    let mut d = Client::plain(port);
    d.expect_line("* OK");
    drop(d);
}

/// The log lines without the syslog prefix, with ports and byte counts made comparable.
fn normalised(log: &Path, expected_lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_once("]: ").map(|(_, m)| m.to_string()))
            .filter(|m| {
                ["Connect:", "Auth:", "Closing", "Fatal"]
                    .iter()
                    .any(|p| m.starts_with(p))
            })
            .map(|m| {
                let mut out = String::new();
                for (i, part) in m.split("127.0.0.1:").enumerate() {
                    if i > 0 {
                        out.push_str("127.0.0.1:PORT");
                        out.push_str(part.trim_start_matches(|c: char| c.is_ascii_digit()));
                    } else {
                        out.push_str(part);
                    }
                }
                let words: Vec<String> = out
                    .split(' ')
                    .map(|w| match w.split_once('=') {
                        Some((k @ ("received" | "sent"), _)) => format!("{k}=N"),
                        _ => w.to_string(),
                    })
                    .collect();
                words.join(" ")
            })
            .collect();
        if lines.len() >= expected_lines || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn portcullis_writes_the_same_log_lines_as_debians_perdition() {
    assert!(
        Path::new(PERDITION).exists(),
        "perdition is not installed: run scripts/test.sh"
    );
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    // perdition drops to user nobody, then (re)opens its log file.
    let real_log = dir.path().join("perdition.log");
    fs::write(&real_log, "").unwrap();
    let _ = Command::new("chmod").arg("666").arg(&real_log).status();
    let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
    let real_port = free_port();
    let child = Command::new(PERDITION)
        .args(flags(&dovecot, real_port, &real_log))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _real = Perdition(child);

    let our_log = dir.path().join("portcullis.log");
    let our_port = free_port();
    let mut args = vec!["perdition".to_string()];
    args.extend(flags(&dovecot, our_port, &our_log));
    let _ours = Proxy::start_args(&args, &[]);

    for port in [real_port, our_port] {
        assert!(wait_for_port(port, Duration::from_secs(10)), "port {port}");
    }
    // The readiness probe above is itself a client that left without logging in; wait for
    // both programs to have logged it so that the sessions below line up.
    normalised(&real_log, 2);
    normalised(&our_log, 2);
    session(real_port);
    session(our_port);

    // Connect + Fatal (probe), Connect, Auth failed, Auth ok, Closing, Connect + Fatal.
    let real = normalised(&real_log, 8);
    let ours = normalised(&our_log, 8);
    assert_eq!(real.len(), 8, "perdition wrote:\n{}", real.join("\n"));
    assert_eq!(ours, real);
}
