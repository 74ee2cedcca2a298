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

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;

#[derive(Default)]
pub struct OwnConnections {
    open: Mutex<Open>,
}

/// Each key with the number of registrations holding it: two connections may share one for a
/// moment (a port freed and taken again), and the first to go must not take the other's.
#[derive(Default)]
struct Open(HashMap<Key, u32>);

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// The local address of a connected back-end connection still logging in.
    Exact(SocketAddr),
    /// The port and the address connected to of one bound to the wildcard, not yet connected.
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
        let open = self.lock();
        open.0.contains_key(&Key::Exact(peer))
            || (same_host && open.0.contains_key(&Key::PortTo(peer.port(), local)))
    }

    /// The table even after a panic elsewhere: a guard that stopped guarding would let a loop
    /// run until the descriptors are gone.
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        *self.own.lock().0.entry(key).or_insert(0) += 1;
        self.keys.push(key);
        self
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut open = self.own.lock();
        for key in &self.keys {
            if let Some(count) = open.0.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    open.0.remove(key);
                }
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

    /// Two registrations of one key: the first to go leaves the other's in place.
    #[test]
    fn a_shared_key_stays_until_its_last_holder_goes() {
        let own = OwnConnections::default();
        let local: SocketAddr = "127.0.0.1:40500".parse().unwrap();
        let backend: SocketAddr = "127.0.0.1:143".parse().unwrap();
        let first = own.register(Some(local), backend);
        let second = own.register(Some(local), backend);
        drop(first);
        assert!(own.is_own(local, backend));
        drop(second);
        assert!(!own.is_own(local, backend));
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
