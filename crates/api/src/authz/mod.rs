//! Authorization: one policy function, deny by default.
//!
//! [`can`] decides every action of every RPC from three inputs: the
//! platform super-admin flag, the caller's organization role
//! (`organization_members`, capped by an API token's role) and per-resource
//! grants (`resource_permissions`: view < deploy < manage on a project,
//! service, stack or job; a project grant covers what is in the project).
//! Every [`Action`] has exactly one [`Rule`] (an exhaustive match), so no
//! action is allowed by omission.
//!
//! Handlers reach the policy only through [`Caller`] (the request
//! prologue: authenticate, load scoped, decide); [`can`] and
//! `Caller::load` is the one row loader.
//!
//! Outcomes: callers outside the resource's organization get `NotFound`
//! (existence is never revealed); members whose role and grants fall short
//! get `PermissionDenied`.
//!
//! Cost: [`can`] reads the caller's membership role (one single-column
//! query) and, only when the role alone falls short of a
//! [`Rule::RoleOrGrant`], the grants (a second one). Handlers that load the
//! resource row anyway use [`Caller::load`]: the row and the caller's
//! membership come back from ONE joined query, then the same decision runs.
//! Roles compare by [`OrgRole::rank`] (`Ord` delegates to it).

use ferry_db::entities::enums::{OrgRole, ResourceAccess, ResourceType};
use ferry_db::entities::{organization_members, resource_permissions};
use ferry_db::sea_orm::{
    ColumnTrait as _, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, QueryFilter as _,
    QueryResult, QuerySelect as _,
};
use uuid::Uuid;

use crate::auth::{Actor, Credential};
use crate::{Error, Result};

mod caller;
pub use caller::{Caller, Scope};

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

/// Declares [`Action`] with its name and rule side by side, so the enum,
/// [`Action::ALL`], [`Action::name`] and [`Action::rule`] cannot disagree.
macro_rules! actions {
    ($($variant:ident = $name:literal => $rule:expr,)+) => {
        /// Every action an RPC can ask [`can`] about. Each has exactly one
        /// rule: an action without one does not compile, so nothing is
        /// allowed by omission.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $(#[doc = concat!("`", $name, "`")] $variant,)+
        }

        impl Action {
            /// Every action, for tests and documentation.
            pub const ALL: &[Action] = &[$(Action::$variant,)+];

            /// The stable `resource.verb` name (logs, error messages).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Action::$variant => $name,)+
                }
            }

            /// What the action requires: THE policy table.
            pub const fn rule(self) -> Rule {
                match self {
                    $(Action::$variant => $rule,)+
                }
            }
        }
    };
}

