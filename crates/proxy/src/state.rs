//! [`ProxyState`]: the routing table (swapped atomically, read without a
//! lock), readiness and counters, shared by the listeners, the admin
//! endpoints and the feed.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::Result;
use crate::config::Snapshot;
use crate::metrics::Metrics;
use crate::table::Table;

/// Shared proxy state.
#[derive(Debug)]
pub struct ProxyState {
    /// True once every listener is bound; false again when draining starts.
    pub ready: AtomicBool,
    /// Requests answered on the plain HTTP listener.
    pub http_requests: AtomicU64,
    /// Connections accepted on the HTTPS listener.
    pub https_connections: AtomicU64,
    /// Process start, for the uptime gauge.
    pub started_at: SystemTime,
    /// Data-plane metrics.
    pub metrics: Metrics,
    table: ArcSwap<Table>,
    loaded: AtomicBool,
    /// Serialises writers (readers never take it) and holds replaced
    /// tables that requests still use, so the writer frees them later
    /// instead of the last request on a worker thread (~2 ms for 10,000
    /// routes).
    apply: Mutex<Vec<Arc<Table>>>,
}

impl Default for ProxyState {
    fn default() -> Self {
        Self {
            ready: AtomicBool::new(false),
            http_requests: AtomicU64::new(0),
            https_connections: AtomicU64::new(0),
            started_at: SystemTime::now(),
            metrics: Metrics::default(),
            table: ArcSwap::from_pointee(Table::default()),
            loaded: AtomicBool::new(false),
            apply: Mutex::new(Vec::new()),
        }
    }
}

impl ProxyState {
    /// Validates and compiles `snapshot`, then swaps it in atomically.
    /// Requests already routed keep the table they started with. On error
    /// the current table stays.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let mut retired = self.apply.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = self.table.load_full();
        let table = Table::compile(snapshot, Some(&previous), &self.metrics)?;
        let version = table.version();
        let routes = table.routes() as u64;
        self.table.store(Arc::new(table));
        // Requests that started on an older table hold it; free here the
        // ones they have let go of since.
        retired.retain(|t| Arc::strong_count(t) > 1);
        if Arc::strong_count(&previous) > 1 {
            retired.push(previous);
        }
        self.loaded.store(true, Ordering::Release);
        self.metrics.feed_version.store(version, Ordering::Relaxed);
        self.metrics.routes.store(routes, Ordering::Relaxed);
        self.metrics
            .snapshots_applied
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(version, routes, "routing snapshot applied");
        Ok(())
    }

    /// Version of the snapshot in use (0 before any, or for a routes file).
    pub fn current_version(&self) -> u64 {
        self.table.load().version()
    }

    /// The snapshot in use (for incremental updates and persistence).
    pub fn current_snapshot(&self) -> Arc<Snapshot> {
        self.table.load().snapshot().clone()
    }

    /// Whether a snapshot has been applied.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Ready for traffic: listeners bound, not draining, snapshot loaded.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && self.loaded()
    }

    /// The current table; hold it for the whole request.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_replaced_table_still_in_use_is_freed_by_the_writer() {
        let state = ProxyState::default();
        let snapshot = |version| Snapshot {
            version,
            ..Snapshot::default()
        };
        state.apply_snapshot(snapshot(1)).unwrap();
        let in_flight = state.table();
        state.apply_snapshot(snapshot(2)).unwrap();
        // The request's reference is not the last one: the writer keeps one.
        assert_eq!(Arc::strong_count(&in_flight), 2);
        drop(in_flight);
        state.apply_snapshot(snapshot(3)).unwrap();
        assert!(state.apply.lock().unwrap().is_empty(), "freed once let go");
    }
}
