//! portcullis-bench: an IMAP load generator and meter for Portcullis (or any IMAP server).
//!
//! `main` parses the command line, builds the run context, runs one mode and writes the report;
//! or, for `compare`, reads earlier reports and prints them side by side.
//! Exit status: 0 when something succeeded, 1 when every operation failed (the table is still
//! printed), 2 for a usage or setup error (bad CA file, unwritable output, unreadable JSON).

#![forbid(unsafe_code)]

mod compare;
mod error;
mod imap;
mod latency;
mod modes;
mod proc_stats;
mod report;
mod session;
mod smtp;
mod source;
mod svg;
mod target;

use clap::{Args, Parser, Subcommand};
use modes::fetch::FetchOptions;
use modes::idle::IdleOptions;
use modes::logins::LoginOptions;
use modes::returning::ReturningOptions;
use modes::Ctx;
use proc_stats::Meter;
use report::{Output, TargetInfo};
use session::Protocol;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use target::Target;

#[derive(Parser)]
#[command(
    version,
    about = "IMAP (and SMTP submission) benchmark for Portcullis: logins, FETCH throughput, idle \
             sessions, TLS resumption, sending"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Login latency and rate: closed loop (--clients) or open loop (--rate), sweepable.
    Logins {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: LoginArgs,
    },
    /// FETCH a large message repeatedly: MiB/s and CPU per MiB.
    Fetch {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: FetchArgs,
    },
    /// Park many sessions in IDLE: time to open them and memory per session.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: IdleArgs,
    },
    /// TLS resumption for many distinct returning clients: handshakes only, two passes.
    Returning {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: ReturningArgs,
    },
    /// SMTP submission logins: connect, 220, EHLO, AUTH PLAIN, 235 (then QUIT); as `logins`.
    SmtpLogins {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: LoginArgs,
    },
    /// SMTP submission: send a large message back to back: MiB/s and CPU per MiB.
    SmtpSend {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        args: SendArgs,
    },
    /// A few seconds of each mode (for CI): exits 1 if any mode had no success at all.
    Smoke {
        #[command(flatten)]
        common: Common,
        /// Seconds of logins and of FETCH each.
        #[arg(long, default_value_t = 2.0)]
        duration: f64,
        /// Idle sessions to open.
        #[arg(long, default_value_t = 20)]
        sessions: usize,
    },
    /// Side-by-side tables of earlier runs' --json files, with ratios against two targets.
    Compare(CompareArgs),
}

/// Where to connect, as whom, what to meter, where to write.
#[derive(Args)]
struct Common {
    /// HOST:PORT of the IMAP (smtp-*: SMTP submission) server or proxy.
    #[arg(long)]
    target: String,
    /// Label for the table rows and the JSON (default: the address).
    #[arg(long)]
    name: Option<String>,
    /// Implicit TLS (IMAPS).
    #[arg(long)]
    tls: bool,
    /// CA certificate(s) (PEM) that signed the target's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Name checked against the certificate (default: the target's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Reuse each simulated client's TLS session (resumed handshakes).
    #[arg(long)]
    resume: bool,
    /// Local address to connect from (IPv4, IPv6, or a range 127.0.0.1-127.0.0.8); repeatable,
    /// used round-robin by the connections.
    #[arg(long = "source")]
    sources: Vec<String>,
    /// USER/PASSWORD to log in as; several are used round-robin (default alice/alicepw).
    #[arg(long = "user")]
    users: Vec<String>,
    /// More users, one USER/PASSWORD a line (blank lines and `#` comments skipped): for many
    /// users at once (e.g. 10,000), after any --user.
    #[arg(long)]
    users_file: Option<PathBuf>,
    /// Process to meter (CPU from /proc/PID/stat, memory from smaps_rollup); repeatable.
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Meter each --pid's descendants too (forking servers: perdition, Dovecot).
    #[arg(long)]
    tree: bool,
    /// Bound on each step of a session (connect, greeting, one command), seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct LoginArgs {
    /// Closed loop: concurrent clients; a comma list sweeps (e.g. 1,4,16,64).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    clients: Vec<usize>,
    /// Open loop: new connections per second; a comma list sweeps (e.g. 50,100,200).
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Open loop: simulated clients the arrivals rotate over (their own TLS session caches).
    #[arg(long, default_value_t = 100)]
    identities: usize,
    /// Open loop: arrivals beyond this many pending connections are dropped (counted "overload").
    #[arg(long, default_value_t = 2000)]
    max_inflight: usize,
    /// Seconds per step.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds between the steps of a sweep.
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
    /// Write an SVG plot of p50/p99 latency against logins/s here (one point per step).
    #[arg(long)]
    svg: Option<PathBuf>,
}

