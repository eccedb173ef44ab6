//! `ferry.v1.ProjectService`: a project is one namespace, whose name Ferry
//! generates (`ferry-<slug>-<id suffix>`), so no tenant can name a project
//! after a namespace Ferry does not own.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, OrgRole, ResourceAccess, ResourceType};
use ferry_db::entities::{projects, resource_permissions};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::project_service_server::ProjectService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Scope, Workloads, authorize_project, unique_as, validate};
use crate::audit;
use crate::authz::{Resource, can};
use crate::services::{parse_id, ts};
use crate::{Error, Result};

/// The `ProjectService` implementation.
#[derive(Debug, Clone)]
pub struct ProjectApi(pub Workloads);

/// The project's namespace: a fixed prefix, the slug (at most 40
/// characters, for people reading `kubectl get ns`) and the last 12 hex
/// digits of the id (random bits of the UUIDv7). Migration m0009 derives
/// the same name for older projects.
pub(crate) fn project_namespace(slug: &str, id: Uuid) -> String {
    let short: String = slug.chars().take(40).collect();
    let hex = id.simple().to_string();
    format!(
        "ferry-{}-{}",
        short.trim_end_matches('-'),
        &hex[hex.len() - 12..]
    )
}

pub(crate) fn project_to_pb(p: &projects::Model) -> pb::Project {
    pb::Project {
        id: p.id.to_string(),
        organization_id: p.organization_id.to_string(),
        name: p.name.clone(),
        slug: p.slug.clone(),
        namespace: p.namespace.clone(),
        description: p.description.clone().unwrap_or_default(),
        created_at: Some(ts(p.created_at)),
        updated_at: Some(ts(p.updated_at)),
    }
}

fn description(value: &str) -> Result<Option<String>> {
    if value.chars().count() > 2000 {
        return Err(Error::InvalidArgument(
            "description: at most 2000 characters".into(),
        ));
    }
    Ok((!value.trim().is_empty()).then(|| value.trim().to_owned()))
}

impl ProjectApi {
    async fn create(&self, request: Request<pb::CreateProjectRequest>) -> Result<pb::Project> {
        let actor = self.0.identity.authenticate(&request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let role = can(db, &actor, "project.create", Resource::Organization(org)).await?;
        let name = validate::display_name("name", &req.name)?;
        let slug = if req.slug.trim().is_empty() {
            validate::slugify(&name)
        } else {
            req.slug.trim().to_owned()
        };
        validate::dns_label("slug", &slug, 63)?;
        let description = description(&req.description)?;
        let now = Utc::now();
        let txn = audit::begin_write(db).await?;
        let id = Uuid::now_v7();
        let project = projects::ActiveModel {
            id: Set(id),
            organization_id: Set(org),
            name: Set(name),
            namespace: Set(project_namespace(&slug, id)),
            slug: Set(slug),
            description: Set(description),
            created_by: Set(Some(actor.user_id)),
            metadata: Set(json!({})),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "a project with this name or slug already exists in this organization",
        ))?;
        // A member who creates a project may manage it.
        if role == Some(OrgRole::Member) {
            resource_permissions::ActiveModel {
                id: Set(Uuid::now_v7()),
                organization_id: Set(org),
                user_id: Set(actor.user_id),
                resource_type: Set(ResourceType::Project),
                project_id: Set(Some(project.id)),
                service_id: Set(None),
                stack_id: Set(None),
                job_id: Set(None),
                permission: Set(ResourceAccess::Manage),
                granted_by: Set(Some(actor.user_id)),
                created_at: Set(now),
            }
            .insert(&txn)
            .await?;
        }
        let scope = Scope {
            actor,
            organization_id: org,
        };
        scope
            .audit(
                &txn,
                "project.create",
                AuditResourceType::Project,
                project.id,
                json!({ "name": project.name, "slug": project.slug, "namespace": project.namespace }),
            )
            .await?;
        txn.commit().await?;
        Ok(project_to_pb(&project))
    }

    async fn get(&self, request: Request<pb::GetProjectRequest>) -> Result<pb::Project> {
        let actor = self.0.identity.authenticate(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, project) =
            authorize_project(&self.0.identity.db, &actor, "project.read", id).await?;
        Ok(project_to_pb(&project))
    }

