//! A running pool's own work: its servers checked every `health_interval_ms` (and what
//! logins see), each change logged, counted and acted on (a server gone down has its
//! sessions ended, whichever pool placed them: its users move, and must not be on two servers
//! at once), and the gauges kept, every quarter second.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::metrics::{HealthState, PoolChangeLabels, PoolServerLabels};

use super::super::Map;
use super::health::Change;
use super::{lock, Attachment, CheckFailed, Pool};

/// How often the gauges of sessions and users are brought up to date.
const GAUGES_EVERY: Duration = Duration::from_secs(1);

/// Give the running process's services to the pool `map` is (if it is one), and start its
/// work; a pool already at work (kept by a reload) goes on with the new ones (its checks
/// through the new listener).
pub fn attach(map: &Arc<dyn Map>, attachment: Attachment) {
    let Some(pool) = map.pool() else {
        return;
    };
    *pool.attached.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(attachment));
    pool.publish_health();
    if !pool.running.swap(true, Ordering::Relaxed) {
        tokio::spawn(run(Arc::downgrade(map)));
    }
}

/// Until the pool is gone (a reload replaced it).
async fn run(map: Weak<dyn Map>) {
    let (mut next_check, mut next_gauges) = (Instant::now(), Instant::now());
    loop {
        let wake = {
            let Some(map) = map.upgrade() else {
                return;
            };
            let Some(pool) = map.pool().filter(|p| !p.retired.load(Ordering::Relaxed)) else {
                return;
            };
            let now = Instant::now();
            if now >= next_check {
                next_check = now + pool.settings.health_interval;
                for i in 0..pool.servers.len() {
                    tokio::spawn(check(Arc::downgrade(&map), i));
                }
            }
            if now >= next_gauges {
                next_gauges = now + GAUGES_EVERY;
                pool.publish_load();
            }
            next_check.min(next_gauges)
        };
        tokio::time::sleep_until(wake.into()).await;
    }
}

/// One check of server `i`, within the pool's health timeout.
async fn check(map: Weak<dyn Map>, i: usize) {
    let Some(map) = map.upgrade() else {
        return;
    };
    let Some(pool) = map.pool() else {
        return;
    };
    let Some(attached) = pool.attachment() else {
        return;
    };
    // The previous check of this server is still under way: it counts, not a second one.
    if pool.checking[i].swap(true, Ordering::Relaxed) {
        return;
    }
    let server = &pool.servers[i];
    let within = pool.settings.health_timeout;
    let result = match tokio::time::timeout(within, attached.checker.check(server)).await {
        Ok(result) => result,
        Err(_) => Err(CheckFailed(format!(
            "no greeting and logout within {} ms",
            within.as_millis()
        ))),
    };
    pool.checking[i].store(false, Ordering::Relaxed);
    pool.observe(i, result);
}

impl Pool {
    /// What a check or a login saw of server `i`; a change is logged, counted and acted on.
    pub(super) fn observe(&self, i: usize, result: Result<(), CheckFailed>) {
        let change = {
            let mut state = lock(&self.state);
            let Some(health) = state.health.get_mut(i) else {
                return;
            };
            health.observe(
                result.is_ok(),
                self.settings.down_after,
                self.settings.up_after,
            )
        };
        let (Some(change), Some(attached)) = (change, self.attachment()) else {
            return;
        };
        let server = &self.servers[i];
        let name = attached.checker.name(server);
        let (to, line) = match (&change, &result) {
            (Change::WentDown, Err(why)) => (
                HealthState::Down,
                format!("pool server {name} is down ({why}): its users move, its sessions end"),
            ),
            _ => (HealthState::Up, format!("pool server {name} is up again")),
        };
        attached.logger.warning(&line);
        attached
            .metrics
            .pool_changes
            .get_or_create(&PoolChangeLabels {
                listener: attached.listener.clone(),
                server: name,
                to,
            })
            .inc();
        if change == Change::WentDown {
            // Hung sessions there would otherwise wake up beside the user's new server.
            attached
                .board
                .kick_host(&server.host, self.settings.kick_spread);
        }
        self.publish_health();
    }

    /// Every server's up gauge, as the health says now.
    fn publish_health(&self) {
        let Some(attached) = self.attachment() else {
            return;
        };
        let state = lock(&self.state);
        for (server, health) in self.servers.iter().zip(&state.health) {
            attached
                .metrics
                .pool_up
                .get_or_create(&self.labels(&attached, server))
                .set(i64::from(health.is_up()));
        }
    }

    /// The sessions and users of this instance on each server, for the gauges.
    fn publish_load(&self) {
        let Some(attached) = self.attachment() else {
            return;
        };
        for (server, load) in self.servers.iter().zip(self.load()) {
            let labels = self.labels(&attached, server);
            let metrics = &attached.metrics;
            metrics
                .pool_sessions
                .get_or_create(&labels)
                .set(load.sessions as i64);
            metrics
                .pool_users
                .get_or_create(&labels)
                .set(load.users as i64);
        }
    }

    fn labels(&self, attached: &Attachment, server: &super::Server) -> PoolServerLabels {
        PoolServerLabels {
            listener: attached.listener.clone(),
            server: attached.checker.name(server),
        }
    }
}

/// A pool that replaces `old` (a reload changed its settings) starts from what `old` knew of
/// the servers they share, rather than from "every server up".
pub fn succeed(map: &Arc<dyn Map>, old: &Arc<dyn Map>) {
    let (Some(pool), Some(old)) = (map.pool(), old.pool()) else {
        return;
    };
    let known = lock(&old.state).health.clone();
    let mut state = lock(&pool.state);
    for (server, health) in pool.servers.iter().zip(state.health.iter_mut()) {
        let same = |s: &&super::Server| s.host == server.host && s.port == server.port;
        if let Some(i) = old.servers.iter().position(|s| same(&s)) {
            *health = known[i].clone();
        }
    }
}

/// The pool `map` is (if it is one) was replaced by a reload: its work stops, and its gauges
/// are left to its successor.
pub fn retire(map: &Arc<dyn Map>) {
    if let Some(pool) = map.pool() {
        pool.retired.store(true, Ordering::Relaxed);
    }
}
