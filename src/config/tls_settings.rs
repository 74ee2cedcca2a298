//! The words of the TLS settings that go beyond "which files": versions, and the flaws of a
//! back end's certificate an admin chose to forgive.

use serde::{Deserialize, Serialize};

/// A TLS version rustls speaks; older ones are never offered.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// Something wrong with a back end's certificate that verification may be told to forgive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateFlaw {
    /// Past its end date (the chain is checked as of a moment it was valid).
    Expired,
    /// Before its start date.
    NotYetValid,
    /// The server's certificate signed itself: no CA vouches for it.
    SelfSigned,
    /// The chain ends at a self-signed CA that is not among the trusted ones.
    SelfSignedCa,
    /// Made out for a name other than the one connected to.
    Name,
}
