//! The log: Perdition's `Connect:`, `Auth:` and `Closing session:` lines, byte for byte, so that
//! fail2ban's stock `perdition` filter and existing log scrapers keep working; plus Portcullis'
//! own start-up and diagnostic lines.
//!
//! Destinations follow Perdition's `log_facility`: `-` stdout, `+` stderr, `/path` a file, any
//! other word a syslog facility. Every line carries a timestamp and `ident[pid]:`, as syslog
//! writes it, so a file written here reads like `/var/log/mail.log`.

pub mod diagnostics;
pub(crate) mod per_source;
pub mod queue;
mod timestamp;
mod writer;

use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{LogConfig, LogPasswd};
use crate::protocol::{Failure, LoginOutcome, Refusal, Secret, Security};

use per_source::PerSourceLimit;
use queue::Class;
use writer::{LogWriter, OpenFileError, Sink, SYSLOG_SOCKET};

/// Syslog severities we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Err = 3,
    Warning = 4,
    /// Failed logins, as Perdition logs them.
    Notice = 5,
    Info = 6,
    Debug = 7,
}

impl Severity {
    /// Errors are kept when the destination is too slow; so are the lines that say so
    /// explicitly (Auth, Fatal, TLS failures, Closing session: see [`Logger::write_kept`]).
    /// Warnings are not: an attacker can cause them cheaply (refusals over the limit).
    fn class(self) -> Class {
        match self {
            Severity::Err => Class::Keep,
            _ => Class::Shed,
        }
    }
}

/// TLS handshake failures logged per client address and minute; enough for fail2ban to ban.
const TLS_FAILURE_LINES_PER_MINUTE: u32 = 10;

/// How a line is laid out for its destination: as syslog writes it to `/var/log/mail.log`, or
/// as a datagram for the syslog daemon.
#[derive(Debug, Clone)]
pub struct LineFormat {
    ident: String,
    hostname: String,
    pid: u32,
    /// Set when lines go to the syslog socket.
    syslog_facility: Option<u8>,
}

impl LineFormat {
    fn line(&self, severity: Severity, message: &str) -> String {
        use std::fmt::Write;
        // Text from peers (a back end's error message, say) must not start a line of its own:
        // a forged `Auth:` line would have fail2ban ban whoever it names.
        let message = one_line(message);
        let room = LINE_HEAD + self.hostname.len() + self.ident.len() + message.len();
        let mut line = String::with_capacity(room);
        if let Some(facility) = self.syslog_facility {
            let _ = write!(line, "<{}>", facility * 8 + severity as u8);
        }
        timestamp::push(&mut line);
        if self.syslog_facility.is_none() {
            line.push(' ');
            line.push_str(&self.hostname);
        }
        let _ = write!(line, " {}[{}]: ", self.ident, self.pid);
        line.push_str(&message);
        if self.syslog_facility.is_none() {
            line.push('\n');
        }
        line
    }
}

/// What a line holds besides its message, its host name and its ident: the priority, the
/// timestamp, the pid and the separators.
const LINE_HEAD: usize = 48;

/// The process' log. Lines are formatted here and written by one writer thread, so a slow
/// destination never holds up a session (see `log/writer.rs`).
pub struct Logger {
    format: LineFormat,
    writer: LogWriter,
    debug: bool,
    /// Diagnostic lines up to this severity are written; more verbose ones are not.
    diagnostics_up_to: Severity,
    /// Diagnostic lines go to `tracing` (JSON, journald) instead of this log.
    diagnostics_elsewhere: bool,
    log_passwd: LogPasswd,
    tls_failures: Mutex<PerSourceLimit>,
    /// Banned addresses turned away: a few lines per address and minute, as for TLS.
    guard_refusals: Mutex<PerSourceLimit>,
    /// Errors only, the Auth lines too (Perdition's `quiet` without `debug`).
    errors_only: bool,
    /// How often a session that relays repeats its Auth line (`auth_relog`).
    auth_relog: Option<Duration>,
    /// Said at the end of every Connect line: `inetd_pid=` in inetd mode, as Perdition.
    connect_note: OnceLock<String>,
}

