//! The ManageSieve client side (RFC 5804): greets with the capability block, answers the
//! pre-login commands and collects credentials from `AUTHENTICATE "PLAIN"`.
//!
//! Literals: ManageSieve has no continuation request, so a client sends the bytes of a literal
//! right after its `{n+}` (or `{n}`) marker. A literal larger than `max_literal_size` therefore
//! cannot be refused and skipped: the machine answers `BYE "Literal too large."` and closes,
//! whichever form the marker had.

use crate::protocol::conversation::{
    self, Conversation, Dialect, LoginBlock, StartTlsBlock, Words,
};
use crate::protocol::sasl::{Mechanism, Next, PlainError};
use crate::protocol::token::Token;
use crate::protocol::{leading_response_code, ClientEvent, NamedClient};

use super::syntax::{self, parse_line, Bounds, Parsed, SyntaxError};

/// The Sieve extensions advertised when the configuration does not say otherwise.
pub const DEFAULT_SIEVE_EXTENSIONS: &str = "fileinto reject envelope encoded-character vacation \
subaddress comparator-i;ascii-numeric relational regex imap4flags copy include variables body \
enotify environment mailbox date index ihave duplicate mime foreverypart extracttext";

/// ManageSieve's words and parsing for the pre-login conversation.
#[derive(Default)]
pub struct Sieve {
    /// STARTTLS just completed: the capability block must be sent again, unprompted
    /// (RFC 5804 section 2.2).
    resend_capabilities: bool,
}

/// The ManageSieve client side.
pub type SieveClientSide = Conversation<Sieve>;

/// ManageSieve answers are untagged: a pending login remembers nothing.
type Core = conversation::Core<()>;

/// Split Perdition's `managesieve_capability` into capability lines.
///
/// Perdition keeps the whole capability block on one configuration line: each capability is its
/// quoted name optionally followed by a quoted value, and capabilities are separated by *two*
/// spaces (a single space separates a name from its value), e.g.
/// `"IMPLEMENTATION" "perdition"  "SIEVE" "fileinto"  "SASL" "PLAIN"  "VERSION" "1.0"`.
/// Every chunk between double spaces, trimmed, becomes one line of the block verbatim; empty
/// chunks (three or more spaces in a row) are skipped. A value with line breaks is taken one
/// item per line instead, which is how learned capabilities arrive.
pub fn parse_configured_capability(configured: &str) -> Vec<String> {
    if configured.contains('\n') {
        // One item per line (learned from a back end, or a multi-line TOML string).
        return configured
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect();
    }
    configured
        .split("  ")
        .map(str::trim)
        .filter(|chunk| !chunk.is_empty())
        .map(str::to_string)
        .collect()
}

/// The name of a capability line (`"SASL" "PLAIN"` → `SASL`), upper-cased.
fn capability_name(line: &str) -> String {
    let first = line.split(' ').next().unwrap_or_default();
    first.trim_matches('"').to_ascii_uppercase()
}

fn bounds(core: &Core) -> Bounds {
    let limits = core.counters.limits();
    Bounds {
        max_line: limits.max_line_length,
        max_literal: limits.max_literal_size,
    }
}

fn login_refusal(core: &Core) -> Option<&'static str> {
    match core.login_block()? {
        LoginBlock::Disabled => Some("NO \"Logins are disabled.\""),
        LoginBlock::TlsRequired => Some("NO (ENCRYPT-NEEDED) \"Use STARTTLS first.\""),
    }
}

