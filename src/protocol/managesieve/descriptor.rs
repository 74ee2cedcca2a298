//! ManageSieve as one value: see [`crate::protocol::descriptor`].

use std::sync::Arc;

use super::back::SieveServerSide;
use super::front::{Sieve, SieveClientSide};
use crate::protocol::conversation::Dialect;
use crate::protocol::descriptor::{
    Descriptor, Learning, LogNames, Ports, ProbeDialect, StartTlsDialect,
};
use crate::protocol::{ClientSettings, ClientSide, Credentials, ServerSettings, ServerSide};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "managesieve",
    title: "ManageSieve",
    log_names: LogNames {
        plain: "MANAGESIEVE",
        implicit_tls: "MANAGESIEVE",
    },
    // RFC 5804 has no implicit-TLS port.
    ports: Ports {
        plain: 4190,
        implicit_tls: None,
    },
    alpn_id: b"managesieve",
    auth_http_name: "managesieve",
    auth_http_headers: &[],
    words: &<Sieve as Dialect>::WORDS,
    client_side,
    server_side,
    // The SIEVE extensions a webmail's filter editor offers must be the real server's.
    learns: Some(Learning {
        ask: None,
        read: super::learn::capability_from_greeting,
    }),
    probe: &PROBE,
    opens_mailboxes: true,
};

fn client_side(settings: Arc<ClientSettings>) -> Box<dyn ClientSide> {
    Box::new(SieveClientSide::new(settings))
}

fn server_side(creds: Credentials, settings: ServerSettings) -> Box<dyn ServerSide> {
    Box::new(SieveServerSide::new(creds, settings))
}

/// The greeting lists the capabilities and ends with `OK` (or `NO`, `BYE`).
static PROBE: ProbeDialect = ProbeDialect {
    greeting_complete: |lines| {
        lines
            .iter()
            .any(|l| l.starts_with("OK") || l.starts_with("NO") || l.starts_with("BYE"))
    },
    capability_command: None,
    capability_words: |greeting| {
        greeting
            .lines()
            .take_while(|l| !l.starts_with("OK"))
            .map(|l| l.replace('"', ""))
            .collect()
    },
    starttls: StartTlsDialect {
        capability: "STARTTLS",
        command: b"STARTTLS\r\n",
        accepted: "OK",
    },
    greets_after_starttls: true,
    login_disabled: None,
    logout: b"LOGOUT\r\n",
};
