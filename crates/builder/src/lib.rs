//! `ferry-builder`: turns a commit of a git repository into a container
//! image, for the api, over `ferry.internal.v1.BuilderService`.
//!
//! RunBuild validates the request (`request`, `plan::check`), then
//! (`pipeline`) re-attaches to the build's Job if it already exists, or
//! resolves the branch, checks the push against the watch paths, detects
//! the build type on a shallow checkout (`resolve`, `kind`) and either
//! renders the Job without running it (no cluster: `Planned`) or starts it
//! in the builds namespace and follows it (`follow`) to one terminal
//! event. The Job's annotations [`COMMIT_SHA`], [`BUILD_TYPE`] and
//! [`DETECTION`] carry what was resolved, for a builder that re-attaches. Jobs outlive streams: a client that goes away, or a builder that
//! stops, leaves the build running for the next RunBuild to re-attach to.
//!
//! The builder holds no database credentials; the api records everything.
//! It serves next to health, reflection and `ferry.v1.SystemService`.

pub mod args;
pub mod auth;
pub mod config;
pub mod error;
mod events;
mod follow;
mod kind;
mod pipeline;
mod plan;
mod request;
mod resolution;
mod resolve;
mod service;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use ferry_common::grpc::{GrpcServer, GrpcServices, bind};
use ferry_common::{Shutdown, SystemInfo};
use ferry_k8s::Cluster;
use tokio::net::TcpListener;

pub use args::Args;
pub use auth::ServiceToken;
pub use config::Config;
pub use error::{Error, Result};
pub use plan::PLANNED_REASON;
pub use resolution::{BUILD_TYPE, COMMIT_SHA, DETECTION};
use service::{Builder, BuilderService};

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-builder";

const NO_CLUSTER_WARNING: &str = "no Kubernetes cluster configured (no KUBECONFIG, \
     ~/.kube/config or in-cluster service account): builds are resolved and planned, not run";

/// Runs the builder until `shutdown` fires, then drains.
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    let config = Config::from_args(&args)?;
    let cluster = Cluster::from_env().await?;
    if cluster.is_none() {
        tracing::warn!("{NO_CLUSTER_WARNING}");
    }
    let listener = bind(args.listen).await?;
    serve(
        config,
        cluster,
        listener,
        args.common.shutdown_grace(),
        shutdown,
    )
    .await
}

/// Serves BuilderService on `listener` with `cluster` (or planning only)
/// until `shutdown` fires. Open RunBuild streams end at once then; their
/// Jobs keep running.
pub async fn serve(
    config: Config,
    cluster: Option<Cluster>,
    listener: TcpListener,
    grace: Duration,
    shutdown: Shutdown,
) -> Result<()> {
    let mut system = SystemInfo::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"));
    system.kube_configured = cluster.is_some();
    if config.token.is_none() {
        tracing::warn!("FERRY_BUILDER_TOKEN is not set: BuilderService refuses every call");
    }
    if config.registry.is_none() {
        tracing::warn!("FERRY_BUILDER_REGISTRY is not set: BuilderService refuses builds");
    }
    let builder = Arc::new(Builder::new(config, cluster, shutdown.clone())?);
    let services = GrpcServices::new().add_service(BuilderService::new(builder).into_server());
    GrpcServer::new(system)
        .services(services)
        .grace(grace)
        .serve(listener, std::future::ready(()), shutdown)
        .await?;
    Ok(())
}
