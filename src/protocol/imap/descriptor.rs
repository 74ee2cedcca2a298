//! IMAP as one value: see [`crate::protocol::descriptor`].

use std::sync::Arc;

use super::back::ImapServerSide;
use super::front::{Imap, ImapClientSide};
use crate::protocol::conversation::Dialect;
use crate::protocol::descriptor::{Descriptor, LogNames, Ports, ProbeDialect, StartTlsDialect};
use crate::protocol::{ClientSettings, ClientSide, Credentials, ServerSettings, ServerSide};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "imap",
    title: "IMAP",
    log_names: LogNames {
        plain: "IMAP4",
        implicit_tls: "IMAP4S",
    },
    ports: Ports {
        plain: 143,
        implicit_tls: Some(993),
    },
    alpn_id: b"imap",
    auth_http_name: "imap",
    auth_http_headers: &[],
    words: &<Imap as Dialect>::WORDS,
    client_side,
    server_side,
    learns: None,
    probe: &PROBE,
    opens_mailboxes: true,
};

fn client_side(settings: Arc<ClientSettings>) -> Box<dyn ClientSide> {
    Box::new(ImapClientSide::new(settings))
}

fn server_side(creds: Credentials, settings: ServerSettings) -> Box<dyn ServerSide> {
    Box::new(ImapServerSide::new(creds, settings))
}

static PROBE: ProbeDialect = ProbeDialect {
    greeting_complete: |lines| !lines.is_empty(),
    capability_command: Some((b"c CAPABILITY\r\n", |lines| {
        lines
            .iter()
            .any(|l| l.starts_with("c ") || l.starts_with("* BYE"))
    })),
    capability_words: |answer| {
        answer
            .lines()
            .filter_map(|l| l.strip_prefix("* CAPABILITY "))
            .flat_map(|l| l.split_whitespace().map(str::to_string))
            .collect()
    },
    starttls: StartTlsDialect {
        capability: "STARTTLS",
        command: b"p STARTTLS\r\n",
        accepted: "p OK",
    },
    greets_after_starttls: false,
    login_disabled: Some("LOGINDISABLED"),
    logout: b"z LOGOUT\r\n",
};
