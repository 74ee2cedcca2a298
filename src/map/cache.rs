//! A cache in front of a map: answers are kept for `positive` seconds, "no such user" for
//! `negative` seconds, at most `size` of each; a failing map is never cached (the next login
//! asks again). Keyed by the lookup key; for a map whose answer depends on the password too
//! (nginx's `auth_http`), by the key and a keyed hash of the password, so that an answer is
//! never given for another password.

use std::time::Duration;

use moka::future::Cache;

use super::{Answer, LookupFuture, Map, MapError, Query};

/// How long and how many answers to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub positive: Duration,
    pub negative: Duration,
    pub size: u64,
}

/// Keys longer than this are not cached.
const MAX_CACHED_KEY: usize = 1024;

pub struct CachedMap {
    inner: Box<dyn Map>,
    /// Keyed at random when the process starts (SipHash), for the password part of keys.
    hasher: std::collections::hash_map::RandomState,
    found: Option<Cache<String, Answer>>,
    not_found: Option<Cache<String, ()>>,
}

impl CachedMap {
    pub fn new(inner: Box<dyn Map>, settings: CacheSettings) -> CachedMap {
        CachedMap {
            hasher: std::collections::hash_map::RandomState::new(),
            found: cache(settings.positive, settings.size),
            not_found: cache(settings.negative, settings.size),
            inner,
        }
    }

    /// The cache key: the lookup key; for a map that answers from the password, the name as
    /// the client gave it (such a map is asked with it, whatever the lookup key), the client's
    /// address (the service may decide by it) and a keyed hash of the password.
    fn key(&self, query: &Query<'_>) -> String {
        if !self.inner.answers_from_password() {
            return query.key.to_string();
        }
        use std::hash::BuildHasher;
        let login = query.login;
        let hash = self.hasher.hash_one(login.password.expose());
        let ip = login.connection.peer.ip().to_canonical();
        format!("{}\0{ip}\0{hash:016x}", login.user)
    }

    async fn lookup_cached(&self, query: &Query<'_>) -> Result<Answer, MapError> {
        // Names longer than any map looks up are not worth the memory. A name that is not
        // UTF-8 is shown escaped, which another name may spell out: never cached.
        let long = query.key.len() > MAX_CACHED_KEY || query.login.user.len() > MAX_CACHED_KEY;
        if long || query.login.user_bytes.is_some() {
            return self.inner.lookup(query).await;
        }
        let key = self.key(query);
        if let Some(answer) = match &self.found {
            Some(found) => found.get(&key).await,
            None => None,
        } {
            return Ok(answer);
        }
        if let Some(not_found) = &self.not_found {
            if not_found.get(&key).await.is_some() {
                return Err(MapError::NotFound);
            }
        }
        let answer = self.inner.lookup(query).await;
        match (&answer, &self.found, &self.not_found) {
            (Ok(found), Some(cache), _) => cache.insert(key, found.clone()).await,
            (Err(MapError::NotFound), _, Some(cache)) => cache.insert(key, ()).await,
            _ => {}
        }
        answer
    }
}

/// A cache of `size` entries kept `ttl`, or none when either is zero.
fn cache<V: Clone + Send + Sync + 'static>(ttl: Duration, size: u64) -> Option<Cache<String, V>> {
    (!ttl.is_zero() && size > 0).then(|| {
        Cache::builder()
            .max_capacity(size)
            .time_to_live(ttl)
            .build()
    })
}

impl Map for CachedMap {
    fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
        Box::pin(self.lookup_cached(query))
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn answers_from_password(&self) -> bool {
        self.inner.answers_from_password()
    }

    fn probe(&self) -> super::ProbeFuture<'_> {
        self.inner.probe()
    }

    /// A reloaded map starts with an empty cache.
    fn reload(&self) -> Result<Vec<String>, super::MapSetupError> {
        let warnings = self.inner.reload()?;
        self.forget_answers();
        Ok(warnings)
    }

    fn forget_answers(&self) {
        for cache in self.found.iter() {
            cache.invalidate_all();
        }
        for cache in self.not_found.iter() {
            cache.invalidate_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Connection;
    use crate::protocol::Protocol;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Knows `alice`; fails for `broken`; counts the questions.
    struct Counting(Arc<AtomicUsize>);

    impl Map for Counting {
        fn lookup<'a>(&'a self, query: &'a Query<'a>) -> LookupFuture<'a> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let answer = match query.key {
                "alice" => Ok(Answer::Text("10.0.0.1".into())),
                "broken" => Err(MapError::Unavailable("down".into())),
                _ => Err(MapError::NotFound),
            };
            Box::pin(async move { answer })
        }

        fn describe(&self) -> String {
            "counting".into()
        }
    }

    async fn ask(map: &CachedMap, key: &str) -> Result<Answer, MapError> {
        let (peer, local) = (
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:143".parse().unwrap(),
        );
        let connection = Connection::new(Protocol::Imap, peer, local, false, "t".into());
        let password = crate::protocol::Secret::new(b"pw".to_vec());
        let login = crate::map::Login {
            user: key,
            user_bytes: None,
            password: &password,
            attempt: 1,
            connection: &connection,
        };
        map.lookup(&Query { key, login: &login }).await
    }

    fn cached(positive: u64, negative: u64) -> (CachedMap, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let map = CachedMap::new(
            Box::new(Counting(asked.clone())),
            CacheSettings {
                positive: Duration::from_secs(positive),
                negative: Duration::from_secs(negative),
                size: 100,
            },
        );
        (map, asked)
    }

    #[tokio::test]
    async fn answers_and_unknown_users_are_kept_failures_are_not() {
        let (map, asked) = cached(60, 60);
        for _ in 0..3 {
            assert!(ask(&map, "alice").await.is_ok());
            assert_eq!(ask(&map, "zed").await, Err(MapError::NotFound));
            assert!(matches!(
                ask(&map, "broken").await,
                Err(MapError::Unavailable(_))
            ));
        }
        // alice once, zed once, broken every time.
        assert_eq!(asked.load(Ordering::SeqCst), 1 + 1 + 3);
    }

    #[tokio::test]
    async fn a_zero_lifetime_turns_that_side_off() {
        let (map, asked) = cached(60, 0);
        for _ in 0..2 {
            let _ = ask(&map, "alice").await;
            let _ = ask(&map, "zed").await;
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1 + 2);
    }
}
