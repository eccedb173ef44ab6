//! `ferry.v1.InvitationService`: invite by e-mail address, accept by token.
//!
//! The token (`ferry_inv_…`) is stored only as its SHA-256. With enabled
//! SMTP settings for the organization the token travels by e-mail only;
//! otherwise it goes back to the inviter once, with an accept link.
//!
//! The e-mail is sent after the invitation commits, never inside the write
//! transaction: an SMTP server can take up to its timeout per command, and
//! on SQLite a write transaction holds the whole database (on PostgreSQL,
//! the organization's audit chain). A failed send keeps the invitation: it
//! is logged, audited (`invitation.email_failed`), and the token and link
//! go back to the inviter with `email_error` set, as without SMTP.

use std::sync::Arc;

use chrono::{Duration, Utc};
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::{AuditResourceType, OrgRole};
use ferry_db::entities::{org_invitations, organization_members, organizations, users};
use ferry_db::sea_orm::ActiveEnum as _;
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::invitation_service_server::InvitationService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::auth::validate_email;
use super::members::{at_most, grantable_role, org_role};
use crate::audit::{Auditor, Entry};
use crate::auth::Identity;
use crate::authz::{Action, Caller, Resource};
use crate::db::is_unique_violation;
use crate::mail::{self, Mail};
use crate::paging::{Key, Keyset, Kind, desc};
use crate::wire::{parse_id, role_to_pb, ts};
use crate::{Error, Result};

/// Prefix of invitation tokens.
pub const INVITATION_TOKEN_PREFIX: &str = "ferry_inv_";
/// Lifetime when the request gives none.
pub const DEFAULT_TTL_HOURS: u32 = 72;
/// Longest lifetime (30 days).
pub const MAX_TTL_HOURS: u32 = 720;

/// The `InvitationService` implementation.
#[derive(Clone)]
pub struct InvitationApi {
    identity: Identity,
    keyring: Arc<Keyring>,
    public_url: String,
    /// Extra CAs for the organization's SMTP relay (`--smtp-ca-file`).
    smtp_trust: ferry_notify::smtp::SmtpTrust,
}

impl std::fmt::Debug for InvitationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvitationApi")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl InvitationApi {
    /// `public_url` is the web address accept links start with.
    pub fn new(identity: Identity, keyring: Arc<Keyring>, public_url: &str) -> Self {
        Self {
            identity,
            keyring,
            public_url: public_url.trim_end_matches('/').to_owned(),
            smtp_trust: ferry_notify::smtp::SmtpTrust::default(),
        }
    }

    /// Trusts `trust`'s extra CAs for SMTP relays too.
    pub fn with_smtp_trust(mut self, trust: ferry_notify::smtp::SmtpTrust) -> Self {
        self.smtp_trust = trust;
        self
    }

    fn accept_url(&self, token: &str) -> String {
        format!("{}/invitations/accept?token={token}", self.public_url)
    }
}

/// ListInvitations' order: newest first, then id.
static INVITATIONS: Keyset<org_invitations::Column> = Keyset {
    list: "invitations",
    columns: &[
        desc(org_invitations::Column::CreatedAt, Kind::Time),
        desc(org_invitations::Column::Id, Kind::Id),
    ],
};

fn invitation_to_pb(i: &org_invitations::Model) -> pb::Invitation {
    pb::Invitation {
        id: i.id.to_string(),
        organization_id: i.organization_id.to_string(),
        email: i.email.clone(),
        role: role_to_pb(Some(org_role(i.role))).into(),
        expires_at: Some(ts(i.expires_at)),
        created_at: Some(ts(i.created_at)),
        accepted_at: i.accepted_at.map(ts),
        revoked_at: i.revoked_at.map(ts),
    }
}

