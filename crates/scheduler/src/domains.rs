//! Re-verification of domains: a verified domain's proof must stay
//! published. Under the `domains` lease, every pass looks up the TXT record
//! of each DNS-verified domain (or fetches the HTTP challenge of each
//! HTTP-verified one) not checked for [`Recheck::every`] (oldest check
//! first, [`BATCH`] per pass, [`CONCURRENCY`] lookups at once):
//!
//! - the token is there: checked, and a lost flag is cleared;
//! - the resolver answered and the token is not there: the domain is
//!   flagged (`verification_lost_at`), never silently kept, and a
//!   `domain.verification_lost` notification is queued in the same
//!   transaction. It stays
//!   verified for the routes it has; the api refuses new routes under it
//!   until the owner verifies again;
//! - no answer to judge by (timeout, SERVFAIL): only the error is recorded.
//!
//! Domains pre-verified by an operator have no record to check. An
//! HTTP-verified domain once lost is left to its owner's VerifyDomain (it
//! may have been taken over by another organization's TXT proof, which a
//! re-fetch through the shared proxy could not tell).

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_common::dns::{self, CHALLENGE_LABEL, Proof};
use ferry_common::http_proof::http_proof;
use ferry_db::entities::domains;
use ferry_db::outbox::{Event, EventKind};
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ColumnTrait as _, Condition, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _, TransactionTrait as _,
};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::Result;

/// Lease name of the re-check loop.
pub const LEASE: &str = "domains";
/// Domains looked up per pass.
pub const BATCH: u64 = 200;
/// Lookups in flight at once.
pub const CONCURRENCY: usize = 8;

/// How domains are re-checked.
#[derive(Debug, Clone)]
pub struct Recheck {
    /// Where lookups go.
    pub resolver: SocketAddr,
    /// How long one lookup attempt waits (two attempts).
    pub timeout: Duration,
    /// A domain is looked up again once its last check is this old.
    pub every: chrono::Duration,
    /// ferry-proxy's plain-HTTP port HTTP challenges are fetched from.
    pub http_port: u16,
}

/// What one pass found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub checked: usize,
    /// Domains flagged in this pass.
    pub lost: Vec<Uuid>,
    /// Flagged domains whose record is back.
    pub restored: usize,
    /// Lookups without an answer to judge by.
    pub unknown: usize,
}

impl Recheck {
    async fn proof(&self, d: &domains::Model) -> Proof {
        let token = d.verification_token.clone().unwrap_or_default();
        if d.verification_method.as_deref() == Some("http") {
            return http_proof(self.resolver, &d.name, self.http_port, &token, self.timeout).await;
        }
        let record = format!("{CHALLENGE_LABEL}.{}", d.name);
        dns::txt_proof(self.resolver, &record, &token, self.timeout).await
    }

    /// Looks up the due domains at `now` and records what was found.
    pub async fn pass(&self, db: &DatabaseConnection, now: DateTime<Utc>) -> Result<Report> {
        let due = domains::Entity::find()
            .filter(domains::Column::VerifiedAt.is_not_null())
            .filter(domains::Column::DeletedAt.is_null())
            .filter(
                Condition::any()
                    .add(domains::Column::VerificationMethod.eq("dns"))
                    .add(
                        Condition::all()
                            .add(domains::Column::VerificationMethod.eq("http"))
                            .add(domains::Column::VerificationLostAt.is_null()),
                    ),
            )
            .filter(
                Condition::any()
                    .add(domains::Column::LastCheckedAt.is_null())
                    .add(domains::Column::LastCheckedAt.lte(now - self.every)),
            )
            .order_by_asc(domains::Column::LastCheckedAt)
            .order_by_asc(domains::Column::Id)
            .limit(BATCH)
            .all(db)
            .await?;
        let looked_up: Vec<(domains::Model, Proof)> = futures::stream::iter(due)
            .map(|d| async move {
                let proof = self.proof(&d).await;
                (d, proof)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut report = Report::default();
        let txn = db.begin().await?;
        for (d, proof) in looked_up {
            let (lost_at, error) = match &proof {
                Proof::Present => {
                    report.restored += usize::from(d.verification_lost_at.is_some());
                    (None, None)
                }
                Proof::Missing(why) => {
                    if d.verification_lost_at.is_none() {
                        report.lost.push(d.id);
                    }
                    (
                        Some(d.verification_lost_at.unwrap_or(now)),
                        Some(why.clone()),
                    )
                }
                Proof::Unknown(why) => {
                    report.unknown += 1;
                    (d.verification_lost_at, Some(why.clone()))
                }
            };
            if let Proof::Missing(why) = &proof
                && d.verification_lost_at.is_none()
            {
                tracing::warn!(domain = %d.name, id = %d.id, %why, "a verified domain lost its proof");
                let shown = if d.wildcard {
                    format!("*.{}", d.name)
                } else {
                    d.name.clone()
                };
                let event = Event::new(
                    d.organization_id,
                    d.project_id,
                    EventKind::DomainVerificationLost,
                    serde_json::json!({
                        "domainId": d.id,
                        "domain": shown,
                        "reason": why,
                        "summary": format!(
                            "Domain {shown} lost its verification: {why}. Its routes keep working; \
                             new routes under it are refused until it is verified again."
                        ),
                    }),
                );
                ferry_db::outbox::enqueue(&txn, event).await?;
            }
            // Only the verification that was looked up: a domain deleted or
            // verified again meanwhile keeps what the api wrote.
            domains::Entity::update_many()
                .col_expr(domains::Column::LastCheckedAt, Expr::value(now))
                .col_expr(domains::Column::LastCheckError, Expr::value(error))
                .col_expr(domains::Column::VerificationLostAt, Expr::value(lost_at))
                .filter(domains::Column::Id.eq(d.id))
                .filter(domains::Column::DeletedAt.is_null())
                .filter(domains::Column::VerifiedAt.eq(d.verified_at))
                .exec(&txn)
                .await?;
            report.checked += 1;
        }
        txn.commit().await?;
        Ok(report)
    }
}

/// Re-checks every `interval` under the `domains` lease until shutdown.
pub async fn run(
    db: &DatabaseConnection,
    recheck: &Recheck,
    lease: &crate::lease::Lease,
    interval: Duration,
    shutdown: &ferry_common::Shutdown,
) {
    lease
        .every(db, interval, shutdown, |now| recheck.pass(db, now))
        .await;
}
