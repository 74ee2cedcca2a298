//! The POP3 client side: greets, answers the AUTHORIZATION-state commands (RFC 1939, CAPA from
//! RFC 2449, STLS from RFC 2595, AUTH from RFC 5034) and collects credentials.

use crate::protocol::conversation::{
    self, Conversation, Dialect, LoginBlock, StartTlsBlock, Words,
};
use crate::protocol::line::{pop_line, split_word, Line};
use crate::protocol::sasl::{Mechanism, Next, PlainError};
use crate::protocol::{leading_response_code, user_name, ClientEvent, Credentials, NamedClient};

/// Advertised before login when the configuration does not say otherwise, one CAPA line each.
pub const DEFAULT_CAPABILITY: &[&str] = &[
    "TOP",
    "UIDL",
    "RESP-CODES",
    "PIPELINING",
    "AUTH-RESP-CODE",
    "USER",
    "SASL PLAIN LOGIN",
];

/// Split a configured capability string into CAPA lines.
///
/// A POP3 capability may carry arguments separated by single spaces (`SASL PLAIN`,
/// `EXPIRE 30`), so Perdition's `pop_capability` separates capabilities with *two* spaces:
/// `"USER  UIDL  TOP"`. We split on line breaks (CR and/or LF) and on every run of two or more
/// spaces, keep single spaces inside an entry, trim each entry and drop empty ones. A string
/// without a double space or line break is therefore one capability: `"SASL PLAIN"` stays one
/// line, and so does `"USER UIDL TOP"` (write it with two spaces to get three lines).
pub fn parse_capability(configured: &str) -> Vec<String> {
    configured
        .split(['\r', '\n'])
        .flat_map(|line| line.split("  "))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

/// The first word of a capability line, which names it.
fn capability_name(line: &str) -> &str {
    line.split(' ').next().unwrap_or("")
}

/// POP3's words and parsing for the pre-login conversation.
#[derive(Default)]
pub struct Pop3 {
    /// The name given by `USER` (and its bytes when not UTF-8), waiting for `PASS`.
    user: Option<(String, Option<Vec<u8>>)>,
}

/// The POP3 client side.
pub type Pop3ClientSide = Conversation<Pop3>;

/// POP3 answers are untagged: a pending login remembers nothing.
type Core = conversation::Core<()>;

fn login_refusal(core: &Core) -> Option<&'static str> {
    match core.login_block()? {
        LoginBlock::Disabled => Some("-ERR [SYS/PERM] Logins are disabled"),
        // No response code: [SYS/PERM] would tell the client the server is broken. Dovecot
        // answers the same way.
        LoginBlock::TlsRequired => Some("-ERR Plaintext authentication disallowed, use STLS first"),
    }
}

/// The CAPA lines for this connection.
///
/// The configured list (or [`DEFAULT_CAPABILITY`]) is used as it is, except for what depends
/// on the connection: `STLS` is listed exactly when STARTTLS is offered and TLS is not yet
/// active, and `USER` and `SASL` are left out while logins are refused.
fn capabilities(core: &Core) -> Vec<String> {
    let mut caps: Vec<String> = match &core.settings.capability {
        Some(configured) => parse_capability(configured),
        None => DEFAULT_CAPABILITY.iter().map(|c| c.to_string()).collect(),
    };
    let refused = login_refusal(core).is_some();
    caps.retain(|c| {
        let name = capability_name(c);
        !name.eq_ignore_ascii_case("STLS")
            && !(refused
                && (name.eq_ignore_ascii_case("USER") || name.eq_ignore_ascii_case("SASL")))
    });
    if core.settings.oauth {
        for cap in caps.iter_mut() {
            if capability_name(cap).eq_ignore_ascii_case("SASL") {
                cap.push_str(" OAUTHBEARER XOAUTH2");
            }
        }
    }
    if core.starttls_available() {
        caps.push("STLS".into());
    }
    caps
}

fn close_with(core: &mut Core, text: &str) -> ClientEvent {
    core.close(format!("{text}\r\n").into_bytes())
}

