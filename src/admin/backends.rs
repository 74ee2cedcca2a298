//! The pools on the admin endpoint: `GET /backends` (every pool's servers, their health,
//! whether drained, this instance's users and sessions there), `POST /backends/down?server=S`
//! (`&kick=1` to end its sessions, spread), `POST /backends/up?server=S` and
//! `POST /move?user=U&server=S`. A server is named `host:port` as `/backends` shows it (or by
//! its host). Pools place users on hosts: the word is about the server's host, in every pool
//! that has it.

use serde::Serialize;

use crate::fleet::NotTaken;
use crate::map::pool::control::{ControlError, ServerStatus};
use crate::map::pool::Pool;
use crate::server::services::Services;

/// A server as `GET /backends` shows it: its pool's listener, then its status.
#[derive(Debug, Serialize)]
pub struct Row {
    pub listener: String,
    #[serde(flatten)]
    pub status: ServerStatus,
}

/// What is wrong with a request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BackendsError {
    #[error("give {0}, each once, and nothing else")]
    Malformed(&'static str),
    #[error("{0} is not a server of any pool")]
    Unknown(String),
    #[error(transparent)]
    Refused(#[from] ControlError),
    #[error(transparent)]
    NotTaken(#[from] NotTaken),
}

/// Every pool's servers.
pub fn list(services: &Services) -> Vec<Row> {
    let mut rows = Vec::new();
    for (listener, map) in services.pools() {
        if let Some(pool) = map.pool() {
            rows.extend(pool.status().into_iter().map(|status| Row {
                listener: listener.clone(),
                status,
            }));
        }
    }
    rows
}

/// The parameters `names` of `query`, each once at most, and nothing else (`usage` says what
/// is expected).
fn parameters(
    query: &str,
    names: &[&'static str],
    usage: &'static str,
) -> Result<Vec<Option<String>>, BackendsError> {
    let mut found: Vec<Option<String>> = vec![None; names.len()];
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let i = names
            .iter()
            .position(|n| *n == name)
            .ok_or(BackendsError::Malformed(usage))?;
        if found[i].is_some() || value.is_empty() {
            return Err(BackendsError::Malformed(usage));
        }
        found[i] = Some(value.into_owned());
    }
    Ok(found)
}

/// The host of the server named `server`, and the pools that have that host.
fn host_and_pools(
    services: &Services,
    server: &str,
) -> Result<(String, Vec<std::sync::Arc<dyn crate::map::Map>>), BackendsError> {
    let pools: Vec<_> = services.pools().into_iter().map(|(_, map)| map).collect();
    let host = pools
        .iter()
        .find_map(|map| Some(map.pool()?.find(server)?.host.clone()))
        .ok_or_else(|| BackendsError::Unknown(server.to_string()))?;
    let with_host = pools
        .into_iter()
        .filter(|map| map.pool().is_some_and(|p| p.find(&host).is_some()))
        .collect();
    Ok((host, with_host))
}

/// `server=S[&kick=1]`: drain its host, or bring it back.
pub async fn drain(
    services: &Services,
    query: &str,
    drained: bool,
) -> Result<String, BackendsError> {
    let usage = "server=HOST:PORT (and kick=1 to end its sessions)";
    let found = parameters(query, &["server", "kick"], usage)?;
    let server = found[0].clone().ok_or(BackendsError::Malformed(usage))?;
    let kick = match found[1].as_deref() {
        None => false,
        Some("1") if drained => true,
        Some(_) => return Err(BackendsError::Malformed(usage)),
    };
    let (host, pools) = host_and_pools(services, &server)?;
    let spread = kick.then(|| {
        pools
            .iter()
            .filter_map(|map| map.pool().map(Pool::kick_spread))
            .max()
            .unwrap_or_default()
    });
    services.board.set_drained(&host, drained, spread).await?;
    Ok(server)
}

/// `user=U&server=S`: the user's sessions end, its next login lands on S's host.
pub async fn move_user(
    services: &Services,
    query: &str,
) -> Result<(String, String), BackendsError> {
    let usage = "user=U and server=HOST:PORT";
    let found = parameters(query, &["user", "server"], usage)?;
    let (Some(user), Some(server)) = (found[0].clone(), found[1].clone()) else {
        return Err(BackendsError::Malformed(usage));
    };
    let (host, pools) = host_and_pools(services, &server)?;
    // Every pool first agrees that the host can take the user; then it moves, once.
    let pools: Vec<&Pool> = pools.iter().filter_map(|map| map.pool()).collect();
    for pool in &pools {
        pool.can_take(&host)?;
    }
    // Once per place placements are kept (the mailbox protocols' pools share one).
    let mut spaces: Vec<&'static str> = pools.iter().map(|p| p.namespace()).collect();
    spaces.sort_unstable();
    spaces.dedup();
    for space in spaces {
        let same: Vec<&Pool> = pools
            .iter()
            .copied()
            .filter(|p| p.namespace() == space)
            .collect();
        same[0]
            .move_user(&user, &host, &same[1..])
            .await
            .map_err(|e| match e {
                ControlError::NotTaken(not_taken) => BackendsError::NotTaken(not_taken),
                refused => BackendsError::Refused(refused),
            })?;
    }
    Ok((user, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_server_once_and_nothing_else() {
        let names = &["server", "kick"];
        let found = parameters("server=10.0.0.1%3A143&kick=1", names, "u").unwrap();
        assert_eq!(found, vec![Some("10.0.0.1:143".into()), Some("1".into())]);
        assert!(parameters("everyone=1", names, "u").is_err());
        assert!(parameters("server=", names, "u").is_err());
        assert!(parameters("server=a&server=b", names, "u").is_err());
        assert_eq!(parameters("", names, "u").unwrap(), vec![None, None]);
    }
}
