//! Authorization: one policy function, deny by default.
//!
//! [`can`] decides every action of every RPC from three inputs: the
//! platform super-admin flag, the caller's organization role
//! (`organization_members`, capped by an API token's role) and per-resource
//! grants (`resource_permissions`: view < deploy < manage on a project,
//! service, stack or job; a project grant covers what is in the project).
//! Actions missing from [`POLICY`] are denied, even to super-admins.
//!
//! Outcomes: callers outside the resource's organization get `NotFound`
//! (existence is never revealed); members whose role and grants fall short
//! get `PermissionDenied`.

use ferry_db::entities::enums::{OrgRole, ResourceAccess, ResourceType};
use ferry_db::entities::{organization_members, resource_permissions};
use ferry_db::sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _};
use uuid::Uuid;

use crate::auth::{Actor, Credential};
use crate::{Error, Result};

/// What an action requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Any user acting through a login session (not an API token).
    SessionUser,
    /// At least this organization role.
    Role(OrgRole),
    /// `role` and above always; from `floor` up, a grant of at least
    /// `level` on the resource (or its project) also allows it.
    RoleOrGrant {
        role: OrgRole,
        floor: OrgRole,
        level: ResourceAccess,
    },
    /// Platform super-admins only.
    SuperAdmin,
}

/// The policy table. Later resources add their actions here.
pub const POLICY: &[(&str, Rule)] = &[
    ("organization.create", Rule::SessionUser),
    ("organization.read", Rule::Role(OrgRole::Viewer)),
    ("organization.update", Rule::Role(OrgRole::Admin)),
    ("organization.delete", Rule::Role(OrgRole::Owner)),
    ("audit.read", Rule::Role(OrgRole::Admin)),
    ("audit.verify", Rule::Role(OrgRole::Admin)),
    ("audit.read_global", Rule::SuperAdmin),
    // Tenancy: members, invitations, API tokens, grants.
    ("member.read", Rule::Role(OrgRole::Viewer)),
    ("member.update", Rule::Role(OrgRole::Admin)),
    ("member.remove", Rule::Role(OrgRole::Admin)),
    ("organization.leave", Rule::Role(OrgRole::Viewer)),
    ("organization.transfer", Rule::Role(OrgRole::Owner)),
    ("invitation.read", Rule::Role(OrgRole::Admin)),
    ("invitation.create", Rule::Role(OrgRole::Admin)),
    ("invitation.revoke", Rule::Role(OrgRole::Admin)),
    ("invitation.accept", Rule::SessionUser),
    ("api_token.read", Rule::Role(OrgRole::Viewer)),
    ("api_token.create", Rule::Role(OrgRole::Viewer)),
    ("api_token.revoke", Rule::Role(OrgRole::Viewer)),
    ("grant.read", Rule::Role(OrgRole::Admin)),
    ("grant.manage", Rule::Role(OrgRole::Admin)),
    // Workloads: viewers read, members need a grant, admins manage.
    (
        "project.read",
        Rule::RoleOrGrant {
            role: OrgRole::Viewer,
            floor: OrgRole::Viewer,
            level: ResourceAccess::View,
        },
    ),
    (
        "project.manage",
        Rule::RoleOrGrant {
            role: OrgRole::Admin,
            floor: OrgRole::Member,
            level: ResourceAccess::Manage,
        },
    ),
    (
        "service.read",
        Rule::RoleOrGrant {
            role: OrgRole::Viewer,
            floor: OrgRole::Viewer,
            level: ResourceAccess::View,
        },
    ),
    (
        "service.deploy",
        Rule::RoleOrGrant {
            role: OrgRole::Admin,
            floor: OrgRole::Member,
            level: ResourceAccess::Deploy,
        },
    ),
    (
        "service.read_secrets",
        Rule::RoleOrGrant {
            role: OrgRole::Admin,
            floor: OrgRole::Member,
            level: ResourceAccess::Deploy,
        },
    ),
    ("project.create", Rule::Role(OrgRole::Member)),
    (
        "stack.read",
        Rule::RoleOrGrant {
            role: OrgRole::Viewer,
            floor: OrgRole::Viewer,
            level: ResourceAccess::View,
        },
    ),
    (
        "stack.deploy",
        Rule::RoleOrGrant {
            role: OrgRole::Admin,
            floor: OrgRole::Member,
            level: ResourceAccess::Deploy,
        },
    ),
    (
        "stack.manage",
        Rule::RoleOrGrant {
            role: OrgRole::Admin,
            floor: OrgRole::Member,
            level: ResourceAccess::Manage,
        },
    ),
    ("template.read", Rule::Role(OrgRole::Viewer)),
    ("registry.read", Rule::Role(OrgRole::Member)),
    ("registry.manage", Rule::Role(OrgRole::Admin)),
    ("template.manage", Rule::Role(OrgRole::Admin)),
    (
        "service.manage",
        Rule::RoleOrGrant {
            role: OrgRole::Admin,
            floor: OrgRole::Member,
            level: ResourceAccess::Manage,
        },
    ),
];

/// What an action is performed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Nothing inside an organization (creating one, the global audit chain).
    Platform,
    Organization(Uuid),
    Project {
        organization_id: Uuid,
        id: Uuid,
    },
    Service {
        organization_id: Uuid,
        project_id: Uuid,
        id: Uuid,
    },
    Stack {
        organization_id: Uuid,
        project_id: Uuid,
        id: Uuid,
    },
    Job {
        organization_id: Uuid,
        project_id: Uuid,
        id: Uuid,
    },
}

