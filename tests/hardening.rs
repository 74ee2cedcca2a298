//! Hardening (issue 6): the faults found by trying Portcullis as a hostile internet would, each
//! reproduced here. A log destination that stops draining must not stop the proxy; every client
//! refused over the connection limit gets its answer; every session that shutdown ends gets its
//! log line; NUL, CR or LF in credentials never reach a back end or the log; a slow back end
//! still gets the client an answer; POP3's refusal before STLS does not claim a system fault.
//! Native TOML configuration throughout.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::sleep;
use std::time::{Duration, Instant};

use support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `[log]` to the proxy's captured output, then `limits` (TOML lines, may be empty).
fn head(limits: &str) -> String {
    format!("[log]\ndestination = \"-\"\n\n[limits]\n{limits}\n")
}

/// One `[[listener]]` of `protocol` on 127.0.0.1:`port`, `tls` mode (cert and key added for
/// TLS modes), in front of 127.0.0.1:`backend_port` reached in plaintext.
fn listener(protocol: &str, port: u16, tls: &str, backend_port: u16) -> String {
    let c = certs();
    let files = if tls == "none" {
        String::new()
    } else {
        format!(
            "cert = \"{}\"\nkey = \"{}\"\n",
            c.cert.display(),
            c.key.display()
        )
    };
    format!(
        "\n[[listener]]\nprotocol = \"{protocol}\"\nbind = [\"127.0.0.1:{port}\"]\n\
         tls = \"{tls}\"\n{files}\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend_port}\n"
    )
}

/// Base64 (RFC 4648, with padding) of `data`, for SASL PLAIN responses.
fn b64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The lines of `log` of `kind` ("Auth:", "Closing session:", ...) for the client whose local
/// port is `client_port`.
fn lines_for(log: &str, kind: &str, client_port: u16) -> Vec<String> {
    let needle = format!("{kind} 127.0.0.1:{client_port}->");
    log.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Waits up to 10 s for a line of `kind` for the client at `client` in the proxy's log.
fn wait_line_for(proxy: &Proxy, kind: &str, client: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(l) = lines_for(&proxy.log_text(), kind, client.port()).pop() {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind:?} line for {client}; log:\n{}",
            proxy.log_text()
        );
        sleep(Duration::from_millis(25));
    }
}

/// The one failed Auth line of the client at `client` (it also logged in properly later).
fn failed_auth_line(proxy: &Proxy, client: SocketAddr) -> String {
    // The successful login came after the refused one, so both are in once it is.
    wait_line_for(proxy, "Auth:", client);
    let failed: Vec<String> = lines_for(&proxy.log_text(), "Auth:", client.port())
        .into_iter()
        .filter(|l| !l.ends_with("status=\"ok\""))
        .collect();
    assert_eq!(
        failed.len(),
        1,
        "expected one failed Auth line for {client}; log:\n{}",
        proxy.log_text()
    );
    failed.into_iter().next().unwrap()
}

/// The refused login was decided by the proxy alone: the Auth line says so and names no server.
fn assert_refused_locally(proxy: &Proxy, client: SocketAddr, hidden: &str) {
    let auth = failed_auth_line(proxy, client);
    assert!(
        auth.contains("server=\"(null):(null)\"")
            && auth.ends_with("status=\"failed: local authentication failure\""),
        "the login with a NUL/CR/LF in its credentials was not refused before the back end: \
         {auth}"
    );
    let log = proxy.log_text();
    assert!(
        !log.contains(hidden),
        "{hidden:?} (after the bad character) reached the log:\n{log}"
    );
}

/// `name=<number>` in `line`.
fn count_field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A `portcullis` child started by a test itself; killed on drop if still running.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

// ---------------------------------------------------------------------------------------------
// 1. A log destination that stops draining
// ---------------------------------------------------------------------------------------------

/// Connects, pipelines `a LOGOUT` and reads to the proxy's close: a Connect and a Closing NULL
/// line in the log. False if the proxy did not answer and close in time.
fn connect_and_logout(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    if s.set_read_timeout(Some(READ_TIMEOUT)).is_err() || s.write_all(b"a LOGOUT\r\n").is_err() {
        return false;
    }
    let mut got = Vec::new();
    s.read_to_end(&mut got).is_ok() && String::from_utf8_lossy(&got).contains("a OK")
}

