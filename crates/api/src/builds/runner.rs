//! Drives queued builds through ferry-builder and records what happens.
//!
//! Every replica runs one [`BuildRunner`]. A build is driven by the replica
//! holding its lease (a conditional UPDATE on `builds`, renewed while the
//! build streams; a crashed replica's lease expires and another takes the
//! build over). Driving a build is calling `BuilderService.RunBuild`, which
//! re-attaches to the build's Job when it already runs, so a takeover never
//! starts a second Job. At most `concurrent_builds` builds of an
//! organization run at once (its limits merged over the installation's
//! defaults, see [`crate::accounts::limits`]); the rest wait `queued`.
//! The same limits give each build Job its CPU and memory
//! ([`build_resources`]).
//!
//! The builder's events become rows: status and commit on `builds`, log
//! lines on the deployment (what `WatchDeployment` shows), and on success
//! the pushed image is deployed like a manual deploy
//! ([`crate::workloads::Deployer::deploy_built`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use ferry_common::Shutdown;
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::{
    BuildStatus, DeploymentStatus, GitProvider, LogLevel, WebhookDeliveryStatus,
};
use ferry_db::entities::{
    build_configs as configs, builds, deployment_logs, deployments, git_integrations,
    organizations, projects, services, webhook_deliveries,
};
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use ferry_proto::ferry::internal::v1 as ipb;
use ipb::builder_service_client::BuilderServiceClient;
use serde_json::json;
use tokio::sync::Notify;
use tokio_stream::StreamExt as _;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;

use super::queue::ACTIVE;
use crate::accounts::limits::{Unit, amount};
use crate::lease::Lease;
use crate::workloads::Deployer;
use crate::workloads::deploy::log as deploy_log;
use crate::workloads::spec as workload_spec;
use crate::{Error, Result};

/// Where the builder is and how builds share it.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// `http://ferry-builder:50052`; `None`: builds fail with a message
    /// saying no builder is configured.
    pub builder_url: Option<String>,
    /// The builder's service credential.
    pub builder_token: Option<String>,
    /// This replica's lease owner id.
    pub replica_id: String,
    pub lease_ttl: Duration,
    /// How often the queue is looked at without a kick (other replicas'
    /// enqueues, expired leases).
    pub poll: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            builder_url: None,
            builder_token: None,
            replica_id: Uuid::now_v7().to_string(),
            lease_ttl: Duration::from_secs(30),
            poll: Duration::from_secs(2),
        }
    }
}

/// Wakes the runner when a build is queued in this process.
#[derive(Debug, Clone, Default)]
pub struct BuildQueue(Arc<Notify>);

impl BuildQueue {
    /// Call after a transaction that queued or cancelled builds committed.
    pub fn kick(&self) {
        self.0.notify_one();
    }
}

/// Adds the service credential and the trace context to builder calls.
#[derive(Clone)]
pub struct BuilderAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for BuilderAuth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        ferry_common::telemetry::inject_context(request.metadata_mut());
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Client = BuilderServiceClient<InterceptedService<Channel, BuilderAuth>>;

/// The build runner of this replica.
#[derive(Clone)]
pub struct BuildRunner {
    db: DatabaseConnection,
    keyring: Arc<Keyring>,
    deployer: Deployer,
    client: Option<Client>,
    config: RunnerConfig,
    queue: BuildQueue,
    stop: Shutdown,
    /// Builds this replica drives now.
    running: Arc<Mutex<HashSet<Uuid>>>,
}

impl std::fmt::Debug for BuildRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildRunner")
            .field("builder", &self.config.builder_url)
            .finish_non_exhaustive()
    }
}

