//! Login, second-factor and registration throttling, stored in
//! `auth_throttle` so every api replica sees the same counters.
//!
//! # Policy (defaults of [`ThrottlePolicy`])
//!
//! A password attempt counts on three keys; it is refused while any of them
//! is locked (`RESOURCE_EXHAUSTED` with `retry-after`):
//!
//! | key | what | free failures | then locked for | cap |
//! |---|---|---|---|---|
//! | `ip:<addr>` | every login from one client address | 20 | 1 s, doubling per failure | 1 h |
//! | `account:<who>:ip:<addr>` | one account from one address | 5 | 1 s, doubling | 1 h |
//! | `account:<who>` | one account from all addresses | 20 | 1 s, doubling | **5 min** |
//!
//! `<who>` is `id:<user id>`, or `login:<login>` when no account matches (so
//! probing unknown names costs the same and is throttled the same way, and
//! the dummy argon2 work is bounded per address).
//!
//! Strangers who know a username can therefore lock that account for at
//! most 5 minutes after their last attempt, and only after 20 wrong
//! passwords; their own address (and their address with that account)
//! stays locked for up to an hour per attempt, so they get few attempts to
//! do it with. The user, from any other address, waits at most 5 minutes.
//! (An attacker with many addresses can renew the 5 minutes from a fresh
//! one each time; each renewal still costs them a wrong guess against the
//! account-wide allowance, which is what bounds distributed guessing.)
//!
//! A key is forgotten after [`ThrottlePolicy::window`] (1 h) without
//! failures, counted from the end of its last lock, so an address that
//! retries whenever its lock ends stays at the cap.
//!
//! Second-factor codes count on their own keys (`account:2fa:<user id>`: 5
//! free, capped at 5 min; `ip:2fa:<addr>`: 20 free, capped at 1 h) and a
//! login challenge dies after 5 wrong codes
//! ([`super::second_factor::MAX_CHALLENGE_FAILURES`]). `Register` counts
//! every call on `ip:register:<addr>`: 10 free, then 1 s doubling up to 1 h.
//!
//! # Counting
//!
//! An attempt is counted **before** it is evaluated ([`begin`]): one short
//! write transaction locks each key's row (`INSERT … ON CONFLICT DO
//! UPDATE` takes the row lock on PostgreSQL until commit; SQLite's
//! `BEGIN IMMEDIATE` serializes writers), refuses if a key is locked, and
//! otherwise adds one failure and sets the lock the new count earns. So
//! concurrent attempts cannot all pass the check before the counter moves:
//! at most the free allowance is ever evaluated. No lock is held while the
//! password is hashed. A success then clears the account keys and gives
//! the address its failure back ([`Attempt::succeeded`]); a failure needs
//! nothing more.

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
    /// Failures allowed per account from one client address before that
    /// pair locks.
    pub account_free_failures: u32,
    /// Failures allowed per account from all addresses together before the
    /// account-wide lock.
    pub account_wide_free_failures: u32,
    /// Failures allowed per client address (all accounts) before it locks.
    pub ip_free_failures: u32,
    /// First lock-out; doubles with every further failure.
    pub base_delay: Duration,
    /// Longest lock-out of an address, and of an account from one address.
    pub max_lock: Duration,
    /// Longest account-wide lock-out: the most anyone else can impose on
    /// the account's owner.
    pub account_max_lock: Duration,
    /// A key with no failure for this long after its last lock ended
    /// starts again.
    pub window: Duration,
    /// `Register` calls allowed per client address before they are spaced
    /// out (each further call locks for `base_delay` doubling, up to
    /// `max_lock`).
    pub register_free: u32,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            account_free_failures: 5,
            account_wide_free_failures: 20,
            ip_free_failures: 20,
            base_delay: Duration::seconds(1),
            max_lock: Duration::hours(1),
            account_max_lock: Duration::minutes(5),
            window: Duration::hours(1),
            register_free: 10,
        }
    }
}

/// What a success does to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnSuccess {
    /// Forget the key (an account proved by its owner).
    Clear,
    /// Give the attempt back (an address: one valid account must not
    /// launder a spraying address, but a success is no failure either).
    Refund,
    /// Keep counting (registrations: every call costs a hash).
    Keep,
}

/// One throttle counter and its allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    pub key: String,
    pub free_failures: u32,
    /// Longest lock of this key.
    pub max_lock: Duration,
    pub on_success: OnSuccess,
}

