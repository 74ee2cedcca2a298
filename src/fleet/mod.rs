//! What the instances of a fleet share beyond the guard: their logged-in sessions, counted
//! by user (the caps) and by pool user (stickiness), through the `[fleet]` store when there
//! is one.

pub mod sessions;

pub use sessions::{AtCap, Count, Lease, LeaseFacts, Placement, SessionTable};
