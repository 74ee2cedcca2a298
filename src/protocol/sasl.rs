//! The SASL mechanisms a proxy can take from a client: those that carry the password itself,
//! PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login, what many Outlook versions use). The
//! back end is then logged in to with PLAIN (or its LOGIN command), whichever the client used.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{Bearer, Credentials};

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
        user_bytes: None,
        secret: passwd.to_vec().into(),
        bearer: None,
    })
}

/// A mechanism a client may choose before login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    /// RFC 7628: passed to the back end unchanged.
    OAuthBearer,
    /// Google's form: passed to the back end unchanged.
    XOAuth2,
}

impl Mechanism {
    /// The mechanism a client named (any case); `None` for the ones a proxy cannot take.
    pub fn named(name: &[u8]) -> Option<Mechanism> {
        [
            Mechanism::Plain,
            Mechanism::Login,
            Mechanism::OAuthBearer,
            Mechanism::XOAuth2,
        ]
        .into_iter()
        .find(|m| name.eq_ignore_ascii_case(m.name().as_bytes()))
    }

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }
}

/// The user and the token of an OAUTHBEARER (`n,a=user,^Aauth=Bearer token^A^A`) or XOAUTH2
/// (`user=user^Aauth=Bearer token^A^A`) response; `None` when either is missing.
pub fn bearer_parts(mechanism: Mechanism, raw: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(raw).ok()?;
    let mut fields = text.split('\u{1}');
    let user = match mechanism {
        Mechanism::OAuthBearer => {
            // The GS2 header: flag, then `a=` authzid (with `=2C` for `,` and `=3D` for `=`).
            let header = fields.next()?;
            let authzid = header.split(',').find_map(|p| p.strip_prefix("a="))?;
            authzid.replace("=2C", ",").replace("=3D", "=")
        }
        _ => {
            let first = fields.next()?;
            first.strip_prefix("user=")?.to_string()
        }
    };
    let token = fields.find_map(|f| {
        let (key, value) = f.split_once('=')?;
        let value = key.eq_ignore_ascii_case("auth").then_some(value)?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("Bearer")
            .then(|| token.trim().as_bytes().to_vec())
    })?;
    (!user.is_empty() && !token.is_empty()).then_some((user, token))
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
    /// The whole OAUTHBEARER or XOAUTH2 message.
    Bearer(Mechanism),
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
            bearer => (
                Exchange {
                    step: Step::Bearer(bearer),
                },
                "",
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
            Step::Bearer(mechanism) => {
                let Ok(raw) = STANDARD.decode(b64) else {
                    return Next::Failed(PlainError::Base64);
                };
                match bearer_parts(mechanism, &raw) {
                    Some((user, token)) => Next::Login(Credentials {
                        user,
                        user_bytes: None,
                        secret: token.into(),
                        bearer: Some(Bearer {
                            mechanism,
                            response: raw.into(),
                        }),
                    }),
                    None => Next::Failed(PlainError::Syntax),
                }
            }
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
                    user_bytes: None,
                    secret: password.into(),
                    bearer: None,
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

/// What the back end is sent to log in with SASL: the mechanism and its base64 response (the
/// client's own for a bearer token, else PLAIN with an empty authorisation identity).
pub fn initial_response(creds: &Credentials) -> (&'static str, String) {
    match &creds.bearer {
        Some(bearer) => (
            bearer.mechanism.name(),
            STANDARD.encode(bearer.response.expose()),
        ),
        None => ("PLAIN", encode_plain(creds)),
    }
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
            user_bytes: None,
            secret: secret.as_bytes().to_vec().into(),
            bearer: None,
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
    fn bearer_responses_give_the_user_and_the_token_and_are_kept_whole() {
        let raw = b"n,a=alice@example.org,\x01host=mail\x01port=143\x01auth=Bearer tok3n\x01\x01";
        assert_eq!(
            bearer_parts(Mechanism::OAuthBearer, raw),
            Some(("alice@example.org".into(), b"tok3n".to_vec()))
        );
        let raw = b"user=bob\x01auth=Bearer ya29.x\x01\x01";
        assert_eq!(
            bearer_parts(Mechanism::XOAuth2, raw),
            Some(("bob".into(), b"ya29.x".to_vec()))
        );
        // No user (OAUTHBEARER without a=), or no token: refused.
        assert_eq!(
            bearer_parts(Mechanism::OAuthBearer, b"n,,\x01auth=Bearer t\x01\x01"),
            None
        );
        assert_eq!(bearer_parts(Mechanism::XOAuth2, b"user=bob\x01\x01"), None);
        let (mut exchange, first) = Exchange::start(Mechanism::XOAuth2);
        assert_eq!(first, "");
        let b64 = STANDARD.encode(b"user=bob\x01auth=Bearer ya29.x\x01\x01");
        let Next::Login(creds) = exchange.respond(b64.as_bytes()) else {
            panic!()
        };
        assert_eq!(creds.user, "bob");
        assert_eq!(initial_response(&creds), ("XOAUTH2", b64));
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
