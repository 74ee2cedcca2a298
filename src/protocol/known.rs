//! The protocols Portcullis knows: the one place that maps a configured [`Protocol`] to its
//! [`Descriptor`], and the questions the rest of the crate asks of a protocol, answered from it.

use std::sync::Arc;

use super::descriptor::Descriptor;
use super::{ClientSettings, ClientSide, Credentials, Learned, ServerSettings, ServerSide};
use crate::value::Protocol;

impl Protocol {
    /// The protocol's descriptor. Adding a protocol adds its arm here.
    pub fn descriptor(self) -> &'static Descriptor {
        match self {
            Protocol::Imap => &super::imap::DESCRIPTOR,
            Protocol::Pop3 => &super::pop3::DESCRIPTOR,
            Protocol::Managesieve => &super::managesieve::DESCRIPTOR,
            Protocol::Submission => &super::submission::DESCRIPTOR,
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
        self.descriptor().learns.is_some()
    }

    /// Read the capabilities out of what a back end sent (see [`Protocol::learns_capability`]).
    pub fn capability_from_greeting(self, greeting: &[u8]) -> Learned {
        match &self.descriptor().learns {
            Some(learning) => (learning.read)(greeting),
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
