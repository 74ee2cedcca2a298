//! What a hostile client leaves in the log, and what fail2ban makes of it; and what a TLS
//! client may negotiate. Issue 6, items 5, 6, 7 and 10:
//! * the shipped filter `packaging/fail2ban/filter.d/portcullis.conf` bans IPv4 and IPv6
//!   clients from the lines the proxy really wrote, and Debian's stock `perdition` filter keeps
//!   matching the IPv4 ones;
//! * a failed TLS handshake is logged without `debug`, rate-limited per client address;
//! * invisible and direction-changing Unicode in a user name is escaped in the log;
//! * TLS listeners speak ALPN (RFC 7301) and refuse a client that names another protocol.

mod support;

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread::sleep;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, ClientConnection, StreamOwned};

use support::*;

/// How long a log line may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(10);

/// The shipped filter, as in the source tree.
fn shipped_filter() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/fail2ban/filter.d/portcullis.conf")
}

/// Debian's stock filter for Perdition.
const STOCK_FILTER: &str = "/etc/fail2ban/filter.d/perdition.conf";

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn v4(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn v6(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))
}

/// An address as Perdition's log lines print it: IPv6 without brackets (`::1:51000`).
fn perdition_addr(a: SocketAddr) -> String {
    format!("{}:{}", a.ip(), a.port())
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Polls `path` until it contains `needle`; false after `timeout`.
fn wait_file_contains(path: &Path, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if read_lossy(path).contains(needle) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(25));
    }
}

/// Waits for `needle` in the log at `path`; panics with `why` and the log otherwise.
fn expect_log(path: &Path, needle: &str, why: &str) {
    assert!(
        wait_file_contains(path, needle, LOG_WAIT),
        "{why}: no {needle:?} in the log after {LOG_WAIT:?}; log:\n{}",
        read_lossy(path)
    );
}

/// Waits until the proxy logging to `log` listens on every address in `binds` (its own
/// "Listening on" lines: a probe connection would add lines the tests count).
fn wait_listening(log: &Path, binds: &[SocketAddr]) {
    for b in binds {
        assert!(
            wait_file_contains(log, &format!("Listening on {b} "), PROXY_START_TIMEOUT),
            "proxy not listening on {b}; log:\n{}",
            read_lossy(log)
        );
    }
}

/// TOML for one `[[listener]]` bound to `binds`, with the test certificate when `tls` is not
/// `none`.
fn listener(protocol: &str, binds: &[SocketAddr], tls: &str, backend_port: u16) -> String {
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
    let binds: Vec<String> = binds.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "\n[[listener]]\nprotocol = \"{protocol}\"\nbind = [{}]\ntls = \"{tls}\"\n{files}\
         backend = {{ host = \"127.0.0.1\", port = {backend_port} }}\n",
        binds.join(", ")
    )
}

/// A `[log]` section (plus `[limits]` lines) writing to `destination` under `ident`.
fn log_section(destination: &str, ident: &str, limits: &str) -> String {
    format!("[log]\ndestination = \"{destination}\"\nident = \"{ident}\"\n\n[limits]\n{limits}\n")
}

// ---------------------------------------------------------------------------------------------
// A line client for any address (support::Client only speaks to 127.0.0.1)
// ---------------------------------------------------------------------------------------------

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Line-oriented client over any stream; reads panic after [`READ_TIMEOUT`].
struct Line<S: Read + Write> {
    stream: S,
    buf: Vec<u8>,
    /// The client's own address, as the proxy sees it.
    local: SocketAddr,
}

fn connect(addr: SocketAddr) -> TcpStream {
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    sock.set_nodelay(true).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    sock
}

impl Line<TcpStream> {
    fn plain(addr: SocketAddr) -> Self {
        let stream = connect(addr);
        let local = stream.local_addr().unwrap();
        Line {
            stream,
            buf: Vec::new(),
            local,
        }
    }