/// Fault 1: `Logger::write` wrote synchronously on the runtime's worker threads, so once a
/// `destination = "-"` pipe stopped being read (~64 KiB), new clients got no greeting, logged-in
/// sessions went unanswered and logins hung until the pipe drained. Now lines go through a
/// bounded queue (`queue_lines`); what does not fit is dropped (Auth lines last) and counted.
#[test]
fn a_stalled_log_pipe_never_stops_the_proxy() {
    let dc = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = "[log]\ndestination = \"-\"\nqueue_lines = 64\n\n[limits]\nshutdown_grace = 1\n"
        .to_string()
        + &listener("imap", port, "none", dc.imap);
    let config = dir.path().join("portcullis.toml");
    std::fs::write(&config, toml).unwrap();
    guard_off_unless_configured_in(&config);
    let stderr_path = dir.path().join("stderr");
    let mut proxy = Spawned(
        Command::new(portcullis_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn portcullis"),
    );
    // The log pipe: nobody reads it until the end of the test.
    let mut log_pipe = proxy.0.stdout.take().unwrap();
    let stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let deadline = Instant::now() + PROXY_START_TIMEOUT;
    while !port_open(port) {
        if let Ok(Some(status)) = proxy.0.try_wait() {
            panic!("portcullis exited early ({status}); stderr:\n{}", stderr());
        }
        assert!(
            Instant::now() < deadline,
            "proxy not listening; stderr:\n{}",
            stderr()
        );
        sleep(Duration::from_millis(50));
    }

    // A user logged in before the log stalls.
    let mut session = Client::plain(port);
    session.expect_line("* OK");
    imap_login(&mut session, "a", "bob", "bobpw");

    // ~1500 short visits, two lines each (~200 bytes): far more than the 64 KiB pipe and the
    // 64-line queue hold.
    let stop = Arc::new(AtomicBool::new(false));
    let unanswered = Arc::new(AtomicUsize::new(0));
    let visitors: Vec<_> = (0..4)
        .map(|_| {
            let (stop, unanswered) = (stop.clone(), unanswered.clone());
            std::thread::spawn(move || {
                for _ in 0..375 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if !connect_and_logout(port) {
                        // The proxy has stalled: no point in queueing more behind it.
                        unanswered.fetch_add(1, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for v in visitors {
        v.join().unwrap();
    }
    assert_eq!(
        unanswered.load(Ordering::Relaxed),
        0,
        "clients got no answer within {READ_TIMEOUT:?} while the log pipe was not read \
         (the proxy stalled on its log)"
    );

    // The pipe is still not read. A new client is greeted...
    let mut fresh = Client::plain(port);
    fresh.expect_line("* OK");
    // ...the logged-in user is served...
    session.send_line("n NOOP");
    let noop = session.read_until_tagged("n").pop().unwrap();
    assert!(noop.starts_with("n OK"), "{noop}");
    // ...and a failed login is answered.
    let mut failing = Client::plain(port);
    failing.expect_line("* OK");
    let failing_port = failing.local_addr().port();
    failing.send_line("f LOGIN alice wrong-password");
    let answer = failing.read_until_tagged("f").pop().unwrap();
    assert!(answer.starts_with("f NO"), "{answer}");

    // Now read the log to its end; then stop the proxy.
    let drain = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = log_pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    session.send_line("z LOGOUT");
    drop(session);
    drop(fresh);
    drop(failing);
    // Give the writer a moment to drain the queue before shutdown.
    sleep(Duration::from_millis(500));
    send_signal(proxy.0.id(), "TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
    drop(proxy); // kills it if it is still running, so that the pipe ends
    let log = drain.join().unwrap();

    let auth = lines_for(&log, "Auth:", failing_port);
    assert!(
        auth.len() == 1 && auth[0].ends_with("status=\"failed: Re-Authentication Failure\""),
        "the failed login's Auth line (fail2ban's input) was lost: {auth:?}; log:\n{log}\n\
         stderr:\n{}",
        stderr()
    );
    let dropped = log
        .lines()
        .find_map(|l| {
            l.split_once("Log destination too slow: ")
                .map(|(_, rest)| rest.to_string())
        })
        .unwrap_or_else(|| {
            panic!("no \"Log destination too slow:\" line; log:\n{log}");
        });
    let n: u64 = dropped
        .trim_end()
        .strip_suffix(" lines dropped")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("bad drop count line: {dropped:?}"));
    assert!(n > 0, "{dropped}");
}

// ---------------------------------------------------------------------------------------------
// 2. A burst of clients over the connection limit
// ---------------------------------------------------------------------------------------------

/// Fault 2: over `connection_limit`, at most 64 refusals were in flight per listener
/// (`MAX_REFUSALS_IN_FLIGHT`); the rest of a burst got a bare close instead of the promised
/// `* BYE [UNAVAILABLE]`. Now every refused plain-TCP client gets its line.
#[test]
fn every_client_of_a_burst_over_the_limit_is_told_why() {
    const HELD: usize = 20;
    const BURST: usize = 1000;
    const THREADS: usize = 10;
    let port = free_port();
    let toml = head("connection_limit = 20") + &listener("imap", port, "none", free_port());
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut held: Vec<Client> = (0..HELD)
        .map(|_| {
            let mut c = Client::plain(port);
            c.expect_line("* OK");
            c
        })
        .collect();

    // Connect all at once from several threads, then read what each was told.
    let start = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let socks: Vec<std::io::Result<TcpStream>> = (0..BURST / THREADS)
                    .map(|_| TcpStream::connect(("127.0.0.1", port)))
                    .collect();
                let deadline = Instant::now() + Duration::from_secs(30);
                let (mut told, mut bare, mut silent, mut failed) = (0, 0, 0, Vec::new());
                for sock in socks {
                    let mut sock = match sock {
                        Ok(s) => s,
                        Err(e) => {
                            failed.push(format!("connect: {e}"));
                            continue;
                        }
                    };
                    let left = deadline.saturating_duration_since(Instant::now());
                    let _ = sock.set_read_timeout(Some(left.max(Duration::from_millis(50))));
                    let mut got = Vec::new();
                    let mut buf = [0u8; 256];
                    let end = loop {
                        match sock.read(&mut buf) {
                            Ok(0) => break "eof",
                            Ok(n) => {
                                got.extend_from_slice(&buf[..n]);
                                if got.contains(&b'\n') {
                                    break "line";
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                break "timeout"
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break "eof",
                        }
                    };
                    let text = String::from_utf8_lossy(&got);
                    if text.starts_with("* BYE [UNAVAILABLE]") {
                        told += 1;
                    } else if got.is_empty() && end == "eof" {
                        bare += 1;
                    } else if got.is_empty() {
                        silent += 1;
                    } else {
                        failed.push(format!("unexpected answer {text:?}"));
                    }
                }
                (told, bare, silent, failed)
            })
        })
        .collect();
    let (mut told, mut bare, mut silent, mut failed) = (0, 0, 0, Vec::new());
    for w in workers {
        let (t, b, s, f) = w.join().unwrap();
        told += t;
        bare += b;
        silent += s;
        failed.extend(f);
    }
    assert!(
        told == BURST && bare == 0 && silent == 0 && failed.is_empty(),
        "of {BURST} clients over the limit, {told} got \"* BYE [UNAVAILABLE]\", {bare} a bare \
         close, {silent} nothing within 30 s; other problems: {failed:?}"
    );

    // The held sessions still count: one leaves, and its place is free again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::plain(port);
        let first = c.read_line();
        if first.starts_with("* OK") {
            break;
        }
        assert!(first.starts_with("* BYE"), "{first:?}");
        assert!(
            Instant::now() < deadline,
            "slot not freed 5 s after a client left; log:\n{}",
            proxy.log_text()
        );
        sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Shutdown accounting
// ---------------------------------------------------------------------------------------------

/// Fault 3: at SIGTERM, only sessions that ended by themselves during the grace period got
/// their `Closing session` line; those still relaying when it ended lost their byte counts, and
/// the pre-login clients told BYE got no line at all. Now each gets its line.
#[test]
fn sigterm_logs_every_session_it_ends_and_every_client_it_turns_away() {
    let dc = Dovecot::start();
    let port = free_port();
    let toml = head("shutdown_grace = 1") + &listener("imap", port, "none", dc.imap);
    let mut proxy = Proxy::start_toml(&toml, &[port]);

    // Logged-in sessions that moved bytes both ways: (client, bytes it sent after login,
    // bytes it read after login).
    let select = "s SELECT INBOX";
    let mut sessions = Vec::new();
    for (user, pass) in &USERS[..3] {
        let mut c = Client::plain(port);
        c.expect_line("* OK");
        imap_login(&mut c, "a", user, pass);
        c.send_line(select);
        let lines = c.read_until_tagged("s");
        assert!(lines.last().unwrap().starts_with("s OK"), "{lines:?}");
        let read: usize = lines.iter().map(|l| l.len() + 2).sum();
        sessions.push((c, select.len() + 2, read));
    }
    let mut waiting: Vec<Client> = (0..5)
        .map(|_| {
            let mut c = Client::plain(port);
            c.expect_line("* OK");
            c
        })
        .collect();

    proxy.signal_term();
    for c in &mut waiting {
        let bye = c.expect_line("* BYE");
        assert!(c.is_closed(), "not closed after {bye:?}");
    }
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running; log:\n{}", proxy.log_text()));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        proxy.log_text()
    );
    for (c, _, _) in &mut sessions {
        c.read_to_end_or_eof();
    }

    let log = proxy.log_text();
    let mut problems = Vec::new();
    for c in &waiting {
        let p = c.local_addr().port();
        let null = lines_for(&log, "Closing NULL session:", p);
        if null.len() != 1 {
            problems.push(format!(
                "pre-login client :{p}: {} Closing NULL session lines",
                null.len()
            ));
        }
        let fatal: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Fatal Error") && l.contains(&format!("127.0.0.1:{p}->")))
            .collect();
        if !fatal.is_empty() {
            problems.push(format!("pre-login client :{p}: {fatal:?}"));
        }
    }
    for (c, sent_by_client, read_by_client) in &sessions {
        let p = c.local_addr().port();
        let closing = lines_for(&log, "Closing session:", p);
        let [line] = closing.as_slice() else {
            problems.push(format!(
                "session :{p}: {} Closing session lines",
                closing.len()
            ));
            continue;
        };
        let (received, sent) = (count_field(line, "received"), count_field(line, "sent"));
        let ok = received == Some(*sent_by_client as u64)
            && sent.is_some_and(|s| s >= *read_by_client as u64 && s > 0);
        if !ok {
            problems.push(format!(
                "session :{p}: expected received={sent_by_client} sent>={read_by_client}: {line}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "sessions ended by shutdown without their log line:\n{}\nlog:\n{log}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 4. NUL, CR and LF in credentials
// ---------------------------------------------------------------------------------------------

/// Fault 4: a NUL inside an IMAP LOGIN user name reached the back end inside the SASL PLAIN
/// message the proxy builds (`user0001\0pw-secret1` → `\0user0001\0pw-secret1\0x`), and the log
/// recorded the name, password included. Now it is refused before any back-end contact.
#[test]
fn imap_login_with_a_nul_in_the_user_name_is_refused_before_the_back_end() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(
        &(head("") + &listener("imap", port, "none", dc.imap)),
        &[port],
    );
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let user = b"user0001\0pw-secret1";
    let mut cmd = format!("a LOGIN {{{}+}}\r\n", user.len()).into_bytes();
    cmd.extend_from_slice(user);
    cmd.extend_from_slice(b" \"x\"\r\n");
    c.send(&cmd);
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a NO"), "{answer}");
    // The session goes on.
    imap_login(&mut c, "b", "alice", "alicepw");
    assert_refused_locally(&proxy, c.local_addr(), "pw-secret1");
    let dovecot_log = dc.log_text();
    assert!(!dovecot_log.contains("user0001"), "{dovecot_log}");
}

/// Fault 4, IMAP AUTHENTICATE PLAIN: a CR in the password went to the back end.
#[test]
fn imap_authenticate_with_a_cr_in_the_password_is_refused_before_the_back_end() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(
        &(head("") + &listener("imap", port, "none", dc.imap)),
        &[port],
    );
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line(&format!(
        "a AUTHENTICATE PLAIN {}",
        b64(b"\0bob\0bobpw\rzz-pw-tail")
    ));
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a NO"), "{answer}");
    imap_login(&mut c, "b", "alice", "alicepw");
    assert_refused_locally(&proxy, c.local_addr(), "zz-pw-tail");
    let dovecot_log = dc.log_text();
    assert!(!dovecot_log.contains("bob"), "{dovecot_log}");
}

/// Fault 4, POP3 AUTH PLAIN: USER refused NUL already, but an LF in the PLAIN user name went to
/// the back end and into the log.
#[test]
fn pop3_auth_plain_with_an_lf_in_the_user_name_is_refused_before_the_back_end() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(
        &(head("") + &listener("pop3", port, "none", dc.pop3)),
        &[port],
    );
    let mut c = Client::plain(port);
    c.expect_line("+OK");
    c.send_line(&format!("AUTH PLAIN {}", b64(b"\0bob\nzz-pop-tail\0bobpw")));
    let answer = c.read_line();
    assert!(answer.starts_with("-ERR"), "{answer}");
    c.send_line("USER alice");
    c.expect_line("+OK");
    c.send_line("PASS alicepw");
    c.expect_line("+OK");
    c.send_line("STAT");
    c.expect_line("+OK 3 ");
    assert_refused_locally(&proxy, c.local_addr(), "zz-pop-tail");
    let dovecot_log = dc.log_text();
    assert!(!dovecot_log.contains("zz-pop-tail"), "{dovecot_log}");
}

/// Fault 4, ManageSieve AUTHENTICATE "PLAIN": a CR in the user name went to the back end and
/// into the log.
#[test]
fn managesieve_authenticate_with_a_cr_in_the_user_name_is_refused_before_the_back_end() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(
        &(head("") + &listener("managesieve", port, "none", dc.sieve)),
        &[port],
    );
    let mut c = Client::plain(port);
    let greeting = sieve_read_response(&mut c);
    assert!(greeting.last().unwrap().starts_with("OK"), "{greeting:?}");
    c.send_line(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"",
        b64(b"\0carol@example.org\rzz-sieve-tail\0carolpw")
    ));
    let answer = sieve_read_response(&mut c);
    assert!(answer.last().unwrap().starts_with("NO"), "{answer:?}");
    c.send_line(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"",
        b64(b"\0alice\0alicepw")
    ));
    let ok = sieve_read_response(&mut c);
    assert!(ok.last().unwrap().starts_with("OK"), "{ok:?}");
    c.send_line("LISTSCRIPTS");
    let list = sieve_read_response(&mut c);
    assert!(list.last().unwrap().starts_with("OK"), "{list:?}");
    assert_refused_locally(&proxy, c.local_addr(), "zz-sieve-tail");
    let dovecot_log = dc.log_text();
    assert!(!dovecot_log.contains("zz-sieve-tail"), "{dovecot_log}");
}

// ---------------------------------------------------------------------------------------------
// 8. A back end slower than the client's login timeout
// ---------------------------------------------------------------------------------------------

/// An IMAP back end that greets, answers CAPABILITY, and never answers anything else (a login
/// delayed by an auth penalty). Returns its port and a flag set once a login command arrived.
fn back_end_that_never_answers_the_login() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let login_seen = Arc::new(AtomicBool::new(false));
    let seen = login_seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let _ = w.write_all(b"* OK fake\r\n");
                let mut lines = BufReader::new(conn);
                let mut line = String::new();
                while matches!(lines.read_line(&mut line), Ok(n) if n > 0) {
                    let mut words = line.split_whitespace();
                    let tag = words.next().unwrap_or("*").to_string();
                    let command = words.next().unwrap_or("").to_ascii_uppercase();
                    if command == "CAPABILITY" {
                        let _ = write!(w, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n");
                    } else if command == "LOGIN" || command == "AUTHENTICATE" {
                        seen.store(true, Ordering::Relaxed);
                    }
                    line.clear();
                }
            });
        }
    });
    (port, login_seen)
}

