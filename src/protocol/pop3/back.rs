//! The POP3 server side: reads the back end's greeting, optionally upgrades with STLS, asks for
//! its capabilities and logs in with the client's credentials, by `AUTH PLAIN` when the server
//! lists `SASL PLAIN` and by `USER`/`PASS` otherwise.

use crate::protocol::line::split_word;
use crate::protocol::sasl::initial_response;
use crate::protocol::server_login::{auth_command, continuation, xclient, Exchange, LineDialect};
use crate::protocol::{Credentials, LoginOutcome, Secret, ServerEvent, ServerSettings};

/// A CAPA answer longer than this is not from a POP3 server worth talking to.
const MAX_CAPABILITY_LINES: usize = 256;

/// Longest command a POP3 server must accept, CRLF included (RFC 2449 section 4). An `AUTH`
/// whose initial response would be longer waits for the `+` continuation instead (RFC 5034
/// section 4).
const MAX_COMMAND: usize = 255;

#[derive(Debug)]
enum State {
    Greeting,
    Stls,
    /// `CAPA` sent; waiting for its status line.
    Capa,
    /// Reading the lines of the capability list.
    CapaList,
    /// `XCLIENT` sent; its answer, good or bad, leads to the login.
    Xclient,
    /// `AUTH PLAIN` sent; `pending` is the response still owed to a `+` continuation.
    Auth {
        pending: Option<Secret<Vec<u8>>>,
    },
    User,
    Pass,
}

/// The first word of a server line.
enum Status {
    Ok(String),
    Err(String),
    /// `+` or `+ challenge`.
    Continuation,
    Other,
}

fn status(line: &[u8]) -> Status {
    let (word, rest) = split_word(line);
    let text = || String::from_utf8_lossy(rest).into_owned();
    if word.eq_ignore_ascii_case(b"+OK") {
        Status::Ok(text())
    } else if word.eq_ignore_ascii_case(b"-ERR") {
        Status::Err(text())
    } else if word == b"+" {
        Status::Continuation
    } else {
        Status::Other
    }
}

/// A `-ERR` to the login, read with its response code (RFC 2449 section 8).
fn refused(text: String) -> LoginOutcome {
    let code = text
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .map(|(code, _)| code.to_string());
    LoginOutcome::refused_by_server(code.as_deref(), text)
}

/// Whether a greeting's text carries Dovecot's `[XCLIENT]` response code.
fn offers_xclient(text: &str) -> bool {
    text.split_ascii_whitespace()
        .take_while(|word| word.starts_with('['))
        .any(|word| word.eq_ignore_ascii_case("[XCLIENT]"))
}

pub struct Pop3ServerSide {
    creds: Credentials,
    settings: ServerSettings,
    ex: Exchange,
    state: State,
    /// The capability lines of the current CAPA answer.
    capabilities: Vec<String>,
    /// The greeting carried `[XCLIENT]`: Dovecot shows it only to peers it trusts, and answers
    /// `+OK` to an untrusted peer's `XCLIENT` too, so the greeting is the only sure sign.
    xclient_offered: bool,
}

impl Pop3ServerSide {
    pub fn new(creds: Credentials, settings: ServerSettings) -> Self {
        Pop3ServerSide {
            creds,
            settings,
            ex: Exchange::default(),
            state: State::Greeting,
            capabilities: Vec::new(),
            xclient_offered: false,
        }
    }

    /// Capabilities are known: name the client first when asked to and the server listens,
    /// then log in.
    fn before_login(&mut self) -> ServerEvent {
        match xclient(&mut self.settings, self.xclient_offered) {
            Some(command) => {
                self.state = State::Xclient;
                ServerEvent::Send(command)
            }
            None => self.login(),
        }
    }

    fn capa(&mut self) -> ServerEvent {
        self.capabilities.clear();
        self.state = State::Capa;
        ServerEvent::Send(b"CAPA\r\n".to_vec())
    }

