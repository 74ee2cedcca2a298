//! Sans-I/O protocol machines.
//!
//! Every protocol has two machines: a *client side* that speaks to the mail client until it has
//! credentials, and a *server side* that logs in to the back end with them. Machines are fed bytes
//! and hand back events; they never touch a socket, a clock or a log, so every corner case is a
//! plain unit test. The async session in `server::session` is the only thing that drives them.
//!
//! A protocol is one folder (`imap/`, `pop3/`, `managesieve/`): its two machines and the
//! [`descriptor::Descriptor`] that says everything else about it. Adding one means that
//! folder, its variant in [`crate::value::Protocol`] and its arm in [`Protocol::descriptor`]
//! (`known.rs`).

pub mod conversation;
pub mod descriptor;
pub mod imap;
mod known;
pub mod limits;
pub mod line;
pub mod managesieve;
pub mod named_client;
pub mod pop3;
pub mod quoted;
pub mod sasl;
pub mod server_login;
pub mod submission;
#[cfg(test)]
mod test_support;
pub mod token;

use std::fmt;

pub use crate::value::{Protocol, Secret};
pub use limits::PreLoginLimits;
pub use managesieve::learn::Learned;
pub use named_client::NamedClient;

/// A login the client asked for. The secret is kept out of `Debug` so that it cannot leak into
/// a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity as the client typed it; a name that is not UTF-8 with its
    /// other bytes escaped (`\xE9`), fit for the log ([`user_name`]).
    pub user: String,
    /// The name's own bytes when they are not UTF-8: only an http map's service sees them,
    /// as nginx passes them; no back end is ever given the escaped `user` in their stead.
    pub user_bytes: Option<Vec<u8>>,
    /// The password. Arbitrary bytes are allowed by IMAP literals, but all back ends we speak to
    /// take UTF-8 or Latin-1 passwords, so we keep the raw bytes.
    pub secret: Secret<Vec<u8>>,
    /// An OAuth 2.0 login: passed to the back end as the client sent it, `secret` holding the
    /// bearer token (for a map that checks it).
    pub bearer: Option<Bearer>,
}

/// An OAUTHBEARER (RFC 7628) or XOAUTH2 (Google's form) response, kept whole for the back end.
#[derive(Clone, PartialEq, Eq)]
pub struct Bearer {
    pub mechanism: sasl::Mechanism,
    /// The decoded response (token inside).
    pub response: Secret<Vec<u8>>,
}

/// Bytes no user name or password may hold: a NUL separates the fields of the SASL PLAIN
/// message sent to the back end (`user\0pw` as a name would log in as `user`, and put the
/// password in the log), and CR or LF would end a command line.
const FORBIDDEN_IN_CREDENTIALS: &[u8] = b"\0\r\n";

fn forbidden(b: &u8) -> bool {
    FORBIDDEN_IN_CREDENTIALS.contains(b)
}

/// The part of a user name fit for the log: what comes before a NUL, CR or LF (after a NUL
/// may come a password, `user\0password`).
pub fn loggable_user(user: &str) -> &str {
    match user.bytes().position(|b| forbidden(&b)) {
        Some(at) => &user[..at],
        None => user,
    }
}

/// A user name as the client sent it. UTF-8 is taken as it is. Other bytes are refused
/// (`None`) unless the listener passes such names on (`pass_non_utf8`: its map is an http map,
/// whose service decides, as nginx lets it); then the name is shown with them escaped
/// (`\xE9`: never raw in a log line) and the bytes are kept for the service.
pub fn user_name(bytes: &[u8], pass_non_utf8: bool) -> Option<(String, Option<Vec<u8>>)> {
    if let Ok(name) = std::str::from_utf8(bytes) {
        return Some((name.to_string(), None));
    }
    if !pass_non_utf8 {
        return None;
    }
    let shown = bytes
        .utf8_chunks()
        .map(|chunk| {
            let escaped: String = chunk
                .invalid()
                .iter()
                .map(|b| format!("\\x{b:02X}"))
                .collect();
            format!("{}{escaped}", chunk.valid())
        })
        .collect();
    Some((shown, Some(bytes.to_vec())))
}