impl ThrottlePolicy {
    /// The keys a password attempt for `who` (`id:<user id>` or
    /// `login:<login>`) from `ip` counts on.
    pub fn password_keys(&self, who: &str, ip: Option<std::net::IpAddr>) -> Vec<ThrottleKey> {
        let mut keys = vec![ThrottleKey {
            key: format!("account:{who}"),
            free_failures: self.account_wide_free_failures,
            max_lock: self.account_max_lock,
            on_success: OnSuccess::Clear,
        }];
        if let Some(ip) = ip {
            keys.push(ThrottleKey {
                key: format!("account:{who}:ip:{ip}"),
                free_failures: self.account_free_failures,
                max_lock: self.max_lock,
                on_success: OnSuccess::Clear,
            });
            keys.push(ThrottleKey {
                key: format!("ip:{ip}"),
                free_failures: self.ip_free_failures,
                max_lock: self.max_lock,
                on_success: OnSuccess::Refund,
            });
        }
        keys
    }

    /// The keys a password attempt for an existing account counts on.
    pub fn account_keys(&self, user_id: Uuid, ip: Option<std::net::IpAddr>) -> Vec<ThrottleKey> {
        self.password_keys(&format!("id:{user_id}"), ip)
    }

    /// The key of `Register` calls from `ip`.
    pub fn register_key(&self, ip: std::net::IpAddr) -> ThrottleKey {
        ThrottleKey {
            key: format!("ip:register:{ip}"),
            free_failures: self.register_free,
            max_lock: self.max_lock,
            on_success: OnSuccess::Keep,
        }
    }

    /// The lock-out after `failures` failures against `free` allowed,
    /// at most `cap`.
    pub fn lock_for(&self, failures: u32, free: u32, cap: Duration) -> Option<Duration> {
        if failures < free.max(1) {
            return None;
        }
        let doublings = (failures - free.max(1)).min(30);
        let secs = self
            .base_delay
            .num_seconds()
            .max(1)
            .saturating_mul(1_i64 << doublings);
        Some(Duration::seconds(secs).min(cap))
    }
}

/// One key as [`begin`] left it.
#[derive(Debug)]
struct Counted {
    key: ThrottleKey,
    /// The count this attempt made.
    failures: i32,
    /// The lock before this attempt (lapsed or none).
    previous_lock: Option<DateTime<Utc>>,
}

/// An attempt counted in advance on its keys; see [`Attempt::succeeded`].
#[derive(Debug)]
#[must_use = "a successful attempt must call `succeeded`"]
pub struct Attempt {
    counted: Vec<Counted>,
}

/// Counts one attempt on every key, atomically with the check: `Throttled`
/// (and nothing counted) when any key is locked at `now`.
pub async fn begin<C: TransactionTrait>(
    db: &C,
    policy: &ThrottlePolicy,
    keys: &[ThrottleKey],
    now: DateTime<Utc>,
) -> Result<Attempt> {
    let mut keys: Vec<&ThrottleKey> = keys.iter().collect();
    // One lock order for every caller: no deadlock between attempts.
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    keys.dedup_by(|a, b| a.key == b.key);
    let txn = crate::db::begin_write(db).await?;
    let mut locked_until: Option<DateTime<Utc>> = None;
    let mut counted = Vec::with_capacity(keys.len());
    for key in keys {
        let row = lock_row(&txn, &key.key, now).await?;
        if let Some(until) = row.locked_until.filter(|t| *t > now) {
            locked_until = locked_until.max(Some(until));
            continue;
        }
        // Quiet since the last failure and the end of its lock: start again.
        let last = row
            .locked_until
            .map_or(row.updated_at, |t| t.max(row.updated_at));
        let (before, window_start) = if row.failures <= 0 || now - last > policy.window {
            (0, now)
        } else {
            (row.failures, row.window_start)
        };
        let failures = before.saturating_add(1);
        let lock = policy
            .lock_for(
                u32::try_from(failures).unwrap_or(u32::MAX),
                key.free_failures,
                key.max_lock,
            )
            .map(|d| now + d);
        auth_throttle::Entity::update_many()
            .col_expr(auth_throttle::Column::Failures, Expr::value(failures))
            .col_expr(
                auth_throttle::Column::WindowStart,
                Expr::value(window_start),
            )
            .col_expr(auth_throttle::Column::LockedUntil, Expr::value(lock))
            .col_expr(auth_throttle::Column::UpdatedAt, Expr::value(now))
            .filter(auth_throttle::Column::Id.eq(row.id))
            .exec(&txn)
            .await?;
        counted.push(Counted {
            key: key.clone(),
            failures,
            previous_lock: row.locked_until,
        });
    }
    if let Some(until) = locked_until {
        // Nothing is counted for a refused attempt.
        txn.rollback().await?;
        return Err(Error::Throttled {
            retry_after_secs: u64::try_from((until - now).num_seconds().max(1)).unwrap_or(1),
        });
    }
    txn.commit().await?;
    Ok(Attempt { counted })
}

