//! Who holds the admin endpoint's connections. A connection costs nothing to open and proves
//! nothing until its request's headers are in and its token checked; until then it *waits*.
//! Waiting connections are bounded three ways, so that idle ones cannot keep an admin out:
//! each is closed once the header time is over; one address holds at most a few (its own
//! oldest makes room for its newest, so one address cannot touch anyone else's); and together
//! they hold at most part of the slots (the oldest makes room for a newcomer, so many
//! addresses cannot lock the endpoint either: an admin's request, sent as it connects, is in
//! and checked long before the connections that follow it could push it out). The last slots
//! are only ever held by requests that were let in.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// Connections served at once; past this, and with none waiting to make room, a newcomer is
/// answered 503.
pub const MAX_CONNECTIONS: usize = 16;
/// Connections whose request has not been let in yet: the rest is kept for those that were.
pub const MAX_WAITING: usize = 12;
/// Waiting connections from one address.
pub const MAX_WAITING_PER_PEER: usize = 4;

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
    peer: IpAddr,
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
        let mut table = self.lock();
        let from_peer = table.waiting.iter().filter(|w| w.peer == peer).count();
        if from_peer >= MAX_WAITING_PER_PEER {
            table.close_oldest(|w| w.peer == peer);
        }
        if table.waiting.len() >= MAX_WAITING
            || table.waiting.len() + table.admitted >= MAX_CONNECTIONS
        {
            table.close_oldest(|_| true);
        }
        if table.waiting.len() + table.admitted >= MAX_CONNECTIONS {
            return None;
        }
        let id = table.next;
        table.next += 1;
        let (close, closed) = oneshot::channel();
        table.waiting.push_back(Waiting { id, peer, close });
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
    fn close_oldest(&mut self, which: impl Fn(&Waiting) -> bool) {
        if let Some(at) = self.waiting.iter().position(which) {
            if let Some(oldest) = self.waiting.remove(at) {
                let _ = oldest.close.send(());
            }
        }
    }
}

impl Slot {
    /// The request is let in (its token checked out): from now on it is neither closed for a
    /// newcomer nor by the header time.
    pub fn admit(&self) {
        let mut table = self.slots.lock();
        if let Some(at) = table.waiting.iter().position(|w| w.id == self.id) {
            // Dropping the sender without sending tells the task nothing: it goes on.
            table.waiting.remove(at);
            table.admitted += 1;
            self.admitted.store(true, Ordering::Relaxed);
        }
    }

    pub fn admitted(&self) -> bool {
        self.admitted.load(Ordering::Relaxed)
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

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn one_address_makes_room_only_from_its_own_connections() {
        let slots = Arc::new(Slots::default());
        let mut other = slots.enter(ip(2)).unwrap();
        let mut held: Vec<_> = (0..MAX_WAITING_PER_PEER)
            .map(|_| slots.enter(ip(1)).unwrap())
            .collect();
        let _newest = slots.enter(ip(1)).unwrap();
        // The address's oldest was told to close; the other address's connection was not.
        assert_eq!(held[0].1.try_recv(), Ok(()));
        assert!(held[1..].iter_mut().all(|(_, c)| c.try_recv().is_err()));
        assert!(other.1.try_recv().is_err());
    }

    #[test]
    fn waiting_connections_keep_room_for_admitted_ones_and_make_room_for_newcomers() {
        let slots = Arc::new(Slots::default());
        let mut waiting: Vec<_> = (0..MAX_WAITING as u8)
            .map(|n| slots.enter(ip(10 + n)).unwrap())
            .collect();
        // Full of waiting connections: a newcomer takes the oldest's place.
        let (admin, _) = slots.enter(ip(1)).unwrap();
        assert_eq!(waiting[0].1.try_recv(), Ok(()));
        admin.admit();
        assert!(admin.admitted());
        // Admitted ones fill the slots the waiting may not take; then nothing is closed for
        // a newcomer, who is refused.
        let admitted: Vec<_> = (0..MAX_CONNECTIONS)
            .filter_map(|_| {
                let (slot, _) = slots.enter(ip(1))?;
                slot.admit();
                Some(slot)
            })
            .collect();
        assert_eq!(admitted.len(), MAX_CONNECTIONS - 1);
        assert!(slots.enter(ip(3)).is_none());
        drop(admitted);
        drop(waiting);
        assert!(slots.enter(ip(3)).is_some());
        drop(admin);
        let table = slots.lock();
        assert_eq!((table.waiting.len(), table.admitted), (0, 0));
    }
}
