//! SASL PLAIN (RFC 4616), the one mechanism a proxy can forward: it carries the password itself.

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
