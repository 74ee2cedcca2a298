//! `portcullis check --probe`: reach every configured back end the way a login would (TCP, the
//! PROXY header it wants, TLS or STARTTLS) and report what an admin needs to know before
//! clients find out: reachable and how fast, the TLS version and certificate (names, expiry),
//! the greeting, the capabilities, and whether logins are disabled there. No credentials are
//! sent.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::BackendTls;
use crate::map::Endpoint;
use crate::protocol::descriptor::{Complete, ProbeDialect};
use crate::tls;

use super::builder::ListenerState;
use super::forward;
use super::stream::{BackendStream, MaybeTls};

/// A greeting or capability answer longer than this is not one.
const MAX_ANSWER: usize = 256 * 1024;
use crate::certificates::EXPIRY_WARNING;

/// What one back end looked like.
#[derive(Debug, Default)]
pub struct Report {
    pub server: String,
    pub lines: Vec<String>,
    pub warnings: Vec<String>,
    /// What makes logins through this back end fail; `None`: it works.
    pub broken: Option<String>,
}

impl Report {
    /// The report as `check --probe` prints it.
    pub fn render(&self) -> String {
        let verdict = match &self.broken {
            Some(why) => format!("BROKEN: {why}"),
            None => "ok".to_string(),
        };
        let mut text = format!("  back end {}: {verdict}\n", self.server);
        for line in &self.lines {
            text += &format!("    {line}\n");
        }
        for warning in &self.warnings {
            text += &format!("    warning: {warning}\n");
        }
        text
    }
}

