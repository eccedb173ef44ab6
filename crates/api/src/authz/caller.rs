//! THE request prologue. A handler's first step is [`Caller::of`]
//! (authentication); the caller then reaches a resource only through one
//! of its loaders, each of which loads the row scoped to the caller and
//! decides [`Action`] on it in the same step:
//!
//! ```text
//! let caller = Caller::of(&identity, &request).await?;      // authenticate
//! let id = parse_id("id", &request.get_ref().id)?;
//! let (scope, service, project) = caller.service(db, Action::ServiceRead, id).await?;
//! ```
//!
//! The policy functions ([`super::can`], [`Caller::load`]) are
//! private to `authz`: a handler cannot decide anything without a
//! `Caller`, and cannot get one without authenticating. Cost: a cached
//! credential costs no query; each loader is one joined query (row +
//! membership), plus the grants only when the role alone falls short.

use ferry_db::entities::enums::OrgRole;
use ferry_db::entities::{jobs, organization_members, projects, services, stacks};
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _, IntoCondition as _};
use ferry_db::sea_orm::{
    ConnectionTrait, EntityTrait, FromQueryResult, JoinType, QuerySelect as _, RelationDef, Select,
};
use tonic::Request;
use uuid::Uuid;

use super::{Action, MEMBER_ROLE, Resource, WithMemberRole, can, check_token_scope, decide};
use crate::audit::{Auditor, Entry};
use crate::auth::{Actor, Identity};
use crate::{Error, Result};

/// An authenticated caller: the only handle that can authorise anything.
#[derive(Debug, Clone)]
pub struct Caller(Actor);

impl std::ops::Deref for Caller {
    type Target = Actor;
    fn deref(&self) -> &Actor {
        &self.0
    }
}

/// An authorised caller acting inside one organization: what mutations
/// audit as. Only a [`Caller`] loader makes one, after deciding.
#[derive(Debug, Clone)]
pub struct Scope {
    actor: Caller,
    organization_id: Uuid,
}

impl Scope {
    /// Who acts.
    pub fn actor(&self) -> &Caller {
        &self.actor
    }

    /// The organization the decision was made in.
    pub fn organization_id(&self) -> Uuid {
        self.organization_id
    }

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
    pub async fn remove<E: EntityTrait>(
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

impl Caller {
    /// Authenticates `request` (see [`Identity::authenticate`]).
    pub async fn of<T>(identity: &Identity, request: &Request<T>) -> Result<Self> {
        Ok(Self(identity.authenticate(request).await?))
    }

    /// A caller for an actor a unit test made up (no request to
    /// authenticate).
    #[cfg(test)]
    pub(crate) fn authenticated(actor: Actor) -> Self {
        Self(actor)
    }

    /// Whether the caller may perform `action` on `resource`, whose
    /// organization the caller already knows (an id from a scoped row, or
    /// an organization id from the request). Returns the effective role.
    pub async fn can<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        resource: Resource,
    ) -> Result<Option<OrgRole>> {
        can(db, &self.0, action, resource).await
    }

    /// `action` on the organization `id`, as a [`Scope`] with the role.
    pub async fn organization<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, Option<OrgRole>)> {
        let role = self.can(db, action, Resource::Organization(id)).await?;
        Ok((self.scope(id), role))
    }

