//! `ferry.v1.GrantService`: per-resource grants (`resource_permissions`)
//! that [`crate::authz::Caller`] reads. Admin and owner only.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, ResourceAccess, ResourceType};
use ferry_db::entities::{
    jobs, organization_members, projects, resource_permissions, services, stacks,
};
use ferry_db::sea_orm::ActiveEnum as _;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::grant_service_server::GrantService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::{Auditor, Entry};
use crate::auth::Identity;
use crate::authz::{Action, Caller, Resource};
use crate::db::is_unique_violation;
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `GrantService` implementation.
#[derive(Debug, Clone)]
pub struct GrantApi {
    identity: Identity,
}

impl GrantApi {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

fn resource_type(value: i32) -> Result<ResourceType> {
    match pb::GrantResourceType::try_from(value) {
        Ok(pb::GrantResourceType::Project) => Ok(ResourceType::Project),
        Ok(pb::GrantResourceType::Service) => Ok(ResourceType::Service),
        Ok(pb::GrantResourceType::Stack) => Ok(ResourceType::Stack),
        Ok(pb::GrantResourceType::Job) => Ok(ResourceType::Job),
        _ => Err(Error::InvalidArgument(
            "resourceType: must be PROJECT, SERVICE, STACK or JOB".into(),
        )),
    }
}

fn level(value: i32) -> Result<ResourceAccess> {
    match pb::GrantLevel::try_from(value) {
        Ok(pb::GrantLevel::View) => Ok(ResourceAccess::View),
        Ok(pb::GrantLevel::Deploy) => Ok(ResourceAccess::Deploy),
        Ok(pb::GrantLevel::Manage) => Ok(ResourceAccess::Manage),
        _ => Err(Error::InvalidArgument(
            "level: must be VIEW, DEPLOY or MANAGE".into(),
        )),
    }
}

/// ListGrants' order: oldest first, then id.
static GRANTS: Keyset<resource_permissions::Column> = Keyset {
    list: "grants",
    columns: &[
        asc(resource_permissions::Column::CreatedAt, Kind::Time),
        asc(resource_permissions::Column::Id, Kind::Id),
    ],
};

fn grant_to_pb(g: &resource_permissions::Model) -> pb::Grant {
    let (kind, id) = match g.resource_type {
        ResourceType::Project => (pb::GrantResourceType::Project, g.project_id),
        ResourceType::Service => (pb::GrantResourceType::Service, g.service_id),
        ResourceType::Stack => (pb::GrantResourceType::Stack, g.stack_id),
        ResourceType::Job => (pb::GrantResourceType::Job, g.job_id),
    };
    let level = match g.permission {
        ResourceAccess::View => pb::GrantLevel::View,
        ResourceAccess::Deploy => pb::GrantLevel::Deploy,
        ResourceAccess::Manage => pb::GrantLevel::Manage,
    };
    pb::Grant {
        id: g.id.to_string(),
        organization_id: g.organization_id.to_string(),
        user_id: g.user_id.to_string(),
        resource_type: kind.into(),
        resource_id: id.map(|i| i.to_string()).unwrap_or_default(),
        level: level.into(),
        granted_by: g.granted_by.map(|i| i.to_string()).unwrap_or_default(),
        created_at: Some(ts(g.created_at)),
    }
}

/// The project containing the resource, if the resource is in `org`.
async fn project_of<C: ConnectionTrait>(
    db: &C,
    org: Uuid,
    kind: ResourceType,
    id: Uuid,
) -> Result<Option<Uuid>> {
    let project = match kind {
        ResourceType::Project => Some(id),
        ResourceType::Service => services::Entity::find_by_id(id)
            .one(db)
            .await?
            .map(|s| s.project_id),
        ResourceType::Stack => stacks::Entity::find_by_id(id)
            .one(db)
            .await?
            .map(|s| s.project_id),
        ResourceType::Job => jobs::Entity::find_by_id(id)
            .one(db)
            .await?
            .map(|j| j.project_id),
    };
    let Some(project) = project else {
        return Ok(None);
    };
    Ok(projects::Entity::find_by_id(project)
        .one(db)
        .await?
        .filter(|p| p.organization_id == org)
        .map(|p| p.id))
}

impl GrantApi {
    async fn create(&self, request: Request<pb::CreateGrantRequest>) -> Result<pb::Grant> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.identity.db;
        caller
            .can(db, Action::GrantManage, Resource::Organization(org))
            .await?;
        let user = parse_id("userId", &req.user_id)?;
        let kind = resource_type(req.resource_type)?;
        let resource = parse_id("resourceId", &req.resource_id)?;
        let level = level(req.level)?;
        let txn = crate::db::begin_write(db).await?;
        organization_members::Entity::find()
            .filter(organization_members::Column::OrganizationId.eq(org))
            .filter(organization_members::Column::UserId.eq(user))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("member not found".into()))?;
        let project = project_of(&txn, org, kind, resource)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{} not found", kind.to_value())))?;
        let (mut p, mut s, mut st, mut j) = (None, None, None, None);
        match kind {
            ResourceType::Project => p = Some(project),
            ResourceType::Service => s = Some(resource),
            ResourceType::Stack => st = Some(resource),
            ResourceType::Job => j = Some(resource),
        }
        let inserted = resource_permissions::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            user_id: Set(user),
            resource_type: Set(kind),
            project_id: Set(p),
            service_id: Set(s),
            stack_id: Set(st),
            job_id: Set(j),
            permission: Set(level),
            granted_by: Set(Some(caller.user_id)),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await;
        let grant = match inserted {
            Ok(g) => g,
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(
                    "this user already has a grant on this resource; delete it first".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new("grant.create", AuditResourceType::Member, user).details(json!({
                    "grantId": grant.id.to_string(),
                    "resourceType": kind.to_value(),
                    "resourceId": resource.to_string(),
                    "level": level.to_value(),
                })),
            )
            .await?;
        txn.commit().await?;
        Ok(grant_to_pb(&grant))
    }

