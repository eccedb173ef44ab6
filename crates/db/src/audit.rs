//! Writing audit log entries.
//!
//! `audit_logs.ip_address` is INET on PostgreSQL and text on SQLite; the
//! entity's [`IpAddress`] type binds it as text with a cast to the
//! `inet_text` domain and decodes INET on read, so the same call works on
//! both backends. The `prev_hash`/`hash` columns are reserved for a
//! tamper-evident chain and left empty here.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use uuid::Uuid;

use crate::Result;
use crate::entities::audit_logs;
use crate::entities::enums::AuditResourceType;
use crate::entities::types::IpAddress;

/// An audit entry to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditLog {
    pub organization_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    /// What happened, e.g. `service.deploy` (1 to 100 characters).
    pub action: String,
    pub resource_type: AuditResourceType,
    pub resource_id: Option<Uuid>,
    /// Extra context; never put secrets here.
    pub details: serde_json::Value,
    pub ip_address: Option<IpAddress>,
    pub user_agent: Option<String>,
}

/// Inserts one entry (UUIDv7 id, `created_at` = now) and returns it as stored.
pub async fn insert<C: ConnectionTrait>(db: &C, entry: NewAuditLog) -> Result<audit_logs::Model> {
    let model = audit_logs::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(entry.organization_id),
        user_id: Set(entry.user_id),
        action: Set(entry.action),
        resource_type: Set(entry.resource_type),
        resource_id: Set(entry.resource_id),
        details: Set(entry.details),
        ip_address: Set(entry.ip_address),
        user_agent: Set(entry.user_agent),
        created_at: Set(Utc::now()),
        prev_hash: Set(None),
        hash: Set(None),
    }
    .insert(db)
    .await?;
    Ok(model)
}

/// What an audit checkpoint's seal encrypts: every field that says where
/// its chain now starts. `VerifyAuditChain` decrypts the seal and compares.
pub fn checkpoint_content(cp: &crate::entities::audit_checkpoints::Model) -> String {
    format!(
        "ferry-audit-checkpoint/v1\n{}\n{}\n{}\n{}\n{}",
        cp.chain,
        cp.last_hash,
        cp.through_created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        cp.through_id,
        cp.deleted_count
    )
}

/// The chain an audit row belongs to (`details.chain`, written with every
/// row; older rows without it: their organization, or `global`).
pub fn chain_of(row: &audit_logs::Model) -> String {
    row.details
        .get("chain")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .or_else(|| row.organization_id.map(|o| o.to_string()))
        .unwrap_or_else(|| "global".to_owned())
}
