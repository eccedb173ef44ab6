//! Notification delivery under the `notifications` lease: the replica
//! holding it runs [`ferry_notify::Worker::tick`] every
//! `--notifications-interval-ms` (fan out new outbox events to their
//! channels' deliveries, send what is due, retry failures with backoff).
//! Everything the worker does is idempotent and claimed row by row, so a
//! lease lost mid-tick costs nothing but a repeat no-op. Once an hour the
//! holder also deletes settled events past `--notifications-retention-days`
//! with their deliveries ([`ferry_notify::Worker::prune`]). On PostgreSQL
//! the loop also wakes at once when an outbox insert commits (LISTEN on
//! [`WAKE_CHANNEL`]); SQLite polls.

use std::sync::Arc;
use std::time::Duration;

use ferry_common::Shutdown;
use ferry_db::sea_orm::{DatabaseConnection, DbBackend};
use ferry_notify::{SendConfig, Sender, Worker, WorkerConfig};
use tokio::sync::Notify;

use crate::lease::Lease;

/// Lease name of the delivery loop.
pub const LEASE: &str = "notifications";

/// The channel the outbox's insert trigger notifies at commit (migration
/// `m0022_notify_wakeup`, PostgreSQL only).
pub const WAKE_CHANNEL: &str = "ferry_notifications";

/// How often the lease holder deletes settled events past the retention.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Ticks run back to back while a full batch came back.
const MAX_TICKS_IN_A_ROW: usize = 20;

/// The delivery worker's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct NotificationArgs {
    /// Milliseconds between delivery ticks: the usual delay from an event
    /// to its first delivery attempt.
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_INTERVAL_MS",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(50..=60_000)
    )]
    pub notifications_interval_ms: u64,

    /// Send to loopback, private and link-local addresses too (receivers
    /// inside your own network). Set it on ferry-api as well.
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_ALLOW_PRIVATE_TARGETS",
        default_value_t = false
    )]
    pub notifications_allow_private_targets: bool,

    /// Seconds one delivery attempt may take (connect to response).
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_TIMEOUT_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=120)
    )]
    pub notifications_timeout_secs: u64,

    /// Attempts before a delivery is given up (`failed`).
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_MAX_ATTEMPTS",
        default_value_t = 8,
        value_parser = clap::value_parser!(u32).range(1..=50)
    )]
    pub notifications_max_attempts: u32,

    /// Milliseconds before the first retry; doubling per attempt up to an
    /// hour, with jitter.
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_BACKOFF_MS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub notifications_backoff_ms: u64,

    /// Deliveries sent at once.
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_CONCURRENCY",
        default_value_t = 8,
        value_parser = clap::value_parser!(u64).range(1..=256)
    )]
    pub notifications_concurrency: u64,

    /// Days an event is kept once settled (every delivery delivered or
    /// given up); then it is deleted with its delivery log. 0 keeps them.
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_RETENTION_DAYS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(0..=3650)
    )]
    pub notifications_retention_days: u32,

    /// A PEM file of CA certificates trusted for SMTP relays (STARTTLS and
    /// TLS) besides the public roots: for a relay with a private CA. Set
    /// it on ferry-api as well.
    #[arg(
        long,
        env = "FERRY_SMTP_CA_FILE",
        value_name = "PEM",
        value_parser = ferry_notify::smtp::SmtpTrust::parse_file
    )]
    pub smtp_ca_file: Option<ferry_notify::smtp::SmtpTrust>,
}

impl NotificationArgs {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.notifications_interval_ms)
    }

    pub fn send_config(&self) -> SendConfig {
        SendConfig {
            allow_private: self.notifications_allow_private_targets,
            timeout: Duration::from_secs(self.notifications_timeout_secs),
        }
    }

    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            max_attempts: i32::try_from(self.notifications_max_attempts).unwrap_or(8),
            backoff_base: Duration::from_millis(self.notifications_backoff_ms),
            concurrency: usize::try_from(self.notifications_concurrency).unwrap_or(8),
            retention: (self.notifications_retention_days > 0).then(|| {
                Duration::from_secs(u64::from(self.notifications_retention_days) * 86_400)
            }),
            ..WorkerConfig::default()
        }
    }
}

