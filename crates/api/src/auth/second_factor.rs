//! Two-factor storage: TOTP secrets, the replay guard, recovery codes,
//! login challenges and trusted devices.
//!
//! The schema has no tables for two of these, so (deliberately):
//! - A login **challenge** is a `sessions` row whose `last_active_at` is the
//!   Unix epoch (a challenge is never active). Its token (`fc_…`) is random,
//!   only its SHA-256 is stored, and it expires after
//!   [`IdentityConfig::challenge_ttl`](super::IdentityConfig). Bearer
//!   authentication refuses such rows and `ListSessions` hides them.
//! - The **last accepted TOTP step** of a user is an `auth_throttle` row
//!   keyed `account:totp-step:<user id>` whose `failures` holds the step; it
//!   is never locked, so the throttle ignores it. A code is accepted once.
//!
//! - The **wrong codes tried on a challenge** are an `auth_throttle` row
//!   keyed `account:challenge:<challenge id>` whose `failures` counts every
//!   attempt, before its code is checked; after
//!   [`MAX_CHALLENGE_FAILURES`] the challenge is deleted. Rows older than a
//!   challenge are swept when a new challenge is made.
//!
//! Second-factor failures count on their own throttle keys
//! (`account:2fa:<user id>`, `ip:2fa:<address>`), so a correct password does
//! not clear them.

use chrono::{DateTime, Utc};
use ferry_db::crypto::Keyring;
use ferry_db::entities::types::IpAddress;
use ferry_db::entities::{auth_throttle, recovery_codes, sessions, trusted_devices, users};
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _, OnConflict};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    QueryFilter as _, TransactionSession as _, TransactionTrait,
};
use uuid::Uuid;

use super::throttle::{OnSuccess, ThrottleKey, ThrottlePolicy};
use super::{RequestMeta, totp};
use crate::{Error, Result};

/// Prefix of second-factor challenge tokens.
pub const CHALLENGE_TOKEN_PREFIX: &str = "fc_";
/// Prefix of trusted-device tokens.
pub const DEVICE_TOKEN_PREFIX: &str = "fd_";
/// Table and column of the encrypted TOTP secret (also the AAD).
const SECRET_TABLE: &str = "users";
const SECRET_COLUMN: &str = "totp_secret";

/// What the caller offers as a second factor.
#[derive(Clone, Copy)]
pub enum Proof<'a> {
    Totp(&'a str),
    Recovery(&'a str),
}

impl std::fmt::Debug for Proof<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the code itself.
        f.write_str(match self {
            Proof::Totp(_) => "Proof::Totp(..)",
            Proof::Recovery(_) => "Proof::Recovery(..)",
        })
    }
}

impl Proof<'_> {
    /// The method name recorded in the audit log.
    pub fn method(&self) -> &'static str {
        match self {
            Proof::Totp(_) => "totp",
            Proof::Recovery(_) => "recovery_code",
        }
    }

    /// The request field it came from.
    pub fn field(&self) -> &'static str {
        match self {
            Proof::Totp(_) => "code",
            Proof::Recovery(_) => "recoveryCode",
        }
    }
}

/// Exactly one of `code` and `recovery_code`, or `InvalidArgument`.
pub fn proof<'a>(code: &'a str, recovery_code: &'a str) -> Result<Proof<'a>> {
    match (code.trim(), recovery_code.trim()) {
        ("", "") => Err(Error::InvalidArgument(
            "code: a TOTP code or a recoveryCode is required".into(),
        )),
        (code, "") => Ok(Proof::Totp(code)),
        ("", recovery) => Ok(Proof::Recovery(recovery)),
        _ => Err(Error::InvalidArgument(
            "code: give either code or recoveryCode, not both".into(),
        )),
    }
}

/// Whether a `sessions` row is a second-factor challenge.
pub fn is_challenge(row: &sessions::Model) -> bool {
    is_challenge_activity(row.last_active_at)
}

/// [`is_challenge`] from the row's `last_active_at` alone (challenges are
/// stored with the epoch there).
pub fn is_challenge_activity(last_active_at: DateTime<Utc>) -> bool {
    last_active_at <= DateTime::UNIX_EPOCH
}

/// Codes tried on one login challenge before it is deleted: with the
/// ±1-step window a guess wins with p = 3e-6, so a challenge is worth at
/// most 1.5e-5 to an attacker, who must then get past the password again.
pub const MAX_CHALLENGE_FAILURES: i32 = 5;
/// Key prefix of the attempt counters of challenges.
const CHALLENGE_KEY: &str = "account:challenge:";