impl Resource {
    fn organization_id(&self) -> Option<Uuid> {
        match *self {
            Resource::Platform => None,
            Resource::Organization(id) => Some(id),
            Resource::Project {
                organization_id, ..
            }
            | Resource::Service {
                organization_id, ..
            }
            | Resource::Stack {
                organization_id, ..
            }
            | Resource::Job {
                organization_id, ..
            } => Some(organization_id),
        }
    }
}

/// Looks up `action` in [`POLICY`].
pub fn rule(action: &str) -> Option<Rule> {
    POLICY.iter().find(|(a, _)| *a == action).map(|(_, r)| *r)
}

fn level_rank(level: ResourceAccess) -> u8 {
    match level {
        ResourceAccess::View => 1,
        ResourceAccess::Deploy => 2,
        ResourceAccess::Manage => 3,
    }
}

/// THE policy check. `Ok` carries the caller's effective role in the
/// resource's organization (`None` outside organizations, or for a
/// super-admin who is not a member).
pub async fn can<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: &str,
    resource: Resource,
) -> Result<Option<OrgRole>> {
    let Some(rule) = rule(action) else {
        tracing::warn!(action, "action missing from the policy table: denied");
        return Err(Error::PermissionDenied(format!("{action}: not permitted")));
    };
    let org = resource.organization_id();
    // API tokens never leave their organization.
    if let (
        Credential::ApiToken {
            organization_id, ..
        },
        Some(org),
    ) = (actor.credential, org)
        && organization_id != org
    {
        return Err(not_found(resource));
    }
    let role = match org {
        Some(org) => effective_role(db, actor, org).await?,
        None => None,
    };
    if actor.super_admin {
        return Ok(role);
    }
    let denied = || Err(Error::PermissionDenied(format!("{action}: not permitted")));
    match rule {
        Rule::SuperAdmin => denied(),
        Rule::SessionUser => match actor.credential {
            Credential::Session { .. } => Ok(role),
            Credential::ApiToken { .. } => denied(),
        },
        Rule::Role(min) => {
            let role = role.ok_or_else(|| not_found(resource))?;
            if role >= min {
                Ok(Some(role))
            } else {
                denied()
            }
        }
        Rule::RoleOrGrant {
            role: min,
            floor,
            level,
        } => {
            let role = role.ok_or_else(|| not_found(resource))?;
            if role >= min {
                return Ok(Some(role));
            }
            if role >= floor && has_grant(db, actor.user_id, resource, level).await? {
                return Ok(Some(role));
            }
            denied()
        }
    }
}

/// The caller's role in `org`, capped by an API token's role; `None` when
/// not a member.
async fn effective_role<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    org: Uuid,
) -> Result<Option<OrgRole>> {
    let member = organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(org))
        .filter(organization_members::Column::UserId.eq(actor.user_id))
        .one(db)
        .await?;
    Ok(member.map(|m| match actor.credential {
        Credential::ApiToken { role, .. } if role < m.role => role,
        _ => m.role,
    }))
}

/// Whether `user` holds a grant of at least `level` on `resource` or on the
/// project containing it.
async fn has_grant<C: ConnectionTrait>(
    db: &C,
    user: Uuid,
    resource: Resource,
    level: ResourceAccess,
) -> Result<bool> {
    use resource_permissions::Column as C;
    let (project, own) = match resource {
        Resource::Platform | Resource::Organization(_) => return Ok(false),
        Resource::Project { id, .. } => (id, None),
        Resource::Service { project_id, id, .. } => {
            (project_id, Some((ResourceType::Service, C::ServiceId, id)))
        }
        Resource::Stack { project_id, id, .. } => {
            (project_id, Some((ResourceType::Stack, C::StackId, id)))
        }
        Resource::Job { project_id, id, .. } => {
            (project_id, Some((ResourceType::Job, C::JobId, id)))
        }
    };
    let mut target = ferry_db::sea_orm::Condition::any().add(
        ferry_db::sea_orm::Condition::all()
            .add(C::ResourceType.eq(ResourceType::Project))
            .add(C::ProjectId.eq(project)),
    );
    if let Some((kind, column, id)) = own {
        target = target.add(
            ferry_db::sea_orm::Condition::all()
                .add(C::ResourceType.eq(kind))
                .add(column.eq(id)),
        );
    }
    let grants = resource_permissions::Entity::find()
        .filter(C::UserId.eq(user))
        .filter(target)
        .all(db)
        .await?;
    Ok(grants
        .iter()
        .any(|g| level_rank(g.permission) >= level_rank(level)))
}

fn not_found(resource: Resource) -> Error {
    let what = match resource {
        Resource::Platform => "resource",
        Resource::Organization(_) => "organization",
        Resource::Project { .. } => "project",
        Resource::Service { .. } => "service",
        Resource::Stack { .. } => "stack",
        Resource::Job { .. } => "job",
    };
    Error::NotFound(format!("{what} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_actions_have_no_rule_and_names_are_unique() {
        assert_eq!(rule("organization.teleport"), None);
        let mut names: Vec<&str> = POLICY.iter().map(|(a, _)| *a).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), POLICY.len());
    }

    #[test]
    fn roles_and_levels_are_ordered() {
        assert!(OrgRole::Viewer < OrgRole::Member);
        assert!(OrgRole::Member < OrgRole::Admin);
        assert!(OrgRole::Admin < OrgRole::Owner);
        assert!(level_rank(ResourceAccess::View) < level_rank(ResourceAccess::Deploy));
        assert!(level_rank(ResourceAccess::Deploy) < level_rank(ResourceAccess::Manage));
    }
}
