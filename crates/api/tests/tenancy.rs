//! Tenancy over real TCP gRPC against the api server, on PostgreSQL and
//! SQLite: members and ownership, API tokens, invitations (by link and by
//! e-mail through a local SMTP sink) and per-resource grants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

use base64::Engine as _;
use ferry_api::authz::{Action, Caller, Resource};
use ferry_db::entities::enums::{OrgRole, SmtpTlsMode};
use ferry_db::entities::{
    api_tokens, audit_logs, org_email_configs, org_invitations, organization_members, projects,
    resource_permissions,
};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use tonic::Code;

/// A registered, logged-in user.
struct User {
    id: String,
    email: String,
    token: String,
}

async fn user(c: &mut Clients, username: &str) -> User {
    let registered = register(c, username).await;
    let token = login(c, username).await;
    assert!(!token.is_empty(), "login gave a token");
    User {
        id: registered.id,
        email: format!("{username}@example.com"),
        token,
    }
}

async fn role_of(db: &DatabaseConnection, org: &str, user: &str) -> Option<OrgRole> {
    organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(org.parse::<Uuid>().unwrap()))
        .filter(organization_members::Column::UserId.eq(user.parse::<Uuid>().unwrap()))
        .one(db)
        .await
        .unwrap()
        .map(|m| m.role)
}

async fn owners(db: &DatabaseConnection, org: &str) -> u64 {
    organization_members::Entity::find()
        .filter(organization_members::Column::OrganizationId.eq(org.parse::<Uuid>().unwrap()))
        .filter(organization_members::Column::Role.eq(OrgRole::Owner))
        .count(db)
        .await
        .unwrap()
}

async fn audit_actions(db: &DatabaseConnection, org: &str) -> Vec<String> {
    audit_logs::Entity::find()
        .filter(audit_logs::Column::OrganizationId.eq(org.parse::<Uuid>().unwrap()))
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.action)
        .collect()
}

fn change_role(org: &str, user: &str, role: pb::OrganizationRole) -> pb::ChangeMemberRoleRequest {
    pb::ChangeMemberRoleRequest {
        organization_id: org.into(),
        user_id: user.into(),
        role: role.into(),
    }
}

