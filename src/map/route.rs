//! What a Perdition-style map answers for a user: `[user<delimiter>]host[:port]`, the syntax of
//! Perdition's popmap, popmap.re, LDAP, SQL and `outgoing_server` values alike.

use crate::protocol::Secret;
pub use crate::value::host_port::split_host_port;

/// One answer of a map, before the listener's defaults (port, TLS) complete it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The name to log in with at the back end, when the answer names one.
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The password to log in with instead of the client's (nginx's `Auth-Pass`).
    pub password: Option<Secret<Vec<u8>>>,
    /// Where a pool placed the user (only a pool's answer has one).
    pub placement: Option<crate::fleet::Placement>,
}

/// Why a map's answer is no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The server part, as [`split_host_port`] says.
    #[error(transparent)]
    Server(#[from] crate::value::host_port::HostPortError),
    #[error("no server in {0:?}")]
    NoServer(String),
    #[error("bad server name in {0:?}")]
    BadServerName(String),
}

/// Read `[user<delimiter>]host[:port]`. The user part ends at the last delimiter (a user name
/// may hold the delimiter itself, a host cannot); an IPv6 host is written in brackets, or bare
/// when no port follows.
pub fn parse_route(value: &str, delimiter: &str) -> Result<Route, RouteError> {
    let value = value.trim();
    let (user, server) = match value.rfind(delimiter).filter(|_| !delimiter.is_empty()) {
        Some(at) => (
            Some(value[..at].to_string()),
            &value[at + delimiter.len()..],
        ),
        None => (None, value),
    };
    let (host, port) = split_host_port(server).map_err(RouteError::Server)?;
    if host.is_empty() {
        return Err(RouteError::NoServer(value.to_string()));
    }
    if host.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(RouteError::BadServerName(value.to_string()));
    }
    Ok(Route {
        user: user.filter(|u| !u.is_empty()),
        host,
        port,
        password: None,
        placement: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(user: Option<&str>, host: &str, port: Option<u16>) -> Route {
        Route {
            user: user.map(str::to_string),
            host: host.into(),
            port,
            password: None,
            placement: None,
        }
    }

    #[test]
    fn perditions_forms() {
        assert_eq!(
            parse_route("localhost", "@"),
            Ok(route(None, "localhost", None))
        );
        assert_eq!(
            parse_route("foo.bar:110", "@"),
            Ok(route(None, "foo.bar", Some(110)))
        );
        assert_eq!(
            parse_route("jane@foo.bar", "@"),
            Ok(route(Some("jane"), "foo.bar", None))
        );
        assert_eq!(
            parse_route("user_x.y.z.de@localhost:143", "@"),
            Ok(route(Some("user_x.y.z.de"), "localhost", Some(143)))
        );
        assert_eq!(
            parse_route("a@b.org@10.0.0.2", "@"),
            Ok(route(Some("a@b.org"), "10.0.0.2", None))
        );
        assert_eq!(
            parse_route("joe%%mail1", "%%"),
            Ok(route(Some("joe"), "mail1", None))
        );
    }

    #[test]
    fn ipv6_servers() {
        assert_eq!(
            parse_route("[2001:db8::2]:993", "@"),
            Ok(route(None, "2001:db8::2", Some(993)))
        );
        assert_eq!(
            parse_route("bob@[::1]", "@"),
            Ok(route(Some("bob"), "::1", None))
        );
        assert_eq!(parse_route("::1", "@"), Ok(route(None, "::1", None)));
    }

    #[test]
    fn nonsense_is_an_error_not_a_route() {
        assert_eq!(parse_route("h:imaps", "@"), Ok(route(None, "h", Some(993))));
        for bad in [
            "",
            "@",
            "host:0",
            "host:99999",
            "host:smtp",
            "[::1",
            "a b",
            "x@",
        ] {
            assert!(parse_route(bad, "@").is_err(), "{bad:?}");
        }
    }
}
