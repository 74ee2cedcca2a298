//! Perdition's flat `popmap`: one `key:value` per line (`horms:localhost`,
//! `jain:jane@foo.bar:110`), the text `makegdbm` builds its database from, read as `makegdbm`
//! reads it: the key ends at the first `:`, blank lines are skipped, a line without a key or a
//! value is skipped with a warning, and the first line for a key wins (a warning names the
//! others). Unlike `makegdbm`, spaces around key and value are trimmed and `#` starts a
//! comment line. Read once into a hash index; a lookup is an exact, case-sensitive match.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Answer, LookupFuture, Map, MapError, MapSetupError, Query};

pub struct FlatFile {
    path: PathBuf,
    entries: HashMap<String, String>,
}

impl FlatFile {
    /// Read the file; the warnings are for the log.
    pub fn load(path: &Path) -> Result<(FlatFile, Vec<String>), MapSetupError> {
        let text = std::fs::read_to_string(path).map_err(|source| MapSetupError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let (entries, warnings) = parse(&text);
        let warnings = warnings
            .into_iter()
            .map(|w| format!("{}: {w}", path.display()))
            .collect();
        let map = FlatFile {
            path: path.to_path_buf(),
            entries,
        };
        Ok((map, warnings))
    }
}

impl Map for FlatFile {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        let found = self.entries.get(query.key).cloned().map(Answer::Text);
        Box::pin(async move { found.ok_or(MapError::NotFound) })
    }

    fn describe(&self) -> String {
        format!("popmap {}", self.path.display())
    }
}

fn parse(text: &str) -> (HashMap<String, String>, Vec<String>) {
    let mut entries = HashMap::new();
    let mut warnings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = line
            .split_once(':')
            .map(|(key, value)| (key.trim(), value.trim()))
            .filter(|(key, value)| !key.is_empty() && !value.is_empty());
        let Some((key, value)) = entry else {
            warnings.push(format!("line {}: not key:server; skipped", n + 1));
            continue;
        };
        if entries.contains_key(key) {
            warnings.push(format!(
                "line {}: {key:?} again; the first one is used",
                n + 1
            ));
            continue;
        }
        entries.insert(key.to_string(), value.to_string());
    }
    (entries, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        let (e, _) = parse("# popmap\nhorms:localhost\n\njain:jane@foo.bar:110\n");
        assert_eq!(e.get("horms").map(String::as_str), Some("localhost"));
        assert_eq!(e.get("jain").map(String::as_str), Some("jane@foo.bar:110"));
        assert_eq!(e.get("Horms"), None);
    }

    #[test]
    fn malformed_lines_are_skipped_and_named_and_the_first_key_wins() {
        let (e, warnings) = parse("a:b\nnocolon\n:x\na:c\n");
        assert_eq!(e.get("a").map(String::as_str), Some("b"));
        assert_eq!(e.len(), 1);
        assert_eq!(warnings.len(), 3);
        assert!(warnings[0].starts_with("line 2:"), "{warnings:?}");
    }
}
