//! `compare`: earlier runs side by side, with ratios.
//!
//! Reads result files written by `--json` (any mode) as plain `serde_json::Value`s, so the report
//! types need not be deserializable and a figure missing from a file (no `--pid`, an older tool)
//! is a "–", not a failure. Prints one Markdown table per group of quantities (logins, fetch,
//! idle, returning). A row is one target (`target.name`, in order of first appearance) over one
//! transport (plain, TLS full, TLS resumed); each figure is followed by its ratio to the same
//! figure of the baseline target and of the direct target over the *same* transport, so a TLS
//! row is only ever compared with a TLS row of the same kind.

use serde_json::Value;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// How the connections of a run were made; rows are only compared within one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Transport {
    Plain,
    TlsFull,
    TlsResumed,
}

impl Transport {
    fn of(target: &Value) -> Transport {
        let flag = |k: &str| target.get(k).and_then(Value::as_bool).unwrap_or(false);
        match (flag("tls"), flag("resume")) {
            (false, _) => Transport::Plain,
            (true, false) => Transport::TlsFull,
            (true, true) => Transport::TlsResumed,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Transport::Plain => "plain",
            Transport::TlsFull => "TLS full",
            Transport::TlsResumed => "TLS resumed",
        }
    }
}

/// One result file.
pub struct Run {
    /// The file, as named in notes.
    file: String,
    name: String,
    transport: Transport,
    value: Value,
}

impl Run {
    pub fn new(file: &str, value: Value) -> Result<Run, String> {
        let target = value
            .get("target")
            .ok_or_else(|| format!("{file}: not a portcullis-bench result (no \"target\")"))?;
        let name = target
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{file}: not a portcullis-bench result (no target.name)"))?
            .to_string();
        Ok(Run {
            file: file.to_string(),
            name,
            transport: Transport::of(target),
            value,
        })
    }
}

/// A figure as text, read from a group's part of a file.
type Text = fn(&Value) -> Option<String>;

/// One column: a figure read from a group's part of a file.
struct Quantity {
    header: &'static str,
    /// The number shown and divided for the ratios.
    value: fn(&Value) -> Option<f64>,
    digits: usize,
    /// How the figure reads when it is more than the number (`9500/9500`).
    text: Option<Text>,
}

/// One table.
struct Group {
    title: &'static str,
    /// Which part of each file the rows show.
    caption: &'static str,
    /// Which way is better, per quantity.
    better: &'static str,
    /// The part of a file this group reads; `None` when the file did not run it.
    section: for<'a> fn(&'a Value) -> Option<&'a Value>,
    /// A column without ratios saying what was run (which step, how many clients).
    context: Option<(&'static str, Text)>,
    quantities: Vec<Quantity>,
}

fn num_at(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer)?.as_f64()
}

fn q(header: &'static str, value: fn(&Value) -> Option<f64>, digits: usize) -> Quantity {
    Quantity {
        header,
        value,
        digits,
        text: None,
    }
}

