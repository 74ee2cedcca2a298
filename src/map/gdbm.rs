//! Perdition's default map: the GDBM database `makegdbm` builds from the flat popmap
//! (`/etc/perdition/popmap.gdbm.db`), read with a pure-Rust GDBM reader. As Perdition does, the
//! file is opened for each lookup, so a `make` in `/etc/perdition` takes effect at once; a file
//! that is missing or broken makes the lookup fail (and the login go to the listener's own
//! servers, when it has some).

use std::path::{Path, PathBuf};

use super::{Answer, LookupFuture, Map, MapError, ProbeFuture, Query};

/// The longest key looked up.
const MAX_KEY: usize = 1024;

pub struct GdbmMap {
    path: PathBuf,
}

impl GdbmMap {
    pub fn new(path: &Path) -> GdbmMap {
        GdbmMap {
            path: path.to_path_buf(),
        }
    }

    /// Keys and values are stored without a trailing NUL, as `makegdbm` writes them.
    fn find(path: &Path, key: &str) -> Result<Answer, MapError> {
        if key.len() > MAX_KEY {
            return Err(MapError::NotFound);
        }
        let unavailable = |e: String| MapError::Unavailable(format!("{}: {e}", path.display()));
        let db = gdbm_native::OpenOptions::new()
            .open(path)
            .map_err(|e| unavailable(e.to_string()))?;
        let value: Option<Vec<u8>> = db
            .get(key.as_bytes())
            .map_err(|e| unavailable(e.to_string()))?;
        let value = value.ok_or(MapError::NotFound)?;
        let value = String::from_utf8_lossy(&value);
        match value.trim() {
            "" => Err(MapError::NotFound),
            v => Ok(Answer::Text(v.to_string())),
        }
    }
}

impl Map for GdbmMap {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        let (path, key) = (self.path.clone(), query.key.to_string());
        Box::pin(async move {
            // File I/O: off the runtime's worker threads.
            tokio::task::spawn_blocking(move || GdbmMap::find(&path, &key))
                .await
                .unwrap_or_else(|e| Err(MapError::Unavailable(e.to_string())))
        })
    }

    fn describe(&self) -> String {
        format!("GDBM {}", self.path.display())
    }

    fn probe(&self) -> ProbeFuture<'_> {
        let path = self.path.clone();
        Box::pin(async move {
            match GdbmMap::find(&path, "") {
                Ok(_) | Err(MapError::NotFound) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}
