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
    /// Serialises writers; readers never take it.
    apply: Mutex<()>,
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
            apply: Mutex::new(()),
        }
    }
}

impl ProxyState {
    /// Validates and compiles `snapshot`, then swaps it in atomically.
    /// Requests already routed keep the table they started with. On error
    /// the current table stays.
    pub fn apply_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        let _writer = self.apply.lock().unwrap_or_else(PoisonError::into_inner);
        let previous = self.table.load_full();
        let table = Table::compile(snapshot, Some(&previous), &self.metrics)?;
        let version = table.version();
        let routes = table.routes() as u64;
        self.table.store(Arc::new(table));
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
