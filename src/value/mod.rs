//! Plain value types every layer shares: the protocol a listener speaks, a secret, a server's
//! `host:port`, an IP address, a network, a TLS server name, the pre-login bounds. This module
//! imports nothing of the crate, so the configuration (the bottom layer) and every layer above
//! it may use it.

pub mod host_port;
pub mod ip_address;
pub mod limits;
pub mod network;
pub mod protocol;
pub mod secret;
pub mod server_name;

pub use host_port::HostPort;
pub use ip_address::IpAddress;
pub use limits::PreLoginLimits;
pub use network::Network;
pub use protocol::Protocol;
pub use secret::Secret;
