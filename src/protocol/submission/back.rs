//! The SMTP submission server side: reads the back end's greeting, greets it with the client's
//! EHLO name, upgrades with STARTTLS when asked to (and greets again), names the client with
//! Postfix's XCLIENT when asked to and offered (and greets again), then logs in with AUTH and
//! the client's credentials. A `4xx` is "try later", never a wrong password.

use crate::protocol::sasl::{initial_response, Mechanism};
use crate::protocol::server_login::{auth_command, Exchange, ServerDialect};
use crate::protocol::{
    ClientAddress, Credentials, LoginOutcome, Secret, ServerEvent, ServerSettings,
};

use super::reply::{take_reply, Reply, Scanner};

/// Longest AUTH command line with its initial response: an SMTP command line (RFC 4954
/// section 4 keeps AUTH under RFC 5321's 512 bytes; Dovecot refuses longer ones). A longer
/// response (an OAuth token) waits for the `334` instead, whose answer may be 12,288 bytes.
const MAX_AUTH_LINE: usize = 512;

/// The EHLO name when the client gave none (it always does before AUTH).
const OWN_NAME: &str = "portcullis";

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    /// XCLIENT sent: a new greeting comes back when it was taken.
    Xclient,
    /// AUTH sent; `owed` is the response still owed to a `334`; `challenged`: the whole
    /// response was sent and the server challenged it all the same (an OAuth token refused
    /// with its error, RFC 7628 section 3.2.2), so the `5xx` that follows is a refusal.
    Auth {
        owed: Option<Secret<Vec<u8>>>,
        challenged: bool,
    },
}

pub struct SubmissionServerSide {
    creds: Credentials,
    settings: ServerSettings,
    ex: Exchange,
    state: State,
    tls_done: bool,
    /// The SASL mechanisms of the back end's last EHLO answer.
    mechanisms: Vec<String>,
    scanner: Scanner,
}

impl SubmissionServerSide {
    pub fn new(creds: Credentials, settings: ServerSettings) -> Self {
        SubmissionServerSide {
            creds,
            settings,
            ex: Exchange::default(),
            state: State::Greeting,
            tls_done: false,
            mechanisms: Vec::new(),
            scanner: Scanner::default(),
        }
    }

    /// The client's EHLO name, which the back end is greeted with.
    fn helo(&self) -> &str {
        self.settings
            .client_id
            .iter()
            .find(|(key, _)| key == super::HELO)
            .map(|(_, name)| name.as_str())
            .unwrap_or(OWN_NAME)
    }

    fn ehlo(&mut self) -> ServerEvent {
        self.state = State::Ehlo;
        ServerEvent::Send(format!("EHLO {}\r\n", self.helo()).into_bytes())
    }

    /// One whole reply, in the state it answers.
    fn respond(&mut self, reply: Reply) -> ServerEvent {
        match std::mem::replace(&mut self.state, State::Greeting) {
            State::Greeting | State::Xclient if reply.code == 220 => self.ehlo(),
            // A refused XCLIENT changes nothing: the session greeted before goes on, but the
            // back end will see the proxy's address for this client: worth a warning.
            State::Xclient => self.xclient_refused(&reply),
            State::Greeting => self.refused("greeting", &reply),
            State::Ehlo if reply.code == 250 => self.after_ehlo(&reply),
            State::Ehlo => self.refused("EHLO", &reply),
            State::StartTls if reply.code == 220 => ServerEvent::StartTls,
            State::StartTls => {
                self.ex
                    .no_tls(format!("STARTTLS refused: {} {}", reply.code, reply.text()))
            }
            State::Auth { owed, challenged } => self.auth_answer(reply, owed, challenged),
        }
    }

    /// The back end's extensions are known: TLS first, then the client's name, then AUTH.
    fn after_ehlo(&mut self, reply: &Reply) -> ServerEvent {
        if self.settings.starttls && !self.tls_done {
            if reply.keyword("STARTTLS").is_none() {
                return self.ex.starttls_not_offered();
            }
            self.state = State::StartTls;
            return ServerEvent::Send(b"STARTTLS\r\n".to_vec());
        }
        self.mechanisms = reply
            .keyword("AUTH")
            .unwrap_or_default()
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let client = self.settings.client.take();
        if let (Some(client), Some(attributes)) = (client, reply.keyword("XCLIENT")) {
            self.state = State::Xclient;
            return ServerEvent::Send(xclient(&client, &attributes, self.helo()));
        }
        self.login()
    }

    /// The login goes on (its AUTH queued) after a note for the log.
    fn xclient_refused(&mut self, reply: &Reply) -> ServerEvent {
        match self.login() {
            ServerEvent::Send(auth) => {
                self.ex.queue(auth);
                ServerEvent::Note(format!(
                    "XCLIENT refused ({} {}): the back end sees the proxy's address",
                    reply.code,
                    reply.text()
                ))
            }
            other => other,
        }
    }