    async fn list(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<pb::ListProjectsResponse> {
        let actor = self.0.identity.authenticate(&request).await?;
        let org = parse_id("organizationId", &request.get_ref().organization_id)?;
        let db = &self.0.identity.db;
        let rows = projects::Entity::find()
            .filter(projects::Column::OrganizationId.eq(org))
            .order_by_asc(projects::Column::Name)
            .all(db)
            .await?;
        // Membership is checked even when the organization has no projects.
        can(db, &actor, "organization.read", Resource::Organization(org)).await?;
        let mut out = Vec::new();
        for p in rows {
            let resource = Resource::Project {
                organization_id: org,
                id: p.id,
            };
            if can(db, &actor, "project.read", resource).await.is_ok() {
                out.push(project_to_pb(&p));
            }
        }
        Ok(pb::ListProjectsResponse { projects: out })
    }

    async fn update(&self, request: Request<pb::UpdateProjectRequest>) -> Result<pb::Project> {
        let actor = self.0.identity.authenticate(&request).await?;
        let req = request.get_ref();
        let id = parse_id("id", &req.id)?;
        let db = &self.0.identity.db;
        let (scope, project) = authorize_project(db, &actor, "project.manage", id).await?;
        let name = req
            .name
            .as_deref()
            .map(|n| validate::display_name("name", n))
            .transpose()?;
        let description = req.description.as_deref().map(description).transpose()?;
        let txn = audit::begin_write(db).await?;
        let mut row = project.into_active_model();
        if let Some(name) = &name {
            row.name = Set(name.clone());
        }
        if let Some(d) = description {
            row.description = Set(d);
        }
        row.updated_at = Set(Utc::now());
        let project = row
            .update(&txn)
            .await
            .map_err(unique_as("a project with this name already exists"))?;
        scope
            .audit(
                &txn,
                "project.update",
                AuditResourceType::Project,
                id,
                json!({ "name": name }),
            )
            .await?;
        txn.commit().await?;
        Ok(project_to_pb(&project))
    }

    async fn delete(&self, request: Request<pb::DeleteProjectRequest>) -> Result<()> {
        let actor = self.0.identity.authenticate(&request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let (scope, project) = authorize_project(db, &actor, "project.manage", id).await?;
        // The cluster first: rows are only removed once the namespace is.
        delete_project_namespace(&self.0, &project).await?;
        let txn = audit::begin_write(db).await?;
        projects::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                "project.delete",
                AuditResourceType::Project,
                id,
                json!({ "slug": project.slug, "namespace": project.namespace }),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(())
    }
}

/// Deletes a project's namespace (refused when the namespace is not this
/// project's). DeleteProject and DeleteOrganization both go through here.
pub(crate) async fn delete_project_namespace(
    w: &Workloads,
    project: &projects::Model,
) -> Result<()> {
    if let Some(cluster) = &w.deployer.cluster {
        cluster
            .delete_namespace(&ferry_k8s::Owner::project(&project.namespace, project.id))
            .await?;
    }
    Ok(())
}

#[tonic::async_trait]
impl ProjectService for ProjectApi {
    async fn create_project(
        &self,
        request: Request<pb::CreateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn get_project(
        &self,
        request: Request<pb::GetProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    async fn list_projects(
        &self,
        request: Request<pb::ListProjectsRequest>,
    ) -> Result<Response<pb::ListProjectsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn update_project(
        &self,
        request: Request<pb::UpdateProjectRequest>,
    ) -> Result<Response<pb::Project>, Status> {
        Ok(Response::new(self.update(request).await?))
    }

    async fn delete_project(
        &self,
        request: Request<pb::DeleteProjectRequest>,
    ) -> Result<Response<pb::DeleteProjectResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteProjectResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_generated_labels_with_the_id_suffix() {
        let id = Uuid::parse_str("01890a5d-ac96-774b-bcce-b302099a8057").unwrap_or_default();
        assert_eq!(project_namespace("web", id), "ferry-web-b302099a8057");
        let long = "a".repeat(39) + "-tail-that-is-cut";
        let ns = project_namespace(&long, id);
        assert_eq!(ns, format!("ferry-{}-b302099a8057", "a".repeat(39)));
        assert!(ferry_k8s::validate::is_label(&ns, 63));
        assert!(ferry_k8s::validate::is_label(
            &project_namespace(&"z".repeat(63), id),
            63
        ));
    }
}
