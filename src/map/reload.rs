//! A map read from a file, read again on SIGHUP (as Perdition re-reads its popmap.re). A file
//! that no longer reads, or no longer compiles, leaves the map as it was: a typo in a reload
//! must not send every user nowhere. Lookups in flight keep the version they started with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::{LookupFuture, Map, MapSetupError, Query};

/// Reads the file into a map, with warnings for the log.
pub type Loader<M> = fn(&Path) -> Result<(M, Vec<String>), MapSetupError>;

pub struct Reloadable<M> {
    path: PathBuf,
    load: Loader<M>,
    current: RwLock<Arc<M>>,
}

impl<M: Map + 'static> Reloadable<M> {
    /// Read the file a first time; the warnings are for the log.
    pub fn load(
        path: &Path,
        load: Loader<M>,
    ) -> Result<(Reloadable<M>, Vec<String>), MapSetupError> {
        let (map, warnings) = load(path)?;
        let reloadable = Reloadable {
            path: path.to_path_buf(),
            load,
            current: RwLock::new(Arc::new(map)),
        };
        Ok((reloadable, warnings))
    }

    fn current(&self) -> Arc<M> {
        match self.current.read() {
            Ok(map) => map.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl<M: Map + 'static> Map for Reloadable<M> {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        let map = self.current();
        Box::pin(async move { map.lookup(query).await })
    }

    fn describe(&self) -> String {
        self.current().describe()
    }

    fn reload(&self) -> Result<Vec<String>, MapSetupError> {
        let (map, warnings) = (self.load)(&self.path)?;
        match self.current.write() {
            Ok(mut current) => *current = Arc::new(map),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(map),
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::flat_file::FlatFile;
    use crate::map::{Answer, Connection, Login, MapError};
    use crate::protocol::{Protocol, Secret};

    async fn ask(map: &dyn Map, key: &str) -> Result<Answer, MapError> {
        let (peer, local) = (
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:143".parse().unwrap(),
        );
        let connection = Connection::new(Protocol::Imap, peer, local, false, "t".into());
        let password = Secret::new(Vec::new());
        let login = Login {
            user: key,
            user_bytes: None,
            password: &password,
            attempt: 1,
            connection: &connection,
        };
        map.lookup(&Query { key, login: &login }).await
    }

    #[tokio::test]
    async fn a_reload_reads_the_file_again_and_a_broken_file_keeps_the_old_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("popmap");
        std::fs::write(&path, "alice:one\n").unwrap();
        let (map, _) = Reloadable::load(&path, FlatFile::load).unwrap();
        assert_eq!(ask(&map, "alice").await, Ok(Answer::Text("one".into())));
        std::fs::write(&path, "alice:two\nbob:three\n").unwrap();
        map.reload().unwrap();
        assert_eq!(ask(&map, "alice").await, Ok(Answer::Text("two".into())));
        std::fs::remove_file(&path).unwrap();
        assert!(map.reload().is_err());
        assert_eq!(ask(&map, "bob").await, Ok(Answer::Text("three".into())));
    }
}
