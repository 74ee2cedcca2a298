//! The guard's bans, apart from its failure records and bounded on their own: a flood of new
//! sources or failing user names pushes failure records out, never an unexpired ban. When
//! the table is full the bans are widened instead: the banned sources of the network with
//! the most of them (an IPv6 /48, an IPv4 /24) become one ban of that network, which frees
//! their entries. When no network holds two, the new ban is not kept here: the source's own
//! failure record still holds it, for as long as that record is remembered.
//! Pure, like the records: time comes in as an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// How far a ban widens when the table is full: IPv6 sources are /64s already, and a site is
/// a /48; IPv4 sources are single addresses, and a neighbourhood is a /24.
const WIDE_V6: u8 = 48;
const WIDE_V4: u8 = 24;

pub struct Bans {
    /// Banned network (a source's /64 or /32, or a widened /48 or /24) → until when.
    until: HashMap<IpNet, Instant>,
    capacity: usize,
    /// The table was found full of bans nothing could merge: no new attempt to make room
    /// before the first of them ends (each attempt scans the whole table).
    full_until: Option<Instant>,
}

impl Bans {
    pub fn new(capacity: usize) -> Bans {
        Bans {
            until: HashMap::new(),
            capacity: capacity.max(1),
            full_until: None,
        }
    }

    /// How much longer `source` (a /64 or an IPv4 address) is banned, itself or through the
    /// network it was widened into.
    pub fn left(&self, source: IpAddr, now: Instant) -> Option<Duration> {
        [net(source, full(source)), net(source, wide(source))]
            .iter()
            .filter_map(|n| self.until.get(n))
            .filter_map(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
            .max()
    }

    /// Ban `source` until `until` (a longer ban already there stays); false when the table
    /// is full of bans no widening can merge.
    pub fn ban(&mut self, source: IpAddr, until: Instant, now: Instant) -> bool {
        let key = net(source, full(source));
        if self
            .left(source, now)
            .is_some_and(|left| now + left >= until)
        {
            return true;
        }
        if !self.until.contains_key(&key) && !self.make_room(now) {
            return false;
        }
        let entry = self.until.entry(key).or_insert(until);
        *entry = (*entry).max(until);
        true
    }

    /// Every ban with its end, for a new configuration to take over.
    pub fn all(&self) -> impl Iterator<Item = (IpNet, Instant)> + '_ {
        self.until.iter().map(|(n, u)| (*n, *u))
    }

    /// Take over a ban as it is (a widened one stays wide).
    pub fn insert(&mut self, network: IpNet, until: Instant, now: Instant) {
        if self.until.contains_key(&network) || self.make_room(now) {
            self.until.insert(network, until);
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.until.len()
    }

    /// Room for one more ban: expired bans go first; then the network with the most banned
    /// sources is banned as a whole. False when every network holds one: no unexpired ban is
    /// ever dropped.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.until.len() < self.capacity {
            return true;
        }
        if self.full_until.is_some_and(|until| now < until) {
            return false;
        }
        self.until.retain(|_, until| *until > now);
        if self.until.len() < self.capacity {
            return true;
        }
        let mut crowds: HashMap<IpNet, (usize, Instant)> = HashMap::new();
        for (network, until) in &self.until {
            let address = network.addr();
            if network.prefix_len() == wide(address) {
                continue;
            }
            let crowd = crowds
                .entry(net(address, wide(address)))
                .or_insert((0, *until));
            crowd.0 += 1;
            crowd.1 = crowd.1.max(*until);
        }
        let widest = crowds.into_iter().max_by_key(|(_, (count, _))| *count);
        if let Some((wide_net, (_, until))) = widest.filter(|(_, (count, _))| *count > 1) {
            self.until
                .retain(|network, _| !(wide_net.contains(network) && *network != wide_net));
            let entry = self.until.entry(wide_net).or_insert(until);
            *entry = (*entry).max(until);
            return self.until.len() < self.capacity;
        }
        self.full_until = self.until.values().min().copied();
        false
    }
}

fn full(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 64,
    }
}

fn wide(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => WIDE_V4,
        IpAddr::V6(_) => WIDE_V6,
    }
}

fn net(address: IpAddr, prefix: u8) -> IpNet {
    IpNet::new(address, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| IpNet::from(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(site: u16, subnet: u16) -> IpAddr {
        format!("2001:db8:{site:x}:{subnet:x}::").parse().unwrap()
    }

    #[test]
    fn a_ban_is_never_pushed_out_by_other_bans() {
        let t0 = Instant::now();
        let mut bans = Bans::new(50);
        let first: IpAddr = "192.0.2.1".parse().unwrap();
        bans.ban(first, t0 + Duration::from_secs(600), t0);
        // 80 more banned sources in other IPv4 /24s and IPv6 /48s: the first ban stays.
        for n in 0..40u16 {
            bans.ban(v6(n, 1), t0 + Duration::from_secs(600), t0);
            let v4 = IpAddr::from([198, 51, (n % 200) as u8, 1]);
            bans.ban(v4, t0 + Duration::from_secs(600), t0);
        }
        assert!(
            bans.left(first, t0).is_some(),
            "an unexpired ban was evicted"
        );
        assert!(bans.count() <= 50);
    }

    #[test]
    fn when_full_many_banned_64s_of_one_48_ban_the_48() {
        let t0 = Instant::now();
        let mut bans = Bans::new(10);
        let until = t0 + Duration::from_secs(600);
        for subnet in 0..30u16 {
            bans.ban(v6(7, subnet), until, t0);
        }
        assert!(bans.count() <= 10, "{}", bans.count());
        // Every one of them, and their neighbours in the /48, are banned.
        for subnet in [0, 15, 29, 1000] {
            assert!(bans.left(v6(7, subnet), t0).is_some(), "/64 {subnet}");
        }
        assert!(bans.left(v6(8, 0), t0).is_none(), "another /48");
    }

    #[test]
    fn expired_bans_make_room_first_and_end() {
        let t0 = Instant::now();
        let mut bans = Bans::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        bans.ban(a, t0 + Duration::from_secs(1), t0);
        let later = t0 + Duration::from_secs(2);
        assert!(bans.left(a, later).is_none());
        bans.ban(
            "203.0.113.1".parse().unwrap(),
            later + Duration::from_secs(60),
            later,
        );
        bans.ban(
            "198.51.100.1".parse().unwrap(),
            later + Duration::from_secs(60),
            later,
        );
        assert_eq!(bans.count(), 2, "the expired ban made room");
    }

    #[test]
    fn a_table_full_of_unmergeable_bans_keeps_them_all_and_stops_scanning() {
        let t0 = Instant::now();
        let mut bans = Bans::new(3);
        for n in 1..=3u8 {
            assert!(bans.ban(
                IpAddr::from([192, 0, n, 1]),
                t0 + Duration::from_secs(60),
                t0
            ));
        }
        assert!(!bans.ban(
            "203.0.113.9".parse().unwrap(),
            t0 + Duration::from_secs(60),
            t0
        ));
        assert_eq!(bans.full_until, Some(t0 + Duration::from_secs(60)));
        for n in 1..=3u8 {
            assert!(bans.left(IpAddr::from([192, 0, n, 1]), t0).is_some());
        }
        // Once they end, there is room again.
        let later = t0 + Duration::from_secs(61);
        assert!(bans.ban(
            "203.0.113.9".parse().unwrap(),
            later + Duration::from_secs(60),
            later
        ));
    }
}
