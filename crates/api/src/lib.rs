//! `ferry-api`: Ferry's control-plane gRPC API. It owns the database schema:
//! `serve` migrates on start (on PostgreSQL under an advisory lock, so
//! replicas never race) and then binds legacy encrypted values to their rows,
//! and `migrate`, `seed` and `rotate-key` manage the database from the
//! command line.

pub mod args;
pub mod builds;
pub mod certificates;
pub mod db;
pub mod domains;
pub mod error;
pub mod feed;
pub mod http;
pub mod jobs;
pub mod lease;
pub mod mail;
pub mod notifications;
pub mod paging;
pub mod request;
pub mod wire;

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod authz;
pub mod workloads;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use ferry_common::grpc::{GrpcServer, GrpcServices, bind};
use ferry_common::{Shutdown, SystemInfo};
use ferry_db::crypto::Keyring;
use ferry_db::sea_orm::{DatabaseConnection, DbBackend};

pub use args::{Args, Command, MigrateAction};
pub use error::{Error, Result};

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-api";

/// Logged (and printed by `make run`) when no cluster is configured.
pub const NO_CLUSTER_WARNING: &str = "no Kubernetes cluster configured (set KUBECONFIG or run in-cluster): \
     deployments are rendered and recorded, not applied";

/// What the api's gRPC services share.
#[derive(Clone)]
pub struct ApiState {
    /// The database pool.
    pub db: DatabaseConnection,
    /// Keys for encrypted columns.
    pub keyring: Arc<Keyring>,
    /// The proxies' route feed; mutating RPCs call `feed.notify_committed()`.
    pub feed: feed::FeedHub,
    /// Who may watch the route feed.
    pub feed_auth: feed::FeedAuth,
    /// The Kubernetes API; `None`: deployments are only planned.
    pub cluster: Option<Arc<ferry_k8s::cluster::Cluster>>,
    /// Rollout timeout and the proxy's namespace.
    pub deploy: workloads::DeployConfig,
    /// Wakes this replica's build runner when a build is queued.
    pub builds: builds::runner::BuildQueue,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("backend", &backend_name(&self.db))
            .field("keyring", &self.keyring)
            .field("feed", &self.feed)
            .field("feed_auth", &self.feed_auth)
            .field("cluster", &self.cluster.is_some())
            .field("deploy", &self.deploy)
            .finish()
    }
}

/// Runs the chosen subcommand (`serve` by default).
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    match args.command.clone().unwrap_or(Command::Serve) {
        Command::Serve => serve(args, shutdown).await,
        Command::Migrate { action } => migrate(&args, action).await,
        Command::Seed => {
            let db = connect(&args).await?;
            let report = ferry_db::seed::run(&db).await;
            db.close().await.ok();
            let r = report?;
            if r.is_noop() {
                println!("seed: already up to date");
            } else {
                println!(
                    "seed: roles +{} ~{}, permissions +{} ~{}, role permissions +{} -{}, templates +{} ~{}",
                    r.roles_created,
                    r.roles_updated,
                    r.permissions_created,
                    r.permissions_updated,
                    r.role_permissions_created,
                    r.role_permissions_removed,
                    r.templates_created,
                    r.templates_updated
                );
            }
            Ok(())
        }
        Command::RotateKey => rotate_key(&args).await,
        Command::GenerateKey => {
            println!("{}", Keyring::generate_key_hex());
            Ok(())
        }
    }
}

