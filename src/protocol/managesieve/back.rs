//! The ManageSieve server side: reads the back end's capability block, optionally upgrades with
//! STARTTLS (and reads the fresh block the server then sends unprompted), and logs in with
//! `AUTHENTICATE "PLAIN"` and an initial response.

use crate::protocol::sasl::initial_response;
use crate::protocol::server_login::{xclient, Exchange, ServerDialect, MAX_SERVER_LINE};
use crate::protocol::token::Token;
use crate::protocol::{has_capability, Credentials, LoginOutcome, ServerEvent, ServerSettings};

use super::syntax::{self, parse_line, response_text, Bounds, Parsed, SyntaxError};

/// Longest line and literal accepted from a back end.
const BOUNDS: Bounds = Bounds {
    max_line: MAX_SERVER_LINE,
    max_literal: MAX_SERVER_LINE,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the capability block up to its `OK` (the greeting, or the block re-sent after
    /// STARTTLS).
    Capabilities,
    /// `STARTTLS` sent; waiting for `OK`.
    StartTls,
    /// The session is running the TLS handshake.
    Handshake,
    /// `XCLIENT` sent; its answer, good or bad, leads to the login.
    Xclient,
    /// `AUTHENTICATE` sent; waiting for the answer.
    Login,
    /// The server sent a SASL challenge although it had the initial response; `"*"` was sent and
    /// the answer to that ends the login as unavailable.
    Cancelled,
}

pub struct SieveServerSide {
    creds: Credentials,
    settings: ServerSettings,
    ex: Exchange,
    state: State,
    /// The connection is already encrypted by STARTTLS.
    tls_done: bool,
    /// The current capability block lists STARTTLS.
    starttls_offered: bool,
    /// The value of the current block's `SASL` capability, if it had one.
    sasl: Option<String>,
    /// The current block lists `XCLIENT` (Dovecot lists it only to peers it trusts).
    xclient_offered: bool,
}

impl SieveServerSide {
    pub fn new(creds: Credentials, settings: ServerSettings) -> Self {
        SieveServerSide {
            creds,
            settings,
            ex: Exchange::default(),
            state: State::Capabilities,
            tls_done: false,
            starttls_offered: false,
            sasl: None,
            xclient_offered: false,
        }
    }

    /// One line of a capability block: `"NAME" ["value"]`.
    fn capability(&mut self, tokens: &[Token]) {
        let mut values = tokens.iter().filter_map(Token::text);
        let Some(name) = values.next() else {
            return;
        };
        if name.eq_ignore_ascii_case(b"STARTTLS") {
            self.starttls_offered = true;
        } else if name.eq_ignore_ascii_case(b"XCLIENT") {
            self.xclient_offered = true;
        } else if name.eq_ignore_ascii_case(b"SASL") {
            self.sasl = Some(
                values
                    .next()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default(),
            );
        }
    }

    /// The capability block is complete: upgrade or log in.
    fn capabilities_done(&mut self) -> ServerEvent {
        if self.settings.starttls && !self.tls_done {
            if !self.starttls_offered {
                return self.ex.starttls_not_offered();
            }
            self.state = State::StartTls;
            return ServerEvent::Send(b"STARTTLS\r\n".to_vec());
        }
        match xclient(&mut self.settings, self.xclient_offered) {
            Some(command) => {
                self.state = State::Xclient;
                ServerEvent::Send(command)
            }
            None => self.login(),
        }
    }

    /// Log in with the mechanism the credentials call for, if the server offers it.
    fn login(&mut self) -> ServerEvent {
        let (mechanism, response) = initial_response(&self.creds);
        let offered = match &self.sasl {
            Some(sasl) => has_capability(sasl, mechanism),
            // No SASL line: PLAIN is worth a try, a bearer token is not.
            None => self.creds.bearer.is_none(),
        };
        if !offered {
            let listed = self.sasl.as_deref().unwrap_or("");
            let reason = format!("server does not offer SASL {mechanism} (SASL \"{listed}\")");
            return self.ex.unavailable(reason);
        }
        self.state = State::Login;
        let mut command = format!("AUTHENTICATE \"{mechanism}\" ").into_bytes();
        command.extend_from_slice(&syntax::string(response.as_bytes()));
        command.extend_from_slice(b"\r\n");
        ServerEvent::Send(command)
    }

    /// Handle one line; `None` means "keep reading". A line starting with a string is data (a
    /// capability, a SASL challenge); one starting with an atom is an answer.
    fn line(&mut self, tokens: Vec<Token>) -> Option<ServerEvent> {
        match tokens.first() {
            None => None,
            Some(Token::String(_)) => self.data_line(&tokens),
            Some(Token::Atom(keyword)) => {
                let keyword = String::from_utf8_lossy(keyword).to_ascii_uppercase();
                self.answer(&keyword, &tokens)
            }
            Some(Token::List(_)) => Some(
                self.ex
                    .unavailable("server sent a line starting with a list"),
            ),
        }
    }

    /// A line of strings: a capability in the block, a challenge during the login.
    fn data_line(&mut self, tokens: &[Token]) -> Option<ServerEvent> {
        match self.state {
            State::Capabilities => {
                self.capability(tokens);
                None
            }
            State::Login => {
                // A SASL challenge, although the initial response said everything.
                self.state = State::Cancelled;
                Some(ServerEvent::Send(b"\"*\"\r\n".to_vec()))
            }
            _ => None,
        }
    }

    /// An answer (`OK`, `NO`, `BYE`...) in the current state.
    fn answer(&mut self, keyword: &str, tokens: &[Token]) -> Option<ServerEvent> {
        let text = response_text(tokens);
        let said = |what: &str| format!("{what}: {}", text.as_deref().unwrap_or(""));
        match (self.state, keyword) {
            (_, "BYE") => Some(self.ex.unavailable(said("server said BYE"))),
            (State::Capabilities, "OK") => Some(self.capabilities_done()),
            (State::Capabilities, "NO") => Some(self.ex.unavailable(said("server said NO"))),
            (State::StartTls, "OK") => {
                self.state = State::Handshake;
                Some(ServerEvent::StartTls)
            }
            (State::StartTls, _) => Some(self.ex.no_tls(said("STARTTLS refused"))),
            // A refusal only means the address did not reach the server's log.
            (State::Xclient, "OK" | "NO") => Some(self.login()),
            (State::Login, "OK") => {
                let text = text.unwrap_or_else(|| "Logged in.".into());
                Some(self.ex.accepted(None, text))
            }
            (State::Login, "NO") => Some(self.ex.finish(refused(tokens, text))),
            (State::Cancelled, _) => Some(
                self.ex
                    .unavailable(said("server sent an unexpected SASL challenge")),
            ),
            (State::Handshake, _) => None,
            _ => Some(
                self.ex
                    .unavailable(format!("unexpected response from server: {keyword}")),
            ),
        }
    }
}

/// A `NO` to the login. `NO (TRYLATER) "..."` is a temporary failure, not a wrong password.
fn refused(tokens: &[Token], text: Option<String>) -> LoginOutcome {
    let trylater = tokens.iter().any(|t| match t {
        Token::List(codes) => codes.iter().any(|c| {
            c.text()
                .is_some_and(|c| c.eq_ignore_ascii_case(b"TRYLATER"))
        }),
        _ => false,
    });
    let text = text.unwrap_or_else(|| "Authentication failed.".into());
    let code = trylater.then_some("UNAVAILABLE");
    LoginOutcome::refused_by_server(code, text)
}

impl ServerDialect for SieveServerSide {
    fn exchange(&mut self) -> &mut Exchange {
        &mut self.ex
    }

    fn step(&mut self) -> Option<ServerEvent> {
        if self.state == State::Handshake {
            return Some(ServerEvent::NeedInput);
        }
        match parse_line(&self.ex.input, BOUNDS) {
            Parsed::Incomplete => Some(ServerEvent::NeedInput),
            Parsed::Error {
                error: SyntaxError::LineTooLong | SyntaxError::LiteralTooBig,
                ..
            } => Some(self.ex.unavailable("server response too long")),
            Parsed::Error { consumed, .. } => {
                let line = self.ex.input.get(..consumed).unwrap_or_default();
                let reason = format!(
                    "malformed line from server: {}",
                    String::from_utf8_lossy(line).trim_end()
                );
                Some(self.ex.unavailable(reason))
            }
            Parsed::Line { tokens, consumed } => {
                self.ex.input.drain(..consumed);
                self.line(tokens)
            }
        }
    }

    /// The server re-sends its capabilities unprompted (RFC 5804 section 2.2).
    fn after_tls(&mut self) {
        self.tls_done = true;
        self.starttls_offered = false;
        self.sasl = None;
        self.xclient_offered = false;
        self.state = State::Capabilities;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_support::{client_address, Garbage};
    use crate::protocol::{Failure, ServerSide};

    fn side(pass: &str, starttls: bool) -> SieveServerSide {
        SieveServerSide::new(
            Credentials {
                user: "alice".into(),
                user_bytes: None,
                secret: pass.as_bytes().to_vec().into(),
                bearer: None,
            },
            ServerSettings {
                starttls,
                ..ServerSettings::default()
            },
        )
    }

    fn step(m: &mut SieveServerSide, bytes: &[u8]) -> ServerEvent {
        m.receive(bytes);
        m.next_event()
    }

    const DOVECOT_CAPS: &str = "\"IMPLEMENTATION\" \"Dovecot Pigeonhole\"\r\n\"SIEVE\" \"fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext\"\r\n\"NOTIFY\" \"mailto\"\r\n\"SASL\" \"PLAIN LOGIN\"\r\n";

    fn dovecot_greeting(starttls: bool) -> Vec<u8> {
        format!(
            "{DOVECOT_CAPS}{}\"VERSION\" \"1.0\"\r\nOK \"Dovecot (Debian) ready.\"\r\n",
            if starttls { "\"STARTTLS\"\r\n" } else { "" }
        )
        .into_bytes()
    }

    fn authenticate() -> ServerEvent {
        // "\0alice\0pw"
        ServerEvent::Send(b"AUTHENTICATE \"PLAIN\" \"AGFsaWNlAHB3\"\r\n".to_vec())
    }

    #[test]
    fn dovecot_login() {
        let mut m = side("pw", false);
        assert_eq!(step(&mut m, &dovecot_greeting(true)), authenticate());
        assert_eq!(
            step(&mut m, b"OK \"Logged in.\"\r\nstray"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in.".into()
            })
        );
        assert_eq!(m.take_unprocessed(), b"stray".to_vec());
    }

    #[test]
    fn the_clients_address_goes_in_an_xclient_when_listed() {
        let greeting = format!(
            "{DOVECOT_CAPS}\"XCLIENT\"\r\n\"VERSION\" \"1.0\"\r\nOK \"Dovecot ready.\"\r\n"
        );
        for answer in [
            "OK \"Updated\"\r\n",
            "NO \"You are not from trusted IP\"\r\n",
        ] {
            let mut m = side("pw", false);
            m.settings.client = Some(client_address());
            assert_eq!(
                step(&mut m, greeting.as_bytes()),
                ServerEvent::Send(
                    b"XCLIENT ADDR=192.0.2.7 PORT=51000 SESSION=s1 TTL=5\r\n".to_vec()
                )
            );
            assert_eq!(step(&mut m, answer.as_bytes()), authenticate(), "{answer}");
        }
        // Not listed: straight to the login.
        let mut m = side("pw", false);
        m.settings.client = Some(client_address());
        assert_eq!(step(&mut m, &dovecot_greeting(false)), authenticate());
    }

    #[test]
    fn trylater_is_unavailable_not_a_wrong_password() {
        let mut m = side("pw", false);
        step(&mut m, &dovecot_greeting(false));
        let event = step(
            &mut m,
            b"NO (TRYLATER) \"Temporary authentication failure\"\r\n",
        );
        assert!(
            matches!(&event, ServerEvent::Finished(LoginOutcome::Failed { .. })),
            "{event:?}"
        );
    }

    #[test]
    fn greeting_split_at_every_byte() {
        let greeting = dovecot_greeting(false);
        for cut in 0..greeting.len() {
            let mut m = side("pw", false);
            assert_eq!(step(&mut m, &greeting[..cut]), ServerEvent::NeedInput);
            assert_eq!(step(&mut m, &greeting[cut..]), authenticate(), "cut {cut}");
        }
    }

    #[test]
    fn bare_ok_and_answer_codes() {
        let mut m = side("pw", false);
        assert_eq!(
            step(
                &mut m,
                b"\"IMPLEMENTATION\" \"Cyrus timsieved\"\r\n\"SASL\" \"PLAIN\"\r\nOK\r\n"
            ),
            authenticate()
        );
        assert_eq!(
            step(&mut m, b"OK (SASL \"abc=\")\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in.".into()
            })
        );
    }

    #[test]
    fn rejection_with_quoted_text_and_with_a_literal() {
        let mut m = side("bad", false);
        step(&mut m, &dovecot_greeting(false));
        assert_eq!(
            step(&mut m, b"NO \"Authentication failed.\"\r\n"),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "Authentication failed.".into()
            })
        );
        let mut m = side("bad", false);
        step(&mut m, &dovecot_greeting(false));
        assert_eq!(
            step(&mut m, b"NO (AUTH-TOO-WEAK) {8}\r\n"),
            ServerEvent::NeedInput
        );
        assert_eq!(
            step(&mut m, b"No\r\nway.\r\n"),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "No\r\nway.".into()
            })
        );
    }

    #[test]
    fn starttls_upgrade_then_fresh_capabilities() {
        let mut m = side("pw", true);
        assert_eq!(
            step(&mut m, &dovecot_greeting(true)),
            ServerEvent::Send(b"STARTTLS\r\n".to_vec())
        );
        assert_eq!(
            step(
                &mut m,
                b"OK \"Begin TLS negotiation now.\"\r\nplaintext junk\r\n"
            ),
            ServerEvent::StartTls
        );
        m.tls_established();
        assert_eq!(m.next_event(), ServerEvent::NeedInput);
        assert_eq!(step(&mut m, &dovecot_greeting(false)), authenticate());
        assert_eq!(
            step(&mut m, b"OK \"Logged in.\"\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "Logged in.".into()
            })
        );
    }

    #[test]
    fn unavailable_cases() {
        let unavailable = |e: &ServerEvent| {
            matches!(
                e,
                ServerEvent::Finished(LoginOutcome::Failed {
                    failure: Failure::Negotiation,
                    ..
                })
            )
        };
        let no_tls = |e: &ServerEvent| {
            matches!(
                e,
                ServerEvent::Finished(LoginOutcome::Failed {
                    failure: Failure::NoTls,
                    ..
                })
            )
        };
        // STARTTLS required but not offered.
        let mut m = side("pw", true);
        assert!(no_tls(&step(&mut m, &dovecot_greeting(false))));
        // STARTTLS refused.
        let mut m = side("pw", true);
        step(&mut m, &dovecot_greeting(true));
        assert!(no_tls(&step(&mut m, b"NO \"Not now.\"\r\n")));
        // Greeting NO / BYE, not ManageSieve at all, PLAIN not offered.
        for greeting in [
            &b"NO \"Service unavailable.\"\r\n"[..],
            b"BYE \"Too many connections.\"\r\n",
            b"* OK IMAP4rev1 ready\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"\"SASL\" \"\"\r\n\"STARTTLS\"\r\nOK \"ready\"\r\n",
            b"\"SASL\" \"PLAIN\r\n",
        ] {
            let mut m = side("pw", false);
            assert!(unavailable(&step(&mut m, greeting)), "{greeting:?}");
        }
        // BYE instead of an answer.
        let mut m = side("pw", false);
        step(&mut m, &dovecot_greeting(false));
        assert!(unavailable(&step(&mut m, b"BYE \"Shutting down.\"\r\n")));
        // Line too long.
        let mut m = side("pw", false);
        assert!(unavailable(&step(
            &mut m,
            &vec![b'x'; MAX_SERVER_LINE + 10]
        )));
    }

    #[test]
    fn unexpected_challenge_is_cancelled() {
        let mut m = side("pw", false);
        step(&mut m, &dovecot_greeting(false));
        assert_eq!(
            step(&mut m, b"\"\"\r\n"),
            ServerEvent::Send(b"\"*\"\r\n".to_vec())
        );
        assert!(matches!(
            step(&mut m, b"NO \"Authentication cancelled.\"\r\n"),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::Negotiation,
                ..
            })
        ));
    }

    #[test]
    fn awkward_passwords_stay_quoted_base64() {
        let mut m = side("p\u{e4}ss \"x\"", false);
        match step(&mut m, &dovecot_greeting(false)) {
            ServerEvent::Send(bytes) => {
                assert!(bytes.starts_with(b"AUTHENTICATE \"PLAIN\" \""));
                assert!(bytes.ends_with(b"\"\r\n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut garbage = Garbage::default();
        for round in 0..2000 {
            let mut m = side("pw", round % 2 == 0);
            let bytes = garbage.bytes(200, b"OK NO BYE \"SASL\" \"STARTTLS\" {}()\\\r\n12+\x00");
            for chunk in bytes.chunks(7) {
                m.receive(chunk);
                while let ServerEvent::Send(_) = m.next_event() {}
            }
            if round % 3 == 0 {
                m.tls_established();
                let _ = step(&mut m, &bytes);
            }
            let _ = m.take_unprocessed();
        }
    }
}
