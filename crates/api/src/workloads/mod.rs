//! Workloads: projects, services, volumes, variables, Compose stacks,
//! templates and deployments (package `ferry.v1`).
//!
//! Every handler authenticates, loads the addressed row, finds its
//! organization and asks [`crate::authz::can`]; callers outside that
//! organization get `NotFound`, exactly as for a missing row. Mutations
//! write their audit row in their own transaction ([`Scope::audit`]).
//! Deployments render through `ferry-k8s` and are applied by
//! [`deploy::Deployer`].

pub mod deploy;
pub mod deployments;
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
use ferry_db::entities::{
    projects as project_rows, services as service_rows, stacks as stack_rows,
};
use ferry_db::sea_orm::{ConnectionTrait, EntityTrait as _};
use ferry_proto::ferry::v1 as pb;
use uuid::Uuid;

use crate::audit::{Auditor, Entry};
use crate::auth::{Actor, Identity};
use crate::authz::{Action, Resource, authorize_row};
use crate::{Error, Result};

pub use deploy::{DeployConfig, Deployer};

/// What the workload handlers share.
#[derive(Debug, Clone)]
pub struct Workloads {
    pub identity: Identity,
    pub deployer: Deployer,
    /// Deleting projects and services removes routes: the proxies hear it.
    pub feed: crate::feed::FeedHub,
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

/// An authorised caller acting inside one organization.
#[derive(Debug, Clone)]
pub struct Scope {
    pub actor: Actor,
    pub organization_id: Uuid,
}

impl Scope {
    /// Appends `entry` to the organization's audit chain, as this caller,
    /// in `txn`.
    pub async fn audit<C: ConnectionTrait>(&self, txn: &C, entry: Entry) -> Result<()> {
        Auditor::org(&self.actor, self.organization_id)
            .record(txn, entry)
            .await?;
        Ok(())
    }

    /// Deletes the rows `rows` matches and audits it, in one transaction;
    /// `NotFound(missing)` when nothing matched.
    pub async fn remove<E: ferry_db::sea_orm::EntityTrait>(
        &self,
        db: &ferry_db::sea_orm::DatabaseConnection,
        rows: ferry_db::sea_orm::DeleteMany<E>,
        missing: &str,
        entry: Entry,
    ) -> Result<()> {
        let txn = crate::db::begin_write(db).await?;
        if rows.exec(&txn).await?.rows_affected == 0 {
            return Err(Error::NotFound(missing.to_owned()));
        }
        self.audit(&txn, entry).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// A project the caller may perform `action` on.
pub async fn authorize_project<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: Action,
    id: Uuid,
) -> Result<(Scope, project_rows::Model)> {
    // The project and the caller's membership in one query.
    let (project, _) = authorize_row(
        db,
        actor,
        action,
        project_rows::Entity::find_by_id(id),
        project_rows::Column::OrganizationId,
        |p| Resource::Project {
            organization_id: p.organization_id,
            id: p.id,
        },
        "project not found",
    )
    .await?;
    Ok((
        Scope {
            actor: actor.clone(),
            organization_id: project.organization_id,
        },
        project,
    ))
}

/// The project `project_id` of a child resource, authorised for `action` on
/// `resource(organization, project)`; `what` names the child in NotFound.
async fn authorize_child<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: Action,
    project_id: Option<Uuid>,
    what: &str,
    resource: impl FnOnce(Uuid, Uuid) -> Resource,
) -> Result<(Scope, project_rows::Model)> {
    let missing = format!("{what} not found");
    let project_id = project_id.ok_or_else(|| Error::NotFound(missing.clone()))?;
    // The project and the caller's membership in one query.
    let (project, _) = authorize_row(
        db,
        actor,
        action,
        project_rows::Entity::find_by_id(project_id),
        project_rows::Column::OrganizationId,
        |p| resource(p.organization_id, p.id),
        &missing,
    )
    .await?;
    Ok((
        Scope {
            actor: actor.clone(),
            organization_id: project.organization_id,
        },
        project,
    ))
}

/// A service the caller may perform `action` on, with its project.
pub async fn authorize_service<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: Action,
    id: Uuid,
) -> Result<(Scope, service_rows::Model, project_rows::Model)> {
    let service = service_rows::Entity::find_by_id(id).one(db).await?;
    let (scope, project) = authorize_child(
        db,
        actor,
        action,
        service.as_ref().map(|s| s.project_id),
        "service",
        |organization_id, project_id| Resource::Service {
            organization_id,
            project_id,
            id,
        },
    )
    .await?;
    let service = service.ok_or_else(|| Error::NotFound("service not found".into()))?;
    Ok((scope, service, project))
}

/// A stack the caller may perform `action` on, with its project.
pub async fn authorize_stack<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: Action,
    id: Uuid,
) -> Result<(Scope, stack_rows::Model, project_rows::Model)> {
    let stack = stack_rows::Entity::find_by_id(id).one(db).await?;
    let (scope, project) = authorize_child(
        db,
        actor,
        action,
        stack.as_ref().map(|s| s.project_id),
        "stack",
        |organization_id, project_id| Resource::Stack {
            organization_id,
            project_id,
            id,
        },
    )
    .await?;
    let stack = stack.ok_or_else(|| Error::NotFound("stack not found".into()))?;
    Ok((scope, stack, project))
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
