//! `idle`: what many parked sessions cost the proxy.
//!
//! Opens `--sessions` sessions (`--parallel` at a time), each connect → LOGIN → SELECT INBOX →
//! IDLE (until the server's `+`), and keeps them open. Memory (RSS and PSS of the metered
//! processes) is read after `--settle` before any session, with all of them open, and after they
//! are closed; the difference divided by the sessions open is the cost of one idle session.

use super::{cpu_delta, SharedCtx};
use crate::error::{BenchError, ErrorTally};
use crate::imap::Session;
use crate::proc_stats::Memory;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub struct IdleOptions {
    pub sessions: usize,
    pub parallel: usize,
    /// Wait before each memory reading, for the processes to settle (allocator, lazy frees).
    pub settle: Duration,
    /// How long to keep the sessions open after measuring.
    pub hold: Duration,
    /// Keep the sessions open (after `hold`) for as long as this file exists, and create
    /// `ready` once measured: a second run can then measure its own sessions on top of these,
    /// before the allocator has free memory from them to reuse.
    pub hold_while: Option<std::path::PathBuf>,
    pub ready: Option<std::path::PathBuf>,
    pub resume: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleResult {
    pub requested: usize,
    pub opened: usize,
    pub errors: ErrorTally,
    pub open_seconds: f64,
    pub before: Option<Memory>,
    pub during: Option<Memory>,
    pub after_close: Option<Memory>,
    pub rss_kib_per_session: Option<f64>,
    pub pss_kib_per_session: Option<f64>,
    /// CPU of the metered processes while opening the sessions, per session opened.
    pub cpu_ms_per_session: Option<f64>,
}

async fn open_one(ctx: &SharedCtx, n: usize, resume: bool) -> Result<Session, BenchError> {
    let who = ctx.target.identity(resume);
    let conn = ctx.step("connect", ctx.target.connect(&who)).await?;
    let mut s = Session::new(conn.stream);
    ctx.step("greeting", s.greeting()).await?;
    let (user, password) = ctx.user(n);
    ctx.step("LOGIN", s.login(user, password)).await?;
    ctx.step("SELECT", s.select("INBOX")).await?;
    ctx.step("IDLE", s.idle()).await?;
    Ok(s)
}

pub async fn run(ctx: SharedCtx, opts: &IdleOptions) -> IdleResult {
    tokio::time::sleep(opts.settle).await;
    let before = ctx.meter.memory();
    let cpu0 = ctx.meter.cpu_seconds();
    let bar = ctx.bar(opts.sessions as u64, "idle");
    let gate = Arc::new(Semaphore::new(opts.parallel.max(1)));
    let start = Instant::now();
    let mut set = JoinSet::new();
    for n in 0..opts.sessions {
        let (ctx, gate, resume) = (ctx.clone(), gate.clone(), opts.resume);
        set.spawn(async move {
            // The permit is held only while opening: an open session no longer counts.
            let _permit = gate.acquire_owned().await;
            open_one(&ctx, n, resume).await
        });
    }
    let mut sessions = Vec::with_capacity(opts.sessions);
    let mut errors = ErrorTally::default();
    while let Some(r) = set.join_next().await {
        bar.inc(1);
        match r {
            Ok(Ok(s)) => sessions.push(s),
            Ok(Err(e)) => errors.add(&e),
            Err(e) => errors.add(&BenchError::new(
                crate::error::ErrorKind::Io,
                format!("session task: {e}"),
            )),
        }
        bar.set_message(format!("{} open, {} failed", sessions.len(), errors.total));
    }
    let open_seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let cpu = cpu_delta(cpu0, ctx.meter.cpu_seconds());
    tokio::time::sleep(opts.settle).await;
    let during = ctx.meter.memory();
    if let Some(ready) = &opts.ready {
        if let Err(e) = std::fs::write(ready, b"measured\n") {
            eprintln!("portcullis-bench: {}: {e}", ready.display());
        }
    }
    tokio::time::sleep(opts.hold).await;
    if let Some(path) = &opts.hold_while {
        while path.exists() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let opened = sessions.len();
    // Closing the sockets is enough: the proxy sees EOF on each.
    drop(sessions);
    tokio::time::sleep(opts.settle).await;
    let after_close = ctx.meter.memory();
    let per = |f: fn(&Memory) -> u64| match (before, during) {
        (Some(b), Some(d)) if opened > 0 => Some((f(&d) as f64 - f(&b) as f64) / opened as f64),
        _ => None,
    };
    IdleResult {
        requested: opts.sessions,
        opened,
        errors,
        open_seconds,
        before,
        during,
        after_close,
        rss_kib_per_session: per(|m| m.rss_kib),
        pss_kib_per_session: per(|m| m.pss_kib),
        cpu_ms_per_session: cpu
            .filter(|_| opened > 0)
            .map(|c| c * 1000.0 / opened as f64),
    }
}
