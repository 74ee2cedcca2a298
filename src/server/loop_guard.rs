//! A back end that is this very proxy (a host or map answer pointing at one of our own
//! listeners) would chain a connection per hop until file descriptors run out. Each back-end
//! connection is remembered while it logs in, from before it connects; a client arriving from
//! it is this process talking to itself, and is closed at once.
//!
//! Once connected, a back-end connection is known by its exact local address: no other socket
//! can have it (a `connect` never picks a port a `bind` took, and a `bind` to the same address
//! and port conflicts), and it holds through a NAT redirect to one of our ports. Before that,
//! bound to the wildcard address, it is known by its port and the address it goes to: a client
//! from that port on the same host, reaching that address. The port alone is not enough: once
//! the socket has its source address, Linux lets a client bound to another local address take
//! the same port (a benchmark from several loopback addresses, a local webmail), and closing
//! those as loops was a bug.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

#[derive(Default)]
pub struct OwnConnections {
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    /// Local addresses of connected back-end connections still logging in.
    exact: HashSet<SocketAddr>,
    /// (port, address connected to) of those bound to the wildcard address, not yet connected.
    port_to: HashSet<(u16, SocketAddr)>,
}

#[derive(Clone, Copy)]
enum Key {
    Exact(SocketAddr),
    PortTo(u16, SocketAddr),
}

/// Keeps one connection's addresses registered until dropped.
pub struct Registration<'a> {
    own: &'a OwnConnections,
    /// Where the connection goes.
    remote: SocketAddr,
    keys: Vec<Key>,
}

impl OwnConnections {
    /// Remember a back-end connection to `remote` by its local address while it logs in.
    pub fn register(&self, local: Option<SocketAddr>, remote: SocketAddr) -> Registration<'_> {
        Registration {
            own: self,
            remote: reached(remote),
            keys: Vec::new(),
        }
        .and(local)
    }

    /// Whether a client connecting from `peer` to `local` is one of our own back-end
    /// connections.
    pub fn is_own(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        let (peer, local) = (canonical(peer), canonical(local));
        // From the address it reached, or loopback to loopback (127.0.0.2 is reached from
        // 127.0.0.1).
        let same_host =
            peer.ip() == local.ip() || (peer.ip().is_loopback() && local.ip().is_loopback());
        self.open.lock().is_ok_and(|open| {
            open.exact.contains(&peer)
                || (same_host && open.port_to.contains(&(peer.port(), local)))
        })
    }
}

impl Registration<'_> {
    /// Remember one more address of the same connection: the wildcard it was bound to, or the
    /// address it has once connected.
    pub fn and(mut self, local: Option<SocketAddr>) -> Self {
        let Some(local) = local.map(canonical) else {
            return self;
        };
        let key = if local.ip().is_unspecified() {
            Key::PortTo(local.port(), self.remote)
        } else {
            Key::Exact(local)
        };
        if let Ok(mut open) = self.own.open.lock() {
            match key {
                Key::Exact(address) => open.exact.insert(address),
                Key::PortTo(port, remote) => open.port_to.insert((port, remote)),
            };
            self.keys.push(key);
        }
        self
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.own.open.lock() {
            for key in &self.keys {
                match *key {
                    Key::Exact(address) => open.exact.remove(&address),
                    Key::PortTo(port, remote) => open.port_to.remove(&(port, remote)),
                };
            }
        }
    }
}

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
}

/// The address a connection to `remote` arrives at: connecting to 0.0.0.0 or :: reaches the
/// loopback address.
fn reached(remote: SocketAddr) -> SocketAddr {
    let remote = canonical(remote);
    let ip = match remote.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, remote.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_ours_while_registered() {
        let own = OwnConnections::default();
        let a: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:143".parse().unwrap();
        {
            let _r = own.register(Some(a), local);
            assert!(own.is_own(a, local));
            assert!(own.is_own(mapped, local));
            assert!(!own.is_own("127.0.0.1:40001".parse().unwrap(), local));
        }
        assert!(!own.is_own(a, local));
        // Bound to the wildcard: the port, from the address it reached.
        let _r = own.register(Some("0.0.0.0:40002".parse().unwrap()), local);
        assert!(own.is_own("127.0.0.1:40002".parse().unwrap(), local));
        let stranger: SocketAddr = "192.0.2.9:40002".parse().unwrap();
        assert!(!own.is_own(stranger, local));
        // Another loopback address reached: a connection that went to 127.0.0.2 speaks from
        // 127.0.0.1 (the route's address), and is still ours.
        let other_loopback: SocketAddr = "127.0.0.2:143".parse().unwrap();
        let _r2 = own.register(Some("0.0.0.0:40003".parse().unwrap()), other_loopback);
        assert!(own.is_own("127.0.0.1:40003".parse().unwrap(), other_loopback));
    }

    /// Once our socket has its source address, Linux lets a client bound to another local
    /// address take the same port: reaching another of our listeners, it is not us.
    #[test]
    fn a_shared_port_to_another_address_is_not_ours() {
        let own = OwnConnections::default();
        let backend: SocketAddr = "127.0.0.1:1143".parse().unwrap();
        let listener: SocketAddr = "127.0.0.1:993".parse().unwrap();
        let _r = own.register(Some("0.0.0.0:40100".parse().unwrap()), backend);
        assert!(!own.is_own("127.0.0.8:40100".parse().unwrap(), listener));
        assert!(!own.is_own("127.0.0.1:40100".parse().unwrap(), listener));
        // The loop itself is still seen: the back end is one of our listeners.
        assert!(own.is_own("127.0.0.1:40100".parse().unwrap(), backend));
        assert!(own.is_own("127.0.0.8:40100".parse().unwrap(), backend));
    }

    /// A back end at 0.0.0.0 or :: is this host's loopback address.
    #[test]
    fn a_back_end_at_the_wildcard_address_is_a_loop() {
        let own = OwnConnections::default();
        let _r = own.register(
            Some("0.0.0.0:40200".parse().unwrap()),
            "0.0.0.0:143".parse().unwrap(),
        );
        assert!(own.is_own(
            "127.0.0.1:40200".parse().unwrap(),
            "127.0.0.1:143".parse().unwrap()
        ));
        let _r6 = own.register(
            Some("[::]:40201".parse().unwrap()),
            "[::]:143".parse().unwrap(),
        );
        assert!(own.is_own("[::1]:40201".parse().unwrap(), "[::1]:143".parse().unwrap()));
    }

    /// An IPv6 socket to an IPv4-mapped address: the client shows up as plain IPv4.
    #[test]
    fn a_mapped_back_end_address_is_matched_before_the_connect_returns() {
        let own = OwnConnections::default();
        let _r = own.register(
            Some("[::]:40300".parse().unwrap()),
            "[::ffff:127.0.0.1]:143".parse().unwrap(),
        );
        assert!(own.is_own(
            "127.0.0.1:40300".parse().unwrap(),
            "127.0.0.1:143".parse().unwrap()
        ));
    }

    /// Connected, the exact local address is enough, wherever the client arrives (a NAT
    /// redirect from the back end's port to one of ours).
    #[test]
    fn a_connected_back_end_connection_is_known_wherever_it_arrives() {
        let own = OwnConnections::default();
        let _r = own
            .register(
                Some("0.0.0.0:40400".parse().unwrap()),
                "127.0.0.1:10143".parse().unwrap(),
            )
            .and(Some("127.0.0.1:40400".parse().unwrap()));
        assert!(own.is_own(
            "127.0.0.1:40400".parse().unwrap(),
            "127.0.0.1:143".parse().unwrap()
        ));
    }
}