/// A response code at the start of `text` (IMAP `[UNAVAILABLE]`, POP3 `[SYS/TEMP]` with
/// `open` `[`; ManageSieve `(TRYLATER)` with `(`), and the words after it. A service that
/// words its refusal with a code means the client to act on that code: the front end then
/// puts none of its own in front. A code is an atom-like word (a letter first, then letters,
/// digits, `-`, `/`, `.`), optionally followed by arguments up to `close` with IMAP's `[`.
pub fn leading_response_code(text: &str, open: char) -> Option<(&str, &str)> {
    let close = if open == '[' { ']' } else { ')' };
    let inside = text.strip_prefix(open)?;
    let end = inside.find(close)?;
    let (word, arguments) = inside[..end]
        .split_once(' ')
        .unwrap_or((&inside[..end], ""));
    let atom = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '.');
    let word_ok = word.starts_with(|c: char| c.is_ascii_alphabetic()) && word.chars().all(atom);
    // ManageSieve's codes with arguments carry quoted strings; only IMAP's and POP3's
    // bracketed codes are taken with arguments.
    let arguments_ok = arguments.is_empty() || (open == '[' && !arguments.contains(open));
    (word_ok && arguments_ok).then(|| (&text[..end + 2], text[end + 2..].trim_start()))
}

impl Credentials {
    /// The one check every login path passes, whatever the protocol: `Err` with the part of
    /// the user name fit for the log ([`loggable_user`]) when the user name or the password
    /// holds a NUL, CR or LF.
    pub fn check_characters(&self) -> Result<(), &str> {
        let user = loggable_user(&self.user);
        if user.len() < self.user.len() || self.secret.expose().iter().any(forbidden) {
            Err(user)
        } else {
            Ok(())
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // What follows a NUL in a name may be a password (`user\0password`).
        f.debug_struct("Credentials")
            .field("user", &loggable_user(&self.user))
            .field("bearer", &self.bearer.as_ref().map(|b| b.mechanism))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What the client side wants the session to do next.
#[derive(PartialEq, Eq)]
pub enum ClientEvent {
    /// Write these bytes to the client.
    Send(Vec<u8>),
    /// Write `reply`, then run the server-side TLS handshake. Everything the client sent before
    /// the handshake has already been thrown away by the machine (CVE-2011-0411).
    StartTls(Vec<u8>),
    /// The client gave credentials. The session looks up the back end, logs in and reports the
    /// result through [`ClientSide::login_finished`].
    Login(Credentials),
    /// A login attempt the listener refuses by itself (logins disabled, or TLS required and not
    /// active). The session logs it, as Perdition does, then writes `reply`. `user` is the name
    /// when the client gave one before being refused.
    LoginRefused {
        user: Option<String>,
        reply: Vec<u8>,
    },
    /// Write these bytes, then close the connection.
    Close(Vec<u8>),
    /// Nothing to do until more bytes arrive.
    NeedInput,
}

/// `Login` shows no password, `LoginRefused` the user name only up to a NUL, CR or LF.
impl fmt::Debug for ClientEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientEvent::Send(b) => f
                .debug_tuple("Send")
                .field(&String::from_utf8_lossy(b))
                .finish(),
            ClientEvent::StartTls(b) => f
                .debug_tuple("StartTls")
                .field(&String::from_utf8_lossy(b))
                .finish(),
            ClientEvent::Login(creds) => f.debug_tuple("Login").field(creds).finish(),
            ClientEvent::LoginRefused { user, reply } => f
                .debug_struct("LoginRefused")
                .field("user", &user.as_deref().map(loggable_user))
                .field("reply", &String::from_utf8_lossy(reply))
                .finish(),
            ClientEvent::Close(b) => f
                .debug_tuple("Close")
                .field(&String::from_utf8_lossy(b))
                .finish(),
            ClientEvent::NeedInput => f.write_str("NeedInput"),
        }
    }
}

/// How a login attempt ended, in protocol-neutral terms. The client side turns it into the
/// protocol's answer, the log into Perdition's status text, later the guard and the metrics
/// into their counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoginOutcome {
    /// Logged in. `capabilities` is the back end's post-login capability list when it has one.
    Accepted {
        capabilities: Option<String>,
        text: String,
    },
    /// The back end refused the credentials.
    Rejected { text: String },
    /// The proxy refused the attempt itself, without asking a back end.
    Refused(Refusal),
    /// The routing service refused it with words for the user (nginx's `auth_http`);
    /// `retry`: the client may try again on this connection, else it is closed after the
    /// answer (nginx keeps it only after a refusal with `Auth-Wait`).
    Denied { message: String, retry: bool },
    /// The login could not be carried out; the client is told to try later. `reason` is for
    /// the log only.
    Failed { failure: Failure, reason: String },
}

