//! Graceful shutdown: a signal future, a cloneable [`Shutdown`] latch that
//! every part of a service can wait on, and [`drain`], which bounds how long
//! in-flight work may take once shutdown has started.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::{Error, Result};

/// Resolves on the first SIGTERM or SIGINT and returns its name.
pub async fn shutdown_signal() -> Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// A one-way latch: once triggered, every [`Shutdown::wait`] resolves.
/// Clones share the latch.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A latch that has not fired.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(false).0),
        }
    }

    /// A latch that fires on SIGTERM or SIGINT. The handlers are installed
    /// before this returns, so a signal sent right afterwards is not lost.
    pub fn on_signals() -> Result<Self> {
        let shutdown = Self::new();
        let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(Error::Signal)?;
        let latch = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown requested; draining");
            latch.trigger();
        });
        Ok(shutdown)
    }

    /// Fires the latch (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the latch has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the latch has fired (immediately if it already has).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // Err means the sender is gone, which cannot happen while `self`
            // lives; treat it as shutdown either way.
            let _ = rx.wait_for(|fired| *fired).await;
        }
    }
}

/// Runs `work` to completion; once `shutdown` fires, allows it at most
/// `grace` more. `work` is expected to start draining on its own when
/// `shutdown` fires (e.g. it got [`Shutdown::wait`] as its stop signal).
///
/// Returns `None` when the grace period ran out and `work` was dropped.
pub async fn drain<F: Future>(
    work: F,
    shutdown: &Shutdown,
    grace: Duration,
    what: &str,
) -> Option<F::Output> {
    tokio::pin!(work);
    tokio::select! {
        out = &mut work => return Some(out),
        () = shutdown.wait() => {}
    }
    match tokio::time::timeout(grace, work).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(
                what,
                grace_secs = grace.as_secs_f64(),
                "grace period elapsed; abandoning in-flight work"
            );
            None
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn latch_fires_for_all_clones() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        let waiter = tokio::spawn(other.wait());
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        shutdown.trigger();
        waiter.await.unwrap();
        assert!(other.is_triggered());
        // Waiting after the fact resolves at once.
        tokio::time::timeout(Duration::from_millis(100), shutdown.wait())
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_lets_work_finish_within_grace() {
        let shutdown = Shutdown::new();
        let stop = shutdown.wait();
        let work = async move {
            stop.await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            "done"
        };
        shutdown.trigger();
        let out = drain(work, &shutdown, Duration::from_secs(5), "test").await;
        assert_eq!(out, Some("done"));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_abandons_work_after_grace() {
        let shutdown = Shutdown::new();
        let work = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never"
        };
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            trigger.trigger();
        });
        let started = tokio::time::Instant::now();
        let out = drain(work, &shutdown, Duration::from_secs(5), "test").await;
        assert_eq!(out, None);
        assert_eq!(started.elapsed().as_secs(), 6);
    }

    #[tokio::test]
    async fn drain_returns_when_work_ends_first() {
        let shutdown = Shutdown::new();
        let out = drain(async { 7 }, &shutdown, Duration::from_secs(1), "test").await;
        assert_eq!(out, Some(7));
        assert!(!shutdown.is_triggered());
    }
}