impl InvitationApi {
    async fn create(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<pb::CreateInvitationResponse> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.identity.db;
        let caller_role = caller
            .can(db, Action::InvitationCreate, Resource::Organization(org))
            .await?;
        let email = validate_email(&req.email)?;
        let role = grantable_role("role", req.role)?;
        at_most(caller_role, org_role(role), "role")?;
        let ttl = match req.ttl_hours {
            0 => DEFAULT_TTL_HOURS,
            h if h <= MAX_TTL_HOURS => h,
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "ttlHours: must be 1 to {MAX_TTL_HOURS} (0 for {DEFAULT_TTL_HOURS})"
                )));
            }
        };
        let invitee = users::Entity::find()
            .filter(users::Column::Email.eq(email.as_str()))
            .one(db)
            .await?;
        let already_member = match invitee {
            Some(u) => organization_members::Entity::find()
                .filter(organization_members::Column::OrganizationId.eq(org))
                .filter(organization_members::Column::UserId.eq(u.id))
                .one(db)
                .await?
                .is_some(),
            None => false,
        };
        if already_member {
            return Err(Error::AlreadyExists(
                "a user with this email is already a member".into(),
            ));
        }
        let org_row = organizations::Entity::find_by_id(org)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("organization not found".into()))?;
        // Read (and decrypted) before the write transaction: it stays short.
        let smtp = mail::org_settings(db, &self.keyring, org).await?;
        if smtp.is_some() {
            // Refused now rather than stored and then undeliverable.
            mail::check_recipient(&email)?;
        }
        let token = ferry_db::token::generate_token(INVITATION_TOKEN_PREFIX);
        let now = Utc::now();
        let expires_at = now + Duration::hours(i64::from(ttl));

        let txn = crate::db::begin_write(db).await?;
        // An expired pending invitation must not block a fresh one.
        org_invitations::Entity::update_many()
            .col_expr(org_invitations::Column::RevokedAt, Expr::value(Some(now)))
            .filter(org_invitations::Column::OrganizationId.eq(org))
            .filter(org_invitations::Column::Email.eq(email.as_str()))
            .filter(org_invitations::Column::AcceptedAt.is_null())
            .filter(org_invitations::Column::RevokedAt.is_null())
            .filter(org_invitations::Column::ExpiresAt.lte(now))
            .exec(&txn)
            .await?;
        let inserted = org_invitations::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            email: Set(email.clone()),
            role: Set(role),
            token_hash: Set(ferry_db::token::hash_token(&token)),
            invited_by: Set(Some(caller.user_id)),
            expires_at: Set(expires_at),
            accepted_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(now),
        }
        .insert(&txn)
        .await;
        let invitation = match inserted {
            Ok(i) => i,
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::AlreadyExists(
                    "this email already has a pending invitation; revoke it first".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        let emailed = smtp.is_some();
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new(
                    "invitation.create",
                    AuditResourceType::Invitation,
                    invitation.id,
                )
                .details(json!({
                    "email": email,
                    "role": role.to_value(),
                    "expiresAt": expires_at.to_rfc3339(),
                    "emailed": emailed,
                })),
            )
            .await?;
        crate::notifications::produce::member_invited(
            &txn,
            org,
            invitation.id,
            &email,
            org_role(invitation.role),
        )
        .await?;
        txn.commit().await?;
        let url = self.accept_url(&token);
        let Some(settings) = smtp else {
            return Ok(pb::CreateInvitationResponse {
                invitation: Some(invitation_to_pb(&invitation)),
                emailed: false,
                token,
                accept_url: url,
                email_error: String::new(),
            });
        };
        let body = format!(
            "You have been invited to join the organization \"{}\" on Ferry as {}.\n\n\
             Accept the invitation: {url}\n\n\
             Or use this invitation token: {token}\n\n\
             It expires at {} UTC. If you did not expect it, ignore this e-mail.\n",
            org_row.name,
            role.to_value(),
            expires_at.format("%Y-%m-%d %H:%M"),
        );
        let sent = mail::send(
            &settings,
            &self.smtp_trust,
            Mail {
                to: email.clone(),
                subject: format!("Invitation to {} on Ferry", org_row.name),
                body,
            },
        )
        .await;
        match sent {
            Ok(()) => Ok(pb::CreateInvitationResponse {
                invitation: Some(invitation_to_pb(&invitation)),
                emailed: true,
                token: String::new(),
                accept_url: String::new(),
                email_error: String::new(),
            }),
            Err(err) => {
                // mail::send logged the details; the caller_role gets the safe
                // message and the token, so the invitation is not lost.
                let email_error = err.to_string();
                self.record_email_failure(&caller, org, invitation.id).await;
                Ok(pb::CreateInvitationResponse {
                    invitation: Some(invitation_to_pb(&invitation)),
                    emailed: false,
                    token,
                    accept_url: url,
                    email_error,
                })
            }
        }
    }

    /// Audits a failed invitation e-mail. Best effort: the invitation is
    /// committed and the caller_role told either way.
    async fn record_email_failure(&self, caller: &Caller, org: Uuid, invitation: Uuid) {
        let recorded = async {
            let txn = crate::db::begin_write(&self.identity.db).await?;
            Auditor::org(caller, org)
                .record(
                    &txn,
                    Entry::new(
                        "invitation.email_failed",
                        AuditResourceType::Invitation,
                        invitation,
                    ),
                )
                .await?;
            txn.commit().await?;
            Ok::<(), Error>(())
        }
        .await;
        if let Err(err) = recorded {
            tracing::error!(error = %err, %invitation, "auditing a failed invitation e-mail failed");
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<pb::ListInvitationsResponse> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = INVITATIONS.page(req.page_size, &req.page_token)?;
        let db = &self.identity.db;
        caller
            .can(db, Action::InvitationRead, Resource::Organization(org))
            .await?;
        let mut query =
            org_invitations::Entity::find().filter(org_invitations::Column::OrganizationId.eq(org));
        if !req.include_inactive {
            query = query
                .filter(org_invitations::Column::AcceptedAt.is_null())
                .filter(org_invitations::Column::RevokedAt.is_null())
                .filter(org_invitations::Column::ExpiresAt.gt(Utc::now()));
        }
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |i| vec![Key::Time(i.created_at), Key::Id(i.id)]);
        Ok(pb::ListInvitationsResponse {
            invitations: rows.iter().map(invitation_to_pb).collect(),
            next_page_token,
        })
    }

    async fn revoke(&self, request: Request<pb::RevokeInvitationRequest>) -> Result<()> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let id = parse_id("id", &req.id)?;
        let db = &self.identity.db;
        caller
            .can(db, Action::InvitationRevoke, Resource::Organization(org))
            .await?;
        let txn = crate::db::begin_write(db).await?;
        let invitation = org_invitations::Entity::find_by_id(id)
            .filter(org_invitations::Column::OrganizationId.eq(org))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("invitation not found".into()))?;
        if invitation.accepted_at.is_some() {
            return Err(Error::FailedPrecondition(
                "the invitation was already accepted; remove the member instead".into(),
            ));
        }
        if invitation.revoked_at.is_some() {
            return Ok(());
        }
        let email = invitation.email.clone();
        let mut active = invitation.into_active_model();
        active.revoked_at = Set(Some(Utc::now()));
        active.update(&txn).await?;
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new("invitation.revoke", AuditResourceType::Invitation, id)
                    .details(json!({ "email": email })),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn accept(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<pb::Organization> {
        let caller = Caller::of(&self.identity, &request).await?;
        let db = &self.identity.db;
        caller
            .can(db, Action::InvitationAccept, Resource::Platform)
            .await?;
        let token = request.get_ref().token.trim();
        if !token.starts_with(INVITATION_TOKEN_PREFIX) {
            return Err(Error::InvalidArgument(
                "token: must be an invitation token (ferry_inv_…)".into(),
            ));
        }
        let hash = ferry_db::token::hash_token(token);
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let invitation = org_invitations::Entity::find()
            .filter(org_invitations::Column::TokenHash.eq(hash))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("invitation not found".into()))?;
        let user = users::Entity::find_by_id(caller.user_id)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::Unauthenticated(crate::auth::INVALID_TOKEN.into()))?;
        if !user.email.eq_ignore_ascii_case(&invitation.email) {
            return Err(Error::PermissionDenied(
                "this invitation was sent to another email address".into(),
            ));
        }
        if invitation.accepted_at.is_some() {
            return Err(Error::FailedPrecondition(
                "the invitation was already used".into(),
            ));
        }
        if invitation.revoked_at.is_some() {
            return Err(Error::FailedPrecondition(
                "the invitation was revoked".into(),
            ));
        }
        if invitation.expires_at <= now {
            return Err(Error::FailedPrecondition("the invitation expired".into()));
        }
        let org = invitation.organization_id;
        let exists = organization_members::Entity::find()
            .filter(organization_members::Column::OrganizationId.eq(org))
            .filter(organization_members::Column::UserId.eq(caller.user_id))
            .one(&txn)
            .await?
            .is_some();
        if exists {
            return Err(Error::AlreadyExists(
                "you are already a member of this organization".into(),
            ));
        }
        let role: OrgRole = org_role(invitation.role);
        organization_members::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            user_id: Set(caller.user_id),
            role: Set(role),
            invited_by: Set(invitation.invited_by),
            joined_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let invitation_id = invitation.id;
        let mut active = invitation.into_active_model();
        active.accepted_at = Set(Some(now));
        active.update(&txn).await?;
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new(
                    "invitation.accept",
                    AuditResourceType::Invitation,
                    invitation_id,
                )
                .details(json!({ "role": role.to_value() })),
            )
            .await?;
        crate::notifications::produce::member_joined(&txn, org, caller.user_id, role).await?;
        let org_row = organizations::Entity::find_by_id(org)
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("organization not found".into()))?;
        txn.commit().await?;
        Ok(pb::Organization {
            id: org_row.id.to_string(),
            name: org_row.name,
            slug: org_row.slug,
            role: role_to_pb(Some(role)).into(),
            created_at: Some(ts(org_row.created_at)),
            updated_at: Some(ts(org_row.updated_at)),
        })
    }
}

#[tonic::async_trait]
impl InvitationService for InvitationApi {
    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        self.revoke(request).await?;
        Ok(Response::new(pb::RevokeInvitationResponse {}))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::Organization>, Status> {
        Ok(Response::new(self.accept(request).await?))
    }
}