/// Syslog facility numbers (RFC 5424 section 6.2.1).
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Why the log cannot be opened where the configuration says.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    File(#[from] OpenFileError),
    /// Neither `-`, `+`, a path nor a syslog facility.
    #[error("unknown log destination or syslog facility {0:?}")]
    UnknownDestination(String),
}

impl Logger {
    pub fn open(config: &LogConfig) -> Result<Logger, OpenError> {
        let mut syslog_facility = None;
        let sink = match config.destination.as_str() {
            "-" => Sink::Stdout,
            "+" => Sink::Stderr,
            path if path.starts_with('/') => Sink::File {
                path: path.to_string(),
                file: writer::open_append(path)?,
            },
            facility => {
                let facility = facility_code(facility)
                    .ok_or_else(|| OpenError::UnknownDestination(facility.to_string()))?;
                // Without a syslog daemon (a container, a rescue shell) the lines go to stderr,
                // which systemd would put in the journal anyway; losing them would be worse.
                match writer::connect_syslog(SYSLOG_SOCKET) {
                    Ok(socket) => {
                        syslog_facility = Some(facility);
                        Sink::Syslog {
                            path: SYSLOG_SOCKET.into(),
                            socket,
                        }
                    }
                    Err(e) => {
                        let logger = Logger::stderr(&config.ident);
                        logger.warning(&format!(
                            "cannot reach syslog at {SYSLOG_SOCKET} ({e}); logging to stderr"
                        ));
                        Sink::Stderr
                    }
                }
            }
        };
        Ok(Logger::start(
            sink,
            config,
            LineFormat {
                ident: config.ident.clone(),
                hostname: hostname(),
                pid: std::process::id(),
                syslog_facility,
            },
        ))
    }

    fn start(sink: Sink, config: &LogConfig, format: LineFormat) -> Logger {
        let diagnostics_up_to = diagnostics::filter(&config.level, config.debug)
            .map(|f| diagnostics::max_severity(&f))
            .unwrap_or(Severity::Info);
        Logger {
            writer: LogWriter::start(sink, config.queue_lines, format.clone()),
            format,
            debug: config.debug || diagnostics_up_to == Severity::Debug,
            diagnostics_up_to,
            diagnostics_elsewhere: config.diagnostics != diagnostics::DiagnosticsOutput::Log,
            log_passwd: config.log_passwd,
            tls_failures: Mutex::new(PerSourceLimit::new(
                TLS_FAILURE_LINES_PER_MINUTE,
                Duration::from_secs(60),
            )),
            guard_refusals: Mutex::new(PerSourceLimit::new(
                TLS_FAILURE_LINES_PER_MINUTE,
                Duration::from_secs(60),
            )),
            errors_only: config.quiet && !config.debug,
            auth_relog: (config.auth_relog > 0).then(|| Duration::from_secs(config.auth_relog)),
            connect_note: OnceLock::new(),
        }
    }

    /// A logger that writes to stderr, for errors before the configuration is read.
    pub fn stderr(ident: &str) -> Logger {
        let config = LogConfig {
            ident: ident.into(),
            ..LogConfig::default()
        };
        let format = LineFormat {
            ident: ident.into(),
            hostname: hostname(),
            pid: std::process::id(),
            syslog_facility: None,
        };
        Logger::start(Sink::Stderr, &config, format)
    }

    /// Queue one line; never waits for the destination.
    pub fn write(&self, severity: Severity, message: &str) {
        if severity == Severity::Debug && !self.debug || self.quieted(severity) {
            return;
        }
        self.writer
            .push(self.format.line(severity, message), severity.class());
    }

    /// Queue a line that must survive a slow destination longer than others: fail2ban's
    /// input, and the byte counts of a session that logged in.
    fn write_kept(&self, severity: Severity, message: &str) {
        if self.quieted(severity) {
            return;
        }
        self.writer
            .push(self.format.line(severity, message), Class::Keep);
    }

    fn quieted(&self, severity: Severity) -> bool {
        self.errors_only && severity != Severity::Err
    }

    /// How often a relaying session repeats its Auth line; never when `None`.
    pub fn auth_relog(&self) -> Option<Duration> {
        self.auth_relog
    }

    /// Words for the end of every Connect line from now on (set once).
    pub fn note_on_connect(&self, note: String) {
        let _ = self.connect_note.set(note);
    }

