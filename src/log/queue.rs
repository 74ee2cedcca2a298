//! The bounded line queue between the sessions and the log writer thread.
//!
//! Sessions must never wait for the log: a pipe nobody reads, a stuck syslog daemon or a slow
//! disk would otherwise stall every session on the runtime's worker threads. So lines wait
//! here, in memory that is bounded, and when the queue is full the lines an attacker could use
//! to flush fail2ban's input away (Connect, Closing, diagnostics) go first: the last quarter
//! of the queue only takes [`Class::Keep`] lines (Auth, Fatal, TLS failures, errors).
//!
//! This file is sans-I/O; `writer.rs` drains it into the destination.

use std::collections::VecDeque;

/// The average line length the queue makes room for (Perdition's lines are 100 to 300 bytes).
pub const BYTES_PER_LINE: usize = 512;

/// How much a line matters when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// fail2ban's input and errors: dropped only when even the reserve is full.
    Keep,
    /// Everything else: dropped as soon as only the reserve is left.
    Shed,
}

/// Lines waiting for the writer, oldest first.
#[derive(Debug)]
pub struct LineQueue {
    lines: VecDeque<String>,
    /// No line is taken beyond this many waiting...
    capacity: usize,
    /// ...or beyond this many bytes: a line's length is partly the client's choice.
    max_bytes: usize,
    /// Bytes of the lines waiting.
    bytes: usize,
    /// Lines refused since the writer last took the queue.
    dropped: u64,
}

/// What the writer takes from the queue in one go.
#[derive(Debug, Default)]
pub struct Batch {
    pub lines: VecDeque<String>,
    /// How many lines were dropped before these were taken.
    pub dropped: u64,
}

impl LineQueue {
    /// A queue of at most `capacity` lines (at least 4) and [`BYTES_PER_LINE`] bytes per
    /// line on average, a quarter of both for Keep lines.
    pub fn new(capacity: usize) -> LineQueue {
        let capacity = capacity.max(4);
        LineQueue {
            lines: VecDeque::new(),
            capacity,
            max_bytes: capacity.saturating_mul(BYTES_PER_LINE),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Queue a line; false (and counted) when there is no room for its class.
    pub fn push(&mut self, line: String, class: Class) -> bool {
        let share = |limit: usize| match class {
            Class::Keep => limit,
            Class::Shed => limit - limit / 4,
        };
        if self.lines.len() >= share(self.capacity)
            || self.bytes + line.len() > share(self.max_bytes)
        {
            self.dropped += 1;
            return false;
        }
        self.bytes += line.len();
        self.lines.push_back(line);
        true
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0
    }

    /// Whether a quarter of the room is taken: time to write rather than wait for more.
    pub fn filling(&self) -> bool {
        self.lines.len() >= self.capacity / 4 || self.bytes >= self.max_bytes / 4
    }

    /// Everything waiting, and the count of what was dropped; the queue starts afresh.
    pub fn take(&mut self) -> Batch {
        self.bytes = 0;
        Batch {
            lines: std::mem::take(&mut self.lines),
            dropped: std::mem::take(&mut self.dropped),
        }
    }
}

/// The line the writer adds once a stalled destination drains.
pub fn dropped_notice(dropped: u64) -> String {
    format!("Log destination too slow: {dropped} lines dropped")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(q: &mut LineQueue, class: Class, n: usize, tag: &str) -> usize {
        (0..n)
            .filter(|i| q.push(format!("{tag}{i}"), class))
            .count()
    }

    #[test]
    fn shed_lines_stop_at_three_quarters_and_keep_lines_use_the_reserve() {
        let mut q = LineQueue::new(8);
        assert_eq!(fill(&mut q, Class::Shed, 10, "connect"), 6);
        assert_eq!(fill(&mut q, Class::Keep, 5, "auth"), 2);
        let batch = q.take();
        assert_eq!(batch.dropped, 4 + 3);
        let lines: Vec<_> = batch.lines.into_iter().collect();
        assert_eq!(
            lines,
            [
                "connect0", "connect1", "connect2", "connect3", "connect4", "connect5", "auth0",
                "auth1"
            ]
        );
    }

    #[test]
    fn a_flood_of_connect_lines_cannot_push_out_an_auth_line() {
        let mut q = LineQueue::new(64);
        fill(&mut q, Class::Shed, 10_000, "connect");
        assert!(q.push("Auth: failed".into(), Class::Keep));
        fill(&mut q, Class::Shed, 10_000, "connect");
        let batch = q.take();
        assert_eq!(batch.lines.back().map(String::as_str), Some("Auth: failed"));
        assert_eq!(batch.lines.len(), 49);
    }

    #[test]
    fn taking_empties_the_queue_and_resets_the_count() {
        let mut q = LineQueue::new(4);
        fill(&mut q, Class::Keep, 6, "x");
        assert!(!q.is_empty());
        let first = q.take();
        assert_eq!((first.lines.len(), first.dropped), (4, 2));
        assert!(q.is_empty());
        let second = q.take();
        assert_eq!((second.lines.len(), second.dropped), (0, 0));
    }

    #[test]
    fn long_lines_count_against_a_byte_budget() {
        let mut q = LineQueue::new(8);
        let long = "x".repeat(BYTES_PER_LINE * 2);
        assert_eq!(fill(&mut q, Class::Shed, 1, &long), 1);
        assert_eq!(
            fill(&mut q, Class::Keep, 5, &long),
            2,
            "8 x 512 bytes in all"
        );
        assert!(q.push("short".into(), Class::Keep));
    }

    #[test]
    fn tiny_capacities_still_keep_a_reserve() {
        let mut q = LineQueue::new(0);
        assert_eq!(fill(&mut q, Class::Shed, 10, "s"), 3);
        assert_eq!(fill(&mut q, Class::Keep, 10, "k"), 1);
    }
}
