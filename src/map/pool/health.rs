//! A pool server's health, from what checks and logins see: down after `down_after` failures
//! in a row, up again after `up_after` successes in a row. At start every server is up.

/// A change worth a log line and a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    WentDown,
    CameUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    up: bool,
    /// Failures (while up) or successes (while down) in a row.
    streak: u32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: true,
            streak: 0,
        }
    }
}

impl Health {
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// One more observation: `ok` or not.
    pub fn observe(&mut self, ok: bool, down_after: u32, up_after: u32) -> Option<Change> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { down_after } else { up_after };
        if self.streak < needed.max(1) {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(if ok { Change::CameUp } else { Change::WentDown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_failures_in_a_row_and_up_after_successes_in_a_row() {
        let mut health = Health::default();
        assert!(health.is_up());
        assert_eq!(health.observe(false, 2, 3), None);
        // A success in between starts the count again.
        assert_eq!(health.observe(true, 2, 3), None);
        assert_eq!(health.observe(false, 2, 3), None);
        assert_eq!(health.observe(false, 2, 3), Some(Change::WentDown));
        assert!(!health.is_up());
        assert_eq!(health.observe(true, 2, 3), None);
        assert_eq!(health.observe(true, 2, 3), None);
        assert_eq!(health.observe(false, 2, 3), None);
        assert_eq!(health.observe(true, 2, 3), None);
        assert_eq!(health.observe(true, 2, 3), None);
        assert_eq!(health.observe(true, 2, 3), Some(Change::CameUp));
    }
}