/// Fault 8: the client's `login_timeout` also cut the back-end wait, so a back end slower than
/// it (Dovecot's auth penalty) gave the client a silent close. Now the back-end login runs on
/// `backend_login_timeout` and the client is always answered `NO [UNAVAILABLE]`.
#[test]
fn a_back_end_slower_than_login_timeout_still_gets_the_client_an_answer() {
    let (backend, login_seen) = back_end_that_never_answers_the_login();
    let port = free_port();
    let toml = head("login_timeout = 1\nbackend_login_timeout = 3")
        + &listener("imap", port, "none", backend);
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let sent = Instant::now();
    let answer = c.read_until_tagged("a").pop().unwrap();
    let took = sent.elapsed();
    assert!(
        answer.starts_with("a NO") && answer.contains("[UNAVAILABLE]"),
        "{answer}"
    );
    assert!(
        took >= Duration::from_millis(2500),
        "answered after {took:?}: the client's login_timeout (1 s) cut the back-end wait \
         (backend_login_timeout = 3 s); log:\n{}",
        proxy.log_text()
    );
    assert!(
        login_seen.load(Ordering::Relaxed),
        "the proxy never sent its login to the back end"
    );
    assert!(
        proxy.wait_log(
            "timed out after 3 s waiting for the login answer",
            Duration::from_secs(5)
        ),
        "no warning naming the step that timed out; log:\n{}",
        proxy.log_text()
    );
    let auth = wait_line_for(&proxy, "Auth:", c.local_addr());
    assert!(
        auth.ends_with("status=\"failed: Connection Negotiation Failure\""),
        "{auth}"
    );
}

