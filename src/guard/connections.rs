//! Connections open at once per source address before login, and per user at a source and
//! per source in all after: one address (or IPv6 /64) cannot take every slot of the process,
//! however fast it connects, and the users logged in behind one address do not use up its
//! room for new connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// What a connection is counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Count {
    /// Not logged in yet, from this source.
    Waiting(IpAddr),
    /// Logged in, from this source, whoever the user.
    LoggedIn(IpAddr),
    /// Logged in as this user (a keyed hash) from this source.
    User(IpAddr, u64),
}

type Table = Arc<Mutex<HashMap<Count, u32>>>;

#[derive(Default, Clone)]
pub struct OpenConnections {
    /// What is counted → connections open now; an entry goes when its count reaches zero.
    open: Table,
}

/// One open connection, counted once or twice; dropping it frees its places.
pub struct Slot {
    open: Table,
    counts: [Option<Count>; 2],
}

impl OpenConnections {
    /// A slot counted under each of `counts` (with its limit, 0: none), all or nothing; `Err`
    /// with how many the first full one already has.
    pub fn admit(&self, counts: &[(Count, u32)]) -> Result<Slot, u32> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for (count, limit) in counts {
            let now = open.get(count).copied().unwrap_or(0);
            if *limit > 0 && now >= *limit {
                return Err(now);
            }
        }
        let mut kept = [None, None];
        for (place, (count, _)) in kept.iter_mut().zip(counts) {
            *open.entry(*count).or_insert(0) += 1;
            *place = Some(*count);
        }
        Ok(Slot {
            open: self.open.clone(),
            counts: kept,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for count in self.counts.iter().flatten() {
            if let Some(n) = open.get_mut(count) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_source_and_freed_on_drop() {
        let open = OpenConnections::default();
        let a = Count::Waiting("192.0.2.1".parse().unwrap());
        let b = Count::Waiting("192.0.2.2".parse().unwrap());
        let first = open.admit(&[(a, 2)]).unwrap();
        let _second = open.admit(&[(a, 2)]).unwrap();
        assert_eq!(open.admit(&[(a, 2)]).err(), Some(2));
        assert!(open.admit(&[(b, 2)]).is_ok());
        drop(first);
        let _third = open.admit(&[(a, 2)]).unwrap();
        drop(_third);
        drop(_second);
        assert!(open.open.lock().unwrap().is_empty());
    }

    #[test]
    fn a_slot_counted_twice_takes_both_places_or_none() {
        let open = OpenConnections::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let (all, user) = (Count::LoggedIn(ip), Count::User(ip, 7));
        let _one = open.admit(&[(user, 1), (all, 3)]).unwrap();
        assert_eq!(open.admit(&[(user, 1), (all, 3)]).err(), Some(1));
        let _other = open.admit(&[(Count::User(ip, 8), 1), (all, 3)]).unwrap();
        assert_eq!(
            open.open.lock().unwrap()[&all],
            2,
            "the refused one took nothing"
        );
    }
}
