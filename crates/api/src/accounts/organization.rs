//! `ferry.v1.OrganizationService`: the tenancy root.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, OrgRole};
use ferry_db::entities::{organization_members, organizations, projects};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, PaginatorTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::organization_service_server::OrganizationService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{limits, members, retention};
use crate::audit::{Auditor, Entry};
use crate::auth::{Credential, Identity};
use crate::authz::{Action, Caller, Resource};
use crate::db::is_unique_violation;
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, role_to_pb, ts};
use crate::workloads::Workloads;
use crate::workloads::projects::delete_project_namespace;
use crate::{Error, Result};

/// Longest organization name.
pub const MAX_NAME_CHARS: usize = 100;
/// Longest generated slug stem (a suffix may follow).
const SLUG_STEM_CHARS: usize = 50;

/// The `OrganizationService` implementation.
#[derive(Debug, Clone)]
pub struct OrganizationApi {
    identity: Identity,
    /// Deleting an organization deletes its projects' namespaces first.
    workloads: Workloads,
}

impl OrganizationApi {
    pub fn new(workloads: Workloads) -> Self {
        Self {
            identity: workloads.identity.clone(),
            workloads,
        }
    }
}

/// Trimmed name of 1 to 100 characters without control characters.
pub fn validate_name(name: &str) -> Result<String> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "name: must have 1 to {MAX_NAME_CHARS} characters and no control characters"
        )));
    }
    Ok(name.to_owned())
}

/// A DNS-1123 label derived from `name` ("org" when nothing is left).
pub fn slugify(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
        if slug.len() >= SLUG_STEM_CHARS {
            break;
        }
    }
    let slug = slug.trim_matches('-');
    if slug.is_empty() {
        "org".to_owned()
    } else {
        slug.to_owned()
    }
}

/// ListOrganizations' order: by name, then id.
static ORGANIZATIONS: Keyset<organizations::Column> = Keyset {
    list: "organizations",
    columns: &[
        asc(organizations::Column::Name, Kind::Text),
        asc(organizations::Column::Id, Kind::Id),
    ],
};

fn org_to_pb(org: &organizations::Model, role: Option<OrgRole>) -> pb::Organization {
    pb::Organization {
        id: org.id.to_string(),
        name: org.name.clone(),
        slug: org.slug.clone(),
        role: role_to_pb(role).into(),
        created_at: Some(ts(org.created_at)),
        updated_at: Some(ts(org.updated_at)),
    }
}

