//! `certificate.expiring`: once per certificate (ACME or uploaded) with
//! under [`WARN_BEFORE`] left, run by the certificates loop whether or not
//! ACME is configured. A certificate another one of its domain replaces
//! (covering its names and valid past the warning period) is not
//! reported. `certificates.expiring_notified_at` is set in the same
//! transaction as the outbox row, by a guarded UPDATE, so the notice is
//! recorded once even with two passes racing.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use ferry_db::entities::{certificates, domains};
use ferry_db::outbox::{Event, EventKind};
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, TransactionTrait as _,
};

use crate::Result;

/// How long before expiry the notice is sent.
pub const WARN_BEFORE: chrono::Duration = chrono::Duration::days(14);

fn names(cert: &certificates::Model) -> BTreeSet<String> {
    serde_json::from_value::<Vec<String>>(cert.hostnames.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|n| n.to_ascii_lowercase())
        .collect()
}

/// Whether `newer`'s names cover each of `old`'s (exactly or by wildcard).
fn covers(newer: &BTreeSet<String>, old: &BTreeSet<String>) -> bool {
    old.iter().all(|name| {
        newer.contains(name)
            || name
                .split_once('.')
                .is_some_and(|(_, parent)| newer.contains(&format!("*.{parent}")))
    })
}

/// Records `certificate.expiring` for each certificate that just came
/// under [`WARN_BEFORE`]; returns how many were recorded.
pub async fn notify_expiring(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<usize> {
    let soon = certificates::Entity::find()
        .filter(certificates::Column::ExpiringNotifiedAt.is_null())
        .filter(certificates::Column::ExpiresAt.gt(now))
        .filter(certificates::Column::ExpiresAt.lt(now + WARN_BEFORE))
        .all(db)
        .await?;
    let mut sent = 0;
    for cert in soon {
        if notify_one(db, &cert, now).await? {
            sent += 1;
        }
    }
    Ok(sent)
}

async fn notify_one(
    db: &DatabaseConnection,
    cert: &certificates::Model,
    now: DateTime<Utc>,
) -> Result<bool> {
    let txn = db.begin().await?;
    let replacements = certificates::Entity::find()
        .filter(certificates::Column::DomainId.eq(cert.domain_id))
        .filter(certificates::Column::ExpiresAt.gte(now + WARN_BEFORE))
        .all(&txn)
        .await?;
    let old = names(cert);
    if replacements.iter().any(|r| covers(&names(r), &old)) {
        return Ok(false);
    }
    let Some(domain) = domains::Entity::find_by_id(cert.domain_id)
        .filter(domains::Column::DeletedAt.is_null())
        .one(&txn)
        .await?
    else {
        return Ok(false);
    };
    let marked = certificates::Entity::update_many()
        .col_expr(
            certificates::Column::ExpiringNotifiedAt,
            Expr::value(Some(now)),
        )
        .filter(certificates::Column::Id.eq(cert.id))
        .filter(certificates::Column::ExpiringNotifiedAt.is_null())
        .exec(&txn)
        .await?;
    if marked.rows_affected != 1 {
        return Ok(false);
    }
    let names: Vec<String> = old.into_iter().collect();
    let days = (cert.expires_at - now).num_days();
    let summary = format!(
        "Certificate for {} expires in {days} days ({}, {})",
        names.join(", "),
        cert.expires_at.format("%Y-%m-%d"),
        cert.source
    );
    let mut payload = crate::acme::cert_payload(&domain, cert.id, &names, cert.expires_at, summary);
    payload["source"] = serde_json::json!(cert.source);
    let event = Event::new(
        domain.organization_id,
        domain.project_id,
        EventKind::CertificateExpiring,
        payload,
    );
    ferry_db::outbox::enqueue(&txn, event).await?;
    txn.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_covers_one_level_below_it() {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        let wild = set(&["*.a.test", "a.test"]);
        assert!(covers(&wild, &set(&["x.a.test", "a.test"])));
        assert!(!covers(&wild, &set(&["y.x.a.test"])));
        assert!(!covers(
            &set(&["x.a.test"]),
            &set(&["x.a.test", "z.a.test"])
        ));
    }
}