/// The capability lines for the current state of the connection.
///
/// The configured (or default) list is adjusted to the connection: `STARTTLS` is listed only
/// while it can be used, and when logins are refused the `SASL` capability lists no
/// mechanism (`"SASL" ""`, as RFC 5804 section 1.7 allows before STARTTLS).
fn capability_lines(core: &Core) -> Vec<String> {
    let mut lines = match &core.settings.capability {
        Some(configured) => parse_configured_capability(configured),
        None => vec![
            format!("\"IMPLEMENTATION\" {}", quoted(&core.settings.product)),
            "\"SASL\" \"PLAIN LOGIN\"".to_string(),
            format!("\"SIEVE\" \"{DEFAULT_SIEVE_EXTENSIONS}\""),
            "\"NOTIFY\" \"mailto\"".to_string(),
            "\"VERSION\" \"1.0\"".to_string(),
        ],
    };
    lines.retain(|l| !matches!(capability_name(l).as_str(), "STARTTLS" | "XCLIENT"));
    // As Dovecot does, only to a peer that may name its client.
    if core.named_client_trusted {
        lines.push("\"XCLIENT\"".to_string());
    }
    if core.settings.oauth {
        for line in lines.iter_mut() {
            if capability_name(line) == "SASL" && line.ends_with('"') {
                line.insert_str(line.len() - 1, " OAUTHBEARER XOAUTH2");
            }
        }
    }
    if login_refusal(core).is_some() {
        for line in lines.iter_mut() {
            if capability_name(line) == "SASL" {
                *line = "\"SASL\" \"\"".to_string();
            }
        }
    }
    if core.starttls_available() {
        let at = lines
            .iter()
            .position(|l| capability_name(l) == "SIEVE")
            .map_or(lines.len(), |i| i + 1);
        lines.insert(at, "\"STARTTLS\"".to_string());
    }
    lines
}

/// The capability block followed by `OK "ok_text"`.
fn capability_block(core: &Core, ok_text: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in capability_lines(core) {
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("OK {}\r\n", quoted(ok_text)));
    out.into_bytes()
}

fn close_with(core: &mut Core, text: &str) -> ClientEvent {
    core.close(format!("BYE {}\r\n", quoted(text)).into_bytes())
}

/// A line could not be read; the fatal errors end the session.
fn syntax_error(core: &mut Core, error: SyntaxError, consumed: usize) -> ClientEvent {
    match error {
        SyntaxError::LineTooLong => close_with(core, "Line too long."),
        SyntaxError::LiteralTooBig => close_with(core, "Literal too large."),
        SyntaxError::Malformed => {
            core.input.drain(..consumed.min(core.input.len()));
            reply("NO \"Syntax error.\"")
        }
    }
}

fn execute(core: &mut Core, tokens: Vec<Token>) -> ClientEvent {
    let (name, args) = match tokens.split_first() {
        Some((Token::Atom(name), args)) => (String::from_utf8_lossy(name).to_uppercase(), args),
        None => return reply("NO \"Empty command.\""),
        Some(_) => return reply("NO \"Syntax error.\""),
    };
    match (name.as_str(), args) {
        ("CAPABILITY", []) => ClientEvent::Send(capability_block(core, "Capability completed.")),
        ("NOOP", []) => reply("OK \"NOOP completed.\""),
        ("NOOP", [tag]) => match tag.text() {
            Some(tag) => {
                let mut out = b"OK (TAG ".to_vec();
                out.extend_from_slice(&syntax::string(tag));
                out.extend_from_slice(b") \"Done\"\r\n");
                ClientEvent::Send(out)
            }
            None => reply("NO \"Syntax error in arguments.\""),
        },
        ("LOGOUT", []) => core.close(b"OK \"Logout completed.\"\r\n".to_vec()),
        ("STARTTLS", []) => match core.starttls_block() {
            Some(StartTlsBlock::AlreadyActive) => reply("NO \"TLS is already active.\""),
            Some(StartTlsBlock::NotOffered) => reply("NO \"STARTTLS is not available.\""),
            None => core.start_tls(b"OK \"Begin TLS negotiation now.\"\r\n".to_vec()),
        },
        ("AUTHENTICATE", [mechanism, rest @ ..]) if rest.len() <= 1 => {
            authenticate(core, mechanism, rest.first())
        }
        ("CAPABILITY" | "NOOP" | "LOGOUT" | "STARTTLS" | "AUTHENTICATE", _) => {
            reply("NO \"Syntax error in arguments.\"")
        }
        ("XCLIENT", attributes) if core.named_client_trusted && core.named_client.is_none() => {
            let text: Vec<String> = attributes
                .iter()
                .filter_map(Token::text)
                .map(|t| String::from_utf8_lossy(t).into_owned())
                .collect();
            match NamedClient::from_xclient(&text.join(" ")) {
                Some(named) => {
                    core.named_client = Some(named);
                    reply("OK \"Updated\"")
                }
                None => reply("NO \"Invalid parameters\""),
            }
        }
        _ => reply("NO \"Command not permitted before login.\""),
    }
}