impl OrganizationApi {
    async fn create(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<pb::Organization> {
        let caller = Caller::of(&self.identity, &request).await?;
        let db = &self.identity.db;
        caller
            .can(db, Action::OrganizationCreate, Resource::Platform)
            .await?;
        let name = validate_name(&request.get_ref().name)?;
        let stem = slugify(&name);
        // A taken slug gets a short random suffix; retried on a race.
        for attempt in 0..5 {
            let slug = if attempt == 0 {
                stem.clone()
            } else {
                format!("{stem}-{}", &Uuid::new_v4().simple().to_string()[..6])
            };
            let exists = organizations::Entity::find()
                .filter(organizations::Column::Slug.eq(slug.as_str()))
                .one(db)
                .await?
                .is_some();
            if exists {
                continue;
            }
            let now = Utc::now();
            let txn = crate::db::begin_write(db).await?;
            let inserted = organizations::ActiveModel {
                id: Set(Uuid::now_v7()),
                name: Set(name.clone()),
                slug: Set(slug),
                settings: Set(json!({})),
                created_at: Set(now),
                updated_at: Set(now),
            }
            .insert(&txn)
            .await;
            let org = match inserted {
                Ok(org) => org,
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            };
            organization_members::ActiveModel {
                id: Set(Uuid::now_v7()),
                organization_id: Set(org.id),
                user_id: Set(caller.user_id),
                role: Set(OrgRole::Owner),
                invited_by: Set(None),
                joined_at: Set(now),
            }
            .insert(&txn)
            .await?;
            Auditor::org(&caller, org.id)
                .record(
                    &txn,
                    Entry::new(
                        "organization.create",
                        AuditResourceType::Organization,
                        org.id,
                    )
                    .details(json!({ "name": org.name, "slug": org.slug })),
                )
                .await?;
            txn.commit().await?;
            return Ok(org_to_pb(&org, Some(OrgRole::Owner)));
        }
        Err(Error::AlreadyExists(
            "could not find a free slug for this name; try another name".into(),
        ))
    }

    async fn get(&self, request: Request<pb::GetOrganizationRequest>) -> Result<pb::Organization> {
        let caller = Caller::of(&self.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        // The organization and the caller's membership in one query.
        let (org, role) = caller
            .load(
                &self.identity.db,
                Action::OrganizationRead,
                organizations::Entity::find_by_id(id),
                organizations::Column::Id,
                |o| Resource::Organization(o.id),
                "organization not found",
            )
            .await?;
        Ok(org_to_pb(&org, role))
    }

    async fn list(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<pb::ListOrganizationsResponse> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let page = ORGANIZATIONS.page(req.page_size, &req.page_token)?;
        // The member filter turns the outer join into the caller's memberships.
        let mut query = organizations::Entity::find()
            .find_also_related(organization_members::Entity)
            .filter(organization_members::Column::UserId.eq(caller.user_id));
        if let Credential::ApiToken {
            organization_id, ..
        } = caller.credential
        {
            query = query.filter(organizations::Column::Id.eq(organization_id));
        }
        let rows = page.apply(query).all(&self.identity.db).await?;
        let (rows, next_page_token) = page.finish(rows, |(o, _)| {
            vec![Key::Text(o.name.clone()), Key::Id(o.id)]
        });
        let mut organizations = Vec::with_capacity(rows.len());
        for (org, member) in rows {
            let Some(member) = member else { continue };
            organizations.push(org_to_pb(&org, self.listed_role(&caller, &member).await?));
        }
        Ok(pb::ListOrganizationsResponse {
            organizations,
            next_page_token,
        })
    }

    /// The role ListOrganizations shows, as GetOrganization would: a login
    /// session acts with its membership's role; an API token (which lists
    /// at most its one organization, so this is one call) goes through
    /// `can`, which caps the role at the token's.
    async fn listed_role(
        &self,
        caller: &Caller,
        member: &organization_members::Model,
    ) -> Result<Option<OrgRole>> {
        match caller.credential {
            Credential::Session { .. } => Ok(Some(member.role)),
            Credential::ApiToken { .. } => {
                let org = Resource::Organization(member.organization_id);
                caller
                    .can(&self.identity.db, Action::OrganizationRead, org)
                    .await
            }
        }
    }

    async fn rename(
        &self,
        request: Request<pb::RenameOrganizationRequest>,
    ) -> Result<pb::Organization> {
        let caller = Caller::of(&self.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.identity.db;
        let role = caller
            .can(db, Action::OrganizationUpdate, Resource::Organization(id))
            .await?;
        let name = validate_name(&request.get_ref().name)?;
        let txn = crate::db::begin_write(db).await?;
        let org = organizations::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("organization not found".into()))?;
        let old = org.name.clone();
        let mut active = org.into_active_model();
        active.name = Set(name.clone());
        active.updated_at = Set(Utc::now());
        let org = active.update(&txn).await?;
        Auditor::org(&caller, id)
            .record(
                &txn,
                Entry::new("organization.rename", AuditResourceType::Organization, id)
                    .details(json!({ "from": old, "to": name })),
            )
            .await?;
        txn.commit().await?;
        Ok(org_to_pb(&org, role))
    }

    async fn delete(&self, request: Request<pb::DeleteOrganizationRequest>) -> Result<()> {
        let caller = Caller::of(&self.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.identity.db;
        caller
            .can(db, Action::OrganizationDelete, Resource::Organization(id))
            .await?;
        // The cluster first, through the same path as DeleteProject: a
        // failure leaves the organization (and its rows) in place to retry.
        let projects = projects::Entity::find()
            .filter(projects::Column::OrganizationId.eq(id))
            .all(db)
            .await?;
        for project in &projects {
            delete_project_namespace(&self.workloads, project).await?;
        }
        let txn = crate::db::begin_write(db).await?;
        let org = organizations::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("organization not found".into()))?;
        // A project created meanwhile may have a namespace nobody deleted.
        let late = projects::Entity::find()
            .filter(projects::Column::OrganizationId.eq(id))
            .filter(projects::Column::Id.is_not_in(projects.iter().map(|p| p.id)))
            .count(&txn)
            .await?;
        if late > 0 {
            return Err(Error::FailedPrecondition(
                "a project was created while the organization was being deleted; retry".into(),
            ));
        }
        organizations::Entity::delete_by_id(id).exec(&txn).await?;
        // Recorded in the global chain: the organization's own chain ends here.
        Auditor::global(&caller).record(&txn, Entry::new("organization.delete", AuditResourceType::Organization, id).details(json!({
                    "name": org.name,
                    "slug": org.slug,
                    "namespacesDeleted": projects.iter().map(|p| &p.namespace).collect::<Vec<_>>(),
                })))
        .await?;
        txn.commit().await?;
        self.identity.credentials.forget_all(); // credentials may have ended
        // Its routes are gone with the rows: the proxies hear it now.
        self.workloads.feed.notify_committed();
        Ok(())
    }
}

#[tonic::async_trait]
impl OrganizationService for OrganizationApi {
    async fn create_organization(
        &self,
        request: Request<pb::CreateOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn get_organization(
        &self,
        request: Request<pb::GetOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    async fn list_organizations(
        &self,
        request: Request<pb::ListOrganizationsRequest>,
    ) -> Result<Response<pb::ListOrganizationsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn rename_organization(
        &self,
        request: Request<pb::RenameOrganizationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(self.rename(request).await?))
    }

    async fn delete_organization(
        &self,
        request: Request<pb::DeleteOrganizationRequest>,
    ) -> Result<Response<pb::DeleteOrganizationResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteOrganizationResponse {}))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        Ok(Response::new(members::list(&self.identity, request).await?))
    }

