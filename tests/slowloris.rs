//! The pre-login phase under a slow flood: thousands of clients that send a byte and then
//! nothing are held with bounded memory while a real user still logs in; and when the process
//! runs out of file descriptors, accepting backs off instead of spinning, and recovers.
//! Memory is reported, and bounded only by a wide margin (no per-connection buffers beyond a
//! few KiB); how fast is for the benchmarks.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The open-files limit of process `pid`: (soft, hard).
fn nofile(pid: u32) -> (u64, u64) {
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            "--nofile",
            "--raw",
            "--noheadings",
        ])
        .args(["--output", "SOFT,HARD"])
        .output()
        .expect("prlimit (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut numbers = text.split_whitespace().map(|n| n.parse().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
}

fn set_nofile(pid: u32, soft: u64, hard: u64) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={soft}:{hard}"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit --nofile={soft}:{hard} failed");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn config(port: u16, backend: u16) -> String {
    format!(
        "[log]\ndestination = \"-\"\n\n[limits]\nlogin_timeout = 120\n\n[[listener]]\n\
         protocol = \"imap\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [listener.backend]\nhost = \"127.0.0.1\"\nport = {backend}\n"
    )
}

#[test]
fn ten_thousand_slow_clients_are_held_while_a_real_user_logs_in() {
    const WANTED: u64 = 10_000;
    // This process holds the client ends, the proxy the others: both need the room.
    let me = std::process::id();
    let (_, hard) = nofile(me);
    let room = hard.min(WANTED + 1_000);
    set_nofile(me, room, hard);
    let clients = room.saturating_sub(1_000).min(WANTED);
    assert!(
        clients >= 1_000,
        "the open-files limit ({hard}) leaves room for only {clients} clients"
    );

    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&config(port, dc.imap), &[port]);
    set_nofile(proxy.pid(), room, hard);
    // Settle, then measure from here.
    let mut warm = Client::plain(port);
    warm.expect_line("* OK");
    imap_login(&mut warm, "w", "alice", "alicepw");
    drop(warm);
    let before = rss_kib(proxy.pid());

    // Slow clients: a byte of a command, then nothing. Spread over 127.0.0.x so that no
    // source runs out of ports.
    let mut slow = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        let source = format!("127.0.1.{}", 1 + i % 250);
        let mut s = connect_from(&source, port).expect("connect a slow client");
        let _ = s.write_all(b"a");
        slow.push(s);
    }
    // Every one of them is a session: wait until the proxy has accepted them all.
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.log_text().matches("Connect:").count() < clients as usize + 1 {
        assert!(
            Instant::now() < deadline,
            "the proxy did not accept them all"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = rss_kib(proxy.pid());

    // A real user, meanwhile.
    let started = Instant::now();
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    imap_login(&mut c, "a", "alice", "alicepw");
    let login = started.elapsed();

    let grown = held.saturating_sub(before);
    let per_client = grown * 1024 / clients;
    eprintln!(
        "slowloris: {clients} slow clients held; proxy RSS {before} KiB -> {held} KiB \
         ({per_client} bytes per client); a real login meanwhile took {} ms",
        login.as_millis()
    );
    assert!(
        per_client < 64 * 1024,
        "{per_client} bytes per held client: more than buffers of a few KiB"
    );
    drop(slow);
}

#[test]
fn out_of_file_descriptors_accept_backs_off_and_recovers() {
    let dc = Dovecot::start();
    let port = free_port();
    let proxy = Proxy::start_toml(&config(port, dc.imap), &[port]);
    // Room for the process's own files and a handful of clients only.
    let (_, hard) = nofile(proxy.pid());
    set_nofile(proxy.pid(), 64, hard);
    let started = Instant::now();
    let flood: Vec<TcpStream> = (0..200)
        .filter_map(|i| connect_from(&format!("127.0.2.{}", 1 + i % 200), port).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    let failures = proxy.log_text().matches("accept failed").count();
    assert!(
        failures > 0,
        "the limit was never reached:\n{}",
        proxy.log_text()
    );
    // Spinning would log thousands of lines in these seconds; backing off, a few dozen.
    let seconds = started.elapsed().as_secs().max(1) as usize;
    assert!(
        failures <= 20 * seconds,
        "{failures} accept failures logged in {seconds} s: accept is spinning"
    );
    drop(flood);
    // Recovered: a real user gets in once the flood is gone.
    let deadline = Instant::now() + READ_TIMEOUT;
    loop {
        if let Ok(mut c) = Client::try_plain(port) {
            if c.read_line().starts_with("* OK") {
                imap_login(&mut c, "a", "alice", "alicepw");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never recovered:\n{}",
            proxy.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
