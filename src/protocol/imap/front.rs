//! The IMAP client side: greets, answers the pre-login commands and collects credentials.

use crate::protocol::conversation::{
    self, Conversation, Dialect, LoginBlock, StartTlsBlock, Words,
};
use crate::protocol::line::{pop_line, Line};
use crate::protocol::sasl::{Mechanism, Next, PlainError};
use crate::protocol::token::Token;
use crate::protocol::{leading_response_code, user_name, ClientEvent, Credentials, NamedClient};

use super::command::{parse_command, Command, CommandError, Parsed};

/// Advertised before login when the configuration does not say otherwise.
pub const DEFAULT_CAPABILITY: &str = "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+";

/// IMAP's words and parsing for the pre-login conversation.
#[derive(Default)]
pub struct Imap {
    /// Literals of the current command already answered with `+`, so that a command arriving
    /// in many reads gets exactly one continuation per literal.
    literals_acknowledged: usize,
    /// The client's own `ID` fields, kept to be passed on to the back end.
    client_id: Vec<(String, String)>,
}

/// The IMAP client side.
pub type ImapClientSide = Conversation<Imap>;

/// A pending login or SASL exchange remembers its command's tag.
type Core = conversation::Core<String>;

/// `XCLIENT`'s words, which a client's `ID` does not get to pass on either.
const XCLIENT_WORDS: [&str; 4] = ["addr", "port", "ttl", "session"];

/// RFC 2971's limits: at most 30 fields, names up to 30 bytes, values up to 1024.
const MAX_ID_FIELDS: usize = 30;
const MAX_ID_NAME: usize = 30;
const MAX_ID_VALUE: usize = 1024;

/// The client a trusted peer names in its `ID` (`x-originating-ip` and friends).
fn named_client(params: &[Token]) -> Option<NamedClient> {
    let pairs: Vec<(String, String)> = params
        .chunks_exact(2)
        .filter_map(|pair| match pair {
            [Token::String(k) | Token::Atom(k), Token::String(v) | Token::Atom(v)] => Some((
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )),
            _ => None,
        })
        .collect();
    NamedClient::from_id(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The fields of an `ID` list worth passing on: within RFC 2971's limits, NIL values left out,
/// names of printable ASCII without spaces and values of printable ASCII only (anything else
/// is dropped whole, never cleaned, so that what is checked is what is sent), and no `x-`
/// names, which Dovecot believes from a trusted proxy (`x-originating-ip` and the like) and
/// which only the proxy may set.
fn id_fields(params: &[Token]) -> Vec<(String, String)> {
    let name_ok = |n: &[u8]| !n.is_empty() && n.iter().all(|b| (0x21..=0x7e).contains(b));
    let value_ok = |v: &[u8]| v.iter().all(|b| (0x20..=0x7e).contains(b));
    params
        .chunks_exact(2)
        .filter_map(|pair| match pair {
            [Token::String(name) | Token::Atom(name), Token::String(value)] => Some((name, value)),
            _ => None,
        })
        .filter(|(name, value)| {
            name.len() <= MAX_ID_NAME
                && value.len() <= MAX_ID_VALUE
                && name_ok(name)
                && value_ok(value)
                && !name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case(b"x-"))
                && !XCLIENT_WORDS
                    .iter()
                    .any(|w| name.eq_ignore_ascii_case(w.as_bytes()))
        })
        .take(MAX_ID_FIELDS)
        .map(|(name, value)| {
            (
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )
        })
        .collect()
}

fn login_refusal(core: &Core) -> Option<&'static str> {
    match core.login_block()? {
        LoginBlock::Disabled => Some("NO [UNAVAILABLE] Logins are disabled"),
        LoginBlock::TlsRequired => Some("NO [PRIVACYREQUIRED] Use STARTTLS before logging in"),
    }
}

