//! The fleet's word on hosts and users, as the admin gives it (`backend down`/`up`, `--kick`,
//! `move`): which hosts are drained, and which sessions are to end. With a store the word is
//! written there (a set of drained hosts, a short stream of kicks) and every instance hears it
//! within a second ([`keep_hearing`]); without one it holds in this process. Pools place users
//! on hosts, so the word is about hosts, whatever the protocol.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sessions::{LeaseFacts, SessionTable};
use crate::store::{millis, Store};

/// Kicks and moves remembered in the store for the instances to hear.
const EVENTS_KEPT: usize = 1_000;
/// How often the fleet's word is heard: within a second everywhere.
const HEARING: Duration = Duration::from_millis(250);

pub struct Board {
    sessions: Arc<SessionTable>,
    /// Hosts an admin drained (no new users), as last heard from the store or set here;
    /// `true` for those whose sessions are being ended (`--kick`): users with sessions there
    /// wait for them to end rather than joining them.
    drained: Mutex<HashMap<String, bool>>,
    /// The last kick heard (a stream id); `None` before the first hearing.
    heard: Mutex<Option<String>>,
}

/// The store did not take the admin's word: nothing changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the fleet store did not answer: nothing changed, on any instance")]
pub struct NotTaken;

/// The stream's entries: id, then field/value pairs.
type Events = Vec<(String, Vec<(String, String)>)>;

impl Board {
    pub fn new(sessions: Arc<SessionTable>) -> Arc<Board> {
        Arc::new(Board {
            sessions,
            drained: Mutex::new(HashMap::new()),
            heard: Mutex::new(None),
        })
    }

    pub fn sessions(&self) -> &Arc<SessionTable> {
        &self.sessions
    }

    fn store(&self) -> Option<&Arc<Store>> {
        self.sessions.store()
    }

    /// The drained hosts now, `true` for those being emptied.
    pub fn drained(&self) -> HashMap<String, bool> {
        lock(&self.drained).clone()
    }

    /// Drain `host` or bring it back; `kick`: its sessions end too, spread over that long.
    /// With a store, the word holds only once the store took it.
    pub async fn set_drained(
        &self,
        host: &str,
        drained: bool,
        kick: Option<Duration>,
    ) -> Result<(), NotTaken> {
        let shared = match self.store() {
            Some(store) => {
                let key = store.key("pool", "drained");
                let mut pipe = redis::pipe();
                if drained {
                    let how = if kick.is_some() { "kick" } else { "1" };
                    pipe.cmd("HSET").arg(&key).arg(host).arg(how).ignore();
                } else {
                    pipe.cmd("HDEL").arg(&key).arg(host).ignore();
                }
                if let Some(spread) = kick {
                    event(
                        store,
                        &mut pipe,
                        "host",
                        &format!("{}/{host}", millis(spread)),
                    );
                }
                if !ask(store, pipe).await {
                    return Err(NotTaken);
                }
                true
            }
            None => false,
        };
        {
            let mut set = lock(&self.drained);
            if drained {
                set.insert(host.to_string(), kick.is_some());
            } else {
                set.remove(host);
            }
        }
        // Through the store, every instance (this one too) hears the kick.
        if let (Some(spread), false) = (kick, shared) {
            self.kick_host(host, spread);
        }
        Ok(())
    }

    /// The user whose sessions count under `sessions_key` is assigned to `host` for `sticky`,
    /// and its sessions end everywhere: it comes back there.
    pub async fn move_user(
        &self,
        sessions_key: &str,
        assignment_key: &str,
        host: &str,
        sticky: Duration,
    ) -> Result<(), NotTaken> {
        match self.store() {
            Some(store) => {
                let mut pipe = redis::pipe();
                pipe.cmd("SET")
                    .arg(assignment_key)
                    .arg(host)
                    .arg("PX")
                    .arg(millis(sticky))
                    .ignore();
                // Its sessions end now: the next login must not find them there.
                pipe.cmd("DEL").arg(sessions_key).ignore();
                event(store, &mut pipe, "user", sessions_key);
                if !ask(store, pipe).await {
                    return Err(NotTaken);
                }
            }
            None => self.kick_user(sessions_key),
        }
        Ok(())
    }

    /// End this process's sessions on `host`, whichever pool placed them, spread over `spread`.
    pub fn kick_host(&self, host: &str, spread: Duration) {
        let leases = self
            .sessions
            .leases(|f| f.placed.as_ref().is_some_and(|p| p.host == host));
        kick_spread(leases, spread);
    }

    /// End this process's sessions of the user counted under `sessions_key`.
    fn kick_user(&self, sessions_key: &str) {
        let leases = self.sessions.leases(|f| {
            f.placed
                .as_ref()
                .is_some_and(|p| p.sessions_key == sessions_key)
        });
        kick_spread(leases, Duration::ZERO);
    }