/// What makes logins through a back end fail, as `check --probe` says it.
#[derive(Debug, thiserror::Error)]
enum Broken {
    #[error("connect timed out")]
    ConnectTimedOut,
    #[error("unreachable: {0}")]
    Unreachable(#[source] std::io::Error),
    #[error("PROXY header: {0}")]
    ProxyHeader(#[source] std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the back end closed the connection{}", .after.as_ref().map(|a| format!(" after: {a}")).unwrap_or_default())]
    Closed { after: Option<String> },
    #[error("an answer too long to be one")]
    TooLong,
    #[error("STARTTLS is configured but the back end does not offer it")]
    StartTlsNotOffered,
    #[error("STARTTLS refused: {0}")]
    StartTlsRefused(String),
    #[error("STARTTLS on TLS")]
    StartTlsOnTls,
    #[error("back-end TLS is not configured")]
    NoTlsConfigured,
    #[error(transparent)]
    ServerName(#[from] tls::InvalidServerName),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}: the back end refuses logins on this connection")]
    LoginDisabled(&'static str),
}

/// Probe one back end of `listener`.
pub async fn probe(listener: &ListenerState, endpoint: &Endpoint) -> Report {
    let mut report = Report {
        server: endpoint.log_name(),
        ..Report::default()
    };
    let wait = listener.limits.backend_connect_timeout() + listener.limits.backend_login_timeout();
    match timeout(wait, talk(listener, endpoint, &mut report)).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => report.broken = Some(why.to_string()),
        Err(_) => {
            report.broken = Some(format!("no complete answer within {} s", wait.as_secs()));
        }
    }
    report
}

async fn talk(
    listener: &ListenerState,
    endpoint: &Endpoint,
    report: &mut Report,
) -> Result<(), Broken> {
    let mut stream = connect(listener, endpoint, report).await?;
    let dialect = listener.protocol().descriptor().probe;
    let greeting = read_answer(&mut stream, dialect.greeting_complete).await?;
    report
        .lines
        .push(format!("greeting: {}", first_line(&greeting)));
    let mut capabilities = capabilities(&mut stream, dialect, &greeting).await?;
    if endpoint.tls == BackendTls::Starttls {
        if !has_word(&capabilities, dialect.starttls.capability) {
            report.lines.push(format!("capabilities: {capabilities}"));
            return Err(Broken::StartTlsNotOffered);
        }
        stream = starttls(listener, endpoint, stream, report).await?;
        let after = if dialect.greets_after_starttls {
            read_answer(&mut stream, dialect.greeting_complete).await?
        } else {
            String::new()
        };
        capabilities = self::capabilities(&mut stream, dialect, &after).await?;
    }
    report.lines.push(format!("capabilities: {capabilities}"));
    let _ = stream.write_all(dialect.logout).await;
    if let Some(word) = dialect
        .login_disabled
        .filter(|w| has_word(&capabilities, w))
    {
        return Err(Broken::LoginDisabled(word));
    }
    Ok(())
}

/// TCP, the PROXY header the back end wants, and TLS when it is implicit.
async fn connect(
    listener: &ListenerState,
    endpoint: &Endpoint,
    report: &mut Report,
) -> Result<BackendStream, Broken> {
    let started = Instant::now();
    // From the addresses logins come from: a source the host lacks shows here first.
    let connect =
        listener
            .sources
            .connect(endpoint.connect_host(), endpoint.port, false, |_, _| ());
    let (mut tcp, ()) = timeout(listener.limits.backend_connect_timeout(), connect)
        .await
        .map_err(|_| Broken::ConnectTimedOut)?
        .map_err(Broken::Unreachable)?;
    report.lines.push(format!(
        "reachable: connected in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    ));
    if let Some(header) = forward::own_header(listener.config.backend.forward_client) {
        tcp.write_all(&header).await.map_err(Broken::ProxyHeader)?;
    }
    match endpoint.tls {
        BackendTls::Implicit => handshake(listener, endpoint, tcp, report).await,
        _ => Ok(MaybeTls::Plain(tcp)),
    }
}

/// Ask for TLS on a plain connection and shake hands.
async fn starttls(
    listener: &ListenerState,
    endpoint: &Endpoint,
    mut stream: BackendStream,
    report: &mut Report,
) -> Result<BackendStream, Broken> {
    let dialect = &listener.protocol().descriptor().probe.starttls;
    stream.write_all(dialect.command).await?;
    let answer = read_answer(&mut stream, |lines| !lines.is_empty()).await?;
    if !answer.lines().any(|l| l.starts_with(dialect.accepted)) {
        return Err(Broken::StartTlsRefused(first_line(&answer).to_string()));
    }
    let MaybeTls::Plain(tcp) = stream else {
        return Err(Broken::StartTlsOnTls);
    };
    handshake(listener, endpoint, tcp, report).await
}

/// The capability list: asked for (IMAP `CAPABILITY`, POP3 `CAPA`), or read from the greeting.
async fn capabilities(
    stream: &mut BackendStream,
    dialect: &ProbeDialect,
    greeting: &str,
) -> Result<String, Broken> {
    let answer = match dialect.capability_command {
        None => greeting.to_string(),
        Some((command, complete)) => {
            stream.write_all(command).await?;
            read_answer(stream, complete).await?
        }
    };
    Ok((dialect.capability_words)(&answer).join(" "))
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace()
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// Read until `complete` says the answer is whole (and it ends a line).
async fn read_answer(stream: &mut BackendStream, complete: Complete) -> Result<String, Broken> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        if text.ends_with("\r\n") && complete(&lines) {
            return Ok(text.into_owned());
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            let after = String::from_utf8_lossy(&answer);
            return Err(Broken::Closed {
                after: (!answer.is_empty()).then(|| first_line(&after).to_string()),
            });
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_ANSWER {
            return Err(Broken::TooLong);
        }
    }
}

async fn handshake(
    listener: &ListenerState,
    endpoint: &Endpoint,
    tcp: TcpStream,
    report: &mut Report,
) -> Result<BackendStream, Broken> {
    let connector = listener.connector.as_ref().ok_or(Broken::NoTlsConfigured)?;
    let name = tls::server_name(endpoint.tls_name())?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| Broken::Tls(tls::describe(&e)))?;
    let (_, session) = stream.get_ref();
    let version = session
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let mut line = format!("TLS: {version}");
    if let Some(certificate) = session.peer_certificates().and_then(|c| c.first()) {
        match describe_certificate(certificate.as_ref()) {
            Ok((text, expires_in)) => {
                line += &format!(", {text}");
                if expires_in < EXPIRY_WARNING {
                    report.warnings.push(format!(
                        "the certificate expires in {} days",
                        expires_in.as_secs() / 86_400
                    ));
                }
            }
            Err(e) => line += &format!(", certificate not readable: {e}"),
        }
    }
    report.lines.push(line);
    Ok(MaybeTls::Tls(Box::new(stream)))
}

/// The subject, the names and the expiry of a DER certificate, and the time left.
pub fn describe_certificate(
    der: &[u8],
) -> Result<(String, Duration), x509_parser::nom::Err<x509_parser::error::X509Error>> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)?;
    let names: Vec<String> = crate::certificates::alternative_names(&certificate)
        .iter()
        .map(|n| n.to_string())
        .collect();
    let not_after = certificate.validity().not_after;
    let left = crate::certificates::time_left(&certificate);
    let text = format!(
        "certificate {} for [{}], expires {} (in {} days)",
        certificate.subject(),
        names.join(", "),
        not_after,
        left.as_secs() / 86_400
    );
    Ok((text, left))
}
