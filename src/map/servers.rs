//! Which of several servers to try first: the order a listener's own servers are given in (or
//! a random first one, as Perdition spreads logins over its `outgoing_server` list), with the
//! servers that just refused a connection moved to the end, so that the next client does not
//! wait for the same timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Endpoint;

/// How long a server that refused a connection is tried last.
const DEAD_FOR: Duration = Duration::from_secs(30);

/// The servers that refused a connection lately, per listener.
#[derive(Default)]
pub struct DeadServers {
    since: Mutex<HashMap<Endpoint, Instant>>,
}

/// At most this many servers are remembered (a map can name any number).
const MAX_REMEMBERED: usize = 1024;

impl DeadServers {
    pub fn connect_failed(&self, endpoint: &Endpoint, now: Instant) {
        if let Ok(mut since) = self.since.lock() {
            if since.len() >= MAX_REMEMBERED {
                since.retain(|_, at| now.saturating_duration_since(*at) < DEAD_FOR);
            }
            if since.len() < MAX_REMEMBERED {
                since.insert(endpoint.clone(), now);
            }
        }
    }

    pub fn connected(&self, endpoint: &Endpoint) {
        if let Ok(mut since) = self.since.lock() {
            since.remove(endpoint);
        }
    }

    /// `endpoints` with the ones that failed in the last [`DEAD_FOR`] moved to the end, in
    /// their order; the others keep theirs.
    pub fn order(&self, endpoints: &mut [Endpoint], now: Instant) {
        let Ok(since) = self.since.lock() else {
            return;
        };
        let dead = |e: &Endpoint| {
            since
                .get(e)
                .is_some_and(|at| now.saturating_duration_since(*at) < DEAD_FOR)
        };
        endpoints.sort_by_key(dead);
    }
}

/// `servers` starting at a random one, the others following in their order (Perdition picks
/// one at random per connection; trying the others next is Portcullis's addition).
pub fn rotate_randomly(servers: &mut [Endpoint]) {
    if !servers.is_empty() {
        let first = fastrand::usize(..servers.len());
        servers.rotate_left(first);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendTls;

    fn e(host: &str) -> Endpoint {
        Endpoint {
            host: host.into(),
            port: 143,
            tls: BackendTls::None,
            tls_name: None,
        }
    }

    #[test]
    fn a_server_that_failed_is_tried_last_for_a_while() {
        let dead = DeadServers::default();
        let t0 = Instant::now();
        dead.connect_failed(&e("a"), t0);
        let mut list = vec![e("a"), e("b"), e("c")];
        dead.order(&mut list, t0 + Duration::from_secs(1));
        assert_eq!(list, vec![e("b"), e("c"), e("a")]);
        let mut list = vec![e("a"), e("b")];
        dead.order(&mut list, t0 + DEAD_FOR);
        assert_eq!(list, vec![e("a"), e("b")], "forgiven after DEAD_FOR");
        dead.connect_failed(&e("b"), t0);
        dead.connected(&e("b"));
        let mut list = vec![e("b"), e("c")];
        dead.order(&mut list, t0);
        assert_eq!(list, vec![e("b"), e("c")], "forgiven once it answers");
    }

    #[test]
    fn random_rotation_keeps_every_server_once() {
        let mut seen_first = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut list = vec![e("a"), e("b"), e("c")];
            rotate_randomly(&mut list);
            let mut sorted = list.clone();
            sorted.sort_by(|x, y| x.host.cmp(&y.host));
            assert_eq!(sorted, vec![e("a"), e("b"), e("c")]);
            seen_first.insert(list[0].host.clone());
        }
        assert_eq!(seen_first.len(), 3);
    }
}
