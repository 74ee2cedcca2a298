//! Known-good user+address pairs: an address a user logged in from lately. Such a pair is
//! judged on its own record, never on the address's: behind a carrier's NAT or an office's
//! one address, the users who logged in from there before are neither slowed nor banned for
//! the others' failures. Apart from the failure records, so that failing names and sources
//! cannot push them out; only a good login adds one.

use std::net::IpAddr;
use std::time::Duration;

pub struct KnownGood {
    /// (user, source) → (); kept `known_good_for` after the last good login.
    pairs: moka::sync::Cache<(u64, IpAddr), ()>,
    /// Sources with at least one known-good user: a ban of such an address greets the client
    /// and decides at its login, instead of turning it away before the greeting.
    sources: moka::sync::Cache<IpAddr, ()>,
}

impl KnownGood {
    pub fn new(capacity: u64, known_good_for: Duration) -> KnownGood {
        let keep = known_good_for.max(Duration::from_millis(1));
        KnownGood {
            pairs: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(keep)
                .build(),
            sources: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(keep)
                .build(),
        }
    }

    pub fn is_known(&self, user: u64, source: IpAddr) -> bool {
        self.pairs.contains_key(&(user, source))
    }

    pub fn has_users(&self, source: IpAddr) -> bool {
        self.sources.contains_key(&source)
    }

    pub fn remember(&self, user: u64, source: IpAddr) {
        self.pairs.insert((user, source), ());
        self.sources.insert(source, ());
    }

    /// Take over what `previous` knows (a reload).
    pub fn take_over(&self, previous: &KnownGood) {
        for (pair, ()) in previous.pairs.iter() {
            self.pairs.insert(*pair, ());
        }
        for (source, ()) in previous.sources.iter() {
            self.sources.insert(*source, ());
        }
    }
}
