//! Portcullis: a mail-access reverse proxy for IMAP, POP3 and ManageSieve.
//!
//! The crate is laid out along the path of one connection: `protocol` holds the sans-I/O
//! machines, `server` the async shell that drives them, and `config`, `tls`, `map` and
//! `log` the services a session uses.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod certificates;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod guard;
pub mod import;
pub mod log;
pub mod map;
pub mod metrics;
pub mod outgoing;
pub mod pid_file;
pub mod protocol;
pub mod server;
pub mod service_manager;
pub mod store;
pub mod tls;
pub mod value;
