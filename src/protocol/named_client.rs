//! What a trusted peer in front of us (a webmail host, another proxy) says about the client it
//! speaks for: IMAP `ID` with Dovecot's `x-originating-*` keys, or POP3/ManageSieve `XCLIENT`.
//! Only peers the listener trusts are asked; from anyone else these words mean nothing.

use std::net::IpAddr;

/// Dovecot's starting proxy TTL; each hop lowers it, and a loop ends when it reaches zero.
pub const PROXY_TTL: u32 = 5;

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

/// The words each way of naming a client uses, in the order ip, port, ttl, session: an `ID`
/// speaks Dovecot's `x-` keys only, `XCLIENT` its attributes only, so that one cannot smuggle
/// the other's words through a hop that passes unknown `ID` fields on.
const ID_KEYS: [&str; 4] = [
    "x-originating-ip",
    "x-originating-port",
    "x-proxy-ttl",
    "x-session-id",
];
const XCLIENT_KEYS: [&str; 4] = ["addr", "port", "ttl", "session"];

impl NamedClient {
    /// From IMAP `ID` fields: `None` without a valid address. Keys are case-insensitive, and
    /// the first of a repeated key counts.
    pub fn from_id<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Self> {
        NamedClient::from_pairs(ID_KEYS, pairs)
    }

    /// From the attributes of an `XCLIENT` command (`ADDR=192.0.2.7 PORT=51000 …`).
    pub fn from_xclient(attributes: &str) -> Option<Self> {
        NamedClient::from_pairs(
            XCLIENT_KEYS,
            attributes
                .split_ascii_whitespace()
                .filter_map(|attribute| attribute.split_once('=')),
        )
    }

    fn from_pairs<'a>(
        keys: [&str; 4],
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<Self> {
        let mut values: [Option<&str>; 4] = [None; 4];
        for (key, value) in pairs {
            let at = keys.iter().position(|k| k.eq_ignore_ascii_case(key));
            if let Some(slot) = at.and_then(|at| values.get_mut(at)) {
                slot.get_or_insert(value);
            }
        }
        let [ip, port, ttl, session] = values;
        Some(NamedClient {
            ip: without_ipv6_tag(ip?).parse::<IpAddr>().ok()?.to_canonical(),
            port: port.and_then(|p| p.parse().ok()),
            ttl: ttl.and_then(|t| t.parse().ok()),
            session: session.and_then(valid_session),
        })
    }
}

/// Postfix's XCLIENT (and nginx's) writes an IPv6 address `IPV6:2001:db8::1`.
fn without_ipv6_tag(addr: &str) -> &str {
    match addr.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPV6:") => &addr[5..],
        _ => addr,
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
    fn postfixs_ipv6_form_names_the_address() {
        let named = NamedClient::from_xclient("ADDR=IPV6:2001:db8::1 PORT=4000").unwrap();
        assert_eq!(named.ip, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert!(NamedClient::from_xclient("ADDR=IPV6:").is_none());
    }

    #[test]
    fn id_fields_and_xclient_attributes_name_the_same_client() {
        let from_id = NamedClient::from_id([
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
    fn each_way_speaks_only_its_own_words_and_the_first_value_counts() {
        // A client's "addr"/"ttl" passed on inside an ID by a trusted hop name nothing.
        let smuggled = NamedClient::from_id([
            ("x-originating-ip", "192.0.2.7"),
            ("x-proxy-ttl", "4"),
            ("addr", "203.0.113.66"),
            ("ttl", "4000000000"),
            ("x-originating-ip", "203.0.113.67"),
            ("x-proxy-ttl", "4000000000"),
        ])
        .unwrap();
        assert_eq!(smuggled.ip, "192.0.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(smuggled.ttl, Some(4));
        assert_eq!(
            NamedClient::from_xclient("X-ORIGINATING-IP=192.0.2.7"),
            None
        );
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
