//! The delivery worker: outbox → deliveries → channels.
//!
//! A [`Worker::tick`] does two things, each safe to run on several replicas
//! at once (the scheduler runs it under its `notifications` lease anyway):
//!
//! 1. **Fan-out.** Every outbox event not yet dispatched gets one
//!    `notification_deliveries` row per enabled channel subscribed to its
//!    kind (organization-wide, or for the event's project), inserted with
//!    `ON CONFLICT (event_id, channel_id) DO NOTHING`, and is marked
//!    dispatched, in one transaction per event.
//! 2. **Sending.** Due pending deliveries are claimed one by one with a
//!    conditional UPDATE (`attempts = n` → `n + 1`, `next_attempt_at`
//!    pushed past the attempt's timeout): only the replica whose UPDATE
//!    matched sends. Sends run concurrently (bounded), each with its own
//!    timeout, so a slow or failing channel holds up nothing else. A
//!    failure is retried after `base · 2^(attempts-1)` (capped, with
//!    jitter: a random 50–100 % of it) until `max_attempts`, then the
//!    delivery is `failed`.
//!
//! [`Worker::prune`] deletes settled events past the retention with their
//! deliveries (the scheduler calls it now and then under the same lease).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::NotificationDeliveryStatus as Status;
use ferry_db::entities::{
    notification_channels, notification_deliveries as deliveries, notification_outbox,
    notification_subscriptions as subscriptions,
};
use ferry_db::sea_orm::sea_query::{Expr, OnConflict};
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, Condition, DatabaseConnection, EntityTrait as _,
    QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::Result;
use crate::format::Notification;
use crate::send::Sender;

/// Events deleted per transaction by [`Worker::prune`].
pub const PRUNE_BATCH: u64 = 1000;

/// How the worker paces itself.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Events fanned out, and deliveries claimed, per tick.
    pub batch: u64,
    /// Sends in flight at once.
    pub concurrency: usize,
    /// Attempts before a delivery is `failed`.
    pub max_attempts: i32,
    /// The first retry's delay (doubling each attempt).
    pub backoff_base: Duration,
    /// The longest delay between attempts.
    pub backoff_cap: Duration,
    /// Settled events (and their deliveries) older than this are deleted
    /// by [`Worker::prune`]; `None` keeps them forever.
    pub retention: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch: 200,
            concurrency: 8,
            max_attempts: 8,
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(3600),
            retention: Some(Duration::from_secs(30 * 86_400)),
        }
    }
}

impl WorkerConfig {
    /// The delay before the attempt after `attempts` failed ones, with
    /// jitter `j` in [0, 1]: `base · 2^(attempts-1)`, capped, times
    /// `0.5 + j/2`.
    pub fn backoff(&self, attempts: i32, j: f64) -> Duration {
        let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.backoff_cap);
        full.mul_f64(0.5 + j.clamp(0.0, 1.0) / 2.0)
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Events fanned out.
    pub dispatched: usize,
    /// Delivery rows created.
    pub created: usize,
    /// Attempts made (claimed and sent).
    pub attempted: usize,
    pub delivered: usize,
    /// Attempts that failed (retried later or given up).
    pub failed: usize,
}

/// The fan-out and sending loop body.
#[derive(Debug, Clone)]
pub struct Worker {
    db: DatabaseConnection,
    keyring: Arc<Keyring>,
    sender: Sender,
    config: WorkerConfig,
}

impl Worker {
    pub fn new(
        db: DatabaseConnection,
        keyring: Arc<Keyring>,
        sender: Sender,
        config: WorkerConfig,
    ) -> Self {
        Self {
            db,
            keyring,
            sender,
            config,
        }
    }

    /// Whether `tick` used a whole batch (more may be waiting).
    pub fn full(&self, tick: &Tick) -> bool {
        let batch = usize::try_from(self.config.batch).unwrap_or(usize::MAX);
        tick.dispatched >= batch || tick.attempted >= batch
    }

