//! The IMAP server side: reads the back end's greeting, optionally upgrades with STARTTLS, learns
//! its capabilities and logs in with the client's credentials.

use crate::protocol::sasl::initial_response;
use crate::protocol::server_login::{Exchange, LineDialect};
use crate::protocol::{
    has_capability, Credentials, LoginOutcome, Secret, ServerEvent, ServerSettings,
};

use super::{capability_code, parse_response, string_argument, StringArgument};

/// Tags of the proxy's own commands; they never reach the client.
const TAG_STARTTLS: &str = "pc0";
const TAG_CAPABILITY: &str = "pc1";
const TAG_LOGIN: &str = "pc2";
const TAG_POST_CAPABILITY: &str = "pc3";
const TAG_ID: &str = "pc4";

#[derive(Debug)]
enum State {
    Greeting,
    StartTls,
    Capability,
    /// Waiting for `+` before sending the rest of the login; `pending` is what follows.
    Login {
        pending: Secret<Vec<Vec<u8>>>,
    },
    /// Login accepted without capabilities; asking for them.
    PostCapability {
        text: String,
    },
    /// The client's address sent in an `ID`; the login follows its answer.
    ForwardId,
}

pub struct ImapServerSide {
    creds: Credentials,
    settings: ServerSettings,
    ex: Exchange,
    state: State,
    /// Pre-login capabilities (from the greeting or a CAPABILITY command).
    capabilities: Option<String>,
    /// Capabilities seen in an untagged response during or after login.
    post_login_capabilities: Option<String>,
}

impl ImapServerSide {
    pub fn new(creds: Credentials, settings: ServerSettings) -> Self {
        ImapServerSide {
            creds,
            settings,
            ex: Exchange::default(),
            state: State::Greeting,
            capabilities: None,
            post_login_capabilities: None,
        }
    }

    /// Capabilities are known: when the server takes `ID`, send one first with the client's
    /// address (when asked to) and the client's own fields, then log in. One command, because
    /// Dovecot reads only the first `ID` of a connection.
    fn before_login(&mut self) -> ServerEvent {
        let caps = self.capabilities.as_deref().unwrap_or_default();
        let address = self.settings.client.take();
        let client_id = std::mem::take(&mut self.settings.client_id);
        if !has_capability(caps, "ID") || (address.is_none() && client_id.is_empty()) {
            return self.login();
        }
        let fields = address.iter().flat_map(|a| a.id_fields());
        let list: Vec<String> = fields
            .map(|(k, v)| (k.to_string(), v))
            .chain(client_id)
            .flat_map(|(k, v)| [quoted(&k), quoted(&v)])
            .collect();
        self.state = State::ForwardId;
        let command = format!("{TAG_ID} ID ({})\r\n", list.join(" "));
        ServerEvent::Send(command.into_bytes())
    }

    /// Capabilities are known: log in the best way the server offers.
    fn login(&mut self) -> ServerEvent {
        let caps = self.capabilities.clone().unwrap_or_default();
        let (mechanism, response) = initial_response(&self.creds);
        if has_capability(&caps, &format!("AUTH={mechanism}")) {
            let response = response.into_bytes();
            if has_capability(&caps, "SASL-IR") {
                self.state = State::Login {
                    pending: Secret::default(),
                };
                let mut cmd = format!("{TAG_LOGIN} AUTHENTICATE {mechanism} ").into_bytes();
                cmd.extend_from_slice(&response);
                cmd.extend_from_slice(b"\r\n");
                return ServerEvent::Send(cmd);
            }
            let mut rest = response;
            rest.extend_from_slice(b"\r\n");
            self.state = State::Login {
                pending: Secret::new(vec![rest]),
            };
            let command = format!("{TAG_LOGIN} AUTHENTICATE {mechanism}\r\n");
            return ServerEvent::Send(command.into_bytes());
        }
        if self.creds.bearer.is_some() {
            return self
                .ex
                .unavailable(format!("server does not offer AUTH={mechanism}"));
        }
        if has_capability(&caps, "LOGINDISABLED") {
            return self.ex.unavailable("server advertises LOGINDISABLED");
        }
        // LOGIN user pass, with every synchronising literal waiting for its `+`.
        let literal_plus = has_capability(&caps, "LITERAL+");
        let mut chunks: Vec<Vec<u8>> = vec![format!("{TAG_LOGIN} LOGIN ").into_bytes()];
        let user = self.creds.user.as_bytes().to_vec();
        let secret = self.creds.secret.expose().clone();
        for (i, value) in [user, secret].into_iter().enumerate() {
            let current = chunks.last_mut().expect("never empty");
            if i == 1 {
                current.push(b' ');
            }
            match string_argument(&value, literal_plus) {
                StringArgument::Quoted(q) => current.extend_from_slice(&q),
                StringArgument::Literal {
                    header,
                    synchronising,
                } => {
                    current.extend_from_slice(&header);
                    current.extend_from_slice(b"\r\n");
                    if synchronising {
                        chunks.push(value);
                    } else {
                        current.extend_from_slice(&value);
                    }
                }
            }
        }
        chunks
            .last_mut()
            .expect("never empty")
            .extend_from_slice(b"\r\n");
        let first = chunks.remove(0);
        self.state = State::Login {
            pending: Secret::new(chunks),
        };
        ServerEvent::Send(first)
    }