/// How one leg of a session is protected, named as Perdition's log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte.
    Ssl,
    /// Plaintext upgraded by STARTTLS/STLS.
    Starttls,
    Plaintext,
}

impl Security {
    pub fn log_name(self) -> &'static str {
        match self {
            Security::Ssl => "ssl",
            Security::Starttls => "starttls",
            Security::Plaintext => "plaintext",
        }
    }
}

/// Why the proxy refused a login by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The listener refuses every login (maintenance), or TLS is required and not active.
    LoginDisabled,
    /// A NUL, CR or LF in the user name or password ([`Credentials::check_characters`]).
    ForbiddenCharacters,
    /// No map knows the user and the listener has no server of its own.
    NoServer,
}

/// Which step of reaching the back end failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No connection: the map could not answer, the TCP connect failed or timed out.
    NoConnection,
    /// Connected, but the exchange failed: a bad greeting, a TLS error, no login answer in time.
    Negotiation,
    /// The back end was to be reached over STARTTLS and does not offer it or refused it.
    NoTls,
    /// Not tried: the guard holds back a crowd of logins from one address that has failed
    /// lately (as many under way as failures left before a ban).
    TooManyAtOnce,
    /// Not kept: the back end accepted, but the user has as many sessions as its cap allows.
    OverSessionCap,
}

impl LoginOutcome {
    /// The back end said no. A response code that says "temporary" (IMAP `[UNAVAILABLE]`,
    /// POP3 `[SYS/TEMP]` and `[IN-USE]`: Dovecot's auth service down, a proxy loop further on)
    /// is not a wrong password: the client is told to come back, and nothing counts against it.
    pub fn refused_by_server(code: Option<&str>, text: String) -> LoginOutcome {
        match code.map(str::to_ascii_uppercase).as_deref() {
            Some("UNAVAILABLE" | "SYS/TEMP" | "IN-USE") => {
                LoginOutcome::unavailable(format!("server said: {text}"))
            }
            _ => LoginOutcome::Rejected { text },
        }
    }

    pub fn unavailable(reason: impl Into<String>) -> LoginOutcome {
        LoginOutcome::Failed {
            failure: Failure::Negotiation,
            reason: reason.into(),
        }
    }

    pub fn no_tls(reason: impl Into<String>) -> LoginOutcome {
        LoginOutcome::Failed {
            failure: Failure::NoTls,
            reason: reason.into(),
        }
    }

    pub fn too_many_at_once() -> LoginOutcome {
        LoginOutcome::Failed {
            failure: Failure::TooManyAtOnce,
            reason: "too many logins at once from this address".into(),
        }
    }

    pub fn over_session_cap(reason: impl Into<String>) -> LoginOutcome {
        LoginOutcome::Failed {
            failure: Failure::OverSessionCap,
            reason: reason.into(),
        }
    }

    pub fn no_connection(reason: impl Into<String>) -> LoginOutcome {
        LoginOutcome::Failed {
            failure: Failure::NoConnection,
            reason: reason.into(),
        }
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, LoginOutcome::Accepted { .. })
    }
}