#[derive(Args)]
struct FetchArgs {
    /// Concurrent sessions fetching.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds of FETCHing.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Sequence number of the message (default: the largest in INBOX).
    #[arg(long)]
    message: Option<u32>,
}

#[derive(Args)]
struct SendArgs {
    /// Concurrent sessions sending.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Size of the message sent, in MiB.
    #[arg(long, default_value_t = 10.0)]
    message_mib: f64,
    /// Envelope recipient (the sender is bench@portcullis.test).
    #[arg(long, default_value = "discard@example.net")]
    rcpt: String,
}

#[derive(Args)]
struct IdleArgs {
    /// Sessions to open and park in IDLE.
    #[arg(long, default_value_t = 500)]
    sessions: usize,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// Seconds to wait before each memory reading.
    #[arg(long, default_value_t = 1.0)]
    settle: f64,
    /// Seconds to keep the sessions open after measuring.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Then keep them open as long as this file exists (for a second run measured on top).
    #[arg(long)]
    hold_while: Option<PathBuf>,
    /// Create this file once the memory with all sessions open is read.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

#[derive(Args)]
struct ReturningArgs {
    /// Distinct simulated clients, each with its own TLS session cache.
    #[arg(long, default_value_t = 10000)]
    clients: usize,
    /// Handshakes under way at once.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
}

#[derive(Args)]
struct CompareArgs {
    /// Target name (--name of its runs) the ratios are taken against first, e.g. nginx.
    #[arg(long)]
    baseline: String,
    /// Target name of the server without proxy, e.g. dovecot: the "× direct" ratios.
    #[arg(long)]
    direct: String,
    /// Also write the tables here.
    #[arg(long)]
    markdown_out: Option<PathBuf>,
    /// Result files written by --json (any modes).
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() && s > 0.0 { s } else { 0.0 })
}

/// The --user pairs, then those of --users-file; alice/alicepw when neither gives any.
fn users(c: &Common) -> Result<Vec<(String, String)>, String> {
    let pair = |u: &str, whence: &str| {
        u.split_once('/')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .ok_or_else(|| format!("{whence} {u:?}: expected USER/PASSWORD"))
    };
    let mut users = c
        .users
        .iter()
        .map(|u| pair(u, "--user"))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(path) = &c.users_file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            users.push(pair(line, &format!("{} line {}:", path.display(), n + 1))?);
        }
    }
    if users.is_empty() {
        users.push(("alice".into(), "alicepw".into()));
    }
    Ok(users)
}