/// The configured (or default) capabilities, with what depends on the connection made true
/// for it: STARTTLS only while it can be used, LOGINDISABLED while logins are refused, and
/// AUTH=PLAIN (the one mechanism a proxy can forward) otherwise; whatever the configured
/// string says about those is replaced.
fn capabilities(core: &Core) -> String {
    let base = core
        .settings
        .capability
        .as_deref()
        .unwrap_or(DEFAULT_CAPABILITY);
    let mut caps: Vec<&str> = base
        .split_ascii_whitespace()
        .filter(|c| {
            let upper = c.to_ascii_uppercase();
            upper != "STARTTLS" && upper != "LOGINDISABLED" && !upper.starts_with("AUTH=")
        })
        .collect();
    if core.starttls_available() {
        caps.push("STARTTLS");
    }
    if login_refusal(core).is_some() {
        caps.push("LOGINDISABLED");
    } else {
        caps.extend(["AUTH=PLAIN", "AUTH=LOGIN"]);
        if core.settings.oauth {
            caps.extend(["AUTH=OAUTHBEARER", "AUTH=XOAUTH2"]);
        }
    }
    caps.join(" ")
}

fn close_with(core: &mut Core, text: &str) -> ClientEvent {
    core.close(format!("* BYE {text}\r\n").into_bytes())
}

impl Imap {
    fn parse_error(
        &mut self,
        core: &mut Core,
        error: CommandError,
        consumed: usize,
        tag: Option<String>,
    ) -> ClientEvent {
        core.input.drain(..consumed.min(core.input.len()));
        self.literals_acknowledged = 0;
        let tag = tag.unwrap_or_else(|| "*".into());
        match error {
            CommandError::LineTooLong => core
                .close(format!("{tag} BAD Line too long\r\n* BYE Line too long\r\n").into_bytes()),
            CommandError::LiteralTooBig {
                synchronising: true,
            } => reply(&tag, "BAD [TOOBIG] Literal too large"),
            CommandError::LiteralTooBig {
                synchronising: false,
            } => core.close(
                format!("{tag} BAD [TOOBIG] Literal too large\r\n* BYE Literal too large\r\n")
                    .into_bytes(),
            ),
            CommandError::BadTag => ClientEvent::Send(b"* BAD Invalid tag\r\n".to_vec()),
            CommandError::Syntax => reply(&tag, "BAD Syntax error"),
        }
    }

    fn execute(&mut self, core: &mut Core, command: Command) -> ClientEvent {
        let tag = command.tag.as_str();
        match (command.name.as_str(), command.args.as_slice()) {
            ("CAPABILITY", []) => ClientEvent::Send(
                format!(
                    "* CAPABILITY {}\r\n{tag} OK Capability completed\r\n",
                    capabilities(core)
                )
                .into_bytes(),
            ),
            ("NOOP", []) => reply(tag, "OK NOOP completed"),
            ("LOGOUT", []) => core
                .close(format!("* BYE Logging out\r\n{tag} OK Logout completed\r\n").into_bytes()),
            ("ID", [arg]) => {
                self.client_id = match arg {
                    Token::List(params) => id_fields(params),
                    _ => Vec::new(),
                };
                // The first ID that names a client counts, as in Dovecot.
                if let (true, None, Token::List(params)) =
                    (core.named_client_trusted, &core.named_client, arg)
                {
                    core.named_client = named_client(params);
                }
                ClientEvent::Send(
                    format!(
                        "* ID (\"name\" \"{}\" \"version\" \"{}\")\r\n{tag} OK ID completed\r\n",
                        core.settings.product,
                        env!("CARGO_PKG_VERSION")
                    )
                    .into_bytes(),
                )
            }
            ("STARTTLS", []) => match core.starttls_block() {
                Some(StartTlsBlock::AlreadyActive) => reply(tag, "BAD TLS is already active"),
                Some(StartTlsBlock::NotOffered) => reply(tag, "BAD STARTTLS is not available"),
                None => {
                    core.start_tls(format!("{tag} OK Begin TLS negotiation now\r\n").into_bytes())
                }
            },
            ("LOGIN", [user, pass]) => login(core, tag, user, pass),
            ("AUTHENTICATE", [mechanism, rest @ ..]) if rest.len() <= 1 => {
                authenticate(core, tag, mechanism, rest.first())
            }
            (
                "CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS" | "LOGIN" | "AUTHENTICATE" | "ID",
                _,
            ) => reply(tag, "BAD Syntax error in arguments"),
            _ => reply(tag, "BAD Command not permitted before login"),
        }
    }
}

