//! Perdition's `popmap.re`: an ordered list of `regex[:] substitution` lines, read as it is.
//!
//! Matching follows Perdition's `posix_regex` map library: extended regular expressions,
//! case-sensitive, not anchored, first match wins, `$1`…`$9` in the substitution. The file is
//! read with Perdition's quoting rules (`\x` is `x`, so an unquoted `\.` is `.`; `'…'` and
//! `"…"` keep their contents; `#` starts a comment; `\` at the end of a line continues it).
//! The client's name is only ever matched against the admin's expressions, never compiled.
//!
//! Where Portcullis reads a line differently from Perdition, a warning names the line when
//! the file is read:
//! - POSIX picks the longest of alternatives (`a|ab`), the regex engine here the first;
//! - Perdition keeps the part of the name before the match in front of the substitution
//!   (`flim` against `itsflim` gives `its<server>`), which only ever makes a server name that
//!   does not exist; Portcullis uses the substitution alone. Patterns starting with `^` are
//!   not concerned.

use std::path::{Path, PathBuf};

use regex::bytes::{Regex, RegexBuilder};

use super::{Answer, LookupFuture, Map, MapError, MapSetupError, Query};

/// The longest file line or expression accepted; a map is written by an admin, not a client.
const MAX_LINE: usize = 4096;

/// A line of the file that cannot be a rule (the file is refused, naming the line).
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("line {line}: longer than {max} bytes", max = MAX_LINE)]
    TooLong { line: usize },
    #[error("line {line}: bad regular expression {pattern:?}: {source}")]
    BadRegex {
        line: usize,
        pattern: String,
        #[source]
        source: regex::Error,
    },
}

struct Rule {
    regex: Regex,
    substitution: String,
}

pub struct PopmapRe {
    path: PathBuf,
    rules: Vec<Rule>,
}

impl PopmapRe {
    /// Read and compile the file; `Err` names the file and line. The warnings are for the log.
    pub fn load(path: &Path) -> Result<(PopmapRe, Vec<String>), MapSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapSetupError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let (rules, warnings) = parse(&text).map_err(|error| MapSetupError::BadRule {
            path: path.to_path_buf(),
            error,
        })?;
        let warnings = warnings
            .into_iter()
            .map(|w| format!("{}: {w}", path.display()))
            .collect();
        Ok((
            PopmapRe {
                path: path.to_path_buf(),
                rules,
            },
            warnings,
        ))
    }

    /// The substitution of the first rule that matches `key`, `$n` filled in.
    pub fn find(&self, key: &str) -> Option<String> {
        let rule = self
            .rules
            .iter()
            .find(|rule| rule.regex.is_match(key.as_bytes()))?;
        let captures = rule.regex.captures(key.as_bytes())?;
        Some(substitute(&rule.substitution, &captures))
    }
}

impl Map for PopmapRe {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        let found = self.find(query.key).map(Answer::Text);
        Box::pin(async move { found.ok_or(MapError::NotFound) })
    }

    fn describe(&self) -> String {
        format!("popmap.re {}", self.path.display())
    }
}

/// `$0`…`$9` become the match and what the groups matched (nothing when a group did not take
/// part); any other `$` stays as it is (`$10` is `$1` then `0`).
fn substitute(template: &str, captures: &regex::bytes::Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek().and_then(|d| d.to_digit(10))) {
            ('$', Some(n)) => {
                chars.next();
                if let Some(group) = captures.get(n as usize) {
                    out.push_str(&String::from_utf8_lossy(group.as_bytes()));
                }
            }
            _ => out.push(c),
        }
    }
    out
}

fn parse(text: &str) -> Result<(Vec<Rule>, Vec<String>), RuleError> {
    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    for (number, line) in logical_lines(text) {
        if line.len() > MAX_LINE {
            return Err(RuleError::TooLong { line: number });
        }
        let Some((pattern, mut values)) = split_rule(&line) else {
            continue;
        };
        if values.is_empty() {
            warnings.push(format!(
                "line {number}: {pattern:?} has no substitution; skipped, as Perdition does"
            ));
            continue;
        }
        let substitution = values.remove(0);
        if !values.is_empty() {
            warnings.push(format!(
                "line {number}: only {substitution:?} is the substitution; the rest of the line \
                 ({}) is not used (quote a substitution with spaces)",
                values.join(" ")
            ));
        }
        let regex = RegexBuilder::new(&pattern)
            .unicode(false)
            .size_limit(1 << 20)
            .build()
            .map_err(|source| RuleError::BadRegex {
                line: number,
                pattern: pattern.clone(),
                source,
            })?;
        if !pattern.starts_with('^') {
            warnings.push(format!(
                "line {number}: {pattern:?} is not anchored with ^: Perdition would put the \
                 part of the name before the match in front of {substitution:?}; Portcullis \
                 uses {substitution:?} alone"
            ));
        }
        if pattern.contains('|') {
            warnings.push(format!(
                "line {number}: {pattern:?} has alternatives: the first that matches is taken, \
                 where POSIX takes the longest"
            ));
        }
        rules.push(Rule {
            regex,
            substitution,
        });
    }
    Ok((rules, warnings))
}