// Workloads: viewers read, members need a grant, admins manage.
const READ: Rule = Rule::RoleOrGrant {
    role: OrgRole::Viewer,
    floor: OrgRole::Viewer,
    level: ResourceAccess::View,
};
const DEPLOY: Rule = Rule::RoleOrGrant {
    role: OrgRole::Admin,
    floor: OrgRole::Member,
    level: ResourceAccess::Deploy,
};
const MANAGE: Rule = Rule::RoleOrGrant {
    role: OrgRole::Admin,
    floor: OrgRole::Member,
    level: ResourceAccess::Manage,
};
/// Job definitions and their runs' output: members and above, or a view
/// grant on the job or its project.
const JOB_READ: Rule = Rule::RoleOrGrant {
    role: OrgRole::Member,
    floor: OrgRole::Viewer,
    level: ResourceAccess::View,
};
actions! {
    OrganizationCreate = "organization.create" => Rule::SessionUser,
    OrganizationRead = "organization.read" => Rule::Role(OrgRole::Viewer),
    OrganizationUpdate = "organization.update" => Rule::Role(OrgRole::Admin),
    OrganizationDelete = "organization.delete" => Rule::Role(OrgRole::Owner),
    OrganizationReadLimits = "organization.read_limits" => Rule::Role(OrgRole::Viewer),
    // Tenants never raise their own quota.
    OrganizationSetLimits = "organization.set_limits" => Rule::SuperAdmin,
    OrganizationReadRetention = "organization.read_retention" => Rule::Role(OrgRole::Viewer),
    // Admins run the organization; the audit floor for tenants is checked
    // by the handler (accounts/retention.rs).
    OrganizationSetRetention = "organization.set_retention" => Rule::Role(OrgRole::Admin),
    AuditRead = "audit.read" => Rule::Role(OrgRole::Admin),
    AuditVerify = "audit.verify" => Rule::Role(OrgRole::Admin),
    AuditReadGlobal = "audit.read_global" => Rule::SuperAdmin,
    MemberRead = "member.read" => Rule::Role(OrgRole::Viewer),
    MemberUpdate = "member.update" => Rule::Role(OrgRole::Admin),
    MemberRemove = "member.remove" => Rule::Role(OrgRole::Admin),
    OrganizationLeave = "organization.leave" => Rule::Role(OrgRole::Viewer),
    OrganizationTransfer = "organization.transfer" => Rule::Role(OrgRole::Owner),
    InvitationRead = "invitation.read" => Rule::Role(OrgRole::Admin),
    InvitationCreate = "invitation.create" => Rule::Role(OrgRole::Admin),
    InvitationRevoke = "invitation.revoke" => Rule::Role(OrgRole::Admin),
    InvitationAccept = "invitation.accept" => Rule::SessionUser,
    ApiTokenRead = "api_token.read" => Rule::Role(OrgRole::Viewer),
    ApiTokenCreate = "api_token.create" => Rule::Role(OrgRole::Viewer),
    ApiTokenRevoke = "api_token.revoke" => Rule::Role(OrgRole::Viewer),
    GrantRead = "grant.read" => Rule::Role(OrgRole::Admin),
    GrantManage = "grant.manage" => Rule::Role(OrgRole::Admin),
    ProjectRead = "project.read" => READ,
    ProjectManage = "project.manage" => MANAGE,
    ServiceRead = "service.read" => READ,
    ServiceDeploy = "service.deploy" => DEPLOY,
    ServiceReadSecrets = "service.read_secrets" => DEPLOY,
    ProjectCreate = "project.create" => Rule::Role(OrgRole::Member),
    StackRead = "stack.read" => READ,
    StackDeploy = "stack.deploy" => DEPLOY,
    StackManage = "stack.manage" => MANAGE,
    TemplateRead = "template.read" => Rule::Role(OrgRole::Viewer),
    RegistryRead = "registry.read" => Rule::Role(OrgRole::Member),
    RegistryManage = "registry.manage" => Rule::Role(OrgRole::Admin),
    // Members pick an integration for their services; admins connect them.
    GitRead = "git.read" => Rule::Role(OrgRole::Member),
    GitManage = "git.manage" => Rule::Role(OrgRole::Admin),
    TemplateManage = "template.manage" => Rule::Role(OrgRole::Admin),
    ServiceManage = "service.manage" => MANAGE,
    // Jobs: members read (their runs' output too), viewers with a grant;
    // managing a job is managing a workload; running one is a deploy.
    JobRead = "job.read" => JOB_READ,
    JobManage = "job.manage" => MANAGE,
    JobRun = "job.run" => DEPLOY,
    // Domains of a project: readers see them; adding, verifying and
    // removing one is managing the project; only operators skip the proof.
    DomainRead = "domain.read" => READ,
    DomainManage = "domain.manage" => MANAGE,
    DomainPreverify = "domain.preverify" => Rule::SuperAdmin,
    // Notification channels: members see them and their delivery log;
    // admins connect, test and remove them and manage the SMTP settings
    // (webhook URLs and SMTP credentials are the organization's secrets).
    NotificationRead = "notification.read" => Rule::Role(OrgRole::Member),
    NotificationManage = "notification.manage" => Rule::Role(OrgRole::Admin),
    // Certificates of a project's domains: readers see them (never a
    // key); uploading and deleting one is managing the project.
    CertificateRead = "certificate.read" => READ,
    CertificateManage = "certificate.manage" => MANAGE,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
async fn can<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: Action,
    resource: Resource,
) -> Result<Option<OrgRole>> {
    let rule = action.rule();
    check_token_scope(actor, resource)?;
    let member = match resource.organization_id() {
        Some(org) => member_role(db, actor.user_id, org).await?,
        None => None,
    };
    decide(db, actor, action, rule, resource, member).await
}

/// Result column of [`Caller::load`] with the caller's membership role.
const MEMBER_ROLE: &str = "ferry_authz_member_role";

/// A model with the caller's membership role (`NULL`: not a member).
struct WithMemberRole<M> {
    row: M,
    member: Option<OrgRole>,
}

impl<M: FromQueryResult> FromQueryResult for WithMemberRole<M> {
    fn from_query_result(res: &QueryResult, pre: &str) -> std::result::Result<Self, DbErr> {
        Ok(Self {
            row: M::from_query_result(res, pre)?,
            member: res.try_get(pre, MEMBER_ROLE)?,
        })
    }
}

/// API tokens never leave their organization (`NotFound` outside it).
fn check_token_scope(actor: &Actor, resource: Resource) -> Result<()> {
    match (actor.credential, resource.organization_id()) {
        (
            Credential::ApiToken {
                organization_id, ..
            },
            Some(org),
        ) if organization_id != org => Err(not_found(resource)),
        _ => Ok(()),
    }
}

