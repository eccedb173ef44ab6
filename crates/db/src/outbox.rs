//! The notification outbox: producers record an event in THEIR OWN
//! transaction, next to the state change it reports; the delivery worker
//! (ferry-scheduler, lease `notifications`) fans it out to the subscribed
//! channels later. So an event exists exactly when its change committed,
//! and a slow or failing channel never touches the producer.
//!
//! ```text
//! let txn = ferry_db::begin_write(&db).await?;
//! ... write the state change ...
//! outbox::enqueue(&txn, Event::new(org, Some(project), EventKind::DeploymentFailed, payload)).await?;
//! txn.commit().await?;
//! ```

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait as _, Query};
use sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::Result;
use crate::entities::enums::NotificationDeliveryStatus;
use crate::entities::{jobs, notification_deliveries, notification_outbox, projects};

/// Declares [`EventKind`] with its stable names side by side.
macro_rules! kinds {
    ($($variant:ident = $name:literal, $title:literal;)+) => {
        /// An event kind: its name is stable (stored, subscribed to, sent).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind {
            $(#[doc = concat!("`", $name, "`")] $variant,)+
        }

        impl EventKind {
            /// Every kind, in documentation order.
            pub const ALL: &[EventKind] = &[$(EventKind::$variant,)+];

            /// The stable name, e.g. `deployment.failed`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)+
                }
            }

            /// A short human title, e.g. "Deployment failed".
            pub const fn title(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $title,)+
                }
            }
        }
    };
}

kinds! {
    DeploymentSucceeded = "deployment.succeeded", "Deployment succeeded";
    DeploymentFailed = "deployment.failed", "Deployment failed";
    DeploymentRolledBack = "deployment.rolled_back", "Deployment rolled back";
    BuildFailed = "build.failed", "Build failed";
    JobRunFailed = "job_run.failed", "Job run failed";
    BackupFailed = "backup.failed", "Backup failed";
    BackupVerificationFailed = "backup.verification_failed", "Backup verification failed";
    BackupMissing = "backup.missing", "Backup missing";
    CertificateIssued = "certificate.issued", "Certificate issued";
    CertificateRenewalFailed = "certificate.renewal_failed", "Certificate renewal failed";
    CertificateExpiring = "certificate.expiring", "Certificate expiring";
    DomainVerificationLost = "domain.verification_lost", "Domain verification lost";
    MemberInvited = "member.invited", "Member invited";
    MemberJoined = "member.joined", "Member joined";
}

