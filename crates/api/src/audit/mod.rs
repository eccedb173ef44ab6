//! The audit log: one row per mutation, in the mutation's transaction, in
//! tamper-evident hash chains.
//!
//! Chains: one per organization, plus a `global` chain for rows outside
//! any organization (registrations, logins, deleted organizations). Each
//! row's `hash` is SHA-256 over a canonical JSON of its content (sorted
//! keys, microsecond timestamps) including `prev_hash`, the hash of the
//! previous row of the same chain. Appends to a chain are serialized (an
//! advisory transaction lock per chain on PostgreSQL; SQLite serializes
//! writers, and [`begin_write`] takes the write lock at `BEGIN`). `created_at` strictly increases within a
//! chain, which gives the chain its order.
//!
//! The chain key and the actor id are also recorded in `details`
//! (`chain`, `actorId`) and covered by the hash: `organization_id` and
//! `user_id` are foreign keys that become NULL when the organization or
//! user is deleted, so verification accepts NULL there (and nothing else
//! that differs from the recorded value).

use chrono::{DateTime, Duration, DurationRound as _, Utc};
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::types::IpAddress;
use ferry_db::entities::{audit_chain_heads, audit_checkpoints, audit_logs};
use ferry_db::sea_orm::ActiveEnum as _;
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _, SimpleExpr};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, Condition, ConnectionTrait,
    DbBackend, EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _, Statement,
};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::Result;
use crate::auth::Actor;
use crate::paging::{Key, Keyset, Kind, asc};
use crate::request::RequestMeta;

/// The chain of rows outside any organization.
pub const GLOBAL_CHAIN: &str = "global";

/// What happened to which resource. Who acted, and the chain it goes to,
/// come from the [`Auditor`] that records it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `resource.verb`, e.g. `organization.create`.
    pub action: &'static str,
    pub resource_type: AuditResourceType,
    pub resource_id: Option<Uuid>,
    /// A JSON object of context. NEVER secret values.
    pub details: Value,
}

impl Entry {
    /// An entry with no details.
    pub fn new(
        action: &'static str,
        resource_type: AuditResourceType,
        resource_id: impl Into<Option<Uuid>>,
    ) -> Self {
        Self {
            action,
            resource_type,
            resource_id: resource_id.into(),
            details: Value::Null,
        }
    }

    /// The entry with `details` (a JSON object; NEVER secret values).
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// THE audit entry point: who acts (user and request), and which chain
/// records it. Built from the caller's [`Actor`] (or, before there is
/// one, the request and the user being signed in), never field by field.
#[derive(Debug, Clone, Copy)]
pub struct Auditor<'a> {
    meta: &'a RequestMeta,
    actor_id: Option<Uuid>,
    organization_id: Option<Uuid>,
}

impl<'a> Auditor<'a> {
    /// `actor` acting inside `organization_id` (that organization's chain).
    pub fn org(actor: &'a Actor, organization_id: Uuid) -> Self {
        Self {
            meta: &actor.meta,
            actor_id: Some(actor.user_id),
            organization_id: Some(organization_id),
        }
    }

    /// `actor` acting outside any organization (the global chain).
    pub fn global(actor: &'a Actor) -> Self {
        Self::user(&actor.meta, Some(actor.user_id))
    }

    /// The global chain for a request that has no [`Actor`] yet
    /// (registration, login), done by or on behalf of `user`.
    pub fn user(meta: &'a RequestMeta, user: Option<Uuid>) -> Self {
        Self {
            meta,
            actor_id: user,
            organization_id: None,
        }
    }

    /// Ferry acting by itself, with no user (background work), in
    /// `organization_id`'s chain or the global one.
    pub fn system(meta: &'a RequestMeta, organization_id: Option<Uuid>) -> Self {
        Self {
            meta,
            actor_id: None,
            organization_id,
        }
    }

    /// Appends `entry` to the chain, inside the caller's transaction `txn`.
    pub async fn record<C: ConnectionTrait>(
        &self,
        txn: &C,
        entry: Entry,
    ) -> Result<audit_logs::Model> {
        append(txn, self, entry).await
    }
}

