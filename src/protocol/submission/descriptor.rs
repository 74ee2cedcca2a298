//! SMTP submission as one value: see [`crate::protocol::descriptor`].

use std::sync::Arc;

use super::back::SubmissionServerSide;
use super::front::{Submission, SubmissionClientSide};
use super::reply::take_reply;
use crate::protocol::conversation::Dialect;
use crate::protocol::descriptor::{
    Descriptor, Learning, LogNames, Ports, ProbeDialect, StartTlsDialect,
};
use crate::protocol::{ClientSettings, ClientSide, Credentials, ServerSettings, ServerSide};

pub static DESCRIPTOR: Descriptor = Descriptor {
    name: "submission",
    title: "SMTP submission",
    log_names: LogNames {
        plain: "SUBMISSION",
        implicit_tls: "SUBMISSIONS",
    },
    // RFC 6409 and RFC 8314.
    ports: Ports {
        plain: 587,
        implicit_tls: Some(465),
    },
    alpn_id: b"smtp",
    auth_http_name: "smtp",
    // nginx's SMTP module names the client by its reverse DNS, "[UNAVAILABLE]" without a
    // resolver; Portcullis looks nothing up.
    auth_http_headers: &[("Client-Host", "[UNAVAILABLE]")],
    words: &<Submission as Dialect>::WORDS,
    client_side,
    server_side,
    // The extensions a relay carries are the back end's own, from its EHLO answer.
    learns: Some(Learning {
        ask: Some(b"EHLO portcullis\r\n"),
        read: super::extensions::learn,
    }),
    probe: &PROBE,
    opens_mailboxes: false,
};

fn client_side(settings: Arc<ClientSettings>) -> Box<dyn ClientSide> {
    Box::new(SubmissionClientSide::new(settings))
}

fn server_side(creds: Credentials, settings: ServerSettings) -> Box<dyn ServerSide> {
    Box::new(SubmissionServerSide::new(creds, settings))
}

/// A reply is whole at its last line: a code followed by a space (or nothing).
fn whole_reply(lines: &[&str]) -> bool {
    lines
        .last()
        .is_some_and(|l| l.len() == 3 || l.as_bytes().get(3) == Some(&b' '))
}

static PROBE: ProbeDialect = ProbeDialect {
    greeting_complete: whole_reply,
    capability_command: Some((b"EHLO portcullis\r\n", whole_reply)),
    capability_words: |answer| match take_reply(answer.as_bytes()) {
        Ok(Some((reply, _))) => reply.keywords().to_vec(),
        _ => Vec::new(),
    },
    starttls: StartTlsDialect {
        capability: "STARTTLS",
        command: b"STARTTLS\r\n",
        accepted: "220",
    },
    greets_after_starttls: false,
    login_disabled: None,
    logout: b"QUIT\r\n",
};