    /// Whether the CAPA answer's SASL line lists `mechanism`.
    fn offers_sasl(&self, mechanism: &str) -> bool {
        self.capabilities.iter().any(|line| {
            let mut words = line.split_ascii_whitespace();
            words.next().is_some_and(|w| w.eq_ignore_ascii_case("SASL"))
                && words.any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    /// Capabilities are known (or CAPA failed): log in the best way the server offers.
    fn login(&mut self) -> ServerEvent {
        let user = self.creds.user.as_bytes();
        let unsafe_byte = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
        if user.iter().any(unsafe_byte) || self.creds.secret.expose().iter().any(unsafe_byte) {
            return self.ex.finish(LoginOutcome::Rejected {
                text: "user name or password contains CR, LF or NUL".into(),
            });
        }
        let (mechanism, response) = initial_response(&self.creds);
        if self.offers_sasl(mechanism) {
            let (command, pending) = auth_command(mechanism, &response, MAX_COMMAND);
            self.state = State::Auth { pending };
            return ServerEvent::Send(command);
        }
        if self.creds.bearer.is_some() {
            return self
                .ex
                .unavailable(format!("server does not offer SASL {mechanism}"));
        }
        self.state = State::User;
        let mut command = b"USER ".to_vec();
        command.extend_from_slice(user);
        command.extend_from_slice(b"\r\n");
        ServerEvent::Send(command)
    }

    /// Handle one line; `None` means "keep reading".
    fn respond(&mut self, line: &[u8]) -> Option<ServerEvent> {
        let event = match &mut self.state {
            State::Greeting => self.greeting(line),
            State::Stls => self.stls_answer(line),
            State::Capa => return self.capa_answer(line),
            State::CapaList => return self.capability_line(line),
            State::Xclient => self.xclient_answer(line),
            State::Auth { pending } => match status(line) {
                Status::Continuation => continuation(pending.take().map(Secret::into_inner)),
                status => self.login_answer(status, "answer to AUTH", line),
            },
            State::User => self.user_answer(line),
            State::Pass => self.login_answer(status(line), "answer to PASS", line),
        };
        Some(event)
    }

    /// The greeting: `+OK`, perhaps offering `XCLIENT`; then STLS or CAPA.
    fn greeting(&mut self, line: &[u8]) -> ServerEvent {
        match status(line) {
            Status::Ok(text) if self.settings.starttls => {
                self.xclient_offered = offers_xclient(&text);
                self.state = State::Stls;
                ServerEvent::Send(b"STLS\r\n".to_vec())
            }
            Status::Ok(text) => {
                self.xclient_offered = offers_xclient(&text);
                self.capa()
            }
            _ => self.ex.unexpected("greeting", line),
        }
    }

    fn stls_answer(&mut self, line: &[u8]) -> ServerEvent {
        match status(line) {
            Status::Ok(_) => ServerEvent::StartTls,
            Status::Err(text) => self.ex.no_tls(format!("STLS refused: {text}")),
            _ => self.ex.unexpected("answer to STLS", line),
        }
    }

    fn capa_answer(&mut self, line: &[u8]) -> Option<ServerEvent> {
        match status(line) {
            Status::Ok(_) => {
                self.state = State::CapaList;
                None
            }
            // No CAPA (RFC 1939 servers): USER and PASS are all there is.
            Status::Err(_) => Some(self.before_login()),
            _ => Some(self.ex.unexpected("answer to CAPA", line)),
        }
    }

    /// One line of the capability list, or the `.` that ends it.
    fn capability_line(&mut self, line: &[u8]) -> Option<ServerEvent> {
        if line == b"." {
            return Some(self.before_login());
        }
        if self.capabilities.len() >= MAX_CAPABILITY_LINES {
            return Some(self.ex.unavailable("endless CAPA answer"));
        }
        let line = line.strip_prefix(b".").unwrap_or(line);
        self.capabilities
            .push(String::from_utf8_lossy(line).into_owned());
        None
    }

    /// A refusal only means the address did not reach the server's log; the login itself
    /// still stands.
    fn xclient_answer(&mut self, line: &[u8]) -> ServerEvent {
        match status(line) {
            Status::Ok(_) | Status::Err(_) => self.login(),
            _ => self.ex.unexpected("answer to XCLIENT", line),
        }
    }

    fn user_answer(&mut self, line: &[u8]) -> ServerEvent {
        match status(line) {
            Status::Ok(_) => {
                self.state = State::Pass;
                let mut command = b"PASS ".to_vec();
                command.extend_from_slice(self.creds.secret.expose());
                command.extend_from_slice(b"\r\n");
                ServerEvent::Send(command)
            }
            Status::Err(text) => self.ex.finish(refused(text)),
            _ => self.ex.unexpected("answer to USER", line),
        }
    }

    /// The answer that ends the login (to `AUTH` or `PASS`); `what` names it for the log.
    fn login_answer(&mut self, status: Status, what: &str, line: &[u8]) -> ServerEvent {
        match status {
            Status::Ok(text) => self.ex.accepted(None, text),
            Status::Err(text) => self.ex.finish(refused(text)),
            _ => self.ex.unexpected(what, line),
        }
    }
}

impl LineDialect for Pop3ServerSide {
    fn exchange(&mut self) -> &mut Exchange {
        &mut self.ex
    }

    fn line(&mut self, line: &[u8]) -> Option<ServerEvent> {
        self.respond(line)
    }

    /// POP3 sends no new greeting after STLS: ask for the capabilities again.
    fn after_tls(&mut self) {
        if let ServerEvent::Send(bytes) = self.capa() {
            self.ex.queue(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sasl::encode_plain;
    use crate::protocol::server_login::MAX_SERVER_LINE;
    use crate::protocol::test_support::{client_address, Garbage};
    use crate::protocol::{Failure, ServerSide};

    fn creds(user: &str, pass: &str) -> Credentials {
        Credentials {
            user: user.into(),
            user_bytes: None,
            secret: pass.as_bytes().to_vec().into(),
            bearer: None,
        }
    }

    fn side(pass: &str, starttls: bool) -> Pop3ServerSide {
        Pop3ServerSide::new(
            creds("alice", pass),
            ServerSettings {
                starttls,
                ..ServerSettings::default()
            },
        )
    }

    fn step(m: &mut Pop3ServerSide, bytes: &[u8]) -> ServerEvent {
        m.receive(bytes);
        m.next_event()
    }

    fn send(bytes: &[u8]) -> ServerEvent {
        ServerEvent::Send(bytes.to_vec())
    }

    const DOVECOT_GREETING: &[u8] = b"+OK Dovecot (Debian) ready.\r\n";
    const DOVECOT_CAPA: &[u8] = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n";
    const DOVECOT_CAPA_TLS: &[u8] = b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n";

    #[test]
    fn dovecot_login_with_auth_plain() {
        let mut m = side("pw", false);
        assert_eq!(step(&mut m, DOVECOT_GREETING), send(b"CAPA\r\n"));
        assert_eq!(
            step(&mut m, DOVECOT_CAPA),
            send(b"AUTH PLAIN AGFsaWNlAHB3\r\n")
        );
        assert_eq!(
            step(&mut m, b"+OK Logged in.\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in.".into()
            })
        );
        assert_eq!(m.next_event(), ServerEvent::NeedInput);
        assert!(m.take_unprocessed().is_empty());
    }

    #[test]
    fn the_clients_address_goes_in_an_xclient_when_the_greeting_offers_it() {
        let with_client = || {
            Pop3ServerSide::new(
                creds("alice", "pw"),
                ServerSettings {
                    starttls: false,
                    client: Some(client_address()),
                    ..ServerSettings::default()
                },
            )
        };
        let mut m = with_client();
        step(&mut m, b"+OK [XCLIENT] Dovecot (Debian) ready.\r\n");
        assert_eq!(
            step(&mut m, DOVECOT_CAPA),
            send(b"XCLIENT ADDR=192.0.2.7 PORT=51000 SESSION=s1 TTL=5\r\n")
        );
        assert_eq!(
            step(&mut m, b"+OK Updated\r\n"),
            send(b"AUTH PLAIN AGFsaWNlAHB3\r\n")
        );
        // A refusal does not stop the login.
        let mut m = with_client();
        step(&mut m, b"+OK [XCLIENT] Dovecot (Debian) ready.\r\n");
        step(&mut m, DOVECOT_CAPA);
        assert_eq!(
            step(&mut m, b"-ERR Invalid parameters\r\n"),
            send(b"AUTH PLAIN AGFsaWNlAHB3\r\n")
        );
        // No [XCLIENT] in the greeting (an untrusted peer): straight to the login.
        let mut m = with_client();
        step(&mut m, DOVECOT_GREETING);
        assert_eq!(
            step(&mut m, DOVECOT_CAPA),
            send(b"AUTH PLAIN AGFsaWNlAHB3\r\n")
        );
    }

    #[test]
    fn dovecot_rejection() {
        let mut m = side("bad", false);
        step(&mut m, DOVECOT_GREETING);
        step(&mut m, DOVECOT_CAPA);
        assert_eq!(
            step(&mut m, b"-ERR [AUTH] Authentication failed.\r\n"),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "[AUTH] Authentication failed.".into()
            })
        );
    }

    #[test]
    fn dovecot_with_stls() {
        let mut m = side("pw", true);
        assert_eq!(step(&mut m, DOVECOT_GREETING), send(b"STLS\r\n"));
        assert_eq!(
            step(&mut m, b"+OK Begin TLS negotiation now.\r\n"),
            ServerEvent::StartTls
        );
        m.tls_established();
        assert_eq!(m.next_event(), send(b"CAPA\r\n"));
        assert_eq!(m.next_event(), ServerEvent::NeedInput);
        assert_eq!(
            step(&mut m, DOVECOT_CAPA_TLS),
            send(b"AUTH PLAIN AGFsaWNlAHB3\r\n")
        );
        assert_eq!(
            step(&mut m, b"+OK Logged in.\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in.".into()
            })
        );
    }

    #[test]
    fn plaintext_bytes_injected_before_the_handshake_are_dropped() {
        let mut m = side("pw", true);
        step(&mut m, DOVECOT_GREETING);
        assert_eq!(
            step(&mut m, b"+OK Begin TLS\r\n+OK Logged in.\r\n"),
            ServerEvent::StartTls
        );
        m.tls_established();
        assert_eq!(m.next_event(), send(b"CAPA\r\n"));
        assert_eq!(m.next_event(), ServerEvent::NeedInput);
    }

    #[test]
    fn stls_refused_is_no_tls() {
        let mut m = side("pw", true);
        step(&mut m, DOVECOT_GREETING);
        assert!(matches!(
            step(&mut m, b"-ERR TLS support isn't enabled.\r\n"),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::NoTls,
                ..
            })
        ));
    }

