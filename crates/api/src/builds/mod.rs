//! Git sources and builds (`ferry.v1.GitService`) and the push webhooks
//! that trigger them.
//!
//! An organization connects git providers ([`integrations`]); a service's
//! build config names a repository and branch ([`config`]). A signed push
//! ([`signature`], [`push`]) reaching the api's HTTP listener
//! ([`webhook`]) is recorded per service and queues a build ([`queue`]): a
//! deployment in `building` plus a `builds` row that ferry-builder runs.
//! A newer build of a service cancels the older one in the same
//! transaction.

pub mod config;
pub mod deploy_key;
pub mod history;
pub mod integrations;
pub mod push;
pub mod queue;
pub mod runner;
pub mod signature;
pub mod webhook;

use ferry_common::GrpcServices;
use ferry_proto::ferry::v1 as pb;
use pb::git_service_server::GitService;
use tonic::{Request, Response, Status};

use crate::workloads::Workloads;

/// The `GitService` implementation.
#[derive(Debug, Clone)]
pub struct GitApi(pub Workloads);

/// Adds `GitService` to `services`.
pub fn add_git_service(services: GrpcServices, workloads: &Workloads) -> GrpcServices {
    services.add_service(pb::git_service_server::GitServiceServer::new(GitApi(
        workloads.clone(),
    )))
}

#[tonic::async_trait]
impl GitService for GitApi {
    async fn create_git_integration(
        &self,
        request: Request<pb::CreateGitIntegrationRequest>,
    ) -> Result<Response<pb::GitIntegration>, Status> {
        Ok(Response::new(self.create_integration(request).await?))
    }
    async fn get_git_integration(
        &self,
        request: Request<pb::GetGitIntegrationRequest>,
    ) -> Result<Response<pb::GitIntegration>, Status> {
        Ok(Response::new(self.get_integration(request).await?))
    }
    async fn list_git_integrations(
        &self,
        request: Request<pb::ListGitIntegrationsRequest>,
    ) -> Result<Response<pb::ListGitIntegrationsResponse>, Status> {
        Ok(Response::new(self.list_integrations(request).await?))
    }
    async fn delete_git_integration(
        &self,
        request: Request<pb::DeleteGitIntegrationRequest>,
    ) -> Result<Response<pb::DeleteGitIntegrationResponse>, Status> {
        self.delete_integration(request).await?;
        Ok(Response::new(pb::DeleteGitIntegrationResponse {}))
    }
    async fn set_build_config(
        &self,
        request: Request<pb::SetBuildConfigRequest>,
    ) -> Result<Response<pb::BuildConfig>, Status> {
        Ok(Response::new(self.set_config(request).await?))
    }
    async fn get_build_config(
        &self,
        request: Request<pb::GetBuildConfigRequest>,
    ) -> Result<Response<pb::BuildConfig>, Status> {
        Ok(Response::new(self.get_config(request).await?))
    }
    async fn delete_build_config(
        &self,
        request: Request<pb::DeleteBuildConfigRequest>,
    ) -> Result<Response<pb::DeleteBuildConfigResponse>, Status> {
        self.delete_config(request).await?;
        Ok(Response::new(pb::DeleteBuildConfigResponse {}))
    }
    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        Ok(Response::new(self.list_deliveries(request).await?))
    }
    async fn trigger_build(
        &self,
        request: Request<pb::TriggerBuildRequest>,
    ) -> Result<Response<pb::Build>, Status> {
        Ok(Response::new(self.trigger(request).await?))
    }
    async fn get_build(
        &self,
        request: Request<pb::GetBuildRequest>,
    ) -> Result<Response<pb::Build>, Status> {
        Ok(Response::new(self.get_build_row(request).await?))
    }
    async fn list_builds(
        &self,
        request: Request<pb::ListBuildsRequest>,
    ) -> Result<Response<pb::ListBuildsResponse>, Status> {
        Ok(Response::new(self.list_build_rows(request).await?))
    }
    async fn cancel_build(
        &self,
        request: Request<pb::CancelBuildRequest>,
    ) -> Result<Response<pb::Build>, Status> {
        Ok(Response::new(self.cancel(request).await?))
    }
}