/// The throttle keys for second-factor attempts of `user_id` from `meta`.
/// The account's lock is capped like the account-wide password lock.
pub fn throttle_keys(
    policy: &ThrottlePolicy,
    user_id: Uuid,
    meta: &RequestMeta,
) -> Vec<ThrottleKey> {
    let mut keys = vec![ThrottleKey {
        key: format!("account:2fa:{user_id}"),
        free_failures: policy.account_free_failures,
        max_lock: policy.account_max_lock,
        on_success: OnSuccess::Clear,
    }];
    if let Some(ip) = meta.ip {
        keys.push(ThrottleKey {
            key: format!("ip:2fa:{ip}"),
            free_failures: policy.ip_free_failures,
            max_lock: policy.max_lock,
            on_success: OnSuccess::Refund,
        });
    }
    keys
}

/// Counts one attempt on `challenge` before its code is checked; returns
/// the attempt's number. Past [`MAX_CHALLENGE_FAILURES`] the challenge is
/// deleted and `None` returned, so concurrent guesses cannot all be checked.
pub async fn count_challenge_attempt<C: TransactionTrait>(
    db: &C,
    challenge: &sessions::Model,
    now: DateTime<Utc>,
) -> Result<Option<i32>> {
    let key = format!("{CHALLENGE_KEY}{}", challenge.id);
    let txn = crate::db::begin_write(db).await?;
    // Atomic increment: each attempt gets its own number.
    auth_throttle::Entity::insert(auth_throttle::ActiveModel {
        id: Set(Uuid::now_v7()),
        key: Set(key.clone()),
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
    let attempt = auth_throttle::Entity::find()
        .filter(auth_throttle::Column::Key.eq(key.as_str()))
        .one(&txn)
        .await?
        .map_or(i32::MAX, |r| r.failures);
    if attempt > MAX_CHALLENGE_FAILURES {
        delete_challenge(&txn, challenge.id).await?;
        txn.commit().await?;
        return Ok(None);
    }
    txn.commit().await?;
    Ok(Some(attempt))
}

/// Deletes the challenge `id` (its counter goes with the sweep).
pub async fn delete_challenge<C: ConnectionTrait>(db: &C, id: Uuid) -> Result<()> {
    sessions::Entity::delete_many()
        .filter(sessions::Column::Id.eq(id))
        .filter(sessions::Column::LastActiveAt.lte(DateTime::UNIX_EPOCH))
        .exec(db)
        .await?;
    Ok(())
}

/// Encrypts a new TOTP secret for storage in `user`'s row.
pub fn encrypt_secret(
    keyring: &Keyring,
    user: Uuid,
    secret_base32: &str,
) -> Result<ferry_db::crypto::Encrypted> {
    Ok(keyring.encrypt(SECRET_TABLE, SECRET_COLUMN, user, secret_base32)?)
}

/// Checks `proof` for `user` inside `txn` and consumes it (the TOTP step,
/// or the recovery code). `false` when it is wrong or already used.
pub async fn verify<C: ConnectionTrait>(
    txn: &C,
    keyring: &Keyring,
    user: &users::Model,
    proof: Proof<'_>,
    now: DateTime<Utc>,
) -> Result<bool> {
    match proof {
        Proof::Totp(code) => {
            let Some(stored) = &user.totp_secret else {
                return Ok(false);
            };
            let secret = keyring.decrypt(SECRET_TABLE, SECRET_COLUMN, user.id, stored)?;
            let unix = u64::try_from(now.timestamp()).unwrap_or(0);
            match totp::check(secret.expose(), code, unix)? {
                Some(step) => consume_step(txn, user.id, step, now).await,
                None => Ok(false),
            }
        }
        Proof::Recovery(code) => {
            let used = recovery_codes::Entity::update_many()
                .col_expr(recovery_codes::Column::UsedAt, Expr::value(Some(now)))
                .filter(recovery_codes::Column::UserId.eq(user.id))
                .filter(recovery_codes::Column::CodeHash.eq(totp::hash_recovery_code(code)))
                .filter(recovery_codes::Column::UsedAt.is_null())
                .exec(txn)
                .await?
                .rows_affected;
            Ok(used == 1)
        }
    }
}

/// Records `step` as the user's last accepted TOTP step; `false` when it
/// (or a later one) was accepted before.
async fn consume_step<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    step: u64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let step = i32::try_from(step).map_err(|_| Error::Internal("TOTP step overflows".into()))?;
    let key = format!("account:totp-step:{user_id}");
    // Row-locking update: concurrent uses of one step serialize here.
    let advanced = auth_throttle::Entity::update_many()
        .col_expr(auth_throttle::Column::Failures, Expr::value(step))
        .col_expr(auth_throttle::Column::UpdatedAt, Expr::value(now))
        .filter(auth_throttle::Column::Key.eq(key.as_str()))
        .filter(auth_throttle::Column::Failures.lt(step))
        .exec(txn)
        .await?
        .rows_affected;
    if advanced == 1 {
        return Ok(true);
    }
    let exists = auth_throttle::Entity::find()
        .filter(auth_throttle::Column::Key.eq(key.as_str()))
        .one(txn)
        .await?
        .is_some();
    if exists {
        return Ok(false);
    }
    let inserted = auth_throttle::ActiveModel {
        id: Set(Uuid::now_v7()),
        key: Set(key),
        failures: Set(step),
        window_start: Set(now),
        locked_until: Set(None),
        updated_at: Set(now),
    }
    .insert(txn)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        // A concurrent first use won.
        Err(e) if crate::db::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Replaces every recovery code of `user_id`; returns the new codes (the
/// only time they exist in clear).
pub async fn replace_recovery_codes<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    recovery_codes::Entity::delete_many()
        .filter(recovery_codes::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    let codes = totp::generate_recovery_codes();
    let rows = codes.iter().map(|code| recovery_codes::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        code_hash: Set(totp::hash_recovery_code(code)),
        used_at: Set(None),
        created_at: Set(now),
    });
    recovery_codes::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await?;
    Ok(codes)
}

/// Opens a login challenge for `user_id`: returns its token (shown once)
/// and the row.
pub async fn create_challenge<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    meta: &RequestMeta,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<(String, sessions::Model)> {
    // Counters of challenges that have expired by now.
    auth_throttle::Entity::delete_many()
        .filter(auth_throttle::Column::Key.starts_with(CHALLENGE_KEY))
        .filter(auth_throttle::Column::UpdatedAt.lt(now - ttl))
        .exec(txn)
        .await?;
    let token = ferry_db::token::generate_token(CHALLENGE_TOKEN_PREFIX);
    let row = sessions::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        token_hash: Set(ferry_db::token::hash_token(&token)),
        expires_at: Set(now + ttl),
        ip_address: Set(meta.ip.map(IpAddress)),
        user_agent: Set(meta.user_agent.clone()),
        created_at: Set(now),
        last_active_at: Set(DateTime::UNIX_EPOCH),
    }
    .insert(txn)
    .await?;
    Ok((token, row))
}

/// The live challenge with `token`, if any.
pub async fn find_challenge<C: ConnectionTrait>(
    db: &C,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<sessions::Model>> {
    if !token.starts_with(CHALLENGE_TOKEN_PREFIX) {
        return Ok(None);
    }
    let row = sessions::Entity::find()
        .filter(sessions::Column::TokenHash.eq(ferry_db::token::hash_token(token)))
        .one(db)
        .await?;
    Ok(row.filter(|r| is_challenge(r) && r.expires_at > now))
}

/// The valid trusted device of `user_id` with `token`, if any.
pub async fn find_trusted_device<C: ConnectionTrait>(
    db: &C,
    user_id: Uuid,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<trusted_devices::Model>> {
    if !token.starts_with(DEVICE_TOKEN_PREFIX) {
        return Ok(None);
    }
    let row = trusted_devices::Entity::find()
        .filter(trusted_devices::Column::TokenHash.eq(ferry_db::token::hash_token(token)))
        .one(db)
        .await?;
    Ok(row.filter(|d| d.user_id == user_id && d.expires_at > now))
}

/// Remembers a device for `user_id`: returns its token (shown once).
pub async fn remember_device<C: ConnectionTrait>(
    txn: &C,
    user_id: Uuid,
    name: Option<String>,
    meta: &RequestMeta,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<(String, trusted_devices::Model)> {
    let token = ferry_db::token::generate_token(DEVICE_TOKEN_PREFIX);
    let row = trusted_devices::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        token_hash: Set(ferry_db::token::hash_token(&token)),
        name: Set(name),
        user_agent: Set(meta.user_agent.clone()),
        expires_at: Set(now + ttl),
        last_used_at: Set(None),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok((token, row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_proof() {
        assert!(matches!(proof("123456", ""), Ok(Proof::Totp("123456"))));
        assert!(matches!(proof(" ", "ab-cd"), Ok(Proof::Recovery("ab-cd"))));
        assert!(proof("", "").is_err());
        assert!(proof("1", "2").is_err());
        assert_eq!(format!("{:?}", Proof::Totp("123456")), "Proof::Totp(..)");
    }
}
