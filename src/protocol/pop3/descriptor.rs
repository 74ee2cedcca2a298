//! POP3 as one value: see [`crate::protocol::descriptor`].

use std::sync::Arc;

use super::back::Pop3ServerSide;
use super::front::{Pop3, Pop3ClientSide};
use crate::protocol::conversation::Dialect;
use crate::protocol::descriptor::{Descriptor, LogNames, Ports, ProbeDialect, StartTlsDialect};
use crate::protocol::{ClientSettings, ClientSide, Credentials, ServerSettings, ServerSide};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "pop3",
    title: "POP3",
    log_names: LogNames {
        plain: "POP3",
        implicit_tls: "POP3S",
    },
    ports: Ports {
        plain: 110,
        implicit_tls: Some(995),
    },
    alpn_id: b"pop3",
    auth_http_name: "pop3",
    auth_http_headers: &[],
    words: &<Pop3 as Dialect>::WORDS,
    client_side,
    server_side,
    learns: None,
    probe: &PROBE,
    opens_mailboxes: true,
};

fn client_side(settings: Arc<ClientSettings>) -> Box<dyn ClientSide> {
    Box::new(Pop3ClientSide::new(settings))
}

fn server_side(creds: Credentials, settings: ServerSettings) -> Box<dyn ServerSide> {
    Box::new(Pop3ServerSide::new(creds, settings))
}

static PROBE: ProbeDialect = ProbeDialect {
    greeting_complete: |lines| !lines.is_empty(),
    // A listing ends at its `.` line; a refusal is one `-ERR` line.
    capability_command: Some((b"CAPA\r\n", |lines| {
        lines.first().is_some_and(|l| l.starts_with("-ERR")) || lines.contains(&".")
    })),
    capability_words: |answer| {
        answer
            .lines()
            .skip(1)
            .take_while(|l| *l != ".")
            .map(str::to_string)
            .collect()
    },
    starttls: StartTlsDialect {
        capability: "STLS",
        command: b"STLS\r\n",
        accepted: "+OK",
    },
    greets_after_starttls: false,
    login_disabled: None,
    logout: b"QUIT\r\n",
};
