//! `returning`: TLS session resumption when many distinct clients come back.
//!
//! `--clients` simulated clients, each with a session cache of its own as a real mail client has,
//! connect twice, `--parallel` at a time. One visit is connect → TLS handshake → greeting line →
//! close (close_notify), no LOGIN: the handshake is what is measured. Reading the greeting through
//! TLS is what makes the client take in the session tickets a TLS 1.3 server sends right after its
//! handshake (before the greeting): without that read a client would close with an empty cache.
//!
//! * Pass 1: fresh caches, so every handshake is a full one.
//! * Pass 2: the same clients in the same order, each offering its session. A client comes back
//!   only after all the others have been, which is the hard case for a server-side session cache
//!   smaller than `--clients` (tickets, kept by the clients, do not care). That is what
//!   `logins --resume`, with a few clients coming back at once, cannot show.
//!
//! Per pass: handshakes completed, how many resumed, errors, time, and CPU of the metered
//! processes per handshake.

use super::{cpu_delta, SharedCtx};
use crate::error::{BenchError, ErrorKind, ErrorTally};
use crate::imap::Session;
use crate::target::ClientIdentity;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Wait after a pass before reading CPU: the target is still closing the pass's last connections
/// (and a forking server reaping their processes), work that belongs to that pass, not the next.
const SETTLE: Duration = Duration::from_millis(500);

pub struct ReturningOptions {
    pub clients: usize,
    pub parallel: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReturningResult {
    pub clients: usize,
    pub parallel: usize,
    /// Fresh session caches: full handshakes.
    pub pass1: PassResult,
    /// The same clients back, each offering its session.
    pub pass2: PassResult,
}

#[derive(Clone, Debug, Serialize)]
pub struct PassResult {
    /// "full handshakes" or "returning".
    pub label: &'static str,
    /// TLS handshakes completed (a failure after the handshake, e.g. no greeting, still counts
    /// here, and as an error).
    pub handshakes: u64,
    /// Handshakes that resumed a session.
    pub resumed: u64,
    pub resumed_percent: Option<f64>,
    pub errors: ErrorTally,
    pub seconds: f64,
    pub cpu_seconds: Option<f64>,
    pub cpu_ms_per_handshake: Option<f64>,
}

/// What the workers of one pass collected.
#[derive(Default)]
struct Tally {
    handshakes: u64,
    resumed: u64,
    errors: ErrorTally,
}

pub async fn run(ctx: SharedCtx, opts: &ReturningOptions) -> ReturningResult {
    let clients = opts.clients.max(1);
    let parallel = opts.parallel.clamp(1, clients);
    let ids: Arc<Vec<ClientIdentity>> =
        Arc::new((0..clients).map(|_| ctx.target.identity(true)).collect());
    let pass1 = pass(&ctx, &ids, parallel, "full handshakes").await;
    let pass2 = pass(&ctx, &ids, parallel, "returning").await;
    ReturningResult {
        clients,
        parallel,
        pass1,
        pass2,
    }
}

/// Every client visits once; `parallel` workers take the clients in order.
async fn pass(
    ctx: &SharedCtx,
    ids: &Arc<Vec<ClientIdentity>>,
    parallel: usize,
    label: &'static str,
) -> PassResult {
    let bar = ctx.bar(ids.len() as u64, label);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu0 = ctx.meter.cpu_seconds();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..parallel {
        let (ctx, ids, next, bar) = (ctx.clone(), ids.clone(), next.clone(), bar.clone());
        set.spawn(async move {
            let mut t = Tally::default();
            while let Some(who) = ids.get(next.fetch_add(1, Ordering::Relaxed)) {
                let (resumed, error) = visit(&ctx, who).await;
                if let Some(r) = resumed {
                    t.handshakes += 1;
                    t.resumed += r as u64;
                }
                if let Some(e) = error {
                    t.errors.add(&e);
                }
                bar.inc(1);
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(t) => {
                total.handshakes += t.handshakes;
                total.resumed += t.resumed;
                total.errors.merge(&t.errors);
            }
            Err(e) => total
                .errors
                .add(&BenchError::new(ErrorKind::Io, format!("client task: {e}"))),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    tokio::time::sleep(SETTLE).await;
    let cpu = cpu_delta(cpu0, ctx.meter.cpu_seconds());
    let h = total.handshakes;
    PassResult {
        label,
        handshakes: h,
        resumed: total.resumed,
        resumed_percent: (h > 0).then(|| total.resumed as f64 * 100.0 / h as f64),
        errors: total.errors,
        seconds,
        cpu_seconds: cpu,
        cpu_ms_per_handshake: cpu.filter(|_| h > 0).map(|c| c * 1000.0 / h as f64),
    }
}

/// One visit: whether the handshake resumed (`None` when it never completed), and what failed.
async fn visit(ctx: &SharedCtx, who: &ClientIdentity) -> (Option<bool>, Option<BenchError>) {
    let conn = match ctx.step("connect", ctx.target.connect(who)).await {
        Ok(c) => c,
        Err(e) => return (None, Some(e)),
    };
    let resumed = conn.resumed;
    let mut s = Session::new(conn.stream);
    let greeting = ctx.step("greeting", s.greeting()).await;
    // A failed close is the server's business once the greeting (and the tickets) arrived.
    let _ = ctx.step("close", s.close()).await;
    (resumed, greeting.err())
}