    /// Wait until the lines logged so far are written, at most `limit` (shutdown).
    /// The count of lines dropped because the destination did not keep up (the metrics read
    /// it).
    pub fn lines_dropped(&self) -> prometheus_client::metrics::counter::Counter {
        self.writer.dropped()
    }

    pub fn flush(&self, limit: Duration) -> bool {
        self.writer.flush(limit)
    }

    /// Reopen the log file, for logrotate's `postrotate` (`kill -HUP`). Other destinations
    /// need nothing. The writer thread does it, between two lines.
    pub fn reopen(&self) {
        self.writer.request_reopen();
    }

    /// A diagnostic line: to `tracing` when diagnostics go elsewhere, else here, as far as
    /// the level lets it.
    fn diagnostic(&self, severity: Severity, message: &str) {
        if self.diagnostics_elsewhere {
            diagnostics::emit(severity, message);
        } else if severity as u8 <= self.diagnostics_up_to as u8 {
            self.write(severity, message);
        }
    }

    pub fn info(&self, message: &str) {
        self.diagnostic(Severity::Info, message);
    }

    pub fn warning(&self, message: &str) {
        self.diagnostic(Severity::Warning, message);
    }

    /// Anything that displays: an error is logged as it reads.
    pub fn error<M: std::fmt::Display + ?Sized>(&self, message: &M) {
        self.diagnostic(Severity::Err, &message.to_string());
    }

    pub fn debug(&self, message: &str) {
        if self.debug {
            self.diagnostic(Severity::Debug, message);
        }
    }

    pub fn debug_enabled(&self) -> bool {
        self.debug
    }

    /// Whether any Auth line may carry a password; when not, sessions need not keep it.
    pub fn may_log_passwords(&self) -> bool {
        self.log_passwd != LogPasswd::Never
    }

    /// `Connect:  <client>-><local>` (two spaces, as Perdition writes it).
    /// Perdition's line for a logged-in session that went silent for too long.
    pub fn timeout_piping(&self) {
        self.write(Severity::Info, "Timeout piping data.");
    }

    pub fn connect(&self, peer: SocketAddr, local: SocketAddr) {
        let note = self.connect_note.get().map_or("", String::as_str);
        self.write(
            Severity::Info,
            &format!("Connect: {}{note}", from_to(peer, local)),
        );
    }

    /// `Auth: ...` for one login attempt, at `notice` like Perdition.
    pub fn auth(&self, record: &AuthRecord, outcome: &LoginOutcome) {
        let password = self.password_for(record, outcome.is_accepted());
        let mut line = String::with_capacity(MESSAGE_CAPACITY);
        line.push_str("Auth:");
        record.write_fields(&mut line, status_text(outcome), password);
        self.write_kept(Severity::Notice, &line);
    }

    /// `Closing session: ...` when a proxied session ends.
    pub fn closing(&self, record: &AuthRecord, received: u64, sent: u64) {
        use std::fmt::Write;
        let mut line = String::with_capacity(MESSAGE_CAPACITY);
        let _ = write!(
            line,
            "Closing session:{} authorisation_id=NONE authentication_id=\"",
            from_to(record.peer, record.local)
        );
        push_escaped_str(
            &mut line,
            &capped(record.user.as_deref().unwrap_or("(null)")),
        );
        let _ = write!(line, "\" received={received} sent={sent}");
        self.write_kept(Severity::Info, &line);
    }

    /// `Closing NULL session: ...` when a client leaves politely without logging in.
    pub fn closing_null(&self, peer: SocketAddr, local: SocketAddr) {
        self.write(
            Severity::Info,
            &format!(
                "Closing NULL session:{} authorisation_id=NONE authentication_id=\"(null)\"",
                from_to(peer, local)
            ),
        );
    }

    /// The client vanished before logging in. fail2ban's stock filter counts these.
    pub fn fatal_read(&self, peer: SocketAddr, local: SocketAddr) {
        self.write(
            Severity::Err,
            &format!(
                "Fatal Error reading authentication information from client{}: Exiting child",
                from_to(peer, local)
            ),
        );
    }