// ---------------------------------------------------------------------------------------------
// 9. POP3 USER before STLS
// ---------------------------------------------------------------------------------------------

/// Fault 9: on a TLS-required listener, `USER` before `STLS` was answered `-ERR [SYS/PERM]`, a
/// code claiming a permanent system fault (some clients then report the server as broken).
#[test]
fn pop3_user_before_stls_is_refused_without_a_system_fault_code() {
    let port = free_port();
    let toml = head("") + &listener("pop3", port, "starttls-required", free_port());
    let _proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("+OK");
    c.send_line("USER alice");
    let answer = c.read_line();
    assert!(
        answer.starts_with("-ERR") && !answer.contains("[SYS/"),
        "{answer}"
    );
    // An ordinary refusal: the client goes on with STLS and may then log in.
    c.send_line("STLS");
    c.expect_line("+OK");
    c.starttls();
    c.send_line("USER alice");
    c.expect_line("+OK");
}

// ---------------------------------------------------------------------------------------------
// Review of issue 6 (commit 696a878): what the first fixes still let through
// ---------------------------------------------------------------------------------------------

/// Review finding: every back-end wait pushed the login deadline back by its length, without
/// limit, so a client repeating logins against a back end that hangs held its pre-login slot
/// until `max_commands` (50 logins, ~50 s here). Now the deadline never goes beyond
/// accept + `login_timeout` + `backend_connect_timeout` + `backend_login_timeout` (4 s here).
#[test]
fn repeated_logins_against_a_hanging_back_end_cannot_hold_a_slot_forever() {
    let (backend, login_seen) = back_end_that_never_answers_the_login();
    let port = free_port();
    let toml = head(
        "login_timeout = 2\nbackend_login_timeout = 1\nbackend_connect_timeout = 1\n\
         connection_limit = 1",
    ) + &listener("imap", port, "none", backend);
    let proxy = Proxy::start_toml(&toml, &[port]);

    let mut c = Client::plain(port);
    let connected = Instant::now();
    c.expect_line("* OK");
    let mut logins = 0;
    let bye = 'session: loop {
        assert!(
            connected.elapsed() < Duration::from_secs(15),
            "the client still holds its pre-login slot {:?} after connecting, after {logins} \
             logins answered NO [UNAVAILABLE] (the ceiling is 4 s); log:\n{}",
            connected.elapsed(),
            proxy.log_text()
        );
        let tag = format!("a{logins}");
        c.send_line(&format!("{tag} LOGIN alice pw"));
        loop {
            let line = c.read_line();
            if line.starts_with("* BYE") {
                break 'session line;
            }
            if line.starts_with(&format!("{tag} ")) {
                assert!(
                    line.starts_with(&format!("{tag} NO")) && line.contains("[UNAVAILABLE]"),
                    "{line}"
                );
                logins += 1;
                break;
            }
        }
    };
    let took = connected.elapsed();
    assert!(bye.starts_with("* BYE Autologout"), "{bye}");
    assert!(
        took < Duration::from_secs(15),
        "closed only after {took:?} ({logins} logins)"
    );
    assert!(c.is_closed(), "not closed after {bye:?}");
    assert!(
        login_seen.load(Ordering::Relaxed),
        "the proxy never sent a login to the back end"
    );

    // The slot is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Client::plain(port);
        let first = next.read_line();
        if first.starts_with("* OK") {
            break;
        }
        assert!(first.starts_with("* BYE"), "{first:?}");
        assert!(
            Instant::now() < deadline,
            "slot not freed 5 s after the client was logged out; log:\n{}",
            proxy.log_text()
        );
        sleep(Duration::from_millis(100));
    }
}