#[tokio::test]
async fn members_roles_and_exactly_one_owner() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let owner = user(&mut c, "owner").await;
        let admin = user(&mut c, "admin").await;
        let member = user(&mut c, "member").await;
        let outsider = user(&mut c, "outsider").await;
        let org = create_org(&mut c, &owner.token, "Acme").await.id;
        create_org(&mut c, &outsider.token, "Elsewhere").await;
        add_member(&db.conn, &org, &admin.id, OrgRole::Admin).await;
        add_member(&db.conn, &org, &member.id, OrgRole::Member).await;

        // Any member lists; outsiders get NotFound.
        let list = c
            .orgs
            .list_members(authed(
                pb::ListMembersRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                &member.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.members.len(), 3, "{b}");
        let first = &list.members[0];
        assert_eq!(first.user_id, owner.id, "{b}");
        assert_eq!(first.email, owner.email, "{b}");
        assert_eq!(first.role, i32::from(pb::OrganizationRole::Owner), "{b}");
        let got = c
            .orgs
            .list_members(authed(
                pb::ListMembersRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                &outsider.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");

        // Validation names the field.
        let err = c
            .orgs
            .change_member_role(authed(
                change_role(&org, &member.id, pb::OrganizationRole::Owner),
                &owner.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert!(err.message().starts_with("role:"), "{b}: {}", err.message());
        let err = c
            .orgs
            .change_member_role(authed(
                change_role(&org, "nope", pb::OrganizationRole::Viewer),
                &owner.token,
            ))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("userId:"),
            "{b}: {}",
            err.message()
        );

        // Members cannot change roles; admins cannot touch the owner;
        // outsiders do not see the organization.
        let got = c
            .orgs
            .change_member_role(authed(
                change_role(&org, &admin.id, pb::OrganizationRole::Viewer),
                &member.token,
            ))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .orgs
            .change_member_role(authed(
                change_role(&org, &owner.id, pb::OrganizationRole::Viewer),
                &admin.token,
            ))
            .await;
        assert_eq!(code(got), Code::FailedPrecondition, "{b}");
        let got = c
            .orgs
            .change_member_role(authed(
                change_role(&org, &member.id, pb::OrganizationRole::Viewer),
                &outsider.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");

        // An admin promotes a member to admin (their own level), then back.
        let changed = c
            .orgs
            .change_member_role(authed(
                change_role(&org, &member.id, pb::OrganizationRole::Admin),
                &admin.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.role, i32::from(pb::OrganizationRole::Admin), "{b}");
        c.orgs
            .change_member_role(authed(
                change_role(&org, &member.id, pb::OrganizationRole::Member),
                &owner.token,
            ))
            .await
            .unwrap();
        assert_eq!(
            role_of(&db.conn, &org, &member.id).await,
            Some(OrgRole::Member),
            "{b}"
        );

        // The owner can be neither removed nor leave.
        let got = c
            .orgs
            .remove_member(authed(
                pb::RemoveMemberRequest {
                    organization_id: org.clone(),
                    user_id: owner.id.clone(),
                },
                &admin.token,
            ))
            .await;
        assert_eq!(code(got), Code::FailedPrecondition, "{b}");
        let err = c
            .orgs
            .leave_organization(authed(
                pb::LeaveOrganizationRequest {
                    organization_id: org.clone(),
                },
                &owner.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}");
        assert!(
            err.message().contains("transfer ownership first"),
            "{b}: {}",
            err.message()
        );

        // Only the owner transfers, only to a member.
        let transfer = |to: &str| pb::TransferOwnershipRequest {
            organization_id: org.clone(),
            new_owner_user_id: to.into(),
        };
        let got = c
            .orgs
            .transfer_ownership(authed(transfer(&admin.id), &admin.token))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .orgs
            .transfer_ownership(authed(transfer(&outsider.id), &owner.token))
            .await;
        assert_eq!(code(got), Code::FailedPrecondition, "{b}");
        let got = c
            .orgs
            .transfer_ownership(authed(transfer(&owner.id), &owner.token))
            .await;
        assert_eq!(code(got), Code::InvalidArgument, "{b}");
        let got = c
            .orgs
            .transfer_ownership(authed(transfer(&admin.id), &outsider.token))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        assert_eq!(owners(&db.conn, &org).await, 1, "{b}");

        c.orgs
            .transfer_ownership(authed(transfer(&member.id), &owner.token))
            .await
            .unwrap();
        assert_eq!(owners(&db.conn, &org).await, 1, "{b}");
        assert_eq!(
            role_of(&db.conn, &org, &member.id).await,
            Some(OrgRole::Owner),
            "{b}"
        );
        assert_eq!(
            role_of(&db.conn, &org, &owner.id).await,
            Some(OrgRole::Admin),
            "{b}"
        );
        // The old owner is an admin now and cannot transfer again.
        let got = c
            .orgs
            .transfer_ownership(authed(transfer(&owner.id), &owner.token))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");

        // The index refuses a second owner even if the API were bypassed.
        let second = organization_members::Entity::update_many()
            .col_expr(
                organization_members::Column::Role,
                Expr::value(OrgRole::Owner),
            )
            .filter(organization_members::Column::UserId.eq(admin.id.parse::<Uuid>().unwrap()))
            .filter(organization_members::Column::OrganizationId.eq(org.parse::<Uuid>().unwrap()))
            .exec(&db.conn)
            .await;
        assert!(second.is_err(), "{b}: a second owner was stored");

        // The old owner can leave now; the new owner removes the admin.
        c.orgs
            .leave_organization(authed(
                pb::LeaveOrganizationRequest {
                    organization_id: org.clone(),
                },
                &owner.token,
            ))
            .await
            .unwrap();
        assert_eq!(role_of(&db.conn, &org, &owner.id).await, None, "{b}");
        c.orgs
            .remove_member(authed(
                pb::RemoveMemberRequest {
                    organization_id: org.clone(),
                    user_id: admin.id.clone(),
                },
                &member.token,
            ))
            .await
            .unwrap();
        assert_eq!(role_of(&db.conn, &org, &admin.id).await, None, "{b}");
        let got = c
            .orgs
            .get_organization(authed(
                pb::GetOrganizationRequest { id: org.clone() },
                &admin.token,
            ))
            .await;
        assert_eq!(
            code(got),
            Code::NotFound,
            "{b}: removed admin still sees the org"
        );

        let actions = audit_actions(&db.conn, &org).await;
        for action in [
            "member.change_role",
            "organization.transfer_ownership",
            "member.leave",
            "member.remove",
        ] {
            assert!(
                actions.iter().any(|a| a == action),
                "{b}: no {action} in {actions:?}"
            );
        }
        api.stop().await;
    }
}

#[tokio::test]
async fn concurrent_transfers_leave_exactly_one_owner() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let owner = user(&mut c, "owner").await;
        let org = create_org(&mut c, &owner.token, "Acme").await.id;
        let mut heirs = Vec::new();
        for name in ["heir-a", "heir-b", "heir-c"] {
            let heir = user(&mut c, name).await;
            add_member(&db.conn, &org, &heir.id, OrgRole::Admin).await;
            heirs.push(heir.id);
        }
        let calls = heirs.iter().map(|heir| {
            let mut orgs = c.orgs.clone();
            let request = authed(
                pb::TransferOwnershipRequest {
                    organization_id: org.clone(),
                    new_owner_user_id: heir.clone(),
                },
                &owner.token,
            );
            async move { orgs.transfer_ownership(request).await }
        });
        let results = futures_join_all(calls).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "{b}: {results:?}");
        for r in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                matches!(r.code(), Code::PermissionDenied | Code::FailedPrecondition),
                "{b}: {r:?}"
            );
        }
        assert_eq!(owners(&db.conn, &org).await, 1, "{b}");
        assert_eq!(
            role_of(&db.conn, &org, &owner.id).await,
            Some(OrgRole::Admin),
            "{b}"
        );
        api.stop().await;
    }
}

/// Runs the futures concurrently on the runtime, in order of results.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn api_tokens_are_capped_shown_once_and_revocable() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let owner = user(&mut c, "owner").await;
        let member = user(&mut c, "member").await;
        let outsider = user(&mut c, "outsider").await;
        let org = create_org(&mut c, &owner.token, "Acme").await.id;
        add_member(&db.conn, &org, &member.id, OrgRole::Member).await;
        let create = |name: &str, role: pb::OrganizationRole| pb::CreateApiTokenRequest {
            organization_id: org.clone(),
            name: name.into(),
            role: role.into(),
            expires_at: None,
        };

        // A member cannot mint an admin token; outsiders see nothing.
        let got = c
            .tokens
            .create_api_token(authed(
                create("ci", pb::OrganizationRole::Admin),
                &member.token,
            ))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .tokens
            .create_api_token(authed(
                create("ci", pb::OrganizationRole::Viewer),
                &outsider.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let err = c
            .tokens
            .create_api_token(authed(
                create(" ", pb::OrganizationRole::Viewer),
                &member.token,
            ))
            .await
            .unwrap_err();
        assert!(err.message().starts_with("name:"), "{b}: {}", err.message());
        let mut past = create("old", pb::OrganizationRole::Viewer);
        past.expires_at = Some(prost_types::Timestamp {
            seconds: 1_000,
            nanos: 0,
        });
        let err = c
            .tokens
            .create_api_token(authed(past, &member.token))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("expiresAt:"),
            "{b}: {}",
            err.message()
        );

        let created = c
            .tokens
            .create_api_token(authed(
                create("ci", pb::OrganizationRole::Member),
                &member.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let pat = created.token.clone();
        assert!(pat.starts_with("ferry_pat_"), "{b}");
        let row = api_tokens::Entity::find()
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(row.token_hash, pat, "{b}: stored in clear");
        assert_eq!(row.token_hash, ferry_db::token::hash_token(&pat), "{b}");

        // The token reads its org, cannot rename it nor mint tokens.
        c.orgs
            .get_organization(authed(pb::GetOrganizationRequest { id: org.clone() }, &pat))
            .await
            .unwrap();
        let got = c
            .orgs
            .rename_organization(authed(
                pb::RenameOrganizationRequest {
                    id: org.clone(),
                    name: "x".into(),
                },
                &pat,
            ))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .tokens
            .create_api_token(authed(create("more", pb::OrganizationRole::Viewer), &pat))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");

        // Lists carry no value; members see their own, the owner sees all.
        c.tokens
            .create_api_token(authed(
                create("owner-ci", pb::OrganizationRole::Admin),
                &owner.token,
            ))
            .await
            .unwrap();
        let list = |token: &str| {
            authed(
                pb::ListApiTokensRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                token,
            )
        };
        let mine = c
            .tokens
            .list_api_tokens(list(&member.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(mine.api_tokens.len(), 1, "{b}");
        assert_eq!(mine.api_tokens[0].name, "ci", "{b}");
        assert!(
            !format!("{mine:?}").contains(&pat[14..]),
            "{b}: value listed"
        );
        let all = c
            .tokens
            .list_api_tokens(list(&owner.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.api_tokens.len(), 2, "{b}");

        // Another member's token is invisible; revoke ends the token.
        let owner_token_id = all
            .api_tokens
            .iter()
            .find(|t| t.name == "owner-ci")
            .unwrap()
            .id
            .clone();
        let got = c
            .tokens
            .revoke_api_token(authed(
                pb::RevokeApiTokenRequest {
                    organization_id: org.clone(),
                    id: owner_token_id,
                },
                &member.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let revoke = pb::RevokeApiTokenRequest {
            organization_id: org.clone(),
            id: created.api_token.unwrap().id,
        };
        let got = c
            .tokens
            .revoke_api_token(authed(revoke.clone(), &outsider.token))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        c.tokens
            .revoke_api_token(authed(revoke, &member.token))
            .await
            .unwrap();
        let got = c
            .orgs
            .get_organization(authed(pb::GetOrganizationRequest { id: org.clone() }, &pat))
            .await;
        assert_eq!(code(got), Code::Unauthenticated, "{b}");
        let mine = c
            .tokens
            .list_api_tokens(list(&member.token))
            .await
            .unwrap()
            .into_inner();
        assert!(mine.api_tokens[0].revoked_at.is_some(), "{b}");

        let actions = audit_actions(&db.conn, &org).await;
        assert!(actions.iter().any(|a| a == "api_token.create"), "{b}");
        assert!(actions.iter().any(|a| a == "api_token.revoke"), "{b}");
        let details = audit_logs::Entity::find().all(&db.conn).await.unwrap();
        assert!(
            details
                .iter()
                .all(|r| !r.details.to_string().contains(&pat)),
            "{b}: token value in the audit log"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn invitations_by_link() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let owner = user(&mut c, "owner").await;
        let member = user(&mut c, "member").await;
        let invitee = user(&mut c, "invitee").await;
        let other = user(&mut c, "other").await;
        let org = create_org(&mut c, &owner.token, "Acme").await.id;
        add_member(&db.conn, &org, &member.id, OrgRole::Member).await;
        let invite = |email: &str, role: pb::OrganizationRole| pb::CreateInvitationRequest {
            organization_id: org.clone(),
            email: email.into(),
            role: role.into(),
            ttl_hours: 0,
        };

        let err = c
            .invites
            .create_invitation(authed(
                invite("not-an-email", pb::OrganizationRole::Member),
                &owner.token,
            ))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("email:"),
            "{b}: {}",
            err.message()
        );
        let got = c
            .invites
            .create_invitation(authed(
                invite(&invitee.email, pb::OrganizationRole::Member),
                &member.token,
            ))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .invites
            .create_invitation(authed(
                invite(&invitee.email, pb::OrganizationRole::Member),
                &other.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got = c
            .invites
            .create_invitation(authed(
                invite(&member.email, pb::OrganizationRole::Member),
                &owner.token,
            ))
            .await;
        assert_eq!(code(got), Code::AlreadyExists, "{b}");

        let created = c
            .invites
            .create_invitation(authed(
                invite(&invitee.email.to_uppercase(), pb::OrganizationRole::Viewer),
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!created.emailed, "{b}");
        assert!(created.token.starts_with("ferry_inv_"), "{b}");
        assert!(created.accept_url.ends_with(&created.token), "{b}");
        let stored = org_invitations::Entity::find()
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.email, invitee.email, "{b}: email normalised");
        assert_eq!(
            stored.token_hash,
            ferry_db::token::hash_token(&created.token),
            "{b}"
        );
        let got = c
            .invites
            .create_invitation(authed(
                invite(&invitee.email, pb::OrganizationRole::Viewer),
                &owner.token,
            ))
            .await;
        assert_eq!(
            code(got),
            Code::AlreadyExists,
            "{b}: second pending invitation"
        );

        let listed = c
            .invites
            .list_invitations(authed(
                pb::ListInvitationsRequest {
                    organization_id: org.clone(),
                    include_inactive: false,
                    ..Default::default()
                },
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.invitations.len(), 1, "{b}");
        assert!(
            !format!("{listed:?}").contains(&created.token),
            "{b}: token listed"
        );

        let accept = |token: &str| pb::AcceptInvitationRequest {
            token: token.into(),
        };
        // Someone else holding the token cannot use it.
        let got = c
            .invites
            .accept_invitation(authed(accept(&created.token), &other.token))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .invites
            .accept_invitation(authed(accept("ferry_inv_forged"), &invitee.token))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let joined = c
            .invites
            .accept_invitation(authed(accept(&created.token), &invitee.token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(joined.id, org, "{b}");
        assert_eq!(joined.role, i32::from(pb::OrganizationRole::Viewer), "{b}");
        assert_eq!(
            role_of(&db.conn, &org, &invitee.id).await,
            Some(OrgRole::Viewer),
            "{b}"
        );
        let got = c
            .invites
            .accept_invitation(authed(accept(&created.token), &invitee.token))
            .await;
        assert_eq!(code(got), Code::FailedPrecondition, "{b}: reused");

        // Revoked and expired invitations are refused.
        let revoked = c
            .invites
            .create_invitation(authed(
                invite(&other.email, pb::OrganizationRole::Member),
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let got = c
            .invites
            .revoke_invitation(authed(
                pb::RevokeInvitationRequest {
                    organization_id: org.clone(),
                    id: revoked.invitation.clone().unwrap().id,
                },
                &other.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        c.invites
            .revoke_invitation(authed(
                pb::RevokeInvitationRequest {
                    organization_id: org.clone(),
                    id: revoked.invitation.unwrap().id,
                },
                &owner.token,
            ))
            .await
            .unwrap();
        let got = c
            .invites
            .accept_invitation(authed(accept(&revoked.token), &other.token))
            .await;
        assert_eq!(code(got), Code::FailedPrecondition, "{b}: revoked");

        let expiring = c
            .invites
            .create_invitation(authed(
                invite(&other.email, pb::OrganizationRole::Member),
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        org_invitations::Entity::update_many()
            .col_expr(
                org_invitations::Column::ExpiresAt,
                Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
            )
            .filter(
                org_invitations::Column::Id.eq(expiring
                    .invitation
                    .unwrap()
                    .id
                    .parse::<Uuid>()
                    .unwrap()),
            )
            .exec(&db.conn)
            .await
            .unwrap();
        let got = c
            .invites
            .accept_invitation(authed(accept(&expiring.token), &other.token))
            .await;
        assert_eq!(code(got), Code::FailedPrecondition, "{b}: expired");
        assert_eq!(role_of(&db.conn, &org, &other.id).await, None, "{b}");

        let actions = audit_actions(&db.conn, &org).await;
        for action in [
            "invitation.create",
            "invitation.accept",
            "invitation.revoke",
        ] {
            assert!(actions.iter().any(|a| a == action), "{b}: no {action}");
        }
        api.stop().await;
    }
}

/// Undoes quoted-printable soft breaks and `=3D`.
fn unfold(data: &str) -> String {
    data.replace("=\n", "").replace("=3D", "=")
}

#[tokio::test]
async fn invitations_by_email_reach_the_smtp_sink() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let owner = user(&mut c, "owner").await;
        let invitee = user(&mut c, "invitee").await;
        let org = create_org(&mut c, &owner.token, "Acme Mail").await.id;
        let sink = smtp::SmtpSink::start(smtp::SmtpMode::Plain).await;
        let port = sink.port;
        let now = chrono::Utc::now();
        let keyring = ferry_tests::test_keyring();
        let config_id = Uuid::now_v7();
        org_email_configs::ActiveModel {
            id: Set(config_id),
            organization_id: Set(org.parse().unwrap()),
            smtp_host: Set("127.0.0.1".into()),
            smtp_port: Set(i32::from(port)),
            username: Set(Some("mailer".into())),
            password: Set(Some(
                keyring
                    .encrypt("org_email_configs", "password", config_id, "smtp-secret")
                    .unwrap(),
            )),
            from_address: Set("ferry@example.com".into()),
            from_name: Set(Some("Ferry".into())),
            tls_mode: Set(SmtpTlsMode::None),
            enabled: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&db.conn)
        .await
        .unwrap();

        let created = c
            .invites
            .create_invitation(authed(
                pb::CreateInvitationRequest {
                    organization_id: org.clone(),
                    email: invitee.email.clone(),
                    role: pb::OrganizationRole::Member.into(),
                    ttl_hours: 24,
                },
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(created.emailed, "{b}");
        assert!(
            created.token.is_empty() && created.accept_url.is_empty(),
            "{b}"
        );

        let mail = {
            let inbox = sink.received();
            assert_eq!(inbox.len(), 1, "{b}: {inbox:?}");
            inbox[0].clone()
        };
        let auth = base64::engine::general_purpose::STANDARD.encode("\0mailer\0smtp-secret");
        assert!(
            mail.commands
                .iter()
                .any(|l| l == &format!("AUTH PLAIN {auth}")),
            "{b}: decrypted credentials not used: {:?}",
            mail.commands
        );
        assert!(
            mail.commands
                .iter()
                .any(|l| l.contains("RCPT TO") && l.contains(&invitee.email)),
            "{b}: {:?}",
            mail.commands
        );
        let body = unfold(&mail.data);
        let start = body.find("ferry_inv_").expect("token in the e-mail");
        let token: String = body[start..]
            .chars()
            .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '_' || *ch == '-')
            .collect();
        assert_eq!(token.len(), "ferry_inv_".len() + 43, "{b}: {token}");
        assert_eq!(
            org_invitations::Entity::find()
                .one(&db.conn)
                .await
                .unwrap()
                .unwrap()
                .token_hash,
            ferry_db::token::hash_token(&token),
            "{b}"
        );
        let details = audit_logs::Entity::find().all(&db.conn).await.unwrap();
        assert!(
            details
                .iter()
                .all(|r| !r.details.to_string().contains(&token)
                    && !r.details.to_string().contains("smtp-secret")),
            "{b}: secret in the audit log"
        );

        // The e-mailed token works.
        c.invites
            .accept_invitation(authed(
                pb::AcceptInvitationRequest { token },
                &invitee.token,
            ))
            .await
            .unwrap();
        assert_eq!(
            role_of(&db.conn, &org, &invitee.id).await,
            Some(OrgRole::Member),
            "{b}"
        );

        // An unreachable SMTP server: the invitation (sent after commit)
        // stays, the failure is reported and audited, and the token goes
        // back to the inviter instead.
        org_email_configs::Entity::update_many()
            .col_expr(org_email_configs::Column::SmtpPort, Expr::value(1))
            .exec(&db.conn)
            .await
            .unwrap();
        let got = c
            .invites
            .create_invitation(authed(
                pb::CreateInvitationRequest {
                    organization_id: org.clone(),
                    email: "nobody@example.com".into(),
                    role: pb::OrganizationRole::Viewer.into(),
                    ttl_hours: 0,
                },
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!got.emailed, "{b}");
        assert!(
            got.email_error.contains("could not be sent") && !got.email_error.contains(":1"),
            "{b}: {}",
            got.email_error
        );
        assert!(got.token.starts_with("ferry_inv_"), "{b}");
        assert!(got.accept_url.contains(&got.token), "{b}");
        assert_eq!(
            org_invitations::Entity::find()
                .count(&db.conn)
                .await
                .unwrap(),
            2,
            "{b}"
        );
        let failed = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("invitation.email_failed"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(failed.len(), 1, "{b}");
        assert_eq!(
            failed[0].resource_id.map(|id| id.to_string()),
            got.invitation.map(|i| i.id),
            "{b}"
        );
        api.stop().await;
    }
}

/// The caller `token` authenticates as, through the api's own prologue.
async fn caller(db: &DatabaseConnection, token: &str) -> Caller {
    let identity = ferry_api::auth::Identity::new(db.clone(), relaxed());
    Caller::of(&identity, &authed((), token)).await.unwrap()
}

#[tokio::test]
async fn grants_feed_the_policy() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let owner = user(&mut c, "owner").await;
        let deployer = user(&mut c, "deployer").await;
        let bystander = user(&mut c, "bystander").await;
        let outsider = user(&mut c, "outsider").await;
        let org = create_org(&mut c, &owner.token, "Acme").await.id;
        let other_org = create_org(&mut c, &outsider.token, "Other").await.id;
        add_member(&db.conn, &org, &deployer.id, OrgRole::Member).await;
        add_member(&db.conn, &org, &bystander.id, OrgRole::Member).await;
        let now = chrono::Utc::now();
        let project = |org: &str, slug: &str| projects::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org.parse().unwrap()),
            name: Set(slug.into()),
            slug: Set(slug.into()),
            namespace: Set(format!("ferry-{slug}-test")),
            description: Set(None),
            created_by: Set(None),
            metadata: Set(serde_json::json!({})),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let shop = project(&org, "shop").insert(&db.conn).await.unwrap();
        let foreign = project(&other_org, "theirs")
            .insert(&db.conn)
            .await
            .unwrap();
        let web_id = ferry_tests::fixtures::service(&db.conn, shop.id, "web", 80).await;
        let service = Resource::Service {
            organization_id: org.parse().unwrap(),
            project_id: shop.id,
            id: web_id,
        };
        let grant = |user: &str, kind: pb::GrantResourceType, id: Uuid| pb::CreateGrantRequest {
            organization_id: org.clone(),
            user_id: user.into(),
            resource_type: kind.into(),
            resource_id: id.to_string(),
            level: pb::GrantLevel::Deploy.into(),
        };

        // Nobody but admins grants; resources of other orgs are not found.
        let got = c
            .grants
            .create_grant(authed(
                grant(&deployer.id, pb::GrantResourceType::Service, web_id),
                &deployer.token,
            ))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = c
            .grants
            .create_grant(authed(
                grant(&deployer.id, pb::GrantResourceType::Service, web_id),
                &outsider.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got = c
            .grants
            .create_grant(authed(
                grant(&deployer.id, pb::GrantResourceType::Project, foreign.id),
                &owner.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}: foreign project");
        let got = c
            .grants
            .create_grant(authed(
                grant(&outsider.id, pb::GrantResourceType::Service, web_id),
                &owner.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}: non-member");
        let mut bad = grant(&deployer.id, pb::GrantResourceType::Service, web_id);
        bad.level = 0;
        let err = c
            .grants
            .create_grant(authed(bad, &owner.token))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("level:"),
            "{b}: {}",
            err.message()
        );

        // Before the grant, members are denied.
        let denied = caller(&db.conn, &deployer.token)
            .await
            .can(&db.conn, Action::ServiceDeploy, service)
            .await;
        assert!(
            matches!(denied, Err(ferry_api::Error::PermissionDenied(_))),
            "{b}: {denied:?}"
        );

        let created = c
            .grants
            .create_grant(authed(
                grant(&deployer.id, pb::GrantResourceType::Service, web_id),
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(created.resource_id, web_id.to_string(), "{b}");
        assert_eq!(created.granted_by, owner.id, "{b}");
        let got = c
            .grants
            .create_grant(authed(
                grant(&deployer.id, pb::GrantResourceType::Service, web_id),
                &owner.token,
            ))
            .await;
        assert_eq!(code(got), Code::AlreadyExists, "{b}");

        caller(&db.conn, &deployer.token)
            .await
            .can(&db.conn, Action::ServiceDeploy, service)
            .await
            .unwrap();
        let denied = caller(&db.conn, &bystander.token)
            .await
            .can(&db.conn, Action::ServiceDeploy, service)
            .await;
        assert!(
            matches!(denied, Err(ferry_api::Error::PermissionDenied(_))),
            "{b}: {denied:?}"
        );
        // Deploy does not imply manage.
        let denied = caller(&db.conn, &deployer.token)
            .await
            .can(&db.conn, Action::ServiceManage, service)
            .await;
        assert!(
            matches!(denied, Err(ferry_api::Error::PermissionDenied(_))),
            "{b}: {denied:?}"
        );
        let foreign_actor = caller(&db.conn, &outsider.token)
            .await
            .can(&db.conn, Action::ServiceDeploy, service)
            .await;
        assert!(
            matches!(foreign_actor, Err(ferry_api::Error::NotFound(_))),
            "{b}: {foreign_actor:?}"
        );

        let listed = c
            .grants
            .list_grants(authed(
                pb::ListGrantsRequest {
                    organization_id: org.clone(),
                    user_id: deployer.id.clone(),
                    ..Default::default()
                },
                &owner.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.grants.len(), 1, "{b}");
        let got = c
            .grants
            .list_grants(authed(
                pb::ListGrantsRequest {
                    organization_id: org.clone(),
                    user_id: String::new(),
                    ..Default::default()
                },
                &outsider.token,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let delete = pb::DeleteGrantRequest {
            organization_id: org.clone(),
            id: created.id.clone(),
        };
        let got = c
            .grants
            .delete_grant(authed(delete.clone(), &deployer.token))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        c.grants
            .delete_grant(authed(delete, &owner.token))
            .await
            .unwrap();
        let denied = caller(&db.conn, &deployer.token)
            .await
            .can(&db.conn, Action::ServiceDeploy, service)
            .await;
        assert!(
            matches!(denied, Err(ferry_api::Error::PermissionDenied(_))),
            "{b}: {denied:?}"
        );

        // A project grant covers its services; removal drops grants.
        c.grants
            .create_grant(authed(
                grant(&deployer.id, pb::GrantResourceType::Project, shop.id),
                &owner.token,
            ))
            .await
            .unwrap();
        caller(&db.conn, &deployer.token)
            .await
            .can(&db.conn, Action::ServiceDeploy, service)
            .await
            .unwrap();
        c.orgs
            .remove_member(authed(
                pb::RemoveMemberRequest {
                    organization_id: org.clone(),
                    user_id: deployer.id.clone(),
                },
                &owner.token,
            ))
            .await
            .unwrap();
        assert_eq!(
            resource_permissions::Entity::find()
                .count(&db.conn)
                .await
                .unwrap(),
            0,
            "{b}: grants survived removal"
        );

        let actions = audit_actions(&db.conn, &org).await;
        assert!(actions.iter().any(|a| a == "grant.create"), "{b}");
        assert!(actions.iter().any(|a| a == "grant.delete"), "{b}");
        api.stop().await;
    }
}