fn authenticate(core: &mut Core, mechanism: &Token, initial: Option<&Token>) -> ClientEvent {
    let Some(mechanism) = mechanism.text().and_then(Mechanism::named) else {
        return reply("NO \"Unsupported mechanism.\"");
    };
    if let Some(refusal) = login_refusal(core) {
        return ClientEvent::LoginRefused {
            user: None,
            reply: format!("{refusal}\r\n").into_bytes(),
        };
    }
    let first = core.begin_sasl(mechanism);
    match initial.map(Token::text) {
        None => core.await_sasl((), format!("\"{first}\"\r\n").into_bytes()),
        Some(Some(initial)) => sasl_response(core, initial),
        Some(None) => reply("NO \"Syntax error in arguments.\""),
    }
}

/// Take a base64 SASL response: the credentials, or the next challenge.
fn sasl_response(core: &mut Core, response: &[u8]) -> ClientEvent {
    match core.sasl_respond(response) {
        Next::Login(creds) => core.begin_login((), creds),
        Next::Challenge(text) => core.await_sasl((), format!("\"{text}\"\r\n").into_bytes()),
        Next::Failed(PlainError::Base64) => reply("NO \"Invalid base64 data.\""),
        Next::Failed(PlainError::Syntax) => reply("NO \"Invalid SASL response.\""),
        Next::Failed(PlainError::AuthzidMismatch) => {
            reply("NO \"Authorization identity not supported.\"")
        }
    }
}

/// `text` as a quoted string (or literal).
fn quoted(text: &str) -> String {
    String::from_utf8_lossy(&syntax::string(text.as_bytes())).into_owned()
}

fn reply(line: &str) -> ClientEvent {
    ClientEvent::Send(format!("{line}\r\n").into_bytes())
}

impl Dialect for Sieve {
    type Pending = ();

    const WORDS: Words = Words {
        rejected: "NO \"Authentication failed.\"",
        too_many_failures: b"BYE \"Too many failed logins.\"\r\n",
        unavailable: "NO (TRYLATER) \"Mail server unavailable, try again later.\"",
        busy: "NO (TRYLATER) \"Too many logins at once from your address, try again later.\"",
        limit: "NO (TRYLATER) \"Too many sessions for this user, try again later.\"",
        timeout: b"BYE \"Autologout; too long without logging in.\"\r\n",
        shutdown: b"BYE (TRYLATER) \"Server shutting down.\"\r\n",
        overloaded: b"BYE (TRYLATER) \"Too many connections, try again later.\"\r\n",
        too_many_from_address:
            b"BYE (TRYLATER) \"Too many connections from your address, try again later.\"\r\n",
        banned: b"BYE (TRYLATER) \"Too many failed logins, try again later.\"\r\n",
    };

    fn greeting(&mut self, core: &Core) -> Vec<u8> {
        capability_block(core, &format!("{} ready.", core.settings.product))
    }

    fn command(&mut self, core: &mut Core) -> ClientEvent {
        if self.resend_capabilities {
            self.resend_capabilities = false;
            return ClientEvent::Send(capability_block(core, "TLS negotiation successful."));
        }
        match parse_line(&core.input, bounds(core)) {
            Parsed::Incomplete => ClientEvent::NeedInput,
            Parsed::Error { error, consumed } => {
                if !core.count_command() {
                    return close_with(core, "Too many commands.");
                }
                syntax_error(core, error, consumed)
            }
            Parsed::Line { tokens, consumed } => {
                core.input.drain(..consumed);
                if !core.count_command() {
                    return close_with(core, "Too many commands.");
                }
                execute(core, tokens)
            }
        }
    }

    /// The client's answer to the empty challenge: one string, `"*"` to cancel.
    fn sasl_response(&mut self, core: &mut Core) -> ClientEvent {
        match parse_line(&core.input, bounds(core)) {
            Parsed::Incomplete => ClientEvent::NeedInput,
            Parsed::Error { error, consumed } => {
                core.finish_sasl();
                syntax_error(core, error, consumed)
            }
            Parsed::Line { tokens, consumed } => {
                core.input.drain(..consumed);
                core.finish_sasl();
                match tokens.as_slice() {
                    [response] => match response.text() {
                        Some(b"*") => reply("NO \"Authentication cancelled.\""),
                        Some(response) => {
                            let response = response.to_vec();
                            sasl_response(core, &response)
                        }
                        None => reply("NO \"Invalid SASL response.\""),
                    },
                    _ => reply("NO \"Invalid SASL response.\""),
                }
            }
        }
    }