/// Migrates, then serves gRPC until `shutdown` fires.
async fn serve(args: Args, shutdown: Shutdown) -> Result<()> {
    // Refuse to start without a usable key before touching the database.
    let keyring = Arc::new(args.encryption.keyring().map_err(Error::Key)?);
    let db = connect(&args).await?;
    tracing::info!("applying database migrations");
    ferry_db::migrate::up(&db).await?;
    bind_stored_values(&db, &keyring).await?;

    let mut system = SystemInfo::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"));
    system.db_backend = backend_name(&db);
    let cluster = ferry_k8s::cluster::Cluster::from_env()
        .await
        .map_err(|e| Error::Internal(format!("Kubernetes client configuration: {e}")))?
        .map(Arc::new);
    system.kube_configured = cluster.is_some();
    if cluster.is_none() {
        tracing::warn!("{NO_CLUSTER_WARNING}");
    }

    let feed = args.feed_hub();
    if let Err(err) = feed.reload(&db, &keyring).await {
        tracing::warn!(error = %err, "loading the route feed failed; retrying in the background");
    }
    let reloader = feed.spawn_reloader(
        db.clone(),
        keyring.clone(),
        Duration::from_secs(args.proxy_feed_reload_secs),
        shutdown.clone(),
    );
    let feed_auth = feed::FeedAuth::new(args.proxy_feed_token.as_ref());
    if matches!(feed_auth, feed::FeedAuth::Disabled) {
        tracing::warn!("FERRY_PROXY_FEED_TOKEN is not set: proxies cannot receive routes");
    }
    let state = ApiState {
        db: db.clone(),
        keyring,
        feed,
        feed_auth,
        cluster,
        deploy: args.deploy_config(shutdown.clone()),
        builds: builds::runner::BuildQueue::default(),
    };
    // Rollouts a previous run left unfinished: resumed or marked failed;
    // then, with several replicas, those whose replica died.
    match deployer(&state).resume().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deployments = n, "picked up unfinished deployments"),
        Err(err) => tracing::error!(error = %err, "resuming unfinished deployments failed"),
    }
    let _resumer = deployer(&state).spawn_resumer();
    let _builds = builds::runner::BuildRunner::new(
        state.db.clone(),
        state.keyring.clone(),
        deployer(&state),
        args.runner_config(),
        state.builds.clone(),
        shutdown.clone(),
    )?
    .spawn();
    let listener = bind(args.listen).await?;
    let http_listener = bind(args.http_listen).await?;
    tracing::info!(addr = %args.http_listen, "HTTP (webhooks) listening");
    let http = tokio::spawn(http::serve(
        http_listener,
        builds::webhook::Webhooks::new(state.db.clone(), state.keyring.clone())
            .with_queue(state.builds.clone()),
        shutdown.clone(),
        args.common.shutdown_grace(),
    ));
    let served = GrpcServer::new(system)
        .services(services_with(&state, &args.identity_config()))
        .grace(args.common.shutdown_grace())
        .serve(listener, std::future::ready(()), shutdown)
        .await;
    // Rollouts stop with the latch and release their leases, so the next
    // start (or another replica) resumes them at once.
    if !state
        .deploy
        .rollouts
        .drained(args.common.shutdown_grace())
        .await
    {
        tracing::warn!("rollouts still running at exit: their leases expire on their own");
    }
    if let Err(err) = http.await {
        tracing::warn!(error = %err, "HTTP listener failed");
    }
    // The reloader ends with the shutdown latch (and closes the feed streams).
    state.feed.close();
    if let Err(err) = reloader.await {
        tracing::warn!(error = %err, "route feed reloader failed");
    }
    drop(state);
    if let Err(err) = db.close().await {
        tracing::warn!(error = %err, "closing the database pool failed");
    }
    served?;
    Ok(())
}

/// The api's own gRPC services (later issues add auth, projects, ...).
pub fn services(state: &ApiState) -> GrpcServices {
    services_with(state, &auth::IdentityConfig::default())
}

/// [`services`] with explicit identity settings (session lifetime,
/// login throttling).
pub fn services_with(state: &ApiState, identity: &auth::IdentityConfig) -> GrpcServices {
    let identity =
        auth::Identity::new(state.db.clone(), identity.clone()).with_keyring(state.keyring.clone());
    // PostgreSQL: cache credentials only while hearing revocations.
    auth::cache::spawn_listener(
        state.db.clone(),
        identity.credentials.clone(),
        state.deploy.stop.clone(),
    );
    let services = GrpcServices::new().add_service(
        feed::RouteFeedService::new(state.feed.clone(), state.feed_auth.clone()).into_server(),
    );
    let workloads = workloads::Workloads {
        identity,
        deployer: deployer(state),
        feed: state.feed.clone(),
        builds: state.builds.clone(),
    };
    let services = accounts::add_identity_services(services, &workloads);
    let services = accounts::add_tenancy_services(
        services,
        &workloads.identity,
        state.keyring.clone(),
        state.deploy.notifications.smtp_trust.clone(),
    );
    let services = builds::add_git_service(services, &workloads);
    let services = jobs::add_job_service(services, &workloads);
    let services = domains::add_domain_service(services, &workloads);
    let services = notifications::add_notification_service(services, &workloads);
    let services = certificates::add_certificate_service(services, &workloads);
    workloads::add_workload_services(services, &workloads)
}

