//! Telling the back end who the client is, so that its logs and its per-address auth penalty
//! see the real client rather than the proxy: a PROXY protocol header (v1 or v2) before
//! anything else, or, for IMAP, an `ID` with Dovecot's `x-originating-*` keys before the login
//! (Dovecot honours both only from its `login_trusted_networks` / `haproxy_trusted_networks`).

use std::net::SocketAddr;

use crate::config::ForwardClient;
use crate::map::Connection;
use crate::protocol::Protocol;

/// Dovecot's starting proxy TTL; each hop lowers it, and a loop ends when it reaches zero.
pub const PROXY_TTL: u32 = 5;

/// The PROXY header to write to the back end first, if the listener forwards that way.
pub fn header(forward: ForwardClient, connection: &Connection) -> Option<Vec<u8>> {
    let (source, destination) = (canonical(connection.peer), canonical(connection.local));
    match forward {
        ForwardClient::ProxyV1 => Some(v1(source, destination).into_bytes()),
        ForwardClient::ProxyV2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            same_family(source, destination),
        )
        .build()
        .ok(),
        ForwardClient::None | ForwardClient::Id => None,
    }
}

/// The `ID` fields for an IMAP back end, if the listener forwards that way.
pub fn id_fields(forward: ForwardClient, connection: &Connection) -> Option<Vec<(String, String)>> {
    if forward != ForwardClient::Id || connection.protocol != Protocol::Imap {
        return None;
    }
    let (peer, local) = (canonical(connection.peer), canonical(connection.local));
    Some(vec![
        ("x-originating-ip".into(), peer.ip().to_string()),
        ("x-originating-port".into(), peer.port().to_string()),
        ("x-connected-ip".into(), local.ip().to_string()),
        ("x-connected-port".into(), local.port().to_string()),
        ("x-session-id".into(), connection.session.clone()),
        ("x-proxy-ttl".into(), PROXY_TTL.to_string()),
    ])
}

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// A PROXY header names two addresses of one family; an IPv4 client on an IPv6 socket is
/// written as IPv4-mapped.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let six = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 => v6,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (six(source), six(destination))
    }
}

fn v1(source: SocketAddr, destination: SocketAddr) -> String {
    let (source, destination) = same_family(source, destination);
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::proxy_header;

    fn connection(peer: &str, local: &str) -> Connection {
        Connection {
            protocol: Protocol::Imap,
            peer: peer.parse().unwrap(),
            local: local.parse().unwrap(),
            tls: false,
            session: "s1".into(),
        }
    }

    #[test]
    fn headers_read_back_as_the_client() {
        for forward in [ForwardClient::ProxyV1, ForwardClient::ProxyV2] {
            for (peer, local) in [
                ("192.0.2.7:51000", "198.51.100.1:143"),
                ("[2001:db8::7]:51000", "[2001:db8::1]:143"),
                ("192.0.2.7:51000", "[2001:db8::1]:143"),
            ] {
                let c = connection(peer, local);
                let header = header(forward, &c).unwrap();
                let read = proxy_header::parse(&header).unwrap();
                let source = read.source.unwrap();
                assert_eq!(
                    source.ip().to_canonical(),
                    c.peer.ip(),
                    "{forward:?} {peer}"
                );
                assert_eq!(source.port(), 51000);
            }
        }
        assert_eq!(
            header(ForwardClient::Id, &connection("192.0.2.7:1", "192.0.2.8:2")),
            None
        );
    }

    #[test]
    fn id_fields_are_dovecots() {
        let fields = id_fields(
            ForwardClient::Id,
            &connection("192.0.2.7:51000", "198.51.100.1:143"),
        )
        .unwrap();
        assert_eq!(fields[0], ("x-originating-ip".into(), "192.0.2.7".into()));
        assert!(fields.iter().any(|(k, v)| k == "x-session-id" && v == "s1"));
        assert_eq!(
            id_fields(
                ForwardClient::None,
                &connection("192.0.2.7:1", "192.0.2.8:2")
            ),
            None
        );
    }
}
