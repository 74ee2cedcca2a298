//! A `pool` map's settings: the servers of a shared-storage cluster, their weights, how their
//! health is checked and how long a user stays where it was placed. The settings live in
//! `[listener.map]` beside the other kinds' (see [`MapConfig`]); here are their type, their
//! defaults and their checks.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::value::HostPort;

use super::{Listener, MapConfig, MapKind};

/// Nobody waits longer than an hour for a health check or a drain.
const MAX_POOL_MS: u64 = 3_600_000;
/// A weight is a share; beyond this, a typo.
const MAX_WEIGHT: u32 = 1_000;

/// One server of a pool: `"host:port"`, or a table with a weight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PoolServer {
    Address(#[schemars(with = "String")] HostPort),
    #[serde(rename_all = "snake_case")]
    Weighted {
        host: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(default = "one")]
        weight: u32,
    },
}

fn one() -> u32 {
    1
}

impl PoolServer {
    /// Host, port (if given) and weight, or why the address does not read.
    pub fn parts(&self) -> Result<(String, Option<u16>, u32), String> {
        match self {
            PoolServer::Address(address) => {
                let (host, port) = address.get().map_err(|e| e.to_string())?;
                Ok((host.to_string(), port, 1))
            }
            PoolServer::Weighted { host, port, weight } => Ok((host.clone(), *port, *weight)),
        }
    }
}

impl MapConfig {
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms.unwrap_or(2_000))
    }

    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms.unwrap_or(1_000))
    }

    /// Failed checks in a row before a server is down.
    pub fn down_after(&self) -> u32 {
        self.down_after.unwrap_or(2)
    }

    /// Good checks in a row before a down server is up again.
    pub fn up_after(&self) -> u32 {
        self.up_after.unwrap_or(2)
    }

    /// How long a user stays on its server after its last session ended.
    pub fn sticky_for(&self) -> Duration {
        Duration::from_millis(self.sticky_ms.unwrap_or(300_000))
    }

    /// How long `backend down --kick` takes to end a server's sessions.
    pub fn kick_spread(&self) -> Duration {
        Duration::from_millis(self.kick_spread_ms.unwrap_or(10_000))
    }
}

/// What is wrong with a pool's settings, or with pool settings on another kind of map.
pub(super) fn pool_problems(l: &Listener, map: &MapConfig) -> Vec<String> {
    let given = [
        ("servers", !map.servers.is_empty()),
        ("health_interval_ms", map.health_interval_ms.is_some()),
        ("health_timeout_ms", map.health_timeout_ms.is_some()),
        ("down_after", map.down_after.is_some()),
        ("up_after", map.up_after.is_some()),
        ("sticky_ms", map.sticky_ms.is_some()),
        ("kick_spread_ms", map.kick_spread_ms.is_some()),
    ];
    if map.kind != MapKind::Pool {
        return given
            .iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| format!("map.{key} is for kind = \"pool\" only"))
            .collect();
    }
    let mut problems = server_problems(&map.servers);
    problems.extend(bypass_problems(l));
    for (key, value) in [
        ("health_interval_ms", map.health_interval_ms),
        ("health_timeout_ms", map.health_timeout_ms),
        ("sticky_ms", map.sticky_ms),
        ("kick_spread_ms", map.kick_spread_ms),
    ] {
        if value.is_some_and(|ms| ms > MAX_POOL_MS) {
            problems.push(format!("map.{key} is more than an hour"));
        }
    }
    if map.health_interval_ms == Some(0) || map.health_timeout_ms == Some(0) {
        problems.push("map.health_interval_ms and map.health_timeout_ms must be at least 1".into());
    }
    if map.down_after() == 0 || map.up_after() == 0 {
        problems.push("map.down_after and map.up_after must be at least 1".into());
    }
    for (key, set) in [
        ("cache_seconds", map.cache_seconds.is_some_and(|s| s > 0)),
        (
            "negative_cache_seconds",
            map.negative_cache_seconds.is_some_and(|s| s > 0),
        ),
        ("url", map.url.is_some()),
        ("path", map.path.is_some()),
    ] {
        if set {
            problems.push(format!("map.{key} means nothing for a pool"));
        }
    }
    problems
}

/// A way around the pool's rules on its listener.
fn bypass_problems(l: &Listener) -> Vec<String> {
    let mut problems = Vec::new();
    if !l.backend.host.is_empty() || !l.backend.failover.is_empty() {
        problems.push(
            "backend.host and backend.failover must be empty with a pool: the pool names every \
             server (a fixed one beside it would take users outside the pool's rules)"
                .into(),
        );
    }
    if l.client_server_specification {
        problems.push(
            "client_server_specification with a pool would let a client choose its own server"
                .into(),
        );
    }
    problems
}

fn server_problems(servers: &[PoolServer]) -> Vec<String> {
    let mut problems = Vec::new();
    if servers.is_empty() {
        problems.push("map.servers: a pool needs at least one server".into());
    }
    let mut hosts = HashSet::new();
    for server in servers {
        match server.parts() {
            Err(e) => problems.push(format!("map.servers: {e}")),
            Ok((host, _, weight)) => {
                if host.is_empty() {
                    problems.push("map.servers: a server without a host".into());
                }
                if !(1..=MAX_WEIGHT).contains(&weight) {
                    problems.push(format!(
                        "map.servers: {host}'s weight must be 1 to {MAX_WEIGHT}"
                    ));
                }
                // Users are placed on hosts (one user, one machine, whatever the protocol).
                if !hosts.insert(host.to_ascii_lowercase()) {
                    problems.push(format!(
                        "map.servers: {host} twice: a pool places users on hosts, so each \
                         host is one server"
                    ));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn problems(map: &str, backend: &str) -> String {
        let text = format!(
            "[[listener]]\nprotocol = \"imap\"\nbind = [\"127.0.0.1:0\"]\n\
             [listener.backend]\n{backend}\n[listener.map]\n{map}\n"
        );
        let config = Config::from_toml(&text).expect("parses");
        match config.validate() {
            Ok(()) => String::new(),
            Err(problems) => problems.0.join("\n"),
        }
    }

    #[test]
    fn a_pool_takes_weighted_servers_and_names_what_is_wrong() {
        let good = "kind = \"pool\"\nservers = [\"10.0.0.11:143\", \
                    { host = \"10.0.0.12\", port = 143, weight = 2 }]";
        assert_eq!(problems(good, "host = \"\""), "");
        let twice = "kind = \"pool\"\nservers = [\"10.0.0.11:143\", \"10.0.0.11:1143\"]";
        assert!(problems(twice, "").contains("10.0.0.11 twice"));
        let heavy = "kind = \"pool\"\nservers = [{ host = \"a\", weight = 0 }]";
        assert!(problems(heavy, "").contains("weight must be 1 to 1000"));
        let none = "kind = \"pool\"";
        assert!(problems(none, "").contains("at least one server"));
    }

    #[test]
    fn nothing_may_route_around_a_pool_and_its_keys_are_its_own() {
        let pool = "kind = \"pool\"\nservers = [\"10.0.0.11:143\"]";
        assert!(problems(pool, "host = \"10.0.0.9\"").contains("must be empty with a pool"));
        let cached = format!("{pool}\ncache_seconds = 60");
        assert!(problems(&cached, "").contains("cache_seconds means nothing for a pool"));
        let not_a_pool = "kind = \"popmap\"\npath = \"/etc/popmap\"\nsticky_ms = 5";
        assert!(
            problems(not_a_pool, "host = \"a\"").contains("sticky_ms is for kind = \"pool\" only")
        );
    }
}
