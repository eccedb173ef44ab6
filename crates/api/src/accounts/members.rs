//! Organization members (part of `ferry.v1.OrganizationService`): list,
//! change role, remove, leave and transfer ownership.
//!
//! Exactly one owner at all times: the owner's role changes only through
//! [`transfer_ownership`], which demotes and promotes in one transaction;
//! the partial unique index `idx_one_owner_per_org` is the last line of
//! defence behind these checks.

use std::collections::HashMap;

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, InviteRole, OrgRole};
use ferry_db::entities::{api_tokens, organization_members, resource_permissions, users};
use ferry_db::sea_orm::ActiveEnum as _;
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DbBackend,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _, QuerySelect as _,
};
use ferry_proto::ferry::v1 as pb;
use serde_json::json;
use tonic::Request;
use uuid::Uuid;

use crate::audit::{Auditor, Entry};
use crate::auth::Identity;
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, role_to_pb, ts};
use crate::{Error, Result};

/// The organization role of a grantable role.
pub(crate) fn org_role(role: InviteRole) -> OrgRole {
    OrgRole::from(role)
}

/// A grantable role (admin, member, viewer) from the wire, naming `field`.
pub(crate) fn grantable_role(field: &str, value: i32) -> Result<InviteRole> {
    match pb::OrganizationRole::try_from(value) {
        Ok(pb::OrganizationRole::Admin) => Ok(InviteRole::Admin),
        Ok(pb::OrganizationRole::Member) => Ok(InviteRole::Member),
        Ok(pb::OrganizationRole::Viewer) => Ok(InviteRole::Viewer),
        Ok(pb::OrganizationRole::Owner) => Err(Error::InvalidArgument(format!(
            "{field}: the owner role is only given by TransferOwnership"
        ))),
        _ => Err(Error::InvalidArgument(format!(
            "{field}: must be ADMIN, MEMBER or VIEWER"
        ))),
    }
}

/// `PermissionDenied` unless `role` is at most `caller_role`'s role.
pub(crate) fn at_most(caller_role: Option<OrgRole>, role: OrgRole, what: &str) -> Result<()> {
    match caller_role {
        Some(c) if role > c => Err(Error::PermissionDenied(format!(
            "{what}: cannot exceed your own role"
        ))),
        _ => Ok(()),
    }
}

fn member_to_pb(m: &organization_members::Model, user: Option<&users::Model>) -> pb::Member {
    pb::Member {
        user_id: m.user_id.to_string(),
        username: user.map(|u| u.username.clone()).unwrap_or_default(),
        email: user.map(|u| u.email.clone()).unwrap_or_default(),
        role: role_to_pb(Some(m.role)).into(),
        joined_at: Some(ts(m.joined_at)),
    }
}

async fn find_member<C: ConnectionTrait>(
    db: &C,
    org: Uuid,
    user: Uuid,
) -> Result<organization_members::Model> {
    organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(org))
        .filter(organization_members::Column::UserId.eq(user))
        .one(db)
        .await?
        .ok_or_else(|| Error::NotFound("member not found".into()))
}

