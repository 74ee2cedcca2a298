//! The SASL mechanisms a proxy can take from a client: those that carry the password itself,
//! PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login, what many Outlook versions use). The
//! back end is then logged in to with PLAIN (or its LOGIN command), whichever the client used.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::Credentials;

/// Why a PLAIN response was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainError {
    /// Not valid base64.
    Base64,
    /// Not `authzid NUL authcid NUL passwd`, or the names are not UTF-8.
    Syntax,
    /// The client asked to act as another user; a proxy cannot vouch for that.
    AuthzidMismatch,
}

/// Decode a base64 PLAIN response. An empty response (`=` in IMAP) decodes to nothing and is a
/// syntax error, as are names that are not UTF-8.
pub fn decode_plain(b64: &[u8]) -> Result<Credentials, PlainError> {
    let raw = STANDARD.decode(b64).map_err(|_| PlainError::Base64)?;
    let mut parts = raw.splitn(3, |&b| b == 0);
    let authzid = parts.next().ok_or(PlainError::Syntax)?;
    let authcid = parts.next().ok_or(PlainError::Syntax)?;
    let passwd = parts.next().ok_or(PlainError::Syntax)?;
    if authcid.is_empty() || passwd.contains(&0) {
        return Err(PlainError::Syntax);
    }
    let user = std::str::from_utf8(authcid).map_err(|_| PlainError::Syntax)?;
    if !authzid.is_empty() && authzid != authcid {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok(Credentials {
        user: user.to_string(),
        secret: passwd.to_vec().into(),
    })
}

/// A mechanism a client may choose before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    /// The mechanism a client named (any case); `None` for the ones a proxy cannot take.
    pub fn named(name: &[u8]) -> Option<Mechanism> {
        if name.eq_ignore_ascii_case(b"PLAIN") {
            Some(Mechanism::Plain)
        } else if name.eq_ignore_ascii_case(b"LOGIN") {
            Some(Mechanism::Login)
        } else {
            None
        }
    }
}

/// Where an exchange is: what the client's next response is.
#[derive(Default)]
pub struct Exchange {
    step: Step,
}

#[derive(Default)]
enum Step {
    /// The whole PLAIN message.
    #[default]
    Plain,
    /// LOGIN's user name.
    LoginUser,
    /// LOGIN's password, after this user name.
    LoginPassword(String),
}

/// What a client's response leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The credentials are complete.
    Login(Credentials),
    /// Send this challenge (base64, possibly empty) and wait for the next response.
    Challenge(&'static str),
    Failed(PlainError),
}

/// LOGIN's prompts, base64 of `Username:` and `Password:`.
const USERNAME_PROMPT: &str = "VXNlcm5hbWU6";
const PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

impl Exchange {
    /// Start an exchange; the first challenge (empty for PLAIN).
    pub fn start(mechanism: Mechanism) -> (Exchange, &'static str) {
        match mechanism {
            Mechanism::Plain => (Exchange { step: Step::Plain }, ""),
            Mechanism::Login => (
                Exchange {
                    step: Step::LoginUser,
                },
                USERNAME_PROMPT,
            ),
        }
    }

    /// Take the client's base64 response (an initial response, or the answer to a challenge).
    pub fn respond(&mut self, b64: &[u8]) -> Next {
        match std::mem::take(&mut self.step) {
            Step::Plain => match decode_plain(b64) {
                Ok(creds) => Next::Login(creds),
                Err(e) => Next::Failed(e),
            },
            Step::LoginUser => match decode_text(b64) {
                Ok(user) if !user.is_empty() => {
                    self.step = Step::LoginPassword(user);
                    Next::Challenge(PASSWORD_PROMPT)
                }
                Ok(_) => Next::Failed(PlainError::Syntax),
                Err(e) => Next::Failed(e),
            },
            Step::LoginPassword(user) => match STANDARD.decode(b64) {
                Ok(password) => Next::Login(Credentials {
                    user,
                    secret: password.into(),
                }),
                Err(_) => Next::Failed(PlainError::Base64),
            },
        }
    }
}

fn decode_text(b64: &[u8]) -> Result<String, PlainError> {
    let raw = STANDARD.decode(b64).map_err(|_| PlainError::Base64)?;
    String::from_utf8(raw).map_err(|_| PlainError::Syntax)
}

/// Encode credentials as a base64 PLAIN response with an empty authorisation identity.
pub fn encode_plain(creds: &Credentials) -> String {
    let mut raw = Vec::with_capacity(creds.user.len() + creds.secret.expose().len() + 2);
    raw.push(0);
    raw.extend_from_slice(creds.user.as_bytes());
    raw.push(0);
    raw.extend_from_slice(creds.secret.expose());
    STANDARD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, secret: &str) -> Credentials {
        Credentials {
            user: user.into(),
            secret: secret.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn login_asks_for_the_user_then_the_password() {
        assert_eq!(Mechanism::named(b"login"), Some(Mechanism::Login));
        assert_eq!(Mechanism::named(b"CRAM-MD5"), None);
        let (mut exchange, first) = Exchange::start(Mechanism::Login);
        assert_eq!(STANDARD.decode(first).unwrap(), b"Username:");
        let next = exchange.respond(STANDARD.encode("alice").as_bytes());
        let Next::Challenge(prompt) = next else {
            panic!("{next:?}")
        };
        assert_eq!(STANDARD.decode(prompt).unwrap(), b"Password:");
        assert_eq!(
            exchange.respond(STANDARD.encode("pass word").as_bytes()),
            Next::Login(creds("alice", "pass word"))
        );
        let (mut exchange, _) = Exchange::start(Mechanism::Login);
        assert_eq!(exchange.respond(b"%%%"), Next::Failed(PlainError::Base64));
        let (mut exchange, _) = Exchange::start(Mechanism::Login);
        assert_eq!(exchange.respond(b""), Next::Failed(PlainError::Syntax));
    }

    #[test]
    fn plain_through_the_exchange() {
        let (mut exchange, first) = Exchange::start(Mechanism::Plain);
        assert_eq!(first, "");
        let c = creds("bob", "pw");
        assert_eq!(
            exchange.respond(encode_plain(&c).as_bytes()),
            Next::Login(c)
        );
    }

    #[test]
    fn round_trip() {
        let c = creds("alice", "pass word");
        assert_eq!(decode_plain(encode_plain(&c).as_bytes()), Ok(c));
    }

    #[test]
    fn rfc4616_example_with_matching_authzid() {
        // "tim\0tim\0tanstaaftanstaaf"
        let b64 = STANDARD.encode(b"tim\0tim\0tanstaaftanstaaf");
        assert_eq!(
            decode_plain(b64.as_bytes()),
            Ok(creds("tim", "tanstaaftanstaaf"))
        );
    }

    #[test]
    fn acting_as_someone_else_is_refused() {
        let b64 = STANDARD.encode(b"Ursel\0Kurt\0xipj3plmq");
        assert_eq!(
            decode_plain(b64.as_bytes()),
            Err(PlainError::AuthzidMismatch)
        );
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        assert_eq!(decode_plain(b"!!!"), Err(PlainError::Base64));
        assert_eq!(decode_plain(b""), Err(PlainError::Syntax));
        let b64 = STANDARD.encode(b"\0\0pw");
        assert_eq!(decode_plain(b64.as_bytes()), Err(PlainError::Syntax));
        let b64 = STANDARD.encode(b"nouser");
        assert_eq!(decode_plain(b64.as_bytes()), Err(PlainError::Syntax));
    }
}