fn login(core: &mut Core, tag: &str, user: &Token, pass: &Token) -> ClientEvent {
    let (Some(user), Some(pass)) = (user.text(), pass.text()) else {
        return reply(tag, "BAD Syntax error in LOGIN arguments");
    };
    if let Some(refusal) = login_refusal(core) {
        return refused(Some(user), tag, refusal);
    }
    match user_name(user, core.settings.pass_non_utf8_names) {
        Some((user, user_bytes)) => {
            let creds = Credentials {
                user,
                user_bytes,
                secret: pass.to_vec().into(),
                bearer: None,
            };
            core.begin_login(tag.to_string(), creds)
        }
        None => reply(tag, "NO [AUTHENTICATIONFAILED] Invalid user name"),
    }
}

fn authenticate(
    core: &mut Core,
    tag: &str,
    mechanism: &Token,
    initial: Option<&Token>,
) -> ClientEvent {
    let Some(mechanism) = mechanism.text().and_then(Mechanism::named) else {
        return reply(tag, "NO Unsupported authentication mechanism");
    };
    if let Some(refusal) = login_refusal(core) {
        return refused(None, tag, refusal);
    }
    let first = core.begin_sasl(mechanism);
    match initial.map(Token::text) {
        Some(Some(initial)) => sasl_response(core, tag.to_string(), initial),
        None => core.await_sasl(tag.to_string(), format!("+ {first}\r\n").into_bytes()),
        Some(None) => reply(tag, "BAD Syntax error in AUTHENTICATE arguments"),
    }
}

/// Take a SASL response (`=` is an empty one): the credentials, or the next challenge.
fn sasl_response(core: &mut Core, tag: String, response: &[u8]) -> ClientEvent {
    let response = if response == b"=" { &b""[..] } else { response };
    match core.sasl_respond(response) {
        Next::Login(creds) => core.begin_login(tag, creds),
        Next::Challenge(text) => core.await_sasl(tag, format!("+ {text}\r\n").into_bytes()),
        Next::Failed(PlainError::Base64) => reply(&tag, "BAD Invalid base64 data"),
        Next::Failed(PlainError::Syntax) => {
            reply(&tag, "NO [AUTHENTICATIONFAILED] Invalid SASL response")
        }
        Next::Failed(PlainError::AuthzidMismatch) => reply(
            &tag,
            "NO [AUTHORIZATIONFAILED] Authorization identity not supported",
        ),
    }
}

fn reply(tag: &str, text: &str) -> ClientEvent {
    ClientEvent::Send(format!("{tag} {text}\r\n").into_bytes())
}

fn refused(user: Option<&[u8]>, tag: &str, text: &str) -> ClientEvent {
    ClientEvent::LoginRefused {
        user: user.map(|u| String::from_utf8_lossy(u).into_owned()),
        reply: format!("{tag} {text}\r\n").into_bytes(),
    }
}

impl Dialect for Imap {
    type Pending = String;

    const WORDS: Words = Words {
        rejected: "NO [AUTHENTICATIONFAILED] Authentication failed.",
        too_many_failures: b"* BYE Too many failed logins\r\n",
        unavailable: "NO [UNAVAILABLE] Mail server unavailable, try again later",
        busy: "NO [UNAVAILABLE] Too many logins at once from your address, try again later",
        limit: "NO [LIMIT] Too many sessions for this user, try again later",
        timeout: b"* BYE Autologout; too long without logging in\r\n",
        shutdown: b"* BYE [UNAVAILABLE] Server shutting down\r\n",
        overloaded: b"* BYE [UNAVAILABLE] Too many connections, try again later\r\n",
        too_many_from_address:
            b"* BYE [UNAVAILABLE] Too many connections from your address, try again later\r\n",
        banned: b"* BYE [UNAVAILABLE] Too many failed logins, try again later\r\n",
    };