/// The deployer of `state` (shared by the handlers and start-up resume).
pub fn deployer(state: &ApiState) -> workloads::Deployer {
    workloads::Deployer::new(
        state.db.clone(),
        state.keyring.clone(),
        state.cluster.clone(),
        state.deploy.clone(),
    )
}

async fn migrate(args: &Args, action: MigrateAction) -> Result<()> {
    let db = connect(args).await?;
    let bind = matches!(action, MigrateAction::Up);
    let result = match action {
        MigrateAction::Up => ferry_db::migrate::up(&db)
            .await
            .map(|()| "migrations applied"),
        MigrateAction::Down { steps, all } => {
            let steps = (!all).then_some(steps);
            ferry_db::migrate::down(&db, steps)
                .await
                .map(|()| "migrations rolled back")
        }
        MigrateAction::Fresh => {
            tracing::warn!("dropping every table and re-applying all migrations");
            ferry_db::migrate::fresh(&db)
                .await
                .map(|()| "database recreated")
        }
        MigrateAction::Status => ferry_db::migrate::status(&db).await.map(|list| {
            let applied = list.iter().filter(|m| m.applied).count();
            for m in &list {
                let state = if m.applied { "applied" } else { "pending" };
                println!("{state:<8} {}", m.name);
            }
            println!("{applied} of {} migrations applied", list.len());
            ""
        }),
    };
    let result = match result {
        Ok(message) if bind => upgrade_with_configured_key(args, &db)
            .await
            .map(|()| message),
        other => other.map_err(Error::from),
    };
    db.close().await.ok();
    let message = result?;
    if !message.is_empty() {
        println!("{message}");
    }
    Ok(())
}

/// Binds legacy (v1) encrypted values to their rows: the data half of
/// migrating, which needs the key the schema half does not.
async fn bind_stored_values(db: &DatabaseConnection, keyring: &Keyring) -> Result<()> {
    // Once upgraded, a start costs one count per column and takes no lock.
    if ferry_db::rotate::unbound_count(db).await? == 0 {
        return Ok(());
    }
    let report = ferry_db::rotate::bind_rows(db, keyring).await?;
    if report.total_updated() > 0 {
        tracing::info!(
            values = report.total_updated(),
            "bound stored encrypted values to their rows"
        );
    }
    let unbound = ferry_db::rotate::unbound_count(db).await?;
    if unbound > 0 {
        tracing::warn!(
            unbound,
            "stored encrypted values are not bound to their row and cannot be read \
             (their key is not configured); add it to ENCRYPTION_KEY_PREVIOUS and restart"
        );
    }
    Ok(())
}

/// `migrate up` binds stored values too when a key is configured.
async fn upgrade_with_configured_key(args: &Args, db: &DatabaseConnection) -> Result<()> {
    match args.encryption.keyring() {
        Ok(keyring) => bind_stored_values(db, &keyring).await,
        Err(ferry_db::Error::KeyMissing(_)) => {
            let unbound = ferry_db::rotate::unbound_count(db).await?;
            if unbound > 0 {
                tracing::warn!(
                    unbound,
                    "no ENCRYPTION_KEY: stored values stay unbound until ferry-api starts with it"
                );
            }
            Ok(())
        }
        Err(err) => Err(Error::Key(err)),
    }
}

async fn rotate_key(args: &Args) -> Result<()> {
    let keyring = args.encryption.keyring().map_err(Error::Key)?;
    let db = connect(args).await?;
    let report = ferry_db::rotate::reencrypt_all(&db, &keyring).await;
    db.close().await.ok();
    let report = report?;
    for column in &report.columns {
        println!(
            "{:>8}  {}.{}",
            column.rows_updated, column.table, column.column
        );
    }
    println!(
        "re-encrypted {} values under key {}",
        report.total_updated(),
        keyring.current_key_id()
    );
    Ok(())
}

async fn connect(args: &Args) -> Result<DatabaseConnection> {
    let config = args.database.connect_config()?;
    Ok(ferry_db::connect::connect_with(&config).await?)
}

fn backend_name(db: &DatabaseConnection) -> &'static str {
    match db.get_database_backend() {
        DbBackend::Postgres => "postgres",
        DbBackend::Sqlite => "sqlite",
        _ => "other",
    }
}
