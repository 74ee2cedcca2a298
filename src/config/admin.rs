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
    /// Names the endpoint may be reached by (`Host`), besides its address (and `localhost` for
    /// a loopback one): `["mailproxy.example.org:9143"]`.
    pub hosts: Vec<String>,
}

impl AdminConfig {
    /// The address to serve on, when there is one.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.as_deref()?.parse().ok()
    }

    /// Worth a line in the log, though it runs.
    pub fn warnings(&self) -> Vec<String> {
        match self.address() {
            Some(address) if !address.ip().is_loopback() && self.token.is_none() => vec![format!(
                "admin endpoint on {address} without a token: anyone who reaches it sees \
                 every session and can end them; set [admin] token"
            )],
            _ => Vec::new(),
        }
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