    fn tls_established(&mut self, _core: &Core) {
        self.resend_capabilities = true;
    }

    fn accepted(&self, _: Option<()>, _capabilities: Option<&str>, text: &str) -> Vec<u8> {
        format!("OK {}\r\n", quoted(text)).into_bytes()
    }

    fn denied(&self, _: Option<()>, message: &str) -> Vec<u8> {
        // A code of the service's own (`(TRYLATER)`) goes where RFC 5804 puts codes, outside
        // the quoted text, so that the client acts on it.
        match leading_response_code(message, '(') {
            Some((code, "")) => format!("NO {code}\r\n").into_bytes(),
            Some((code, text)) => format!("NO {code} {}\r\n", quoted(text)).into_bytes(),
            None => format!("NO {}\r\n", quoted(message)).into_bytes(),
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

    fn machine() -> SieveClientSide {
        SieveClientSide::new(settings())
    }

    const SIEVE: &str = "\"SIEVE\" \"fileinto reject envelope encoded-character vacation subaddress comparator-i;ascii-numeric relational regex imap4flags copy include variables body enotify environment mailbox date index ihave duplicate mime foreverypart extracttext\"\r\n";

    fn block(sasl: &str, starttls: bool, ok: &str) -> String {
        format!(
            "\"IMPLEMENTATION\" \"Portcullis\"\r\n\"SASL\" \"{sasl}\"\r\n{SIEVE}{}\"NOTIFY\" \"mailto\"\r\n\"VERSION\" \"1.0\"\r\nOK \"{ok}\"\r\n",
            if starttls { "\"STARTTLS\"\r\n" } else { "" }
        )
    }

    // "\0alice\0pw"
    const ALICE_PW: &str = "AGFsaWNlAHB3";

    #[test]
    fn greeting_is_the_capability_block() {
        let g = String::from_utf8(machine().greeting()).unwrap();
        assert_eq!(g, block("PLAIN LOGIN", true, "Portcullis ready."));
    }

    #[test]
    fn configured_capability_in_perdition_format() {
        let mut s = settings();
        s.capability = Some(
            "\"IMPLEMENTATION\" \"perdition\"  \"SIEVE\" \"fileinto\"  \"STARTTLS\"  \"SASL\" \"PLAIN\"  \"VERSION\" \"1.0\""
                .into(),
        );
        s.product = "perdition".into();
        let mut m = SieveClientSide::new(s.clone());
        assert_eq!(
            String::from_utf8(m.greeting()).unwrap(),
            "\"IMPLEMENTATION\" \"perdition\"\r\n\"SIEVE\" \"fileinto\"\r\n\"STARTTLS\"\r\n\"SASL\" \"PLAIN\"\r\n\"VERSION\" \"1.0\"\r\nOK \"perdition ready.\"\r\n"
        );
        s.starttls_offered = false;
        let mut m = SieveClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"capability\r\n")),
            "\"IMPLEMENTATION\" \"perdition\"\r\n\"SIEVE\" \"fileinto\"\r\n\"SASL\" \"PLAIN\"\r\n\"VERSION\" \"1.0\"\r\nOK \"Capability completed.\"\r\n"
        );
        assert_eq!(
            parse_configured_capability("  \"A\" \"b c\"   \"D\"  "),
            vec!["\"A\" \"b c\"".to_string(), "\"D\"".to_string()]
        );
    }

    #[test]
    fn capability_noop_and_unknown_commands() {
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"CAPABILITY\r\n")),
            block("PLAIN LOGIN", true, "Capability completed.")
        );
        assert_eq!(
            text(&feed(&mut m, b"noop\r\n")),
            "OK \"NOOP completed.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"NOOP \"tag1\"\r\n")),
            "OK (TAG \"tag1\") \"Done\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"NOOP {6+}\r\na\"b\\cd\r\n")),
            "OK (TAG \"a\\\"b\\\\cd\") \"Done\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"LISTSCRIPTS\r\n")),
            "NO \"Command not permitted before login.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"PUTSCRIPT \"s\" {4+}\r\nkeep\r\n")),
            "NO \"Command not permitted before login.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"NOOP a b\r\n")),
            "NO \"Syntax error in arguments.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"NOOP \"open\r\n")),
            "NO \"Syntax error.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"\"NOOP\"\r\n")),
            "NO \"Syntax error.\"\r\n"
        );
        assert_eq!(text(&feed(&mut m, b"\r\n")), "NO \"Empty command.\"\r\n");
    }

    #[test]
    fn logout_answers_and_closes() {
        let mut m = machine();
        assert_eq!(
            feed(&mut m, b"Logout\r\nNOOP\r\n"),
            vec![ClientEvent::Close(b"OK \"Logout completed.\"\r\n".to_vec())]
        );
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
    }

    #[test]
    fn authenticate_with_initial_response_in_every_form() {
        for input in [
            format!("AUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\n"),
            format!("authenticate \"plain\" {{12+}}\r\n{ALICE_PW}\r\n"),
            format!("AUTHENTICATE {{5+}}\r\nPLAIN {{12}}\r\n{ALICE_PW}\r\n"),
            format!("AUTHENTICATE PLAIN \"{ALICE_PW}\"\n"),
        ] {
            let mut m = machine();
            assert_eq!(
                feed(&mut m, input.as_bytes()),
                vec![creds("alice", "pw")],
                "{input}"
            );
        }
    }

    #[test]
    fn authenticate_continuation_exchange_and_cancel() {
        let mut m = machine();
        assert_eq!(
            text(&feed(&mut m, b"AUTHENTICATE \"PLAIN\"\r\n")),
            "\"\"\r\n"
        );
        assert_eq!(
            feed(&mut m, format!("\"{ALICE_PW}\"\r\n").as_bytes()),
            vec![creds("alice", "pw")]
        );

        let mut m = machine();
        feed(&mut m, b"AUTHENTICATE \"PLAIN\"\r\n");
        assert_eq!(
            feed(&mut m, format!("{{12+}}\r\n{ALICE_PW}\r\n").as_bytes()),
            vec![creds("alice", "pw")]
        );

        let mut m = machine();
        feed(&mut m, b"AUTHENTICATE \"PLAIN\"\r\n");
        assert_eq!(
            text(&feed(&mut m, b"\"*\"\r\n")),
            "NO \"Authentication cancelled.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"NOOP\r\n")),
            "OK \"NOOP completed.\"\r\n"
        );
        feed(&mut m, b"AUTHENTICATE \"PLAIN\"\r\n");
        assert_eq!(
            text(&feed(&mut m, b"\"a\" \"b\"\r\n")),
            "NO \"Invalid SASL response.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTHENTICATE \"DIGEST-MD5\"\r\n")),
            "NO \"Unsupported mechanism.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTHENTICATE \"PLAIN\" \"%%%\"\r\n")),
            "NO \"Invalid base64 data.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTHENTICATE \"PLAIN\" \"\"\r\n")),
            "NO \"Invalid SASL response.\"\r\n"
        );
    }

    #[test]
    fn successful_login_relays_and_keeps_pipelined_commands() {
        let mut m = machine();
        let events = feed(
            &mut m,
            format!("NOOP\r\nAUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\nLISTSCRIPTS\r\n").as_bytes(),
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[1], creds("alice", "pw"));
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        m.receive(b"GETSCRIPT \"x\"\r\n");
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: "Logged in.".into(),
        });
        assert_eq!(reply.next, AfterLogin::Relay);
        assert_eq!(reply.bytes, b"OK \"Logged in.\"\r\n".to_vec());
        assert_eq!(
            m.take_unprocessed(),
            b"LISTSCRIPTS\r\nGETSCRIPT \"x\"\r\n".to_vec()
        );
    }

    #[test]
    fn ok_line_replaces_the_back_end_text() {
        let mut s = settings();
        s.ok_line = Some("Say \"hi\"".into());
        let mut m = SieveClientSide::new(s);
        feed(
            &mut m,
            format!("AUTHENTICATE PLAIN \"{ALICE_PW}\"\r\n").as_bytes(),
        );
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: "Logged in.".into(),
        });
        assert_eq!(reply.bytes, b"OK \"Say \\\"hi\\\"\"\r\n".to_vec());
    }

    #[test]
    fn a_services_own_response_code_goes_where_codes_go() {
        let denied = |message: &str, retry| LoginOutcome::Denied {
            message: message.into(),
            retry,
        };
        let login = format!("AUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\n");
        let mut m = machine();
        feed(&mut m, login.as_bytes());
        let r = m.login_finished(&denied("(TRYLATER) Temporary server problem", true));
        assert_eq!(r.bytes, b"NO (TRYLATER) \"Temporary server problem\"\r\n");
        assert_eq!(r.next, AfterLogin::Continue);
        let mut m = machine();
        feed(&mut m, login.as_bytes());
        let r = m.login_finished(&denied("(TRYLATER)", true));
        assert_eq!(r.bytes, b"NO (TRYLATER)\r\n");
        let mut m = machine();
        feed(&mut m, login.as_bytes());
        let r = m.login_finished(&denied("(not a code) at all", false));
        assert_eq!(r.bytes, b"NO \"(not a code) at all\"\r\n");
        assert_eq!(r.next, AfterLogin::Close);
    }

    #[test]
    fn failed_and_unavailable_logins() {
        let mut m = machine();
        let login = format!("AUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\n");
        feed(&mut m, login.as_bytes());
        let r = m.login_finished(&LoginOutcome::unavailable("refused"));
        assert_eq!(r.next, AfterLogin::Continue);
        assert_eq!(
            r.bytes,
            b"NO (TRYLATER) \"Mail server unavailable, try again later.\"\r\n".to_vec()
        );
        assert_eq!(feed(&mut m, login.as_bytes()), vec![creds("alice", "pw")]);
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(r.next, AfterLogin::Continue);
        assert_eq!(r.bytes, b"NO \"Authentication failed.\"\r\n".to_vec());
        feed(&mut m, login.as_bytes());
        let r = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(r.next, AfterLogin::Close);
        assert_eq!(
            r.bytes,
            b"NO \"Authentication failed.\"\r\nBYE \"Too many failed logins.\"\r\n".to_vec()
        );
    }

    #[test]
    fn starttls_discards_pipelined_plaintext_and_resends_capabilities() {
        let mut m = machine();
        let events = feed(
            &mut m,
            format!("STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\n").as_bytes(),
        );
        assert_eq!(
            events,
            vec![ClientEvent::StartTls(
                b"OK \"Begin TLS negotiation now.\"\r\n".to_vec()
            )]
        );
        m.tls_established();
        assert_eq!(
            text(&[m.next_event()]),
            block("PLAIN LOGIN", false, "TLS negotiation successful.")
        );
        // The injected AUTHENTICATE is gone.
        assert_eq!(m.next_event(), ClientEvent::NeedInput);
        assert_eq!(
            text(&feed(&mut m, b"STARTTLS\r\n")),
            "NO \"TLS is already active.\"\r\n"
        );
        let caps = text(&feed(&mut m, b"CAPABILITY\r\n"));
        assert!(!caps.contains("STARTTLS"), "{caps}");

        let mut s = settings();
        s.starttls_offered = false;
        let mut m = SieveClientSide::new(s);
        assert_eq!(
            text(&feed(&mut m, b"STARTTLS\r\n")),
            "NO \"STARTTLS is not available.\"\r\n"
        );
    }

    #[test]
    fn tls_required_refuses_login_until_starttls() {
        let mut s = settings();
        s.tls_required = true;
        let mut m = SieveClientSide::new(s);
        assert_eq!(
            String::from_utf8(m.greeting()).unwrap(),
            block("", true, "Portcullis ready.")
        );
        let login = format!("AUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\n");
        assert_eq!(
            text(&feed(&mut m, login.as_bytes())),
            "NO (ENCRYPT-NEEDED) \"Use STARTTLS first.\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTHENTICATE \"PLAIN\"\r\n")),
            "NO (ENCRYPT-NEEDED) \"Use STARTTLS first.\"\r\n"
        );
        feed(&mut m, b"STARTTLS\r\n");
        m.tls_established();
        assert_eq!(
            text(&[m.next_event()]),
            block("PLAIN LOGIN", false, "TLS negotiation successful.")
        );
        assert_eq!(feed(&mut m, login.as_bytes()), vec![creds("alice", "pw")]);
    }

    #[test]
    fn login_disabled_refuses_every_login() {
        let mut s = settings();
        s.login_disabled = true;
        s.starttls_offered = false;
        let mut m = SieveClientSide::new(s);
        assert!(String::from_utf8(m.greeting())
            .unwrap()
            .contains("\"SASL\" \"\"\r\n"));
        assert_eq!(
            text(&feed(
                &mut m,
                format!("AUTHENTICATE \"PLAIN\" \"{ALICE_PW}\"\r\n").as_bytes()
            )),
            "NO \"Logins are disabled.\"\r\n"
        );
    }

    #[test]
    fn bounds_close_the_connection_with_a_reason() {
        let mut m = machine();
        let long = format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", "x".repeat(200));
        assert_eq!(
            feed(&mut m, long.as_bytes()),
            vec![ClientEvent::Close(b"BYE \"Line too long.\"\r\n".to_vec())]
        );

        for marker in [&b"AUTHENTICATE \"PLAIN\" {51+}\r\n"[..], b"NOOP {51}\r\n"] {
            let mut m = machine();
            assert_eq!(
                feed(&mut m, marker),
                vec![ClientEvent::Close(
                    b"BYE \"Literal too large.\"\r\n".to_vec()
                )]
            );
        }

        let mut m = machine();
        feed(&mut m, b"AUTHENTICATE \"PLAIN\"\r\n");
        assert_eq!(
            feed(&mut m, "y".repeat(150).as_bytes()),
            vec![ClientEvent::Close(b"BYE \"Line too long.\"\r\n".to_vec())]
        );

        let mut m = machine();
        let events = feed(&mut m, "NOOP\r\n".repeat(11).as_bytes());
        assert_eq!(events.len(), 11);
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Close(
                b"BYE \"Too many commands.\"\r\n".to_vec()
            ))
        );
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input = format!(
            "NOOP \"t\"\r\nAUTHENTICATE {{5+}}\r\nPLAIN\r\n{{12+}}\r\n{ALICE_PW}\r\nLISTSCRIPTS\r\n"
        );
        let input = input.as_bytes();
        let mut whole = machine();
        let expected = feed(&mut whole, input);
        assert_eq!(
            expected,
            vec![
                ClientEvent::Send(b"OK (TAG \"t\") \"Done\"\r\n".to_vec()),
                ClientEvent::Send(b"\"\"\r\n".to_vec()),
                creds("alice", "pw"),
            ]
        );
        for cut in 0..input.len() {
            let mut m = machine();
            let mut events = feed(&mut m, &input[..cut]);
            if !matches!(events.last(), Some(ClientEvent::Login(_))) {
                events.extend(feed(&mut m, &input[cut..]));
            } else {
                m.receive(&input[cut..]);
            }
            assert_eq!(events, expected, "cut at {cut}");
            m.login_finished(&LoginOutcome::Accepted {
                capabilities: None,
                text: "ok".into(),
            });
            assert_eq!(
                m.take_unprocessed(),
                b"LISTSCRIPTS\r\n".to_vec(),
                "cut at {cut}"
            );
        }
        // Byte by byte.
        let mut m = machine();
        let mut events = Vec::new();
        for byte in input {
            events.extend(feed(&mut m, &[*byte]));
        }
        assert_eq!(events, expected);
    }

    #[test]
    fn timeout_and_shutdown_messages() {
        let m = machine();
        assert_eq!(
            m.timeout_message(),
            b"BYE \"Autologout; too long without logging in.\"\r\n".to_vec()
        );
        assert_eq!(
            m.shutdown_message(),
            b"BYE (TRYLATER) \"Server shutting down.\"\r\n".to_vec()
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut garbage = Garbage::default();
        for round in 0..3000 {
            let mut m = machine();
            let bytes = garbage.bytes(
                300,
                b"a {}()\"\\ \r\n+*0123\x00\xffPLAINAUTHENTICATESTARTTLSNOOP",
            );
            let _ = feed(&mut m, &bytes);
            let _ = m.next_event();
            if round % 3 == 0 {
                m.tls_established();
                let _ = feed(&mut m, &bytes);
            }
        }
    }

    #[test]
    fn authenticate_login_asks_for_user_then_password() {
        let mut m = machine();
        m.greeting();
        assert_eq!(
            text(&feed(&mut m, b"AUTHENTICATE \"LOGIN\"\r\n")),
            "\"VXNlcm5hbWU6\"\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"\"YWxpY2U=\"\r\n")),
            "\"UGFzc3dvcmQ6\"\r\n"
        );
        assert_eq!(feed(&mut m, b"\"cHc=\"\r\n"), vec![creds("alice", "pw")]);
    }
}
