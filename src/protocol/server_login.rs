//! What every server-side machine does the same way, whatever the protocol: the input buffer
//! and its line bound, bytes queued to be sent first, the end of the exchange and its outcome.
//! A protocol supplies a [`ServerDialect`] (its states and words); the one [`ServerSide`]
//! implementation below drives it.

use super::line::{pop_line, Line};
use super::{LoginOutcome, Secret, ServerEvent, ServerSettings, ServerSide};

/// Longest line accepted from a back end; capability lists are long, but not this long.
pub const MAX_SERVER_LINE: usize = 64 * 1024;

/// The state every exchange with a back end has.
#[derive(Default)]
pub struct Exchange {
    /// Bytes received and not yet parsed; after the login they belong to the client.
    pub input: Vec<u8>,
    /// Bytes to send before anything else happens.
    queued: Option<Vec<u8>>,
    /// The outcome has been reported; nothing more is read.
    finished: bool,
}

impl Exchange {
    /// The login is over.
    pub fn finish(&mut self, outcome: LoginOutcome) -> ServerEvent {
        self.finished = true;
        ServerEvent::Finished(outcome)
    }

    /// The back end spoke nonsense or failed; `reason` is for the log.
    pub fn unavailable(&mut self, reason: impl Into<String>) -> ServerEvent {
        self.finish(LoginOutcome::unavailable(reason))
    }

    /// The back end does not offer, or refused, the STARTTLS it must be reached with.
    pub fn no_tls(&mut self, reason: impl Into<String>) -> ServerEvent {
        self.finish(LoginOutcome::no_tls(reason))
    }

    /// The back end let the client in; `capabilities` are the ones it announced with the answer,
    /// if it did.
    pub fn accepted(&mut self, capabilities: Option<String>, text: String) -> ServerEvent {
        self.finish(LoginOutcome::Accepted { capabilities, text })
    }

    /// The back end must be reached with STARTTLS and does not list it.
    pub fn starttls_not_offered(&mut self) -> ServerEvent {
        self.no_tls("server does not offer STARTTLS")
    }

    /// A line the exchange did not expect at this point.
    pub fn unexpected(&mut self, what: &str, line: &[u8]) -> ServerEvent {
        let reason = format!("unexpected {what}: {}", String::from_utf8_lossy(line));
        self.unavailable(reason)
    }

    /// Send `bytes` before anything else (a command asked for after a TLS handshake).
    pub fn queue(&mut self, bytes: Vec<u8>) {
        self.queued = Some(bytes);
    }

    /// The next whole line without its line end; `Err` holds the event to hand back instead
    /// (more input needed, or a line over [`MAX_SERVER_LINE`]).
    pub fn next_line(&mut self) -> Result<Vec<u8>, ServerEvent> {
        match pop_line(&mut self.input, MAX_SERVER_LINE) {
            Ok(line) => Ok(line),
            Err(Line::TooLong) => Err(self.unavailable("server line too long")),
            Err(_) => Err(ServerEvent::NeedInput),
        }
    }
}

/// The `XCLIENT` command that names the client to the back end (POP3, ManageSieve), when there
/// is a client to name and the back end `offered` to listen. The client is named once: it is
/// taken from `settings` either way.
pub fn xclient(settings: &mut ServerSettings, offered: bool) -> Option<Vec<u8>> {
    let client = settings.client.take()?;
    offered.then(|| client.xclient().into_bytes())
}

/// `AUTH mechanism response` when it fits in `max` bytes with its CRLF (POP3 and SMTP bound
/// their command lines), else `AUTH mechanism` with the response (and its CRLF) owed to the
/// server's continuation.
pub fn auth_command(
    mechanism: &str,
    response: &str,
    max: usize,
) -> (Vec<u8>, Option<Secret<Vec<u8>>>) {
    let whole = format!("AUTH {mechanism} {response}\r\n");
    if whole.len() <= max {
        return (whole.into_bytes(), None);
    }
    let owed = Secret::new(format!("{response}\r\n").into_bytes());
    (format!("AUTH {mechanism}\r\n").into_bytes(), Some(owed))
}

/// The answer to a `+` continuation during a SASL exchange (IMAP, POP3): the part of the login
/// still `owed`, or `*` to cancel a challenge that the initial response should have made
/// needless.
pub fn continuation(owed: Option<Vec<u8>>) -> ServerEvent {
    ServerEvent::Send(owed.unwrap_or_else(|| b"*\r\n".to_vec()))
}

/// A protocol's states and words for logging in to a back end.
pub trait ServerDialect: Send {
    fn exchange(&mut self) -> &mut Exchange;
    /// Read what the input holds: an event for the session, or `None` to read on.
    fn step(&mut self) -> Option<ServerEvent>;
    /// The TLS handshake is done; what the server said before it has been discarded.
    fn after_tls(&mut self);
}

/// A dialect whose back ends answer in lines (IMAP, POP3): it only handles whole lines.
pub trait LineDialect: Send {
    fn exchange(&mut self) -> &mut Exchange;
    /// One whole line from the back end, without its line end: an event, or `None` to read on.
    fn line(&mut self, line: &[u8]) -> Option<ServerEvent>;
    fn after_tls(&mut self);
}

impl<L: LineDialect> ServerDialect for L {
    fn exchange(&mut self) -> &mut Exchange {
        LineDialect::exchange(self)
    }

    fn step(&mut self) -> Option<ServerEvent> {
        match LineDialect::exchange(self).next_line() {
            Ok(line) => self.line(&line),
            Err(event) => Some(event),
        }
    }

    fn after_tls(&mut self) {
        LineDialect::after_tls(self);
    }
}

impl<D: ServerDialect> ServerSide for D {
    fn receive(&mut self, input: &[u8]) {
        self.exchange().input.extend_from_slice(input);
    }

    fn next_event(&mut self) -> ServerEvent {
        if let Some(bytes) = self.exchange().queued.take() {
            return ServerEvent::Send(bytes);
        }
        loop {
            if self.exchange().finished {
                return ServerEvent::NeedInput;
            }
            if let Some(event) = self.step() {
                return event;
            }
        }
    }

    fn tls_established(&mut self) {
        // What the server said before TLS no longer counts (RFC 9051 6.2.1, RFC 2595 4,
        // RFC 5804 2.2).
        self.exchange().input.clear();
        self.after_tls();
    }

    fn take_unprocessed(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.exchange().input)
    }
}
