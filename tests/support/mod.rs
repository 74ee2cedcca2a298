//! Shared harness for the Portcullis integration tests (`mod support;`).
//!
//! Everything here is synchronous std code (plus `rustls` for the TLS client), one file per
//! concern, all of it re-exported here:
//! * `certs.rs` ([`certs`]): a throw-away CA + `localhost` server certificate made with the
//!   `openssl` CLI;
//! * `dovecot.rs` ([`Dovecot`]): a private Dovecot instance (IMAP, IMAPS, POP3, POP3S,
//!   ManageSieve) on free loopback ports, with users alice/alicepw, bob/bobpw and
//!   carol@example.org/carolpw;
//! * `proxy.rs` ([`Proxy`]): the `portcullis` binary under test, its output captured in a log;
//! * `client.rs` ([`Client`]): a line-oriented protocol client over plain TCP or TLS;
//! * `speak.rs`: the small conversations every test repeats (an IMAP login, a POP3 RETR...);
//! * `postfix.rs` ([`MailServers`], [`Postfix`]): a private Postfix delivering by LMTP to a
//!   private Dovecot that also runs its own submission service (SMTP submission back ends);
//! * `smtp.rs`: SMTP replies, test messages, and the client programs (swaks, msmtp, Python's
//!   smtplib, curl) that submit them;
//! * `admin.rs`: requests to the admin endpoint and the metrics' samples;
//! * `cluster.rs`: Dovecot servers sharing one mail root, each on a loopback address of its
//!   own, and two Portcullis instances with a `pool` of them (issue 19);
//! * `prometheus.rs`: a private Prometheus scraping a test's admin endpoint, and `promtool`;
//! * `ports.rs`, `auth_service.rs`, `databases.rs`, `haproxy.rs`, `redis.rs`, `slapd.rs`: free
//!   ports, an auth_http service, and the other real servers a test may need.
#![allow(dead_code)]

pub mod admin;
pub mod auth_service;
mod certs;
pub mod cluster;
pub mod databases;
pub mod fail2ban;
pub mod haproxy;
pub mod nginx;
pub mod pebble;
pub mod ports;
pub mod prometheus;
pub mod redis;
pub mod slapd;
#[allow(unused_imports)] // each test binary uses some of them
pub use certs::*;
mod dovecot;
#[allow(unused_imports)] // each test binary uses some of them
pub use dovecot::*;
mod proxy;
#[allow(unused_imports)] // each test binary uses some of them
pub use proxy::*;
mod client;
#[allow(unused_imports)] // each test binary uses some of them
pub use client::*;
mod speak;
#[allow(unused_imports)] // each test binary uses some of them
pub use speak::*;
mod postfix;
#[allow(unused_imports)] // each test binary uses some of them
pub use postfix::*;
mod smtp;
#[allow(unused_imports)] // each test binary uses some of them
pub use smtp::*;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Read timeout used by [`Client`] reads.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Proxy`] start-up may take before the test fails.
pub const PROXY_START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Dovecot`] start-up may take before the attempt fails.
pub const DOVECOT_START_TIMEOUT: Duration = Duration::from_secs(20);

/// Perdition mode's stand-in for `/` (see `portcullis::config::perdition::ROOT_ENV`).
pub const PERDITION_ROOT_ENV: &str = "PORTCULLIS_PERDITION_ROOT";

/// Message printed when Dovecot is missing; tests fail with it rather than pass silently.
pub const DOVECOT_MISSING: &str = "dovecot not installed: run scripts/test.sh";

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

/// Prints what its closure returns (every log a test has) when the test panics while it lives:
/// the assertions inside helpers (a greeting, a read that timed out) then show the logs too.
/// Declare it after what the closure reads, so that it is dropped first.
pub struct LogsOnPanic<F: Fn() -> String>(pub F);

impl<F: Fn() -> String> Drop for LogsOnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs at the failure:\n{}", (self.0)());
        }
    }
}

/// Stop process `pid` (a server a test started for itself) once this test process is gone,
/// however it ends.
pub fn end_with_this_process(pid: u32) {
    let me = std::process::id();
    let script =
        format!("while kill -0 {me} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null");
    let _ = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn unique_suffix() -> String {
    static COUNTER: Mutex<u64> = Mutex::new(0);
    let mut c = COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    *c += 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{}", std::process::id(), *c, nanos)
}

/// Runs a command, panicking with its output if it cannot run or fails.
fn run_checked(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn cmd_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A log file's text once it stopped growing for a moment (at most 2 s of waiting).
fn settled(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut text = read_lossy(path);
    loop {
        sleep(Duration::from_millis(50));
        let again = read_lossy(path);
        if again == text || Instant::now() >= deadline {
            return again;
        }
        text = again;
    }
}

/// Polls `path` until it contains `needle`; false after `timeout`.
pub fn wait_file_contains(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while !read_lossy(path).contains(needle) {
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(25));
    }
    true
}

/// A file's text, its bytes that are not UTF-8 replaced; empty when it cannot be read.
pub fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub use ports::free_port;

/// True if something accepts TCP connections on 127.0.0.1:`port` right now.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// True if a socket listens on TCP `port` (any address) right now, going by the kernel's
/// tables (`/proc/net/tcp`, `/proc/net/tcp6`) rather than by connecting: for a server that
/// must not see a probe connection (a balancer's round robin would count it).
pub fn port_listening(port: u16) -> bool {
    const LISTEN: &str = "0A";
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        read_lossy(Path::new(table)).lines().skip(1).any(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1).unwrap_or_default();
            let state = fields.nth(1).unwrap_or_default();
            state == LISTEN
                && local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
    })
}

/// Polls until 127.0.0.1:`port` accepts TCP connections; false after `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_open(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

/// Now, as Unix seconds (what Prometheus and the metrics' timestamps count).
#[allow(dead_code)]
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}