    /// The client did not log in within the login timeout.
    pub fn fatal_timeout(&self, peer: SocketAddr, local: SocketAddr) {
        self.write(
            Severity::Err,
            &format!(
            "Fatal Error: Timeout reading authentication information from client{}: Exiting child",
            from_to(peer, local)
        ),
        );
    }

    /// A client's TLS handshake failed (garbage, a scanner, an old client, a refused ALPN).
    /// At the normal level so that the admin and fail2ban see it, but only a few lines per
    /// address and minute so that a flood cannot fill the disk.
    pub fn tls_failure(&self, peer: SocketAddr, local: SocketAddr, reason: &str) {
        let allowed = match self.tls_failures.lock() {
            Ok(mut limit) => limit.allow(peer.ip().to_canonical(), Instant::now()),
            Err(_) => false,
        };
        if allowed {
            self.write_kept(
                Severity::Notice,
                &format!(
                    "TLS handshake failed:{} reason=\"{}\"",
                    from_to(peer, local),
                    escape(reason)
                ),
            );
        }
    }

    /// The guard holds back the answer to a failed login.
    pub fn guard_delay(&self, peer: SocketAddr, local: SocketAddr, failures: u32, delay: Duration) {
        self.write(
            Severity::Notice,
            &format!(
                "Guard:{} delayed {} ms after {failures} failed logins",
                from_to(peer, local),
                delay.as_millis()
            ),
        );
    }

    /// The guard holds back a login for a user failing from many addresses.
    pub fn guard_user_wait(&self, peer: SocketAddr, local: SocketAddr, user: &str, wait: Duration) {
        self.write(
            Severity::Notice,
            &format!(
                "Guard:{} user=\"{}\" waits {} ms: failing from many addresses",
                from_to(peer, local),
                escape(&capped(user)),
                wait.as_millis()
            ),
        );
    }

    /// The guard bans an address.
    pub fn guard_ban(&self, peer: SocketAddr, local: SocketAddr, failures: u32, ban: Duration) {
        self.write_kept(
            Severity::Warning,
            &format!(
                "Guard:{} banned for {} s after {failures} failed logins",
                from_to(peer, local),
                ban.as_secs().max(1)
            ),
        );
    }

    /// A banned address came back and was turned away; rate-limited per address.
    pub fn guard_refusal(&self, peer: SocketAddr, local: SocketAddr, reason: &str) {
        let allowed = match self.guard_refusals.lock() {
            Ok(mut limit) => limit.allow(peer.ip().to_canonical(), Instant::now()),
            Err(_) => false,
        };
        if allowed {
            self.write_kept(
                Severity::Notice,
                &format!("Guard:{} refused: {reason}", from_to(peer, local)),
            );
        }
    }

    fn password_for<'a>(&self, record: &'a AuthRecord, succeeded: bool) -> Option<&'a str> {
        self.log_passwd
            .applies(succeeded)
            .then_some(record.password.as_ref())
            .flatten()
            .map(|p| p.expose().as_str())
    }
}

/// Perdition prints IPv4 addresses plainly and IPv6 ones without brackets.
fn addr(a: SocketAddr) -> Addr {
    Addr(a)
}

/// An address as [`addr`] prints it, written straight into the line (no string of its own).
struct Addr(SocketAddr);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0.ip().to_canonical(), self.0.port())
    }
}

/// Perdition's `from_to`: it starts with a space, which is why `Connect:` is followed by two.
fn from_to(peer: SocketAddr, local: SocketAddr) -> FromTo {
    FromTo(peer, local)
}

/// The two addresses as [`from_to`] prints them.
struct FromTo(SocketAddr, SocketAddr);

impl std::fmt::Display for FromTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, " {}->{}", addr(self.0), addr(self.1))
    }
}

