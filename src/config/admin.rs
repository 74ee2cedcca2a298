//! `[admin]`: the admin endpoint (metrics, live sessions, kicks). Off unless `listen` is set;
//! meant for loopback or a management network, optionally behind a bearer token.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `127.0.0.1:9143`; unset: no admin endpoint.
    pub listen: Option<String>,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Names the endpoint may be reached by (`Host`), besides its address (and `localhost` for
    /// a loopback one): `["mailproxy.example.org:9143"]`.
    pub hosts: Vec<String>,
    /// How long a connection may take to send its request's headers, in milliseconds
    /// (default 5000): an idle connection holds a slot until then.
    pub header_timeout_ms: Option<u64>,
}

/// A request's headers are in long before this; an idle connection is closed after it.
const DEFAULT_HEADER_TIMEOUT_MS: u64 = 5_000;
/// The header time is part of a connection's 30 seconds.
const MAX_HEADER_TIMEOUT_MS: u64 = 30_000;

impl AdminConfig {
    /// The address to serve on, when there is one.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.as_deref()?.parse().ok()
    }

    /// How long a connection may take to send its request's headers.
    pub fn header_timeout(&self) -> std::time::Duration {
        let ms = self.header_timeout_ms.unwrap_or(DEFAULT_HEADER_TIMEOUT_MS);
        std::time::Duration::from_millis(ms.clamp(1, MAX_HEADER_TIMEOUT_MS))
    }

    /// Worth a line in the log at start, and from `check`, though it runs.
    pub fn warnings(&self) -> Vec<String> {
        let who = match self.address() {
            Some(_) if self.token.is_some() => return Vec::new(),
            None => return Vec::new(),
            // Loopback is not private: every account on this machine reaches it.
            Some(address) if address.ip().is_loopback() => "every local account",
            Some(_) => "anyone who reaches it",
        };
        vec![format!(
            "admin endpoint on {} without a token: {who} can see every session, kick users, \
             reload and upgrade; set [admin] token",
            self.listen.as_deref().unwrap_or_default()
        )]
    }

    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(listen) = &self.listen {
            if listen.parse::<SocketAddr>().is_err() {
                problems.push(format!(
                    "admin.listen: {listen:?} is not an address:port (e.g. \"127.0.0.1:9143\")"
                ));
            }
        }
        if let Some(ms) = self.header_timeout_ms {
            if ms == 0 || ms > MAX_HEADER_TIMEOUT_MS {
                problems.push(format!(
                    "admin.header_timeout_ms = {ms}: give 1 to {MAX_HEADER_TIMEOUT_MS}"
                ));
            }
        }
        if self.token.as_deref() == Some("") {
            problems.push("admin.token is empty: leave it out, or give a secret".into());
        }
        problems
    }
}