/// What the client side answers once the session reports a login outcome.
#[derive(Debug, PartialEq, Eq)]
pub struct LoginReply {
    /// Bytes for the client (the tagged OK/NO, `+OK`/`-ERR`...).
    pub bytes: Vec<u8>,
    pub next: AfterLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLogin {
    /// Start relaying bytes.
    Relay,
    /// The client may try again.
    Continue,
    /// Too many failures: close after sending the reply.
    Close,
}

/// The machine that faces the mail client before login.
pub trait ClientSide: Send {
    /// Bytes to send as soon as the connection (and implicit TLS) is up.
    fn greeting(&mut self) -> Vec<u8>;
    /// Hand over bytes read from the client.
    fn receive(&mut self, input: &[u8]);
    /// The next thing to do; call until it returns [`ClientEvent::NeedInput`].
    fn next_event(&mut self) -> ClientEvent;
    /// The TLS handshake requested by [`ClientEvent::StartTls`] succeeded.
    fn tls_established(&mut self);
    /// Report how the back-end login for the last [`ClientEvent::Login`] went.
    fn login_finished(&mut self, outcome: &LoginOutcome) -> LoginReply;
    /// The message to send when the pre-login timer expires, before closing.
    fn timeout_message(&self) -> Vec<u8>;
    /// The message to send when the server shuts down before the client logged in.
    fn shutdown_message(&self) -> Vec<u8>;
    /// Bytes the client pipelined after its login command; they belong to the back end.
    fn take_unprocessed(&mut self) -> Vec<u8>;
    /// The client's own identification (IMAP `ID` fields), to pass on to the back end.
    fn client_id(&self) -> Vec<(String, String)>;
    /// The peer is trusted to name the client it speaks for (IMAP `ID` `x-originating-ip`,
    /// POP3/ManageSieve `XCLIENT`); call before the greeting.
    fn trust_named_client(&mut self);
    /// The client a trusted peer named, if it did.
    fn named_client(&self) -> Option<NamedClient>;
}

/// What the server side wants the session to do next.
#[derive(PartialEq, Eq)]
pub enum ServerEvent {
    /// Write these bytes to the back end.
    Send(Vec<u8>),
    /// Run the client-side TLS handshake with the back end now.
    StartTls,
    /// Nothing to do until more bytes arrive.
    NeedInput,
    /// Worth a warning in the log (a back end that refused to be told the client's address);
    /// the exchange goes on.
    Note(String),
    /// The login is over. After `Accepted`, [`ServerSide::take_unprocessed`] holds any bytes the
    /// back end sent after its answer; they belong to the client.
    Finished(LoginOutcome),
}

/// `Send` carries the login command, password included: `Debug` shows only its length.
impl fmt::Debug for ServerEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerEvent::Send(bytes) => write!(f, "Send(<{} bytes>)", bytes.len()),
            ServerEvent::StartTls => f.write_str("StartTls"),
            ServerEvent::NeedInput => f.write_str("NeedInput"),
            ServerEvent::Note(text) => f.debug_tuple("Note").field(text).finish(),
            ServerEvent::Finished(outcome) => f.debug_tuple("Finished").field(outcome).finish(),
        }
    }
}

/// The machine that logs in to the back end.
pub trait ServerSide: Send {
    fn receive(&mut self, input: &[u8]);
    fn next_event(&mut self) -> ServerEvent;
    fn tls_established(&mut self);
    fn take_unprocessed(&mut self) -> Vec<u8>;
    /// The back end closed the connection; the machine turns that into a final event.
    fn eof(&mut self) -> LoginOutcome {
        LoginOutcome::unavailable("connection closed by server")
    }
}

/// Settings a client-side machine needs; they come from the listener configuration.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Capabilities advertised before login; `None` means the protocol's default.
    pub capability: Option<String>,
    /// STARTTLS can be offered on this connection.
    pub starttls_offered: bool,
    /// Logins are refused until the connection is encrypted.
    pub tls_required: bool,
    /// The connection already runs over TLS (implicit TLS listener).
    pub tls_active: bool,
    /// Refuse every login (Perdition's `login_disabled`).
    pub login_disabled: bool,
    /// Offer OAUTHBEARER and XOAUTH2 (passed to the back end, which must take them).
    pub oauth: bool,
    /// Pass a user name that is not UTF-8 on to the map rather than refuse it: the
    /// listener's map is an http map, whose service decides (see [`user_name`]).
    pub pass_non_utf8_names: bool,
    /// Replace the back end's text in the successful login answer.
    pub ok_line: Option<String>,
    /// Host name shown in the greeting.
    pub greeting_host: String,
    /// The product name shown in greetings ("Portcullis", or "perdition" in compat mode).
    pub product: String,
    pub limits: PreLoginLimits,
}

/// Settings a server-side machine needs.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Upgrade the back-end connection with STARTTLS after the greeting.
    pub starttls: bool,
    /// The client to name to the back end before the login (IMAP `ID`, POP3 and ManageSieve
    /// `XCLIENT`), when the back end offers it.
    pub client: Option<ClientAddress>,
    /// The client's own `ID` fields, sent in the same `ID` (Dovecot reads only the first);
    /// IMAP only.
    pub client_id: Vec<(String, String)>,
}

/// Who the client is, as a back end is told in band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress {
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    /// This session's id, for following it across proxy and back end.
    pub session: String,
    /// Hops left before a proxy loop is cut.
    pub ttl: u32,
}

impl ClientAddress {
    /// Dovecot's `ID` keys, in the order it documents them.
    pub fn id_fields(&self) -> Vec<(&'static str, String)> {
        let (peer, local) = (self.peer, self.local);
        vec![
            ("x-originating-ip", peer.ip().to_canonical().to_string()),
            ("x-originating-port", peer.port().to_string()),
            ("x-connected-ip", local.ip().to_canonical().to_string()),
            ("x-connected-port", local.port().to_string()),
            ("x-session-id", self.session.clone()),
            ("x-proxy-ttl", self.ttl.to_string()),
        ]
    }

