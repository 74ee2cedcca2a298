//! The IMAP server side: reads the back end's greeting, optionally upgrades with STARTTLS, learns
//! its capabilities and logs in with the client's credentials.

use crate::protocol::quoted;
use crate::protocol::sasl::initial_response;
use crate::protocol::server_login::{continuation, Exchange, LineDialect};
use crate::protocol::{
    has_capability, Credentials, LoginOutcome, Secret, ServerEvent, ServerSettings,
};

use super::{capability_code, parse_response, string_argument, ResponseLine, StringArgument};

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
            .flat_map(|(k, v)| [id_value(&k), id_value(&v)])
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
            let initial_response = has_capability(&caps, "SASL-IR");
            return self.authenticate(mechanism, response.into_bytes(), initial_response);
        }
        if self.creds.bearer.is_some() {
            return self
                .ex
                .unavailable(format!("server does not offer AUTH={mechanism}"));
        }
        if has_capability(&caps, "LOGINDISABLED") {
            return self.ex.unavailable("server advertises LOGINDISABLED");
        }
        let user = self.creds.user.as_bytes().to_vec();
        let secret = self.creds.secret.expose().clone();
        let mut chunks = login_chunks([user, secret], has_capability(&caps, "LITERAL+"));
        let first = chunks.remove(0);
        self.state = State::Login {
            pending: Secret::new(chunks),
        };
        ServerEvent::Send(first)
    }

    /// `AUTHENTICATE`, with the response in the command when the server takes `SASL-IR`, else
    /// after its `+`.
    fn authenticate(&mut self, mechanism: &str, response: Vec<u8>, sasl_ir: bool) -> ServerEvent {
        if sasl_ir {
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
        ServerEvent::Send(command.into_bytes())
    }

    fn after_capabilities(&mut self) -> ServerEvent {
        if self.settings.starttls {
            if let Some(caps) = &self.capabilities {
                if !has_capability(caps, "STARTTLS") {
                    return self.ex.starttls_not_offered();
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

    /// Handle one line; `None` means "keep reading". Untagged `CAPABILITY` and `BYE` count in
    /// every state; anything else is read by the state's own step.
    fn respond(&mut self, line: &[u8]) -> Option<ServerEvent> {
        let Some(r) = parse_response(line) else {
            return Some(self.ex.unavailable("server sent a line that is not UTF-8"));
        };
        let keyword = r.keyword.to_ascii_uppercase();
        if r.tag == "*" && keyword == "CAPABILITY" {
            self.capabilities_listed(line);
            return None;
        }
        if r.tag == "*" && keyword == "BYE" {
            return Some(self.ex.unavailable(format!("server said BYE: {}", r.text)));
        }
        match &mut self.state {
            State::Greeting => Some(self.greeting(&r, &keyword, line)),
            State::StartTls => self.starttls_answer(&r, &keyword),
            State::Capability => self.capability_answer(&r, &keyword),
            // Whatever the answer (a server that ignores it says OK too), the login follows.
            State::ForwardId => (r.tag == TAG_ID).then(|| self.login()),
            State::Login { pending } if r.tag == "+" => {
                let pending = pending.expose_mut();
                Some(continuation(
                    (!pending.is_empty()).then(|| pending.remove(0)),
                ))
            }
            State::Login { .. } => self.login_answer(&r, &keyword),
            State::PostCapability { text } => {
                if r.tag != TAG_POST_CAPABILITY {
                    return None;
                }
                let text = std::mem::take(text);
                let capabilities = self.post_login_capabilities.take();
                Some(self.ex.accepted(capabilities, text))
            }
        }
    }

    /// An untagged `CAPABILITY`: before the login it lists what the login may use, during or
    /// after it what the client will be offered.
    fn capabilities_listed(&mut self, line: &[u8]) {
        let caps = line
            .get(13..)
            .map(|c| String::from_utf8_lossy(c).into_owned());
        match self.state {
            State::Login { .. } | State::PostCapability { .. } => {
                self.post_login_capabilities = caps
            }
            _ => self.capabilities = caps,
        }
    }

    /// The greeting must be an untagged `OK`, perhaps with the capabilities in its code.
    fn greeting(&mut self, r: &ResponseLine<'_>, keyword: &str, line: &[u8]) -> ServerEvent {
        if r.tag != "*" || keyword != "OK" {
            return self.ex.unavailable(format!(
                "unexpected greeting: {}",
                String::from_utf8_lossy(line)
            ));
        }
        self.capabilities = capability_code(r.code).map(str::to_string);
        self.after_capabilities()
    }

    fn starttls_answer(&mut self, r: &ResponseLine<'_>, keyword: &str) -> Option<ServerEvent> {
        if r.tag != TAG_STARTTLS {
            return None;
        }
        if keyword == "OK" {
            Some(ServerEvent::StartTls)
        } else {
            Some(self.ex.no_tls(format!("STARTTLS refused: {}", r.text)))
        }
    }

    fn capability_answer(&mut self, r: &ResponseLine<'_>, keyword: &str) -> Option<ServerEvent> {
        if r.tag != TAG_CAPABILITY {
            return None;
        }
        if keyword != "OK" || self.capabilities.is_none() {
            return Some(self.ex.unavailable("CAPABILITY failed"));
        }
        Some(self.before_login())
    }

    /// The tagged answer to the login. Accepted without capabilities, they are asked for, so
    /// that the client is offered what the server offers after the login.
    fn login_answer(&mut self, r: &ResponseLine<'_>, keyword: &str) -> Option<ServerEvent> {
        if r.tag != TAG_LOGIN {
            return None;
        }
        if keyword != "OK" {
            let outcome = LoginOutcome::refused_by_server(r.code, r.text.to_string());
            return Some(self.ex.finish(outcome));
        }
        let text = r.text.to_string();
        let caps = capability_code(r.code)
            .map(str::to_string)
            .or_else(|| self.post_login_capabilities.take());
        match caps {
            Some(capabilities) => Some(self.ex.accepted(Some(capabilities), text)),
            None => {
                self.state = State::PostCapability { text };
                Some(ServerEvent::Send(
                    format!("{TAG_POST_CAPABILITY} CAPABILITY\r\n").into_bytes(),
                ))
            }
        }
    }
}

/// `LOGIN user pass` in the pieces it goes in: every synchronising literal waits for its `+`,
/// so each starts a new piece. The last piece ends the command.
fn login_chunks(values: [Vec<u8>; 2], literal_plus: bool) -> Vec<Vec<u8>> {
    let mut chunks: Vec<Vec<u8>> = vec![format!("{TAG_LOGIN} LOGIN ").into_bytes()];
    for (i, value) in values.into_iter().enumerate() {
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
    chunks
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
fn id_value(value: &str) -> String {
    let printable: String = value.chars().filter(|c| !c.is_control()).collect();
    let mut out = Vec::with_capacity(printable.len() + 2);
    quoted::write(&mut out, printable.as_bytes());
    // Only ASCII `"` and `\` were added to UTF-8 text.
    String::from_utf8_lossy(&out).into_owned()
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