    async fn change_member_role(
        &self,
        request: Request<pb::ChangeMemberRoleRequest>,
    ) -> Result<Response<pb::Member>, Status> {
        Ok(Response::new(
            members::change_role(&self.identity, request).await?,
        ))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        members::remove(&self.identity, request).await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn leave_organization(
        &self,
        request: Request<pb::LeaveOrganizationRequest>,
    ) -> Result<Response<pb::LeaveOrganizationResponse>, Status> {
        members::leave(&self.identity, request).await?;
        Ok(Response::new(pb::LeaveOrganizationResponse {}))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        members::transfer_ownership(&self.identity, request).await?;
        Ok(Response::new(pb::TransferOwnershipResponse {}))
    }

    async fn get_organization_limits(
        &self,
        request: Request<pb::GetOrganizationLimitsRequest>,
    ) -> Result<Response<pb::OrganizationLimits>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let default = &self.workloads.deployer.config.policy.quota;
        let limits = limits::get(&caller, &self.identity.db, default, request.get_ref()).await?;
        Ok(Response::new(limits))
    }

    async fn set_organization_limits(
        &self,
        request: Request<pb::SetOrganizationLimitsRequest>,
    ) -> Result<Response<pb::OrganizationLimits>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let default = &self.workloads.deployer.config.policy.quota;
        let limits = limits::set(&caller, &self.identity.db, default, request.into_inner()).await?;
        Ok(Response::new(limits))
    }

    async fn get_retention_policy(
        &self,
        request: Request<pb::GetRetentionPolicyRequest>,
    ) -> Result<Response<pb::OrganizationRetention>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let policy = retention::get(&caller, &self.identity.db, request.get_ref()).await?;
        Ok(Response::new(policy))
    }

    async fn set_retention_policy(
        &self,
        request: Request<pb::SetRetentionPolicyRequest>,
    ) -> Result<Response<pb::OrganizationRetention>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let policy = retention::set(&caller, &self.identity.db, request.into_inner()).await?;
        Ok(Response::new(policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_dns_labels() {
        assert_eq!(slugify("Acme Corp"), "acme-corp");
        assert_eq!(slugify("  --Ünïcode!! Team  "), "n-code-team");
        assert_eq!(slugify("!!!"), "org");
        assert!(slugify(&"a".repeat(200)).len() <= 50);
        assert!(validate_name(" ").is_err());
        assert!(validate_name(&"x".repeat(101)).is_err());
        assert_eq!(validate_name(" Acme ").ok().as_deref(), Some("Acme"));
    }
}
