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
use crate::protocol::Protocol;
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

/// Probe one back end of `listener`.
pub async fn probe(listener: &ListenerState, endpoint: &Endpoint) -> Report {
    let mut report = Report {
        server: endpoint.log_name(),
        ..Report::default()
    };
    let wait = listener.limits.backend_connect_timeout() + listener.limits.backend_login_timeout();
    match timeout(wait, talk(listener, endpoint, &mut report)).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => report.broken = Some(why),
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
) -> Result<(), String> {
    let started = Instant::now();
    let connect = TcpStream::connect((endpoint.connect_host(), endpoint.port));
    let mut tcp = timeout(listener.limits.backend_connect_timeout(), connect)
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("unreachable: {e}"))?;
    report.lines.push(format!(
        "reachable: connected in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    ));
    if let Some(header) = forward::own_header(listener.config.backend.forward_client) {
        tcp.write_all(&header)
            .await
            .map_err(|e| format!("PROXY header: {e}"))?;
    }
    let mut stream = match endpoint.tls {
        BackendTls::Implicit => handshake(listener, endpoint, tcp, report).await?,
        _ => MaybeTls::Plain(tcp),
    };
    let protocol = listener.protocol();
    let greeting = read_answer(&mut stream, protocol, Step::Greeting).await?;
    report
        .lines
        .push(format!("greeting: {}", first_line(&greeting)));
    let mut capabilities = capabilities(&mut stream, protocol, &greeting).await?;
    if endpoint.tls == BackendTls::Starttls {
        if !has_word(&capabilities, starttls_word(protocol)) {
            report.lines.push(format!("capabilities: {capabilities}"));
            return Err("STARTTLS is configured but the back end does not offer it".into());
        }
        let (command, ok) = match protocol {
            Protocol::Imap => ("p STARTTLS\r\n", "p OK"),
            Protocol::Pop3 => ("STLS\r\n", "+OK"),
            Protocol::Managesieve => ("STARTTLS\r\n", "OK"),
        };
        stream
            .write_all(command.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let answer = read_answer(&mut stream, protocol, Step::StartTls).await?;
        if !answer.lines().any(|l| l.starts_with(ok)) {
            return Err(format!("STARTTLS refused: {}", first_line(&answer)));
        }
        let MaybeTls::Plain(tcp) = stream else {
            return Err("STARTTLS on TLS".into());
        };
        stream = handshake(listener, endpoint, tcp, report).await?;
        let after = match protocol {
            // ManageSieve says its capabilities again after the handshake, unasked.
            Protocol::Managesieve => read_answer(&mut stream, protocol, Step::Greeting).await?,
            _ => String::new(),
        };
        capabilities = self::capabilities(&mut stream, protocol, &after).await?;
    }
    report.lines.push(format!("capabilities: {capabilities}"));
    let logout: &[u8] = match protocol {
        Protocol::Imap => b"z LOGOUT\r\n",
        Protocol::Pop3 => b"QUIT\r\n",
        Protocol::Managesieve => b"LOGOUT\r\n",
    };
    let _ = stream.write_all(logout).await;
    if protocol == Protocol::Imap && has_word(&capabilities, "LOGINDISABLED") {
        return Err("LOGINDISABLED: the back end refuses logins on this connection".into());
    }
    Ok(())
}

/// The capability list: asked for (IMAP `CAPABILITY`, POP3 `CAPA`), or ManageSieve's greeting.
async fn capabilities(
    stream: &mut BackendStream,
    protocol: Protocol,
    greeting: &str,
) -> Result<String, String> {
    let answer = match protocol {
        Protocol::Managesieve => greeting.to_string(),
        Protocol::Imap => {
            stream
                .write_all(b"c CAPABILITY\r\n")
                .await
                .map_err(|e| e.to_string())?;
            read_answer(stream, protocol, Step::Tagged).await?
        }
        Protocol::Pop3 => {
            stream
                .write_all(b"CAPA\r\n")
                .await
                .map_err(|e| e.to_string())?;
            read_answer(stream, protocol, Step::Listing).await?
        }
    };
    let words: Vec<String> = match protocol {
        Protocol::Imap => answer
            .lines()
            .filter_map(|l| l.strip_prefix("* CAPABILITY "))
            .flat_map(|l| l.split_whitespace().map(str::to_string))
            .collect(),
        Protocol::Pop3 => answer
            .lines()
            .skip(1)
            .take_while(|l| *l != ".")
            .map(str::to_string)
            .collect(),
        Protocol::Managesieve => answer
            .lines()
            .take_while(|l| !l.starts_with("OK"))
            .map(|l| l.replace('"', ""))
            .collect(),
    };
    Ok(words.join(" "))
}

fn starttls_word(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Pop3 => "STLS",
        _ => "STARTTLS",
    }
}

fn has_word(list: &str, word: &str) -> bool {
    list.split_whitespace()
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// What ends an answer.
#[derive(Clone, Copy)]
enum Step {
    /// IMAP/POP3: one line; ManageSieve: up to its `OK` line.
    Greeting,
    /// The answer to STARTTLS: one line.
    StartTls,
    /// IMAP: up to the tagged line.
    Tagged,
    /// POP3: up to the `.` line (or a one-line `-ERR`).
    Listing,
}

async fn read_answer(
    stream: &mut BackendStream,
    protocol: Protocol,
    step: Step,
) -> Result<String, String> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer);
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        let complete = text.ends_with("\r\n")
            && match (step, protocol) {
                (Step::Greeting, Protocol::Managesieve) => lines
                    .iter()
                    .any(|l| l.starts_with("OK") || l.starts_with("NO") || l.starts_with("BYE")),
                (Step::Greeting | Step::StartTls, _) => !lines.is_empty(),
                (Step::Tagged, _) => lines
                    .iter()
                    .any(|l| l.starts_with("c ") || l.starts_with("* BYE")),
                (Step::Listing, _) => {
                    lines.first().is_some_and(|l| l.starts_with("-ERR")) || lines.contains(&".")
                }
            };
        if complete {
            return Ok(text.into_owned());
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!(
                "the back end closed the connection{}",
                if answer.is_empty() {
                    String::new()
                } else {
                    format!(" after: {}", first_line(&String::from_utf8_lossy(&answer)))
                }
            ));
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.len() > MAX_ANSWER {
            return Err("an answer too long to be one".into());
        }
    }
}

async fn handshake(
    listener: &ListenerState,
    endpoint: &Endpoint,
    tcp: TcpStream,
    report: &mut Report,
) -> Result<BackendStream, String> {
    let connector = listener
        .connector
        .as_ref()
        .ok_or("back-end TLS is not configured")?;
    let name = tls::server_name(endpoint.tls_name()).map_err(|e| e.to_string())?;
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {}", tls::describe(&e)))?;
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
pub fn describe_certificate(der: &[u8]) -> Result<(String, Duration), String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
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