fn chain_key(org: Option<Uuid>) -> String {
    org.map_or_else(|| GLOBAL_CHAIN.to_owned(), |o| o.to_string())
}

/// The SQL expression for `details.chain` on either backend.
fn chain_expr(backend: DbBackend) -> SimpleExpr {
    match backend {
        DbBackend::Postgres => Expr::cust("(details->>'chain')"),
        _ => Expr::cust("json_extract(details, '$.chain')"),
    }
}

/// Rows of `chain` (including rows whose organization was deleted since).
pub fn chain_condition(backend: DbBackend, org: Option<Uuid>) -> Condition {
    let by_details = Condition::all()
        .add(audit_logs::Column::OrganizationId.is_null())
        .add(Expr::expr(chain_expr(backend)).eq(chain_key(org)));
    match org {
        Some(org) => Condition::any()
            .add(audit_logs::Column::OrganizationId.eq(org))
            .add(by_details),
        None => by_details,
    }
}

/// Appends `event` to its chain, inside the caller's transaction `txn`.
async fn append<C: ConnectionTrait>(
    txn: &C,
    who: &Auditor<'_>,
    event: Entry,
) -> Result<audit_logs::Model> {
    let meta = who.meta;
    let backend = txn.get_database_backend();
    let chain = chain_key(who.organization_id);
    if backend == DbBackend::Postgres {
        txn.execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [lock_key(&chain).into()],
        ))
        .await?;
    }
    // The head is the authority on what came last: every append moves it
    // in the append's own transaction (under the chain's lock), so it holds
    // the newest row's hash and time, and rows removed from the end (or all
    // cut by retention) still leave their hash to link to. One read: only a
    // chain without a head (a new chain, or one written before heads
    // existed) looks for its newest row.
    let head = audit_chain_heads::Entity::find()
        .filter(audit_chain_heads::Column::Chain.eq(chain.as_str()))
        .one(txn)
        .await?;
    let (prev_hash, latest) = match &head {
        Some(h) => (Some(h.last_hash.clone()), Some(micros(h.last_created_at))),
        None => {
            let prev = audit_logs::Entity::find()
                .filter(chain_condition(backend, who.organization_id))
                .order_by_desc(audit_logs::Column::CreatedAt)
                .order_by_desc(audit_logs::Column::Id)
                .limit(1)
                .one(txn)
                .await?;
            match prev {
                Some(p) => (p.hash, Some(micros(p.created_at))),
                None => (None, None),
            }
        }
    };

    let mut details = match event.details {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("value".into(), other);
            map
        }
    };
    details.insert("chain".into(), Value::String(chain));
    details.insert(
        "actorId".into(),
        who.actor_id
            .map_or(Value::Null, |a| Value::String(a.to_string())),
    );
    let details = Value::Object(details);

    let now = micros(Utc::now());
    let created_at = match latest {
        Some(t) if t >= now => t + Duration::microseconds(1),
        _ => now,
    };
    let mut row = audit_logs::Model {
        id: Uuid::now_v7(),
        organization_id: who.organization_id,
        user_id: who.actor_id,
        action: event.action.to_owned(),
        resource_type: event.resource_type,
        resource_id: event.resource_id,
        details,
        ip_address: meta.ip.map(IpAddress),
        user_agent: meta.user_agent.clone(),
        created_at,
        prev_hash,
        hash: None,
    };
    row.hash = Some(row_hash(&row));
    let stored = audit_logs::ActiveModel {
        id: Set(row.id),
        organization_id: Set(row.organization_id),
        user_id: Set(row.user_id),
        action: Set(row.action.clone()),
        resource_type: Set(row.resource_type),
        resource_id: Set(row.resource_id),
        details: Set(row.details.clone()),
        ip_address: Set(row.ip_address),
        user_agent: Set(row.user_agent.clone()),
        created_at: Set(row.created_at),
        prev_hash: Set(row.prev_hash.clone()),
        hash: Set(row.hash.clone()),
    }
    .insert(txn)
    .await?;
    let moved = audit_chain_heads::ActiveModel {
        id: Set(head.as_ref().map_or_else(Uuid::now_v7, |h| h.id)),
        chain: Set(chain_key(who.organization_id)),
        last_hash: Set(row.hash.clone().unwrap_or_default()),
        last_id: Set(row.id),
        last_created_at: Set(row.created_at),
        created_at: Set(head.as_ref().map_or(now, |h| h.created_at)),
        updated_at: Set(now),
    };
    if head.is_some() {
        moved.update(txn).await?;
    } else {
        moved.insert(txn).await?;
    }
    Ok(stored)
}

