//! fail2ban's own `fail2ban-regex` on a log and a filter, as an admin checks a jail.

use std::path::Path;
use std::process::Command;

/// `fail2ban-regex LOG FILTER`: the `M matched` and `N lines` of its `Lines: N lines, I
/// ignored, M matched, X missed` summary, and its whole report for failure messages.
pub fn matched_and_lines(log: &Path, filter: &Path) -> (usize, usize, String) {
    let out = Command::new("fail2ban-regex")
        .arg(log)
        .arg(filter)
        .output()
        .expect("run fail2ban-regex (package fail2ban)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "fail2ban-regex failed:\n{text}");
    let summary = text
        .lines()
        .find(|l| l.trim_start().starts_with("Lines:"))
        .unwrap_or_else(|| panic!("no Lines: summary in:\n{text}"));
    let words: Vec<&str> = summary.split_whitespace().collect();
    let number_before = |word: &str| -> usize {
        let i = words
            .iter()
            .position(|w| w.trim_end_matches(',') == word)
            .unwrap_or_else(|| panic!("no {word:?} in {summary:?}"));
        words[i - 1].parse().expect("a number")
    };
    (number_before("matched"), number_before("lines"), text)
}