fn capa(core: &Core) -> ClientEvent {
    let mut out = b"+OK Capability list follows\r\n".to_vec();
    for cap in capabilities(core) {
        // Byte-stuff, so that a configured entry can never end the list early.
        if cap.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(cap.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    ClientEvent::Send(out)
}

impl Pop3 {
    fn execute(&mut self, core: &mut Core, name: &[u8], args: &[u8]) -> ClientEvent {
        let name = name.to_ascii_uppercase();
        let no_args = args.iter().all(|&b| b == b' ' || b == b'\t');
        match name.as_slice() {
            b"CAPA" | b"NOOP" | b"QUIT" | b"STLS" if !no_args => reply("-ERR Syntax error"),
            b"CAPA" => capa(core),
            b"NOOP" => reply("+OK"),
            b"QUIT" => close_with(core, "+OK Bye"),
            b"STLS" => match core.starttls_block() {
                Some(StartTlsBlock::AlreadyActive) => reply("-ERR TLS is already active"),
                Some(StartTlsBlock::NotOffered) => reply("-ERR STLS is not available"),
                None => {
                    self.user = None;
                    core.start_tls(b"+OK Begin TLS negotiation\r\n".to_vec())
                }
            },
            b"USER" => self.user_command(core, args),
            b"PASS" => self.pass(core, args),
            b"AUTH" => self.auth(core, args),
            // Dovecot's command for a trusted proxy or webmail naming its client.
            b"XCLIENT" if core.named_client_trusted && core.named_client.is_none() => {
                let attributes = String::from_utf8_lossy(args);
                match NamedClient::from_xclient(&attributes) {
                    Some(named) => {
                        core.named_client = Some(named);
                        reply("+OK Updated")
                    }
                    None => reply("-ERR Invalid parameters"),
                }
            }
            _ => reply("-ERR Command not permitted before login"),
        }
    }

    fn user_command(&mut self, core: &Core, args: &[u8]) -> ClientEvent {
        if let Some(refusal) = login_refusal(core) {
            return ClientEvent::LoginRefused {
                user: Some(String::from_utf8_lossy(args).into_owned()),
                reply: format!("{refusal}\r\n").into_bytes(),
            };
        }
        if args.is_empty() || args.contains(&0) {
            return reply("-ERR Syntax error in USER arguments");
        }
        match user_name(args, core.settings.pass_non_utf8_names) {
            Some(user) => {
                self.user = Some(user);
                reply("+OK")
            }
            None => reply("-ERR [AUTH] Invalid user name"),
        }
    }

    fn pass(&mut self, core: &mut Core, args: &[u8]) -> ClientEvent {
        if let Some(refusal) = login_refusal(core) {
            return reply(refusal);
        }
        let Some((user, user_bytes)) = self.user.take() else {
            return reply("-ERR No user name given, use USER first");
        };
        if args.is_empty() {
            // Keep the user: the client may still send a proper PASS.
            self.user = Some((user, user_bytes));
            return reply("-ERR Syntax error in PASS arguments");
        }
        let creds = Credentials {
            user,
            user_bytes,
            secret: args.to_vec().into(),
            bearer: None,
        };
        core.begin_login((), creds)
    }

    /// `AUTH` (RFC 5034). Without a mechanism it lists the mechanisms as Outlook and older
    /// clients expect (the pre-RFC 5034 form Dovecot also answers): `+OK`, one per line, `.`.
    fn auth(&mut self, core: &mut Core, args: &[u8]) -> ClientEvent {
        if let Some(refusal) = login_refusal(core) {
            return ClientEvent::LoginRefused {
                user: None,
                reply: format!("{refusal}\r\n").into_bytes(),
            };
        }
        self.user = None;
        let (mechanism, rest) = split_word(args);
        if mechanism.is_empty() {
            return if rest.is_empty() {
                ClientEvent::Send(if core.settings.oauth {
                    b"+OK\r\nPLAIN\r\nLOGIN\r\nOAUTHBEARER\r\nXOAUTH2\r\n.\r\n".to_vec()
                } else {
                    b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n".to_vec()
                })
            } else {
                reply("-ERR Syntax error in AUTH arguments")
            };
        }
        let Some(mechanism) = Mechanism::named(mechanism) else {
            return reply("-ERR Unsupported authentication mechanism");
        };
        let first = core.begin_sasl(mechanism);
        if rest.is_empty() {
            return core.await_sasl((), format!("+ {first}\r\n").into_bytes());
        }
        if rest.contains(&b' ') {
            return reply("-ERR Syntax error in AUTH arguments");
        }
        sasl_response(core, rest)
    }
}

/// Take a SASL response (`=` is an empty one): the credentials, or the next challenge.
fn sasl_response(core: &mut Core, response: &[u8]) -> ClientEvent {
    let response = if response == b"=" { &b""[..] } else { response };
    match core.sasl_respond(response) {
        Next::Login(creds) => core.begin_login((), creds),
        Next::Challenge(text) => core.await_sasl((), format!("+ {text}\r\n").into_bytes()),
        Next::Failed(PlainError::Base64) => reply("-ERR Invalid base64 data"),
        Next::Failed(PlainError::Syntax) => reply("-ERR [AUTH] Invalid SASL response"),
        Next::Failed(PlainError::AuthzidMismatch) => {
            reply("-ERR [AUTH] Authorization identity not supported")
        }
    }
}

fn reply(text: &str) -> ClientEvent {
    ClientEvent::Send(format!("{text}\r\n").into_bytes())
}

impl Dialect for Pop3 {
    type Pending = ();

    const WORDS: Words = Words {
        rejected: "-ERR [AUTH] Authentication failed.",
        too_many_failures: b"",
        unavailable: "-ERR [SYS/TEMP] Mail server unavailable, try again later",
        busy: "-ERR [SYS/TEMP] Too many logins at once from your address, try again later",
        limit: "-ERR [IN-USE] Too many sessions for this user, try again later",
        timeout: b"-ERR Autologout; too long without logging in\r\n",
        shutdown: b"-ERR [SYS/TEMP] Server shutting down\r\n",
        overloaded: b"-ERR [SYS/TEMP] Too many connections, try again later\r\n",
        too_many_from_address:
            b"-ERR [SYS/TEMP] Too many connections from your address, try again later\r\n",
        banned: b"-ERR [SYS/TEMP] Too many failed logins, try again later\r\n",
    };

    /// `[XCLIENT]` tells a trusted peer it may name its client, as Dovecot's greeting does.
    fn greeting(&mut self, core: &Core) -> Vec<u8> {
        let xclient = if core.named_client_trusted {
            "[XCLIENT] "
        } else {
            ""
        };
        format!(
            "+OK {xclient}{} ready on {}\r\n",
            core.settings.product, core.settings.greeting_host
        )
        .into_bytes()
    }

    fn command(&mut self, core: &mut Core) -> ClientEvent {
        let max = core.counters.limits().max_line_length;
        let line = match pop_line(&mut core.input, max) {
            Ok(line) => line,
            Err(Line::TooLong) => return close_with(core, "-ERR Line too long"),
            Err(_) => return ClientEvent::NeedInput,
        };
        if !core.count_command() {
            return close_with(core, "-ERR Too many commands");
        }
        let (name, args) = split_word(&line);
        self.execute(core, name, args)
    }

    fn sasl_response(&mut self, core: &mut Core) -> ClientEvent {
        let max = core.counters.limits().max_line_length;
        let line = match pop_line(&mut core.input, max) {
            Ok(line) => line,
            Err(Line::TooLong) => return close_with(core, "-ERR Line too long"),
            Err(_) => return ClientEvent::NeedInput,
        };
        core.finish_sasl();
        if line == b"*" {
            return reply("-ERR Authentication cancelled");
        }
        sasl_response(core, &line)
    }

    fn tls_established(&mut self, _core: &Core) {
        self.user = None;
    }

    fn accepted(&self, _: Option<()>, _capabilities: Option<&str>, text: &str) -> Vec<u8> {
        if text.is_empty() {
            b"+OK\r\n".to_vec()
        } else {
            format!("+OK {text}\r\n").into_bytes()
        }
    }

    fn denied(&self, _: Option<()>, message: &str) -> Vec<u8> {
        // An RFC 2449/3206 code of the service's own (`[SYS/TEMP]`: try later) is the one
        // the client acts on; `[AUTH]` in front would hide it.
        match leading_response_code(message, '[') {
            Some(_) => format!("-ERR {message}\r\n").into_bytes(),
            None => format!("-ERR [AUTH] {message}\r\n").into_bytes(),
        }
    }

    fn answer(&self, _: Option<()>, text: &str) -> Vec<u8> {
        format!("{text}\r\n").into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_support::{creds, feed, settings, text, Garbage};
    use crate::protocol::{AfterLogin, ClientSide, LoginOutcome};

    fn machine() -> Pop3ClientSide {
        Pop3ClientSide::new(settings())
    }

    const DEFAULT_CAPA: &str = "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n";

    #[test]
    fn greeting_names_product_and_host() {
        assert_eq!(
            machine().greeting(),
            b"+OK Portcullis ready on proxy.test\r\n".to_vec()
        );
    }

    #[test]
    fn capa_lists_the_defaults_and_stls() {
        let mut m = machine();
        assert_eq!(text(&feed(&mut m, b"CAPA\r\n")), DEFAULT_CAPA);
        assert_eq!(text(&feed(&mut m, b"capa\n")), DEFAULT_CAPA);
        assert_eq!(text(&feed(&mut m, b"CAPA x\r\n")), "-ERR Syntax error\r\n");
    }

    #[test]
    fn capa_without_stls_when_tls_is_active_or_not_offered() {
        let mut s = settings();
        s.tls_active = true;
        let mut m = Pop3ClientSide::new(s);
        let out = text(&feed(&mut m, b"CAPA\r\n"));
        assert!(!out.contains("STLS"), "{out}");
        assert!(
            out.contains("\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"),
            "{out}"
        );
        let mut s = settings();
        s.starttls_offered = false;
        let mut m = Pop3ClientSide::new(s);
        assert!(!text(&feed(&mut m, b"CAPA\r\n")).contains("STLS"));
    }

    #[test]
    fn configured_capability_uses_perditions_two_space_separator() {
        assert_eq!(
            parse_capability("USER  UIDL  TOP"),
            vec!["USER", "UIDL", "TOP"]
        );
        assert_eq!(
            parse_capability(" SASL PLAIN   EXPIRE 30\r\nIMPLEMENTATION x  "),
            vec!["SASL PLAIN", "EXPIRE 30", "IMPLEMENTATION x"]
        );
        assert_eq!(parse_capability("SASL PLAIN"), vec!["SASL PLAIN"]);
        assert!(parse_capability("   ").is_empty());

        let mut s = settings();
        s.capability = Some("USER  UIDL  TOP  STLS  .odd".into());
        s.starttls_offered = false;
        let mut m = Pop3ClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"CAPA\r\n")),
            "+OK Capability list follows\r\nUSER\r\nUIDL\r\nTOP\r\n..odd\r\n.\r\n"
        );
    }

    #[test]
    fn refused_logins_hide_user_and_sasl() {
        let mut s = settings();
        s.tls_required = true;
        let mut m = Pop3ClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"CAPA\r\n")),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\n.\r\n"
        );
        feed(&mut m, b"STLS\r\n");
        m.tls_established();
        assert_eq!(
            text(&feed(&mut m, b"CAPA\r\n")),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n"
        );

        let mut s = settings();
        s.login_disabled = true;
        s.capability = Some("USER  SASL PLAIN LOGIN  TOP".into());
        let mut m = Pop3ClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"CAPA\r\n")),
            "+OK Capability list follows\r\nTOP\r\nSTLS\r\n.\r\n"
        );
    }

    #[test]
    fn noop_quit_and_unknown_commands() {
        let mut m = machine();
        assert_eq!(text(&feed(&mut m, b"NOOP\r\n")), "+OK\r\n");
        assert_eq!(text(&feed(&mut m, b"noop \r\n")), "+OK\r\n");
        assert_eq!(
            text(&feed(&mut m, b"STAT\r\n")),
            "-ERR Command not permitted before login\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"\r\n")),
            "-ERR Command not permitted before login\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"RETR 1\r\n")),
            "-ERR Command not permitted before login\r\n"
        );
        assert_eq!(
            feed(&mut m, b"Quit\r\nNOOP\r\n"),
            vec![ClientEvent::Close(b"+OK Bye\r\n".to_vec())]
        );
        // Nothing after QUIT is looked at.
        assert_eq!(feed(&mut m, b"NOOP\r\n"), vec![]);
        assert!(m.take_unprocessed().is_empty());
    }

    #[test]
    fn user_pass_keeps_spaces_in_the_password() {
        let mut m = machine();
        assert_eq!(text(&feed(&mut m, b"USER alice\r\n")), "+OK\r\n");
        assert_eq!(
            feed(&mut m, b"PASS  my secret pass \r\n"),
            vec![creds("alice", " my secret pass ")]
        );
        let mut m = machine();
        assert_eq!(
            feed(&mut m, b"user bob\npass p\xe4ss word\n"),
            vec![
                ClientEvent::Send(b"+OK\r\n".to_vec()),
                ClientEvent::Login(Credentials {
                    user: "bob".into(),
                    user_bytes: None,
                    secret: b"p\xe4ss word".to_vec().into(),
                    bearer: None,
                })
            ]
        );
    }

    /// Behind an http map a name that is not UTF-8 goes to the service (escaped for the log,
    /// its bytes kept); elsewhere it is refused as before.
    #[test]
    fn a_name_that_is_not_utf8_is_passed_on_only_where_asked() {
        let passing = crate::protocol::ClientSettings {
            pass_non_utf8_names: true,
            ..settings()
        };
        let mut m = Pop3ClientSide::new(passing);
        assert_eq!(text(&feed(&mut m, b"USER caf\xe9\r\n")), "+OK\r\n");
        let events = feed(&mut m, b"PASS pw\r\n");
        let [ClientEvent::Login(given)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(given.user, "caf\\xE9");
        assert_eq!(given.user_bytes.as_deref(), Some(&b"caf\xe9"[..]));
        let mut m = machine();
        let refused = text(&feed(&mut m, b"USER caf\xe9\r\n"));
        assert_eq!(refused, "-ERR [AUTH] Invalid user name\r\n");
    }

    #[test]
    fn pass_needs_user_and_arguments() {
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"PASS secret\r\n")),
            "-ERR No user name given, use USER first\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"USER\r\n")),
            "-ERR Syntax error in USER arguments\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"USER a\xffb\r\n")),
            "-ERR [AUTH] Invalid user name\r\n"
        );
        feed(&mut m, b"USER alice\r\n");
        assert_eq!(
            text(&feed(&mut m, b"PASS\r\n")),
            "-ERR Syntax error in PASS arguments\r\n"
        );
        assert_eq!(feed(&mut m, b"PASS pw\r\n"), vec![creds("alice", "pw")]);
        // A failed PASS forgets the user.
        m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(
            text(&feed(&mut m, b"PASS pw\r\n")),
            "-ERR No user name given, use USER first\r\n"
        );
    }

    #[test]
    fn auth_plain_with_initial_response() {
        let mut m = machine();
        // "\0alice\0pw"
        assert_eq!(
            feed(&mut m, b"AUTH PLAIN AGFsaWNlAHB3\r\n"),
            vec![creds("alice", "pw")]
        );
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"AUTH PLAIN =\r\n")),
            "-ERR [AUTH] Invalid SASL response\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTH PLAIN %%%\r\n")),
            "-ERR Invalid base64 data\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTH PLAIN AGFsaWNlAHB3 x\r\n")),
            "-ERR Syntax error in AUTH arguments\r\n"
        );
        // "bob\0alice\0pw"
        assert_eq!(
            text(&feed(&mut m, b"AUTH PLAIN Ym9iAGFsaWNlAHB3\r\n")),
            "-ERR [AUTH] Authorization identity not supported\r\n"
        );
    }

    #[test]
    fn auth_plain_with_continuation_and_cancel() {
        let mut m = machine();
        assert_eq!(text(&feed(&mut m, b"auth plain\r\n")), "+ \r\n");
        assert_eq!(
            feed(&mut m, b"AGFsaWNlAHB3\r\n"),
            vec![creds("alice", "pw")]
        );
        let mut m = machine();
        feed(&mut m, b"AUTH PLAIN\r\n");
        assert_eq!(
            text(&feed(&mut m, b"*\r\n")),
            "-ERR Authentication cancelled\r\n"
        );
        feed(&mut m, b"AUTH PLAIN\r\n");
        assert_eq!(
            text(&feed(&mut m, b"=\r\n")),
            "-ERR [AUTH] Invalid SASL response\r\n"
        );
        // Back to commands after each answer.
        assert_eq!(text(&feed(&mut m, b"NOOP\r\n")), "+OK\r\n");
    }

    #[test]
    fn auth_lists_mechanisms_and_refuses_others() {
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"AUTH\r\n")),
            "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTH CRAM-MD5\r\n")),
            "-ERR Unsupported authentication mechanism\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTH NTLM\r\n")),
            "-ERR Unsupported authentication mechanism\r\n"
        );
    }

    #[test]
    fn stls_discards_pipelined_plaintext() {
        let mut m = machine();
        let events = feed(&mut m, b"STLS\r\nUSER x\r\nPASS y\r\n");
        assert_eq!(
            events,
            vec![ClientEvent::StartTls(
                b"+OK Begin TLS negotiation\r\n".to_vec()
            )]
        );
        // The injected USER was never executed: PASS now has no user.
        m.tls_established();
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        assert!(m.take_unprocessed().is_empty());
        assert_eq!(
            text(&feed(&mut m, b"PASS y\r\n")),
            "-ERR No user name given, use USER first\r\n"
        );
        assert!(!text(&feed(&mut m, b"CAPA\r\n")).contains("STLS"));
        assert_eq!(
            text(&feed(&mut m, b"STLS\r\n")),
            "-ERR TLS is already active\r\n"
        );
    }

    #[test]
    fn stls_forgets_a_user_given_in_plaintext_and_input_during_the_handshake() {
        let mut m = machine();
        feed(&mut m, b"USER mallory\r\n");
        feed(&mut m, b"STLS\r\n");
        m.receive(b"USER injected\r\n");
        m.tls_established();
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        assert_eq!(
            text(&feed(&mut m, b"PASS y\r\n")),
            "-ERR No user name given, use USER first\r\n"
        );
    }

    #[test]
    fn stls_not_offered() {
        let mut s = settings();
        s.starttls_offered = false;
        let mut m = Pop3ClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"STLS\r\n")),
            "-ERR STLS is not available\r\n"
        );
    }

    #[test]
    fn tls_required_refuses_login_until_stls() {
        let mut s = settings();
        s.tls_required = true;
        let mut m = Pop3ClientSide::new(s);
        let refusal = "-ERR Plaintext authentication disallowed, use STLS first\r\n";
        assert_eq!(text(&feed(&mut m, b"USER alice\r\n")), refusal);
        assert_eq!(text(&feed(&mut m, b"PASS pw\r\n")), refusal);
        assert_eq!(text(&feed(&mut m, b"AUTH PLAIN AGFsaWNlAHB3\r\n")), refusal);
        assert_eq!(text(&feed(&mut m, b"AUTH\r\n")), refusal);
        feed(&mut m, b"STLS\r\n");
        m.tls_established();
        assert_eq!(
            feed(&mut m, b"USER alice\r\nPASS pw\r\n"),
            vec![ClientEvent::Send(b"+OK\r\n".to_vec()), creds("alice", "pw")]
        );
    }

    #[test]
    fn login_disabled_refuses_every_login() {
        let mut s = settings();
        s.login_disabled = true;
        s.tls_active = true;
        let mut m = Pop3ClientSide::new(s);
        let refusal = "-ERR [SYS/PERM] Logins are disabled\r\n";
        assert_eq!(text(&feed(&mut m, b"USER alice\r\n")), refusal);
        assert_eq!(text(&feed(&mut m, b"AUTH PLAIN\r\n")), refusal);
    }

    #[test]
    fn accepted_login_relays_and_keeps_pipelined_commands() {
        let mut m = machine();
        let events = feed(&mut m, b"CAPA\r\nUSER alice\r\nPASS pw\r\nSTAT\r\nLIST\r\n");
        assert_eq!(events.len(), 3);
        assert_eq!(events[2], creds("alice", "pw"));
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        m.receive(b"UIDL\r\n");
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: "Logged in.".into(),
        });
        assert_eq!(reply.next, AfterLogin::Relay);
        assert_eq!(reply.bytes, b"+OK Logged in.\r\n".to_vec());
        assert_eq!(m.take_unprocessed(), b"STAT\r\nLIST\r\nUIDL\r\n".to_vec());
    }

    #[test]
    fn ok_line_replaces_the_back_end_text() {
        let mut s = settings();
        s.ok_line = Some("You are so in".into());
        let mut m = Pop3ClientSide::new(s);
        feed(&mut m, b"USER alice\r\nPASS pw\r\n");
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: "Logged in.".into(),
        });
        assert_eq!(reply.bytes, b"+OK You are so in\r\n".to_vec());
        let mut m = machine();
        feed(&mut m, b"USER alice\r\nPASS pw\r\n");
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: String::new(),
        });
        assert_eq!(reply.bytes, b"+OK\r\n".to_vec());
    }

    #[test]
    fn failed_logins_are_counted_and_end_the_session() {
        let mut m = machine();
        feed(&mut m, b"USER alice\r\nPASS bad\r\n");
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(r.next, AfterLogin::Continue);
        assert_eq!(r.bytes, b"-ERR [AUTH] Authentication failed.\r\n".to_vec());
        // The pipelined command after a refused login is answered pre-login.
        assert_eq!(
            feed(&mut m, b"AUTH PLAIN AGFsaWNlAHB3\r\nSTAT\r\n"),
            vec![creds("alice", "pw")]
        );
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(r.next, AfterLogin::Close);
        assert_eq!(r.bytes, b"-ERR [AUTH] Authentication failed.\r\n".to_vec());
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        assert!(m.take_unprocessed().is_empty());
    }

    #[test]
    fn a_services_own_response_code_is_not_doubled_and_no_retry_closes() {
        let denied = |message: &str, retry| LoginOutcome::Denied {
            message: message.into(),
            retry,
        };
        let mut m = machine();
        feed(&mut m, b"USER alice\r\nPASS pw\r\n");
        let r = m.login_finished(&denied("[SYS/TEMP] Temporary server problem", true));
        assert_eq!(r.bytes, b"-ERR [SYS/TEMP] Temporary server problem\r\n");
        assert_eq!(r.next, AfterLogin::Continue);
        feed(&mut m, b"USER alice\r\nPASS pw\r\n");
        let r = m.login_finished(&denied("Invalid login or password", false));
        assert_eq!(r.bytes, b"-ERR [AUTH] Invalid login or password\r\n");
        assert_eq!(r.next, AfterLogin::Close);
    }

    #[test]
    fn unavailable_back_end_lets_the_client_retry() {
        let mut m = machine();
        feed(&mut m, b"USER alice\r\nPASS pw\r\nNOOP\r\n");
        let r = m.login_finished(&LoginOutcome::unavailable("refused"));
        assert_eq!(r.next, AfterLogin::Continue);
        assert_eq!(
            r.bytes,
            b"-ERR [SYS/TEMP] Mail server unavailable, try again later\r\n".to_vec()
        );
        assert_eq!(text(&feed(&mut m, b"")), "+OK\r\n");
    }

    #[test]
    fn timeout_and_shutdown_messages() {
        let m = machine();
        assert_eq!(
            m.timeout_message(),
            b"-ERR Autologout; too long without logging in\r\n".to_vec()
        );
        assert_eq!(
            m.shutdown_message(),
            b"-ERR [SYS/TEMP] Server shutting down\r\n".to_vec()
        );
    }

    #[test]
    fn bounds_close_the_connection_with_a_reason() {
        let mut m = machine();
        let long = format!("PASS {}\r\n", "x".repeat(200));
        assert_eq!(
            feed(&mut m, long.as_bytes()),
            vec![ClientEvent::Close(b"-ERR Line too long\r\n".to_vec())]
        );
        // Too long even without its line end.
        let mut m = machine();
        assert_eq!(
            feed(&mut m, "x".repeat(150).as_bytes()),
            vec![ClientEvent::Close(b"-ERR Line too long\r\n".to_vec())]
        );
        // A long SASL response too.
        let mut m = machine();
        feed(&mut m, b"AUTH PLAIN\r\n");
        assert_eq!(
            feed(&mut m, "A".repeat(150).as_bytes()),
            vec![ClientEvent::Close(b"-ERR Line too long\r\n".to_vec())]
        );

        let mut m = machine();
        let events = feed(&mut m, "NOOP\r\n".repeat(11).as_bytes());
        assert_eq!(events.len(), 11);
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Close(b"-ERR Too many commands\r\n".to_vec()))
        );
    }

    #[test]
    fn input_split_at_every_byte_boundary() {
        let input: &[u8] = b"CAPA\r\nnoop\nUSER alice\r\nPASS a b\r\n";
        let whole = {
            let mut m = machine();
            feed(&mut m, input)
        };
        assert_eq!(whole.last(), Some(&creds("alice", "a b")));
        for cut in 0..=input.len() {
            let mut m = machine();
            let mut events = feed(&mut m, &input[..cut]);
            events.extend(feed(&mut m, &input[cut..]));
            assert_eq!(events, whole, "cut at {cut}");
        }
        // One byte at a time.
        let mut m = machine();
        let mut events = Vec::new();
        for byte in input {
            events.extend(feed(&mut m, &[*byte]));
        }
        assert_eq!(events, whole);

        let input: &[u8] = b"AUTH PLAIN\r\nAGFsaWNlAHB3\r\n";
        for cut in 0..=input.len() {
            let mut m = machine();
            let mut events = feed(&mut m, &input[..cut]);
            events.extend(feed(&mut m, &input[cut..]));
            assert_eq!(
                events,
                vec![ClientEvent::Send(b"+ \r\n".to_vec()), creds("alice", "pw")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut garbage = Garbage::default();
        for round in 0..2000 {
            let mut m = machine();
            let bytes = garbage.bytes(300, b"a \r\n\0\xff*=+USERPASAUTHPLAINSTLCQ");
            for chunk in bytes.chunks(7) {
                for event in feed(&mut m, chunk) {
                    match event {
                        ClientEvent::Login(_) => {
                            let outcome = match round % 3 {
                                0 => LoginOutcome::Rejected { text: "no".into() },
                                1 => LoginOutcome::unavailable("down"),
                                _ => LoginOutcome::Accepted {
                                    capabilities: None,
                                    text: "in".into(),
                                },
                            };
                            let _ = m.login_finished(&outcome);
                        }
                        ClientEvent::StartTls(_) => m.tls_established(),
                        _ => {}
                    }
                }
            }
            let _ = m.take_unprocessed();
        }
    }

    #[test]
    fn auth_login_asks_for_user_then_password() {
        let mut m = machine();
        assert_eq!(text(&feed(&mut m, b"AUTH LOGIN\r\n")), "+ VXNlcm5hbWU6\r\n");
        assert_eq!(text(&feed(&mut m, b"YWxpY2U=\r\n")), "+ UGFzc3dvcmQ6\r\n");
        assert_eq!(feed(&mut m, b"cHc=\r\n"), vec![creds("alice", "pw")]);
    }
}
