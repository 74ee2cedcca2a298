//! A back end that is this very proxy (a host or map answer pointing at one of our own
//! listeners) would chain a connection per hop until file descriptors run out. Each back-end
//! connection's local address and the address it goes to are remembered while it logs in,
//! from before it connects; a client arriving from one of them at that very address is this
//! process talking to itself, and is closed at once. A socket bound to the wildcard address
//! is known by its port, and matches a client from that port on the same host. The address
//! reached must match too: Linux lets connections to different places share a local port, so
//! a port alone would close innocent local clients (a webmail on the same host, a benchmark
//! from several loopback addresses) whose port happens to be one a back-end connection uses.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;

#[derive(Default)]
pub struct OwnConnections {
    /// (local address, address connected to) of back-end connections still logging in.
    open: Mutex<HashSet<(SocketAddr, SocketAddr)>>,
}

/// Keeps one connection's addresses registered until dropped.
pub struct Registration<'a> {
    own: &'a OwnConnections,
    /// Where the connection goes.
    remote: SocketAddr,
    addresses: Vec<(SocketAddr, SocketAddr)>,
}

impl OwnConnections {
    /// Remember a back-end connection to `remote` by its local address while it logs in.
    pub fn register(&self, local: Option<SocketAddr>, remote: SocketAddr) -> Registration<'_> {
        Registration {
            own: self,
            remote: canonical(remote),
            addresses: Vec::new(),
        }
        .and(local)
    }

    /// Whether a client connecting from `peer` to `local` is one of our own back-end
    /// connections.
    pub fn is_own(&self, peer: SocketAddr, local: SocketAddr) -> bool {
        let (peer, local) = (canonical(peer), canonical(local));
        let wildcard = SocketAddr::new(
            match peer {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            },
            peer.port(),
        );
        self.open.lock().is_ok_and(|open| {
            // From the address it reached, or loopback to loopback (127.0.0.2 is reached
            // from 127.0.0.1).
            let same_host =
                peer.ip() == local.ip() || (peer.ip().is_loopback() && local.ip().is_loopback());
            open.contains(&(peer, local)) || (same_host && open.contains(&(wildcard, local)))
        })
    }
}

impl Registration<'_> {
    /// Remember one more address of the same connection.
    pub fn and(mut self, local: Option<SocketAddr>) -> Self {
        if let (Some(address), Ok(mut open)) = (local.map(canonical), self.own.open.lock()) {
            open.insert((address, self.remote));
            self.addresses.push((address, self.remote));
        }
        self
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let Ok(mut open) = self.own.open.lock() {
            for address in &self.addresses {
                open.remove(address);
            }
        }
    }
}

fn canonical(address: SocketAddr) -> SocketAddr {
    SocketAddr::new(address.ip().to_canonical(), address.port())
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

    /// Linux lets a connection elsewhere share a back-end connection's local port: a local
    /// client with that port, reaching another of our listeners (or the same one from another
    /// loopback address while the back end is elsewhere), is not us.
    #[test]
    fn a_shared_port_to_another_address_is_not_ours() {
        let own = OwnConnections::default();
        let backend: SocketAddr = "127.0.0.1:1143".parse().unwrap();
        let listener: SocketAddr = "127.0.0.1:993".parse().unwrap();
        let _r = own
            .register(Some("0.0.0.0:40100".parse().unwrap()), backend)
            .and(Some("127.0.0.1:40100".parse().unwrap()));
        assert!(!own.is_own("127.0.0.1:40100".parse().unwrap(), listener));
        assert!(!own.is_own("127.0.0.8:40100".parse().unwrap(), listener));
        // The loop itself is still seen: the back end is one of our listeners.
        assert!(own.is_own("127.0.0.1:40100".parse().unwrap(), backend));
    }
}
