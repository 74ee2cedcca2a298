//! The SMTP submission client side (RFC 6409, RFC 5321): greets, answers what a client may ask
//! before authenticating (EHLO/HELO, STARTTLS from RFC 3207, AUTH from RFC 4954, NOOP, RSET,
//! HELP, QUIT) and collects credentials. Mail transactions (MAIL, RCPT, DATA, BDAT, VRFY) wait
//! for AUTH: nothing of the client's input reaches a back end before it has logged in.

use crate::protocol::conversation::{
    self, Conversation, Dialect, LoginBlock, StartTlsBlock, Words,
};
use crate::protocol::line::{pop_line, split_word, Line};
use crate::protocol::sasl::{Mechanism, Next, PlainError};
use crate::protocol::{ClientEvent, NamedClient};

use super::extensions;

/// Longest command line, CRLF included (RFC 5321 section 4.5.3.1.4).
const MAX_COMMAND_LINE: usize = 512;
/// Longest AUTH command or SASL response line, CRLF included (RFC 4954 section 4).
const MAX_AUTH_LINE: usize = 12_288;
/// The largest BDAT chunk thrown away before AUTH; after a larger one the connection ends (its
/// bytes cannot be told from commands otherwise).
const MAX_SKIPPED_CHUNK: usize = 1 << 20;

/// SMTP's words and parsing for the pre-login conversation.
#[derive(Default)]
pub struct Submission {
    /// The name the client gave in EHLO or HELO; AUTH needs one (the back end is greeted with
    /// it). Forgotten at STARTTLS (RFC 3207 section 4.2).
    helo: Option<String>,
    /// Bytes of a refused BDAT chunk still to throw away (RFC 3030: the chunk follows the
    /// command whatever its answer).
    chunk_left: usize,
}

/// The SMTP client side.
pub type SubmissionClientSide = Conversation<Submission>;

/// SMTP answers are untagged: a pending login remembers nothing.
type Core = conversation::Core<()>;

fn reply(text: &str) -> ClientEvent {
    ClientEvent::Send(format!("{text}\r\n").into_bytes())
}

fn close_with(core: &mut Core, text: &str) -> ClientEvent {
    core.close(format!("{text}\r\n").into_bytes())
}

fn login_refusal(core: &Core) -> Option<&'static str> {
    match core.login_block()? {
        LoginBlock::Disabled => Some("454 4.7.0 Logins are disabled, try again later"),
        LoginBlock::TlsRequired => Some("530 5.7.0 Must issue a STARTTLS command first"),
    }
}

/// The EHLO answer: the greeting line, the extensions a relay can carry, STARTTLS while it
/// can be used, and AUTH while a login would be taken (as Postfix's `smtpd_tls_auth_only`).
fn ehlo_answer(core: &Core, name: &str) -> Vec<u8> {
    let mut lines = vec![format!("{} Hello {name}", core.settings.greeting_host)];
    lines.extend(extensions::offered(core.settings.capability.as_deref()));
    if core.starttls_available() {
        lines.push("STARTTLS".into());
    }
    if login_refusal(core).is_none() {
        lines.push(if core.settings.oauth {
            "AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2".into()
        } else {
            "AUTH PLAIN LOGIN".into()
        });
    }
    if core.named_client_trusted && core.named_client.is_none() {
        lines.push("XCLIENT ADDR PORT".into());
    }
    multiline(250, &lines)
}

/// `code-line` for every line but the last, `code line` for it.
fn multiline(code: u16, lines: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.extend_from_slice(format!("{code}{sep}{line}\r\n").as_bytes());
    }
    out
}

/// A domain or address literal as EHLO and HELO take it: printable, no spaces.
fn helo_name(args: &[u8]) -> Option<String> {
    let name = std::str::from_utf8(args).ok()?.trim();
    let fine = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic());
    fine.then(|| name.to_string())
}

