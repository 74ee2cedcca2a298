//! pop3: the pre-login part only. After login the proxy relays bytes untouched.

pub mod back;
mod descriptor;
pub mod front;

pub use descriptor::DESCRIPTOR;