/// The outcome of [`verify_chain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub entries_checked: u64,
    /// The first row that does not verify, and why.
    pub first_broken: Option<(Uuid, String)>,
}

/// Rows read per query by [`verify_chain`]: memory stays the same however
/// long the chain grows.
pub const VERIFY_BATCH: u64 = 1_000;

/// A chain's order (see the module docs): creation time, then id.
static CHAIN: Keyset<audit_logs::Column> = Keyset {
    list: "audit-chain",
    columns: &[
        asc(audit_logs::Column::CreatedAt, Kind::Time),
        asc(audit_logs::Column::Id, Kind::Id),
    ],
};

/// Recomputes the chain of `org` (`None`: global) from its first row, or
/// from its retention checkpoint when retention has cut its oldest rows.
pub async fn verify_chain<C: ConnectionTrait>(
    db: &C,
    keyring: Option<&Keyring>,
    org: Option<Uuid>,
) -> Result<ChainReport> {
    verify_chain_in_batches(db, keyring, org, VERIFY_BATCH).await
}

/// [`verify_chain`], reading `batch` rows per query (keyset paging, so
/// each query starts where the last one ended) and stopping at the first
/// row that does not verify.
pub async fn verify_chain_in_batches<C: ConnectionTrait>(
    db: &C,
    keyring: Option<&Keyring>,
    org: Option<Uuid>,
    batch: u64,
) -> Result<ChainReport> {
    let batch = std::cmp::max(batch, 1);
    let mut walk = ChainWalk::new(org);
    let mut after: Option<Vec<Key>> = None;
    let checkpoint = audit_checkpoints::Entity::find()
        .filter(audit_checkpoints::Column::Chain.eq(chain_key(org)))
        .one(db)
        .await?;
    if let Some(cp) = checkpoint {
        // Only a checkpoint sealed with the installation's key moves the
        // start: a forged one (or one edited after the fact) breaks.
        let sealed = keyring
            .and_then(|k| k.decrypt("audit_checkpoints", "seal", cp.id, &cp.seal).ok())
            .is_some_and(|plain| plain.expose() == ferry_db::audit::checkpoint_content(&cp));
        if !sealed {
            return Ok(walk.report(Some((
                cp.id,
                "the retention checkpoint's seal does not verify".into(),
            ))));
        }
        walk.prev = Some(cp.last_hash.clone());
        after = Some(vec![
            Key::Time(cp.through_created_at),
            Key::Id(cp.through_id),
        ]);
    }
    loop {
        let rows = chain_batch(db, org, after.as_deref(), batch).await?;
        let last_batch = (rows.len() as u64) < batch;
        if let Some(last) = rows.last() {
            after = Some(vec![Key::Time(last.created_at), Key::Id(last.id)]);
        }
        for row in rows {
            if let Some(broken) = walk.check(row) {
                return Ok(broken);
            }
        }
        if last_batch {
            return walk.finish(db).await;
        }
    }
}

/// Up to `batch` rows of a chain, in chain order, after `after`.
async fn chain_batch<C: ConnectionTrait>(
    db: &C,
    org: Option<Uuid>,
    after: Option<&[Key]>,
    batch: u64,
) -> Result<Vec<audit_logs::Model>> {
    let mut query = CHAIN
        .order(audit_logs::Entity::find().filter(chain_condition(db.get_database_backend(), org)));
    if let Some(key) = after {
        query = query.filter(CHAIN.after(key));
    }
    Ok(query.limit(batch).all(db).await?)
}