impl Submission {
    fn execute(&mut self, core: &mut Core, verb: &[u8], args: &[u8]) -> ClientEvent {
        let verb = verb.to_ascii_uppercase();
        let no_args = args.iter().all(|&b| b == b' ');
        match verb.as_slice() {
            b"EHLO" | b"HELO" => self.hello(core, &verb, args),
            b"STARTTLS" if !no_args => reply("501 5.5.4 Syntax: STARTTLS"),
            b"STARTTLS" => self.starttls(core),
            b"AUTH" => self.auth(core, args),
            b"NOOP" => reply("250 2.0.0 OK"),
            b"RSET" => reply("250 2.0.0 OK"),
            b"HELP" => reply("214 2.0.0 See RFC 6409"),
            b"QUIT" => close_with(core, "221 2.0.0 Bye"),
            b"BDAT" => self.bdat(core, args),
            b"MAIL" | b"RCPT" | b"DATA" | b"VRFY" | b"EXPN" => {
                reply("530 5.7.0 Authentication required")
            }
            b"XCLIENT" if core.named_client_trusted && core.named_client.is_none() => {
                self.xclient(core, args)
            }
            _ => reply("500 5.5.2 Command not recognized"),
        }
    }

    /// BDAT before AUTH is refused, and its chunk is thrown away unread.
    fn bdat(&mut self, core: &mut Core, args: &[u8]) -> ClientEvent {
        let size = std::str::from_utf8(split_word(args).0)
            .ok()
            .and_then(|n| n.parse::<usize>().ok());
        match size {
            Some(size) if size <= MAX_SKIPPED_CHUNK => {
                self.chunk_left = size;
                reply("530 5.7.0 Authentication required")
            }
            _ => close_with(core, "530 5.7.0 Authentication required"),
        }
    }

    /// Throw away what is left of a refused chunk; true when it is all gone.
    fn skip_chunk(&mut self, core: &mut Core) -> bool {
        let n = self.chunk_left.min(core.input.len());
        core.input.drain(..n);
        self.chunk_left -= n;
        self.chunk_left == 0
    }

    fn hello(&mut self, core: &mut Core, verb: &[u8], args: &[u8]) -> ClientEvent {
        let Some(name) = helo_name(args) else {
            return reply("501 5.5.4 Syntax: EHLO hostname");
        };
        let answer = if verb == b"EHLO" {
            ehlo_answer(core, &name)
        } else {
            format!("250 {}\r\n", core.settings.greeting_host).into_bytes()
        };
        self.helo = Some(name);
        ClientEvent::Send(answer)
    }

    fn starttls(&mut self, core: &mut Core) -> ClientEvent {
        match core.starttls_block() {
            Some(StartTlsBlock::AlreadyActive) => reply("503 5.5.1 TLS already active"),
            Some(StartTlsBlock::NotOffered) => reply("502 5.5.1 STARTTLS not available"),
            None => {
                self.helo = None;
                core.start_tls(b"220 2.0.0 Ready to start TLS\r\n".to_vec())
            }
        }
    }

    /// `AUTH mechanism [initial-response]` (RFC 4954).
    fn auth(&mut self, core: &mut Core, args: &[u8]) -> ClientEvent {
        if let Some(refusal) = login_refusal(core) {
            return ClientEvent::LoginRefused {
                user: None,
                reply: format!("{refusal}\r\n").into_bytes(),
            };
        }
        if self.helo.is_none() {
            return reply("503 5.5.1 Send EHLO first");
        }
        let (mechanism, rest) = split_word(args);
        let Some(mechanism) = Mechanism::named(mechanism) else {
            return reply("504 5.5.4 Unrecognized authentication type");
        };
        if !core.settings.oauth && matches!(mechanism, Mechanism::OAuthBearer | Mechanism::XOAuth2)
        {
            return reply("504 5.5.4 Unrecognized authentication type");
        }
        let first = core.begin_sasl(mechanism);
        if rest.is_empty() {
            return core.await_sasl((), format!("334 {first}\r\n").into_bytes());
        }
        if rest.contains(&b' ') {
            return reply("501 5.5.4 Syntax: AUTH mechanism [initial-response]");
        }
        sasl_response(core, rest)
    }

