//! What every session of the process shares, whatever its listener: the log today; the maps'
//! caches, the brute-force guard and the metrics next. Sessions hold it by `Arc`, so a reload
//! can build a new one while live sessions keep theirs.

use std::sync::Arc;

use crate::authlog::Logger;

pub struct Services {
    /// The one writer of every log line of the process.
    pub logger: Arc<Logger>,
}

impl Services {
    pub fn new(logger: Arc<Logger>) -> Arc<Services> {
        Arc::new(Services { logger })
    }
}