    fn after_capabilities(&mut self) -> ServerEvent {
        if self.settings.starttls {
            if let Some(caps) = &self.capabilities {
                if !has_capability(caps, "STARTTLS") {
                    return self.ex.no_tls("server does not offer STARTTLS");
                }
            }
            self.state = State::StartTls;
            return ServerEvent::Send(format!("{TAG_STARTTLS} STARTTLS\r\n").into_bytes());
        }
        match self.capabilities {
            Some(_) => self.before_login(),
            None => {
                self.state = State::Capability;
                ServerEvent::Send(format!("{TAG_CAPABILITY} CAPABILITY\r\n").into_bytes())
            }
        }
    }

    /// Handle one line; `None` means "keep reading".
    fn respond(&mut self, line: &[u8]) -> Option<ServerEvent> {
        let Some(r) = parse_response(line) else {
            return Some(self.ex.unavailable("server sent a line that is not UTF-8"));
        };
        let keyword = r.keyword.to_ascii_uppercase();
        if r.tag == "*" && keyword == "CAPABILITY" {
            let caps = line
                .get(13..)
                .map(|c| String::from_utf8_lossy(c).into_owned());
            match self.state {
                State::Login { .. } | State::PostCapability { .. } => {
                    self.post_login_capabilities = caps
                }
                _ => self.capabilities = caps,
            }
            return None;
        }
        if r.tag == "*" && keyword == "BYE" {
            return Some(self.ex.unavailable(format!("server said BYE: {}", r.text)));
        }
        match &mut self.state {
            State::Greeting => {
                if r.tag != "*" || keyword != "OK" {
                    return Some(self.ex.unavailable(format!(
                        "unexpected greeting: {}",
                        String::from_utf8_lossy(line)
                    )));
                }
                self.capabilities = capability_code(r.code).map(str::to_string);
                self.state = State::Greeting;
                let event = self.after_capabilities();
                Some(event)
            }
            State::StartTls => {
                if r.tag != TAG_STARTTLS {
                    return None;
                }
                if keyword == "OK" {
                    Some(ServerEvent::StartTls)
                } else {
                    Some(self.ex.no_tls(format!("STARTTLS refused: {}", r.text)))
                }
            }
            State::Capability => {
                if r.tag != TAG_CAPABILITY {
                    return None;
                }
                if keyword != "OK" || self.capabilities.is_none() {
                    return Some(self.ex.unavailable("CAPABILITY failed"));
                }
                Some(self.before_login())
            }
            // Whatever the answer (a server that ignores it says OK too), the login follows.
            State::ForwardId => (r.tag == TAG_ID).then(|| self.login()),
            State::Login { pending } => {
                if r.tag == "+" {
                    let pending = pending.expose_mut();
                    if pending.is_empty() {
                        // A challenge we did not expect: cancel the exchange.
                        return Some(ServerEvent::Send(b"*\r\n".to_vec()));
                    }
                    return Some(ServerEvent::Send(pending.remove(0)));
                }
                if r.tag != TAG_LOGIN {
                    return None;
                }
                match keyword.as_str() {
                    "OK" => {
                        let text = r.text.to_string();
                        let caps = capability_code(r.code)
                            .map(str::to_string)
                            .or_else(|| self.post_login_capabilities.take());
                        match caps {
                            Some(capabilities) => Some(self.ex.finish(LoginOutcome::Accepted {
                                capabilities: Some(capabilities),
                                text,
                            })),
                            None => {
                                self.state = State::PostCapability { text };
                                Some(ServerEvent::Send(
                                    format!("{TAG_POST_CAPABILITY} CAPABILITY\r\n").into_bytes(),
                                ))
                            }
                        }
                    }
                    _ => Some(
                        self.ex
                            .finish(LoginOutcome::refused_by_server(r.code, r.text.to_string())),
                    ),
                }
            }
            State::PostCapability { text } => {
                if r.tag != TAG_POST_CAPABILITY {
                    return None;
                }
                let text = std::mem::take(text);
                Some(self.ex.finish(LoginOutcome::Accepted {
                    capabilities: self.post_login_capabilities.take(),
                    text,
                }))
            }
        }
    }
}

