//! The async shell around the protocol machines: listeners and the accept loop
//! (`listener.rs`), one [`session::Session`] per client, the back-end login (`backend.rs`),
//! the relay, and the pieces built once from the configuration (`builder.rs`) or shared by
//! the whole process (`services.rs`).

mod backend;
pub mod backend_probe;
pub mod builder;
pub mod capability_probe;
pub mod control;
pub mod forward;
pub mod holding;
pub mod inetd;
pub mod listener;
pub mod loop_guard;
pub mod pool_checks;
pub mod proxy_header;
pub mod registry;
pub mod relay;
pub mod reload;
pub mod services;
pub mod session;
pub mod stream;

use tokio::sync::watch;

pub use control::run;
pub use listener::bind;

/// Where the process is in its life; every session watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// Shutdown asked: no new connections; clients that have not logged in are told BYE.
    Draining,
    /// The grace period is over: relays end and log their Closing lines.
    Closing,
}

/// Wait until the process reaches `phase` (or the server is gone).
pub async fn reached(watch: &mut watch::Receiver<Phase>, phase: Phase) {
    let _ = watch.wait_for(|p| *p >= phase).await;
}
