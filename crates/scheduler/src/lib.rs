//! `ferry-scheduler`: Ferry's clock. It runs users' scheduled jobs
//! ([`jobs`]: cron schedules fired under a lease, one Kubernetes Job per
//! run, or planned runs without a cluster), keeps services' health and
//! containers true to the cluster ([`sync`]: watches, and metrics.k8s.io
//! samples), and runs retention cleanup of deployment logs, container
//! metrics, job runs, push deliveries and audit logs (its flags are the
//! installation's windows; organizations' own overrides are read from the
//! database each run). It needs the database
//! and the encryption key (backups will read encrypted storage credentials),
//! but never migrates: `ferry-api` owns the schema, so the scheduler waits
//! for it (health `NOT_SERVING` meanwhile) and fails clearly if it never comes.

pub mod args;
pub mod error;
pub mod jobs;
pub mod lease;
pub mod sync;

use std::time::Duration;

use ferry_common::grpc::{GrpcServer, bind};
use ferry_common::{Shutdown, SystemInfo};
use ferry_db::migrate::Migrator;
use ferry_db::retention::RetentionPolicy;
use ferry_db::sea_orm::{DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait as _;
use tokio::sync::oneshot;

pub use args::Args;
pub use error::{Error, Result};

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-scheduler";

/// How often the schema is re-checked while waiting for ferry-api.
const SCHEMA_POLL: Duration = Duration::from_secs(1);

/// Runs the scheduler until `shutdown` fires, then drains.
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    let keyring = args.encryption.keyring().map_err(Error::Key)?;
    let policy = RetentionPolicy {
        deployment_logs_days: args.deployment_log_retention_days,
        container_metrics_days: args.metrics_retention_days,
        audit_logs_days: args.audit_retention_days,
        job_runs_days: args.job_run_retention_days,
        webhook_deliveries_days: args.webhook_delivery_retention_days,
    };
    let db = ferry_db::connect::connect_with(&args.database.connect_config()?).await?;

    let mut system = SystemInfo::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"));
    system.db_backend = match db.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    };
    system.kube_configured = ferry_common::kubernetes_configured();

    // Serve health (NOT_SERVING) at once; become ready when the schema is there.
    let listener = bind(args.listen).await?;
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let ready = async move {
        if ready_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let server = GrpcServer::new(system)
        .grace(args.common.shutdown_grace())
        .serve(listener, ready, shutdown.clone());

    let jobs = async {
        let outcome: Result<()> = async {
            if !wait_for_schema(&db, args.schema_wait(), &shutdown).await? {
                return Ok(());
            }
            let _ = ready_tx.send(());
            let cluster = ferry_k8s::Cluster::from_env().await?;
            if cluster.is_none() {
                tracing::info!(
                    "no Kubernetes cluster configured: job runs are recorded as planned"
                );
            }
            let replica = lease::replica_id();
            let lease = lease::Lease::new(jobs::LEASE, replica.clone(), args.lease_ttl());
            let engine = jobs::Engine::new(db.clone(), cluster.clone(), lease);
            tokio::join!(
                retention_loop(&db, &keyring, &policy, args.retention_interval(), &shutdown),
                engine.run(args.jobs_interval(), &shutdown),
                cluster_loops(&db, cluster.as_ref(), &replica, &args, &shutdown),
            );
            Ok(())
        }
        .await;
        if outcome.is_err() {
            // Stop the gRPC server too; the error becomes the exit status.
            shutdown.trigger();
        }
        outcome
    };

    let grace = args.common.shutdown_grace();
    let jobs = ferry_common::shutdown::drain(jobs, &shutdown, grace, "scheduled jobs");
    let (served, jobs) = tokio::join!(server, jobs);
    if let Err(err) = db.close().await {
        tracing::warn!(error = %err, "closing the database pool failed");
    }
    // `None`: a job outlived the grace period and was abandoned.
    jobs.unwrap_or(Ok(()))?;
    served?;
    Ok(())
}

/// Status sync and metrics sampling, each under its own lease; nothing
/// without a cluster.
async fn cluster_loops(
    db: &DatabaseConnection,
    cluster: Option<&ferry_k8s::Cluster>,
    replica: &str,
    args: &Args,
    shutdown: &Shutdown,
) {
    let Some(cluster) = cluster else { return };
    let ttl = args.lease_ttl();
    let status = sync::StatusSync::new(
        db.clone(),
        cluster.clone(),
        lease::Lease::new(sync::LEASE, replica, ttl),
        ttl,
    );
    let metrics = lease::Lease::new(sync::metrics::LEASE, replica, ttl);
    tokio::join!(
        status.run(shutdown),
        sync::metrics::run(db, cluster, &metrics, args.metrics_interval(), shutdown),
    );
}

/// Waits until every known migration is applied. `Ok(false)` when shutdown
/// came first; an error when `wait` elapsed with migrations still pending.
async fn wait_for_schema(
    db: &DatabaseConnection,
    wait: Duration,
    shutdown: &Shutdown,
) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut logged = false;
    loop {
        // Read-only: the scheduler must not even create the migrations table.
        let pending = Migrator::get_pending_migrations_read_only(db)
            .await
            .map_err(|e| Error::SchemaCheck(e.to_string()))?;
        let Some(first) = pending.first() else {
            tracing::info!("database schema is up to date");
            return Ok(true);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::SchemaMissing {
                pending: pending.len(),
                first: first.name().to_owned(),
            });
        }
        if !logged {
            tracing::warn!(
                pending = pending.len(),
                wait_secs = wait.as_secs(),
                "database schema not migrated yet; waiting for ferry-api"
            );
            logged = true;
        }
        tokio::select! {
            () = shutdown.wait() => return Ok(false),
            () = tokio::time::sleep(SCHEMA_POLL) => {}
        }
    }
}

/// Runs retention cleanup now and then every `interval` until shutdown. A
/// failed run is logged and retried at the next tick; a run in progress is
/// allowed to finish (within the shutdown grace period).
async fn retention_loop(
    db: &DatabaseConnection,
    keyring: &ferry_db::crypto::Keyring,
    policy: &RetentionPolicy,
    interval: Duration,
    shutdown: &Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = ticker.tick() => {}
        }
        match ferry_db::retention::cleanup(db, keyring, policy, chrono::Utc::now()).await {
            Ok(report) => tracing::info!(
                deployment_logs = report.deployment_logs,
                container_metrics = report.container_metrics,
                audit_logs = report.audit_logs,
                job_runs = report.job_runs,
                webhook_deliveries = report.webhook_deliveries,
                sessions = report.sessions,
                invitations = report.invitations,
                "retention cleanup finished"
            ),
            Err(err) => tracing::warn!(error = %err, "retention cleanup failed; will retry"),
        }
    }
}
