//! A per-client-address budget of log lines, so that a flood of failing TLS handshakes from
//! one address cannot fill the disk, while fail2ban still sees enough lines to ban it.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] addresses are remembered; when the table is full
//! the expired windows are forgotten, and if that is not enough, all of them (the worst case
//! is that some addresses get one more window's worth of lines).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const MAX_SOURCES: usize = 4096;

#[derive(Debug)]
pub struct PerSourceLimit {
    /// Lines allowed per address per window.
    lines: u32,
    window: Duration,
    /// Address → (start of its current window, lines written in it).
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl PerSourceLimit {
    pub fn new(lines: u32, window: Duration) -> PerSourceLimit {
        PerSourceLimit {
            lines,
            window,
            seen: HashMap::new(),
        }
    }

    /// Whether a line about `source` may be written `now`.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
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
        *count <= self.lines
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
    fn a_flood_of_addresses_stays_bounded() {
        let mut limit = PerSourceLimit::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limit.allow(ip, t0));
            assert!(limit.seen.len() <= MAX_SOURCES);
        }
    }
}
