//! The timestamp at the head of every log line, `Dec  7 23:26:16` in local time as syslog
//! writes it. Making it (the local time zone, chrono's format string) cost as much as the rest
//! of a line; it changes once a second, so each thread keeps the last one it made.

use std::cell::RefCell;
use std::fmt::Write;

/// Syslog's timestamp: no year, the day padded with a space.
const FORMAT: &str = "%b %e %H:%M:%S";

thread_local! {
    /// The second (Unix time) of the last timestamp this thread made, and that timestamp.
    static LAST: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Append the local time now to `line`.
pub fn push(line: &mut String) {
    let now = chrono::Utc::now();
    LAST.with_borrow_mut(|(second, stamp)| {
        if *second != now.timestamp() {
            stamp.clear();
            let local = now.with_timezone(&chrono::Local);
            let _ = write!(stamp, "{}", local.format(FORMAT));
            *second = now.timestamp();
        }
        line.push_str(stamp);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kept timestamp is the one chrono makes for the same second (tried again when the
    /// second turned meanwhile).
    #[test]
    fn a_kept_timestamp_is_the_time_now() {
        for _ in 0..100 {
            let before = chrono::Local::now();
            let (mut first, mut second) = (String::new(), String::new());
            push(&mut first);
            push(&mut second);
            if chrono::Local::now().timestamp() != before.timestamp() {
                continue;
            }
            assert_eq!(first, before.format(FORMAT).to_string());
            assert_eq!(second, first);
            return;
        }
        panic!("the second turned during every try");
    }
}
