//! Perdition's flat `popmap`: one `key:value` per line (`horms:localhost`,
//! `jain:jane@foo.bar:110`), the text `makegdbm` builds its database from. Read once into a
//! hash index; a lookup is an exact, case-sensitive match of the key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{LookupFuture, Map, MapError, Query};

pub struct FlatFile {
    path: PathBuf,
    entries: HashMap<String, String>,
}

impl FlatFile {
    pub fn load(path: &Path) -> Result<FlatFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let entries = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(FlatFile {
            path: path.to_path_buf(),
            entries,
        })
    }
}

impl Map for FlatFile {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        let found = self.entries.get(query.key).cloned();
        Box::pin(async move { found.ok_or(MapError::NotFound) })
    }

    fn describe(&self) -> String {
        format!("popmap {}", self.path.display())
    }
}

/// Key before the first `:`, value after it; blank lines and `#` lines are skipped; the first
/// line for a key wins, as in a database built by `makegdbm`... which keeps the last, so a
/// repeated key is an error rather than a guess.
fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut entries = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: no ':' between key and server", n + 1))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(format!("line {}: empty key or server", n + 1));
        }
        if entries.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!("line {}: {key:?} is listed twice", n + 1));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        let e = parse("# popmap\nhorms:localhost\n\njain:jane@foo.bar:110\n").unwrap();
        assert_eq!(e.get("horms").map(String::as_str), Some("localhost"));
        assert_eq!(e.get("jain").map(String::as_str), Some("jane@foo.bar:110"));
        assert_eq!(e.get("Horms"), None);
    }

    #[test]
    fn malformed_lines_name_their_number() {
        assert!(parse("a:b\nnocolon\n").unwrap_err().starts_with("line 2:"));
        assert!(parse("a:b\na:c\n").unwrap_err().contains("twice"));
    }
}