    /// AUTH with the client's mechanism, when the back end lists it: one it does not list
    /// would be refused as if the password were wrong, which it is not.
    fn login(&mut self) -> ServerEvent {
        let (mechanism, response) = initial_response(&self.creds);
        if !self.mechanisms.iter().any(|m| m == mechanism) {
            return self
                .ex
                .unavailable(format!("server does not offer AUTH {mechanism}"));
        }
        let (command, owed) = auth_command(mechanism, &response, MAX_AUTH_LINE);
        self.state = State::Auth {
            owed,
            challenged: false,
        };
        ServerEvent::Send(command)
    }

    fn auth_answer(
        &mut self,
        reply: Reply,
        owed: Option<Secret<Vec<u8>>>,
        challenged: bool,
    ) -> ServerEvent {
        let text = reply.text().to_string();
        match reply.code {
            235 => self.ex.accepted(None, text),
            334 => {
                self.state = State::Auth {
                    challenged: owed.is_none(),
                    owed: None,
                };
                match owed {
                    Some(owed) => ServerEvent::Send(owed.into_inner()),
                    None => ServerEvent::Send(self.after_challenge()),
                }
            }
            535 => self.ex.finish(LoginOutcome::Rejected { text }),
            500..=599 if challenged => self.ex.finish(LoginOutcome::Rejected { text }),
            400..=499 => self.ex.finish(LoginOutcome::unavailable(format!(
                "server said: {} {text}",
                reply.code
            ))),
            code => self.ex.unavailable(format!("AUTH answered {code} {text}")),
        }
    }

    /// The answer to a challenge after the whole response: an OAuth token's error (RFC 7628
    /// section 3.2.2) is acknowledged with the dummy response, `^A` for OAUTHBEARER and an
    /// empty line for XOAUTH2, so that the server's refusal follows; anything else is
    /// cancelled with `*`.
    fn after_challenge(&self) -> Vec<u8> {
        match self.creds.bearer.as_ref().map(|b| b.mechanism) {
            Some(Mechanism::OAuthBearer) => b"AQ==\r\n".to_vec(),
            Some(Mechanism::XOAuth2) => b"\r\n".to_vec(),
            _ => b"*\r\n".to_vec(),
        }
    }

    fn refused(&mut self, step: &str, reply: &Reply) -> ServerEvent {
        self.ex
            .unavailable(format!("{step} answered {} {}", reply.code, reply.text()))
    }
}

/// Postfix's XCLIENT (its XCLIENT_README) with the attributes the server `offered` among the
/// ones a submission proxy knows; values in xtext (RFC 3461).
fn xclient(client: &ClientAddress, offered: &[&str], helo: &str) -> Vec<u8> {
    let ip = client.peer.ip().to_canonical();
    let addr = match ip {
        std::net::IpAddr::V6(v6) => format!("IPV6:{v6}"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    let attributes = [
        ("ADDR", addr),
        ("PORT", client.peer.port().to_string()),
        ("PROTO", "ESMTP".to_string()),
        ("HELO", xtext(helo)),
    ];
    let mut line = String::from("XCLIENT");
    for (name, value) in attributes {
        if offered.iter().any(|o| o.eq_ignore_ascii_case(name)) {
            line += &format!(" {name}={value}");
        }
    }
    line += "\r\n";
    line.into_bytes()
}

/// RFC 3461's xtext: `+`, `=`, controls and what is not ASCII as `+XX`.
fn xtext(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'!'..=b'~' if b != b'+' && b != b'=' => (b as char).to_string(),
            _ => format!("+{b:02X}"),
        })
        .collect()
}

impl ServerDialect for SubmissionServerSide {
    fn exchange(&mut self) -> &mut Exchange {
        &mut self.ex
    }

    fn step(&mut self) -> Option<ServerEvent> {
        if !self.scanner.worth_parsing(&self.ex.input) {
            return Some(ServerEvent::NeedInput);
        }
        self.scanner.reset();
        match take_reply(&self.ex.input) {
            Ok(None) => Some(ServerEvent::NeedInput),
            Err(malformed) => Some(self.ex.unavailable(malformed.to_string())),
            Ok(Some((reply, used))) => {
                self.ex.input.drain(..used);
                Some(self.respond(reply))
            }
        }
    }