    fn greeting(&mut self, core: &Core) -> Vec<u8> {
        format!(
            "* OK [CAPABILITY {}] {} ready on {}\r\n",
            capabilities(core),
            core.settings.product,
            core.settings.greeting_host
        )
        .into_bytes()
    }

    fn command(&mut self, core: &mut Core) -> ClientEvent {
        match parse_command(&core.input, core.counters.limits()) {
            Parsed::Incomplete {
                literal: Some((index, true)),
            } if index >= self.literals_acknowledged => {
                self.literals_acknowledged = index + 1;
                ClientEvent::Send(b"+ Ready for literal data\r\n".to_vec())
            }
            Parsed::Incomplete { .. } => ClientEvent::NeedInput,
            Parsed::Error {
                error,
                consumed,
                tag,
            } => {
                if !core.count_command() {
                    return close_with(core, "Too many commands before login");
                }
                self.parse_error(core, error, consumed, tag)
            }
            Parsed::Command { command, consumed } => {
                core.input.drain(..consumed);
                self.literals_acknowledged = 0;
                if !core.count_command() {
                    return close_with(core, "Too many commands before login");
                }
                self.execute(core, command)
            }
        }
    }

    fn sasl_response(&mut self, core: &mut Core) -> ClientEvent {
        let max = core.counters.limits().max_line_length;
        match pop_line(&mut core.input, max) {
            Ok(response) => {
                let tag = core.finish_sasl().unwrap_or_else(|| "*".into());
                if response == b"*" {
                    reply(&tag, "BAD Authentication cancelled")
                } else {
                    sasl_response(core, tag, &response)
                }
            }
            Err(Line::TooLong) => close_with(core, "Line too long"),
            Err(_) => ClientEvent::NeedInput,
        }
    }

    fn accepted(&self, tag: Option<String>, capabilities: Option<&str>, text: &str) -> Vec<u8> {
        let tag = tag.unwrap_or_else(|| "*".into());
        let code = capabilities
            .map(|c| format!("[CAPABILITY {c}] "))
            .unwrap_or_default();
        format!("{tag} OK {code}{text}\r\n").into_bytes()
    }

    fn denied(&self, tag: Option<String>, message: &str) -> Vec<u8> {
        // The service's own code (`[UNAVAILABLE]`: try later) is the one the client acts
        // on; a second in front would hide it, as nginx shows the text unchanged.
        match leading_response_code(message, '[') {
            Some(_) => self.answer(tag, &format!("NO {message}")),
            None => self.answer(tag, &format!("NO [AUTHENTICATIONFAILED] {message}")),
        }
    }

    fn client_id(&self) -> Vec<(String, String)> {
        self.client_id.clone()
    }

