//! SMTP submission (RFC 6409; implicit TLS on 465 as RFC 8314 says): the part before AUTH
//! only. After the back end's `235` the proxy relays bytes untouched.

pub mod back;
mod descriptor;
pub mod extensions;
pub mod front;
pub mod reply;

pub use descriptor::DESCRIPTOR;

/// The key under which the client side hands the client's EHLO name to the server side (in
/// the client's identification, as IMAP hands its `ID` fields).
pub const HELO: &str = "helo";
