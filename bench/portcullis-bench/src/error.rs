//! Errors of one benchmark operation, by kind, and their tally.
//!
//! A benchmark must survive whatever the target does (down, slow, wrong password, garbage): every
//! failure becomes a `BenchError` with a kind, counted in an `ErrorTally` that ends up in the table
//! and the JSON, instead of a panic or an early exit.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// What went wrong, coarse enough to count and to read in a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorKind {
    /// TCP connect refused, unreachable, or out of file descriptors.
    Connect,
    /// TLS handshake failed (certificate, protocol).
    Tls,
    /// No `* OK` greeting (a `* BYE`, garbage, or nothing).
    Greeting,
    /// The server answered NO or BAD to LOGIN: wrong password, or the proxy refused.
    LoginRejected,
    /// A command other than LOGIN failed (SELECT, FETCH, IDLE, LOGOUT).
    Command,
    /// The server sent something this client cannot parse (a line over the limit, a bad literal).
    Protocol,
    /// The connection closed in the middle of a response.
    Closed,
    /// No answer within `--timeout`.
    Timeout,
    /// Another read or write error on an established connection.
    Io,
    /// Open loop only: an arrival was dropped because `--max-inflight` connections were pending
    /// (the target cannot keep up with the offered rate).
    Overload,
}

impl ErrorKind {
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Greeting => "greeting",
            ErrorKind::LoginRejected => "login-rejected",
            ErrorKind::Command => "command",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Overload => "overload",
        }
    }
}

#[derive(Debug)]
pub struct BenchError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl BenchError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        BenchError {
            kind,
            detail: detail.into(),
        }
    }

    /// An I/O error on an established connection: EOF is `Closed`, anything else `Io`.
    pub fn io(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => ErrorKind::Closed,
            _ => ErrorKind::Io,
        };
        BenchError::new(kind, e.to_string())
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

/// How many samples of error text are kept: enough to see what happened, bounded whatever the
/// number of errors.
const SAMPLES: usize = 5;

/// Errors counted by kind, with the first few messages kept as samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ErrorTally {
    pub total: u64,
    pub by_kind: BTreeMap<&'static str, u64>,
    pub samples: Vec<String>,
}

impl ErrorTally {
    pub fn add(&mut self, e: &BenchError) {
        self.total += 1;
        *self.by_kind.entry(e.kind.name()).or_default() += 1;
        if self.samples.len() < SAMPLES {
            self.samples.push(e.to_string());
        }
    }

    pub fn merge(&mut self, other: &ErrorTally) {
        self.total += other.total;
        for (k, v) in &other.by_kind {
            *self.by_kind.entry(k).or_default() += v;
        }
        for s in &other.samples {
            if self.samples.len() < SAMPLES {
                self.samples.push(s.clone());
            }
        }
    }

    /// `0`, or `12 (connect 10, timeout 2)` for a table cell.
    pub fn cell(&self) -> String {
        if self.total == 0 {
            return "0".into();
        }
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!("{} ({})", self.total, kinds.join(", "))
    }
}
