//! A per-client-address budget of log lines, so that a flood of failing TLS handshakes from
//! one address cannot fill the disk, while fail2ban still sees enough lines to ban it.
//!
//! An IPv6 source is its /64: one host can use every address of its network. All sources
//! together get [`MAX_TOTAL_PER_WINDOW`] lines per window, so that a flood from many networks
//! cannot fill the disk or the log queue either.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources are remembered; when the table is full
//! the expired windows are forgotten, and if that is not enough, all of them (the worst case
//! is that some sources get one more window's worth of lines).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const MAX_SOURCES: usize = 4096;
const MAX_TOTAL_PER_WINDOW: u32 = 600;

#[derive(Debug)]
pub struct PerSourceLimit {
    /// Lines allowed per address per window.
    lines: u32,
    window: Duration,
    /// Source → (start of its current window, lines written in it).
    seen: HashMap<IpAddr, (Instant, u32)>,
    /// All sources: (start of the current window, lines written in it).
    total: (Instant, u32),
}

/// The part of an address that names one source: IPv4 as it is, IPv6 by its /64.
pub fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl PerSourceLimit {
    pub fn new(lines: u32, window: Duration) -> PerSourceLimit {
        PerSourceLimit {
            lines,
            window,
            seen: HashMap::new(),
            total: (Instant::now(), 0),
        }
    }

    /// Whether a line about `source` may be written `now`.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let source = source(ip);
        if self.seen.len() >= MAX_SOURCES && !self.seen.contains_key(&source) {
            let window = self.window;
            self.seen
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < window);
            if self.seen.len() >= MAX_SOURCES {
                self.seen.clear();
            }
        }
        let (start, count) = self.seen.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(*start) >= self.window {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.lines {
            return false;
        }
        let (start, total) = &mut self.total;
        if now.saturating_duration_since(*start) >= self.window {
            *start = now;
            *total = 0;
        }
        *total += 1;
        *total <= MAX_TOTAL_PER_WINDOW
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_budget_per_window() {
        let mut limit = PerSourceLimit::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let allowed = (0..10).filter(|_| limit.allow(a, t0)).count();
        assert_eq!(allowed, 3);
        assert!(limit.allow(b, t0), "another address has its own budget");
        assert!(!limit.allow(a, t0 + Duration::from_secs(59)));
        assert!(limit.allow(a, t0 + Duration::from_secs(60)), "new window");
    }

    #[test]
    fn a_flood_of_addresses_stays_bounded_in_memory_and_in_lines() {
        let mut limit = PerSourceLimit::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        let mut allowed = 0;
        for i in 0..20_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            allowed += usize::from(limit.allow(ip, t0));
            assert!(limit.seen.len() <= MAX_SOURCES);
        }
        assert_eq!(allowed, MAX_TOTAL_PER_WINDOW as usize);
    }

    #[test]
    fn an_ipv6_network_is_one_source() {
        let mut limit = PerSourceLimit::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        let allowed = (0..50u16)
            .map(|i| format!("2001:db8:1:2::{i:x}").parse().unwrap())
            .filter(|ip| limit.allow(*ip, t0))
            .count();
        assert_eq!(allowed, 2);
        assert!(limit.allow("2001:db8:1:3::1".parse().unwrap(), t0));
    }
}