impl LineDialect for ImapServerSide {
    fn exchange(&mut self) -> &mut Exchange {
        &mut self.ex
    }

    fn line(&mut self, line: &[u8]) -> Option<ServerEvent> {
        self.respond(line)
    }

    fn after_tls(&mut self) {
        self.capabilities = None;
        self.state = State::Capability;
        self.ex
            .queue(format!("{TAG_CAPABILITY} CAPABILITY\r\n").into_bytes());
    }
}

/// An `ID` value as a quoted string (addresses, ports, ids: no control characters).
fn quoted(value: &str) -> String {
    let escaped: String = value
        .chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_support::client_address;
    use crate::protocol::{Failure, ServerSide};

    fn creds(pass: &str) -> Credentials {
        Credentials {
            user: "alice".into(),
            user_bytes: None,
            secret: Secret::new(pass.as_bytes().to_vec()),
            bearer: None,
        }
    }

    fn side(pass: &str, starttls: bool) -> ImapServerSide {
        ImapServerSide::new(
            creds(pass),
            ServerSettings {
                starttls,
                ..ServerSettings::default()
            },
        )
    }

    fn step(m: &mut ImapServerSide, bytes: &[u8]) -> ServerEvent {
        m.receive(bytes);
        m.next_event()
    }

    const DOVECOT_GREETING: &[u8] = b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n";

    #[test]
    fn dovecot_login_uses_sasl_ir_and_returns_post_login_capabilities() {
        let mut m = side("pw", false);
        assert_eq!(
            step(&mut m, DOVECOT_GREETING),
            ServerEvent::Send(b"pc2 AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n".to_vec())
        );
        assert_eq!(
            step(
                &mut m,
                b"pc2 OK [CAPABILITY IMAP4rev1 IDLE MOVE] Logged in\r\n* 1 EXISTS\r\n"
            ),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: Some("IMAP4rev1 IDLE MOVE".into()),
                text: "Logged in".into()
            })
        );
        assert_eq!(m.take_unprocessed(), b"* 1 EXISTS\r\n".to_vec());
    }

    #[test]
    fn plain_login_with_synchronising_literals_for_awkward_passwords() {
        let mut m = side("p\u{e4}ss", false);
        assert_eq!(
            step(&mut m, b"* OK ready\r\n"),
            ServerEvent::Send(b"pc1 CAPABILITY\r\n".to_vec())
        );
        assert_eq!(
            step(&mut m, b"* CAPABILITY IMAP4rev1\r\npc1 OK done\r\n"),
            ServerEvent::Send(b"pc2 LOGIN \"alice\" {5}\r\n".to_vec())
        );
        assert_eq!(
            step(&mut m, b"+ go\r\n"),
            ServerEvent::Send("p\u{e4}ss\r\n".as_bytes().to_vec())
        );
        assert_eq!(
            step(&mut m, b"* CAPABILITY IMAP4rev1 X\r\npc2 OK hi\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: Some("IMAP4rev1 X".into()),
                text: "hi".into()
            })
        );
    }

    #[test]
    fn missing_post_login_capabilities_are_asked_for() {
        let mut m = side("pw", false);
        step(&mut m, b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n");
        assert_eq!(
            step(&mut m, b"pc2 OK in\r\n"),
            ServerEvent::Send(b"pc3 CAPABILITY\r\n".to_vec())
        );
        assert_eq!(
            step(&mut m, b"* CAPABILITY IMAP4rev1 Y\r\npc3 OK\r\n"),
            ServerEvent::Finished(LoginOutcome::Accepted {
                capabilities: Some("IMAP4rev1 Y".into()),
                text: "in".into()
            })
        );
    }

    #[test]
    fn rejection_and_bad_greetings() {
        let mut m = side("bad", false);
        step(&mut m, DOVECOT_GREETING);
        assert_eq!(
            step(
                &mut m,
                b"pc2 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
            ),
            ServerEvent::Finished(LoginOutcome::Rejected {
                text: "Authentication failed.".into()
            })
        );
        let mut m = side("pw", false);
        assert!(matches!(
            step(&mut m, b"* BYE go away\r\n"),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::Negotiation,
                ..
            })
        ));
        let mut m = side("pw", false);
        assert!(matches!(
            step(&mut m, b"HTTP/1.1 400 Bad Request\r\n"),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::Negotiation,
                ..
            })
        ));
    }

    #[test]
    fn starttls_upgrade_then_fresh_capabilities() {
        let mut m = side("pw", true);
        assert_eq!(
            step(&mut m, DOVECOT_GREETING),
            ServerEvent::Send(b"pc0 STARTTLS\r\n".to_vec())
        );
        assert_eq!(step(&mut m, b"pc0 OK Begin TLS\r\n"), ServerEvent::StartTls);
        m.tls_established();
        assert_eq!(
            m.next_event(),
            ServerEvent::Send(b"pc1 CAPABILITY\r\n".to_vec())
        );
        assert_eq!(
            step(
                &mut m,
                b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\npc1 OK Pre-login capabilities listed\r\n"
            ),
            ServerEvent::Send(b"pc2 AUTHENTICATE PLAIN\r\n".to_vec())
        );
        assert_eq!(
            step(&mut m, b"+ \r\n"),
            ServerEvent::Send(b"AGFsaWNlAHB3\r\n".to_vec())
        );
    }

    #[test]
    fn starttls_required_but_not_offered_is_no_tls() {
        let mut m = side("pw", true);
        assert!(matches!(
            step(&mut m, b"* OK [CAPABILITY IMAP4rev1] hi\r\n"),
            ServerEvent::Finished(LoginOutcome::Failed {
                failure: Failure::NoTls,
                ..
            })
        ));
    }

    #[test]
    fn the_clients_address_goes_in_an_id_before_the_login() {
        let mut m = ImapServerSide::new(
            creds("pw"),
            ServerSettings {
                starttls: false,
                client: Some(client_address()),
                ..ServerSettings::default()
            },
        );
        let ServerEvent::Send(id) = step(&mut m, DOVECOT_GREETING) else {
            panic!()
        };
        assert!(id.starts_with(b"pc4 ID (\"x-originating-ip\" \"192.0.2.7\" "));
        assert!(id.ends_with(b" \"x-proxy-ttl\" \"5\")\r\n"));
        let event = step(&mut m, b"* ID NIL\r\npc4 OK ID completed.\r\n");
        assert!(matches!(&event, ServerEvent::Send(b) if b.starts_with(b"pc2 AUTHENTICATE PLAIN")));
        // The client's own fields follow the address in the same ID; alone, they still go.
        for address in [Some(client_address()), None] {
            let with_address = address.is_some();
            let mut m = ImapServerSide::new(
                creds("pw"),
                ServerSettings {
                    starttls: false,
                    client: address,
                    client_id: vec![("name".into(), "Thunder\"bird".into())],
                },
            );
            let ServerEvent::Send(id) = step(&mut m, DOVECOT_GREETING) else {
                panic!()
            };
            let id = String::from_utf8(id).unwrap();
            assert!(id.ends_with("\"name\" \"Thunder\\\"bird\")\r\n"), "{id}");
            assert_eq!(id.contains("x-originating-ip"), with_address, "{id}");
        }
        // A server without ID: straight to the login.
        let mut m = ImapServerSide::new(
            creds("pw"),
            ServerSettings {
                starttls: false,
                client: Some(client_address()),
                ..ServerSettings::default()
            },
        );
        let event = step(
            &mut m,
            b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n",
        );
        assert!(matches!(&event, ServerEvent::Send(b) if b.starts_with(b"pc2 AUTHENTICATE PLAIN")));
    }
}
