//! Leases in the `leases` table: which scheduler replica runs a loop, and
//! until when. One row per loop name; taking it is one conditional UPDATE
//! (free, expired, or already ours), so of racing replicas exactly one
//! wins, on PostgreSQL and SQLite alike. The holder renews it every tick;
//! when the holder dies another replica takes over once it expires.
//!
//! A database row rather than a Kubernetes Lease: the scheduler needs the
//! database anyway, it works without a cluster (`make run`, plan-only
//! installs), and the work it guards is recorded in the same database.
//! Every action under it is idempotent as well (unique run slots,
//! conditional updates, server-side apply), so a lease lost mid-tick costs
//! at most a repeated no-op.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_db::entities::leases;
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _};
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _,
    TryInsertResult,
};
use uuid::Uuid;

use crate::Result;

/// One named lease as seen by one replica.
#[derive(Debug, Clone)]
pub struct Lease {
    name: &'static str,
    holder: String,
    ttl: Duration,
}

impl Lease {
    pub fn new(name: &'static str, holder: impl Into<String>, ttl: Duration) -> Self {
        Self {
            name,
            holder: holder.into(),
            ttl,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How often a holder renews: a third of the TTL, so two renewals can
    /// fail before the lease runs out.
    pub fn renew_every(&self) -> Duration {
        (self.ttl / 3).max(Duration::from_millis(100))
    }

    /// Runs `work` (which must hold the lease already) while renewing the
    /// lease every [`Lease::renew_every`]. `None` when the lease was lost
    /// or could not be renewed before `work` finished: `work` is dropped
    /// then (an open transaction rolls back), so no two replicas act at
    /// once for longer than one renewal period.
    pub async fn while_held<F: std::future::Future>(
        &self,
        db: &DatabaseConnection,
        work: F,
    ) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        let mut renew = tokio::time::interval(self.renew_every());
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await; // the first tick is now: the lease was just taken
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                _ = renew.tick() => match self.acquire(db, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(lease = self.name, "lease lost to another replica; stopping");
                        return None;
                    }
                    Err(err) => {
                        tracing::warn!(lease = self.name, error = %err, "renewing the lease failed; stopping");
                        return None;
                    }
                },
            }
        }
    }

    /// Takes or renews the lease at `now`; `true` when this replica holds
    /// it until `now + ttl`.
    pub async fn acquire(&self, db: &DatabaseConnection, now: DateTime<Utc>) -> Result<bool> {
        let until = now
            + chrono::Duration::from_std(self.ttl)
                .unwrap_or_else(|_| chrono::Duration::seconds(15));
        if self.take(db, now, until).await? {
            return Ok(true);
        }
        // No row yet (the first attempt ever), or held by another replica:
        // make sure the row exists (losing this insert to another replica
        // is fine) and try once more.
        let created = leases::Entity::insert(leases::ActiveModel {
            id: Set(Uuid::new_v4()),
            name: Set(self.name.to_owned()),
            holder: Set(String::new()),
            expires_at: Set(DateTime::<Utc>::UNIX_EPOCH),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict_do_nothing_on([leases::Column::Name])
        .exec_without_returning(db)
        .await?;
        if matches!(created, TryInsertResult::Inserted(n) if n > 0) {
            return self.take(db, now, until).await;
        }
        Ok(false)
    }

    /// The conditional UPDATE: `true` when the lease is ours until `until`.
    async fn take(
        &self,
        db: &DatabaseConnection,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let taken = leases::Entity::update_many()
            .col_expr(leases::Column::Holder, Expr::value(self.holder.clone()))
            .col_expr(leases::Column::ExpiresAt, Expr::value(until))
            .col_expr(leases::Column::UpdatedAt, Expr::value(now))
            .filter(leases::Column::Name.eq(self.name))
            .filter(
                Expr::col(leases::Column::Holder)
                    .eq(self.holder.clone())
                    .or(Expr::col(leases::Column::ExpiresAt).lt(now)),
            )
            .exec(db)
            .await?;
        Ok(taken.rows_affected == 1)
    }

    /// Every `interval` until shutdown, runs `pass` if this replica holds
    /// (or can take) the lease, renewing it while the pass runs; then gives
    /// the lease up. A failed pass is logged and retried next interval.
    pub async fn every<F, Fut, T>(
        &self,
        db: &DatabaseConnection,
        interval: Duration,
        shutdown: &ferry_common::Shutdown,
        mut pass: F,
    ) where
        F: FnMut(DateTime<Utc>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
        T: std::fmt::Debug,
    {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = ticker.tick() => {}
            }
            let now = Utc::now();
            match self.acquire(db, now).await {
                Ok(true) => match self.while_held(db, pass(now)).await {
                    Some(Ok(done)) => tracing::debug!(lease = self.name, ?done, "pass done"),
                    Some(Err(err)) => {
                        tracing::warn!(lease = self.name, error = %err, "pass failed; will retry")
                    }
                    None => {}
                },
                Ok(false) => {}
                Err(err) => tracing::warn!(lease = self.name, error = %err, "lease check failed"),
            }
        }
        if let Err(err) = self.release(db).await {
            tracing::warn!(lease = self.name, error = %err, "releasing the lease failed");
        }
    }

    /// Gives the lease up (shutdown), so another replica need not wait for
    /// it to expire.
    pub async fn release(&self, db: &DatabaseConnection) -> Result<()> {
        leases::Entity::update_many()
            .col_expr(leases::Column::Holder, Expr::value(String::new()))
            .col_expr(
                leases::Column::ExpiresAt,
                Expr::value(DateTime::<Utc>::UNIX_EPOCH),
            )
            .filter(leases::Column::Name.eq(self.name))
            .filter(leases::Column::Holder.eq(self.holder.clone()))
            .exec(db)
            .await?;
        Ok(())
    }
}

/// A replica id: host name, process id and a random part.
pub fn replica_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "scheduler".into());
    format!(
        "{host}/{}/{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}