/// Lines joined where a `\` ends one, with the number of the line each starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut line) = current.take().unwrap_or((i + 1, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                line.push_str(head);
                current = Some((start, line));
            }
            None => {
                line.push_str(raw);
                out.push((start, line));
            }
        }
    }
    out.extend(current);
    out
}

/// Split a line into its words with Perdition's quoting and comments (unquoted whitespace
/// separates words): the expression, without one unquoted trailing `:`, and the values after
/// it. `None` for a blank or comment-only line.
fn split_rule(line: &str) -> Option<(String, Vec<String>)> {
    let mut words: Vec<String> = Vec::new();
    let mut word: Option<String> = None;
    // Whether the first word's last character came from outside quotes (an optional `:`).
    let mut last_plain_colon = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let (text, plain) = match c {
            '#' => break,
            '\\' => match chars.next() {
                Some(escaped) => (escaped.to_string(), false),
                None => break,
            },
            '\'' | '"' => (chars.by_ref().take_while(|&q| q != c).collect(), false),
            c if c.is_whitespace() => {
                words.extend(word.take());
                continue;
            }
            c => (c.to_string(), true),
        };
        word.get_or_insert_with(String::new).push_str(&text);
        if words.is_empty() {
            last_plain_colon = plain && c == ':';
        }
    }
    words.extend(word);
    let mut words = words.into_iter();
    let mut pattern = words.next()?;
    if last_plain_colon {
        pattern.pop();
    }
    if pattern.is_empty() {
        return None;
    }
    Some((pattern, words.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(text: &str) -> PopmapRe {
        let (rules, _) = parse(text).unwrap();
        PopmapRe {
            path: "test".into(),
            rules,
        }
    }

    #[test]
    fn the_shipped_examples() {
        let m = map(
            "# comment\n^[a-k]: localhost\n^[^a-k]: localhost:110\n\n^user: user2@localhost\n(.*)@(.*): $1_$2@localhost\n",
        );
        assert_eq!(m.find("alice").as_deref(), Some("localhost"));
        assert_eq!(m.find("zed").as_deref(), Some("localhost:110"));
        assert_eq!(
            m.find("user@x.y.z.de").as_deref(),
            Some("localhost:110"),
            "first match wins"
        );
        let m = map("(.*)@(.*): $1_$2@localhost\n");
        assert_eq!(
            m.find("user@x.y.z.de").as_deref(),
            Some("user_x.y.z.de@localhost")
        );
    }

    #[test]
    fn colon_is_optional_and_matching_is_case_sensitive_and_unanchored() {
        let m = map("^Alice$ one\nflim: two\n");
        assert_eq!(m.find("Alice").as_deref(), Some("one"));
        assert_eq!(m.find("alice"), None);
        assert_eq!(m.find("itsflimless").as_deref(), Some("two"));
    }

    #[test]
    fn perditions_quoting() {
        // An unquoted backslash is dropped, as Perdition's file reader does.
        let m = map("^dot\\.user$: unquoted\n'^quoted\\.user$': quoted\n");
        assert_eq!(m.find("dotXuser").as_deref(), Some("unquoted"));
        assert_eq!(m.find("quotedXuser"), None);
        assert_eq!(m.find("quoted.user").as_deref(), Some("quoted"));
        let m = map("'^a b$': 'spaced out' # comment\n^c\\\n$: continued\n");
        assert_eq!(m.find("a b").as_deref(), Some("spaced out"));
        assert_eq!(m.find("c").as_deref(), Some("continued"));
    }

    #[test]
    fn groups_that_did_not_match_are_empty_and_other_dollars_stay() {
        let m = map("^(a)|(b)$: x$2y$1$z$0$10\n");
        assert_eq!(m.find("a").as_deref(), Some("xya$zaa0"));
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let e = parse("ok: fine\n^(unclosed: x\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("line 2: bad regular expression"), "{e}");
        let (rules, warnings) = parse("lonely\n^a|ab$: x\n^b: two words\nflim: x\n").unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].contains("no substitution"), "{warnings:?}");
    }

    #[test]
    fn hostile_names_are_only_matched() {
        let m = map("^[a-z0-9.]+@example\\.org$: mail1\n");
        for name in ["(.*)", "a@example.org\0x", "*)(uid=*", &"a".repeat(100_000)] {
            assert_eq!(m.find(name), None, "{name:?}");
        }
    }
}