/// The clone URL of `repository` on the integration's server.
pub fn clone_url(integration: &git_integrations::Model, repository: &str) -> String {
    let base = |default: &str| {
        integration
            .base_url
            .clone()
            .unwrap_or_else(|| default.to_owned())
    };
    match integration.provider {
        GitProvider::Generic => repository.to_owned(),
        GitProvider::Github => format!("https://github.com/{repository}.git"),
        GitProvider::Bitbucket => format!("https://bitbucket.org/{repository}.git"),
        GitProvider::Gitlab => format!("{}/{repository}.git", base("https://gitlab.com")),
        GitProvider::Gitea | GitProvider::Forgejo => {
            format!("{}/{repository}.git", base(""))
        }
    }
}

/// The HTTPS user name each provider expects with a token (as
/// `ferry_git::Auth::token_for`).
fn token_username(provider: GitProvider) -> &'static str {
    match provider {
        GitProvider::Github => "x-access-token",
        GitProvider::Gitlab => "oauth2",
        GitProvider::Bitbucket => "x-token-auth",
        GitProvider::Gitea | GitProvider::Forgejo | GitProvider::Generic => "git",
    }
}

/// The resources of one build Job's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResources {
    pub cpu_request: String,
    pub cpu_limit: String,
    pub memory_request: String,
    pub memory_limit: String,
}

/// Least CPU a build requests (millicores) when its limit allows.
const MIN_BUILD_CPU_REQUEST_MILLI: f64 = 100.0;
/// Least memory a build requests (bytes) when its limit allows.
const MIN_BUILD_MEMORY_REQUEST: f64 = 256.0 * 1024.0 * 1024.0;

/// What a build Job gets from the organization's effective `build_cpu` and
/// `build_memory` (quantities checked by `SetOrganizationLimits` or at
/// start-up): those are the limits, and each request is a quarter of its
/// limit, at least 100m CPU and 256Mi memory (never above the limit).
///
/// Why a quarter: it is what ferry-builder's own defaults have always
/// been (500m / 2 CPU, 1Gi / 4Gi), so the installation defaults schedule
/// exactly as before; builds are bursty (long I/O-bound fetches, short
/// compile peaks), and reserving the whole limit on a node for each one
/// would leave small clusters unable to run two at once. The price is
/// the usual one of requests below limits: a node that is short of memory
/// may OOM-kill a build above its request; give builds more memory (or a
/// dedicated node pool) rather than raising the request.
pub fn build_resources(build_cpu: &str, build_memory: &str) -> BuildResources {
    let cpu_request = amount(Unit::Cpu, build_cpu)
        .map(|cores| (cores * 1000.0).floor())
        .map(|limit| {
            (limit / 4.0)
                .floor()
                .max(MIN_BUILD_CPU_REQUEST_MILLI.min(limit))
        })
        .filter(|m| *m >= 1.0)
        .map_or_else(|| build_cpu.to_owned(), |m| format!("{m}m"));
    let memory_request = amount(Unit::Bytes, build_memory)
        .map(f64::floor)
        .map(|limit| {
            (limit / 4.0)
                .floor()
                .max(MIN_BUILD_MEMORY_REQUEST.min(limit))
        })
        .filter(|b| *b >= 1.0)
        .map_or_else(|| build_memory.to_owned(), bytes_quantity);
    BuildResources {
        cpu_request,
        cpu_limit: build_cpu.to_owned(),
        memory_request,
        memory_limit: build_memory.to_owned(),
    }
}

/// `bytes` (a whole number) in the largest binary unit that divides it.
fn bytes_quantity(bytes: f64) -> String {
    for (suffix, size) in [
        ("Gi", 1024f64.powi(3)),
        ("Mi", 1024f64.powi(2)),
        ("Ki", 1024f64),
    ] {
        if bytes % size == 0.0 {
            return format!("{}{suffix}", bytes / size);
        }
    }
    format!("{bytes}")
}

/// Why driving a build stopped before a verdict.
enum Interrupted {
    /// Retry later (the builder is unreachable, the stream broke).
    Retry(String),
}