/// Perdition's status text for an outcome, so that its log scrapers and fail2ban keep working.
pub fn status_text(outcome: &LoginOutcome) -> &'static str {
    match outcome {
        LoginOutcome::Accepted { .. } => "ok",
        LoginOutcome::Rejected { .. } | LoginOutcome::Denied { .. } => {
            "failed: Re-Authentication Failure"
        }
        LoginOutcome::Refused(Refusal::LoginDisabled) => "failed: Login Disabled",
        LoginOutcome::Refused(Refusal::ForbiddenCharacters) => {
            "failed: local authentication failure"
        }
        LoginOutcome::Refused(Refusal::NoServer) => "failed: Could not determine server",
        LoginOutcome::Failed { failure, .. } => match failure {
            Failure::NoConnection => "failed: Could not connect to server",
            Failure::Negotiation => "failed: Connection Negotiation Failure",
            Failure::NoTls => "failed: TLS not present",
            Failure::TooManyAtOnce => "failed: Too many logins at once",
            Failure::OverSessionCap => "failed: Too many sessions for this user",
        },
    }
}

/// What an Auth or Closing line says about one session.
#[derive(Clone)]
pub struct AuthRecord {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub client_secure: Security,
    /// As the client typed it; `None` (Perdition's `(null)`) before it gave one.
    pub user: Option<String>,
    /// Only filled when `log_passwd` may print it, and only until the Auth line is written.
    pub password: Option<Secret<String>>,
    /// `host:port` of the back end; `None` (Perdition's `(null):(null)`) before a lookup.
    pub server: Option<String>,
    pub protocol: &'static str,
    pub server_secure: Security,
}

/// The fields of the line, never the password.
impl std::fmt::Debug for AuthRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.fields("-", None))
    }
}

impl AuthRecord {
    fn fields(&self, status: &str, password: Option<&str>) -> String {
        let mut out = String::with_capacity(MESSAGE_CAPACITY);
        self.write_fields(&mut out, status, password);
        out
    }

    /// The fields, written onto `out`: one string for the whole line, not one per field.
    fn write_fields(&self, out: &mut String, status: &str, password: Option<&str>) {
        use std::fmt::Write;
        let _ = write!(
            out,
            "{} client-secure={} authorisation_id=NONE authentication_id=\"",
            from_to(self.peer, self.local),
            self.client_secure.log_name()
        );
        push_escaped_str(out, &capped(self.user.as_deref().unwrap_or("(null)")));
        out.push('"');
        if let Some(password) = password {
            out.push_str(" passwd=\"");
            push_escaped_str(out, &capped(password));
            out.push('"');
        }
        let _ = write!(
            out,
            " server=\"{}\" protocol={} server-secure={} status=\"{status}\"",
            self.server.as_deref().unwrap_or("(null):(null)"),
            self.protocol,
            self.server_secure.log_name(),
        );
    }
}

/// Room for a Connect, Auth or Closing line's message without growing: Perdition's lines are
/// 100 to 300 bytes.
const MESSAGE_CAPACITY: usize = 256;

/// The longest user name or password a log line carries, in bytes: longer ones are cut, so
/// that one client cannot make lines of many kilobytes (syslog daemons cut them anyway, and
/// they would fill the log queue's memory).
const MAX_LOGGED_FIELD: usize = 256;

/// `s`, or its first [`MAX_LOGGED_FIELD`] bytes and how many were left out.
fn capped(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_LOGGED_FIELD {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut end = MAX_LOGGED_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...(+{} bytes)", &s[..end], s.len() - end))
}

/// Characters that must not reach a log raw: controls (they could start a forged line) and
/// Unicode format and separator characters (U+202E turns text around, U+2028 breaks a line in
/// some viewers, U+200B hides a difference between two names).
fn needs_escape(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    c.is_control()
        || (!c.is_ascii()
            && matches!(
                c.general_category(),
                GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            ))
}

/// `\xNN` for controls, `\u{NNNN}` for the other characters of [`needs_escape`].
fn push_escaped(out: &mut String, c: char) {
    use std::fmt::Write;
    let _ = if c.is_control() && (c as u32) < 0x100 {
        write!(out, "\\x{:02x}", c as u32)
    } else {
        write!(out, "\\u{{{:x}}}", c as u32)
    };
}

/// A message kept on one line and free of invisible characters (also what `portcullis
/// sessions` shows a terminal).
pub fn one_line(s: &str) -> std::borrow::Cow<'_, str> {
    // Nearly every line is printable ASCII: a byte test settles it, no character is decoded.
    if s.bytes().all(|b| (b' '..=b'~').contains(&b)) || !s.chars().any(needs_escape) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A user name is attacker-controlled: keep it on one line and inside its quotes.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_escaped_str(&mut out, s);
    out
}

