//! A back end that is this very proxy (a host or map answer pointing at one of our own
//! listeners) would chain a connection per hop until file descriptors run out. Each back-end
//! connection's local address is remembered while it logs in; a client arriving from one of
//! them is this process talking to itself, and is closed at once.

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
    address: Option<SocketAddr>,
}

impl OwnConnections {
    /// Remember a back-end connection's local address while it logs in.
    pub fn register(&self, local: Option<SocketAddr>) -> Registration<'_> {
        let address = local.map(canonical);
        if let (Some(address), Ok(mut open)) = (address, self.open.lock()) {
            open.insert(address);
        }
        Registration { own: self, address }
    }

    /// Whether a client connecting from `peer` is one of our own back-end connections.
    pub fn is_own(&self, peer: SocketAddr) -> bool {
        self.open
            .lock()
            .is_ok_and(|open| open.contains(&canonical(peer)))
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        if let (Some(address), Ok(mut open)) = (self.address, self.own.open.lock()) {
            open.remove(&address);
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
        {
            let _r = own.register(Some(a));
            assert!(own.is_own(a));
            assert!(own.is_own(mapped));
            assert!(!own.is_own("127.0.0.1:40001".parse().unwrap()));
        }
        assert!(!own.is_own(a));
    }
}