fn groups() -> Vec<Group> {
    vec![
        Group {
            title: "logins",
            caption: "From each file the logins step with the largest `clients` (closed loop: \
                concurrent clients; open loop: identities), the first one on a tie; \"step\" \
                says which.",
            better: "higher logins/s; lower p50, p99, CPU ms/login and errors.",
            section: logins_step,
            context: Some(("step", |s| {
                let kind = s.get("loop_kind")?.as_str()?;
                match num_at(s, "/offered_per_s") {
                    Some(rate) => Some(format!("{kind} {rate}/s")),
                    None => Some(format!("{kind} {}", s.get("clients")?.as_u64()?)),
                }
            })),
            quantities: vec![
                q("logins/s", |s| num_at(s, "/logins_per_s"), 0),
                q("p50 ms", |s| num_at(s, "/latency/p50_ms"), 2),
                q("p99 ms", |s| num_at(s, "/latency/p99_ms"), 2),
                q("CPU ms/login", |s| num_at(s, "/cpu_ms_per_login"), 3),
                q("errors", |s| num_at(s, "/errors/total"), 0),
            ],
        },
        Group {
            title: "fetch",
            caption: "FETCH of one message back to back (smtp-send: one message sent back to \
                back): MiB/s of literal (message) bytes, CPU of the metered processes per MiB; \
                message bytes show that the rows moved the same message.",
            better: "higher MiB/s; lower CPU ms/MiB.",
            section: |f| section(f, "fetch"),
            context: Some(("clients", |s| Some(s.get("clients")?.as_u64()?.to_string()))),
            quantities: vec![
                q("MiB/s", |s| num_at(s, "/mib_per_s"), 1),
                q("CPU ms/MiB", |s| num_at(s, "/cpu_ms_per_mib"), 3),
                q("message bytes", |s| num_at(s, "/message_bytes"), 0),
            ],
        },
        Group {
            title: "idle",
            caption: "Sessions parked in IDLE: growth of the metered processes' RSS and PSS per \
                session opened, and their total RSS with all the sessions open.",
            better: "more sessions opened; lower RSS, PSS and total RSS.",
            section: |f| section(f, "idle"),
            context: None,
            quantities: vec![
                Quantity {
                    header: "sessions opened/requested",
                    value: |s| num_at(s, "/opened"),
                    digits: 0,
                    text: Some(|s| {
                        let (o, r) = (s.get("opened")?.as_u64()?, s.get("requested")?.as_u64()?);
                        Some(format!("{o}/{r}"))
                    }),
                },
                q("RSS KiB/session", |s| num_at(s, "/rss_kib_per_session"), 1),
                q("PSS KiB/session", |s| num_at(s, "/pss_kib_per_session"), 1),
                q(
                    "total RSS KiB with sessions",
                    |s| num_at(s, "/during/rss_kib"),
                    0,
                ),
            ],
        },
        Group {
            title: "returning",
            caption: "TLS handshakes only: pass 1 of distinct clients with fresh session caches \
                (full handshakes), pass 2 the same clients back; resumed % of pass 2's \
                handshakes.",
            better: "higher resumed %; lower CPU ms/handshake.",
            section: |f| section(f, "returning"),
            context: Some(("clients", |s| Some(s.get("clients")?.as_u64()?.to_string()))),
            quantities: vec![
                q(
                    "resumed % (pass 2)",
                    |s| num_at(s, "/pass2/resumed_percent"),
                    1,
                ),
                q(
                    "CPU ms/handshake, pass 1",
                    |s| num_at(s, "/pass1/cpu_ms_per_handshake"),
                    3,
                ),
                q(
                    "CPU ms/handshake, pass 2",
                    |s| num_at(s, "/pass2/cpu_ms_per_handshake"),
                    3,
                ),
            ],
        },
    ]
}

/// A mode's result object, when the file has one.
fn section<'a>(file: &'a Value, key: &str) -> Option<&'a Value> {
    file.get(key).filter(|v| v.is_object())
}

/// The step with the most clients: a sweep's top step (the first on a tie, e.g. in an open-loop
/// sweep where every step has the same identities).
fn logins_step(file: &Value) -> Option<&Value> {
    let clients = |s: &Value| s.get("clients").and_then(Value::as_u64).unwrap_or(0);
    let mut best: Option<&Value> = None;
    for s in file.get("logins")?.as_array()? {
        if best.is_none_or(|b| clients(s) > clients(b)) {
            best = Some(s);
        }
    }
    best
}

