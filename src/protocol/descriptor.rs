//! What a protocol is, in one value (as nginx's `ngx_mail_protocol_t`): its names, ports and
//! words, the two machines that speak it before login, what it learns from a back end, and how
//! `check --probe` talks to a back end. Each protocol's folder exports one [`Descriptor`];
//! `known.rs` is the one place that maps a configured protocol to it, and nothing else in the
//! crate matches on a protocol.

use std::sync::Arc;

use super::conversation::Words;
use super::{ClientSettings, ClientSide, Credentials, Learned, ServerSettings, ServerSide};

/// One protocol, whole.
pub struct Descriptor {
    /// As the configuration, the metrics and the admin page spell it (`imap`).
    pub name: &'static str,
    /// As a sentence names it (`ManageSieve`).
    pub title: &'static str,
    /// The names Perdition's log lines give it (`protocol=IMAP4`, `IMAP4S`).
    pub log_names: LogNames,
    /// The well-known ports.
    pub ports: Ports,
    /// The ALPN id (RFC 7301, IANA's registry) offered on TLS listeners.
    pub alpn_id: &'static [u8],
    /// What an nginx-style `auth_http` service is told in `Auth-Protocol`.
    pub auth_http_name: &'static str,
    /// Headers nginx adds to an `auth_http` request of this protocol whatever the login, as
    /// nginx without a resolver sends them (SMTP's `Client-Host: [UNAVAILABLE]`).
    pub auth_http_headers: &'static [(&'static str, &'static str)],
    /// Every answer the protocol words the same way, the turn-aways included.
    pub words: &'static Words,
    /// The machine that faces the client before login.
    pub client_side: fn(Arc<ClientSettings>) -> Box<dyn ClientSide>,
    /// The machine that logs in to the back end.
    pub server_side: fn(Credentials, ServerSettings) -> Box<dyn ServerSide>,
    /// How the capabilities to offer clients are learned from a back end, for a protocol whose
    /// clients need the back end's own (ManageSieve's SIEVE extensions, SMTP's SIZE and the
    /// like); `None`: the protocol's defaults serve.
    pub learns: Option<Learning>,
    /// How `check --probe` talks to a back end without logging in.
    pub probe: &'static ProbeDialect,
    /// Its sessions open the user's mailbox (IMAP, POP3, ManageSieve's scripts beside it):
    /// pools keep them on one host with the user's other such sessions. Submission's do not,
    /// and its pools place users apart.
    pub opens_mailboxes: bool,
}

/// How a back end's capabilities are learned, on a connection of their own at start-up.
pub struct Learning {
    /// What to ask once the greeting is whole (SMTP's EHLO); `None`: the greeting says it.
    pub ask: Option<&'static [u8]>,
    /// The capabilities out of everything the back end sent so far (greeting included).
    pub read: fn(&[u8]) -> Learned,
}

/// Perdition's names for the protocol in its log lines.
pub struct LogNames {
    pub plain: &'static str,
    pub implicit_tls: &'static str,
}

/// The well-known ports, used when a configuration leaves them out.
pub struct Ports {
    pub plain: u16,
    /// `None`: the protocol has no implicit-TLS form (ManageSieve).
    pub implicit_tls: Option<u16>,
}

/// A back end's answers as `check --probe` reads them: the lines so far, CRLF-split.
pub type Complete = fn(&[&str]) -> bool;

/// The commands and answer shapes of a probe: greeting, capabilities, STARTTLS, logout.
pub struct ProbeDialect {
    /// Whether the greeting is all in.
    pub greeting_complete: Complete,
    /// The command asking for capabilities, and when its answer is whole; `None`: the
    /// greeting lists them.
    pub capability_command: Option<(&'static [u8], Complete)>,
    /// The capability words out of the answer (or the greeting).
    pub capability_words: fn(&str) -> Vec<String>,
    /// The capability that offers STARTTLS, the command, and how its answer starts when it
    /// is yes.
    pub starttls: StartTlsDialect,
    /// The back end says its greeting again after the TLS handshake, unasked.
    pub greets_after_starttls: bool,
    /// The capability with which a back end says it refuses logins on this connection.
    pub login_disabled: Option<&'static str>,
    /// The command that ends the probe politely.
    pub logout: &'static [u8],
}

pub struct StartTlsDialect {
    pub capability: &'static str,
    pub command: &'static [u8],
    pub accepted: &'static str,
}
