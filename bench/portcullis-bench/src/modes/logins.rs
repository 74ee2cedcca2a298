//! `logins`: how fast and how evenly the target logs users in.
//!
//! One login is connect → (TLS handshake) → greeting → LOGIN → tagged OK; its latency is measured
//! up to that OK, then the client sends LOGOUT and closes (not timed, as in bench/load.py). Over
//! SMTP (`smtp-logins`): connect → (TLS) → 220 → EHLO → AUTH PLAIN → 235, then QUIT (untimed).
//!
//! * Closed loop: `--clients` tasks, each doing logins back to back for `--duration`. Measures the
//!   most the target sustains at that concurrency; latency includes no queueing outside it.
//! * Open loop: `--rate` arrivals per second on a fixed schedule, each a new connection, whatever
//!   the target's speed. Latency runs from the *scheduled* arrival time, so a target (or a client)
//!   that falls behind shows it in p99 instead of silently lowering the load (no coordinated
//!   omission). Arrivals beyond `--max-inflight` pending ones are dropped and counted `overload`.
//!
//! Several `--clients` or `--rate` values make a sweep, one step each.

use super::{cpu_delta, SharedCtx};
use crate::error::{BenchError, ErrorKind, ErrorTally};
use crate::latency::{Latency, LatencySummary};
use crate::session::Session;
use crate::target::ClientIdentity;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// After a failed login a closed-loop client waits this long, so a target that is down (refusing
/// in microseconds) yields a readable error count instead of a busy loop on two cores.
const ERROR_BACKOFF: Duration = Duration::from_millis(50);

pub struct LoginOptions {
    /// Closed-loop concurrencies (used when `rates` is empty).
    pub clients: Vec<usize>,
    /// Open-loop arrival rates per second.
    pub rates: Vec<f64>,
    /// Open loop: how many simulated clients the arrivals rotate over (their TLS session caches).
    pub identities: usize,
    pub max_inflight: usize,
    pub duration: Duration,
    pub resume: bool,
    /// Pause between the steps of a sweep, so one step's stragglers do not load the next.
    pub pause: Duration,
}

/// The result of one step (one concurrency or one rate).
#[derive(Clone, Debug, Serialize)]
pub struct LoginStep {
    /// "closed" or "open".
    pub loop_kind: &'static str,
    /// Closed loop: concurrent clients. Open loop: simulated client identities.
    pub clients: usize,
    /// Open loop: the arrival rate asked for.
    pub offered_per_s: Option<f64>,
    pub seconds: f64,
    pub logins: u64,
    pub logins_per_s: f64,
    /// connect start (open loop: scheduled arrival) → tagged OK of LOGIN.
    pub latency: LatencySummary,
    pub errors: ErrorTally,
    /// TLS handshakes made and how many of them resumed a session (TLS targets only).
    pub tls_handshakes: Option<u64>,
    pub tls_resumed: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub cpu_ms_per_login: Option<f64>,
}

pub async fn run(ctx: SharedCtx, opts: &LoginOptions) -> Vec<LoginStep> {
    let mut steps = Vec::new();
    let sweep: Vec<Option<f64>> = if opts.rates.is_empty() {
        opts.clients.iter().map(|_| None).collect()
    } else {
        opts.rates.iter().map(|r| Some(*r)).collect()
    };
    for (i, rate) in sweep.into_iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(opts.pause).await;
        }
        let step = match rate {
            None => closed(ctx.clone(), opts.clients[i], opts).await,
            Some(r) => open(ctx.clone(), r, opts).await,
        };
        steps.push(step);
    }
    steps
}

/// What one client (or the whole open loop) collected.
#[derive(Default)]
struct Tally {
    latency: Latency,
    errors: ErrorTally,
    logins: u64,
    handshakes: u64,
    resumed: u64,
}

impl Tally {
    fn add(&mut self, o: Outcome, since: Instant) {
        if let Some(r) = o.resumed {
            self.handshakes += 1;
            self.resumed += r as u64;
        }
        match o.login {
            Ok(done) => {
                self.logins += 1;
                self.latency.record(done - since);
            }
            Err(e) => self.errors.add(&e),
        }
        if let Some(e) = o.logout {
            self.errors.add(&e);
        }
    }

    fn merge(&mut self, o: &Tally) {
        self.latency.merge(&o.latency);
        self.errors.merge(&o.errors);
        self.logins += o.logins;
        self.handshakes += o.handshakes;
        self.resumed += o.resumed;
    }
}

struct Outcome {
    /// Whether the TLS handshake resumed; `None` for plain TCP or when it never completed.
    resumed: Option<bool>,
    /// When LOGIN's tagged OK arrived, or why the login failed.
    login: Result<Instant, BenchError>,
    /// A failed LOGOUT after a good login (counted, the login still counts).
    logout: Option<BenchError>,
}

async fn cycle(ctx: &SharedCtx, who: &ClientIdentity, n: usize) -> Outcome {
    let (user, password) = ctx.user(n);
    let mut resumed = None;
    let login = async {
        let conn = ctx.step("connect", ctx.target.connect(who)).await?;
        resumed = conn.resumed;
        Session::log_in(ctx, conn.stream, user, password).await
    }
    .await;
    match login {
        Ok(mut s) => {
            let done = Instant::now();
            let logout = s.log_out(ctx).await.err();
            Outcome {
                resumed,
                login: Ok(done),
                logout,
            }
        }
        Err(e) => Outcome {
            resumed,
            login: Err(e),
            logout: None,
        },
    }
}