/// The row of `key`, created if missing, locked until the end of `txn`.
async fn lock_row<C: ConnectionTrait>(
    txn: &C,
    key: &str,
    now: DateTime<Utc>,
) -> Result<auth_throttle::Model> {
    // `DO UPDATE` (a no-op) rather than `DO NOTHING`: it takes the row lock.
    auth_throttle::Entity::insert(auth_throttle::ActiveModel {
        id: Set(Uuid::now_v7()),
        key: Set(key.to_owned()),
        failures: Set(0),
        window_start: Set(now),
        locked_until: Set(None),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(auth_throttle::Column::Key)
            .update_column(auth_throttle::Column::Key)
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await?;
    auth_throttle::Entity::find()
        .filter(auth_throttle::Column::Key.eq(key))
        .one(txn)
        .await?
        .ok_or_else(|| Error::Internal("throttle row vanished".into()))
}

impl Attempt {
    /// The attempt succeeded: clears account keys and refunds address keys.
    pub async fn succeeded<C: ConnectionTrait>(self, db: &C) -> Result<()> {
        for c in self.counted {
            match c.key.on_success {
                OnSuccess::Keep => {}
                OnSuccess::Clear => reset(db, &c.key).await?,
                OnSuccess::Refund => refund(db, &c).await?,
            }
        }
        Ok(())
    }
}

/// Takes back the failure `c` counted. When no attempt counted after it,
/// the key also gets its previous (lapsed) lock back, so a success does
/// not leave behind the lock its own count set; otherwise that lock stays
/// (a later attempt may be the one it holds back).
async fn refund<C: ConnectionTrait>(db: &C, c: &Counted) -> Result<()> {
    use ferry_db::sea_orm::sea_query::ExprTrait as _;
    let exact = auth_throttle::Entity::update_many()
        .col_expr(
            auth_throttle::Column::Failures,
            Expr::value(c.failures.saturating_sub(1)),
        )
        .col_expr(
            auth_throttle::Column::LockedUntil,
            Expr::value(c.previous_lock),
        )
        .filter(auth_throttle::Column::Key.eq(c.key.key.as_str()))
        .filter(auth_throttle::Column::Failures.eq(c.failures))
        .exec(db)
        .await?
        .rows_affected;
    if exact == 0 {
        auth_throttle::Entity::update_many()
            .col_expr(
                auth_throttle::Column::Failures,
                Expr::col(auth_throttle::Column::Failures).sub(1),
            )
            .filter(auth_throttle::Column::Key.eq(c.key.key.as_str()))
            .filter(auth_throttle::Column::Failures.gt(0))
            .exec(db)
            .await?;
    }
    Ok(())
}

/// Forgets `key`.
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
        let cap = p.max_lock;
        assert_eq!(p.lock_for(4, 5, cap), None);
        assert_eq!(p.lock_for(5, 5, cap), Some(Duration::seconds(1)));
        assert_eq!(p.lock_for(6, 5, cap), Some(Duration::seconds(2)));
        assert_eq!(p.lock_for(9, 5, cap), Some(Duration::seconds(16)));
        assert_eq!(p.lock_for(40, 5, cap), Some(Duration::hours(1)));
        assert_eq!(p.lock_for(u32::MAX, 5, cap), Some(Duration::hours(1)));
        // The account-wide lock strangers can cause is short.
        let wide = p.account_max_lock;
        assert_eq!(p.lock_for(40, 20, wide), Some(Duration::minutes(5)));
    }

    #[test]
    fn password_keys_cover_account_pair_and_address() {
        let p = ThrottlePolicy::default();
        let ip: std::net::IpAddr = [192, 0, 2, 7].into();
        let keys = p.password_keys("login:alice", Some(ip));
        let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(
            names,
            [
                "account:login:alice",
                "account:login:alice:ip:192.0.2.7",
                "ip:192.0.2.7"
            ]
        );
        assert_eq!(keys[0].max_lock, Duration::minutes(5));
        assert_eq!(p.password_keys("login:alice", None).len(), 1);
    }
}
