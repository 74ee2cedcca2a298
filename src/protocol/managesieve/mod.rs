//! managesieve: the pre-login part only. After login the proxy relays bytes untouched.

pub mod back;
mod descriptor;
pub mod front;
pub mod learn;
pub mod syntax;

pub use descriptor::DESCRIPTOR;
