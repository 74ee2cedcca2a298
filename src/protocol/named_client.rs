//! What a trusted peer in front of us (a webmail host, another proxy) says about the client it
//! speaks for: IMAP `ID` with Dovecot's `x-originating-*` keys, or POP3/ManageSieve `XCLIENT`.
//! Only peers the listener trusts are asked; from anyone else these words mean nothing.

use std::net::IpAddr;

/// The longest session id taken from a peer (Dovecot's `LOGIN_MAX_SESSION_ID_LEN`).
const MAX_SESSION_ID: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedClient {
    pub ip: IpAddr,
    pub port: Option<u16>,
    /// Hops left before a proxy loop is cut; the next hop is told one less.
    pub ttl: Option<u32>,
    /// The peer's id for the session, kept so that one session has one id across hops.
    pub session: Option<String>,
}

impl NamedClient {
    /// From `key value` pairs (IMAP `ID` fields, or `XCLIENT` attributes mapped to Dovecot's
    /// `ID` names): `None` without a valid address. Keys are case-insensitive.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        let (mut ip, mut port, mut ttl, mut session) = (None, None, None, None);
        for (key, value) in pairs {
            match key.to_ascii_lowercase().as_str() {
                "x-originating-ip" | "addr" => ip = value.parse::<IpAddr>().ok(),
                "x-originating-port" | "port" => port = value.parse().ok(),
                "x-proxy-ttl" | "ttl" => ttl = value.parse().ok(),
                "x-session-id" | "session" => session = valid_session(value),
                _ => {}
            }
        }
        Some(NamedClient {
            ip: ip?.to_canonical(),
            port,
            ttl,
            session,
        })
    }

    /// From the attributes of an `XCLIENT` command (`ADDR=192.0.2.7 PORT=51000 …`).
    pub fn from_xclient(attributes: &str) -> Option<Self> {
        NamedClient::from_pairs(
            attributes
                .split_ascii_whitespace()
                .filter_map(|attribute| attribute.split_once('=')),
        )
    }
}

/// A session id is a short token of letters, digits and `+/=_-`; anything else is dropped.
fn valid_session(value: &str) -> Option<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "+/=_-".contains(c);
    (!value.is_empty() && value.len() <= MAX_SESSION_ID && value.chars().all(ok))
        .then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_fields_and_xclient_attributes_name_the_same_client() {
        let from_id = NamedClient::from_pairs([
            ("X-Originating-IP", "192.0.2.7"),
            ("x-originating-port", "51000"),
            ("x-proxy-ttl", "4"),
            ("x-session-id", "abc+/="),
            ("name", "Roundcube"),
        ]);
        let from_xclient =
            NamedClient::from_xclient("ADDR=192.0.2.7 PORT=51000 TTL=4 SESSION=abc+/= X=1");
        assert_eq!(from_id, from_xclient);
        let named = from_id.unwrap();
        assert_eq!(named.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!((named.port, named.ttl), (Some(51000), Some(4)));
        assert_eq!(named.session.as_deref(), Some("abc+/="));
    }

    #[test]
    fn nonsense_is_ignored() {
        assert_eq!(NamedClient::from_xclient("PORT=1 TTL=3"), None);
        assert_eq!(NamedClient::from_xclient("ADDR=not-an-address"), None);
        let named =
            NamedClient::from_xclient("ADDR=::ffff:192.0.2.7 PORT=99999 SESSION=a\"b").unwrap();
        assert_eq!(named.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!((named.port, named.session), (None, None));
    }
}