    fn after_tls(&mut self) {
        self.tls_done = true;
        self.scanner.reset();
        let event = self.ehlo();
        if let ServerEvent::Send(bytes) = event {
            self.ex.queue(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_support::client_address;
    use crate::protocol::{Failure, ServerSide};

    fn machine(settings: ServerSettings) -> SubmissionServerSide {
        let creds = Credentials {
            user: "alice".into(),
            user_bytes: None,
            secret: b"pw".to_vec().into(),
            bearer: None,
        };
        SubmissionServerSide::new(creds, settings)
    }

    fn sent(event: ServerEvent) -> String {
        match event {
            ServerEvent::Send(bytes) => String::from_utf8(bytes).unwrap(),
            other => panic!("expected Send, got {other:?}"),
        }
    }

    fn answer(m: &mut SubmissionServerSide, bytes: &[u8]) -> ServerEvent {
        m.receive(bytes);
        m.next_event()
    }

    #[test]
    fn greets_with_the_clients_name_then_auth_plain_then_relays() {
        let settings = ServerSettings {
            client_id: vec![("helo".into(), "mua.example".into())],
            ..ServerSettings::default()
        };
        let mut m = machine(settings);
        let ehlo = sent(answer(&mut m, b"220-mx ESMTP\r\n220 mx\r\n"));
        assert_eq!(ehlo, "EHLO mua.example\r\n");
        let auth = sent(answer(
            &mut m,
            b"250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
        ));
        assert_eq!(auth, "AUTH PLAIN AGFsaWNlAHB3\r\n");
        let done = answer(
            &mut m,
            b"235 2.7.0 Authentication successful\r\n250 early\r\n",
        );
        assert_eq!(
            done,
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: None,
                text: "2.7.0 Authentication successful".into()
            })
        );
        assert_eq!(m.take_unprocessed(), b"250 early\r\n");
    }

    #[test]
    fn starttls_then_xclient_then_ehlo_again() {
        let settings = ServerSettings {
            starttls: true,
            client: Some(client_address()),
            client_id: vec![("helo".into(), "m+x".into())],
        };
        let mut m = machine(settings);
        answer(&mut m, b"220 mx\r\n");
        let starttls = answer(&mut m, b"250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n");
        assert_eq!(sent(starttls), "STARTTLS\r\n");
        assert_eq!(answer(&mut m, b"220 go\r\n"), ServerEvent::StartTls);
        m.tls_established();
        assert_eq!(sent(m.next_event()), "EHLO m+x\r\n");
        let xclient = answer(
            &mut m,
            b"250-mx\r\n250-XCLIENT ADDR PORT HELO\r\n250 AUTH PLAIN\r\n",
        );
        assert_eq!(
            sent(xclient),
            "XCLIENT ADDR=192.0.2.7 PORT=51000 HELO=m+2Bx\r\n"
        );
        assert_eq!(sent(answer(&mut m, b"220 mx again\r\n")), "EHLO m+x\r\n");
        let auth = answer(&mut m, b"250-mx\r\n250 AUTH PLAIN\r\n");
        assert!(sent(auth).starts_with("AUTH PLAIN "));
    }

    #[test]
    fn a_wrong_password_is_rejected_and_a_4xx_is_never_one() {
        let mut m = machine(ServerSettings::default());
        answer(&mut m, b"220 mx\r\n");
        answer(&mut m, b"250-mx\r\n250 AUTH PLAIN\r\n");
        let wrong = answer(&mut m, b"535 5.7.8 Error: authentication failed\r\n");
        assert!(matches!(
            wrong,
            ServerEvent::Finished(LoginOutcome::Rejected { .. })
        ));
        let mut m = machine(ServerSettings::default());
        answer(&mut m, b"220 mx\r\n");
        answer(&mut m, b"250-mx\r\n250 AUTH PLAIN\r\n");
        let later = answer(&mut m, b"454 4.7.0 Temporary authentication failure\r\n");
        assert!(matches!(
            later,
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::Negotiation,
                ..
            })
        ));
    }

    #[test]
    fn a_back_end_without_starttls_or_auth_or_sense_is_unavailable() {
        let mut m = machine(ServerSettings {
            starttls: true,
            ..ServerSettings::default()
        });
        answer(&mut m, b"220 mx\r\n");
        let no_tls = answer(&mut m, b"250-mx\r\n250 AUTH PLAIN\r\n");
        assert!(matches!(
            no_tls,
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::NoTls,
                ..
            })
        ));
        let mut m = machine(ServerSettings::default());
        answer(&mut m, b"220 mx\r\n");
        let no_auth = answer(&mut m, b"250 mx\r\n");
        assert!(matches!(
            no_auth,
            ServerEvent::Finished(LoginOutcome::Failed { .. })
        ));
        let mut m = machine(ServerSettings::default());
        let garbage = answer(&mut m, b"HTTP/1.1 400 Bad Request\r\n");
        assert!(matches!(
            garbage,
            ServerEvent::Finished(LoginOutcome::Failed { .. })
        ));
        let mut m = machine(ServerSettings::default());
        let refused = answer(&mut m, b"554 5.3.2 go away\r\n");
        assert!(matches!(
            refused,
            ServerEvent::Finished(LoginOutcome::Failed { .. })
        ));
    }

    #[test]
    fn an_ipv6_client_is_named_as_postfix_wants_it() {
        let mut client = client_address();
        client.peer = "[2001:db8::7]:40000".parse().unwrap();
        let line = xclient(&client, &["ADDR", "PORT", "PROTO"], "h");
        assert_eq!(
            line,
            b"XCLIENT ADDR=IPV6:2001:db8::7 PORT=40000 PROTO=ESMTP\r\n"
        );
    }

    fn bearer_machine(token_len: usize) -> SubmissionServerSide {
        let response = format!(
            "user=alice\x01auth=Bearer {}\x01\x01",
            "t".repeat(token_len)
        );
        let creds = Credentials {
            user: "alice".into(),
            user_bytes: None,
            secret: b"t".to_vec().into(),
            bearer: Some(crate::protocol::Bearer {
                mechanism: Mechanism::XOAuth2,
                response: response.into_bytes().into(),
            }),
        };
        let mut m = SubmissionServerSide::new(creds, ServerSettings::default());
        answer(&mut m, b"220 mx\r\n");
        m
    }

    #[test]
    fn a_refused_token_is_acknowledged_and_its_refusal_counts_as_one() {
        let mut m = bearer_machine(20);
        let auth = sent(answer(&mut m, b"250-mx\r\n250 AUTH PLAIN XOAUTH2\r\n"));
        assert!(auth.starts_with("AUTH XOAUTH2 "), "{auth}");
        // RFC 7628's error challenge: the empty response, then the refusal.
        assert_eq!(
            sent(answer(&mut m, b"334 eyJzdGF0dXMiOiI0MDEifQ==\r\n")),
            "\r\n"
        );
        let refused = answer(&mut m, b"535 5.7.8 Authentication failed\r\n");
        assert!(matches!(
            refused,
            ServerEvent::Finished(LoginOutcome::Rejected { .. })
        ));
        let mut m = bearer_machine(20);
        answer(&mut m, b"250-mx\r\n250 AUTH XOAUTH2\r\n");
        answer(&mut m, b"334 eyJ9\r\n");
        let refused = answer(&mut m, b"501 5.5.2 Invalid response\r\n");
        assert!(matches!(
            refused,
            ServerEvent::Finished(LoginOutcome::Rejected { .. })
        ));
    }

    #[test]
    fn a_long_token_waits_for_the_334_within_an_smtp_command_line() {
        let mut m = bearer_machine(2500);
        let auth = sent(answer(&mut m, b"250-mx\r\n250 AUTH XOAUTH2\r\n"));
        assert_eq!(auth, "AUTH XOAUTH2\r\n");
        let owed = sent(answer(&mut m, b"334 \r\n"));
        assert!(
            owed.len() > 3000 && owed.ends_with("\r\n"),
            "{}",
            owed.len()
        );
        let done = answer(&mut m, b"235 2.7.0 ok\r\n");
        assert!(matches!(
            done,
            ServerEvent::Finished(LoginOutcome::Accepted { .. })
        ));
    }

    #[test]
    fn a_mechanism_the_back_end_does_not_list_is_not_tried() {
        let mut m = machine(ServerSettings::default());
        answer(&mut m, b"220 mx\r\n");
        let event = answer(&mut m, b"250-mx\r\n250 AUTH LOGIN\r\n");
        assert!(
            matches!(&event, ServerEvent::Finished(LoginOutcome::Failed { reason, .. })
                if reason == "server does not offer AUTH PLAIN"),
            "{event:?}"
        );
    }

    #[test]
    fn a_refused_xclient_is_noted_and_the_login_goes_on() {
        let settings = ServerSettings {
            client: Some(client_address()),
            ..ServerSettings::default()
        };
        let mut m = machine(settings);
        answer(&mut m, b"220 mx\r\n");
        let xclient = answer(&mut m, b"250-mx\r\n250-XCLIENT ADDR\r\n250 AUTH PLAIN\r\n");
        assert!(sent(xclient).starts_with("XCLIENT ADDR=192.0.2.7"));
        let note = answer(&mut m, b"550 5.7.0 Not authorized\r\n");
        assert!(
            matches!(&note, ServerEvent::Note(text) if text.contains("550 5.7.0 Not authorized")),
            "{note:?}"
        );
        assert!(sent(m.next_event()).starts_with("AUTH PLAIN "));
    }
}
