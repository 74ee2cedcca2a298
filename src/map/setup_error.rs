//! Why a map could not be made, or its file read again: at start, on a reload and for
//! `check`. A lookup's own failures are [`super::MapError`]s.

use std::path::PathBuf;

use super::http::HttpSetupError;
use super::ldap::LdapSetupError;
use super::popmap_re::RuleError;
use super::sql::SqlSetupError;

#[derive(Debug, thiserror::Error)]
pub enum MapSetupError {
    /// A map kind that reads a file was given none.
    #[error("the map needs a path")]
    NoPath,
    /// The map's file (popmap, popmap.re).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A popmap.re line that does not compile.
    #[error("{}: {error}", path.display())]
    BadRule {
        path: PathBuf,
        #[source]
        error: RuleError,
    },
    #[error(transparent)]
    Ldap(#[from] LdapSetupError),
    #[error(transparent)]
    Sql(#[from] SqlSetupError),
    #[error(transparent)]
    Http(#[from] HttpSetupError),
    /// A pool's servers.
    #[error("map.servers: {0}")]
    Pool(String),
}
