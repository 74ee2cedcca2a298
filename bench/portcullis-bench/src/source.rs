//! Local source addresses (`--source`): what connections bind to before connecting.
//!
//! Servers and proxies limit or throttle per client address (Portcullis's brute-force guard makes
//! logins from one address take turns; servers cap connections per IP). With every bench client
//! on 127.0.0.1 a run measures that limit, not the relay: spreading the connections over
//! 127.0.0.1..127.0.0.8 (all of 127/8 is loopback on Linux, no setup needed) lets ~9,500 idle
//! sessions in. A connection bound before connecting also takes its ephemeral port from its
//! source address's own range, so several addresses hold more connections than one.

use std::net::{IpAddr, Ipv4Addr};

/// Parses the `--source` values: each an IPv4 or IPv6 address, or an IPv4 range
/// `A.B.C.X-A.B.C.Y` (same first three octets, X ≤ Y), expanded in order.
pub fn parse(specs: &[String]) -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    for spec in specs {
        let spec = spec.trim();
        match spec.split_once('-') {
            None => out.push(
                spec.parse::<IpAddr>()
                    .map_err(|_| format!("--source {spec:?}: not an IP address"))?,
            ),
            Some((a, b)) => out.extend(range(spec, a.trim(), b.trim())?),
        }
    }
    Ok(out)
}

fn range(spec: &str, a: &str, b: &str) -> Result<Vec<IpAddr>, String> {
    let bad = |why: &str| format!("--source {spec:?}: {why}");
    let a: Ipv4Addr = a
        .parse()
        .map_err(|_| bad("a range is two IPv4 addresses, A.B.C.X-A.B.C.Y"))?;
    let b: Ipv4Addr = b
        .parse()
        .map_err(|_| bad("a range is two IPv4 addresses, A.B.C.X-A.B.C.Y"))?;
    let (a, b) = (a.octets(), b.octets());
    if a[..3] != b[..3] {
        return Err(bad("the two ends must share their first three octets"));
    }
    if a[3] > b[3] {
        return Err(bad("the range ends before it starts"));
    }
    Ok((a[3]..=b[3])
        .map(|last| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], last)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(specs: &[&str]) -> Result<Vec<IpAddr>, String> {
        parse(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn addresses_and_ranges() {
        let v = p(&["127.0.0.1-127.0.0.3", "::1", "10.0.0.9"]).unwrap();
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1", "10.0.0.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(v, want);
        assert_eq!(p(&["127.0.0.5-127.0.0.5"]).unwrap().len(), 1);
        assert_eq!(p(&["127.0.0.0-127.0.0.255"]).unwrap().len(), 256);
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            "localhost",
            "127.0.0.8-127.0.0.1",
            "127.0.0.1-127.0.1.2",
            "127.0.0.1-",
            "::1-::2",
            "",
        ] {
            assert!(p(&[bad]).is_err(), "{bad:?} accepted");
        }
    }
}
