//! `ferry.v1.AuditService`: reading and verifying the audit log.

use ferry_db::entities::audit_logs;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::sea_orm::{ActiveEnum as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use ferry_proto::ferry::v1 as pb;
use pb::audit_service_server::AuditService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::{chain_condition, verify_chain};
use crate::auth::Identity;
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, desc};
use crate::wire::{from_ts, parse_id, ts};
use crate::{Error, Result};

/// ListAuditLog's order: newest first. Ids are UUIDv7 (time-ordered).
static AUDIT_LOG: Keyset<audit_logs::Column> = Keyset {
    list: "audit-log",
    columns: &[desc(audit_logs::Column::Id, Kind::Id)],
};

/// The `AuditService` implementation.
#[derive(Debug, Clone)]
pub struct AuditApi {
    identity: Identity,
}

impl AuditApi {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }

    /// The chain a request names, after the policy check.
    async fn authorize<T>(
        &self,
        request: &Request<T>,
        organization_id: &str,
        action: Action,
    ) -> Result<Option<Uuid>> {
        let caller = Caller::of(&self.identity, request).await?;
        let db = &self.identity.db;
        if organization_id.trim().is_empty() {
            caller
                .can(db, Action::AuditReadGlobal, Resource::Platform)
                .await?;
            Ok(None)
        } else {
            let org = parse_id("organizationId", organization_id)?;
            caller.can(db, action, Resource::Organization(org)).await?;
            Ok(Some(org))
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListAuditLogRequest>,
    ) -> Result<pb::ListAuditLogResponse> {
        let org = self
            .authorize(
                &request,
                &request.get_ref().organization_id,
                Action::AuditRead,
            )
            .await?;
        let req = request.into_inner();
        let page = AUDIT_LOG.page(req.page_size, &req.page_token)?;
        let db = &self.identity.db;
        let mut query =
            audit_logs::Entity::find().filter(chain_condition(db.get_database_backend(), org));
        if let Some(caller) = req.actor_id.as_deref() {
            query = query.filter(audit_logs::Column::UserId.eq(parse_id("actorId", caller)?));
        }
        if let Some(action) = req.action.as_deref() {
            query = query.filter(audit_logs::Column::Action.eq(action));
        }
        if let Some(kind) = req.resource_type.as_deref() {
            let kind = AuditResourceType::try_from_value(&kind.to_owned()).map_err(|_| {
                Error::InvalidArgument("resourceType: unknown resource type".into())
            })?;
            query = query.filter(audit_logs::Column::ResourceType.eq(kind));
        }
        if let Some(id) = req.resource_id.as_deref() {
            query = query.filter(audit_logs::Column::ResourceId.eq(parse_id("resourceId", id)?));
        }
        if let Some(since) = req.since.as_ref() {
            let since = from_ts(since)
                .ok_or_else(|| Error::InvalidArgument("since: out of range".into()))?;
            query = query.filter(audit_logs::Column::CreatedAt.gte(since));
        }
        if let Some(until) = req.until.as_ref() {
            let until = from_ts(until)
                .ok_or_else(|| Error::InvalidArgument("until: out of range".into()))?;
            query = query.filter(audit_logs::Column::CreatedAt.lt(until));
        }
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) = page.finish(rows, |e| vec![Key::Id(e.id)]);
        Ok(pb::ListAuditLogResponse {
            entries: rows.into_iter().map(entry_to_pb).collect(),
            next_page_token,
        })
    }
}

fn entry_to_pb(row: audit_logs::Model) -> pb::AuditEntry {
    pb::AuditEntry {
        id: row.id.to_string(),
        organization_id: row.organization_id.map(|o| o.to_string()),
        actor_id: row.user_id.map(|u| u.to_string()),
        action: row.action,
        resource_type: row.resource_type.to_value(),
        resource_id: row.resource_id.map(|r| r.to_string()),
        details_json: row.details.to_string(),
        ip_address: row.ip_address.map(|ip| ip.to_string()),
        user_agent: row.user_agent,
        created_at: Some(ts(row.created_at)),
        prev_hash: row.prev_hash.unwrap_or_default(),
        hash: row.hash.unwrap_or_default(),
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_log(
        &self,
        request: Request<pb::ListAuditLogRequest>,
    ) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<pb::VerifyAuditChainRequest>,
    ) -> Result<Response<pb::VerifyAuditChainResponse>, Status> {
        let org = self
            .authorize(
                &request,
                &request.get_ref().organization_id,
                Action::AuditVerify,
            )
            .await?;
        let report = verify_chain(&self.identity.db, self.identity.keyring().ok(), org).await?;
        let (first_broken_id, reason) = match report.first_broken {
            Some((id, reason)) => (Some(id.to_string()), reason),
            None => (None, String::new()),
        };
        Ok(Response::new(pb::VerifyAuditChainResponse {
            ok: first_broken_id.is_none(),
            entries_checked: report.entries_checked,
            first_broken_id,
            reason,
        }))
    }
}
