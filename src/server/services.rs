//! What every session of the process shares, whatever its listener: the log, the
//! brute-force guard, the metrics and the table of live sessions. Sessions hold it by `Arc`, so a reload
//! can build a new one while live sessions keep theirs.

use std::sync::Arc;

use crate::fleet::{Board, SessionTable};
use crate::guard::Guard;
use crate::log::Logger;
use crate::map::pool::{watch, Attachment};
use crate::map::Map;
use crate::metrics::Metrics;
use crate::protocol::descriptor::Descriptor;

use super::loop_guard::OwnConnections;
use super::pool_checks::ListenerChecks;
use super::registry::Registry;

/// A pool, and the label of the listener it routes for.
pub type Pooled = (String, Arc<dyn Map>);

pub struct Services {
    /// The one writer of every log line of the process.
    pub logger: Arc<Logger>,
    /// Failures delay and ban by address across every listener; `None` when turned off.
    /// Kept by a reload unless `[guard]` changed, and then replaced for every session, those
    /// opened before included: their next attempt is judged by the guard that took over the
    /// old one's records, never by a discarded one.
    guard: Arc<std::sync::RwLock<Option<Arc<Guard>>>>,
    /// Back-end connections of this process, so that one arriving at our own listener (a
    /// proxy loop) is recognised.
    pub own_connections: Arc<OwnConnections>,
    /// What `GET /metrics` shows.
    pub metrics: Arc<Metrics>,
    /// The sessions open now (`GET /sessions`, kicks).
    pub registry: Arc<Registry>,
    /// The maps of the running configuration, so that a kick can make them forget what they
    /// answered (the user moved).
    pub maps: Arc<std::sync::RwLock<Vec<Arc<dyn Map>>>>,
    /// The logged-in sessions, counted by user for the caps and the pools (across the fleet
    /// with a store).
    pub sessions: Arc<SessionTable>,
    /// The fleet's word on the pools' hosts: drained, kicks, moves.
    pub board: Arc<Board>,
    /// The running configuration's pools, each with its listener's label.
    pub pools: std::sync::RwLock<Vec<Pooled>>,
}

/// Where a pool's placements are kept: one place for every protocol that opens mailboxes
/// (their placements must agree), the protocol's own for the others.
fn namespace(descriptor: &Descriptor) -> &'static str {
    if descriptor.opens_mailboxes {
        "pool"
    } else {
        descriptor.name
    }
}

/// A pool built anew by a reload on a listener that had one before takes over what the old
/// one knew of the servers' health.
fn succeed(map: &Arc<dyn Map>, label: &str, before: &[Pooled]) {
    if before.iter().any(|(_, old)| Arc::ptr_eq(old, map)) {
        return;
    }
    if let Some((_, old)) = before.iter().find(|(old_label, _)| old_label == label) {
        watch::succeed(map, old);
    }
}

impl Services {
    pub fn new(
        logger: Arc<Logger>,
        guard: Option<Guard>,
        sessions: Arc<SessionTable>,
    ) -> Arc<Services> {
        let metrics = Metrics::new();
        metrics
            .readings
            .set_log_lines_dropped(logger.lines_dropped());
        Arc::new(Services {
            logger,
            guard: Arc::new(std::sync::RwLock::new(guard.map(Arc::new))),
            own_connections: Arc::default(),
            metrics: Arc::new(metrics),
            registry: Arc::default(),
            maps: Arc::default(),
            board: Board::new(sessions.clone()),
            sessions,
            pools: Default::default(),
        })
    }

    /// The guard now.
    pub fn guard(&self) -> Option<Arc<Guard>> {
        self.guard.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Another guard for every session (a reload that changed `[guard]`).
    pub fn set_guard(&self, guard: Option<Arc<Guard>>) {
        *self.guard.write().unwrap_or_else(|e| e.into_inner()) = guard;
    }

    /// The running configuration's maps are these; its pools start their work (those kept
    /// by a reload go on).
    pub fn set_maps(&self, listeners: &[Arc<super::builder::ListenerState>]) {
        let before = self.pools();
        let mut pools = Vec::new();
        for listener in listeners {
            let Some(map) = &listener.router.map else {
                continue;
            };
            succeed(map, &listener.label, &before);
            let attachment = Attachment {
                board: self.board.clone(),
                checker: Arc::new(ListenerChecks::new(listener)),
                logger: self.logger.clone(),
                metrics: self.metrics.clone(),
                listener: listener.label.clone(),
                namespace: namespace(listener.protocol().descriptor()),
            };
            watch::attach(map, attachment);
            if map.pool().is_some() {
                pools.push((listener.label.clone(), map.clone()));
            }
        }
        let old = std::mem::replace(
            &mut *self.pools.write().unwrap_or_else(|e| e.into_inner()),
            pools.clone(),
        );
        for (_, map) in old {
            if !pools.iter().any(|(_, kept)| Arc::ptr_eq(kept, &map)) {
                watch::retire(&map);
            }
        }
        let maps = listeners
            .iter()
            .filter_map(|l| l.router.map.clone())
            .collect();
        if let Ok(mut current) = self.maps.write() {
            *current = maps;
        }
    }

    /// The pools now, with their listeners' labels.
    pub fn pools(&self) -> Vec<Pooled> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every map forgets its cached answers.
    pub fn forget_map_answers(&self) {
        if let Ok(maps) = self.maps.read() {
            for map in maps.iter() {
                map.forget_answers();
            }
        }
    }
}