    /// What the fleet said since last time: the drained hosts, kicks and moves.
    pub async fn hear(&self) {
        let Some(store) = self.store() else {
            return;
        };
        let since = lock(&self.heard).clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(store.key("pool", "drained"));
        let events = store.key("pool", "events");
        match &since {
            Some(id) => pipe
                .cmd("XRANGE")
                .arg(&events)
                .arg(next_id(id))
                .arg("+")
                .arg("COUNT")
                .arg(EVENTS_KEPT),
            // The first time: only what comes from now on.
            None => pipe
                .cmd("XREVRANGE")
                .arg(&events)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1),
        };
        let heard: Option<(HashMap<String, String>, Events)> = store
            .ask(|mut con| async move { pipe.query_async(&mut con).await })
            .await;
        let Some((drained, events)) = heard else {
            return;
        };
        *lock(&self.drained) = drained
            .into_iter()
            .map(|(host, how)| (host, how == "kick"))
            .collect();
        if since.is_some() {
            for (_, fields) in &events {
                for (kind, what) in fields {
                    self.carry_out(kind, what);
                }
            }
        }
        let mut heard = lock(&self.heard);
        match events.last() {
            Some((last, _)) => *heard = Some(last.clone()),
            None if heard.is_none() => *heard = Some("0-0".into()),
            None => {}
        }
    }

    /// One kick from the stream: `host` = `SPREAD_MS/HOST`, `user` = its sessions' key.
    fn carry_out(&self, kind: &str, what: &str) {
        match kind {
            "host" => {
                if let Some((spread, host)) = what.split_once('/') {
                    let spread = Duration::from_millis(spread.parse().unwrap_or(0));
                    self.kick_host(host, spread);
                }
            }
            "user" => self.kick_user(what),
            _ => {}
        }
    }
}

/// The stream id right after `id` (`ms-seq`): what comes after it, on any Redis (an exclusive
/// `(id` start needs 6.2).
fn next_id(id: &str) -> String {
    match id.split_once('-').map(|(ms, seq)| (ms, seq.parse::<u64>())) {
        Some((ms, Ok(seq))) if seq < u64::MAX => format!("{ms}-{}", seq + 1),
        Some((ms, _)) => format!("{}-0", ms.parse::<u64>().unwrap_or(0).saturating_add(1)),
        None => id.to_string(),
    }
}

/// Hear the fleet's word every quarter second for as long as the board lives (with a store).
pub fn keep_hearing(board: &Arc<Board>) {
    if board.store().is_none() {
        return;
    }
    let board = Arc::downgrade(board);
    tokio::spawn(async move {
        while let Some(board) = board.upgrade() {
            board.hear().await;
            drop(board);
            tokio::time::sleep(HEARING).await;
        }
    });
}

/// A kick for every instance to hear.
fn event(store: &Store, pipe: &mut redis::Pipeline, kind: &str, what: &str) {
    pipe.cmd("XADD")
        .arg(store.key("pool", "events"))
        .arg("MAXLEN")
        .arg("~")
        .arg(EVENTS_KEPT)
        .arg("*")
        .arg(kind)
        .arg(what)
        .ignore();
}

/// Whether the store took `pipe`.
async fn ask(store: &Store, pipe: redis::Pipeline) -> bool {
    store
        .ask(|mut con| async move { pipe.query_async::<()>(&mut con).await })
        .await
        .is_some()
}

/// Wake each user's sessions' end, the first user's now and the last's after `spread`, evenly
/// between: fifty thousand clients must not all reconnect in the same second. A user's
/// sessions end together, so that the first to come back does not find the others still
/// there.
fn kick_spread(leases: Vec<Arc<LeaseFacts>>, spread: Duration) {
    let mut users: HashMap<Option<String>, Vec<Arc<LeaseFacts>>> = HashMap::new();
    for lease in leases {
        let user = lease.placed.as_ref().map(|p| p.sessions_key.clone());
        users.entry(user).or_default().push(lease);
    }
    let users: Vec<Vec<Arc<LeaseFacts>>> = users.into_values().collect();
    let end = |sessions: &Vec<Arc<LeaseFacts>>| {
        for lease in sessions {
            lease.kicked.notify_one();
        }
    };
    if spread.is_zero() || users.len() <= 1 {
        users.iter().for_each(end);
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let started = tokio::time::Instant::now();
        let last = (users.len() - 1) as u32;
        for (i, sessions) in users.iter().enumerate() {
            tokio::time::sleep_until(started + spread * i as u32 / last).await;
            end(sessions);
        }
    });
}

/// A poisoned lock only means a panic elsewhere while it was held; the sets are still sound.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{Count, Placement};

    fn placed(host: &str, user: &str) -> Option<Placement> {
        Some(Placement {
            pool: 1,
            host: host.into(),
            sessions_key: format!("pool:s:{user}"),
            assignment_key: format!("pool:a:{user}"),
            sticky: Duration::from_secs(60),
        })
    }

    #[test]
    fn the_next_stream_id_follows_the_last_heard() {
        assert_eq!(next_id("1700000000000-0"), "1700000000000-1");
        assert_eq!(next_id("5-18446744073709551615"), "6-0");
        assert_eq!(next_id("0-0"), "0-1");
    }

    #[tokio::test]
    async fn without_a_store_the_word_holds_here_and_kicks_end_the_sessions_named() {
        let table = SessionTable::new(None, Duration::from_secs(30));
        let board = Board::new(table.clone());
        let count = |user: &str| {
            vec![Count {
                key: format!("pool:s:{user}"),
                cap: 0,
            }]
        };
        let kate = table
            .enter(&count("kate"), placed("a", "kate"))
            .await
            .unwrap();
        let bob = table
            .enter(&count("bob"), placed("b", "bob"))
            .await
            .unwrap();
        board
            .set_drained("a", true, Some(Duration::ZERO))
            .await
            .unwrap();
        assert_eq!(board.drained().get("a"), Some(&true));
        // Kate's session on a was told to end (a permit waits for the relay), Bob's was not.
        tokio::time::timeout(Duration::from_secs(1), kate.facts.kicked.notified())
            .await
            .expect("kate kicked");
        let bob_kicked =
            tokio::time::timeout(Duration::from_millis(50), bob.facts.kicked.notified()).await;
        assert!(bob_kicked.is_err(), "bob is on another host");
        board.set_drained("a", false, None).await.unwrap();
        assert!(board.drained().is_empty());
        board
            .move_user("pool:s:bob", "pool:a:bob", "a", Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), bob.facts.kicked.notified())
            .await
            .expect("bob kicked by the move");
    }
}