    fn answer(&self, tag: Option<String>, text: &str) -> Vec<u8> {
        let tag = tag.unwrap_or_else(|| "*".into());
        format!("{tag} {text}\r\n").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_support::{creds, feed, settings, text, Garbage};
    use crate::protocol::{AfterLogin, ClientSide, LoginOutcome};

    fn machine() -> ImapClientSide {
        ImapClientSide::new(settings())
    }

    #[test]
    fn greeting_advertises_capabilities() {
        let g = String::from_utf8(machine().greeting()).unwrap();
        assert_eq!(
            g,
            "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN] Portcullis ready on proxy.test\r\n"
        );
    }

    #[test]
    fn configured_capability_is_used_verbatim_plus_what_the_connection_offers() {
        let mut s = settings();
        s.capability = Some("IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+".into());
        s.starttls_offered = false;
        s.tls_active = true;
        let mut m = ImapClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"c CAPABILITY\r\n")),
            "* CAPABILITY IMAP4rev1 LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ AUTH=PLAIN AUTH=LOGIN\r\nc OK Capability completed\r\n"
        );
    }

    #[test]
    fn configured_words_about_tls_and_login_are_made_true_for_the_connection() {
        let mut s = settings();
        s.capability = Some("IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=CRAM-MD5 IDLE".into());
        s.starttls_offered = false;
        s.tls_active = true;
        s.login_disabled = true;
        let mut m = ImapClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"c CAPABILITY\r\n")),
            "* CAPABILITY IMAP4rev1 IDLE LOGINDISABLED\r\nc OK Capability completed\r\n"
        );
    }

    #[test]
    fn noop_capability_and_unknown_commands() {
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"a NOOP\r\n")),
            "a OK NOOP completed\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"b SELECT INBOX\r\n")),
            "b BAD Command not permitted before login\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"c NOOP extra\r\n")),
            "c BAD Syntax error in arguments\r\n"
        );
        assert_eq!(text(&feed(&mut m, b"+ NOOP\r\n")), "* BAD Invalid tag\r\n");
    }

    #[test]
    fn logout_says_bye_and_closes() {
        let mut m = machine();
        assert_eq!(
            feed(&mut m, b"z LOGOUT\n"),
            vec![ClientEvent::Close(
                b"* BYE Logging out\r\nz OK Logout completed\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn id_answers_and_remembers_the_client() {
        let mut m = machine();
        let out = text(&feed(
            &mut m,
            b"i ID (\"name\" \"Thunderbird\" \"X-Originating-IP\" \"10.9.9.9\" \"os\" NIL \"version\" {4+}\r\n\"1\"2 \"x-proxy-ttl\" \"1\")\r\n",
        ));
        assert!(out.starts_with("* ID (\"name\" \"Portcullis\""), "{out}");
        assert!(out.ends_with("i OK ID completed\r\n"));
        // The client may not name an address or a TTL: only the proxy sets x- fields, and a
        // name with a control character in front is not a way round that.
        let out = text(&feed(
            &mut m,
            b"k ID (\"\x01x-originating-ip\" \"10.6.6.1\" \"\xc2\x85X-Forward-a\" \"b\" \"os\" \"Th\xc3\xbcx\")\r\n",
        ));
        assert!(out.ends_with("k OK ID completed\r\n"), "{out}");
        assert!(m.client_id().is_empty(), "{:?}", m.client_id());
        let out = text(&feed(
            &mut m,
            b"i ID (\"name\" \"Thunderbird\" \"X-Originating-IP\" \"10.9.9.9\" \"os\" NIL \"version\" {4+}\r\n\"1\"2 \"x-proxy-ttl\" \"1\")\r\n",
        ));
        assert!(out.ends_with("i OK ID completed\r\n"), "{out}");
        assert_eq!(
            m.client_id(),
            vec![
                ("name".to_string(), "Thunderbird".to_string()),
                ("version".to_string(), "\"1\"2".to_string())
            ]
        );
        assert_eq!(
            text(&feed(&mut m, b"j ID NIL\r\n")).lines().last(),
            Some("j OK ID completed")
        );
        assert!(m.client_id().is_empty());
    }

    #[test]
    fn login_with_literals_gets_one_continuation_per_literal_at_any_split() {
        let input = b"a LOGIN {5}\r\nalice {6}\r\nsecret\r\n";
        let is_continuation =
            |e: &ClientEvent| *e == ClientEvent::Send(b"+ Ready for literal data\r\n".to_vec());
        // A client that waits for each `+` gets exactly one per literal.
        let mut m = machine();
        let mut events = Vec::new();
        for byte in input {
            events.extend(feed(&mut m, &[*byte]));
        }
        assert_eq!(events.iter().filter(|e| is_continuation(e)).count(), 2);
        assert_eq!(events.last(), Some(&creds("alice", "secret")));
        // Whatever way the bytes are split, never more than one `+` per literal.
        for cut in 0..input.len() {
            let mut m = machine();
            let mut events = feed(&mut m, &input[..cut]);
            events.extend(feed(&mut m, &input[cut..]));
            assert!(events.iter().filter(|e| is_continuation(e)).count() <= 2);
            assert_eq!(
                events.last(),
                Some(&creds("alice", "secret")),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn non_synchronising_literals_need_no_continuation() {
        let mut m = machine();
        assert_eq!(
            feed(&mut m, b"a LOGIN {5+}\r\nalice {2+}\r\npw\r\n"),
            vec![creds("alice", "pw")]
        );
    }

    #[test]
    fn pipelined_commands_are_answered_in_order_and_after_login_kept_for_the_back_end() {
        let mut m = machine();
        let events = feed(
            &mut m,
            b"a NOOP\r\nb CAPABILITY\r\nc LOGIN alice pw\r\nd SELECT INBOX\r\n",
        );
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], creds("alice", "pw"));
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: Some("IMAP4rev1 IDLE".into()),
            text: "Logged in".into(),
        });
        assert_eq!(reply.next, AfterLogin::Relay);
        assert_eq!(
            reply.bytes,
            b"c OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n".to_vec()
        );
        assert_eq!(m.take_unprocessed(), b"d SELECT INBOX\r\n".to_vec());
    }

    #[test]
    fn ok_line_replaces_the_back_end_text() {
        let mut s = settings();
        s.ok_line = Some("You are so in".into());
        let mut m = ImapClientSide::new(s);
        feed(&mut m, b"a LOGIN alice pw\r\n");
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: "Logged in".into(),
        });
        assert_eq!(reply.bytes, b"a OK You are so in\r\n".to_vec());
    }

    #[test]
    fn authenticate_plain_with_initial_response() {
        let mut m = machine();
        // "\0alice\0pw"
        assert_eq!(
            feed(&mut m, b"a AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n"),
            vec![creds("alice", "pw")]
        );
    }

    #[test]
    fn authenticate_plain_with_continuation_and_cancel() {
        let mut m = machine();
        assert_eq!(text(&feed(&mut m, b"a AUTHENTICATE plain\r\n")), "+ \r\n");
        assert_eq!(
            feed(&mut m, b"AGFsaWNlAHB3\r\n"),
            vec![creds("alice", "pw")]
        );
        let mut m = machine();
        feed(&mut m, b"b AUTHENTICATE PLAIN\r\n");
        assert_eq!(
            text(&feed(&mut m, b"*\r\n")),
            "b BAD Authentication cancelled\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"c AUTHENTICATE CRAM-MD5\r\n")),
            "c NO Unsupported authentication mechanism\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"d AUTHENTICATE PLAIN %%%\r\n")),
            "d BAD Invalid base64 data\r\n"
        );
    }

    #[test]
    fn starttls_discards_pipelined_plaintext() {
        let mut m = machine();
        let events = feed(&mut m, b"a STARTTLS\r\nb LOGIN alice pw\r\n");
        assert_eq!(
            events,
            vec![ClientEvent::StartTls(
                b"a OK Begin TLS negotiation now\r\n".to_vec()
            )]
        );
        m.tls_established();
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        let caps = text(&feed(&mut m, b"c CAPABILITY\r\n"));
        assert!(!caps.contains("STARTTLS"), "{caps}");
        assert_eq!(
            text(&feed(&mut m, b"d STARTTLS\r\n")),
            "d BAD TLS is already active\r\n"
        );
    }

    #[test]
    fn tls_required_disables_login_until_starttls() {
        let mut s = settings();
        s.tls_required = true;
        let mut m = ImapClientSide::new(s);
        assert!(String::from_utf8(m.greeting())
            .unwrap()
            .contains("LOGINDISABLED"));
        assert_eq!(
            text(&feed(&mut m, b"a LOGIN alice pw\r\n")),
            "a NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"b AUTHENTICATE PLAIN AGFsaWNlAHB3\r\n")),
            "b NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"
        );
        feed(&mut m, b"c STARTTLS\r\n");
        m.tls_established();
        assert_eq!(
            feed(&mut m, b"d LOGIN alice pw\r\n"),
            vec![creds("alice", "pw")]
        );
    }

    #[test]
    fn failed_logins_are_counted_and_end_the_session() {
        let mut m = machine();
        feed(&mut m, b"a LOGIN alice bad\r\n");
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(r.next, AfterLogin::Continue);
        assert_eq!(
            r.bytes,
            b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".to_vec()
        );
        feed(&mut m, b"b LOGIN alice bad\r\n");
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(r.next, AfterLogin::Close);
        assert!(String::from_utf8(r.bytes)
            .unwrap()
            .ends_with("* BYE Too many failed logins\r\n"));
    }

    fn denied(message: &str, retry: bool) -> LoginOutcome {
        LoginOutcome::Denied {
            message: message.into(),
            retry,
        }
    }

    #[test]
    fn a_services_own_response_code_is_not_doubled() {
        let mut m = machine();
        feed(&mut m, b"a LOGIN alice pw\r\n");
        let r = m.login_finished(&denied("[UNAVAILABLE] Temporary server problem", true));
        assert_eq!(r.bytes, b"a NO [UNAVAILABLE] Temporary server problem\r\n");
        let mut m = machine();
        feed(&mut m, b"b LOGIN alice pw\r\n");
        let r = m.login_finished(&denied("Invalid login or password", true));
        let expected = b"b NO [AUTHENTICATIONFAILED] Invalid login or password\r\n";
        assert_eq!(r.bytes, expected);
        // Brackets that are no code are words: the proxy's code goes first.
        let mut m = machine();
        feed(&mut m, b"c LOGIN alice pw\r\n");
        let r = m.login_finished(&denied("[not a code", true));
        assert_eq!(r.bytes, b"c NO [AUTHENTICATIONFAILED] [not a code\r\n");
    }

    #[test]
    fn a_name_that_is_not_utf8_is_passed_on_only_where_asked() {
        let passing = crate::protocol::ClientSettings {
            pass_non_utf8_names: true,
            ..settings()
        };
        let mut m = ImapClientSide::new(passing);
        let events = feed(&mut m, b"a LOGIN {4+}\r\ncaf\xe9 pw\r\n");
        let [ClientEvent::Login(given)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(given.user, "caf\\xE9");
        assert_eq!(given.user_bytes.as_deref(), Some(&b"caf\xe9"[..]));
        // A UTF-8 name has no bytes of its own to keep.
        let mut m = ImapClientSide::new(crate::protocol::ClientSettings {
            pass_non_utf8_names: true,
            ..settings()
        });
        assert_eq!(
            feed(&mut m, b"a LOGIN caf\xc3\xa9 pw\r\n"),
            vec![creds("caf\u{e9}", "pw")]
        );
        let mut m = machine();
        let refused = text(&feed(&mut m, b"a LOGIN {4+}\r\ncaf\xe9 pw\r\n"));
        assert_eq!(refused, "a NO [AUTHENTICATIONFAILED] Invalid user name\r\n");
    }

    #[test]
    fn a_refusal_without_retry_closes_after_the_answer_alone() {
        let mut m = machine();
        feed(&mut m, b"a LOGIN alice pw\r\nb NOOP\r\n");
        let r = m.login_finished(&denied("Invalid login or password", false));
        assert_eq!(r.next, AfterLogin::Close);
        let expected = b"a NO [AUTHENTICATIONFAILED] Invalid login or password\r\n";
        assert_eq!(r.bytes, expected);
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        let mut m = machine();
        feed(&mut m, b"a LOGIN alice pw\r\n");
        let r = m.login_finished(&denied("Invalid login or password", true));
        assert_eq!(r.next, AfterLogin::Continue);
    }

    #[test]
    fn unavailable_back_end_is_a_tagged_no() {
        let mut m = machine();
        feed(&mut m, b"a LOGIN alice pw\r\n");
        let r = m.login_finished(&LoginOutcome::unavailable("refused"));
        assert_eq!(r.next, AfterLogin::Continue);
        assert!(r.bytes.starts_with(b"a NO [UNAVAILABLE] "));
    }

    #[test]
    fn bounds_close_the_connection_with_a_reason() {
        let mut m = machine();
        let long = format!("a LOGIN {}\r\n", "x".repeat(200));
        let events = feed(&mut m, long.as_bytes());
        assert!(
            matches!(&events[..], [ClientEvent::Close(b)] if b.ends_with(b"* BYE Line too long\r\n"))
        );

        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"a LOGIN {51}\r\n")),
            "a BAD [TOOBIG] Literal too large\r\n"
        );
        let events = feed(&mut m, b"b LOGIN {51+}\r\n");
        assert!(matches!(&events[..], [ClientEvent::Close(_)]));

        let mut m = machine();
        let events = feed(&mut m, "n NOOP\r\n".repeat(11).as_bytes());
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Close(
                b"* BYE Too many commands before login\r\n".to_vec()
            ))
        );
    }

    /// What the server side writes, the client side must read back: random credentials,
    /// encoded as the back-end machine would encode them, decode to themselves.
    #[test]
    fn credentials_round_trip_through_every_string_encoding() {
        use crate::protocol::imap::{string_argument, StringArgument};
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: Vec<u8> = (1..=255u8).collect();
        for round in 0..500 {
            let mut value = |max_len: u64| -> Vec<u8> {
                let len = 1 + next() % max_len;
                (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect()
            };
            let user = String::from_utf8_lossy(&value(12)).into_owned();
            let pass = value(20);
            let literal_plus = round % 2 == 0;
            let mut wire = b"t LOGIN ".to_vec();
            for (i, v) in [user.as_bytes(), &pass[..]].into_iter().enumerate() {
                if i == 1 {
                    wire.push(b' ');
                }
                match string_argument(v, literal_plus) {
                    StringArgument::Quoted(q) => wire.extend_from_slice(&q),
                    StringArgument::Literal { header, .. } => {
                        wire.extend_from_slice(&header);
                        wire.extend_from_slice(b"\r\n");
                        wire.extend_from_slice(v);
                    }
                }
            }
            wire.extend_from_slice(b"\r\n");
            let mut s = settings();
            s.limits.max_line_length = 1000;
            let mut m = ImapClientSide::new(s);
            let events = feed(&mut m, &wire);
            assert_eq!(
                events.last(),
                Some(&ClientEvent::Login(Credentials {
                    user: user.clone(),
                    user_bytes: None,
                    secret: pass.clone().into(),
                    bearer: None,
                })),
                "round {round}: {:?}",
                String::from_utf8_lossy(&wire)
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut garbage = Garbage::default();
        for _ in 0..2000 {
            let mut m = machine();
            let bytes = garbage.bytes(300, b"a {}()\"\\ \r\n+*0123LOGINAUTHENTICATE");
            let _ = feed(&mut m, &bytes);
        }
    }

    #[test]
    fn authenticate_login_asks_for_user_then_password() {
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"a AUTHENTICATE LOGIN\r\n")),
            "+ VXNlcm5hbWU6\r\n"
        );
        // "alice", then "pw"
        assert_eq!(text(&feed(&mut m, b"YWxpY2U=\r\n")), "+ UGFzc3dvcmQ6\r\n");
        assert_eq!(feed(&mut m, b"cHc=\r\n"), vec![creds("alice", "pw")]);
        // With SASL-IR the user name comes first.
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"b AUTHENTICATE login YWxpY2U=\r\n")),
            "+ UGFzc3dvcmQ6\r\n"
        );
        assert_eq!(feed(&mut m, b"cHc=\r\n"), vec![creds("alice", "pw")]);
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert!(r.bytes.starts_with(b"b NO [AUTHENTICATIONFAILED]"));
    }
}