    #[test]
    fn user_pass_when_sasl_plain_is_not_offered() {
        let mut m = side("two words", false);
        step(
            &mut m,
            b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>\r\n",
        );
        assert_eq!(
            step(
                &mut m,
                b"+OK Capability list follows\r\nUSER\r\nSASL CRAM-MD5\r\n.\r\n"
            ),
            send(b"USER alice\r\n")
        );
        assert_eq!(step(&mut m, b"+OK\r\n"), send(b"PASS two words\r\n"));
        assert_eq!(
            step(
                &mut m,
                b"+OK alice's maildrop has 2 messages (320 octets)\r\n"
            ),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "alice's maildrop has 2 messages (320 octets)".into()
            })
        );
    }

    #[test]
    fn capa_failure_falls_back_to_user_pass() {
        let mut m = side("pw", false);
        step(&mut m, b"+OK hello\r\n");
        assert_eq!(
            step(&mut m, b"-ERR unknown command\r\n"),
            send(b"USER alice\r\n")
        );
        assert_eq!(
            step(&mut m, b"-ERR no such user\r\n"),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "no such user".into()
            })
        );
    }

    #[test]
    fn pass_rejection() {
        let mut m = side("pw", false);
        step(&mut m, b"+OK hello\r\n");
        step(&mut m, b"-ERR\r\n");
        assert_eq!(step(&mut m, b"+OK\r\n"), send(b"PASS pw\r\n"));
        assert_eq!(
            step(&mut m, b"-ERR [AUTH] invalid password\r\n"),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "[AUTH] invalid password".into()
            })
        );
    }

    #[test]
    fn unsafe_credentials_are_rejected_without_sending_them() {
        for (user, pass) in [
            ("alice", "pw\r\nDELE 1"),
            ("al\nice", "pw"),
            ("alice", "p\0w"),
        ] {
            let mut m = Pop3ServerSide::new(creds(user, pass), ServerSettings::default());
            step(&mut m, b"+OK hello\r\n");
            assert!(matches!(
                step(&mut m, DOVECOT_CAPA),
                ServerEvent::Finished(LoginOutcome::Rejected { .. })
            ));
        }
    }

    #[test]
    fn long_credentials_wait_for_the_continuation() {
        let long = "p".repeat(300);
        let mut m = side(&long, false);
        step(&mut m, DOVECOT_GREETING);
        assert_eq!(step(&mut m, DOVECOT_CAPA), send(b"AUTH PLAIN\r\n"));
        let expected = format!("{}\r\n", encode_plain(&creds("alice", &long)));
        assert_eq!(step(&mut m, b"+ \r\n"), send(expected.as_bytes()));
        // A second, unexpected challenge is cancelled.
        assert_eq!(step(&mut m, b"+\r\n"), send(b"*\r\n"));
        assert_eq!(
            step(&mut m, b"-ERR Authentication cancelled\r\n"),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "Authentication cancelled".into()
            })
        );
    }

    #[test]
    fn bad_greetings_and_answers_are_unavailable() {
        for greeting in [
            &b"-ERR [SYS/TEMP] Too many connections\r\n"[..],
            b"* OK IMAP4rev1 ready\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"+OKAY\r\n",
        ] {
            let mut m = side("pw", false);
            assert!(
                matches!(
                    step(&mut m, greeting),
                    ServerEvent::Finished(LoginOutcome::Failed {
                        failure: Failure::Negotiation,
                        ..
                    })
                ),
                "{greeting:?}"
            );
        }
        let mut m = side("pw", false);
        step(&mut m, DOVECOT_GREETING);
        step(&mut m, DOVECOT_CAPA);
        assert!(matches!(
            step(&mut m, b"* BYE\r\n"),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::Negotiation,
                ..
            })
        ));
        let mut m = side("pw", false);
        m.receive(&vec![b'+'; MAX_SERVER_LINE + 2]);
        assert!(matches!(
            m.next_event(),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::Negotiation,
                ..
            })
        ));
    }

    #[test]
    fn bytes_after_the_answer_belong_to_the_client() {
        let mut m = side("pw", false);
        step(&mut m, DOVECOT_GREETING);
        step(&mut m, DOVECOT_CAPA);
        assert!(matches!(
            step(&mut m, b"+OK Logged in.\r\n+OK 2 320\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted { .. })
        ));
        assert_eq!(m.take_unprocessed(), b"+OK 2 320\r\n".to_vec());
    }

    #[test]
    fn transcript_split_at_every_byte_boundary() {
        let transcript: Vec<u8> = [DOVECOT_GREETING, DOVECOT_CAPA, b"+OK Logged in.\r\n"].concat();
        let expected = vec![
            send(b"CAPA\r\n"),
            send(b"AUTH PLAIN AGFsaWNlAHB3\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in.".into(),
            }),
        ];
        // Byte by byte: every event comes out exactly once, in order.
        let mut m = side("pw", false);
        let mut events = Vec::new();
        for byte in &transcript {
            m.receive(&[*byte]);
            loop {
                match m.next_event() {
                    ServerEvent::NeedInput => break,
                    e => events.push(e),
                }
            }
        }
        assert_eq!(events, expected);
    }

    #[test]
    fn garbage_never_panics() {
        let mut garbage = Garbage::default();
        for round in 0..2000 {
            let mut m = side("pw", round % 2 == 0);
            let bytes = garbage.bytes(300, b"+OK-ERR .\r\n\0\xffSASLPLAIN");
            for chunk in bytes.chunks(5) {
                m.receive(chunk);
                loop {
                    match m.next_event() {
                        ServerEvent::NeedInput | ServerEvent::Finished(_) => break,
                        ServerEvent::StartTls => m.tls_established(),
                        ServerEvent::Send(_) | ServerEvent::Note(_) => {}
                    }
                }
            }
            let _ = m.eof();
            let _ = m.take_unprocessed();
        }
    }
}
