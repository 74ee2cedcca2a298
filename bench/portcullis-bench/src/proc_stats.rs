//! CPU time and memory of the measured processes, from /proc.
//!
//! `--pid` names the process(es) to meter (the proxy; or Dovecot's master; or several). With
//! `--tree` each one's descendants count too, which is how a forking server (perdition: one child
//! per session; Dovecot: login, auth and imap processes) is measured fairly.

use serde::Serialize;
use std::collections::HashMap;
use std::fs;

/// Clock ticks per second of `/proc/PID/stat` times. This is the kernel's USER_HZ, fixed at 100
/// on every architecture this tool runs on (x86, arm); reading it would need libc's sysconf.
const CLK_TCK: f64 = 100.0;

#[derive(Clone, Debug, Default)]
pub struct Meter {
    pub pids: Vec<u32>,
    pub tree: bool,
}

/// Memory of the metered processes, summed.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// How many processes were summed.
    pub procs: usize,
}

impl Meter {
    /// CPU seconds used so far: `utime + stime` of each process. With `--tree`, also of every
    /// live descendant plus `cutime + cstime` (the children already reaped), so short-lived
    /// per-session processes still count. `None` without `--pid` or when none is readable.
    pub fn cpu_seconds(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        let mut ticks = 0u64;
        let mut seen = 0;
        for pid in self.members() {
            if let Some(st) = stat(pid) {
                seen += 1;
                ticks += st.utime + st.stime;
                if self.tree {
                    ticks += st.cutime + st.cstime;
                }
            }
        }
        (seen > 0).then(|| ticks as f64 / CLK_TCK)
    }

    /// RSS and PSS from `/proc/PID/smaps_rollup`, summed over the metered processes. PSS splits
    /// shared pages among the processes sharing them: the fair sum for a forking server.
    pub fn memory(&self) -> Option<Memory> {
        if self.pids.is_empty() {
            return None;
        }
        let mut m = Memory::default();
        for pid in self.members() {
            if let Some((rss, pss)) = smaps_rollup(pid) {
                m.rss_kib += rss;
                m.pss_kib += pss;
                m.procs += 1;
            }
        }
        (m.procs > 0).then_some(m)
    }

    /// The pids to read: the given ones, and with `--tree` all their descendants.
    fn members(&self) -> Vec<u32> {
        if !self.tree {
            return self.pids.clone();
        }
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        if let Ok(dir) = fs::read_dir("/proc") {
            for entry in dir.flatten() {
                if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) {
                    if let Some(st) = stat(pid) {
                        children.entry(st.ppid).or_default().push(pid);
                    }
                }
            }
        }
        let mut out = Vec::new();
        let mut todo = self.pids.clone();
        while let Some(p) = todo.pop() {
            if !out.contains(&p) {
                out.push(p);
                todo.extend(children.get(&p).into_iter().flatten());
            }
        }
        out
    }
}

struct Stat {
    ppid: u32,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Fields after the command name (which may hold spaces and parentheses, hence the last `)`):
/// state is field 3, ppid 4, utime..cstime 14..17.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
    Some(Stat {
        ppid: num(1)? as u32,
        utime: num(11)?,
        stime: num(12)?,
        cutime: num(13)?,
        cstime: num(14)?,
    })
}

fn smaps_rollup(pid: u32) -> Option<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_rollup(&text)
}

fn parse_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let s = parse_stat("42 (a b) c) S 7 1 1 0 -1 0 0 0 0 0 150 30 4 5 20 0 1 0 0").unwrap();
        assert_eq!(
            (s.ppid, s.utime, s.stime, s.cutime, s.cstime),
            (7, 150, 30, 4, 5)
        );
    }

    #[test]
    fn rollup() {
        let t = "55d0-7ff [rollup]\nRss:   1234 kB\nPss:    567 kB\nPss_Anon: 1 kB\n";
        assert_eq!(parse_rollup(t), Some((1234, 567)));
    }

    #[test]
    fn own_process_is_readable() {
        let m = Meter {
            pids: vec![std::process::id()],
            tree: true,
        };
        assert!(m.cpu_seconds().is_some());
        assert!(m.memory().unwrap().rss_kib > 0);
    }
}