    /// After the server's go-ahead to STARTTLS: the TLS handshake offering `alpn`.
    fn starttls(self, alpn: &[&str]) -> io::Result<Line<TlsStream>> {
        assert!(
            self.buf.is_empty(),
            "unread data before the TLS handshake: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        Ok(Line {
            stream: tls_handshake(self.stream, alpn)?,
            buf: Vec::new(),
            local: self.local,
        })
    }
}

impl Line<TlsStream> {
    /// Implicit TLS to `addr` offering the ALPN protocols `alpn` (none if empty).
    fn tls(addr: SocketAddr, alpn: &[&str]) -> io::Result<Self> {
        let sock = connect(addr);
        let local = sock.local_addr().unwrap();
        Ok(Line {
            stream: tls_handshake(sock, alpn)?,
            buf: Vec::new(),
            local,
        })
    }

    /// The protocol the server selected, if any.
    fn alpn(&self) -> Option<String> {
        self.stream
            .conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

impl<S: Read + Write> Line<S> {
    fn send_line(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .and_then(|()| self.stream.flush())
            .unwrap_or_else(|e| panic!("{}: send {line:?}: {e}", self.local));
    }

    fn read_line(&mut self) -> String {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
            }
            let mut tmp = [0u8; 4096];
            match self.stream.read(&mut tmp) {
                Ok(0) => panic!(
                    "{}: connection closed; unread: {:?}",
                    self.local,
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "{}: read error {e}; unread: {:?}",
                    self.local,
                    String::from_utf8_lossy(&self.buf)
                ),
            }
            assert!(Instant::now() < deadline, "{}: read timeout", self.local);
        }
    }

    fn expect_line(&mut self, prefix: &str) -> String {
        let line = self.read_line();
        assert!(
            line.starts_with(prefix),
            "{}: expected a line starting with {prefix:?}, got {line:?}",
            self.local
        );
        line
    }

    /// IMAP: the lines up to and including the one tagged `tag`.
    fn read_until_tagged(&mut self, tag: &str) -> Vec<String> {
        let prefix = format!("{tag} ");
        let mut lines = Vec::new();
        loop {
            let line = self.read_line();
            let done = line.starts_with(&prefix);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Reads until the server closes (EOF, reset or a TLS error); panics after READ_TIMEOUT.
    fn wait_closed(&mut self) {
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut tmp = [0u8; 4096];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("{}: server did not close", self.local)
                }
                Err(_) => return,
            }
            assert!(
                Instant::now() < deadline,
                "{}: server did not close",
                self.local
            );
        }
    }
}

/// rustls client config trusting the test CA and offering `alpn`.
fn client_config(alpn: &[&str]) -> Arc<ClientConfig> {
    let mut config = (*tls_client_config(&certs().ca)).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

fn tls_handshake(mut sock: TcpStream, alpn: &[&str]) -> io::Result<TlsStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(client_config(alpn), name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    Ok(StreamOwned::new(conn, sock))
}

/// The TLS alert the server answered a handshake with, if that is why it failed.
fn alert_of(e: &io::Error) -> Option<AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

/// Asserts that a handshake offering `alpn` to `addr` is refused with RFC 7301's
/// `no_application_protocol` alert.
fn assert_alpn_refused(addr: SocketAddr, alpn: &[&str], listener: &str) {
    match Line::tls(addr, alpn) {
        Ok(mut c) => {
            // A TLS 1.3 server may only complain after the client's Finished: read once.
            let answer = c.stream.read(&mut [0u8; 512]);
            panic!(
                "{listener} listener {addr} accepted a client offering only ALPN {alpn:?} \
                 (negotiated {:?}, first read {answer:?}): a cross-protocol (ALPACA) client \
                 must be refused at the handshake",
                c.alpn()
            );
        }
        Err(e) => assert_eq!(
            alert_of(&e),
            Some(AlertDescription::NoApplicationProtocol),
            "{listener} listener {addr}, ALPN {alpn:?}: expected the no_application_protocol \
             alert, got {e:?}"
        ),
    }
}

/// Sends bytes that are no TLS ClientHello to an implicit-TLS port and waits until the proxy
/// drops the connection; returns the client's address.
fn tls_garbage(addr: SocketAddr) -> SocketAddr {
    let mut sock = connect(addr);
    let local = sock.local_addr().unwrap();
    // An HTTP request where a ClientHello should be: a scanner, or a confused client.
    let _ = sock.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let _ = sock.shutdown(Shutdown::Write);
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut tmp = [0u8; 1024];
    loop {
        match sock.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "{addr} did not drop a client sending garbage"
        );
    }
    local
}

