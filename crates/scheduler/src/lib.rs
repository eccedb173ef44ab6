//! `ferry-scheduler`: Ferry's clock. It runs users' scheduled jobs
//! ([`jobs`]: cron schedules fired under a lease, one Kubernetes Job per
//! run, or planned runs without a cluster), keeps services' health and
//! containers true to the cluster ([`sync`]: watches, and metrics.k8s.io
//! samples), re-checks verified domains' TXT records ([`domains`]), and
//! runs retention cleanup of deployment logs, container
//! metrics, job runs, push deliveries and audit logs (its flags are the
//! installation's windows; organizations' own overrides are read from the
//! database each run). It needs the database
//! and the encryption key (backups will read encrypted storage credentials),
//! but never migrates: `ferry-api` owns the schema, so the scheduler waits
//! for it (health `NOT_SERVING` meanwhile) and fails clearly if it never comes.
//! Then health follows [`readiness`]: `SERVING` while the database (and the
//! cluster, if one is configured) answers. Every loop runs under its own
//! [`lease`], so with several replicas one acts at a time.

pub mod acme;
pub mod args;
pub mod ari;
pub mod cloudflare;
pub mod dns01;
pub mod domains;
pub mod error;
pub mod expiry;
pub mod jobs;
pub mod lease;
pub mod notifications;
pub mod readiness;
pub mod sync;

use std::time::Duration;

use ferry_common::grpc::{GrpcServer, bind};
use ferry_common::{Shutdown, SystemInfo};
use ferry_db::migrate::Migrator;
use ferry_db::retention::RetentionPolicy;
use ferry_db::sea_orm::{DatabaseConnection, DbBackend};
use sea_orm_migration::MigratorTrait as _;
use tokio::sync::watch;

pub use args::Args;
pub use error::{Error, Result};

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-scheduler";

/// How often the schema is re-checked while waiting for ferry-api.
const SCHEMA_POLL: Duration = Duration::from_secs(1);

/// Lease name of the retention loop.
pub const RETENTION_LEASE: &str = "retention";

