//! The measurements. Each mode is one file; this one holds what they share: the run context,
//! the per-operation timeout and the progress bar.

pub mod fetch;
pub mod idle;
pub mod logins;
pub mod returning;

use crate::error::{BenchError, ErrorKind};
use crate::proc_stats::Meter;
use crate::session::Protocol;
use crate::target::Target;
use indicatif::{ProgressBar, ProgressStyle};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Everything a mode needs to know about where and how to connect.
pub struct Ctx {
    pub target: Target,
    /// What the logins and fetch modes speak (idle and returning: IMAP only).
    pub protocol: Protocol,
    /// user/password pairs; login (or session) `i` uses pair `i % len`.
    pub users: Vec<(String, String)>,
    pub meter: Meter,
    /// Bound on each step of a session (connect, greeting, one command).
    pub timeout: Duration,
    pub progress: bool,
}

impl Ctx {
    pub fn user(&self, i: usize) -> (&str, &str) {
        let (u, p) = &self.users[i % self.users.len()];
        (u, p)
    }

    /// Runs one step under `--timeout`: a server that stops answering is a counted `timeout`,
    /// not a stuck benchmark.
    pub async fn step<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, BenchError>>,
    ) -> Result<T, BenchError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(BenchError::new(
                ErrorKind::Timeout,
                format!("{what}: no answer in {:?}", self.timeout),
            )),
        }
    }

    /// A progress bar on stderr (hidden when stderr is not a terminal, or with `--quiet`).
    pub fn bar(&self, len: u64, prefix: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(prefix.to_string());
        bar
    }
}

pub type SharedCtx = Arc<Ctx>;

/// CPU seconds used by the metered processes between two readings.
pub fn cpu_delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}