/// A `portcullis run` child whose log (`destination = "-"`) goes to a pipe that nobody reads
/// until the test takes it, for `toml`; returns once `port` accepts connections.
struct StalledLog {
    proxy: Spawned,
    /// The read end of the log pipe.
    pipe: Option<std::process::ChildStdout>,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl StalledLog {
    fn start(toml: &str, port: u16) -> StalledLog {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("portcullis.toml");
        std::fs::write(&config, toml).unwrap();
        guard_off_unless_configured_in(&config);
        let stderr = dir.path().join("stderr");
        let mut proxy = Spawned(
            Command::new(portcullis_bin())
                .arg("run")
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr).unwrap())
                .spawn()
                .expect("spawn portcullis"),
        );
        let pipe = proxy.0.stdout.take();
        let mut stalled = StalledLog {
            proxy,
            pipe,
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + PROXY_START_TIMEOUT;
        while !port_open(port) {
            if let Ok(Some(status)) = stalled.proxy.0.try_wait() {
                panic!(
                    "portcullis exited early ({status}); stderr:\n{}",
                    stalled.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "proxy not listening; stderr:\n{}",
                stalled.stderr_text()
            );
            sleep(Duration::from_millis(50));
        }
        stalled
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Reads the pipe to its end while the proxy is stopped with SIGTERM (killed if it has not
    /// exited 15 s later); returns everything it logged.
    fn stop_and_drain(mut self) -> String {
        let mut pipe = self.pipe.take().expect("log pipe");
        let drain = std::thread::spawn(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        });
        // Give the writer a moment to catch up before shutdown.
        sleep(Duration::from_millis(500));
        send_signal(self.proxy.0.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.proxy.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        drop(self.proxy); // kills it if it is still running, so that the pipe ends
        drain.join().unwrap()
    }
}

/// Review finding: `Connection limit reached` warnings were kept like Auth lines when the log
/// destination was too slow, so a flood of connections over the limit (free for an attacker)
/// filled the queue's reserve and pushed out the Auth lines fail2ban needs. Now warnings are
/// dropped first and the Auth line survives.
#[test]
fn a_flood_of_refusals_cannot_push_auth_lines_out_of_a_stalled_log() {
    const REFUSALS: usize = 3000;
    let dc = Dovecot::start();
    let port = free_port();
    let toml = "[log]\ndestination = \"-\"\nqueue_lines = 64\n\n\
                [limits]\nconnection_limit = 1\nshutdown_grace = 1\n"
        .to_string()
        + &listener("imap", port, "none", dc.imap);
    let proxy = StalledLog::start(&toml, port);

    // The one slot: a client that will fail to log in (retried while the start-up probe's
    // connection still holds it).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut held = loop {
        let mut c = Client::plain(port);
        let first = c.read_line();
        if first.starts_with("* OK") {
            break c;
        }
        assert!(first.starts_with("* BYE"), "{first:?}");
        assert!(Instant::now() < deadline, "no free slot: {first:?}");
        sleep(Duration::from_millis(50));
    };
    let held_port = held.local_addr().port();

    // Connect and close, many times over the limit: one warning line each, far more than the
    // 64 KiB pipe and the 64-line queue hold.
    let mut told = 0;
    for _ in 0..REFUSALS {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let _ = sock.set_read_timeout(Some(READ_TIMEOUT));
        let mut got = Vec::new();
        let _ = sock.read_to_end(&mut got);
        told += usize::from(got.starts_with(b"* BYE [UNAVAILABLE]"));
    }
    assert_eq!(told, REFUSALS, "not every refused client was told why");

    // The held client's failed login is answered...
    held.send_line("f LOGIN alice wrong-password");
    let answer = held.read_until_tagged("f").pop().unwrap();
    assert!(answer.starts_with("f NO"), "{answer}");
    drop(held);

    // ...and its Auth line (fail2ban's input) is in the log once the pipe is read.
    let stderr = proxy.stderr_text();
    let log = proxy.stop_and_drain();
    let auth = lines_for(&log, "Auth:", held_port);
    assert!(
        auth.len() == 1 && auth[0].ends_with("status=\"failed: Re-Authentication Failure\""),
        "the failed login's Auth line was pushed out by {REFUSALS} refusal warnings: \
         {auth:?}; log:\n{log}\nstderr:\n{stderr}"
    );
    // The flood did overflow the queue (else this test proves nothing).
    let dropped: u64 = log
        .lines()
        .filter_map(|l| l.split_once("Log destination too slow: "))
        .filter_map(|(_, rest)| {
            rest.trim_end()
                .strip_suffix(" lines dropped")?
                .parse::<u64>()
                .ok()
        })
        .sum();
    assert!(
        dropped > 0,
        "no lines were dropped: the flood did not fill the queue; log:\n{log}"
    );
}

/// The client's local port's Auth line on a Login Disabled refusal, with what the checks need.
fn assert_login_disabled_logged(proxy: &Proxy, client: SocketAddr, user: &str, hidden: &str) {
    let auth = wait_line_for(proxy, "Auth:", client);
    assert!(
        auth.contains(&format!("authentication_id=\"{user}\""))
            && auth.ends_with("status=\"failed: Login Disabled\""),
        "{auth}"
    );
    let log = proxy.log_text();
    assert!(
        !log.contains(hidden),
        "{hidden:?} (after the NUL in the user name) reached the log:\n{log}"
    );
}

/// Review finding: a login refused because TLS is required (`Login Disabled`) logged the user
/// name as given, so `alice\0hunter2` put the password after the NUL in the log. Now the name
/// is logged only up to a NUL, CR or LF, as on the other login paths.
#[test]
fn imap_login_disabled_does_not_log_what_follows_a_nul_in_the_user_name() {
    let port = free_port();
    let toml = head("") + &listener("imap", port, "starttls-required", free_port());
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let user = b"alice\0hunter2";
    let mut cmd = format!("a LOGIN {{{}+}}\r\n", user.len()).into_bytes();
    cmd.extend_from_slice(user);
    cmd.extend_from_slice(b" \"\"\r\n");
    c.send(&cmd);
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a NO [PRIVACYREQUIRED]"), "{answer}");
    assert_login_disabled_logged(&proxy, c.local_addr(), "alice", "hunter2");
}

/// The same finding on POP3: `USER bob\0s3cret` before STLS on a TLS-required listener.
#[test]
fn pop3_login_disabled_does_not_log_what_follows_a_nul_in_the_user_name() {
    let port = free_port();
    let toml = head("") + &listener("pop3", port, "starttls-required", free_port());
    let proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("+OK");
    c.send(b"USER bob\0s3cret\r\n");
    let answer = c.read_line();
    assert!(
        answer.starts_with("-ERR") && answer.contains("STLS"),
        "{answer}"
    );
    assert_login_disabled_logged(&proxy, c.local_addr(), "bob", "s3cret");
}

/// Review finding: a login still waiting for its back end when the shutdown grace ran out was
/// cut with the process: the client got a bare close and the log no Auth line. Now it is
/// answered `NO [UNAVAILABLE]`, told BYE, and both are logged; the process exits cleanly.
#[test]
fn a_login_waiting_for_its_back_end_at_the_end_of_the_grace_is_answered_and_logged() {
    let (backend, login_seen) = back_end_that_never_answers_the_login();
    let port = free_port();
    let toml = head("shutdown_grace = 1") + &listener("imap", port, "none", backend);
    let mut proxy = Proxy::start_toml(&toml, &[port]);
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !login_seen.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "the proxy never sent its login to the back end; log:\n{}",
            proxy.log_text()
        );
        sleep(Duration::from_millis(20));
    }