/// The caller's role capped by an API token's role.
fn effective(actor: &Actor, member: Option<OrgRole>) -> Option<OrgRole> {
    member.map(|m| match actor.credential {
        Credential::ApiToken { role, .. } => Ord::min(role, m),
        Credential::Session { .. } => m,
    })
}

/// The decision of [`can`] once the membership role is known; queries only
/// the grants, and only when the role alone is not enough.
async fn decide<C: ConnectionTrait>(
    db: &C,
    actor: &Actor,
    action: Action,
    rule: Rule,
    resource: Resource,
    member: Option<OrgRole>,
) -> Result<Option<OrgRole>> {
    let role = effective(actor, member);
    if actor.super_admin {
        return Ok(role);
    }
    let denied = || Err(Error::PermissionDenied(format!("{action}: not permitted")));
    match rule {
        // Outsiders learn nothing about the organization.
        Rule::SuperAdmin if role.is_none() && resource.organization_id().is_some() => {
            Err(not_found(resource))
        }
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

/// `user`'s membership role in `org` (only that column); `None` when not a
/// member.
async fn member_role<C: ConnectionTrait>(db: &C, user: Uuid, org: Uuid) -> Result<Option<OrgRole>> {
    Ok(organization_members::Entity::find()
        .select_only()
        .column(organization_members::Column::Role)
        .filter(organization_members::Column::OrganizationId.eq(org))
        .filter(organization_members::Column::UserId.eq(user))
        .into_tuple::<OrgRole>()
        .all(db) // unique (organization, user), no LIMIT: see `Caller::load`
        .await?
        .pop())
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn action_names_are_unique_and_well_formed() {
        let mut names: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Action::ALL.len());
        for name in names {
            let (resource, verb) = name.split_once('.').unwrap();
            assert!(!resource.is_empty() && !verb.is_empty(), "{name}");
        }
    }

    #[test]
    fn roles_and_levels_are_ordered() {
        assert!(OrgRole::Viewer < OrgRole::Member);
        assert!(OrgRole::Member < OrgRole::Admin);
        assert!(OrgRole::Admin < OrgRole::Owner);
        assert!(level_rank(ResourceAccess::View) < level_rank(ResourceAccess::Deploy));
        assert!(level_rank(ResourceAccess::Deploy) < level_rank(ResourceAccess::Manage));
    }

    fn actor(credential: Credential) -> Actor {
        Actor {
            user_id: Uuid::nil(),
            super_admin: false,
            credential,
            meta: crate::auth::RequestMeta::default(),
        }
    }

    #[test]
    fn api_tokens_cap_the_role_at_theirs() {
        let token = |role| {
            actor(Credential::ApiToken {
                id: Uuid::nil(),
                organization_id: Uuid::nil(),
                role,
            })
        };
        let session = actor(Credential::Session { id: Uuid::nil() });
        assert_eq!(
            effective(&session, Some(OrgRole::Owner)),
            Some(OrgRole::Owner)
        );
        assert_eq!(effective(&session, None), None);
        // The owner's admin token acts as admin; a viewer's admin token as viewer.
        assert_eq!(
            effective(&token(OrgRole::Admin), Some(OrgRole::Owner)),
            Some(OrgRole::Admin)
        );
        assert_eq!(
            effective(&token(OrgRole::Admin), Some(OrgRole::Viewer)),
            Some(OrgRole::Viewer)
        );
        assert_eq!(
            effective(&token(OrgRole::Member), Some(OrgRole::Admin)),
            Some(OrgRole::Member)
        );
        assert_eq!(effective(&token(OrgRole::Admin), None), None);
    }

    /// Every `Rule::Role(min)` admits exactly the roles ranked at or above
    /// `min`: the owner passes every role rule, the viewer only viewer rules.
    #[tokio::test]
    async fn role_rules_follow_the_privilege_order() {
        // Role rules never query (an empty database has no tables).
        let db = ferry_db::connect::connect_url("sqlite::memory:")
            .await
            .unwrap();
        let session = actor(Credential::Session { id: Uuid::nil() });
        for &action in Action::ALL {
            let rule = action.rule();
            let Rule::Role(min) = rule else { continue };
            for role in OrgRole::ALL {
                let got = decide(
                    &db,
                    &session,
                    action,
                    rule,
                    Resource::Organization(Uuid::nil()),
                    Some(role),
                )
                .await;
                assert_eq!(got.is_ok(), role >= min, "{action}: {role:?} vs {min:?}");
                assert_eq!(role >= min, role.rank() >= min.rank());
            }
        }
    }
}