impl EventKind {
    /// The kind called `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// Whether the event reports something that went wrong.
    pub const fn is_failure(self) -> bool {
        matches!(
            self,
            Self::DeploymentFailed
                | Self::BuildFailed
                | Self::JobRunFailed
                | Self::BackupFailed
                | Self::BackupVerificationFailed
                | Self::BackupMissing
                | Self::CertificateRenewalFailed
                | Self::CertificateExpiring
                | Self::DomainVerificationLost
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub organization_id: Uuid,
    pub project_id: Option<Uuid>,
    pub kind: EventKind,
    /// What happened, as a JSON object (ids, names, a `summary` line);
    /// never secrets: it is sent to every subscribed channel as it is.
    pub payload: Value,
}

impl Event {
    pub fn new(
        organization_id: Uuid,
        project_id: Option<Uuid>,
        kind: EventKind,
        payload: Value,
    ) -> Self {
        Self {
            organization_id,
            project_id,
            kind,
            payload,
        }
    }
}

/// Writes `event` to the outbox through `conn` (the caller's transaction);
/// returns the event id.
pub async fn enqueue<C: ConnectionTrait>(conn: &C, event: Event) -> Result<Uuid> {
    let id = Uuid::now_v7();
    notification_outbox::ActiveModel {
        id: Set(id),
        organization_id: Set(event.organization_id),
        project_id: Set(event.project_id),
        event: Set(event.kind.as_str().to_owned()),
        payload: Set(event.payload),
        created_at: Set(Utc::now()),
        dispatched_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok(id)
}

/// Deletes, `batch` events per transaction, the events created before
/// `cutoff` that are settled: dispatched, with no delivery still pending
/// (each delivered or given up, or none at all), together with their
/// delivery rows. Returns the events deleted.
pub async fn prune_settled(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<u64> {
    let mut deleted = 0;
    loop {
        let ids = settled_before(db, cutoff, batch).await?;
        if ids.is_empty() {
            return Ok(deleted);
        }
        let txn = crate::begin_write(db).await?;
        // Explicitly, not by the cascade: SQLite may run without FK checks.
        notification_deliveries::Entity::delete_many()
            .filter(notification_deliveries::Column::EventId.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
        let gone = notification_outbox::Entity::delete_many()
            .filter(notification_outbox::Column::Id.is_in(ids.iter().copied()))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        deleted += gone.rows_affected;
        if u64::try_from(ids.len()).unwrap_or(u64::MAX) < batch {
            return Ok(deleted);
        }
    }
}

/// Up to `batch` settled events created before `cutoff`, oldest first.
/// A settled event cannot become unsettled: dispatched events get no new
/// deliveries, and a delivery never goes back to pending.
async fn settled_before(
    db: &DatabaseConnection,
    cutoff: DateTime<Utc>,
    batch: u64,
) -> Result<Vec<Uuid>> {
    let mut pending = Query::select();
    pending
        .expr(Expr::val(1))
        .from(notification_deliveries::Entity)
        .and_where(
            Expr::col((
                notification_deliveries::Entity,
                notification_deliveries::Column::EventId,
            ))
            .equals((notification_outbox::Entity, notification_outbox::Column::Id)),
        )
        .and_where(notification_deliveries::Column::Status.eq(NotificationDeliveryStatus::Pending));
    Ok(notification_outbox::Entity::find()
        .select_only()
        .column(notification_outbox::Column::Id)
        .filter(notification_outbox::Column::DispatchedAt.is_not_null())
        .filter(notification_outbox::Column::CreatedAt.lt(cutoff))
        .filter(Expr::exists(pending).not())
        .order_by_asc(notification_outbox::Column::CreatedAt)
        .limit(batch)
        .into_tuple()
        .all(db)
        .await?)
}

/// The event of a job run that just ended as `status` (`failed` or
/// `timed_out` produce `job_run.failed`; other states nothing), written in
/// `conn` when `changed` (the status UPDATE matched the run).
pub async fn job_run_finished<C: ConnectionTrait>(
    conn: &C,
    run_id: Uuid,
    job_id: Option<Uuid>,
    status: crate::entities::enums::JobRunStatus,
    reason: &str,
    changed: bool,
) -> Result<()> {
    use crate::entities::enums::JobRunStatus;
    if !changed || !matches!(status, JobRunStatus::Failed | JobRunStatus::TimedOut) {
        return Ok(());
    }
    let job = match job_id {
        Some(id) => jobs::Entity::find_by_id(id).one(conn).await?,
        None => {
            let run = crate::entities::job_runs::Entity::find_by_id(run_id)
                .one(conn)
                .await?;
            match run {
                Some(run) => jobs::Entity::find_by_id(run.job_id).one(conn).await?,
                None => None,
            }
        }
    };
    let Some(job) = job else { return Ok(()) };
    let Some(project) = projects::Entity::find_by_id(job.project_id)
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    let timed_out = status == JobRunStatus::TimedOut;
    let summary = if timed_out {
        format!("Job {} timed out", job.name)
    } else {
        format!("Job {} failed", job.name)
    };
    enqueue(
        conn,
        Event::new(
            project.organization_id,
            Some(project.id),
            EventKind::JobRunFailed,
            json!({
                "summary": summary,
                "project": { "id": project.id, "name": project.name },
                "job": { "id": job.id, "name": job.name },
                "jobRunId": run_id,
                "timedOut": timed_out,
                "reason": reason.chars().take(1000).collect::<String>(),
            }),
        ),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_their_stable_names() {
        assert_eq!(EventKind::ALL.len(), 14);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
            assert!(kind.as_str().len() <= 64);
        }
        assert_eq!(EventKind::parse("deployment.exploded"), None);
        assert_eq!(EventKind::JobRunFailed.as_str(), "job_run.failed");
    }
}