/// Verification state carried from row to row: only the previous hash.
struct ChainWalk {
    chain: String,
    org: Option<Uuid>,
    prev: Option<String>,
    checked: u64,
}

impl ChainWalk {
    fn new(org: Option<Uuid>) -> Self {
        Self {
            chain: chain_key(org),
            org,
            prev: None,
            checked: 0,
        }
    }

    /// Checks the next row; the report if it is the first broken one.
    fn check(&mut self, row: audit_logs::Model) -> Option<ChainReport> {
        self.checked += 1;
        if let Some(reason) = check_row(&row, &self.chain, self.org, self.prev.as_deref()) {
            return Some(self.report(Some((row.id, reason))));
        }
        self.prev = row.hash;
        None
    }

    /// The end of the walk: the last hash seen must be the chain's head
    /// (recorded outside the rows), or the newest rows were removed.
    async fn finish<C: ConnectionTrait>(&self, db: &C) -> Result<ChainReport> {
        let head = audit_chain_heads::Entity::find()
            .filter(audit_chain_heads::Column::Chain.eq(self.chain.as_str()))
            .one(db)
            .await?;
        Ok(match head {
            Some(h) if self.prev.as_deref() != Some(h.last_hash.as_str()) => self.report(Some((
                h.last_id,
                "the newest entries of the chain are missing (its recorded head is gone)".into(),
            ))),
            _ => self.report(None),
        })
    }

    fn report(&self, first_broken: Option<(Uuid, String)>) -> ChainReport {
        ChainReport {
            entries_checked: self.checked,
            first_broken,
        }
    }
}

fn check_row(
    row: &audit_logs::Model,
    chain: &str,
    org: Option<Uuid>,
    prev: Option<&str>,
) -> Option<String> {
    if row.details.get("chain").and_then(Value::as_str) != Some(chain) {
        return Some("recorded chain differs".into());
    }
    if row.organization_id.is_some() && row.organization_id != org {
        return Some("organization id altered".into());
    }
    let actor = row.details.get("actorId").and_then(Value::as_str);
    if let Some(user) = row.user_id
        && actor != Some(user.to_string().as_str())
    {
        return Some("actor id altered".into());
    }
    if row.prev_hash.as_deref() != prev {
        return Some("previous hash does not link (an entry was removed or reordered)".into());
    }
    let Some(hash) = row.hash.as_deref() else {
        return Some("hash missing".into());
    };
    let computed = row_hash(row);
    if !subtle_eq(computed.as_bytes(), hash.as_bytes()) {
        return Some("content does not match its hash (entry edited)".into());
    }
    None
}

fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SHA-256 (hex) over the canonical JSON of `row` (the hash column and the
/// nullable foreign keys excluded; see the module docs).
pub fn row_hash(row: &audit_logs::Model) -> String {
    let content = json!({
        "v": 1,
        "id": row.id.to_string(),
        "action": row.action,
        "resourceType": row.resource_type.to_value(),
        "resourceId": row.resource_id.map(|r| r.to_string()),
        "details": row.details,
        "ipAddress": row.ip_address.map(|ip| ip.to_string()),
        "userAgent": row.user_agent,
        "createdAt": micros(row.created_at).to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "prevHash": row.prev_hash.clone().unwrap_or_default(),
    });
    let mut canonical = String::new();
    write_canonical(&content, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

/// JSON with object keys sorted at every level and no whitespace.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::microseconds(1)).unwrap_or(t)
}

/// A PostgreSQL advisory lock key per chain.
fn lock_key(chain: &str) -> i64 {
    let digest = Sha256::digest(format!("ferry.audit:{chain}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"d":[1,{"y":2,"x":"é"}],"c":null}}"#).unwrap();
        let mut out = String::new();
        write_canonical(&v, &mut out);
        assert_eq!(out, r#"{"a":{"c":null,"d":[1,{"x":"é","y":2}]},"b":1}"#);
    }
}