/// The comparison tables of `runs`, as Markdown, then `notes` and the tables' own notes.
pub fn tables(runs: &[Run], baseline: &str, direct: &str, notes: &[String]) -> String {
    let mut out = String::new();
    let mut notes = notes.to_vec();
    let _ = writeln!(
        out,
        "portcullis-bench compare: {} file(s). Each figure is followed by its ratio (value ÷ \
         reference) to the same figure of {baseline} and of the direct target ({direct}) over \
         the same transport; a ratio is left out where that row or figure is missing or zero.\n",
        runs.len()
    );
    for who in [baseline, direct] {
        if !runs.iter().any(|r| r.name == who) {
            notes.push(format!("no file of target {who}: no ratios against it."));
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    for g in groups() {
        // (target, transport) → the first file's part; a later file for the same is noted.
        let mut entries: Vec<(&Run, &Value)> = Vec::new();
        for r in runs {
            let Some(sec) = (g.section)(&r.value) else {
                continue;
            };
            match entries
                .iter()
                .find(|(e, _)| e.name == r.name && e.transport == r.transport)
            {
                Some((first, _)) => notes.push(format!(
                    "{}: {} of {} ({}) ignored, already from {}.",
                    r.file,
                    g.title,
                    r.name,
                    r.transport.name(),
                    first.file
                )),
                None => entries.push((r, sec)),
            }
        }
        if entries.is_empty() {
            continue;
        }
        let mut transports: Vec<Transport> = entries.iter().map(|(r, _)| r.transport).collect();
        transports.sort();
        transports.dedup();
        let find = |name: &str, t: Transport| {
            entries
                .iter()
                .find(|(r, _)| r.name == name && r.transport == t)
                .map(|(_, s)| *s)
        };

        let _ = writeln!(out, "### {}\n\n{}\n", g.title, g.caption);
        let mut header = String::from("| target | transport |");
        let mut rule = String::from("|---|---|");
        if let Some((h, _)) = g.context {
            let _ = write!(header, " {h} |");
            rule.push_str("---|");
        }
        for qty in &g.quantities {
            let _ = write!(header, " {} |", qty.header);
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{header}\n{rule}");
        for name in &names {
            // A target with none of this group's figures gets no rows; one with some gets a row
            // per transport of the table, "–" where it has no run.
            if !entries.iter().any(|(r, _)| r.name == *name) {
                continue;
            }
            for &t in &transports {
                let sec = find(name, t);
                // No ratio of a row against itself.
                let base = find(baseline, t).filter(|_| *name != baseline);
                let dir = find(direct, t).filter(|_| *name != direct);
                let mut row = format!("| {name} | {} |", t.name());
                if let Some((_, ctx)) = g.context {
                    let _ = write!(row, " {} |", sec.and_then(ctx).unwrap_or_else(dash));
                }
                for qty in &g.quantities {
                    let _ = write!(row, " {} |", cell(qty, sec, base, baseline, dir));
                }
                let _ = writeln!(out, "{row}");
            }
        }
        let _ = writeln!(out, "\nBetter: {}\n", g.better);
    }
    if runs
        .iter()
        .all(|r| groups().iter().all(|g| (g.section)(&r.value).is_none()))
    {
        notes.push("no logins, fetch, idle or returning results in these files.".into());
    }
    if !notes.is_empty() {
        out.push_str("Notes:\n\n");
        for n in notes {
            let _ = writeln!(out, "* {n}");
        }
    }
    out
}

/// `0.42 (0.61× nginx, 2.10× direct)`, or `–` without a figure.
fn cell(
    qty: &Quantity,
    sec: Option<&Value>,
    base: Option<&Value>,
    baseline: &str,
    dir: Option<&Value>,
) -> String {
    let Some(sec) = sec else {
        return dash();
    };
    let value = (qty.value)(sec);
    let shown = match qty.text {
        Some(text) => text(sec),
        None => value.map(|v| format!("{v:.*}", qty.digits)),
    };
    let Some(shown) = shown else {
        return dash();
    };
    let Some(v) = value else {
        return shown;
    };
    let ratios: Vec<String> = [(base, baseline), (dir, "direct")]
        .into_iter()
        .filter_map(|(reference, label)| {
            let r = reference.and_then(qty.value)?;
            (r != 0.0 && r.is_finite()).then(|| format!("{}× {label}", ratio(v / r)))
        })
        .collect();
    if ratios.is_empty() {
        shown
    } else {
        format!("{shown} ({})", ratios.join(", "))
    }
}

/// Two decimals, or two significant digits below 0.1 (Portcullis's CPU per login is a few
/// hundredths of Dovecot's), none from 100 up.
fn ratio(r: f64) -> String {
    let a = r.abs();
    if a >= 100.0 {
        format!("{r:.0}")
    } else if a >= 0.1 || a == 0.0 {
        format!("{r:.2}")
    } else {
        let digits = (-a.log10()).ceil() as usize + 1;
        format!("{r:.digits$}")
    }
}

fn dash() -> String {
    "–".into()
}

/// Reads the files, prints the tables, and writes them to `markdown_out` too. A file that cannot
/// be read or is not a result is skipped with a note (one bad run must not cost the table of a
/// long benchmark); it is an error only when no file is left.
pub fn run(
    files: &[PathBuf],
    baseline: &str,
    direct: &str,
    markdown_out: Option<&Path>,
) -> Result<(), String> {
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        let label = f.display().to_string();
        let run = std::fs::read_to_string(f)
            .map_err(|e| format!("{label}: {e}"))
            .and_then(|text| serde_json::from_str(&text).map_err(|e| format!("{label}: {e}")))
            .and_then(|value| Run::new(&label, value));
        match run {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("portcullis-bench compare: skipped {e}");
                skipped.push(format!("skipped {e}"));
            }
        }
    }
    if runs.is_empty() {
        return Err("no readable result file".into());
    }
    let md = tables(&runs, baseline, direct, &skipped);
    print!("{md}");
    if let Some(path) = markdown_out {
        std::fs::write(path, &md).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn logins(name: &str, tls: bool, steps: Value) -> Run {
        let v = json!({"target": {"name": name, "tls": tls, "resume": false}, "logins": steps});
        Run::new(name, v).unwrap()
    }

    fn step(clients: u64, per_s: f64) -> Value {
        json!({"loop_kind": "closed", "clients": clients, "offered_per_s": null,
               "logins_per_s": per_s, "latency": {"p50_ms": 1.0, "p99_ms": 2.0},
               "errors": {"total": 0}, "cpu_ms_per_login": null})
    }

    /// The cells of the row that starts with `start`.
    fn row(md: &str, start: &str) -> Vec<String> {
        let line = md
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row {start:?} in\n{md}"));
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    }

    #[test]
    fn ratios_per_transport_and_dashes_where_missing() {
        let runs = vec![
            logins("nginx", false, json!([step(16, 200.0)])),
            logins("nginx", true, json!([step(16, 80.0)])),
            // The 16-client step is the one compared, not the first.
            logins("portcullis", false, json!([step(4, 30.0), step(16, 100.0)])),
            logins("dovecot", false, json!([step(16, 50.0)])),
        ];
        let md = tables(&runs, "nginx", "dovecot", &[]);
        // target, transport, step, logins/s, p50, p99, CPU, errors
        let p = row(&md, "| portcullis | plain |");
        assert_eq!(p[2], "closed 16");
        assert_eq!(p[3], "100 (0.50× nginx, 2.00× direct)");
        // No CPU figure (no --pid): a dash; errors 0 against 0: no ratio.
        assert_eq!((p[6].as_str(), p[7].as_str()), ("–", "0"));
        // Portcullis has no TLS run, nginx has: a row of dashes.
        let t = row(&md, "| portcullis | TLS full |");
        assert!(t[2..].iter().all(|c| c == "–"), "{t:?}");
        // nginx's TLS row has no direct TLS row to compare with, and no ratio against itself.
        assert_eq!(row(&md, "| nginx | TLS full |")[3], "80");
        assert_eq!(row(&md, "| dovecot | plain |")[3], "50 (0.25× nginx)");
        // Only logins ran: one table.
        assert!(!md.contains("### fetch"));
    }

    #[test]
    fn a_second_file_for_the_same_row_is_noted() {
        let runs = vec![
            logins("nginx", false, json!([step(16, 200.0)])),
            logins("nginx", false, json!([step(16, 1.0)])),
        ];
        let md = tables(&runs, "nginx", "dovecot", &[]);
        assert_eq!(row(&md, "| nginx | plain |")[3], "200");
        assert!(md.contains("ignored, already from nginx"));
        assert!(md.contains("no file of target dovecot"));
    }

    #[test]
    fn not_a_result() {
        assert!(Run::new("x", json!({"foo": 1})).is_err());
        assert!(Run::new("x", json!([1, 2])).is_err());
    }

    #[test]
    fn ratio_digits() {
        assert_eq!(ratio(2.1), "2.10");
        assert_eq!(ratio(0.052), "0.052");
        assert_eq!(ratio(250.4), "250");
        assert_eq!(ratio(0.0), "0.00");
    }
}