    /// Fans out, then sends what is due.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<Tick> {
        let (dispatched, created) = self.fan_out(now).await?;
        let mut tick = self.send_due(now).await?;
        tick.dispatched = dispatched;
        tick.created = created;
        Ok(tick)
    }

    /// Creates the deliveries of undispatched events; returns (events,
    /// deliveries created).
    pub async fn fan_out(&self, now: DateTime<Utc>) -> Result<(usize, usize)> {
        let events = notification_outbox::Entity::find()
            .filter(notification_outbox::Column::DispatchedAt.is_null())
            .order_by_asc(notification_outbox::Column::CreatedAt)
            .order_by_asc(notification_outbox::Column::Id)
            .limit(self.config.batch)
            .all(&self.db)
            .await?;
        let mut created = 0;
        for event in &events {
            let txn = ferry_db::begin_write(&self.db).await?;
            let mut project = Condition::any().add(subscriptions::Column::ProjectId.is_null());
            if let Some(p) = event.project_id {
                project = project.add(subscriptions::Column::ProjectId.eq(p));
            }
            let channels: Vec<Uuid> = subscriptions::Entity::find()
                .select_only()
                .column(subscriptions::Column::ChannelId)
                .inner_join(notification_channels::Entity)
                .filter(subscriptions::Column::OrganizationId.eq(event.organization_id))
                .filter(subscriptions::Column::Event.eq(event.event.as_str()))
                .filter(project)
                .filter(notification_channels::Column::Enabled.eq(true))
                .filter(notification_channels::Column::OrganizationId.eq(event.organization_id))
                .distinct()
                .into_tuple()
                .all(&txn)
                .await?;
            if !channels.is_empty() {
                let rows = channels.iter().map(|&channel_id| deliveries::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    event_id: Set(event.id),
                    channel_id: Set(channel_id),
                    organization_id: Set(event.organization_id),
                    status: Set(Status::Pending),
                    attempts: Set(0),
                    next_attempt_at: Set(Some(now)),
                    last_response_code: Set(None),
                    last_error: Set(None),
                    last_attempt_at: Set(None),
                    delivered_at: Set(None),
                    created_at: Set(now),
                    updated_at: Set(now),
                });
                let inserted = deliveries::Entity::insert_many(rows)
                    .on_conflict(
                        OnConflict::columns([
                            deliveries::Column::EventId,
                            deliveries::Column::ChannelId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(&txn)
                    .await?;
                created += usize::try_from(inserted).unwrap_or(0);
            }
            notification_outbox::Entity::update_many()
                .col_expr(notification_outbox::Column::DispatchedAt, Expr::value(now))
                .filter(notification_outbox::Column::Id.eq(event.id))
                .filter(notification_outbox::Column::DispatchedAt.is_null())
                .exec(&txn)
                .await?;
            txn.commit().await?;
        }
        Ok((events.len(), created))
    }

    /// Deletes the settled events older than the retention (every
    /// delivery delivered or given up) with their deliveries, in batches;
    /// returns how many events went.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64> {
        let Some(keep) = self.config.retention else {
            return Ok(0);
        };
        let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let Some(cutoff) = now.checked_sub_signed(keep) else {
            return Ok(0);
        };
        Ok(ferry_db::outbox::prune_settled(&self.db, cutoff, PRUNE_BATCH).await?)
    }

    /// Claims and sends the due deliveries.
    pub async fn send_due(&self, now: DateTime<Utc>) -> Result<Tick> {
        let due = deliveries::Entity::find()
            .filter(deliveries::Column::Status.eq(Status::Pending))
            .filter(
                Condition::any()
                    .add(deliveries::Column::NextAttemptAt.is_null())
                    .add(deliveries::Column::NextAttemptAt.lte(now)),
            )
            .order_by_asc(deliveries::Column::NextAttemptAt)
            .order_by_asc(deliveries::Column::Id)
            .limit(self.config.batch)
            .all(&self.db)
            .await?;
        // The batch's channels and events, in two queries.
        let channels: HashMap<Uuid, notification_channels::Model> = if due.is_empty() {
            HashMap::new()
        } else {
            notification_channels::Entity::find()
                .filter(notification_channels::Column::Id.is_in(due.iter().map(|d| d.channel_id)))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|c| (c.id, c))
                .collect()
        };
        let events: HashMap<Uuid, notification_outbox::Model> = if due.is_empty() {
            HashMap::new()
        } else {
            notification_outbox::Entity::find()
                .filter(notification_outbox::Column::Id.is_in(due.iter().map(|d| d.event_id)))
                .all(&self.db)
                .await?
                .into_iter()
                .map(|e| (e.id, e))
                .collect()
        };
        let results: Vec<Result<Option<bool>>> = futures::stream::iter(due)
            .map(|d| {
                let channel = channels.get(&d.channel_id).cloned();
                let event = events.get(&d.event_id).cloned();
                self.attempt(d, channel, event, now)
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        let mut tick = Tick::default();
        for r in results {
            match r {
                Ok(Some(true)) => {
                    tick.attempted += 1;
                    tick.delivered += 1;
                }
                Ok(Some(false)) => {
                    tick.attempted += 1;
                    tick.failed += 1;
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(error = %err, "a notification delivery failed to record")
                }
            }
        }
        Ok(tick)
    }

    /// Claims `d` and sends it; `None` when another worker claimed it.
    async fn attempt(
        &self,
        d: deliveries::Model,
        channel: Option<notification_channels::Model>,
        event: Option<notification_outbox::Model>,
        now: DateTime<Utc>,
    ) -> Result<Option<bool>> {
        // The claim holds the delivery for longer than the send may take.
        let hold = chrono::Duration::from_std(self.sender.config().timeout * 2)
            .unwrap_or_else(|_| chrono::Duration::seconds(60));
        let attempts = d.attempts + 1;
        let claimed = deliveries::Entity::update_many()
            .col_expr(deliveries::Column::Attempts, Expr::value(attempts))
            .col_expr(deliveries::Column::NextAttemptAt, Expr::value(now + hold))
            .col_expr(deliveries::Column::LastAttemptAt, Expr::value(now))
            .col_expr(deliveries::Column::UpdatedAt, Expr::value(now))
            .filter(deliveries::Column::Id.eq(d.id))
            .filter(deliveries::Column::Status.eq(Status::Pending))
            .filter(deliveries::Column::Attempts.eq(d.attempts))
            .filter(
                Condition::any()
                    .add(deliveries::Column::NextAttemptAt.is_null())
                    .add(deliveries::Column::NextAttemptAt.lte(now)),
            )
            .exec(&self.db)
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(None);
        }
        let outcome = match (channel, event) {
            (Some(channel), Some(event)) if channel.enabled => {
                let n = Notification {
                    id: event.id,
                    event: event.event,
                    organization_id: event.organization_id,
                    project_id: event.project_id,
                    occurred_at: event.created_at,
                    data: event.payload,
                };
                self.sender
                    .send(&self.db, &self.keyring, &channel, &n)
                    .await
            }
            (Some(_), Some(_)) => crate::Outcome {
                delivered: false,
                status: None,
                error: Some("the channel is disabled".into()),
            },
            // Deleted meanwhile: the cascade removes the delivery too.
            _ => return Ok(None),
        };
        let done = Utc::now();
        let mut update = deliveries::Entity::update_many()
            .col_expr(
                deliveries::Column::LastResponseCode,
                Expr::value(outcome.status.map(i32::from)),
            )
            .col_expr(
                deliveries::Column::LastError,
                Expr::value(
                    outcome
                        .error
                        .as_ref()
                        .map(|e| e.chars().take(2000).collect::<String>()),
                ),
            )
            .col_expr(deliveries::Column::UpdatedAt, Expr::value(done));
        if outcome.delivered {
            update = update
                .col_expr(deliveries::Column::Status, Expr::value(Status::Delivered))
                .col_expr(deliveries::Column::DeliveredAt, Expr::value(done))
                .col_expr(
                    deliveries::Column::NextAttemptAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                );
        } else if attempts >= self.config.max_attempts {
            update = update
                .col_expr(deliveries::Column::Status, Expr::value(Status::Failed))
                .col_expr(
                    deliveries::Column::NextAttemptAt,
                    Expr::value(Option::<DateTime<Utc>>::None),
                );
        } else {
            let delay = self.config.backoff(attempts, rand::random::<f64>());
            let next = done + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::zero());
            update = update.col_expr(deliveries::Column::NextAttemptAt, Expr::value(next));
        }
        update
            .filter(deliveries::Column::Id.eq(d.id))
            .filter(deliveries::Column::Attempts.eq(attempts))
            .filter(deliveries::Column::Status.eq(Status::Pending))
            .exec(&self.db)
            .await?;
        if !outcome.delivered {
            tracing::info!(
                delivery = %d.id,
                channel = %d.channel_id,
                attempts,
                status = outcome.status,
                error = outcome.error.as_deref().unwrap_or_default(),
                "a notification was not delivered"
            );
        }
        Ok(Some(outcome.delivered))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let c = WorkerConfig {
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(60),
            ..WorkerConfig::default()
        };
        assert_eq!(c.backoff(1, 1.0), Duration::from_secs(10));
        assert_eq!(c.backoff(2, 1.0), Duration::from_secs(20));
        assert_eq!(c.backoff(3, 1.0), Duration::from_secs(40));
        assert_eq!(c.backoff(4, 1.0), Duration::from_secs(60));
        assert_eq!(c.backoff(40, 1.0), Duration::from_secs(60));
        assert_eq!(c.backoff(2, 0.0), Duration::from_secs(10));
    }
}