    /// A trusted peer (a webmail host) names the client it speaks for, as Postfix's XCLIENT.
    fn xclient(&mut self, core: &mut Core, args: &[u8]) -> ClientEvent {
        match NamedClient::from_xclient(&String::from_utf8_lossy(args)) {
            Some(named) => {
                core.named_client = Some(named);
                self.helo = None;
                ClientEvent::Send(self.greeting(core))
            }
            None => reply("501 5.5.4 Bad XCLIENT attribute"),
        }
    }
}

/// Take a SASL response (`=` is an empty one): the credentials, or the next challenge.
fn sasl_response(core: &mut Core, response: &[u8]) -> ClientEvent {
    let response = if response == b"=" { &b""[..] } else { response };
    match core.sasl_respond(response) {
        Next::Login(creds) => core.begin_login((), creds),
        Next::Challenge(text) => core.await_sasl((), format!("334 {text}\r\n").into_bytes()),
        Next::Failed(PlainError::Base64) => reply("501 5.5.2 Invalid base64 data"),
        Next::Failed(PlainError::Syntax) => reply("501 5.5.2 Invalid SASL response"),
        Next::Failed(PlainError::AuthzidMismatch) => {
            reply("535 5.7.8 Authorization identity not supported")
        }
    }
}

/// The next line, within `max` bytes with its CRLF; `Err` is the event to hand back instead.
fn next_line(core: &mut Core, max: usize) -> Result<Vec<u8>, ClientEvent> {
    match pop_line(&mut core.input, max - 2) {
        Ok(line) => Ok(line),
        // No way to find the next command's start: the connection ends.
        Err(Line::TooLong) => Err(close_with(core, "500 5.5.2 Line too long")),
        Err(_) => Err(ClientEvent::NeedInput),
    }
}

impl Dialect for Submission {
    type Pending = ();

    const WORDS: Words = Words {
        rejected: "535 5.7.8 Authentication credentials invalid",
        too_many_failures: b"421 4.7.0 Too many failed logins\r\n",
        unavailable: "454 4.7.0 Temporary authentication failure, try again later",
        busy: "454 4.7.0 Too many logins at once from your address, try again later",
        limit: "454 4.7.0 Too many sessions for this user, try again later",
        timeout: b"421 4.4.2 Timeout exceeded\r\n",
        shutdown: b"421 4.3.2 Server shutting down\r\n",
        overloaded: b"421 4.7.0 Too many connections, try again later\r\n",
        too_many_from_address:
            b"421 4.7.0 Too many connections from your address, try again later\r\n",
        banned: b"421 4.7.0 Too many failed logins, try again later\r\n",
    };

    fn greeting(&mut self, core: &Core) -> Vec<u8> {
        format!(
            "220 {} ESMTP {}\r\n",
            core.settings.greeting_host, core.settings.product
        )
        .into_bytes()
    }

    fn command(&mut self, core: &mut Core) -> ClientEvent {
        if !self.skip_chunk(core) {
            return ClientEvent::NeedInput;
        }
        let line = match next_line(core, MAX_AUTH_LINE) {
            Ok(line) => line,
            Err(event) => return event,
        };
        if !core.count_command() {
            return close_with(core, "421 4.7.0 Too many commands");
        }
        let (verb, args) = split_word(&line);
        if !verb.eq_ignore_ascii_case(b"AUTH") && line.len() + 2 > MAX_COMMAND_LINE {
            return reply("500 5.5.2 Line too long");
        }
        self.execute(core, verb, args)
    }

