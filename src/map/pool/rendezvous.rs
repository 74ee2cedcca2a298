//! Rendezvous (highest-random-weight) hashing: every server gets a score for a user, the
//! highest wins. Adding or removing a server moves only the users whose winner it is or was;
//! a weight scales a server's share (the logarithmic method: score = -w / ln(u), u the
//! user+server hash read as a number in (0, 1)). The hash is SHA-256, so that every
//! instance, of any build, ranks alike.

use sha2::{Digest, Sha256};

/// The servers' indices, best first, for `key`. `servers`: (host, weight).
pub fn rank(key: &str, servers: &[(&str, u32)]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = servers
        .iter()
        .enumerate()
        .map(|(i, (host, weight))| (score(key, host, *weight), i))
        .collect();
    // Ties (no two hashes are equal in practice) go to the earlier server.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

fn score(key: &str, host: &str, weight: u32) -> f64 {
    let mut hash = Sha256::new();
    hash.update((host.len() as u64).to_be_bytes());
    hash.update(host.to_ascii_lowercase().as_bytes());
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits, never 0 nor 1: ln(u) is finite and negative.
    let bits = u64::from_be_bytes(first) >> 11;
    let u = (bits as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(weight.max(1)) / u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn winners(servers: &[(&str, u32)], users: usize) -> Vec<usize> {
        (0..users)
            .map(|u| rank(&format!("user{u}"), servers)[0])
            .collect()
    }

    #[test]
    fn shares_follow_the_weights() {
        let servers = [("10.0.0.11", 1), ("10.0.0.12", 1), ("10.0.0.13", 2)];
        let won = winners(&servers, 20_000);
        let share = |i| won.iter().filter(|w| **w == i).count() as f64 / 20_000.0;
        for (i, expected) in [(0, 0.25), (1, 0.25), (2, 0.5)] {
            assert!((share(i) - expected).abs() < 0.02, "{i}: {}", share(i));
        }
    }

    #[test]
    fn a_new_server_takes_only_its_share_and_nobody_else_moves() {
        let three = [("a", 1), ("b", 1), ("c", 1)];
        let four = [("a", 1), ("b", 1), ("c", 1), ("d", 1)];
        let (before, after) = (winners(&three, 10_000), winners(&four, 10_000));
        let moved: Vec<_> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert!(
            moved.iter().all(|(_, a)| **a == 3),
            "only to the new server"
        );
        let share = moved.len() as f64 / 10_000.0;
        assert!((share - 0.25).abs() < 0.02, "{share}");
    }

    #[test]
    fn the_ranking_is_the_same_whoever_asks_and_ignores_the_hosts_case() {
        let servers = [("Mail1", 1), ("mail2", 3)];
        assert_eq!(
            rank("kate", &servers),
            rank("kate", &[("mail1", 1), ("MAIL2", 3)])
        );
        assert_eq!(rank("kate", &servers).len(), 2);
    }
}
