//! Learning a back end's capabilities when the admin did not configure them, for the protocols
//! that want it (`Protocol::learns_capability`): one plaintext connection that reads the greeting
//! (and, for SMTP, the answer to EHLO) and leaves. It carries no credentials.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::protocol::descriptor::Descriptor;
use crate::protocol::Learned;

use super::builder::ListenerState;
use super::forward;
use super::services::Services;

/// A ManageSieve greeting (or an SMTP greeting and EHLO answer) is a few hundred bytes;
/// anything near this is not one.
const MAX_GREETING: usize = 256 * 1024;

/// How long to wait before asking a back end that was down again.
const RETRY: Duration = Duration::from_secs(30);

/// Whether this listener's capabilities are to be learned from its back end (not configured,
/// and not learned already: a reload carries them over).
pub fn wanted(state: &ListenerState) -> bool {
    // The probe speaks plaintext: a back end reached by implicit TLS keeps the defaults.
    state.protocol().learns_capability()
        && state.config.backend.tls != crate::config::BackendTls::Implicit
        && state.config.capability.is_none()
        && state.client_settings().capability.is_none()
}

/// Ask until the back end answers, then keep the answer for every new client. Only as long as
/// the listener's configuration is the running one: a reload that replaces it ends this.
pub async fn learn_capability(state: Arc<ListenerState>, services: Arc<Services>) {
    let logger = &services.logger;
    // The listener's first own server; a listener whose every user is routed by a map has
    // none to ask, and keeps the default capabilities.
    let Some(server) = state.router.servers.first() else {
        return;
    };
    let server = server.log_name();
    let weak = Arc::downgrade(&state);
    drop(state);
    loop {
        let Some(state) = weak.upgrade() else {
            return;
        };
        match timeout(state.limits.backend_login_timeout(), probe(&state)).await {
            Ok(Ok(capability)) => {
                logger.info(&format!(
                    "Learned {} capabilities from {}",
                    state.protocol().log_name(false),
                    server
                ));
                state.set_learned_capability(capability);
                return;
            }
            Ok(Err(e)) => logger.warning(&format!(
                "Cannot learn {} capabilities from {}: {e}; using the defaults",
                state.protocol().log_name(false),
                server
            )),
            Err(_) => logger.warning(&format!(
                "Cannot learn {} capabilities from {}: timeout; using the defaults",
                state.protocol().log_name(false),
                server
            )),
        }
        drop(state);
        tokio::time::sleep(RETRY).await;
    }
}

/// Why a back end's capabilities could not be learned this time.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("no server")]
    NoServer,
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("connection closed during the greeting")]
    Closed,
    #[error("greeting too long")]
    TooLong,
    #[error("no capabilities in the greeting")]
    NoCapabilities,
}

async fn probe(state: &ListenerState) -> Result<String, ProbeError> {
    let server = state.router.servers.first().ok_or(ProbeError::NoServer)?;
    // From the addresses logins come from: the back end may take no others.
    let connect = state
        .sources
        .connect(server.connect_host(), server.port, false, |_, _| ());
    let (mut tcp, ()) = connect.await?;
    // A back end that wants a PROXY header from us wants it from the probe too.
    if let Some(header) = forward::own_header(state.config.backend.forward_client) {
        tcp.write_all(&header).await?;
    }
    let descriptor = state.protocol().descriptor();
    let mut ask = descriptor.learns.as_ref().and_then(|l| l.ask);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(ProbeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_GREETING {
            return Err(ProbeError::TooLong);
        }
        // A protocol that is asked (SMTP's EHLO) is asked once its greeting is whole.
        if let Some(question) = ask.filter(|_| greeting_is_whole(descriptor, &buf)) {
            tcp.write_all(question).await?;
            ask = None;
            continue;
        }
        if ask.is_some() {
            continue;
        }
        match state.protocol().capability_from_greeting(&buf) {
            Learned::Incomplete => continue,
            Learned::Done(Some(capability)) => return Ok(capability),
            Learned::Done(None) => return Err(ProbeError::NoCapabilities),
        }
    }
}

/// Whether `buf` holds the back end's whole greeting, as `check --probe` reads one.
fn greeting_is_whole(descriptor: &Descriptor, buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let lines: Vec<&str> = text.split_terminator("\r\n").collect();
    text.ends_with("\r\n") && (descriptor.probe.greeting_complete)(&lines)
}
