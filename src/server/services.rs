//! What every session of the process shares, whatever its listener: the log and the
//! brute-force guard; the metrics next. Sessions hold it by `Arc`, so a reload
//! can build a new one while live sessions keep theirs.

use std::sync::Arc;

use crate::authlog::Logger;
use crate::guard::Guard;

use super::loop_guard::OwnConnections;

pub struct Services {
    /// The one writer of every log line of the process.
    pub logger: Arc<Logger>,
    /// Failures delay and ban by address across every listener; `None` when turned off.
    pub guard: Option<Guard>,
    /// Back-end connections of this process, so that one arriving at our own listener (a
    /// proxy loop) is recognised.
    pub own_connections: OwnConnections,
}

impl Services {
    pub fn new(logger: Arc<Logger>, guard: Option<Guard>) -> Arc<Services> {
        Arc::new(Services {
            logger,
            guard,
            own_connections: OwnConnections::default(),
        })
    }
}
