//! Debian's own perdition and `portcullis perdition`, started with the same command line in
//! front of the same Dovecot, must write the same log lines for the same sessions.

mod support;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
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

/// Both programs started with the same flags (and `extra`), told the same story: their log
/// lines, normalised, once the readiness probe's `probe_lines` and then `total` are there.
fn log_lines_of_both(
    extra: &[&str],
    probe_lines: usize,
    total: usize,
) -> (Vec<String>, Vec<String>) {
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
    let mut real_flags = flags(&dovecot, real_port, &real_log);
    real_flags.extend(extra.iter().map(|s| s.to_string()));
    let child = Command::new(PERDITION)
        .args(real_flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _real = Perdition(child);

    let our_log = dir.path().join("portcullis.log");
    let our_port = free_port();
    let mut args = vec!["perdition".to_string()];
    args.extend(flags(&dovecot, our_port, &our_log));
    args.extend(extra.iter().map(|s| s.to_string()));
    let _ours = Proxy::start_args(&args, &[]);

    for (port, log) in [(real_port, &real_log), (our_port, &our_log)] {
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "nothing listening on {port}; {}:\n{}\nportcullis: {}",
            log.display(),
            fs::read_to_string(log).unwrap_or_default(),
            _ours.everything_logged()
        );
    }
    // The readiness probe above is itself a client that left without logging in; wait for
    // both programs to have logged it so that the sessions below line up.
    normalised(&real_log, probe_lines);
    normalised(&our_log, probe_lines);
    session(real_port);
    session(our_port);
    (normalised(&real_log, total), normalised(&our_log, total))
}

#[test]
fn portcullis_writes_the_same_log_lines_as_debians_perdition() {
    // Connect + Fatal (probe), Connect, Auth failed, Auth ok, Closing, Connect + Fatal.
    let (real, ours) = log_lines_of_both(&[], 2, 8);
    assert_eq!(real.len(), 8, "perdition wrote:\n{}", real.join("\n"));
    assert_eq!(ours, real);
}

#[test]
fn quiet_keeps_the_same_lines_as_debians_perdition() {
    // Only the errors: the Fatal lines of the probe and of the client that left.
    let (real, ours) = log_lines_of_both(&["-q"], 1, 2);
    assert_eq!(real.len(), 2, "perdition wrote:\n{}", real.join("\n"));
    assert_eq!(ours, real);
}

/// `program ARGS` in inetd mode, given one connection accepted here as its standard input
/// and output, as inetd does, its standard error to `stderr`; the client's end, and the child.
fn inetd(program: &Path, args: &[String], stderr: &Path) -> (Client, Child) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let stdin = OwnedFd::from(accepted);
    let stdout = stdin.try_clone().unwrap();
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap();
    (Client::from_stream(client), child)
}

#[test]
fn inetd_mode_serves_one_session_and_logs_it_as_debians_perdition() {
    assert!(
        Path::new(PERDITION).exists(),
        "perdition is not installed: run scripts/test.sh"
    );
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
    let mut logs = Vec::new();
    for (name, program, mut args) in [
        ("perdition", PathBuf::from(PERDITION), vec![]),
        (
            "portcullis",
            portcullis_bin(),
            vec!["perdition".to_string()],
        ),
    ] {
        let log = dir.path().join(format!("{name}.log"));
        fs::write(&log, "").unwrap();
        let _ = Command::new("chmod").arg("666").arg(&log).status();
        // The listening options are inetd's business: both ignore them.
        args.extend(flags(&dovecot, 1, &log));
        args.push("-i".into());
        let stderr = dir.path().join(format!("{name}.stderr"));
        let (mut c, mut child) = inetd(&program, &args, &stderr);
        // Whatever goes wrong below, the failure shows what the program said.
        let session = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.expect_line("* OK");
            c.send_line("a LOGIN alice wrong");
            c.expect_line("a NO");
            c.send_line("b LOGIN alice alicepw");
            let ok = c.read_until_tagged("b");
            assert!(ok.last().unwrap().starts_with("b OK"), "{name}: {ok:?}");
            c.send_line("c LOGOUT");
            c.read_until_tagged("c");
            assert!(c.is_closed(), "{name} did not close");
            // One connection, one process: it is over.
            let deadline = Instant::now() + Duration::from_secs(10);
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < deadline, "{name} still running");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(status.success(), "{name} exited with {status}");
        }));
        if let Err(failure) = session {
            let why = failure
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| failure.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let _ = child.kill();
            panic!(
                "{why}\n{name}'s standard error:\n{}\n{name}'s log:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default(),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        logs.push(normalised(&log, 4));
    }
    // Connect (with inetd_pid=), Auth failed, Auth ok, Closing.
    assert_eq!(logs[0].len(), 4, "perdition wrote:\n{}", logs[0].join("\n"));
    assert!(logs[0][0].contains(" inetd_pid="), "{:?}", logs[0]);
    assert_eq!(logs[1], logs[0]);
}
