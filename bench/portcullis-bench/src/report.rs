//! The result of a run: one serializable value, written as JSON (`--json`) and as Markdown
//! tables on stdout (one table per mode that ran).

use crate::modes::fetch::FetchResult;
use crate::modes::idle::IdleResult;
use crate::modes::logins::LoginStep;
use crate::modes::returning::ReturningResult;
use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Serialize)]
pub struct Output {
    pub tool: &'static str,
    pub version: &'static str,
    pub mode: &'static str,
    /// Seconds since the epoch at the start of the run.
    pub started_unix: u64,
    pub target: TargetInfo,
    pub logins: Vec<LoginStep>,
    pub fetch: Option<FetchResult>,
    pub idle: Option<IdleResult>,
    pub returning: Option<ReturningResult>,
}

#[derive(Debug, Serialize)]
pub struct TargetInfo {
    /// The label of the table rows (`--name`, else the address).
    pub name: String,
    pub addr: String,
    pub tls: bool,
    pub resume: bool,
    pub users: usize,
    pub pids: Vec<u32>,
    pub tree: bool,
    /// Local addresses the connections were bound to, round robin (`--source`, expanded).
    pub sources: Vec<String>,
}

impl Output {
    /// Whether anything at all succeeded: a run where every operation failed exits non-zero.
    pub fn any_success(&self) -> bool {
        self.logins.iter().any(|s| s.logins > 0)
            || self.fetch.as_ref().is_some_and(|f| f.fetches > 0)
            || self.idle.as_ref().is_some_and(|i| i.opened > 0)
            || self
                .returning
                .as_ref()
                .is_some_and(|r| r.pass1.handshakes + r.pass2.handshakes > 0)
    }

    pub fn markdown(&self) -> String {
        let t = &self.target;
        let mut out = String::new();
        let transport = match (t.tls, t.resume) {
            (false, _) => "plain",
            (true, false) => "TLS (full handshakes)",
            (true, true) => "TLS (resumed sessions)",
        };
        let meter = if t.pids.is_empty() {
            "no --pid: no CPU/memory figures".to_string()
        } else {
            format!(
                "CPU/memory of pid {}{}",
                join(&t.pids),
                if t.tree { " and descendants" } else { "" }
            )
        };
        let sources = match t.sources.len() {
            0 => String::new(),
            1 => format!(" from {}", t.sources[0]),
            n => format!(" from {n} addresses ({} ...)", t.sources[0]),
        };
        let _ = writeln!(
            out,
            "portcullis-bench {}: {} at {}{sources}, {transport}; {meter}\n",
            self.mode, t.name, t.addr
        );
        if !self.logins.is_empty() {
            out.push_str(&self.logins_table());
            out.push('\n');
        }
        if let Some(f) = &self.fetch {
            out.push_str(&fetch_table(&t.name, f, self.mode));
            out.push('\n');
        }
        if let Some(i) = &self.idle {
            out.push_str(&idle_table(&t.name, i));
            out.push('\n');
        }
        if let Some(r) = &self.returning {
            out.push_str(&returning_table(&t.name, r));
            out.push('\n');
        }
        out
    }

    fn logins_table(&self) -> String {
        let mut s = String::from(
            "| target | loop | clients | offered/s | logins/s | p50 ms | p99 ms | p99.9 ms | errors | TLS resumed | CPU ms/login |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
        );
        for st in &self.logins {
            let resumed = match (st.tls_resumed, st.tls_handshakes) {
                (Some(r), Some(h)) => format!("{r}/{h}"),
                _ => "–".into(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                self.target.name,
                st.loop_kind,
                st.clients,
                opt(st.offered_per_s, 0),
                num(st.logins_per_s, 0),
                opt(st.latency.p50_ms, 2),
                opt(st.latency.p99_ms, 2),
                opt(st.latency.p999_ms, 2),
                st.errors.cell(),
                resumed,
                opt(st.cpu_ms_per_login, 3),
            );
        }
        s
    }
}

/// The fetch table; `smtp-send` counts messages sent where `fetch` counts FETCHes.
fn fetch_table(name: &str, f: &FetchResult, mode: &str) -> String {
    let what = if mode == "smtp-send" {
        "sent"
    } else {
        "FETCHes"
    };
    let mut s = format!(
        "| target | clients | message bytes | {what} | MiB/s | p50 ms | p99 ms | errors | CPU ms/MiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    let _ = writeln!(
        s,
        "| {name} | {}/{} | {} | {} | {} | {} | {} | {} | {} |",
        f.ready_clients,
        f.clients,
        f.message_bytes.map_or("–".into(), |b| b.to_string()),
        f.fetches,
        num(f.mib_per_s, 1),
        opt(f.latency.p50_ms, 2),
        opt(f.latency.p99_ms, 2),
        f.errors.cell(),
        opt(f.cpu_ms_per_mib, 3),
    );
    s
}

fn idle_table(name: &str, i: &IdleResult) -> String {
    let mut s = String::from(
        "| target | sessions open | errors | open s | RSS KiB before → with | PSS KiB before → with | RSS KiB/session | PSS KiB/session | CPU ms/session |\n\
         |---|---:|---|---:|---|---|---:|---:|---:|\n",
    );
    let pair = |f: fn(&crate::proc_stats::Memory) -> u64| match (i.before, i.during) {
        (Some(b), Some(d)) => format!("{} → {}", f(&b), f(&d)),
        _ => "–".into(),
    };
    let _ = writeln!(
        s,
        "| {name} | {}/{} | {} | {} | {} | {} | {} | {} | {} |",
        i.opened,
        i.requested,
        i.errors.cell(),
        num(i.open_seconds, 2),
        pair(|m| m.rss_kib),
        pair(|m| m.pss_kib),
        opt(i.rss_kib_per_session, 1),
        opt(i.pss_kib_per_session, 1),
        opt(i.cpu_ms_per_session, 3),
    );
    s
}

fn returning_table(name: &str, r: &ReturningResult) -> String {
    let mut s = String::from(
        "| target | pass | handshakes | resumed | resumed % | errors | seconds | CPU ms/handshake |\n\
         |---|---|---:|---:|---:|---|---:|---:|\n",
    );
    for (n, p) in [(1, &r.pass1), (2, &r.pass2)] {
        let _ = writeln!(
            s,
            "| {name} | {n}: {} | {}/{} | {} | {} | {} | {} | {} |",
            p.label,
            p.handshakes,
            r.clients,
            p.resumed,
            opt(p.resumed_percent, 1),
            p.errors.cell(),
            num(p.seconds, 2),
            opt(p.cpu_ms_per_handshake, 3),
        );
    }
    s
}

fn num(v: f64, digits: usize) -> String {
    format!("{v:.digits$}")
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".into(), |v| num(v, digits))
}

fn join(pids: &[u32]) -> String {
    pids.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