    fn sasl_response(&mut self, core: &mut Core) -> ClientEvent {
        let line = match next_line(core, MAX_AUTH_LINE) {
            Ok(line) => line,
            Err(event) => return event,
        };
        core.finish_sasl();
        if line == b"*" {
            return reply("501 5.7.0 Authentication cancelled");
        }
        sasl_response(core, &line)
    }

    fn tls_established(&mut self, _core: &Core) {
        self.helo = None;
    }

    fn accepted(&self, _: Option<()>, _capabilities: Option<&str>, text: &str) -> Vec<u8> {
        format!("235 {text}\r\n").into_bytes()
    }

    /// nginx's answer to a refusal from its auth service: its `Auth-Error-Code` default.
    fn denied(&self, _: Option<()>, message: &str) -> Vec<u8> {
        format!("535 5.7.0 {message}\r\n").into_bytes()
    }

    fn answer(&self, _: Option<()>, text: &str) -> Vec<u8> {
        format!("{text}\r\n").into_bytes()
    }

    /// The back end is greeted with the client's own EHLO name.
    fn client_id(&self) -> Vec<(String, String)> {
        self.helo
            .iter()
            .map(|name| (super::HELO.to_string(), name.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::test_support::{creds, feed, settings, text};
    use crate::protocol::{AfterLogin, ClientSettings, ClientSide, LoginOutcome};

    fn machine(s: ClientSettings) -> SubmissionClientSide {
        SubmissionClientSide::new(s)
    }

    fn plain(user: &str, pass: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
    }

    #[test]
    fn ehlo_lists_the_extensions_starttls_and_auth() {
        let mut m = machine(settings());
        assert_eq!(m.greeting(), b"220 proxy.test ESMTP Portcullis\r\n");
        let out = text(&feed(&mut m, b"EHLO client.example\r\n"));
        assert_eq!(
            out,
            "250-proxy.test Hello client.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"
        );
    }

    #[test]
    fn mail_before_auth_is_refused_and_nothing_is_passed_on() {
        let mut m = machine(settings());
        let out = text(&feed(
            &mut m,
            b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nVRFY x\r\nBDAT 1 LAST\r\n",
        ));
        assert_eq!(
            out.matches("530 5.7.0 Authentication required\r\n").count(),
            5
        );
        assert!(m.take_unprocessed().is_empty());
    }

    #[test]
    fn auth_with_and_without_an_initial_response_and_cancel() {
        let mut m = machine(settings());
        feed(&mut m, b"EHLO c\r\n");
        let b64 = plain("alice", "pw");
        let events = feed(&mut m, format!("AUTH PLAIN {b64}\r\n").as_bytes());
        assert_eq!(events, vec![creds("alice", "pw")]);
        let reply = m.login_finished(&LoginOutcome::Rejected { text: "no".into() });
        assert_eq!(
            reply.bytes,
            b"535 5.7.8 Authentication credentials invalid\r\n"
        );
        assert_eq!(reply.next, AfterLogin::Continue);
        assert_eq!(
            text(&feed(&mut m, b"AUTH LOGIN\r\n")),
            "334 VXNlcm5hbWU6\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"*\r\n")),
            "501 5.7.0 Authentication cancelled\r\n"
        );
        assert_eq!(text(&feed(&mut m, b"AUTH PLAIN\r\n")), "334 \r\n");
        assert_eq!(
            text(&feed(&mut m, b"!!!\r\n")),
            "501 5.5.2 Invalid base64 data\r\n"
        );
        assert_eq!(
            text(&feed(&mut m, b"AUTH CRAM-MD5\r\n")),
            "504 5.5.4 Unrecognized authentication type\r\n"
        );
    }

    #[test]
    fn auth_needs_ehlo_and_on_a_starttls_required_listener_tls() {
        let mut m = machine(settings());
        assert_eq!(
            text(&feed(&mut m, b"AUTH PLAIN\r\n")),
            "503 5.5.1 Send EHLO first\r\n"
        );
        let mut s = settings();
        s.tls_required = true;
        let mut m = machine(s);
        let out = text(&feed(&mut m, b"EHLO c\r\nAUTH PLAIN\r\n"));
        assert!(!out.contains("AUTH PLAIN LOGIN"), "{out}");
        assert!(out.ends_with("530 5.7.0 Must issue a STARTTLS command first\r\n"));
    }

    #[test]
    fn what_follows_starttls_in_plaintext_is_discarded() {
        let mut m = machine(settings());
        let events = feed(&mut m, b"EHLO c\r\nSTARTTLS\r\nAUTH PLAIN AGFsaWNlAHB3\r\n");
        assert!(matches!(events.last(), Some(ClientEvent::StartTls(b)) if b.starts_with(b"220 ")));
        m.tls_established();
        assert!(m.take_unprocessed().is_empty());
        // The EHLO name was forgotten with the plaintext: AUTH waits for a new EHLO.
        assert_eq!(
            text(&feed(&mut m, b"AUTH PLAIN AGFsaWNlAHB3\r\n")),
            "503 5.5.1 Send EHLO first\r\n"
        );
        let out = text(&feed(&mut m, b"EHLO c\r\n"));
        assert!(
            !out.contains("STARTTLS") && out.contains("AUTH PLAIN LOGIN"),
            "{out}"
        );
    }

    #[test]
    fn lines_are_bounded_512_and_auth_12288() {
        let mut m = machine(settings());
        let long = format!("NOOP {}\r\n", "x".repeat(600));
        assert_eq!(
            text(&feed(&mut m, long.as_bytes())),
            "500 5.5.2 Line too long\r\n"
        );
        feed(&mut m, b"EHLO c\r\n");
        let auth = format!("AUTH PLAIN {}\r\n", "A".repeat(2000));
        assert_eq!(
            text(&feed(&mut m, auth.as_bytes())),
            "501 5.5.2 Invalid SASL response\r\n"
        );
        let endless = vec![b'a'; 13_000];
        let events = feed(&mut m, &endless);
        assert!(matches!(&events[..], [ClientEvent::Close(b)] if b.starts_with(b"500 ")));
    }

    #[test]
    fn the_client_s_ehlo_name_goes_to_the_back_end_and_the_answer_is_235() {
        let mut m = machine(settings());
        feed(&mut m, b"EHLO mua.example\r\n");
        assert_eq!(
            m.client_id(),
            vec![("helo".to_string(), "mua.example".to_string())]
        );
        feed(
            &mut m,
            format!("AUTH PLAIN {}\r\nMAIL FROM:<a@b>\r\n", plain("a", "b")).as_bytes(),
        );
        let reply = m.login_finished(&LoginOutcome::Accepted {
            capabilities: None,
            text: "2.7.0 Authentication successful".into(),
        });
        assert_eq!(reply.bytes, b"235 2.7.0 Authentication successful\r\n");
        assert_eq!(reply.next, AfterLogin::Relay);
        assert_eq!(m.take_unprocessed(), b"MAIL FROM:<a@b>\r\n");
    }

    #[test]
    fn a_bdat_chunk_before_auth_is_refused_and_thrown_away() {
        let mut m = machine(settings());
        let out = text(&feed(
            &mut m,
            b"EHLO c\r\nBDAT 10 LAST\r\nQUIT\r\nQUITNOOP\r\n",
        ));
        assert!(
            out.ends_with("530 5.7.0 Authentication required\r\n250 2.0.0 OK\r\n"),
            "{out}"
        );
        // Split across reads too.
        let mut m = machine(settings());
        feed(&mut m, b"BDAT 6\r\nQU");
        assert_eq!(text(&feed(&mut m, b"IT\r\nNOOP\r\n")), "250 2.0.0 OK\r\n");
        let mut m = machine(settings());
        let events = feed(&mut m, b"BDAT 999999999 LAST\r\n");
        assert!(matches!(&events[..], [ClientEvent::Close(b)] if b.starts_with(b"530 ")));
    }
}
