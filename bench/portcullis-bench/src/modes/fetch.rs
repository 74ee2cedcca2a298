//! `fetch`: relay throughput of a large message; `smtp-send`, its SMTP twin, the other way.
//!
//! Each of `--clients` sessions logs in, SELECTs INBOX, finds the largest message (or uses
//! `--message`), FETCHes it once to warm caches, then all start together and FETCH it back to back
//! for `--duration`. MiB/s counts literal bytes only; CPU of the metered processes is read across
//! the timed part only, while the sessions are alive (a forking server's per-session child counts).
//! Over SMTP each session logs in (EHLO, AUTH PLAIN), sends a message of `--message-mib` MiB once
//! to warm up, then sends it back to back (MAIL, RCPT, DATA, the message, the dot, `250`, and the
//! next MAIL on the same connection); MiB/s counts the message's bytes.

use super::{cpu_delta, Ctx, SharedCtx};
use crate::error::{BenchError, ErrorKind, ErrorTally};
use crate::latency::{Latency, LatencySummary};
use crate::session::Session;
use crate::smtp;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;

const MIB: f64 = 1024.0 * 1024.0;

/// The envelope sender of `smtp-send`'s messages.
const SENDER: &str = "bench@portcullis.test";

pub struct FetchOptions {
    pub clients: usize,
    pub duration: Duration,
    /// Sequence number to fetch; `None`: the largest message of INBOX.
    pub message: Option<u32>,
    /// SMTP: the size of the message sent, in bytes.
    pub send_bytes: usize,
    /// SMTP: the envelope recipient.
    pub rcpt: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct FetchResult {
    pub clients: usize,
    /// Clients that got through login and the warm-up FETCH.
    pub ready_clients: usize,
    pub message_bytes: Option<u64>,
    pub fetches: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
    /// One FETCH, command sent → tagged OK.
    pub latency: LatencySummary,
    pub errors: ErrorTally,
    pub cpu_seconds: Option<f64>,
    pub cpu_ms_per_mib: Option<f64>,
}

/// A logged-in session ready to move its message once more.
struct Ready {
    session: Session,
    work: Work,
    size: u64,
}

/// What one repetition is.
enum Work {
    /// IMAP: FETCH this sequence number.
    Fetch(u32),
    /// SMTP: send this message (shared by the clients) to this recipient.
    Send(Arc<Vec<u8>>, Arc<str>),
}

impl Ready {
    /// One FETCH or one sent message, under `--timeout`: the bytes moved.
    async fn once(&mut self, ctx: &Ctx, tag: &str) -> Result<u64, BenchError> {
        match (&mut self.session, &self.work) {
            (Session::Imap(s), Work::Fetch(seq)) => {
                ctx.step("FETCH", s.fetch_body(tag, *seq)).await
            }
            (Session::Smtp(s), Work::Send(m, to)) => ctx.step("DATA", s.send(SENDER, to, m)).await,
            _ => Err(BenchError::new(
                ErrorKind::Protocol,
                "session and work disagree",
            )),
        }
    }
}

async fn prepare(
    ctx: &SharedCtx,
    n: usize,
    message: Option<u32>,
    outgoing: Option<(Arc<Vec<u8>>, Arc<str>)>,
) -> Result<Ready, BenchError> {
    let who = ctx.target.identity(false);
    let conn = ctx.step("connect", ctx.target.connect(&who)).await?;
    let (user, password) = ctx.user(n);
    let mut session = Session::log_in(ctx, conn.stream, user, password).await?;
    let work = match (&mut session, outgoing) {
        (Session::Smtp(_), Some((m, to))) => Work::Send(m, to),
        (Session::Imap(s), _) => {
            ctx.step("SELECT", s.select("INBOX")).await?;
            Work::Fetch(match message {
                Some(m) => m,
                None => ctx.step("FETCH sizes", s.largest_message()).await?.0,
            })
        }
        (Session::Smtp(_), None) => {
            return Err(BenchError::new(ErrorKind::Protocol, "no message to send"))
        }
    };
    let mut ready = Ready {
        session,
        work,
        size: 0,
    };
    ready.size = ready.once(ctx, "w").await?;
    Ok(ready)
}

#[derive(Default)]
struct ClientResult {
    latency: Latency,
    errors: ErrorTally,
    fetches: u64,
    bytes: u64,
    size: Option<u64>,
    ready: bool,
}

pub async fn run(ctx: SharedCtx, opts: &FetchOptions) -> FetchResult {
    let clients = opts.clients.max(1);
    // Every client waits here, ready or not, so the timed part starts for all at once.
    let barrier = Arc::new(Barrier::new(clients + 1));
    // ... and here when done, still logged in: CPU is read at that point, with every session (and
    // a forking server's per-session process) still alive.
    let done = Arc::new(Barrier::new(clients + 1));
    let bytes_so_far = Arc::new(AtomicU64::new(0));
    let duration = opts.duration;
    let outgoing = (ctx.protocol == crate::session::Protocol::Smtp).then(|| {
        let m = smtp::message(opts.send_bytes, SENDER, &opts.rcpt);
        (Arc::new(m), Arc::<str>::from(opts.rcpt.as_str()))
    });
    let mut set = JoinSet::new();
    for c in 0..clients {
        let (ctx, barrier, bytes_so_far) = (ctx.clone(), barrier.clone(), bytes_so_far.clone());
        let done = done.clone();
        let (message, outgoing) = (opts.message, outgoing.clone());
        set.spawn(async move {
            let mut r = ClientResult::default();
            let ready = prepare(&ctx, c, message, outgoing).await;
            barrier.wait().await;
            let mut ready = match ready {
                Ok(x) => x,
                Err(e) => {
                    r.errors.add(&e);
                    done.wait().await;
                    return r;
                }
            };
            r.ready = true;
            r.size = Some(ready.size);
            let end = Instant::now() + duration;
            let mut i = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                let tag = format!("f{i}");
                i += 1;
                match ready.once(&ctx, &tag).await {
                    Ok(n) => {
                        r.latency.record(t0.elapsed());
                        r.fetches += 1;
                        r.bytes += n;
                        bytes_so_far.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // The session is in an unknown state after a failed FETCH (or DATA):
                        // stop it.
                        r.errors.add(&e);
                        break;
                    }
                }
            }
            done.wait().await;
            let _ = ready.session.log_out(&ctx).await;
            r
        });
    }

