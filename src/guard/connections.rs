//! Connections open at once per source address before login, and per user at a source after:
//! one address (or IPv6 /64) cannot take every slot of the process, however fast it connects,
//! and the users logged in behind one address do not use up its room for new connections.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Key;

#[derive(Default, Clone)]
pub struct OpenConnections {
    /// Source → connections open now; an entry goes when its count reaches zero.
    open: Arc<Mutex<HashMap<Key, u32>>>,
}

/// One open connection; dropping it frees the slot.
pub struct Slot {
    open: Arc<Mutex<HashMap<Key, u32>>>,
    source: Key,
}

impl OpenConnections {
    /// A slot for one more connection from `source`, or how many it already has.
    pub fn admit(&self, source: Key, limit: u32) -> Result<Slot, u32> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(source).or_insert(0);
        if *count >= limit {
            return Err(*count);
        }
        *count += 1;
        Ok(Slot {
            open: self.open.clone(),
            source,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.source);
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
        let key = |s: &str| Key {
            source: s.parse().unwrap(),
            user: None,
        };
        let (a, b) = (key("192.0.2.1"), key("192.0.2.2"));
        let first = open.admit(a, 2).unwrap();
        let _second = open.admit(a, 2).unwrap();
        assert_eq!(open.admit(a, 2).err(), Some(2));
        assert!(open.admit(b, 2).is_ok());
        drop(first);
        let _third = open.admit(a, 2).unwrap();
        drop(_third);
        drop(_second);
        assert!(open.open.lock().unwrap().is_empty());
    }
}