    /// Dovecot's `XCLIENT` line (POP3, ManageSieve).
    pub fn xclient(&self) -> String {
        format!(
            "XCLIENT ADDR={} PORT={} SESSION={} TTL={}\r\n",
            self.peer.ip().to_canonical(),
            self.peer.port(),
            self.session,
            self.ttl
        )
    }
}

/// Whether a capability list (space separated) contains `name`, ignoring case.
pub fn has_capability(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace()
        .any(|c| c.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod credential_tests {
    use super::*;

    fn creds(user: &str, secret: &[u8]) -> Credentials {
        Credentials {
            user: user.into(),
            user_bytes: None,
            secret: Secret::new(secret.to_vec()),
            bearer: None,
        }
    }

    #[test]
    fn nul_cr_and_lf_are_refused_in_names_and_passwords() {
        assert_eq!(creds("alice", b"pw with space").check_characters(), Ok(()));
        assert_eq!(
            creds("user0001\0pw-user0001", b"").check_characters(),
            Err("user0001")
        );
        assert_eq!(creds("bob\r\nX", b"pw").check_characters(), Err("bob"));
        assert_eq!(creds("carol", b"p\nw").check_characters(), Err("carol"));
        assert_eq!(creds("dave", b"p\0w").check_characters(), Err("dave"));
        assert_eq!(creds("José", "pä".as_bytes()).check_characters(), Ok(()));
    }

    #[test]
    fn the_password_never_shows_through_debug() {
        let text = format!("{:?}", creds("alice", b"s3cret"));
        assert!(!text.contains("s3cret"), "{text}");
        let text = format!("{:?}", ClientEvent::Login(creds("alice\0s3cret", b"")));
        assert!(!text.contains("s3cret"), "{text}");
        let refused = ClientEvent::LoginRefused {
            user: Some("bob\0s3cret".into()),
            reply: b"a NO\r\n".to_vec(),
        };
        assert!(!format!("{refused:?}").contains("s3cret"));
        let tokens =
            imap::command::parse_command(b"a LOGIN alice s3cret\r\n", &PreLoginLimits::default());
        assert!(!format!("{tokens:?}").contains("115, 51"), "{tokens:?}");
        let line = line::take_line(b"PASS s3cret\r\n", 100);
        assert!(!format!("{line:?}").contains("s3cret"));
        // The login command a back-end machine asks to send, password inside.
        let mut machine =
            Protocol::Imap.server_side(creds("alice", b"s3cret"), ServerSettings::default());
        machine.receive(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR] hi\r\n");
        let event = machine.next_event();
        assert!(matches!(&event, ServerEvent::Send(b) if b.starts_with(b"pc2 AUTHENTICATE")));
        let text = format!("{event:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("czNjcmV0"),
            "{text}"
        );
    }

    #[test]
    fn leading_response_codes_are_recognised() {
        let code = leading_response_code;
        assert_eq!(
            code("[UNAVAILABLE] Try later", '['),
            Some(("[UNAVAILABLE]", "Try later"))
        );
        assert_eq!(code("[SYS/TEMP] x", '['), Some(("[SYS/TEMP]", "x")));
        assert_eq!(
            code("[BADCHARSET UTF-8] x", '['),
            Some(("[BADCHARSET UTF-8]", "x"))
        );
        assert_eq!(code("(TRYLATER) x", '('), Some(("(TRYLATER)", "x")));
        assert_eq!(code("(QUOTA/MAXSIZE)", '('), Some(("(QUOTA/MAXSIZE)", "")));
        for words in [
            "[unclosed",
            "[] x",
            "[1abc] x",
            " [UNAVAILABLE] x",
            "no code",
        ] {
            assert_eq!(code(words, '['), None, "{words}");
        }
        for words in ["(SASL \"x\") y", "[TRYLATER] x", "(a b) c"] {
            assert_eq!(code(words, '('), None, "{words}");
        }
    }

    #[test]
    fn names_that_are_not_utf8_are_shown_escaped_and_kept() {
        assert_eq!(
            user_name(b"caf\xc3\xa9", false),
            Some(("caf\u{e9}".into(), None))
        );
        assert_eq!(user_name(b"caf\xe9", false), None);
        let (shown, bytes) = user_name(b"\xffa\xe9b", true).unwrap();
        assert_eq!(shown, "\\xFFa\\xE9b");
        assert_eq!(bytes.as_deref(), Some(&b"\xffa\xe9b"[..]));
    }
}