impl BuildRunner {
    /// A runner; `connect` is lazy, so a builder that is down at start-up
    /// only delays builds.
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        deployer: Deployer,
        config: RunnerConfig,
        queue: BuildQueue,
        stop: Shutdown,
    ) -> Result<Self> {
        let client = match &config.builder_url {
            None => None,
            Some(url) => {
                let endpoint = Endpoint::from_shared(url.clone())
                    .map_err(|e| Error::InvalidArgument(format!("builderUrl: {e}")))?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true);
                let token = config
                    .builder_token
                    .as_ref()
                    .map(|t| format!("Bearer {t}").parse())
                    .transpose()
                    .map_err(|_| {
                        Error::InvalidArgument("builderToken: not a valid header value".into())
                    })?;
                Some(BuilderServiceClient::with_interceptor(
                    endpoint.connect_lazy(),
                    BuilderAuth(token),
                ))
            }
        };
        Ok(Self {
            db,
            keyring,
            deployer,
            client,
            config,
            queue,
            stop,
            running: Arc::default(),
        })
    }

    /// Runs the queue until shutdown.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let stop = self.stop.wait();
            tokio::pin!(stop);
            loop {
                if let Err(err) = self.tick().await {
                    tracing::warn!(error = %err, "looking at the build queue failed");
                }
                tokio::select! {
                    () = &mut stop => return,
                    () = self.queue.0.notified() => {}
                    () = tokio::time::sleep(self.config.poll) => {}
                }
            }
        })
    }

    /// This replica's build leases.
    fn lease(&self) -> Lease<'_> {
        Lease::new(&self.config.replica_id, self.config.lease_ttl)
    }

    fn is_running(&self, id: Uuid) -> bool {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    }

    /// Claims the builds it may start and starts them.
    pub async fn tick(&self) -> Result<()> {
        let now = Utc::now();
        let active = builds::Entity::find()
            .filter(builds::Column::Status.is_in(ACTIVE))
            .order_by_asc(builds::Column::CreatedAt)
            .limit(500)
            .all(&self.db)
            .await?;
        // Builds holding a live lease count against their organization.
        let mut busy: HashMap<Uuid, usize> = HashMap::new();
        let mut waiting = HashSet::new();
        for b in &active {
            if b.lease_expires_at.is_some_and(|t| t > now) {
                *busy.entry(b.organization_id).or_default() += 1;
            } else if !self.is_running(b.id) {
                waiting.insert(b.organization_id);
            }
        }
        let allowed = self.concurrency(&waiting).await?;
        let default = self.default_concurrency();
        for b in active {
            if self.is_running(b.id) {
                continue;
            }
            let leased = b.lease_expires_at.is_some_and(|t| t > now);
            let limit = allowed.get(&b.organization_id).copied().unwrap_or(default);
            if !leased && busy.get(&b.organization_id).copied().unwrap_or(0) >= limit {
                continue;
            }
            if !self.claim(b.id).await? {
                continue;
            }
            if !leased {
                *busy.entry(b.organization_id).or_default() += 1;
            }
            self.running
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(b.id);
            let this = self.clone();
            let span = tracing::info_span!("build", build = %b.id, service = %b.service_id);
            tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let id = b.id;
                    this.run(b).await;
                    this.running
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&id);
                    // A slot freed: another queued build may start.
                    this.queue.kick();
                },
                span,
            ));
        }
        Ok(())
    }

    /// The installation's default of builds per organization at once.
    fn default_concurrency(&self) -> usize {
        usize::try_from(self.deployer.config.policy.quota.concurrent_builds)
            .unwrap_or(1)
            .max(1)
    }

    /// How many builds each of `orgs` may run at once: its
    /// `concurrent_builds` limit over the installation default, read in
    /// one query. An organization whose stored limits do not parse gets
    /// the default (logged; its builds then fail saying why, in
    /// [`Self::request`]).
    async fn concurrency(&self, orgs: &HashSet<Uuid>) -> Result<HashMap<Uuid, usize>> {
        if orgs.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(Uuid, serde_json::Value)> = organizations::Entity::find()
            .select_only()
            .column(organizations::Column::Id)
            .column(organizations::Column::Settings)
            .filter(organizations::Column::Id.is_in(orgs.iter().copied()))
            .into_tuple()
            .all(&self.db)
            .await?;
        let default = &self.deployer.config.policy.quota;
        Ok(rows
            .into_iter()
            .map(|(id, settings)| {
                let merged =
                    workload_spec::merge_quota(default, &workload_spec::quota_overrides(&settings));
                let limit = match merged {
                    Ok(q) => usize::try_from(q.concurrent_builds).unwrap_or(1).max(1),
                    Err(err) => {
                        tracing::warn!(
                            organization = %id,
                            error = %err,
                            "an organization's limits do not parse: its builds run as many at once as the default"
                        );
                        self.default_concurrency()
                    }
                };
                (id, limit)
            })
            .collect())
    }

    /// Takes or renews the lease of active build `id`; one conditional
    /// UPDATE, so of racing replicas exactly one wins.
    async fn claim(&self, id: Uuid) -> Result<bool> {
        self.lease().claim::<builds::Entity>(&self.db, id).await
    }

    async fn release(&self, id: Uuid) {
        if let Err(err) = self.lease().release::<builds::Entity>(&self.db, id).await {
            tracing::warn!(error = %err, "releasing a build's lease failed");
        }
    }

    /// Renews the lease until it is lost or the build stops being active
    /// (cancelled: the builder deletes its Job).
    async fn keep_lease(&self, id: Uuid) {
        self.lease()
            .keep::<builds::Entity>(&self.db, id, "build")
            .await;
        let status = builds::Entity::find_by_id(id)
            .one(&self.db)
            .await
            .ok()
            .flatten()
            .map(|b| b.status);
        if status == Some(BuildStatus::Cancelled) {
            self.cancel_job(id).await;
        } else {
            tracing::warn!("lost the build's lease: another replica drives it now");
        }
    }

    async fn cancel_job(&self, id: Uuid) {
        let Some(mut client) = self.client.clone() else {
            return;
        };
        match client
            .cancel_build(ipb::CancelBuildRequest {
                build_id: id.to_string(),
            })
            .await
        {
            Ok(r) => tracing::info!(found = r.get_ref().found, "cancelled the build's Job"),
            Err(err) => tracing::warn!(error = %err, "deleting a cancelled build's Job failed"),
        }
    }

    async fn run(&self, build: builds::Model) {
        let id = build.id;
        let stop = self.stop.wait();
        let outcome = tokio::select! {
            r = self.drive(&build) => r,
            () = self.keep_lease(id) => return,
            () = stop => {
                self.release(id).await;
                return;
            }
        };
        match outcome {
            Ok(()) => {}
            Err(Interrupted::Retry(why)) => {
                tracing::warn!(reason = %why, "build interrupted; it is retried");
                self.release(id).await;
            }
        }
    }

    /// Streams the build from the builder and records it; `Ok` once the
    /// build has a verdict recorded.
    async fn drive(&self, build: &builds::Model) -> Result<(), Interrupted> {
        let request = match self.request(build).await {
            Ok(r) => r,
            Err(Error::FailedPrecondition(why) | Error::InvalidArgument(why)) => {
                self.fail(build, "", &why, false).await;
                return Ok(());
            }
            Err(err) => return Err(Interrupted::Retry(err.to_string())),
        };
        let Some(mut client) = self.client.clone() else {
            self.fail(
                build,
                "",
                "no ferry-builder is configured (--builder-url): the build cannot run",
                false,
            )
            .await;
            return Ok(());
        };
        let mut stream = match client.run_build(request).await {
            Ok(s) => s.into_inner(),
            Err(status) => return self.refused(build, &status).await,
        };
        loop {
            let event = match stream.next().await {
                None => return Err(Interrupted::Retry("the build stream ended early".into())),
                Some(Err(status)) => return self.refused(build, &status).await,
                Some(Ok(e)) => e,
            };
            let Some(event) = event.event else { continue };
            let terminal = self
                .record(build, event)
                .await
                .map_err(|e| Interrupted::Retry(e.to_string()))?;
            if terminal {
                return Ok(());
            }
        }
    }

    /// A gRPC error from the builder: permanent ones fail the build.
    async fn refused(
        &self,
        build: &builds::Model,
        status: &tonic::Status,
    ) -> Result<(), Interrupted> {
        use tonic::Code;
        match status.code() {
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::PermissionDenied => {
                self.fail(
                    build,
                    "",
                    &format!("the builder refused the build: {}", status.message()),
                    false,
                )
                .await;
                Ok(())
            }
            _ => Err(Interrupted::Retry(format!("builder: {}", status.message()))),
        }
    }

    /// What the builder needs for `build`, credentials decrypted.
    async fn request(&self, build: &builds::Model) -> Result<ipb::RunBuildRequest> {
        let gone = |what: &str| Error::FailedPrecondition(format!("{what} was deleted"));
        let config = configs::Entity::find()
            .filter(configs::Column::ServiceId.eq(build.service_id))
            .one(&self.db)
            .await?
            .ok_or_else(|| gone("the service's build config"))?;
        let integration_id = config
            .git_integration_id
            .ok_or_else(|| gone("the build config's git integration"))?;
        let integration = git_integrations::Entity::find_by_id(integration_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| gone("the build config's git integration"))?;
        let service = services::Entity::find_by_id(build.service_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| gone("the service"))?;
        let project = projects::Entity::find_by_id(service.project_id)
            .one(&self.db)
            .await?
            .ok_or_else(|| gone("the project"))?;
        // The organization's limits as they are now (a malformed override
        // fails the build, saying so, as it fails a deployment).
        let quota = workload_spec::project_policy(
            &self.db,
            &self.deployer.config.policy,
            build.organization_id,
        )
        .await?
        .quota;
        let resources = build_resources(&quota.build_cpu, &quota.build_memory);
        let decrypt = |column: &str, value: &ferry_db::crypto::Encrypted| {
            self.keyring
                .decrypt("git_integrations", column, integration.id, value)
                .map(|v| v.expose().to_owned())
        };
        let credential = if let Some(key) = &integration.ssh_private_key {
            Some(ipb::git_credential::Kind::SshPrivateKey(decrypt(
                "ssh_private_key",
                key,
            )?))
        } else if let Some(token) = &integration.access_token {
            Some(ipb::git_credential::Kind::Token(ipb::TokenCredential {
                username: token_username(integration.provider).to_owned(),
                token: decrypt("access_token", token)?,
            }))
        } else {
            None
        };
        let plain: BTreeMap<String, String> =
            serde_json::from_value(config.build_args.clone()).unwrap_or_default();
        let secret = super::config::stored_secrets(&self.keyring, &config)?;
        let dockerfile = config.build_type == ferry_db::entities::enums::BuildType::Dockerfile;
        Ok(ipb::RunBuildRequest {
            build_id: build.id.to_string(),
            organization_id: build.organization_id.to_string(),
            project_id: project.id.to_string(),
            project_name: project.slug.clone(),
            service_id: service.id.to_string(),
            service_name: service.name.clone(),
            repository_url: clone_url(&integration, &config.repository),
            credential: credential.map(|kind| ipb::GitCredential {
                ssh_known_hosts: match kind {
                    ipb::git_credential::Kind::SshPrivateKey(_) => {
                        integration.ssh_known_hosts.clone().unwrap_or_default()
                    }
                    ipb::git_credential::Kind::Token(_) => String::new(),
                },
                kind: Some(kind),
            }),
            branch: build.branch.clone(),
            commit_sha: build.commit_sha.clone().unwrap_or_default(),
            before_sha: build.before_sha.clone().unwrap_or_default(),
            watch_paths: serde_json::from_value(config.watch_paths.clone()).unwrap_or_default(),
            root_dir: config.root_dir.clone(),
            build_type: format!("{:?}", config.build_type).to_lowercase(),
            // Only Dockerfile builds take a path and target (`auto` builds
            // the Dockerfile it finds); the builder refuses them otherwise.
            dockerfile_path: if dockerfile {
                config.dockerfile_path.clone()
            } else {
                String::new()
            },
            dockerfile_target: if dockerfile {
                config.dockerfile_target.clone().unwrap_or_default()
            } else {
                String::new()
            },
            build_args: plain.into_iter().collect(),
            secret_build_args: secret.into_iter().collect(),
            cpu_request: resources.cpu_request,
            cpu_limit: resources.cpu_limit,
            memory_request: resources.memory_request,
            memory_limit: resources.memory_limit,
            ..Default::default()
        })
    }

    /// Records one event; true when it was the verdict.
    async fn record(&self, build: &builds::Model, event: ipb::build_event::Event) -> Result<bool> {
        use ipb::build_event::Event;
        let now = Utc::now();
        match event {
            Event::Resolved(r) => {
                builds::Entity::update_many()
                    .filter(builds::Column::Id.eq(build.id))
                    .filter(builds::Column::Status.is_in(ACTIVE))
                    .col_expr(builds::Column::Status, BuildStatus::Cloning.into())
                    .col_expr(builds::Column::CommitSha, Some(r.commit_sha.clone()).into())
                    .col_expr(builds::Column::JobName, Some(r.job_name.clone()).into())
                    .col_expr(builds::Column::Detection, json!(r.detection).into())
                    .col_expr(
                        builds::Column::StartedAt,
                        Some(build.started_at.unwrap_or(now)).into(),
                    )
                    .exec(&self.db)
                    .await?;
                deployments::Entity::update_many()
                    .filter(deployments::Column::Id.eq(build.deployment_id))
                    .col_expr(
                        deployments::Column::CommitSha,
                        Some(r.commit_sha.clone()).into(),
                    )
                    .col_expr(deployments::Column::StartedAt, Some(now).into())
                    .exec(&self.db)
                    .await?;
                let mut message = format!("building commit {} ({})", r.commit_sha, r.build_type);
                for line in &r.detection {
                    message.push_str("\n  ");
                    message.push_str(line);
                }
                deploy_log(&self.db, build.deployment_id, LogLevel::Info, &message).await?;
                Ok(false)
            }
            Event::Progress(p) => {
                if matches!(p.step.as_str(), "prepare" | "build") {
                    builds::Entity::update_many()
                        .filter(builds::Column::Id.eq(build.id))
                        .filter(builds::Column::Status.is_in(ACTIVE))
                        .col_expr(builds::Column::Status, BuildStatus::Building.into())
                        .exec(&self.db)
                        .await?;
                }
                let text = if p.message.is_empty() {
                    format!("step {}", p.step)
                } else {
                    format!("step {}: {}", p.step, p.message)
                };
                deploy_log(&self.db, build.deployment_id, LogLevel::Info, &text).await?;
                Ok(false)
            }
            Event::Logs(lines) => {
                let rows: Vec<deployment_logs::ActiveModel> = lines
                    .lines
                    .into_iter()
                    .take(1000)
                    .map(|l| deployment_logs::ActiveModel {
                        id: Set(Uuid::now_v7()),
                        deployment_id: Set(build.deployment_id),
                        timestamp: Set(l
                            .timestamp
                            .as_ref()
                            .and_then(crate::wire::from_ts)
                            .unwrap_or(now)),
                        level: Set(LogLevel::Info),
                        source: Set(Some(format!("build/{}", l.step))),
                        message: Set(l.line.chars().take(65_536).collect()),
                    })
                    .collect();
                if !rows.is_empty() {
                    deployment_logs::Entity::insert_many(rows)
                        .exec(&self.db)
                        .await?;
                }
                Ok(false)
            }
            Event::Finished(f) => {
                // Deploy first, then mark the build succeeded: a crash in
                // between leaves the build active, the next runner
                // re-attaches, hears Finished again and finds the
                // deployment already past `building`.
                let stored = builds::Entity::update_many()
                    .filter(builds::Column::Id.eq(build.id))
                    .filter(builds::Column::Status.is_in(ACTIVE))
                    .col_expr(builds::Column::Image, Some(f.image.clone()).into())
                    .exec(&self.db)
                    .await?;
                if stored.rows_affected == 0 {
                    return Ok(true); // cancelled meanwhile: nothing to deploy
                }
                deploy_log(
                    &self.db,
                    build.deployment_id,
                    LogLevel::Info,
                    &format!("pushed {}", f.image),
                )
                .await?;
                self.deploy(build, &f.image).await?;
                builds::Entity::update_many()
                    .filter(builds::Column::Id.eq(build.id))
                    .filter(builds::Column::Status.is_in(ACTIVE))
                    .col_expr(builds::Column::Status, BuildStatus::Succeeded.into())
                    .col_expr(builds::Column::FinishedAt, Some(now).into())
                    .exec(&self.db)
                    .await?;
                Ok(true)
            }
            Event::Failed(f) => {
                let mut reason = f.reason.clone();
                if !f.last_lines.is_empty() {
                    reason.push_str("\nlast log lines:\n");
                    reason.push_str(&f.last_lines.join("\n"));
                }
                self.fail(build, &f.step, &reason, f.timed_out).await;
                Ok(true)
            }
            Event::Skipped(s) => {
                self.finish(
                    build,
                    BuildStatus::Skipped,
                    DeploymentStatus::Cancelled,
                    &s.reason,
                )
                .await?;
                webhook_deliveries::Entity::update_many()
                    .filter(webhook_deliveries::Column::BuildId.eq(build.id))
                    .col_expr(
                        webhook_deliveries::Column::Status,
                        WebhookDeliveryStatus::Ignored.into(),
                    )
                    .col_expr(
                        webhook_deliveries::Column::Reason,
                        Some(s.reason.clone()).into(),
                    )
                    .exec(&self.db)
                    .await?;
                Ok(true)
            }
            Event::Planned(p) => {
                self.finish(
                    build,
                    BuildStatus::Planned,
                    DeploymentStatus::Planned,
                    &p.reason,
                )
                .await?;
                deployments::Entity::update_many()
                    .filter(deployments::Column::Id.eq(build.deployment_id))
                    .col_expr(
                        deployments::Column::K8sArtifacts,
                        json!({ "yaml": p.job_yaml }).into(),
                    )
                    .exec(&self.db)
                    .await?;
                Ok(true)
            }
        }
    }

    /// Ends an active build and its deployment.
    async fn finish(
        &self,
        build: &builds::Model,
        status: BuildStatus,
        deployment: DeploymentStatus,
        message: &str,
    ) -> Result<()> {
        let now = Utc::now();
        let txn = crate::db::begin_write(&self.db).await?;
        let ended = builds::Entity::update_many()
            .filter(builds::Column::Id.eq(build.id))
            .filter(builds::Column::Status.is_in(ACTIVE))
            .col_expr(builds::Column::Status, status.into())
            .col_expr(
                builds::Column::ErrorMessage,
                Some(message.to_owned()).into(),
            )
            .col_expr(builds::Column::FinishedAt, Some(now).into())
            .exec(&txn)
            .await?;
        if ended.rows_affected == 1 {
            deployments::Entity::update_many()
                .filter(deployments::Column::Id.eq(build.deployment_id))
                .filter(deployments::Column::Status.eq(DeploymentStatus::Building))
                .col_expr(deployments::Column::Status, deployment.into())
                .col_expr(
                    deployments::Column::ErrorMessage,
                    Some(message.to_owned()).into(),
                )
                .col_expr(deployments::Column::FinishedAt, Some(now).into())
                .exec(&txn)
                .await?;
            crate::notifications::produce::build_finished(&txn, build, status, message).await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// Records a failure (logged when even that fails).
    async fn fail(&self, build: &builds::Model, step: &str, reason: &str, timed_out: bool) {
        let reason: String = reason.chars().take(8192).collect();
        let message = if step.is_empty() {
            format!("build failed: {reason}")
        } else {
            format!("build failed at step {step}: {reason}")
        };
        let status = if timed_out {
            BuildStatus::TimedOut
        } else {
            BuildStatus::Failed
        };
        let result = async {
            builds::Entity::update_many()
                .filter(builds::Column::Id.eq(build.id))
                .filter(builds::Column::Status.is_in(ACTIVE))
                .col_expr(
                    builds::Column::FailedStep,
                    (!step.is_empty()).then(|| step.to_owned()).into(),
                )
                .exec(&self.db)
                .await?;
            self.finish(build, status, DeploymentStatus::Failed, &message)
                .await?;
            deploy_log(&self.db, build.deployment_id, LogLevel::Error, &message).await
        }
        .await;
        if let Err(err) = result {
            tracing::error!(error = %err, "recording a build failure failed");
        }
    }

    /// Deploys the pushed image; waits while another deployment of the
    /// service is in progress.
    async fn deploy(&self, build: &builds::Model, image: &str) -> Result<()> {
        for _ in 0..300 {
            match self.deployer.deploy_built(build.deployment_id, image).await {
                Ok(true) => return Ok(()),
                Ok(false) => tokio::time::sleep(Duration::from_secs(2)).await,
                Err(Error::FailedPrecondition(why)) => {
                    tracing::warn!(reason = %why, "the built image is not deployed");
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
        deployments::Entity::update_many()
            .filter(deployments::Column::Id.eq(build.deployment_id))
            .filter(deployments::Column::Status.eq(DeploymentStatus::Building))
            .col_expr(deployments::Column::Status, DeploymentStatus::Failed.into())
            .col_expr(
                deployments::Column::ErrorMessage,
                Some(format!(
                    "built {image}, but another deployment of the service stayed in progress for 10 minutes: deploy it again"
                ))
                .into(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requests(cpu: &str, memory: &str) -> (String, String) {
        let r = build_resources(cpu, memory);
        assert_eq!(
            (r.cpu_limit.as_str(), r.memory_limit.as_str()),
            (cpu, memory)
        );
        (r.cpu_request, r.memory_request)
    }

    #[test]
    fn builds_request_a_quarter_of_their_limits_within_floors() {
        // The installation defaults: ferry-builder's own defaults.
        assert_eq!(requests("2", "4Gi"), ("500m".into(), "1Gi".into()));
        assert_eq!(requests("1.5", "6G"), ("375m".into(), "1500000000".into()));
        assert_eq!(requests("8", "10Gi"), ("2000m".into(), "2560Mi".into()));
        // The floors: 100m and 256Mi, but never above the limit.
        assert_eq!(requests("300m", "512Mi"), ("100m".into(), "256Mi".into()));
        assert_eq!(requests("50m", "100Mi"), ("50m".into(), "100Mi".into()));
        assert_eq!(
            requests("1001m", "1025Ki"),
            ("250m".into(), "1025Ki".into())
        );
        // Sub-millicore limits: requested as they are.
        assert_eq!(requests("0.0005", "1"), ("0.0005".into(), "1".into()));
    }
}
