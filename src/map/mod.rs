//! Finding a user's back end, and rewriting the user name on the way.
//!
//! A [`Map`] turns a login name into a [`Target`]. Issue 2 needs only the static map
//! (Perdition's `outgoing_server` with `no_lookup`); popmap, LDAP, SQL and HTTP maps are further
//! files implementing the same trait.

pub mod static_server;

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::config::BackendTls;

/// What a map decides for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Tried in order; the next one only when connecting to the previous one failed, never
    /// once credentials were sent.
    pub endpoints: Vec<Endpoint>,
    /// The name to log in with at the back end; the client's own when `None`.
    pub user: Option<String>,
}

/// One back-end server and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address or host name; an IPv6 address may come in brackets.
    pub host: String,
    pub port: u16,
    pub tls: BackendTls,
    /// The name its certificate must carry; `host` when `None`.
    pub tls_name: Option<String>,
}

impl Endpoint {
    /// `host:port` as the log shows it (`[v6]:port` for IPv6).
    pub fn log_name(&self) -> String {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        if host.contains(':') {
            format!("[{host}]:{}", self.port)
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The host as the resolver wants it (no brackets).
    pub fn connect_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    pub fn tls_name(&self) -> &str {
        self.tls_name.as_deref().unwrap_or(self.connect_host())
    }
}

/// Why a lookup produced no target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapError {
    /// The map has no entry for this user.
    NotFound,
    /// The map itself failed (directory down...): the user is told to try later.
    Unavailable(String),
}

pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Result<Target, MapError>> + Send + 'a>>;

/// A user → back-end lookup.
pub trait Map: Send + Sync {
    fn lookup<'a>(&'a self, user: &'a str) -> LookupFuture<'a>;
}

/// When the user name is lower-cased, after Perdition's `lower_case` states.
///
/// Perdition names the moments a name is used: `servername_lookup` (the map lookup),
/// `remote_login` (the back-end login) and `local_authentication` (not applicable: Portcullis
/// never authenticates locally). `all` covers every moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LowerCase {
    #[default]
    None,
    /// Only for the map lookup.
    Lookup,
    /// Only for the back-end login.
    Login,
    /// Everywhere.
    All,
}

impl LowerCase {
    pub fn for_lookup(self, user: &str) -> String {
        match self {
            LowerCase::Lookup | LowerCase::All => user.to_lowercase(),
            LowerCase::None | LowerCase::Login => user.to_string(),
        }
    }

    pub fn for_login(self, user: &str) -> String {
        match self {
            LowerCase::Login | LowerCase::All => user.to_lowercase(),
            LowerCase::None | LowerCase::Lookup => user.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_case_applies_only_where_asked() {
        assert_eq!(
            LowerCase::All.for_login("Alice@Example.ORG"),
            "alice@example.org"
        );
        assert_eq!(LowerCase::Lookup.for_login("Alice"), "Alice");
        assert_eq!(LowerCase::Lookup.for_lookup("Alice"), "alice");
        assert_eq!(LowerCase::None.for_lookup("Alice"), "Alice");
    }
}