    proxy.signal_term();
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(
        answer.starts_with("a NO") && answer.contains("[UNAVAILABLE]"),
        "{answer}"
    );
    let bye = c.expect_line("* BYE");
    assert!(bye.contains("shutting down"), "{bye}");
    assert!(c.is_closed(), "not closed after {bye:?}");
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running; log:\n{}", proxy.log_text()));
    assert!(
        status.success(),
        "exit {status}; log:\n{}",
        proxy.log_text()
    );

    let log = proxy.log_text();
    let client_port = c.local_addr().port();
    let auth = lines_for(&log, "Auth:", client_port);
    assert!(
        auth.len() == 1 && auth[0].ends_with("status=\"failed: Connection Negotiation Failure\""),
        "{auth:?}; log:\n{log}"
    );
    let null = lines_for(&log, "Closing NULL session:", client_port);
    assert_eq!(null.len(), 1, "{null:?}; log:\n{log}");
}

/// Review finding: user names reached log lines whole, so one client could write lines of
/// many kilobytes (cut by syslog daemons, filling the log queue's memory). Now a name is
/// logged up to 256 bytes, with how many were left out.
#[test]
fn a_long_user_name_is_capped_in_the_auth_line() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(
        &(head("") + &listener("imap", port, "none", dc.imap)),
        &[port],
    );
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    let user = vec![b'a'; 5000];
    let mut cmd = format!("a LOGIN {{{}+}}\r\n", user.len()).into_bytes();
    cmd.extend_from_slice(&user);
    cmd.extend_from_slice(b" \"pw\"\r\n");
    c.send(&cmd);
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a NO"), "{answer}");
    let auth = wait_line_for(&proxy, "Auth:", c.local_addr());
    assert!(
        auth.len() < 1500 && auth.contains("...(+4744 bytes)"),
        "Auth line of {} bytes: {auth}",
        auth.len()
    );
}