/// Shows elapsed time and logins so far until dropped.
fn ticker(ctx: &SharedCtx, label: String, duration: Duration, count: Arc<AtomicU64>) -> Ticker {
    let bar = ctx.bar(duration.as_millis() as u64, &label);
    let b = bar.clone();
    let start = Instant::now();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            b.set_position(start.elapsed().as_millis() as u64);
            b.set_message(format!("{} logins", count.load(Ordering::Relaxed)));
        }
    });
    Ticker { bar, task }
}

struct Ticker {
    bar: indicatif::ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
        self.bar.finish_and_clear();
    }
}

async fn closed(ctx: SharedCtx, clients: usize, opts: &LoginOptions) -> LoginStep {
    let count = Arc::new(AtomicU64::new(0));
    let _ticker = ticker(
        &ctx,
        format!("{clients} clients"),
        opts.duration,
        count.clone(),
    );
    let cpu0 = ctx.meter.cpu_seconds();
    let start = Instant::now();
    let end = start + opts.duration;
    let mut set = JoinSet::new();
    for c in 0..clients.max(1) {
        let ctx = ctx.clone();
        let count = count.clone();
        let who = ctx.target.identity(opts.resume);
        set.spawn(async move {
            let mut t = Tally::default();
            // Client c's k-th login is user c + k × clients: together the clients go through
            // every user in turn (with one user, or a user per client, nothing changes).
            let mut n = c;
            while Instant::now() < end {
                let t0 = Instant::now();
                let o = cycle(&ctx, &who, n).await;
                n += clients.max(1);
                let failed = o.login.is_err();
                t.add(o, t0);
                count.fetch_add(1, Ordering::Relaxed);
                if failed {
                    tokio::time::sleep(ERROR_BACKOFF).await;
                }
            }
            t
        });
    }
    let mut total = Tally::default();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(t) => total.merge(&t),
            Err(e) => total
                .errors
                .add(&BenchError::new(ErrorKind::Io, format!("client task: {e}"))),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    step(
        "closed",
        clients,
        None,
        seconds,
        total,
        cpu0,
        ctx.meter.cpu_seconds(),
    )
}

async fn open(ctx: SharedCtx, rate: f64, opts: &LoginOptions) -> LoginStep {
    let rate = rate.max(0.001);
    let count = Arc::new(AtomicU64::new(0));
    let _ticker = ticker(&ctx, format!("{rate}/s"), opts.duration, count.clone());
    let ids: Vec<ClientIdentity> = (0..opts.identities.max(1))
        .map(|_| ctx.target.identity(opts.resume))
        .collect();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let inflight = Arc::new(AtomicUsize::new(0));
    let arrivals = (rate * opts.duration.as_secs_f64()).floor() as u64;
    let cpu0 = ctx.meter.cpu_seconds();
    let start = Instant::now();
    let mut set = JoinSet::new();
    for i in 0..arrivals {
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(at).await;
        // Reap finished tasks as we go, so a long run does not keep every result.
        while set.try_join_next().is_some() {}
        if inflight.load(Ordering::Relaxed) >= opts.max_inflight {
            let e = BenchError::new(ErrorKind::Overload, "max-inflight connections pending");
            lock(&tally).errors.add(&e);
            continue;
        }
        inflight.fetch_add(1, Ordering::Relaxed);
        let (ctx, who) = (ctx.clone(), ids[i as usize % ids.len()].clone());
        let (tally, inflight, count) = (tally.clone(), inflight.clone(), count.clone());
        set.spawn(async move {
            let o = cycle(&ctx, &who, i as usize).await;
            lock(&tally).add(o, at);
            inflight.fetch_sub(1, Ordering::Relaxed);
            count.fetch_add(1, Ordering::Relaxed);
        });
    }
    while set.join_next().await.is_some() {}
    let cpu1 = ctx.meter.cpu_seconds();
    // Throughput over the arrival window: the rate the target kept up with.
    let seconds = opts.duration.as_secs_f64();
    let total = std::mem::take(&mut *lock(&tally));
    step(
        "open",
        opts.identities,
        Some(rate),
        seconds,
        total,
        cpu0,
        cpu1,
    )
}

/// The tally survives a panicking holder (none is expected): a poisoned lock is still read.
fn lock(t: &Mutex<Tally>) -> std::sync::MutexGuard<'_, Tally> {
    t.lock().unwrap_or_else(|p| p.into_inner())
}

fn step(
    loop_kind: &'static str,
    clients: usize,
    offered_per_s: Option<f64>,
    seconds: f64,
    t: Tally,
    cpu0: Option<f64>,
    cpu1: Option<f64>,
) -> LoginStep {
    let cpu = cpu_delta(cpu0, cpu1);
    LoginStep {
        loop_kind,
        clients,
        offered_per_s,
        seconds,
        logins: t.logins,
        logins_per_s: if seconds > 0.0 {
            t.logins as f64 / seconds
        } else {
            0.0
        },
        latency: t.latency.summary(),
        errors: t.errors,
        tls_handshakes: (t.handshakes > 0).then_some(t.handshakes),
        tls_resumed: (t.handshakes > 0).then_some(t.resumed),
        cpu_seconds: cpu,
        cpu_ms_per_login: cpu
            .filter(|_| t.logins > 0)
            .map(|c| c * 1000.0 / t.logins as f64),
    }
}