    barrier.wait().await;
    let cpu0 = ctx.meter.cpu_seconds();
    let start = Instant::now();
    let bar = ctx.bar(duration.as_millis() as u64, "fetch");
    let mut total = ClientResult::default();
    let mut ready_clients = 0;
    let mut cpu1 = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut seconds = 0.0;
    let all_done = done.wait();
    tokio::pin!(all_done);
    let mut finished = false;
    loop {
        tokio::select! {
            // Biased, this branch first: once every client is done, the reading must be taken
            // before the last client's result (and the end of the set) is seen.
            biased;
            _ = &mut all_done, if !finished => {
                finished = true;
                cpu1 = ctx.meter.cpu_seconds();
                seconds = start.elapsed().as_secs_f64();
            }
            r = set.join_next() => match r {
                None => break,
                Some(Ok(c)) => {
                    ready_clients += c.ready as usize;
                    total.latency.merge(&c.latency);
                    total.errors.merge(&c.errors);
                    total.fetches += c.fetches;
                    total.bytes += c.bytes;
                    total.size = total.size.or(c.size);
                }
                Some(Err(e)) => total
                    .errors
                    .add(&BenchError::new(ErrorKind::Io, format!("client task: {e}"))),
            },
            _ = tick.tick() => {
                bar.set_position(start.elapsed().as_millis() as u64);
                let mib = bytes_so_far.load(Ordering::Relaxed) as f64 / MIB;
                bar.set_message(format!("{mib:.0} MiB"));
            }
        }
    }
    bar.finish_and_clear();
    let cpu = cpu_delta(cpu0, cpu1);
    let mib = total.bytes as f64 / MIB;
    FetchResult {
        clients,
        ready_clients,
        message_bytes: total.size,
        fetches: total.fetches,
        bytes: total.bytes,
        seconds,
        mib_per_s: if seconds > 0.0 { mib / seconds } else { 0.0 },
        latency: total.latency.summary(),
        errors: total.errors,
        cpu_seconds: cpu,
        cpu_ms_per_mib: cpu.filter(|_| mib > 0.0).map(|c| c * 1000.0 / mib),
    }
}
