//! Telling the back end who the client is, so that its logs and its per-address auth penalty
//! see the real client rather than the proxy: a PROXY protocol header (v1 or v2) before
//! anything else, or in band before the login (IMAP `ID` with Dovecot's `x-originating-*` keys,
//! POP3 and ManageSieve `XCLIENT`, written by each protocol's server side from a
//! [`ClientAddress`]). Dovecot honours them only from its `haproxy_trusted_networks` /
//! `login_trusted_networks`.

use std::net::SocketAddr;

use crate::config::ForwardClient;
use crate::map::Connection;
use crate::protocol::ClientAddress;

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

/// The PROXY header for a connection of the proxy's own, with no client behind it (the
/// capability probe): `LOCAL` / `UNKNOWN`, so the back end keeps the real addresses.
pub fn own_header(forward: ForwardClient) -> Option<Vec<u8>> {
    match forward {
        ForwardClient::ProxyV1 => Some(b"PROXY UNKNOWN\r\n".to_vec()),
        ForwardClient::ProxyV2 => ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .ok(),
        ForwardClient::None | ForwardClient::Id => None,
    }
}

/// The client's address to send in band (IMAP `ID`, POP3 and ManageSieve `XCLIENT`), if the
/// listener forwards that way.
pub fn in_band(forward: ForwardClient, connection: &Connection) -> Option<ClientAddress> {
    (forward == ForwardClient::Id).then(|| ClientAddress {
        peer: canonical(connection.peer),
        local: canonical(connection.local),
        session: connection.session.clone(),
        ttl: connection.proxy_ttl,
    })
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
    use crate::protocol::Protocol;
    use crate::server::proxy_header;

    fn connection(peer: &str, local: &str) -> Connection {
        let (peer, local) = (peer.parse().unwrap(), local.parse().unwrap());
        Connection::new(Protocol::Imap, peer, local, false, "s1".into())
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
        for forward in [ForwardClient::ProxyV1, ForwardClient::ProxyV2] {
            let own = own_header(forward).unwrap();
            assert_eq!(
                proxy_header::parse(&own).unwrap().source,
                None,
                "{forward:?}"
            );
        }
    }

    #[test]
    fn in_band_names_the_client_the_way_dovecot_reads_it() {
        let client = in_band(
            ForwardClient::Id,
            &connection("[::ffff:192.0.2.7]:51000", "198.51.100.1:143"),
        )
        .unwrap();
        let fields = client.id_fields();
        assert_eq!(fields[0], ("x-originating-ip", "192.0.2.7".to_string()));
        assert!(fields
            .iter()
            .any(|(k, v)| *k == "x-session-id" && v == "s1"));
        assert_eq!(
            client.xclient(),
            "XCLIENT ADDR=192.0.2.7 PORT=51000 SESSION=s1 TTL=5\r\n"
        );
        assert_eq!(
            in_band(
                ForwardClient::None,
                &connection("192.0.2.7:1", "192.0.2.8:2")
            ),
            None
        );
    }
}
