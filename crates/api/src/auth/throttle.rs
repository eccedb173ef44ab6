//! Login throttling, stored in `auth_throttle` so every api replica sees the
//! same counters.
//!
//! Keys are `account:id:<user id>` (or `account:login:<login>` when no
//! account matches, so probing unknown names is throttled the same way) and
//! `ip:<client address>`. Each failure counts; once a key reaches its free
//! allowance it is locked for `base_delay * 2^(failures - allowance)`, at
//! most `max_lock`. A successful login clears the account key (not the
//! address key, so one valid account cannot launder a spraying address).

use chrono::{DateTime, Duration, Utc};
use ferry_db::entities::auth_throttle;
use ferry_db::sea_orm::sea_query::{Expr, OnConflict};
use ferry_db::sea_orm::{
    ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    TransactionSession as _, TransactionTrait,
};
use uuid::Uuid;

use crate::{Error, Result};

/// Throttling parameters.
#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    /// Failures allowed per account before it locks.
    pub account_free_failures: u32,
    /// Failures allowed per client address before it locks.
    pub ip_free_failures: u32,
    /// First lock-out; doubles with every further failure.
    pub base_delay: Duration,
    /// Longest lock-out.
    pub max_lock: Duration,
    /// Counters older than this (and not locked) start again.
    pub window: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            ip_free_failures: 20,
            base_delay: Duration::seconds(1),
            max_lock: Duration::minutes(15),
            window: Duration::hours(1),
        }
    }
}

/// One throttle counter and its allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    pub key: String,
    pub free_failures: u32,
}

impl ThrottlePolicy {
    /// The key of an existing account.
    pub fn account(&self, user_id: Uuid) -> ThrottleKey {
        ThrottleKey {
            key: format!("account:id:{user_id}"),
            free_failures: self.account_free_failures,
        }
    }

    /// The key of a login that matched no account.
    pub fn unknown_login(&self, login: &str) -> ThrottleKey {
        ThrottleKey {
            key: format!("account:login:{login}"),
            free_failures: self.account_free_failures,
        }
    }

    /// The key of a client address.
    pub fn ip(&self, ip: std::net::IpAddr) -> ThrottleKey {
        ThrottleKey {
            key: format!("ip:{ip}"),
            free_failures: self.ip_free_failures,
        }
    }

    /// The lock-out after `failures` failures against `free` allowed.
    pub fn lock_for(&self, failures: u32, free: u32) -> Option<Duration> {
        if failures < free.max(1) {
            return None;
        }
        let doublings = (failures - free.max(1)).min(30);
        let secs = self
            .base_delay
            .num_seconds()
            .max(1)
            .saturating_mul(1_i64 << doublings);
        Some(Duration::seconds(secs).min(self.max_lock))
    }
}

/// `Throttled` when any of `keys` is locked at `now`.
pub async fn check<C: ConnectionTrait>(
    db: &C,
    keys: &[ThrottleKey],
    now: DateTime<Utc>,
) -> Result<()> {
    let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let rows = auth_throttle::Entity::find()
        .filter(auth_throttle::Column::Key.is_in(names))
        .filter(auth_throttle::Column::LockedUntil.gt(now))
        .all(db)
        .await?;
    let until = rows.iter().filter_map(|r| r.locked_until).max();
    match until {
        Some(until) => Err(Error::Throttled {
            retry_after_secs: u64::try_from((until - now).num_seconds().max(1)).unwrap_or(1),
        }),
        None => Ok(()),
    }
}

/// Counts one failure against `key` and locks it when over its allowance.
pub async fn record_failure<C: TransactionTrait>(
    db: &C,
    policy: &ThrottlePolicy,
    key: &ThrottleKey,
    now: DateTime<Utc>,
) -> Result<()> {
    use ferry_db::sea_orm::sea_query::ExprTrait as _;
    let txn = crate::audit::begin_write(db).await?;
    // Atomic increment, so concurrent replicas never lose a failure.
    auth_throttle::Entity::insert(auth_throttle::ActiveModel {
        id: Set(Uuid::now_v7()),
        key: Set(key.key.clone()),
        failures: Set(1),
        window_start: Set(now),
        locked_until: Set(None),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(auth_throttle::Column::Key)
            .value(
                auth_throttle::Column::Failures,
                Expr::col((auth_throttle::Entity, auth_throttle::Column::Failures)).add(1),
            )
            .value(auth_throttle::Column::UpdatedAt, Expr::value(now))
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    let Some(row) = auth_throttle::Entity::find()
        .filter(auth_throttle::Column::Key.eq(key.key.as_str()))
        .one(&txn)
        .await?
    else {
        return Err(Error::Internal("throttle row vanished".into()));
    };
    let unlocked = row.locked_until.is_none_or(|t| t <= now);
    let (failures, window_start) = if unlocked && now - row.window_start > policy.window {
        (1, now)
    } else {
        (row.failures, row.window_start)
    };
    let locked_until = policy
        .lock_for(
            u32::try_from(failures).unwrap_or(u32::MAX),
            key.free_failures,
        )
        .map(|d| now + d);
    auth_throttle::Entity::update_many()
        .col_expr(auth_throttle::Column::Failures, Expr::value(failures))
        .col_expr(
            auth_throttle::Column::WindowStart,
            Expr::value(window_start),
        )
        .col_expr(
            auth_throttle::Column::LockedUntil,
            Expr::value(locked_until),
        )
        .filter(auth_throttle::Column::Id.eq(row.id))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// Forgets the failures of `key` (after a successful login).
pub async fn reset<C: ConnectionTrait>(db: &C, key: &ThrottleKey) -> Result<()> {
    auth_throttle::Entity::delete_many()
        .filter(auth_throttle::Column::Key.eq(key.key.as_str()))
        .exec(db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_grows_exponentially_and_is_capped() {
        let p = ThrottlePolicy::default();
        assert_eq!(p.lock_for(4, 5), None);
        assert_eq!(p.lock_for(5, 5), Some(Duration::seconds(1)));
        assert_eq!(p.lock_for(6, 5), Some(Duration::seconds(2)));
        assert_eq!(p.lock_for(9, 5), Some(Duration::seconds(16)));
        assert_eq!(p.lock_for(40, 5), Some(Duration::minutes(15)));
        assert_eq!(p.lock_for(u32::MAX, 5), Some(Duration::minutes(15)));
    }
}
