//! The pools on the admin endpoint: `GET /backends` (every pool's servers, their health,
//! whether drained, this instance's users and sessions there), `POST /backends/down?server=S`
//! (`&kick=1` to end its sessions, spread), `POST /backends/up?server=S` and
//! `POST /move?user=U&server=S`. A server is named `host:port` as `/backends` shows it (or by
//! its host); the word reaches every pool that has it.

use serde::Serialize;

use crate::map::pool::control::ServerStatus;
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
    #[error("give {0}")]
    Missing(&'static str),
    #[error("{0} is not a server of any pool")]
    Unknown(String),
    #[error("{0}")]
    Refused(String),
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

/// The named parameters of `query`, each once at most; anything else is an error.
fn parameters(query: &str, names: &[&'static str]) -> Result<Vec<Option<String>>, BackendsError> {
    let mut found: Vec<Option<String>> = vec![None; names.len()];
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let Some(i) = names.iter().position(|n| *n == name) else {
            return Err(BackendsError::Missing(names[0]));
        };
        found[i] = Some(value.into_owned()).filter(|v| !v.is_empty());
    }
    Ok(found)
}

/// `server=S[&kick=1]`: drain it in every pool that has it, or bring it back.
pub async fn drain(
    services: &Services,
    query: &str,
    drained: bool,
) -> Result<String, BackendsError> {
    let found = parameters(query, &["server", "kick"])?;
    let server = found[0]
        .clone()
        .ok_or(BackendsError::Missing("server=HOST:PORT"))?;
    let kick = drained && found[1].as_deref().is_some_and(|k| k == "1" || k == "yes");
    // Users are placed on hosts: the host is drained in every pool that has it.
    let host = services
        .pools()
        .iter()
        .find_map(|(_, map)| Some(map.pool()?.find(&server)?.host.clone()))
        .ok_or_else(|| BackendsError::Unknown(server.clone()))?;
    let spread = kick.then(|| {
        services
            .pools()
            .iter()
            .filter_map(|(_, map)| map.pool().filter(|p| p.find(&host).is_some()))
            .map(|pool| pool.kick_spread())
            .max()
            .unwrap_or_default()
    });
    services.board.set_drained(&host, drained, spread).await;
    Ok(server)
}

/// `user=U&server=S`: the user's sessions end, its next login lands on S.
pub async fn move_user(
    services: &Services,
    query: &str,
) -> Result<(String, String), BackendsError> {
    let found = parameters(query, &["user", "server"])?;
    let (Some(user), Some(server)) = (found[0].clone(), found[1].clone()) else {
        return Err(BackendsError::Missing("user=U&server=HOST:PORT"));
    };
    let mut hit = false;
    for (_, map) in services.pools() {
        let Some(pool) = map.pool() else { continue };
        if let Some(found) = pool.find(&server) {
            let host = found.host.clone();
            pool.move_user(&user, &host)
                .await
                .map_err(|e| BackendsError::Refused(e.to_string()))?;
            hit = true;
        }
    }
    if !hit {
        return Err(BackendsError::Unknown(server));
    }
    Ok((user, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_server_once_and_nothing_else() {
        let found = parameters("server=10.0.0.1%3A143&kick=1", &["server", "kick"]).unwrap();
        assert_eq!(found, vec![Some("10.0.0.1:143".into()), Some("1".into())]);
        assert!(parameters("everyone=1", &["server", "kick"]).is_err());
        let empty = parameters("server=", &["server", "kick"]).unwrap();
        assert_eq!(empty, vec![None, None]);
    }
}