/// [`escape`], onto the end of `out`.
fn push_escaped_str(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if needs_escape(c) => push_escaped(out, c),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuthRecord {
        AuthRecord {
            peer: "192.0.2.7:51000".parse().unwrap(),
            local: "198.51.100.1:993".parse().unwrap(),
            client_secure: Security::Ssl,
            user: Some("alice".into()),
            password: Some(Secret::new("s3cret".into())),
            server: Some("10.0.0.2:143".into()),
            protocol: "IMAP4S",
            server_secure: Security::Plaintext,
        }
    }

    #[test]
    fn auth_fields_match_perditions_format() {
        assert_eq!(
            record().fields("failed: Re-Authentication Failure", None),
            " 192.0.2.7:51000->198.51.100.1:993 client-secure=ssl authorisation_id=NONE authentication_id=\"alice\" server=\"10.0.0.2:143\" protocol=IMAP4S server-secure=plaintext status=\"failed: Re-Authentication Failure\""
        );
    }

    #[test]
    fn hostile_user_names_stay_inside_their_quotes() {
        let mut r = record();
        r.user = Some("x\" status=\"ok\nAuth: fake".into());
        let line = r.fields("failed", None);
        assert!(!line.contains('\n'));
        assert!(
            line.contains(r#"authentication_id="x\" status=\"ok\x0aAuth: fake""#),
            "{line}"
        );
    }

    #[test]
    fn syslog_datagrams_carry_priority_timestamp_ident_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let path = path.to_str().unwrap().to_string();
        let socket = writer::connect_syslog(&path).unwrap();
        let logger = Logger::start(
            Sink::Syslog { path, socket },
            &LogConfig::default(),
            LineFormat {
                ident: "perdition.imaps".into(),
                hostname: "h".into(),
                pid: 42,
                syslog_facility: facility_code("mail"),
            },
        );
        logger.auth(
            &record(),
            &LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in".into(),
            },
        );
        let mut buf = [0u8; 1024];
        let n = server.recv(&mut buf).unwrap();
        let datagram = std::str::from_utf8(&buf[..n]).unwrap();
        // mail (2) * 8 + notice (5)
        assert!(datagram.starts_with("<21>"), "{datagram}");
        assert!(
            datagram.contains(" perdition.imaps[42]: Auth: 192.0.2.7:51000->"),
            "{datagram}"
        );
        assert!(!datagram.contains("s3cret"), "{datagram}");
    }

    #[test]
    fn messages_from_peers_cannot_forge_a_line() {
        assert_eq!(
            one_line("refused: bye\nAuth: 1.2.3.4:1->5.6.7.8:9 status=\"failed\""),
            "refused: bye\\x0aAuth: 1.2.3.4:1->5.6.7.8:9 status=\"failed\""
        );
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_escaped() {
        assert_eq!(
            escape("a\u{202e}b\u{2028}c\u{200b}d\u{feff}e\u{2029}"),
            "a\\u{202e}b\\u{2028}c\\u{200b}d\\u{feff}e\\u{2029}"
        );
        assert_eq!(one_line("x\u{202e}y\u{85}"), "x\\u{202e}y\\x85");
        // Letters and marks of other scripts are left alone.
        assert_eq!(escape("José 日本 Ελένη"), "José 日本 Ελένη");
    }

    #[test]
    fn long_user_names_are_cut() {
        let mut r = record();
        r.user = Some("\u{1}".repeat(5000));
        let line = r.fields("failed", None);
        assert!(line.len() < 2000, "{}", line.len());
        assert!(line.contains("...(+4744 bytes)"), "{line}");
        assert_eq!(
            capped("é".repeat(200).as_str()).len(),
            256 + "...(+144 bytes)".len()
        );
    }

    #[test]
    fn ipv6_mapped_addresses_print_as_ipv4() {
        assert_eq!(
            addr("[::ffff:192.0.2.1]:25".parse().unwrap()).to_string(),
            "192.0.2.1:25"
        );
        assert_eq!(
            addr("[2001:db8::1]:993".parse().unwrap()).to_string(),
            "2001:db8::1:993"
        );
    }
}
