//! `[admin]`: the admin endpoint (metrics, live sessions, kicks). Off unless `listen` is set;
//! meant for loopback or a management network, optionally behind a bearer token.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `127.0.0.1:9143`; unset: no admin endpoint.
    pub listen: Option<String>,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

impl AdminConfig {
    /// The address to serve on, when there is one.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.as_deref()?.parse().ok()
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
        if self.token.as_deref() == Some("") {
            problems.push("admin.token is empty: leave it out, or give a secret".into());
        }
        problems
    }
}
