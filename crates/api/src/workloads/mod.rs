//! Workloads: projects, services, volumes, variables, Compose stacks,
//! templates and deployments (package `ferry.v1`).
//!
//! Every handler starts with the request prologue, [`crate::authz::Caller`]:
//! authenticate, then load the addressed row scoped to the caller and decide
//! the action on it; callers outside its organization get `NotFound`,
//! exactly as for a missing row. Mutations
//! write their audit row in their own transaction ([`Scope::audit`]).
//! Deployments render through `ferry-k8s` and are applied by
//! [`deploy::Deployer`].

pub mod deploy;
pub mod deployments;
pub mod health;
pub mod logs;
pub mod projects;
pub mod registries;
pub mod routes;
pub mod sensitive;
pub mod services;
pub mod spec;
pub mod stacks;
pub mod templates;
pub mod validate;
pub mod variables;
pub mod volumes;

use ferry_common::GrpcServices;
use ferry_proto::ferry::v1 as pb;

use crate::Error;
use crate::auth::Identity;
pub use crate::authz::{Caller, Scope};

pub use deploy::{DeployConfig, Deployer};

/// What the workload handlers share.
#[derive(Debug, Clone)]
pub struct Workloads {
    pub identity: Identity,
    pub deployer: Deployer,
    /// Deleting projects and services removes routes: the proxies hear it.
    pub feed: crate::feed::FeedHub,
    /// Queued builds wake the build runner.
    pub builds: crate::builds::runner::BuildQueue,
}

/// Adds the workload services to `services`.
pub fn add_workload_services(services: GrpcServices, workloads: &Workloads) -> GrpcServices {
    services
        .add_service(pb::project_service_server::ProjectServiceServer::new(
            projects::ProjectApi(workloads.clone()),
        ))
        .add_service(pb::service_service_server::ServiceServiceServer::new(
            services::ServiceApi(workloads.clone()),
        ))
        .add_service(pb::volume_service_server::VolumeServiceServer::new(
            volumes::VolumeApi(workloads.clone()),
        ))
        .add_service(
            pb::variable_group_service_server::VariableGroupServiceServer::new(
                variables::VariableApi(workloads.clone()),
            ),
        )
        .add_service(pb::stack_service_server::StackServiceServer::new(
            stacks::StackApi(workloads.clone()),
        ))
        .add_service(pb::template_service_server::TemplateServiceServer::new(
            templates::TemplateApi(workloads.clone()),
        ))
        .add_service(pb::registry_service_server::RegistryServiceServer::new(
            registries::RegistryApi(workloads.clone()),
        ))
        .add_service(pb::route_service_server::RouteServiceServer::new(
            routes::RouteApi(workloads.clone()),
        ))
        .add_service(pb::deployment_service_server::DeploymentServiceServer::new(
            deployments::DeploymentApi(workloads.clone()),
        ))
}

/// Maps a unique-constraint violation to `AlreadyExists(message)`.
pub(crate) fn unique_as(message: &str) -> impl Fn(ferry_db::sea_orm::DbErr) -> Error + '_ {
    move |err| {
        if crate::db::is_unique_violation(&err) {
            Error::AlreadyExists(message.to_owned())
        } else {
            err.into()
        }
    }
}