/// Drops a departing member's grants and revokes their API tokens in `org`.
async fn drop_access<C: ConnectionTrait>(db: &C, org: Uuid, user: Uuid) -> Result<()> {
    resource_permissions::Entity::delete_many()
        .filter(resource_permissions::Column::OrganizationId.eq(org))
        .filter(resource_permissions::Column::UserId.eq(user))
        .exec(db)
        .await?;
    api_tokens::Entity::update_many()
        .col_expr(api_tokens::Column::RevokedAt, Expr::value(Some(Utc::now())))
        .filter(api_tokens::Column::OrganizationId.eq(org))
        .filter(api_tokens::Column::UserId.eq(user))
        .filter(api_tokens::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// An audit entry about `user`'s membership.
fn member_entry(action: &'static str, user: Uuid, details: serde_json::Value) -> Entry {
    Entry::new(action, AuditResourceType::Member, user).details(details)
}

/// ListMembers' order: who joined first, then id.
static MEMBERS: Keyset<organization_members::Column> = Keyset {
    list: "members",
    columns: &[
        asc(organization_members::Column::JoinedAt, Kind::Time),
        asc(organization_members::Column::Id, Kind::Id),
    ],
};

/// `ListMembers`: any member reads.
pub async fn list(
    identity: &Identity,
    request: Request<pb::ListMembersRequest>,
) -> Result<pb::ListMembersResponse> {
    let caller = Caller::of(identity, &request).await?;
    let req = request.get_ref();
    let org = parse_id("organizationId", &req.organization_id)?;
    let page = MEMBERS.page(req.page_size, &req.page_token)?;
    caller
        .can(
            &identity.db,
            Action::MemberRead,
            Resource::Organization(org),
        )
        .await?;
    let query = organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(org));
    let rows = page.apply(query).all(&identity.db).await?;
    let (rows, next_page_token) =
        page.finish(rows, |m| vec![Key::Time(m.joined_at), Key::Id(m.id)]);
    let people: HashMap<Uuid, users::Model> = users::Entity::find()
        .filter(users::Column::Id.is_in(rows.iter().map(|m| m.user_id)))
        .all(&identity.db)
        .await?
        .into_iter()
        .map(|u| (u.id, u))
        .collect();
    Ok(pb::ListMembersResponse {
        members: rows
            .iter()
            .map(|m| member_to_pb(m, people.get(&m.user_id)))
            .collect(),
        next_page_token,
    })
}

/// `ChangeMemberRole`: admin+, never the owner, never above the caller_role.
pub async fn change_role(
    identity: &Identity,
    request: Request<pb::ChangeMemberRoleRequest>,
) -> Result<pb::Member> {
    let caller = Caller::of(identity, &request).await?;
    let req = request.get_ref();
    let org = parse_id("organizationId", &req.organization_id)?;
    let user = parse_id("userId", &req.user_id)?;
    let caller_role = caller
        .can(
            &identity.db,
            Action::MemberUpdate,
            Resource::Organization(org),
        )
        .await?;
    let role = org_role(grantable_role("role", req.role)?);
    at_most(caller_role, role, "role")?;
    let txn = crate::db::begin_write(&identity.db).await?;
    let member = find_member(&txn, org, user).await?;
    if member.role == OrgRole::Owner {
        return Err(Error::FailedPrecondition(
            "the owner's role changes only through TransferOwnership".into(),
        ));
    }
    at_most(caller_role, member.role, "member")?;
    let from = member.role;
    let mut active = member.into_active_model();
    active.role = Set(role);
    let member = active.update(&txn).await?;
    Auditor::org(&caller, org)
        .record(
            &txn,
            member_entry(
                "member.change_role",
                user,
                json!({ "from": from.to_value(), "to": role.to_value() }),
            ),
        )
        .await?;
    txn.commit().await?;
    let user_row = users::Entity::find_by_id(user).one(&identity.db).await?;
    Ok(member_to_pb(&member, user_row.as_ref()))
}

/// `RemoveMember`: admin+, not the owner, not someone above the caller_role.
pub async fn remove(identity: &Identity, request: Request<pb::RemoveMemberRequest>) -> Result<()> {
    let caller = Caller::of(identity, &request).await?;
    let req = request.get_ref();
    let org = parse_id("organizationId", &req.organization_id)?;
    let user = parse_id("userId", &req.user_id)?;
    let caller_role = caller
        .can(
            &identity.db,
            Action::MemberRemove,
            Resource::Organization(org),
        )
        .await?;
    let txn = crate::db::begin_write(&identity.db).await?;
    let member = find_member(&txn, org, user).await?;
    if member.role == OrgRole::Owner {
        return Err(Error::FailedPrecondition(
            "the owner cannot be removed; transfer ownership first".into(),
        ));
    }
    at_most(caller_role, member.role, "member")?;
    organization_members::Entity::delete_by_id(member.id)
        .exec(&txn)
        .await?;
    drop_access(&txn, org, user).await?;
    Auditor::org(&caller, org)
        .record(
            &txn,
            member_entry(
                "member.remove",
                user,
                json!({ "role": member.role.to_value() }),
            ),
        )
        .await?;
    txn.commit().await?;
    identity.credentials.forget_all(); // credentials may have ended
    Ok(())
}

/// `LeaveOrganization`: anyone but the owner, from a login session.
pub async fn leave(
    identity: &Identity,
    request: Request<pb::LeaveOrganizationRequest>,
) -> Result<()> {
    let caller = Caller::of(identity, &request).await?;
    let org = parse_id("organizationId", &request.get_ref().organization_id)?;
    caller
        .can(
            &identity.db,
            Action::OrganizationLeave,
            Resource::Organization(org),
        )
        .await?;
    caller.session_id()?;
    let txn = crate::db::begin_write(&identity.db).await?;
    let member = find_member(&txn, org, caller.user_id).await?;
    if member.role == OrgRole::Owner {
        return Err(Error::FailedPrecondition(
            "the owner cannot leave: transfer ownership first".into(),
        ));
    }
    organization_members::Entity::delete_by_id(member.id)
        .exec(&txn)
        .await?;
    drop_access(&txn, org, caller.user_id).await?;
    Auditor::org(&caller, org)
        .record(
            &txn,
            member_entry(
                "member.leave",
                caller.user_id,
                json!({ "role": member.role.to_value() }),
            ),
        )
        .await?;
    txn.commit().await?;
    identity.credentials.forget_all(); // credentials may have ended
    Ok(())
}

/// `TransferOwnership`: the owner hands over to a member and becomes admin,
/// in one transaction.
pub async fn transfer_ownership(
    identity: &Identity,
    request: Request<pb::TransferOwnershipRequest>,
) -> Result<()> {
    let caller = Caller::of(identity, &request).await?;
    let req = request.get_ref();
    let org = parse_id("organizationId", &req.organization_id)?;
    let new_owner = parse_id("newOwnerUserId", &req.new_owner_user_id)?;
    caller
        .can(
            &identity.db,
            Action::OrganizationTransfer,
            Resource::Organization(org),
        )
        .await?;
    caller.session_id()?;
    if new_owner == caller.user_id {
        return Err(Error::InvalidArgument(
            "newOwnerUserId: you already own this organization".into(),
        ));
    }
    let txn = crate::db::begin_write(&identity.db).await?;
    // Re-read inside the transaction, locked on PostgreSQL (SQLite's
    // `BEGIN IMMEDIATE` already serializes): a concurrent transfer may
    // have won.
    let mut query = organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(org))
        .filter(organization_members::Column::UserId.eq(caller.user_id));
    if txn.get_database_backend() == DbBackend::Postgres {
        query = query.lock_exclusive();
    }
    let old = query
        .one(&txn)
        .await?
        .ok_or_else(|| Error::NotFound("member not found".into()))?;
    if old.role != OrgRole::Owner {
        return Err(Error::PermissionDenied(
            "organization.transfer: only the owner can transfer ownership".into(),
        ));
    }
    let new = find_member(&txn, org, new_owner).await.map_err(|_| {
        Error::FailedPrecondition("newOwnerUserId: the new owner must be a member already".into())
    })?;
    let previous_role = new.role;
    // Demote first so the one-owner index never sees two owners.
    let mut demoted = old.into_active_model();
    demoted.role = Set(OrgRole::Admin);
    demoted.update(&txn).await?;
    let mut promoted = new.into_active_model();
    promoted.role = Set(OrgRole::Owner);
    if let Err(e) = promoted.update(&txn).await {
        return Err(if crate::db::is_unique_violation(&e) {
            Error::FailedPrecondition(
                "the organization already has an owner (a concurrent transfer won); retry".into(),
            )
        } else {
            e.into()
        });
    }
    Auditor::org(&caller, org)
        .record(
            &txn,
            member_entry(
                "organization.transfer_ownership",
                new_owner,
                json!({
                    "from": caller.user_id.to_string(),
                    "to": new_owner.to_string(),
                    "previousRole": previous_role.to_value(),
                }),
            ),
        )
        .await?;
    txn.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_not_grantable_and_ranks_are_ordered() {
        assert!(grantable_role("role", pb::OrganizationRole::Owner.into()).is_err());
        assert!(grantable_role("role", 0).is_err());
        assert!(grantable_role("role", 99).is_err());
        assert_eq!(
            grantable_role("role", pb::OrganizationRole::Viewer.into()).ok(),
            Some(InviteRole::Viewer)
        );
        assert!(OrgRole::Viewer < OrgRole::Member);
        assert!(OrgRole::Admin < OrgRole::Owner);
        assert!(at_most(Some(OrgRole::Admin), OrgRole::Owner, "r").is_err());
        assert!(at_most(Some(OrgRole::Admin), OrgRole::Admin, "r").is_ok());
        assert!(at_most(Some(OrgRole::Owner), OrgRole::Admin, "r").is_ok());
        assert!(at_most(Some(OrgRole::Viewer), OrgRole::Member, "r").is_err());
    }
}
