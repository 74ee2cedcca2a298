//! The name a back end's certificate must carry, checked once where the configuration is read
//! and again where the TLS connector is built.

use rustls_pki_types::ServerName;

/// A name rustls cannot verify a certificate against.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid TLS server name {0:?}")]
pub struct InvalidServerName(pub String);

/// `name` as a TLS server name: a DNS name or an IP address (`[v6]` taken without brackets).
pub fn server_name(name: &str) -> Result<ServerName<'static>, InvalidServerName> {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string()).map_err(|_| InvalidServerName(name.to_string()))
}
