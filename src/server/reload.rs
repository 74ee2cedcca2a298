//! A reload's first half, off the runtime's threads: the configuration read again and built
//! into listeners, not yet in force (`Prepared`), or why it cannot be (`ReloadError`). The
//! listeners switch to it (`listener::Server::apply`); `control` says when.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;

use super::builder::{self, ListenerState};

/// An error of someone else's, kept to be told to every request that waited for it.
pub type Shared = Arc<dyn Error + Send + Sync>;

pub fn shared(e: impl Into<Box<dyn Error + Send + Sync>>) -> Shared {
    Arc::from(e.into())
}

/// Where a reload's configuration comes from: the file (or Perdition's flags and file) read
/// again, with the warnings worth a log line.
pub type ConfigSource =
    Box<dyn Fn() -> Result<(Config, Vec<String>), Box<dyn Error + Send + Sync>> + Send + Sync>;

/// Why a reload changed nothing. Cloned: every request that waited gets it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The configuration could not be read again.
    #[error(transparent)]
    Source(Shared),
    /// It was read, and is not one that builds.
    #[error("{}", .0.join("; "))]
    Build(Vec<String>),
    #[error(transparent)]
    Guard(Shared),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("the reload failed unexpectedly")]
    Failed,
    #[error("shutting down")]
    ShuttingDown,
}

/// A configuration read again and built, not yet in force.
pub struct Prepared {
    pub config: Config,
    pub built: builder::Built,
    pub warnings: Vec<String>,
}

pub fn prepare(
    source: &ConfigSource,
    previous: &[Arc<ListenerState>],
) -> Result<Prepared, ReloadError> {
    let (config, mut warnings) = source().map_err(|e| ReloadError::Source(shared(e)))?;
    let built = builder::build_next(&config, previous).map_err(|p| ReloadError::Build(p.0))?;
    warnings.extend(built.warnings.iter().cloned());
    Ok(Prepared {
        config,
        built,
        warnings,
    })
}
