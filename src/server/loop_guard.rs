//! A back end that is this very proxy (a host or map answer pointing at one of our own
//! listeners) would chain a connection per hop until file descriptors run out. Each back-end
//! connection's local address is remembered while it logs in, from before it connects; a
//! client arriving from one of them is this process talking to itself, and is closed at once.
//! A socket bound to the wildcard address is known by its port, and matches a client from
//! that port whose address is the one it reached (a host connecting to itself speaks from
//! the address it connects to).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Mutex;

#[derive(Default)]
pub struct OwnConnections {
    /// Local addresses of back-end connections still logging in.
    open: Mutex<HashSet<SocketAddr>>,
}

/// Keeps one address registered until dropped.
pub struct Registration<'a> {
    own: &'a OwnConnections,
    addresses: Vec<SocketAddr>,
}

impl OwnConnections {
    /// Remember a back-end connection's local address while it logs in.
    pub fn register(&self, local: Option<SocketAddr>) -> Registration<'_> {
        Registration {
            own: self,
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
            open.contains(&peer) || (same_host && open.contains(&wildcard))
        })
    }
}

impl Registration<'_> {
    /// Remember one more address of the same connection.
    pub fn and(mut self, local: Option<SocketAddr>) -> Self {
        if let (Some(address), Ok(mut open)) = (local.map(canonical), self.own.open.lock()) {
            open.insert(address);
            self.addresses.push(address);
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
            let _r = own.register(Some(a));
            assert!(own.is_own(a, local));
            assert!(own.is_own(mapped, local));
            assert!(!own.is_own("127.0.0.1:40001".parse().unwrap(), local));
        }
        assert!(!own.is_own(a, local));
        // Bound to the wildcard: the port, from the address it reached.
        let _r = own.register(Some("0.0.0.0:40002".parse().unwrap()));
        assert!(own.is_own("127.0.0.1:40002".parse().unwrap(), local));
        let stranger: SocketAddr = "192.0.2.9:40002".parse().unwrap();
        assert!(!own.is_own(stranger, local));
        let other_loopback: SocketAddr = "127.0.0.2:143".parse().unwrap();
        assert!(own.is_own("127.0.0.1:40002".parse().unwrap(), other_loopback));
    }
}