/// Builds the worker from the scheduler's flags and runs it until shutdown.
pub async fn run(db: &DatabaseConnection, args: &crate::Args, replica: &str, shutdown: &Shutdown) {
    let keyring = match args.encryption.keyring() {
        Ok(k) => Arc::new(k),
        Err(err) => {
            tracing::error!(error = %err, "notifications are not delivered: no usable encryption key");
            return;
        }
    };
    let sender = match Sender::new(args.notifications.send_config()) {
        Ok(s) => s.with_smtp_trust(args.notifications.smtp_ca_file.clone().unwrap_or_default()),
        Err(err) => {
            tracing::error!(error = %err, "notifications are not delivered: the sender failed to start");
            return;
        }
    };
    let worker = Worker::new(
        db.clone(),
        keyring,
        sender,
        args.notifications.worker_config(),
    );
    let lease = Lease::new(LEASE, replica, args.lease_ttl());
    deliver(db, &worker, &lease, args.notifications.interval(), shutdown).await;
}

/// Runs `worker` every `interval` while holding `lease`, until shutdown;
/// then releases the lease.
pub async fn deliver(
    db: &DatabaseConnection,
    worker: &Worker,
    lease: &Lease,
    interval: Duration,
    shutdown: &Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at: Option<tokio::time::Instant> = None;
    let wake = spawn_wakeup(db, shutdown);
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            _ = ticker.tick() => {}
            () = wake.notified() => {}
        }
        match lease.acquire(db, chrono::Utc::now()).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "taking the notifications lease failed; retrying");
                continue;
            }
        }
        let prune = pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        let work = async {
            if prune {
                let gone = worker.prune(chrono::Utc::now()).await?;
                if gone > 0 {
                    tracing::info!(events = gone, "deleted settled notification events");
                }
            }
            for _ in 0..MAX_TICKS_IN_A_ROW {
                let tick = worker.tick(chrono::Utc::now()).await?;
                if tick != ferry_notify::worker::Tick::default() {
                    tracing::debug!(?tick, "notification tick");
                }
                if !worker.full(&tick) {
                    break;
                }
            }
            Ok::<(), ferry_notify::Error>(())
        };
        let result = lease.while_held(db, work).await;
        if prune && matches!(result, Some(Ok(()))) {
            pruned_at = Some(tokio::time::Instant::now());
        }
        match result {
            Some(Ok(())) => {}
            Some(Err(err)) => {
                tracing::warn!(error = %err, "a notification tick failed; will retry")
            }
            None => tracing::warn!("notification delivery stopped: the lease was lost"),
        }
    }
    if let Err(err) = lease.release(db).await {
        tracing::warn!(error = %err, "releasing the notifications lease failed");
    }
}

/// On PostgreSQL, a task that LISTENs on [`WAKE_CHANNEL`] and pokes the
/// returned `Notify` at every committed outbox insert, so delivery does not
/// wait for the next tick (pokes coalesce: one pending at most). On SQLite
/// nothing pokes it: the loop polls.
fn spawn_wakeup(db: &DatabaseConnection, shutdown: &Shutdown) -> Arc<Notify> {
    let wake = Arc::new(Notify::new());
    if db.get_database_backend() != DbBackend::Postgres {
        return wake;
    }
    let (db, shutdown, poke) = (db.clone(), shutdown.clone(), wake.clone());
    tokio::spawn(async move {
        let what = "notification wake-up";
        while let Some(mut listener) =
            ferry_common::listen::listen(&db, WAKE_CHANNEL, &shutdown, what).await
        {
            // Events committed before LISTEN took effect: one tick now.
            poke.notify_one();
            loop {
                tokio::select! {
                    () = shutdown.wait() => return,
                    got = listener.recv() => match got {
                        Ok(_) => poke.notify_one(),
                        Err(err) => {
                            tracing::warn!(error = %err, "{what}: LISTEN lost; polling until it is back");
                            break;
                        }
                    },
                }
            }
        }
    });
    wake
}