/// Runs the scheduler until `shutdown` fires, then drains.
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    // A bad ACME/DNS-01 setting stops start-up rather than silently
    // turning certificates off.
    let acme_config = args.acme.config()?;
    let keyring = std::sync::Arc::new(args.encryption.keyring().map_err(Error::Key)?);
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

    // Serve health (NOT_SERVING) at once; once the schema is there, health
    // follows the readiness probe.
    let listener = bind(args.listen).await?;
    let (ready_tx, readiness) = watch::channel(false);
    let server = GrpcServer::new(system)
        .grace(args.common.shutdown_grace())
        .serve_with_readiness(listener, readiness, shutdown.clone());

    let jobs = async {
        let outcome: Result<()> = async {
            if !wait_for_schema(&db, args.schema_wait(), &shutdown).await? {
                return Ok(());
            }
            let cluster = ferry_k8s::Cluster::from_env().await?;
            if cluster.is_none() {
                tracing::info!(
                    "no Kubernetes cluster configured: job runs are recorded as planned"
                );
            }
            let interval = args.readiness_interval();
            let probe = readiness::Probe::new(
                db.clone(),
                cluster.clone(),
                readiness::timeout_for(interval),
            );
            let replica = lease::replica_id();
            let retention = lease::Lease::new(RETENTION_LEASE, replica.clone(), args.lease_ttl());
            let lease = lease::Lease::new(jobs::LEASE, replica.clone(), args.lease_ttl());
            let engine = jobs::Engine::new(db.clone(), cluster.clone(), lease);
            let domain_lease = lease::Lease::new(domains::LEASE, replica.clone(), args.lease_ttl());
            let recheck = args.domain_recheck();
            tokio::join!(
                readiness::watch(probe, interval, ready_tx, &shutdown),
                retention_loop(
                    &db,
                    &keyring,
                    &policy,
                    args.retention_interval(),
                    retention,
                    &shutdown
                ),
                engine.run(args.jobs_interval(), &shutdown),
                domains::run(
                    &db,
                    &recheck,
                    &domain_lease,
                    args.domain_pass_interval(),
                    &shutdown
                ),
                cluster_loops(&db, cluster.as_ref(), &replica, &args, &shutdown),
                notifications::run(&db, &args, &replica, &shutdown),
                certificates_loop(
                    &db,
                    keyring.clone(),
                    acme_config,
                    Duration::from_secs(args.acme.acme_interval_secs),
                    lease::Lease::new(acme::LEASE, replica.clone(), args.lease_ttl()),
                    &shutdown
                ),
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

/// Runs a certificates pass every `interval` on the replica holding the
/// `certificates` lease, until shutdown: expiry notices
/// ([`expiry::notify_expiring`], ACME or not) and, with an ACME directory
/// configured, an ACME pass ([`acme::Issuer::tick`]). A pass stops if the
/// lease is lost.
async fn certificates_loop(
    db: &DatabaseConnection,
    keyring: std::sync::Arc<ferry_db::crypto::Keyring>,
    config: Option<acme::AcmeConfig>,
    interval: Duration,
    lease: lease::Lease,
    shutdown: &Shutdown,
) {
    let issuer = match config {
        Some(config) => Some(acme::Issuer::new(db.clone(), keyring, config)),
        None => {
            tracing::info!(
                "no ACME directory configured (--acme-directory): certificates are upload-only"
            );
            None
        }
    };
    let mut ticker = tokio::time::interval(lease.renew_every().min(interval));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_run: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        match lease.acquire(db, chrono::Utc::now()).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(err) => {
                tracing::warn!(error = %err, "taking the certificates lease failed; retrying");
                continue;
            }
        }
        if last_run.is_some_and(|at| at.elapsed() < interval) {
            continue;
        }
        last_run = Some(tokio::time::Instant::now());
        match lease
            .while_held(db, certificates_pass(db, issuer.as_ref()))
            .await
        {
            Some(Ok((report, expiring))) if report != acme::Report::default() || expiring > 0 => {
                tracing::info!(
                    issued = report.issued,
                    failed = report.failed,
                    expiring,
                    "certificate pass finished"
                );
            }
            Some(Ok(_)) => {}
            Some(Err(err)) => tracing::warn!(error = %err, "certificate pass failed; will retry"),
            None => tracing::warn!("certificate pass stopped: the certificates lease was lost"),
        }
    }
    if let Err(err) = lease.release(db).await {
        tracing::warn!(error = %err, "releasing the certificates lease failed");
    }
}

/// One certificates pass: expiry notices, then ACME if configured.
async fn certificates_pass(
    db: &DatabaseConnection,
    issuer: Option<&acme::Issuer>,
) -> Result<(acme::Report, usize)> {
    let now = chrono::Utc::now();
    let expiring = expiry::notify_expiring(db, now).await?;
    let report = match issuer {
        Some(issuer) => issuer.tick(now).await?,
        None => acme::Report::default(),
    };
    Ok((report, expiring))
}

/// Runs retention cleanup every `interval` on the replica holding the
/// `retention` lease, until shutdown. Every replica tries to take (or
/// renew) the lease every third of its TTL; the holder runs a cleanup when
/// it has not run one for `interval` (so at once after taking over: the
/// cleanup is idempotent, a repeat deletes nothing new), renewing the lease
/// meanwhile and stopping if it is lost. A failed run is logged and retried
/// at the next interval. On shutdown a run in progress may finish (within
/// the grace period) and the lease is released.
async fn retention_loop(
    db: &DatabaseConnection,
    keyring: &ferry_db::crypto::Keyring,
    policy: &RetentionPolicy,
    interval: Duration,
    lease: lease::Lease,
    shutdown: &Shutdown,
) {
    let mut ticker = tokio::time::interval(lease.renew_every());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_run: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            _ = ticker.tick() => {}
        }
        match lease.acquire(db, chrono::Utc::now()).await {
            Ok(true) => {}
            Ok(false) => {
                // Another replica runs retention; if it dies, this one
                // starts with a run.
                last_run = None;
                continue;
            }
            Err(err) => {
                tracing::warn!(error = %err, "taking the retention lease failed; retrying");
                continue;
            }
        }
        if last_run.is_some_and(|at| at.elapsed() < interval) {
            continue;
        }
        last_run = Some(tokio::time::Instant::now());
        let cleanup = ferry_db::retention::cleanup(db, keyring, policy, chrono::Utc::now());
        match lease.while_held(db, cleanup).await {
            Some(Ok(report)) => tracing::info!(
                deployment_logs = report.deployment_logs,
                container_metrics = report.container_metrics,
                audit_logs = report.audit_logs,
                job_runs = report.job_runs,
                webhook_deliveries = report.webhook_deliveries,
                sessions = report.sessions,
                invitations = report.invitations,
                "retention cleanup finished"
            ),
            Some(Err(err)) => tracing::warn!(error = %err, "retention cleanup failed; will retry"),
            None => tracing::warn!("retention cleanup stopped: the retention lease was lost"),
        }
    }
    if let Err(err) = lease.release(db).await {
        tracing::warn!(error = %err, "releasing the retention lease failed");
    }
}