fn build_ctx(c: &Common, protocol: Protocol) -> Result<Ctx, String> {
    let target = Target::new(
        &c.target,
        c.tls,
        c.ca.as_deref(),
        c.server_name.as_deref(),
        source::parse(&c.sources)?,
    )?;
    let users = users(c)?;
    if c.resume && !c.tls {
        return Err("--resume needs --tls".into());
    }
    Ok(Ctx {
        target,
        protocol,
        users,
        meter: Meter {
            pids: c.pids.clone(),
            tree: c.tree,
        },
        timeout: secs(c.timeout),
        progress: !c.quiet && std::io::stderr().is_terminal(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Mode::Compare(a) = &cli.mode {
        return match compare::run(&a.files, &a.baseline, &a.direct, a.markdown_out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("portcullis-bench compare: {e}");
                ExitCode::from(2)
            }
        };
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-bench: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli.mode)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("portcullis-bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the mode, prints the table and writes the files; `Ok(false)` when nothing succeeded.
async fn run(mode: Mode) -> Result<bool, String> {
    let common = match &mode {
        Mode::Logins { common, .. }
        | Mode::Fetch { common, .. }
        | Mode::Idle { common, .. }
        | Mode::Returning { common, .. }
        | Mode::SmtpLogins { common, .. }
        | Mode::SmtpSend { common, .. }
        | Mode::Smoke { common, .. } => common,
        Mode::Compare(_) => return Err("compare measures nothing".into()),
    };
    let returning = matches!(mode, Mode::Returning { .. });
    if returning && !common.tls {
        return Err("returning measures TLS session resumption: it needs --tls".into());
    }
    let protocol = match mode {
        Mode::SmtpLogins { .. } | Mode::SmtpSend { .. } => Protocol::Smtp,
        _ => Protocol::Imap,
    };
    let ctx = Arc::new(build_ctx(common, protocol)?);
    let mut out = Output {
        tool: "portcullis-bench",
        version: env!("CARGO_PKG_VERSION"),
        mode: "",
        started_unix: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        target: TargetInfo {
            name: common.name.clone().unwrap_or_else(|| common.target.clone()),
            addr: common.target.clone(),
            tls: common.tls,
            // `returning`'s clients always keep their sessions: its rows are resumed-TLS rows.
            resume: common.resume || returning,
            users: ctx.users.len(),
            pids: common.pids.clone(),
            tree: common.tree,
            sources: ctx.target.sources().iter().map(|a| a.to_string()).collect(),
        },
        logins: Vec::new(),
        fetch: None,
        idle: None,
        returning: None,
    };
    let mut svg_path = None;
    // Smoke fails when any one of its modes had no success; the others when all failed.
    let mut smoke_ok = true;
    match &mode {
        Mode::Logins { args, .. } | Mode::SmtpLogins { args, .. } => {
            out.mode = match protocol {
                Protocol::Imap => "logins",
                Protocol::Smtp => "smtp-logins",
            };
            let opts = LoginOptions {
                clients: args.clients.clone(),
                rates: args.rate.clone(),
                identities: args.identities,
                max_inflight: args.max_inflight.max(1),
                duration: secs(args.duration),
                resume: common.resume,
                pause: secs(args.pause),
            };
            out.logins = modes::logins::run(ctx.clone(), &opts).await;
            svg_path = args.svg.clone();
        }
        Mode::Fetch { args, .. } => {
            out.mode = "fetch";
            let opts = FetchOptions {
                clients: args.clients,
                duration: secs(args.duration),
                message: args.message,
                send_bytes: 0,
                rcpt: String::new(),
            };
            out.fetch = Some(modes::fetch::run(ctx.clone(), &opts).await);
        }
        Mode::SmtpSend { args, .. } => {
            out.mode = "smtp-send";
            let opts = FetchOptions {
                clients: args.clients,
                duration: secs(args.duration),
                message: None,
                send_bytes: (args.message_mib.max(0.0) * 1024.0 * 1024.0) as usize,
                rcpt: args.rcpt.clone(),
            };
            out.fetch = Some(modes::fetch::run(ctx.clone(), &opts).await);
        }
        Mode::Idle { args, .. } => {
            out.mode = "idle";
            let opts = IdleOptions {
                sessions: args.sessions,
                parallel: args.parallel,
                settle: secs(args.settle),
                hold: secs(args.hold),
                hold_while: args.hold_while.clone(),
                ready: args.ready_file.clone(),
                resume: common.resume,
            };
            out.idle = Some(modes::idle::run(ctx.clone(), &opts).await);
        }
        Mode::Returning { args, .. } => {
            out.mode = "returning";
            let opts = ReturningOptions {
                clients: args.clients,
                parallel: args.parallel,
            };
            out.returning = Some(modes::returning::run(ctx.clone(), &opts).await);
        }
        Mode::Smoke {
            duration, sessions, ..
        } => {
            out.mode = "smoke";
            let logins = LoginOptions {
                clients: vec![4],
                rates: Vec::new(),
                identities: 4,
                max_inflight: 100,
                duration: secs(*duration),
                resume: common.resume,
                pause: Duration::ZERO,
            };
            out.logins = modes::logins::run(ctx.clone(), &logins).await;
            let fetch = FetchOptions {
                clients: 1,
                duration: secs(*duration),
                message: None,
                send_bytes: 0,
                rcpt: String::new(),
            };
            out.fetch = Some(modes::fetch::run(ctx.clone(), &fetch).await);
            let idle = IdleOptions {
                sessions: *sessions,
                parallel: 8,
                settle: Duration::from_millis(300),
                hold: Duration::ZERO,
                hold_while: None,
                ready: None,
                resume: common.resume,
            };
            out.idle = Some(modes::idle::run(ctx.clone(), &idle).await);
            smoke_ok = out.logins.iter().all(|s| s.logins > 0)
                && out.fetch.as_ref().is_some_and(|f| f.fetches > 0)
                && out.idle.as_ref().is_some_and(|i| i.opened > 0);
        }
        Mode::Compare(_) => {}
    }

    print!("{}", out.markdown());
    if let Some(path) = &common.json {
        let text = serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &svg_path {
        let title = format!("{} logins: latency against load", out.target.name);
        std::fs::write(path, svg::plot(&title, &out.logins))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(out.any_success() && smoke_ok)
}