    /// A row of `select` (which must match at most one row: a primary or
    /// unique key lookup) and the caller's right to perform `action` on it,
    /// in ONE query: the row is joined with the caller's
    /// `organization_members` row through `organization_column` (the row's
    /// organization id). `resource` names the row for the policy. A missing
    /// row is `NotFound(missing)`; otherwise the outcome is [`can`]'s for
    /// `resource(&row)` (so callers outside the organization get `NotFound`
    /// too). `Ok` carries the row and the caller's effective role.
    pub async fn load<E, C>(
        &self,
        db: &C,
        action: Action,
        select: Select<E>,
        organization_column: E::Column,
        resource: impl FnOnce(&E::Model) -> Resource,
        missing: &str,
    ) -> Result<(E::Model, Option<OrgRole>)>
    where
        E: EntityTrait,
        E::Model: FromQueryResult + Send + Sync,
        C: ConnectionTrait,
    {
        let rule = action.rule();
        let user = self.0.user_id;
        let membership: RelationDef = E::belongs_to(organization_members::Entity)
            .from(organization_column)
            .to(organization_members::Column::OrganizationId)
            .on_condition(move |_, members| {
                Expr::col((members, organization_members::Column::UserId))
                    .eq(user)
                    .into_condition()
            })
            .into();
        // `.all()`, not `.one()`: `.one()` adds a bound `LIMIT ?`, and SQLite
        // (3.4x) plans with a bound LIMIT's value, so it re-prepares such a
        // statement on every execution. `select` matches at most one row and
        // the join adds none (one membership per organization and user).
        let found = select
            .join(JoinType::LeftJoin, membership)
            .column_as(organization_members::Column::Role, MEMBER_ROLE)
            .into_model::<WithMemberRole<E::Model>>()
            .all(db)
            .await?
            .pop()
            .ok_or_else(|| Error::NotFound(missing.to_owned()))?;
        let resource = resource(&found.row);
        check_token_scope(&self.0, resource)?;
        let role = decide(db, &self.0, action, rule, resource, found.member).await?;
        Ok((found.row, role))
    }

    /// A row that belongs straight to an organization (an integration),
    /// authorised for `action` on that organization, with the scope to
    /// audit as.
    pub async fn org_row<E, C>(
        &self,
        db: &C,
        action: Action,
        select: Select<E>,
        organization_column: E::Column,
        organization_of: impl Fn(&E::Model) -> Uuid,
        missing: &str,
    ) -> Result<(Scope, E::Model)>
    where
        E: EntityTrait,
        E::Model: FromQueryResult + Send + Sync,
        C: ConnectionTrait,
    {
        let (row, _) = self
            .load(
                db,
                action,
                select,
                organization_column,
                |r| Resource::Organization(organization_of(r)),
                missing,
            )
            .await?;
        Ok((self.scope(organization_of(&row)), row))
    }

    /// A project the caller may perform `action` on.
    pub async fn project<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, projects::Model)> {
        let (project, _) = self
            .load(
                db,
                action,
                projects::Entity::find_by_id(id),
                projects::Column::OrganizationId,
                |p| Resource::Project {
                    organization_id: p.organization_id,
                    id: p.id,
                },
                "project not found",
            )
            .await?;
        Ok((self.scope(project.organization_id), project))
    }

    /// The project `project_id` of a child resource, authorised for
    /// `action` on `resource(organization, project)`; `what` names the
    /// child in NotFound.
    pub async fn child<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        project_id: Option<Uuid>,
        what: &str,
        resource: impl FnOnce(Uuid, Uuid) -> Resource,
    ) -> Result<(Scope, projects::Model)> {
        let missing = format!("{what} not found");
        let project_id = project_id.ok_or_else(|| Error::NotFound(missing.clone()))?;
        let (project, _) = self
            .load(
                db,
                action,
                projects::Entity::find_by_id(project_id),
                projects::Column::OrganizationId,
                |p| resource(p.organization_id, p.id),
                &missing,
            )
            .await?;
        Ok((self.scope(project.organization_id), project))
    }

    /// A service the caller may perform `action` on, with its project.
    pub async fn service<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, services::Model, projects::Model)> {
        let service = services::Entity::find_by_id(id).one(db).await?;
        let (scope, project) = self
            .child(
                db,
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
    pub async fn stack<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, stacks::Model, projects::Model)> {
        let stack = stacks::Entity::find_by_id(id).one(db).await?;
        let (scope, project) = self
            .child(
                db,
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

    /// A scheduled job the caller may perform `action` on, with its
    /// project.
    pub async fn job<C: ConnectionTrait>(
        &self,
        db: &C,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, jobs::Model, projects::Model)> {
        let job = jobs::Entity::find_by_id(id).one(db).await?;
        let (scope, project) = self
            .child(
                db,
                action,
                job.as_ref().map(|j| j.project_id),
                "job",
                |organization_id, project_id| Resource::Job {
                    organization_id,
                    project_id,
                    id,
                },
            )
            .await?;
        let job = job.ok_or_else(|| Error::NotFound("job not found".into()))?;
        Ok((scope, job, project))
    }

    /// This caller acting in `organization_id` (after a loader decided).
    fn scope(&self, organization_id: Uuid) -> Scope {
        Scope {
            actor: self.clone(),
            organization_id,
        }
    }
}
