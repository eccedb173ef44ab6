//! Leases on rows: which replica drives an in-progress rollout
//! (`deployments`) or build (`builds`).
//!
//! A leased row carries `lease_owner` (a replica id) and
//! `lease_expires_at`. A replica claims a row with one conditional UPDATE
//! that succeeds only when the lease is free (never taken or released),
//! expired, or already its own, so of replicas racing for a row exactly
//! one wins. The holder renews it every third of its lifetime
//! ([`Lease::keep`]) and releases it on a graceful stop, so another
//! replica (or the next start) takes over at once instead of waiting for
//! it to expire.

use std::time::Duration;

use chrono::{DateTime, Utc};
use ferry_db::entities::enums::DeploymentStatus;
use ferry_db::entities::{builds, deployments};
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _};
use ferry_db::sea_orm::{ColumnTrait as _, ConnectionTrait, EntityTrait, QueryFilter as _};
use uuid::Uuid;

use crate::Result;

/// A table whose rows carry a lease.
pub trait Leased: EntityTrait {
    /// The primary key column.
    const ID: Self::Column;
    /// `lease_owner`: the replica id of the holder.
    const OWNER: Self::Column;
    /// `lease_expires_at`: `NULL` when released.
    const EXPIRES: Self::Column;
    /// The rows that may be leased (in progress); a finished row is never
    /// claimed.
    fn open() -> Expr;
}

impl Leased for deployments::Entity {
    const ID: deployments::Column = deployments::Column::Id;
    const OWNER: deployments::Column = deployments::Column::LeaseOwner;
    const EXPIRES: deployments::Column = deployments::Column::LeaseExpiresAt;

    fn open() -> Expr {
        deployments::Column::Status.is_in([DeploymentStatus::Pending, DeploymentStatus::Deploying])
    }
}

impl Leased for builds::Entity {
    const ID: builds::Column = builds::Column::Id;
    const OWNER: builds::Column = builds::Column::LeaseOwner;
    const EXPIRES: builds::Column = builds::Column::LeaseExpiresAt;

    fn open() -> Expr {
        builds::Column::Status.is_in(crate::builds::queue::ACTIVE)
    }
}

/// This replica's leases: who it is and how long a lease lasts unrenewed.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// This replica's id, written as `lease_owner`.
    pub owner: &'a str,
    pub ttl: Duration,
}

impl<'a> Lease<'a> {
    pub fn new(owner: &'a str, ttl: Duration) -> Self {
        Self { owner, ttl }
    }

    /// When a lease taken or renewed now expires.
    pub fn until(self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Takes (or renews) the lease of open row `id` when it is free,
    /// expired or already ours; true when this replica now holds it. One
    /// conditional UPDATE: of replicas racing, exactly one wins.
    pub async fn claim<E: Leased>(self, db: &impl ConnectionTrait, id: Uuid) -> Result<bool> {
        let now = Utc::now();
        let result = E::update_many()
            .col_expr(E::OWNER, Expr::value(self.owner.to_owned()))
            .col_expr(E::EXPIRES, Expr::value(self.until()))
            .filter(E::ID.eq(id))
            .filter(E::open())
            .filter(
                Expr::col(E::EXPIRES)
                    .is_null()
                    .or(Expr::col(E::EXPIRES).lt(now))
                    .or(Expr::col(E::OWNER).eq(self.owner.to_owned())),
            )
            .exec(db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Gives up the lease of `id` if this replica holds it (a graceful
    /// stop, or a build to retry): any replica may claim it at once. The
    /// owner is kept, so the row still says who drove it last.
    pub async fn release<E: Leased>(self, db: &impl ConnectionTrait, id: Uuid) -> Result<()> {
        E::update_many()
            .col_expr(E::EXPIRES, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(E::ID.eq(id))
            .filter(E::OWNER.eq(self.owner.to_owned()))
            .exec(db)
            .await?;
        Ok(())
    }

    /// Renews the lease of `id` every third of its lifetime and returns
    /// once it is lost: another replica took the row over, or it is no
    /// longer open (finished, cancelled). A renewal that fails (the
    /// database is away) is logged as `what`'s and retried at the next
    /// turn; the lease may then expire meanwhile.
    pub async fn keep<E: Leased>(self, db: &impl ConnectionTrait, id: Uuid, what: &str) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.claim::<E>(db, id).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "renewing the {what}'s lease failed");
                }
            }
        }
    }
}
