//! Portcullis: a mail-access reverse proxy for IMAP, POP3 and ManageSieve.
//!
//! The crate is laid out along the path of one connection: `protocol` holds the sans-I/O
//! machines, `server` the async shell that drives them, and `config`, `tls`, `map` and
//! `authlog` the services a session uses.
#![forbid(unsafe_code)]

pub mod admin;
pub mod authlog;
pub mod certificates;
pub mod config;
pub mod guard;
pub mod map;
pub mod metrics;
pub mod pid_file;
pub mod protocol;
pub mod server;
pub mod service;
pub mod tls;
