//! `ferry.internal.v1.BuilderService`: RunBuild streams one build; CancelBuild
//! deletes its Job.

use std::sync::Arc;

use ferry_common::Shutdown;
use ferry_k8s::Cluster;
use ferry_proto::ferry::internal::v1 as pb;
use pb::builder_service_server::{BuilderService as Rpc, BuilderServiceServer};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::auth::TokenCheck;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::pipeline;
use crate::plan;
use crate::request::BuildRequest;
use crate::resolve::Resolver;

/// Events queued per stream before the build waits for its client.
const STREAM_BUFFER: usize = 16;
/// How long a stopping builder waits to tell a stream why it ends.
const STOP_NOTICE: std::time::Duration = std::time::Duration::from_secs(1);

/// What every build of this process shares.
#[derive(Debug)]
pub struct Builder {
    pub config: Config,
    pub auth: TokenCheck,
    /// `None`: builds are planned, not run.
    pub cluster: Option<Cluster>,
    pub resolver: Resolver,
    /// The builds namespace was applied (see [`Builder::ensure_namespace`]).
    pub namespace_ready: Mutex<bool>,
    pub shutdown: Shutdown,
}

impl Builder {
    pub fn new(config: Config, cluster: Option<Cluster>, shutdown: Shutdown) -> Result<Builder> {
        config.check()?;
        Ok(Builder {
            auth: TokenCheck::new(config.token.as_ref()),
            resolver: Resolver::new(&config)?,
            config,
            cluster,
            namespace_ready: Mutex::new(false),
            shutdown,
        })
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct BuilderService {
    builder: Arc<Builder>,
}

impl BuilderService {
    pub fn new(builder: Arc<Builder>) -> BuilderService {
        BuilderService { builder }
    }

    pub fn into_server(self) -> BuilderServiceServer<BuilderService> {
        BuilderServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl Rpc for BuilderService {
    type RunBuildStream = ReceiverStream<Result<pb::BuildEvent, Status>>;

    async fn run_build(
        &self,
        request: Request<pb::RunBuildRequest>,
    ) -> Result<Response<Self::RunBuildStream>, Status> {
        let builder = &self.builder;
        builder.auth.check(request.metadata())?;
        let registry = builder.config.registry()?;
        let request = BuildRequest::parse(request.into_inner(), &builder.config)?;
        plan::check(&request, &builder.config, registry)?;
        let span = tracing::info_span!(
            "build",
            build_id = %request.build_id,
            project = %request.project_name,
            service = %request.service_name,
        );
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        tokio::spawn(drive(builder.clone(), request, Events::new(tx)).instrument(span));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn cancel_build(
        &self,
        request: Request<pb::CancelBuildRequest>,
    ) -> Result<Response<pb::CancelBuildResponse>, Status> {
        let builder = &self.builder;
        builder.auth.check(request.metadata())?;
        let build_id = Uuid::parse_str(&request.get_ref().build_id)
            .map_err(|_| Error::invalid("buildId", "must be a UUID"))?;
        let found = match &builder.cluster {
            Some(cluster) => cluster
                .cancel_build(&builder.config.namespace, build_id)
                .instrument(tracing::info_span!("cancel_build", %build_id))
                .await
                .map_err(Error::Kube)?,
            None => false,
        };
        tracing::info!(%build_id, found, "build cancel requested");
        Ok(Response::new(pb::CancelBuildResponse { found }))
    }
}

/// Runs one build for its stream. The client going away or the builder
/// stopping ends the work (dropping every git process, watch and log
/// stream) but never the Job: the api re-attaches with RunBuild.
async fn drive(builder: Arc<Builder>, request: BuildRequest, events: Events) {
    let shutdown = builder.shutdown.wait();
    tokio::select! {
        result = pipeline::run(&builder, request, &events) => match result {
            Ok(()) => tracing::info!("build stream ended"),
            Err(err) => events.fail(Status::from(err)).await,
        },
        () = events.closed() => {
            tracing::info!("client went away; the build Job (if any) keeps running");
        }
        () = shutdown => {
            tracing::info!("builder stopping; the build Job (if any) keeps running");
            let stopping = Status::unavailable(
                "the builder is shutting down; call RunBuild again to re-attach",
            );
            // A client not reading its stream does not hold up the stop.
            let _ = tokio::time::timeout(STOP_NOTICE, events.fail(stopping)).await;
        }
    }
}
