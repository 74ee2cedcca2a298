//! Who holds the admin endpoint's connections. A connection costs nothing to open and proves
//! nothing until its request's headers are in and its token checked; until then it *waits*.
//! Waiting connections are bounded three ways, so that idle ones cannot keep an admin out:
//! each is closed once the header time is over; one network (an IPv4 /24, an IPv6 /64, and
//! all of loopback as one, which every local account shares) holds at most a few, its own
//! oldest making room for its newest; and together they hold at most part of the slots, the
//! oldest making room for a newcomer. A connection younger than [`PROTECTED_FOR`] is never
//! pushed out (the newcomer is refused instead): an admin's request, sent as it connects, is
//! in and checked well within that time, however fast others connect. The last slots are
//! only ever held by requests that were let in.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Connections served at once; past this, and with none waiting to make room, a newcomer is
/// answered 503.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections whose request has not been let in yet: the rest is kept for those that were.
pub const MAX_WAITING: usize = 12;
/// Waiting connections from one network.
pub const MAX_WAITING_PER_PEER: usize = 4;
/// How long a new connection is safe from being pushed out for a newcomer.
pub const PROTECTED_FOR: Duration = Duration::from_secs(1);

/// The endpoint's connections.
#[derive(Default)]
pub struct Slots {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Numbers the connections, so that one can find itself in `waiting`.
    next: u64,
    /// The connections whose request has not been let in, oldest first.
    waiting: VecDeque<Waiting>,
    /// How many were let in and are still open.
    admitted: usize,
}

struct Waiting {
    id: u64,
    /// The network it came from (see [`network`]).
    peer: IpAddr,
    since: Instant,
    /// Sent to when a newcomer needs the room: the connection's task then ends it.
    close: oneshot::Sender<()>,
}

/// One connection's hold on a slot; dropping it gives the slot back.
pub struct Slot {
    id: u64,
    slots: Arc<Slots>,
    admitted: AtomicBool,
}

impl Slots {
    /// A slot for a connection from `peer`, after closing a waiting one if that is what makes
    /// room; `None` when every slot is held by a request that was let in. The receiver hears
    /// when the connection is to be closed for a newcomer.
    pub fn enter(self: &Arc<Self>, peer: IpAddr) -> Option<(Arc<Slot>, oneshot::Receiver<()>)> {
        self.enter_at(peer, Instant::now())
    }

