//! `ferry.v1.ApiTokenService`: organization-scoped API tokens.
//!
//! A token is `ferry_pat_` + 32 random bytes (the format
//! [`crate::auth::Identity::authenticate`] accepts); only its SHA-256 is
//! stored and the value is returned once. Its role never exceeds the
//! creator's, and authentication caps it again by the creator's current
//! membership.

use chrono::Utc;
use ferry_db::entities::api_tokens;
use ferry_db::entities::enums::{AuditResourceType, OrgRole};
use ferry_db::sea_orm::ActiveEnum as _;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::api_token_service_server::ApiTokenService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::members::{at_most, grantable_role, org_role};
use crate::audit::{Auditor, Entry};
use crate::auth::{API_TOKEN_PREFIX, Identity};
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{from_ts, parse_id, role_to_pb, ts};
use crate::{Error, Result};

/// Characters of the value kept to recognise a token in lists.
const SHOWN_PREFIX_CHARS: usize = 14;

/// The `ApiTokenService` implementation.
#[derive(Debug, Clone)]
pub struct ApiTokenApi {
    identity: Identity,
}

impl ApiTokenApi {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

/// ListApiTokens' order: oldest first, then id.
static API_TOKENS: Keyset<api_tokens::Column> = Keyset {
    list: "api-tokens",
    columns: &[
        asc(api_tokens::Column::CreatedAt, Kind::Time),
        asc(api_tokens::Column::Id, Kind::Id),
    ],
};

fn token_to_pb(t: &api_tokens::Model) -> pb::ApiToken {
    pb::ApiToken {
        id: t.id.to_string(),
        organization_id: t.organization_id.to_string(),
        user_id: t.user_id.to_string(),
        name: t.name.clone(),
        prefix: t.token_prefix.clone(),
        role: role_to_pb(Some(org_role(t.role))).into(),
        created_at: Some(ts(t.created_at)),
        expires_at: t.expires_at.map(ts),
        last_used_at: t.last_used_at.map(ts),
        revoked_at: t.revoked_at.map(ts),
    }
}

fn is_admin(role: Option<OrgRole>) -> bool {
    role.is_some_and(|r| r >= OrgRole::Admin)
}

impl ApiTokenApi {
    async fn create(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<pb::CreateApiTokenResponse> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.identity.db;
        let caller_role = caller
            .can(db, Action::ApiTokenCreate, Resource::Organization(org))
            .await?;
        // Tokens do not mint tokens.
        caller.session_id()?;
        let name = super::organization::validate_name(&req.name)?;
        let role = grantable_role("role", req.role)?;
        at_most(caller_role, org_role(role), "role")?;
        let now = Utc::now();
        let expires_at = match &req.expires_at {
            None => None,
            Some(t) => match from_ts(t) {
                Some(t) if t > now => Some(t),
                _ => {
                    return Err(Error::InvalidArgument(
                        "expiresAt: must be a time in the future".into(),
                    ));
                }
            },
        };
        let token = ferry_db::token::generate_token(API_TOKEN_PREFIX);
        let txn = crate::db::begin_write(db).await?;
        let row = api_tokens::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org),
            user_id: Set(caller.user_id),
            name: Set(name),
            token_hash: Set(ferry_db::token::hash_token(&token)),
            token_prefix: Set(token.chars().take(SHOWN_PREFIX_CHARS).collect()),
            role: Set(role),
            expires_at: Set(expires_at),
            last_used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new("api_token.create", AuditResourceType::ApiToken, row.id).details(
                    json!({
                        "name": row.name,
                        "role": role.to_value(),
                        "expiresAt": expires_at.map(|t| t.to_rfc3339()),
                    }),
                ),
            )
            .await?;
        txn.commit().await?;
        Ok(pb::CreateApiTokenResponse {
            api_token: Some(token_to_pb(&row)),
            token,
        })
    }

    async fn list(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<pb::ListApiTokensResponse> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = API_TOKENS.page(req.page_size, &req.page_token)?;
        let db = &self.identity.db;
        let caller_role = caller
            .can(db, Action::ApiTokenRead, Resource::Organization(org))
            .await?;
        let mut query =
            api_tokens::Entity::find().filter(api_tokens::Column::OrganizationId.eq(org));
        if !is_admin(caller_role) {
            query = query.filter(api_tokens::Column::UserId.eq(caller.user_id));
        }
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |t| vec![Key::Time(t.created_at), Key::Id(t.id)]);
        Ok(pb::ListApiTokensResponse {
            api_tokens: rows.iter().map(token_to_pb).collect(),
            next_page_token,
        })
    }

    async fn revoke(&self, request: Request<pb::RevokeApiTokenRequest>) -> Result<()> {
        let caller = Caller::of(&self.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let id = parse_id("id", &req.id)?;
        let db = &self.identity.db;
        let caller_role = caller
            .can(db, Action::ApiTokenRevoke, Resource::Organization(org))
            .await?;
        let txn = crate::db::begin_write(db).await?;
        let row = api_tokens::Entity::find_by_id(id)
            .filter(api_tokens::Column::OrganizationId.eq(org))
            .one(&txn)
            .await?
            // Other members' tokens are invisible to non-admins.
            .filter(|t| t.user_id == caller.user_id || is_admin(caller_role))
            .ok_or_else(|| Error::NotFound("API token not found".into()))?;
        if row.revoked_at.is_some() {
            return Ok(());
        }
        let mut active = row.into_active_model();
        active.revoked_at = Set(Some(Utc::now()));
        let row = active.update(&txn).await?;
        Auditor::org(&caller, org)
            .record(
                &txn,
                Entry::new("api_token.revoke", AuditResourceType::ApiToken, row.id)
                    .details(json!({ "name": row.name, "owner": row.user_id.to_string() })),
            )
            .await?;
        txn.commit().await?;
        self.identity.credentials.forget_all(); // credentials may have ended
        Ok(())
    }
}

#[tonic::async_trait]
impl ApiTokenService for ApiTokenApi {
    async fn create_api_token(
        &self,
        request: Request<pb::CreateApiTokenRequest>,
    ) -> Result<Response<pb::CreateApiTokenResponse>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn list_api_tokens(
        &self,
        request: Request<pb::ListApiTokensRequest>,
    ) -> Result<Response<pb::ListApiTokensResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn revoke_api_token(
        &self,
        request: Request<pb::RevokeApiTokenRequest>,
    ) -> Result<Response<pb::RevokeApiTokenResponse>, Status> {
        self.revoke(request).await?;
        Ok(Response::new(pb::RevokeApiTokenResponse {}))
    }
}
