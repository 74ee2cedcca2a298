//! Connections to back ends, and the local address each comes from. Logins, the capability
//! probe and `check --probe` connect here (and so should a pool's health checks: this module
//! imports nothing of the crate, so a map may use it), so that they all leave from the same
//! addresses.
//!
//! The kernel has some 28,000 ephemeral ports for one source address; several sources
//! (`source = [...]`, Dovecot's `login_source_ips`) are taken in turn, so that connections
//! spread evenly over them. Without a source of the target's family the socket is bound to
//! the wildcard address and the kernel picks the source, as without sources.
//!
//! `IP_BIND_ADDRESS_NO_PORT` is not set: neither tokio nor socket2 offer it, and setting it
//! would take unsafe code or another crate. The kernel therefore picks the port when the
//! socket is bound, from the ports free on that address towards any server: each source gives
//! some 28,000 connections to all back ends together, not to each one. It also means every
//! socket has its port before it connects, which the loop guard relies on.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{lookup_host, TcpSocket, TcpStream};

/// The local addresses connections come from, one list per family, each taken in turn.
#[derive(Debug, Default)]
pub struct Sources {
    v4: RoundRobin,
    v6: RoundRobin,
}

/// Addresses taken in turn; the turn is shared by every connection of the listener.
#[derive(Debug, Default)]
struct RoundRobin {
    addresses: Vec<IpAddr>,
    next: AtomicUsize,
}

/// A source address that cannot be bound (not configured on this host: `EADDRNOTAVAIL`).
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the source address {address}: {cause}")]
pub struct SourceUnavailable {
    pub address: IpAddr,
    #[source]
    pub cause: io::Error,
}

impl RoundRobin {
    fn take(&self) -> Option<IpAddr> {
        if self.addresses.is_empty() {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.addresses[turn % self.addresses.len()])
    }
}

impl Sources {
    /// `addresses` of both families, in the order they are to be taken.
    pub fn new(addresses: &[IpAddr]) -> Sources {
        let family = |v4: bool| RoundRobin {
            addresses: addresses
                .iter()
                .copied()
                .filter(|a| a.is_ipv4() == v4)
                .collect(),
            next: AtomicUsize::new(0),
        };
        Sources {
            v4: family(true),
            v6: family(false),
        }
    }

    /// The source for the next connection to `target`: the next one of its family, or `None`
    /// (the kernel chooses) when there is none of that family.
    pub fn choose(&self, target: SocketAddr) -> Option<IpAddr> {
        match target {
            SocketAddr::V4(_) => self.v4.take(),
            SocketAddr::V6(_) => self.v6.take(),
        }
    }

    /// A socket of `target`'s family, bound to the next source (or the wildcard address),
    /// ready to connect.
    pub fn socket_for(&self, target: SocketAddr, keepalive: bool) -> io::Result<TcpSocket> {
        let (socket, wildcard): (_, IpAddr) = match target {
            SocketAddr::V4(_) => (TcpSocket::new_v4()?, Ipv4Addr::UNSPECIFIED.into()),
            SocketAddr::V6(_) => (TcpSocket::new_v6()?, Ipv6Addr::UNSPECIFIED.into()),
        };
        match self.choose(target) {
            None => socket.bind(SocketAddr::new(wildcard, 0))?,
            Some(address) => socket.bind(SocketAddr::new(address, 0)).map_err(|cause| {
                io::Error::new(cause.kind(), SourceUnavailable { address, cause })
            })?,
        }
        if keepalive {
            socket.set_keepalive(true)?;
        }
        Ok(socket)
    }

    /// Connect to `host`'s addresses in turn until one answers. `bound` is called with each
    /// bound socket before it connects (the loop guard registers it); what it returns for the
    /// connection that succeeds comes back with it.
    pub async fn connect<T>(
        &self,
        host: &str,
        port: u16,
        keepalive: bool,
        mut bound: impl FnMut(&TcpSocket, SocketAddr) -> T,
    ) -> io::Result<(TcpStream, T)> {
        let mut last = io::Error::other("the name has no address");
        for target in lookup_host((host, port)).await? {
            // A family this host cannot use (IPv6 disabled, and "localhost" resolving to ::1
            // first), or a source it does not have, fails here: the next address is tried, as
            // after a refused connect.
            let socket = match self.socket_for(target, keepalive) {
                Ok(socket) => socket,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let kept = bound(&socket, target);
            match socket.connect(target).await {
                Ok(tcp) => return Ok((tcp, kept)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn to(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn sources_are_taken_in_turn_within_the_targets_family() {
        let sources = Sources::new(&[ip("10.0.1.1"), ip("2001:db8::1"), ip("10.0.1.2")]);
        let v4 = to("192.0.2.1:143");
        let v6 = to("[2001:db8::10]:143");
        let chosen: Vec<_> = [v4, v6, v4, v6, v4, v4]
            .into_iter()
            .map(|target| sources.choose(target))
            .collect();
        // IPv6 turns do not skip an IPv4 source: each family alternates evenly by itself.
        assert_eq!(
            chosen,
            [
                Some(ip("10.0.1.1")),
                Some(ip("2001:db8::1")),
                Some(ip("10.0.1.2")),
                Some(ip("2001:db8::1")),
                Some(ip("10.0.1.1")),
                Some(ip("10.0.1.2")),
            ]
        );
    }

    #[test]
    fn without_a_source_of_the_targets_family_the_kernel_chooses() {
        let only_v4 = Sources::new(&[ip("10.0.1.1")]);
        assert_eq!(only_v4.choose(to("[2001:db8::10]:143")), None);
        assert_eq!(Sources::default().choose(to("192.0.2.1:143")), None);
        assert_eq!(Sources::new(&[]).choose(to("192.0.2.1:143")), None);
    }

    #[test]
    fn a_socket_is_bound_to_its_source_or_to_the_wildcard() {
        let sources = Sources::new(&[ip("127.0.0.2"), ip("127.0.0.3")]);
        let target = to("127.0.0.1:143");
        let first = sources.socket_for(target, false).unwrap();
        let second = sources.socket_for(target, true).unwrap();
        assert_eq!(first.local_addr().unwrap().ip(), ip("127.0.0.2"));
        assert_eq!(second.local_addr().unwrap().ip(), ip("127.0.0.3"));
        assert!(second.keepalive().unwrap());
        // Bound now, not at connect: the loop guard knows it by its port from here on.
        assert_ne!(first.local_addr().unwrap().port(), 0);
        let wildcard = Sources::default().socket_for(target, false).unwrap();
        assert!(wildcard.local_addr().unwrap().ip().is_unspecified());
    }

    #[test]
    fn a_source_this_host_does_not_have_is_named_in_the_error() {
        let sources = Sources::new(&[ip("192.0.2.1")]);
        let e = sources.socket_for(to("127.0.0.1:143"), false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable);
        let said = e.to_string();
        assert!(
            said.starts_with("cannot bind the source address 192.0.2.1: "),
            "{said}"
        );
    }
}