    fn enter_at(
        self: &Arc<Self>,
        peer: IpAddr,
        now: Instant,
    ) -> Option<(Arc<Slot>, oneshot::Receiver<()>)> {
        let peer = network(peer);
        let mut table = self.lock();
        let from_peer = table.waiting.iter().filter(|w| w.peer == peer).count();
        if from_peer >= MAX_WAITING_PER_PEER && !table.close_oldest(now, |w| w.peer == peer) {
            return None;
        }
        let full = |t: &Table| {
            t.waiting.len() >= MAX_WAITING || t.waiting.len() + t.admitted >= MAX_CONNECTIONS
        };
        if full(&table) && !table.close_oldest(now, |_| true) {
            return None;
        }
        if table.waiting.len() + table.admitted >= MAX_CONNECTIONS {
            return None;
        }
        let id = table.next;
        table.next += 1;
        let (close, closed) = oneshot::channel();
        table.waiting.push_back(Waiting {
            id,
            peer,
            since: now,
            close,
        });
        let slot = Slot {
            id,
            slots: self.clone(),
            admitted: AtomicBool::new(false),
        };
        Some((Arc::new(slot), closed))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent whatever panicked while holding it: counts and a queue.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Table {
    /// Close the oldest waiting connection `which` picks, unless it is still protected;
    /// false when none could be closed.
    fn close_oldest(&mut self, now: Instant, which: impl Fn(&Waiting) -> bool) -> bool {
        let Some(at) = self.waiting.iter().position(which) else {
            return false;
        };
        if now.saturating_duration_since(self.waiting[at].since) < PROTECTED_FOR {
            return false;
        }
        if let Some(oldest) = self.waiting.remove(at) {
            let _ = oldest.close.send(());
        }
        true
    }
}

impl Slot {
    /// The request is let in (its token checked out): from now on it is neither closed for a
    /// newcomer nor by the header time. False when it lost its slot meanwhile: it is then not
    /// served (and told so), rather than carried out on a connection about to close.
    pub fn admit(&self) -> bool {
        let mut table = self.slots.lock();
        if let Some(at) = table.waiting.iter().position(|w| w.id == self.id) {
            // Dropping the sender without sending tells the task nothing: it goes on.
            table.waiting.remove(at);
            table.admitted += 1;
            self.admitted.store(true, Ordering::Relaxed);
        }
        self.admitted()
    }

    pub fn admitted(&self) -> bool {
        self.admitted.load(Ordering::Relaxed)
    }
}

/// What waiting connections are counted by: an IPv4 /24, an IPv6 /64, and loopback as one
/// (every local account shares it, whichever of its addresses it binds).
fn network(peer: IpAddr) -> IpAddr {
    let peer = peer.to_canonical();
    if peer.is_loopback() {
        return IpAddr::from([127, 0, 0, 0]);
    }
    match peer {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::from(std::net::Ipv6Addr::from(bits))
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut table = self.slots.lock();
        if self.admitted() {
            table.admitted -= 1;
        } else if let Some(at) = table.waiting.iter().position(|w| w.id == self.id) {
            table.waiting.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_network_makes_room_only_from_its_own_connections_once_they_are_old_enough() {
        let (slots, t0) = (Arc::new(Slots::default()), Instant::now());
        let mut other = slots.enter_at(ip("198.51.100.1"), t0).unwrap();
        let mut held: Vec<_> = (1..=MAX_WAITING_PER_PEER)
            .map(|n| slots.enter_at(ip(&format!("192.0.2.{n}")), t0).unwrap())
            .collect();
        // All still young: the newcomer of that /24 is refused, nobody is closed.
        assert!(slots.enter_at(ip("192.0.2.99"), t0).is_none());
        assert!(held.iter_mut().all(|(_, c)| c.try_recv().is_err()));
        // Later, the network's oldest is told to close; the other network's is not.
        let later = t0 + PROTECTED_FOR;
        let _newest = slots.enter_at(ip("192.0.2.99"), later).unwrap();
        assert_eq!(held[0].1.try_recv(), Ok(()));
        assert!(held[1..].iter_mut().all(|(_, c)| c.try_recv().is_err()));
        assert!(other.1.try_recv().is_err());
    }

    #[test]
    fn loopback_is_one_network() {
        assert_eq!(network(ip("127.0.0.1")), network(ip("127.3.2.1")));
        assert_eq!(network(ip("::1")), network(ip("127.0.0.1")));
        assert_ne!(network(ip("192.0.2.1")), network(ip("192.0.3.1")));
        assert_eq!(network(ip("2001:db8::1")), network(ip("2001:db8::2:1")));
    }

    #[test]
    fn a_request_that_lost_its_slot_is_not_let_in() {
        let (slots, t0) = (Arc::new(Slots::default()), Instant::now());
        let (first, _) = slots.enter_at(ip("192.0.2.1"), t0).unwrap();
        let _others: Vec<_> = (2..=MAX_WAITING_PER_PEER as u8)
            .map(|n| slots.enter_at(ip(&format!("192.0.2.{n}")), t0).unwrap())
            .collect();
        let later = t0 + PROTECTED_FOR;
        let _newcomer = slots.enter_at(ip("192.0.2.50"), later).unwrap();
        assert!(!first.admit(), "let in after its slot was given away");
    }

    #[test]
    fn waiting_connections_keep_room_for_admitted_ones_and_make_room_for_newcomers() {
        let (slots, t0) = (Arc::new(Slots::default()), Instant::now());
        let mut waiting: Vec<_> = (0..MAX_WAITING as u8)
            .map(|n| slots.enter_at(IpAddr::from([10, n, 0, 1]), t0).unwrap())
            .collect();
        let later = t0 + PROTECTED_FOR;
        // Full of waiting connections: a newcomer takes the oldest's place once it may.
        assert!(slots.enter_at(ip("192.0.2.1"), t0).is_none());
        let (admin, _) = slots.enter_at(ip("192.0.2.1"), later).unwrap();
        assert_eq!(waiting[0].1.try_recv(), Ok(()));
        assert!(admin.admit());
        // Admitted ones fill the slots the waiting may not take; then nothing is closed for
        // a newcomer, who is refused.
        let admitted: Vec<_> = (0..MAX_CONNECTIONS)
            .filter_map(|_| {
                let (slot, _) = slots.enter_at(ip("192.0.2.1"), later)?;
                slot.admit();
                Some(slot)
            })
            .collect();
        assert_eq!(admitted.len(), MAX_CONNECTIONS - 1);
        assert!(slots.enter_at(ip("192.0.2.3"), later).is_none());
        drop(admitted);
        drop(waiting);
        assert!(slots.enter_at(ip("192.0.2.3"), later).is_some());
        drop(admin);
        let table = slots.lock();
        assert_eq!((table.waiting.len(), table.admitted), (0, 0));
    }
}