    async fn list(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<pb::ListGrantsResponse> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = GRANTS.page(req.page_size, &req.page_token)?;
        let db = &self.identity.db;
        caller
            .can(db, Action::GrantRead, Resource::Organization(org))
            .await?;
        let mut query = resource_permissions::Entity::find()
            .filter(resource_permissions::Column::OrganizationId.eq(org));
        if !req.user_id.trim().is_empty() {
            let user = parse_id("userId", &req.user_id)?;
            query = query.filter(resource_permissions::Column::UserId.eq(user));
        }
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |g| vec![Key::Time(g.created_at), Key::Id(g.id)]);
        Ok(pb::ListGrantsResponse {
            grants: rows.iter().map(grant_to_pb).collect(),
            next_page_token,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteGrantRequest>) -> Result<()> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let id = parse_id("id", &req.id)?;
        let db = &self.identity.db;
        caller
            .can(db, Action::GrantManage, Resource::Organization(org))
            .await?;
        let txn = crate::db::begin_write(db).await?;
        let grant = resource_permissions::Entity::find_by_id(id)
            .filter(resource_permissions::Column::OrganizationId.eq(org))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("grant not found".into()))?;
        resource_permissions::Entity::delete_by_id(id)
            .exec(&txn)
            .await?;
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new("grant.delete", AuditResourceType::Member, grant.user_id).details(
                    json!({
                        "grantId": grant.id.to_string(),
                        "resourceType": grant.resource_type.to_value(),
                        "level": grant.permission.to_value(),
                    }),
                ),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl GrantService for GrantApi {
    async fn create_grant(
        &self,
        request: Request<pb::CreateGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn list_grants(
        &self,
        request: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn delete_grant(
        &self,
        request: Request<pb::DeleteGrantRequest>,
    ) -> Result<Response<pb::DeleteGrantResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteGrantResponse {}))
    }
}
