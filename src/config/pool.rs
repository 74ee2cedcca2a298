//! A `pool` map's settings: the servers of a shared-storage cluster, their weights, how their
//! health is checked and how long a user stays where it was placed. The settings live in
//! `[listener.map]` beside the other kinds' (see [`MapConfig`]); here are their type, their
//! defaults and their checks.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::value::HostPort;

use super::{MapConfig, MapKind};

/// Nobody waits longer than an hour for a health check or a drain.
const MAX_POOL_MS: u64 = 3_600_000;
/// A weight is a share; beyond this, a typo.
const MAX_WEIGHT: u32 = 1_000;

/// One server of a pool: `"host:port"`, or a table with a weight.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PoolServer {
    Address(HostPort),
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
pub(super) fn pool_problems(map: &MapConfig) -> Vec<String> {
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
