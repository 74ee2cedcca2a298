//! The SMTP submission server side: reads the back end's greeting, greets it with the client's
//! EHLO name, upgrades with STARTTLS when asked to (and greets again), names the client with
//! Postfix's XCLIENT when asked to and offered (and greets again), then logs in with AUTH and
//! the client's credentials. A `4xx` is "try later", never a wrong password.

use crate::protocol::sasl::initial_response;
use crate::protocol::server_login::{auth_command, continuation, Exchange, ServerDialect};
use crate::protocol::{
    ClientAddress, Credentials, LoginOutcome, Secret, ServerEvent, ServerSettings,
};

use super::reply::{take_reply, Reply};

/// Longest AUTH command line with its initial response (RFC 4954 section 4); a longer one
/// waits for the `334` instead.
const MAX_AUTH_LINE: usize = 12_288;

/// The EHLO name when the client gave none (it always does before AUTH).
const OWN_NAME: &str = "portcullis";

#[derive(Debug)]
enum State {
    Greeting,
    Ehlo,
    StartTls,
    /// XCLIENT sent: a new greeting comes back when it was taken.
    Xclient,
    /// AUTH sent; `owed` is the response still owed to a `334`.
    Auth {
        owed: Option<Secret<Vec<u8>>>,
    },
}

pub struct SubmissionServerSide {
    creds: Credentials,
    settings: ServerSettings,
    ex: Exchange,
    state: State,
    tls_done: bool,
}

impl SubmissionServerSide {
    pub fn new(creds: Credentials, settings: ServerSettings) -> Self {
        SubmissionServerSide {
            creds,
            settings,
            ex: Exchange::default(),
            state: State::Greeting,
            tls_done: false,
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
            // A refused XCLIENT changes nothing: the session greeted before goes on.
            State::Xclient => self.login(),
            State::Greeting => self.refused("greeting", &reply),
            State::Ehlo if reply.code == 250 => self.after_ehlo(&reply),
            State::Ehlo => self.refused("EHLO", &reply),
            State::StartTls if reply.code == 220 => ServerEvent::StartTls,
            State::StartTls => {
                self.ex
                    .no_tls(format!("STARTTLS refused: {} {}", reply.code, reply.text()))
            }
            State::Auth { owed } => self.auth_answer(reply, owed),
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
        let client = self.settings.client.take();
        if let (Some(client), Some(attributes)) = (client, reply.keyword("XCLIENT")) {
            self.state = State::Xclient;
            return ServerEvent::Send(xclient(&client, &attributes, self.helo()));
        }
        if reply.keyword("AUTH").is_none() {
            return self.ex.unavailable("server does not offer AUTH");
        }
        self.login()
    }

    fn login(&mut self) -> ServerEvent {
        let (mechanism, response) = initial_response(&self.creds);
        let (command, owed) = auth_command(mechanism, &response, MAX_AUTH_LINE);
        self.state = State::Auth { owed };
        ServerEvent::Send(command)
    }

    fn auth_answer(&mut self, reply: Reply, owed: Option<Secret<Vec<u8>>>) -> ServerEvent {
        let text = reply.text().to_string();
        match reply.code {
            235 => self.ex.accepted(None, text),
            334 => {
                // Asked again after the whole response: `*` cancels (and is answered 501).
                self.state = State::Auth { owed: None };
                continuation(owed.map(Secret::into_inner))
            }
            535 => self.ex.finish(LoginOutcome::Rejected { text }),
            400..=499 => self.ex.finish(LoginOutcome::unavailable(format!(
                "server said: {} {text}",
                reply.code
            ))),
            code => self.ex.unavailable(format!("AUTH answered {code} {text}")),
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
}