// ---------------------------------------------------------------------------------------------
// fail2ban-regex
// ---------------------------------------------------------------------------------------------

/// What fail2ban-regex said about a log and a filter.
struct Fail2banReport {
    /// The `M matched` of its `Lines: N lines, I ignored, M matched, X missed` summary.
    matched: usize,
    /// Hits of each failregex, in order.
    per_regex: Vec<usize>,
    /// The host captured from each matched line, in log order (`--out ip`).
    hosts: Vec<String>,
    /// The full human-readable report, for failure messages.
    text: String,
}

fn run_fail2ban_regex(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new("fail2ban-regex")
        .args(args)
        .output()
        .expect("run fail2ban-regex (package fail2ban)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "fail2ban-regex {args:?} failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn fail2ban_regex(log: &Path, filter: &Path) -> Fail2banReport {
    let text = run_fail2ban_regex(&[log.as_os_str(), filter.as_os_str()]);
    let summary = text
        .lines()
        .find(|l| l.trim_start().starts_with("Lines:"))
        .unwrap_or_else(|| panic!("no Lines: summary in:\n{text}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    let matched = words
        .iter()
        .position(|w| w.trim_end_matches(',') == "matched")
        .and_then(|i| words[i - 1].parse().ok())
        .unwrap_or_else(|| panic!("no matched count in {summary:?}"));
    // "|   1) [3] ^Auth: ..." under "Failregex: ...", up to the next section.
    let per_regex = text
        .lines()
        .skip_while(|l| !l.starts_with("Failregex:"))
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let (_, rest) = l.split_once(") [")?;
            rest.split(']').next()?.parse().ok()
        })
        .collect();
    let ips = run_fail2ban_regex(&[
        "--out".as_ref(),
        "ip".as_ref(),
        log.as_os_str(),
        filter.as_os_str(),
    ]);
    let hosts = ips
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    Fail2banReport {
        matched,
        per_regex,
        hosts,
        text,
    }
}

/// The shipped filter installed the way the jail example says, next to the stock
/// `common.conf` it includes (`before = common.conf` is looked up in the filter's own
/// directory, which in the source tree has none).
fn install_shipped_filter(dir: &Path) -> PathBuf {
    let filter_d = dir.join("fail2ban/filter.d");
    fs::create_dir_all(&filter_d).unwrap();
    fs::copy(
        "/etc/fail2ban/filter.d/common.conf",
        filter_d.join("common.conf"),
    )
    .expect("fail2ban's common.conf (package fail2ban)");
    let installed = filter_d.join("portcullis.conf");
    fs::copy(shipped_filter(), &installed).expect("the shipped filter");
    installed
}

/// The client address fail2ban must take from `line` if the line is one the shipped filter has
/// to count (a failed login, a client that vanished or timed out before login, a failed TLS
/// handshake); None for every other line. Written independently of the filter's regexes.
fn counted_failure_host(line: &str) -> Option<String> {
    const MARKERS: [&str; 3] = [
        "]: Fatal Error reading authentication information from client ",
        "]: Fatal Error: Timeout reading authentication information from client ",
        "]: TLS handshake failed: ",
    ];
    let rest = if let Some((_, rest)) = line.split_once("]: Auth: ") {
        let counted = [
            "status=\"failed: Re-Authentication Failure\"",
            "status=\"failed: local authentication failure\"",
        ];
        if !counted.iter().any(|s| line.ends_with(s)) {
            return None;
        }
        rest
    } else {
        let m = MARKERS.iter().find(|m| line.contains(**m))?;
        line.split_once(m)?.1
    };
    let client = rest.split("->").next()?;
    let (ip, port) = client.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    Some(ip.to_string())
}

// ---------------------------------------------------------------------------------------------
// The failures fail2ban must see
// ---------------------------------------------------------------------------------------------

/// A proxy logging to a file, after the hostile and the honest clients of
/// [`provoke_failures`] have come and gone.
struct Provoked {
    log: PathBuf,
    /// (client, listener) of each connection that sent TLS garbage.
    garbage: Vec<(SocketAddr, SocketAddr)>,
    dir: tempfile::TempDir,
    dovecot: Dovecot,
    _proxy: Proxy,
}

/// Starts Dovecot and a proxy (an IMAP, an IMAPS and a `login_disabled` IMAP listener, each
/// on 127.0.0.1 and ::1) that logs to a file under `ident`, then from each address family: a
/// wrong password, a client that connects and vanishes, a login refused by the
/// `login_disabled` listener (maintenance), a client sending garbage to the IMAPS port, and a
/// successful login.
/// Returns once every one of those left its line in the log, except the TLS garbage: whether
/// that is logged is item 7, which only some callers test.
fn provoke_failures(ident: &str) -> Provoked {
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let imap = [v4(free_port()), v6(free_port())];
    let imaps = [v4(free_port()), v6(free_port())];
    let maintenance = [v4(free_port()), v6(free_port())];
    let toml = log_section(&log.display().to_string(), ident, "")
        + &listener("imap", &imap, "none", dovecot.imap)
        + &listener("imap", &imaps, "implicit", dovecot.imap)
        + &listener("imap", &maintenance, "none", dovecot.imap)
        + "login_disabled = true\n";
    let proxy = Proxy::start_toml(&toml, &[]);
    wait_listening(&log, &[imap, imaps, maintenance].concat());

    let mut garbage = Vec::new();
    for ((plain, tls), closed) in imap.into_iter().zip(imaps).zip(maintenance) {
        // A password guesser, who then leaves politely (no Fatal Error line for that).
        let mut guesser = Line::plain(plain);
        guesser.expect_line("* OK");
        guesser.send_line("a LOGIN alice guessed-wrong");
        let answer = guesser.read_until_tagged("a").pop().unwrap();
        assert!(answer.starts_with("a NO"), "{answer}");
        guesser.send_line("z LOGOUT");
        guesser.expect_line("* BYE");
        expect_log(
            &log,
            &format!(
                "Auth: {}->{} client-secure=plaintext authorisation_id=NONE \
                 authentication_id=\"alice\" server=\"127.0.0.1:{}\" protocol=IMAP4 \
                 server-secure=plaintext status=\"failed: Re-Authentication Failure\"",
                perdition_addr(guesser.local),
                perdition_addr(plain),
                dovecot.imap
            ),
            "wrong password",
        );

        // A scanner that reads the greeting and hangs up.
        let mut scanner = Line::plain(plain);
        scanner.expect_line("* OK");
        let scanner_addr = scanner.local;
        drop(scanner);
        expect_log(
            &log,
            &format!(
                "Fatal Error reading authentication information from client {}->{}: \
                 Exiting child",
                perdition_addr(scanner_addr),
                perdition_addr(plain)
            ),
            "client that vanished before login",
        );

        // A user who polls during maintenance (`login_disabled`): no failure of theirs.
        let mut polling = Line::plain(closed);
        polling.expect_line("* OK");
        polling.send_line("a LOGIN carol@example.org carolpw");
        let answer = polling.read_until_tagged("a").pop().unwrap();
        assert!(answer.starts_with("a NO"), "{answer}");
        polling.send_line("z LOGOUT");
        polling.expect_line("* BYE");
        expect_log(
            &log,
            &format!(
                "Auth: {}->{} client-secure=plaintext authorisation_id=NONE \
                 authentication_id=\"carol@example.org\"",
                perdition_addr(polling.local),
                perdition_addr(closed)
            ),
            "login refused during maintenance",
        );

        // TLS garbage (its line is item 7: see the callers).
        garbage.push((tls_garbage(tls), tls));

        // A real user, who must never count.
        let mut user = Line::plain(plain);
        user.expect_line("* OK");
        user.send_line("a LOGIN bob bobpw");
        let answer = user.read_until_tagged("a").pop().unwrap();
        assert!(answer.starts_with("a OK"), "{answer}");
        user.send_line("z LOGOUT");
        user.expect_line("* BYE");
        user.wait_closed();
        expect_log(
            &log,
            &format!("Closing session: {}->", perdition_addr(user.local)),
            "successful login",
        );
        expect_log(
            &log,
            &format!(
                "Auth: {}->{} client-secure=plaintext authorisation_id=NONE \
                 authentication_id=\"bob\"",
                perdition_addr(user.local),
                perdition_addr(plain)
            ),
            "successful login",
        );
    }
    Provoked {
        log,
        dir,
        garbage,
        dovecot,
        _proxy: proxy,
    }
}

/// Item 5: fail2ban with the shipped filter bans IPv4 and IPv6 clients alike, for every line
/// that says a client failed (wrong password, vanished before login, sat out the login
/// timeout, sent TLS garbage), and for nothing else (successful logins, logins refused while
/// `login_disabled` is set for maintenance, Connect and Closing lines). The lines come from
/// two proxies sharing one log file, one with the default ident `portcullis` and one with
/// Perdition's `perdition.imaps`; the host fail2ban captures from an IPv6 line
/// (`::1:51000->::1:1143`) is `::1` itself.
#[test]
fn shipped_fail2ban_filter_bans_ipv4_and_ipv6_clients() {
    let provoked = provoke_failures("portcullis");
    let log = &provoked.log;
    for (client, listener) in &provoked.garbage {
        expect_log(
            log,
            &format!(
                "TLS handshake failed: {}->{} reason=\"",
                perdition_addr(*client),
                perdition_addr(*listener)
            ),
            "TLS garbage on the IMAPS port (item 7: logged at the normal level)",
        );
    }

    // Clients that never log in within login_timeout, under the other ident.
    let slow = [v4(free_port()), v6(free_port())];
    let toml = log_section(
        &log.display().to_string(),
        "perdition.imaps",
        "login_timeout = 1",
    ) + &listener("imap", &slow, "none", provoked.dovecot.imap);
    let slow_proxy = Proxy::start_toml(&toml, &[]);
    wait_listening(log, &slow);
    for addr in slow {
        let mut idle = Line::plain(addr);
        idle.expect_line("* OK");
        idle.wait_closed();
        expect_log(
            log,
            &format!(
                "perdition.imaps[{}]: Fatal Error: Timeout reading authentication information \
                 from client {}->{}: Exiting child",
                slow_proxy.pid(),
                perdition_addr(idle.local),
                perdition_addr(addr)
            ),
            "client that sat out the login timeout",
        );
    }

    let text = read_lossy(log);
    for ok in ["Auth: 127.0.0.1:", "Auth: ::1:"] {
        assert!(
            text.lines()
                .any(|l| l.contains(ok) && l.ends_with("status=\"ok\"")),
            "no successful login {ok:?} in the log:\n{text}"
        );
    }
    for family in ["127.0.0.1", "::1"] {
        assert!(
            text.lines().any(|l| l.contains(&format!("Auth: {family}:"))
                && l.ends_with("status=\"failed: Login Disabled\"")),
            "no Login Disabled line (which must not count) for {family}:\n{text}"
        );
    }
    let expected: Vec<String> = text.lines().filter_map(counted_failure_host).collect();
    // Per family: wrong password, vanished, TLS garbage, timeout.
    for family in ["127.0.0.1", "::1"] {
        let n = expected.iter().filter(|h| *h == family).count();
        assert_eq!(n, 4, "failure lines for {family}:\n{text}");
    }

    let filter = install_shipped_filter(provoked.dir.path());
    let report = fail2ban_regex(log, &filter);
    assert_eq!(
        report.matched,
        expected.len(),
        "fail2ban must count every failure line and nothing else:\n{}\nlog:\n{text}",
        report.text
    );
    assert_eq!(
        report.hosts, expected,
        "hosts captured by fail2ban, line by line:\n{}\nlog:\n{text}",
        report.text
    );
    for host in ["127.0.0.1", "::1"] {
        assert!(
            report.hosts.iter().any(|h| h == host),
            "{host} would not be banned: {:?}",
            report.hosts
        );
    }
    assert!(
        report.per_regex.iter().all(|&n| n > 0),
        "every failregex is exercised by a line the proxy wrote: {:?}\n{}",
        report.per_regex,
        report.text
    );
}

/// Item 5, the other half: Debian's stock `/etc/fail2ban/filter.d/perdition.conf` still
/// matches the IPv4 failure lines the proxy writes under a `perdition.*` ident, as it did for
/// Perdition: the failed login (its first regex) and the client that vanished before login
/// (its second). It must match no line that is not a failure.
#[test]
fn stock_perdition_filter_still_matches_ipv4_failures() {
    let provoked = provoke_failures("perdition.imap4");
    let text = read_lossy(&provoked.log);
    let v4_lines = |marker: &str| {
        text.lines()
            .filter(|l| {
                l.contains(marker) && counted_failure_host(l).as_deref() == Some("127.0.0.1")
            })
            .count()
    };
    let auth = v4_lines("]: Auth: ");
    let fatal = v4_lines("]: Fatal Error reading authentication information");
    assert_eq!((auth, fatal), (1, 1), "log:\n{text}");

    let report = fail2ban_regex(&provoked.log, Path::new(STOCK_FILTER));
    assert_eq!(
        report.per_regex,
        vec![auth, fatal],
        "stock filter hits per failregex:\n{}\nlog:\n{text}",
        report.text
    );
    let all_failures = text.lines().filter_map(counted_failure_host).count();
    assert!(
        report.matched <= all_failures,
        "the stock filter matched a line that is no failure:\n{}\nlog:\n{text}",
        report.text
    );
    assert_eq!(
        report.hosts.iter().filter(|h| *h == "127.0.0.1").count(),
        auth + fatal,
        "{}",
        report.text
    );
}

/// Item 7: a failed TLS handshake is logged at the normal level (no `debug = true`), naming
/// the client's address, in the form the shipped filter counts; a flood of 30 garbage
/// handshakes from one address leaves at most 10 such lines (a flood cannot fill the disk),
/// yet enough for fail2ban's default maxretry (5); and the limit is per client address:
/// another address is still logged right after the flood.
#[test]
fn tls_handshake_failures_are_logged_and_rate_limited_per_client() {
    let dovecot = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mail.log");
    let imaps = [v4(free_port()), v6(free_port())];
    let toml = log_section(&log.display().to_string(), "portcullis", "")
        + &listener("imap", &imaps, "implicit", dovecot.imap);
    let proxy = Proxy::start_toml(&toml, &[]);
    wait_listening(&log, &imaps);

    let first = tls_garbage(imaps[0]);
    expect_log(
        &log,
        &format!(
            "portcullis[{}]: TLS handshake failed: {}->{} reason=\"",
            proxy.pid(),
            perdition_addr(first),
            perdition_addr(imaps[0])
        ),
        "TLS garbage, logged without debug",
    );

    let started = Instant::now();
    for _ in 1..30 {
        tls_garbage(imaps[0]);
    }
    let flood_time = started.elapsed();
    // Another client address right after the flood is not affected by its limit.
    let other = tls_garbage(imaps[1]);
    expect_log(
        &log,
        &format!(
            "TLS handshake failed: {}->{} reason=\"",
            perdition_addr(other),
            perdition_addr(imaps[1])
        ),
        "a different client address after a flood from 127.0.0.1",
    );
    // Lines are written in order: everything about the flood is in the log by now.
    let text = read_lossy(&log);
    let flood_lines = text
        .lines()
        .filter(|l| l.contains("]: TLS handshake failed: 127.0.0.1:"))
        .count();
    assert!(
        flood_time < Duration::from_secs(50),
        "the flood took {flood_time:?}: too slow to test a per-minute limit"
    );
    assert!(
        (5..=10).contains(&flood_lines),
        "30 garbage handshakes from 127.0.0.1 within a minute left {flood_lines} lines; \
         expected at most 10 (rate limit) and at least 5 (fail2ban's maxretry):\n{text}"
    );
    let report = fail2ban_regex(&log, &install_shipped_filter(dir.path()));
    assert_eq!(
        report.hosts.iter().filter(|h| *h == "127.0.0.1").count(),
        flood_lines,
        "{}",
        report.text
    );
}

/// Item 6: a user name carrying invisible or direction-changing characters (RIGHT-TO-LEFT
/// OVERRIDE, LINE and PARAGRAPH SEPARATOR, ZERO WIDTH SPACE, the BOM, SOFT HYPHEN: Unicode
/// categories Cf, Zl, Zp) is written to the Auth line as `\u{…}` escapes, so that the line
/// reads in a terminal as what it is; the raw characters never reach the log, and ordinary
/// non-ASCII letters stay as they are.
#[test]
fn invisible_unicode_in_user_names_is_escaped_in_the_log() {
    let dovecot = Dovecot::start();
    let port = free_port();
    let toml =
        log_section("-", "portcullis", "") + &listener("imap", &[v4(port)], "none", dovecot.imap);
    let proxy = Proxy::start_toml(&toml, &[port]);

    let user = "mallory\u{202e}gpj.exe\u{2028}x\u{2029}y\u{200b}z\u{feff}b\u{ad}c-\u{e9}";
    let escaped = r"mallory\u{202e}gpj.exe\u{2028}x\u{2029}y\u{200b}z\u{feff}b\u{ad}c-é";
    let mut c = Client::plain(port);
    c.expect_line("* OK");
    c.send_line(&format!("a LOGIN \"{user}\" \"whatever\""));
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a NO"), "{answer}");
    let from = format!("Auth: 127.0.0.1:{}->", c.local_addr().port());
    assert!(
        proxy.wait_log(&from, LOG_WAIT),
        "no Auth line; log:\n{}",
        proxy.log_text()
    );
    let log = proxy.log_text();
    let line = log.lines().find(|l| l.contains(&from)).unwrap();
    for raw in [
        '\u{202e}', '\u{2028}', '\u{2029}', '\u{200b}', '\u{feff}', '\u{ad}',
    ] {
        assert!(
            !log.contains(raw),
            "raw U+{:04X} written to the log (Auth line: {line})",
            raw as u32
        );
    }
    assert!(
        line.contains(&format!("authentication_id=\"{escaped}\"")),
        "user name not escaped as authentication_id=\"{escaped}\" in\n{line}"
    );
}

/// Item 10 (RFC 7301, the ALPACA cross-protocol attack): an IMAPS listener refuses a client
/// that offers only `http/1.1` with the `no_application_protocol` alert, negotiates `imap`
/// with a client that offers it (alone or after another protocol), and keeps serving a client
/// that offers no ALPN at all; a POP3S listener negotiates `pop3` and refuses `imap`; STARTTLS
/// on an IMAP listener negotiates `imap` too, and on a ManageSieve listener `managesieve`. A
/// session that negotiated its protocol logs in through to Dovecot.
#[test]
fn tls_listeners_negotiate_their_own_alpn_protocol_and_refuse_others() {
    let dovecot = Dovecot::start();
    let (imaps, pop3s, imap, sieve) = (
        v4(free_port()),
        v4(free_port()),
        v4(free_port()),
        v4(free_port()),
    );
    let toml = log_section("-", "portcullis", "")
        + &listener("imap", &[imaps], "implicit", dovecot.imap)
        + &listener("pop3", &[pop3s], "implicit", dovecot.pop3)
        + &listener("imap", &[imap], "starttls", dovecot.imap)
        + &listener("managesieve", &[sieve], "starttls", dovecot.sieve);
    let proxy = Proxy::start_toml(
        &toml,
        &[imaps.port(), pop3s.port(), imap.port(), sieve.port()],
    );

    assert_alpn_refused(imaps, &["http/1.1"], "IMAPS");

    let mut c = Line::tls(imaps, &["imap"])
        .unwrap_or_else(|e| panic!("IMAPS with ALPN imap: {e}; log:\n{}", proxy.log_text()));
    assert_eq!(
        c.alpn().as_deref(),
        Some("imap"),
        "IMAPS, client offers imap"
    );
    c.expect_line("* OK");
    c.send_line("a LOGIN alice alicepw");
    let answer = c.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a OK"), "{answer}");

    let c = Line::tls(imaps, &["h2", "imap"])
        .unwrap_or_else(|e| panic!("IMAPS with ALPN h2, imap: {e}; log:\n{}", proxy.log_text()));
    assert_eq!(
        c.alpn().as_deref(),
        Some("imap"),
        "IMAPS, client offers h2 and imap"
    );

    let mut c = Line::tls(imaps, &[])
        .unwrap_or_else(|e| panic!("IMAPS without ALPN: {e}; log:\n{}", proxy.log_text()));
    assert_eq!(c.alpn(), None);
    c.expect_line("* OK");

    let mut p = Line::tls(pop3s, &["pop3"])
        .unwrap_or_else(|e| panic!("POP3S with ALPN pop3: {e}; log:\n{}", proxy.log_text()));
    assert_eq!(
        p.alpn().as_deref(),
        Some("pop3"),
        "POP3S, client offers pop3"
    );
    p.expect_line("+OK");
    assert_alpn_refused(pop3s, &["imap"], "POP3S");

    let mut s = Line::plain(imap);
    s.expect_line("* OK");
    s.send_line("s STARTTLS");
    s.expect_line("s OK");
    let mut s = s
        .starttls(&["imap"])
        .unwrap_or_else(|e| panic!("STARTTLS with ALPN imap: {e}; log:\n{}", proxy.log_text()));
    assert_eq!(
        s.alpn().as_deref(),
        Some("imap"),
        "IMAP STARTTLS, client offers imap"
    );
    s.send_line("a LOGIN alice alicepw");
    let answer = s.read_until_tagged("a").pop().unwrap();
    assert!(answer.starts_with("a OK"), "{answer}");

    let mut m = Line::plain(sieve);
    while !m.read_line().starts_with("OK") {}
    m.send_line("STARTTLS");
    m.expect_line("OK");
    let mut m = m
        .starttls(&["managesieve"])
        .unwrap_or_else(|e| panic!("ManageSieve STARTTLS: {e}; log:\n{}", proxy.log_text()));
    assert_eq!(
        m.alpn().as_deref(),
        Some("managesieve"),
        "ManageSieve STARTTLS, client offers managesieve"
    );
    while !m.read_line().starts_with("OK") {}
}
