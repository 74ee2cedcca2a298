//! What the instances of a fleet share beyond the guard: their logged-in sessions, counted
//! by user (the caps) and by pool user (stickiness), through the `[fleet]` store when there
//! is one.

pub mod board;
mod scripts;
pub mod sessions;

pub use board::{keep_hearing, Board, NotTaken};
pub use sessions::{Count, Lease, LeaseFacts, Placement, Refused, SessionTable};

use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::log::Logger;
use crate::store::{Store, StoreUrlError, Words};

/// The session table a configuration asks for: shared through `[fleet] store` (or `[guard]
/// store`, its older name) when one is named, else this process's own.
pub fn session_table(
    config: &Config,
    logger: &Arc<Logger>,
) -> Result<Arc<SessionTable>, StoreUrlError> {
    let ttl = Duration::from_millis(config.fleet.session_ttl_ms);
    let Some(settings) = config.fleet.settings(&config.guard) else {
        return Ok(SessionTable::new(None, ttl));
    };
    let words = Words {
        who: "Fleet store",
        without: "this instance places users and counts sessions on its own until it answers",
        again: "placements and session counts are shared again",
    };
    let store = Store::from_settings(&settings, "fleet.store", words, logger.clone())?;
    Ok(SessionTable::new(Some(Arc::new(store)), ttl))
}

/// Renew this process's sessions in the store for as long as the table lives.
pub fn keep_renewing(table: &Arc<SessionTable>) {
    if table.store().is_none() {
        return;
    }
    let table = Arc::downgrade(table);
    tokio::spawn(async move {
        loop {
            let every = match table.upgrade() {
                Some(table) => {
                    table.renew().await;
                    table.renew_every()
                }
                None => return,
            };
            tokio::time::sleep(every).await;
        }
    });
}
