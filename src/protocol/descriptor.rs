//! What a protocol is, in one value (as nginx's `ngx_mail_protocol_t`): its names, ports and
//! words, the two machines that speak it before login, what it learns from a back end, and how
//! `check --probe` talks to a back end. Each protocol's folder exports one [`Descriptor`];
//! [`Protocol::descriptor`] is the one place that maps a configured protocol to it, and nothing
//! else in the crate matches on a protocol.

use std::sync::Arc;

use super::conversation::Words;
use super::{ClientSettings, ClientSide, Credentials, Learned, ServerSettings, ServerSide};
use crate::value::Protocol;

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
    /// Every answer the protocol words the same way, the turn-aways included.
    pub words: &'static Words,
    /// The machine that faces the client before login.
    pub client_side: fn(Arc<ClientSettings>) -> Box<dyn ClientSide>,
    /// The machine that logs in to the back end.
    pub server_side: fn(Credentials, ServerSettings) -> Box<dyn ServerSide>,
    /// Reads the capabilities to offer clients out of a back end's greeting, for a protocol
    /// whose clients need the back end's own (ManageSieve's SIEVE extensions); `None`: the
    /// protocol's defaults serve.
    pub capability_from_greeting: Option<fn(&[u8]) -> Learned>,
    /// How `check --probe` talks to a back end without logging in.
    pub probe: &'static ProbeDialect,
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

impl Protocol {
    /// The protocol's descriptor. Adding a protocol adds its arm here.
    pub fn descriptor(self) -> &'static Descriptor {
        match self {
            Protocol::Imap => &super::imap::DESCRIPTOR,
            Protocol::Pop3 => &super::pop3::DESCRIPTOR,
            Protocol::Managesieve => &super::managesieve::DESCRIPTOR,
        }
    }

    pub fn client_side(self, settings: Arc<ClientSettings>) -> Box<dyn ClientSide> {
        (self.descriptor().client_side)(settings)
    }

    pub fn server_side(self, creds: Credentials, settings: ServerSettings) -> Box<dyn ServerSide> {
        (self.descriptor().server_side)(creds, settings)
    }

    /// Whether the capabilities offered to clients are best learned from the back end's
    /// greeting when the admin configured none.
    pub fn learns_capability(self) -> bool {
        self.descriptor().capability_from_greeting.is_some()
    }

    /// Read the capabilities out of a back end's greeting (see [`Protocol::learns_capability`]).
    pub fn capability_from_greeting(self, greeting: &[u8]) -> Learned {
        match self.descriptor().capability_from_greeting {
            Some(learn) => learn(greeting),
            None => Learned::Done(None),
        }
    }

    /// What to tell a client turned away by the connection limit.
    pub fn overloaded_message(self) -> &'static [u8] {
        self.descriptor().words.overloaded
    }

    /// What to tell a client whose address has all the connections it may have.
    pub fn too_many_from_address_message(self) -> &'static [u8] {
        self.descriptor().words.too_many_from_address
    }

    /// What to tell a client whose address the guard has banned.
    pub fn banned_message(self) -> &'static [u8] {
        self.descriptor().words.banned
    }

    /// The protocol's name in lower case, as the configuration and the metrics spell it.
    pub fn name(self) -> &'static str {
        self.descriptor().name
    }

    /// The protocol's ALPN id, offered on TLS listeners.
    pub fn alpn_id(self) -> &'static [u8] {
        self.descriptor().alpn_id
    }

    /// The name Perdition uses in its log lines (`protocol=IMAP4S`).
    pub fn log_name(self, implicit_tls: bool) -> &'static str {
        let names = &self.descriptor().log_names;
        if implicit_tls {
            names.implicit_tls
        } else {
            names.plain
        }
    }

    /// The well-known port, used when a configuration leaves it out.
    pub fn default_port(self, implicit_tls: bool) -> u16 {
        let ports = &self.descriptor().ports;
        match (implicit_tls, ports.implicit_tls) {
            (true, Some(port)) => port,
            _ => ports.plain,
        }
    }

    /// Whether the protocol has an implicit-TLS form at all.
    pub fn has_implicit_tls(self) -> bool {
        self.descriptor().ports.implicit_tls.is_some()
    }
}
