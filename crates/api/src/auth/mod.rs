//! Authentication: who is calling.
//!
//! [`Identity::authenticate`] is the one function every authenticated RPC
//! calls first. It reads `authorization: Bearer <token>` and resolves it to
//! an [`Actor`]: a session token (`fs_…`, from `Login`) or an organization
//! API token (`ferry_pat_…`). Only the tokens' SHA-256 is stored. Sessions
//! record their last activity at most once a minute, so authenticating does
//! not write on every call.

pub mod cache;
pub mod second_factor;
pub mod throttle;
pub mod totp;

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use ferry_db::crypto::Keyring;
use ferry_db::entities::enums::{InviteRole, OrgRole};
use ferry_db::entities::{api_tokens, sessions, users};
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, JoinType, QueryFilter as _,
    QuerySelect as _, RelationTrait as _,
};
use tonic::Request;
use tonic::metadata::MetadataMap;
use uuid::Uuid;

pub use crate::request::RequestMeta;
use crate::{Error, Result};
use cache::{CredentialCache, Known};

/// Where links in mail (invitations) point when `FERRY_PUBLIC_URL` is unset.
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";
pub use throttle::ThrottlePolicy;

/// Prefix of session tokens.
pub const SESSION_TOKEN_PREFIX: &str = "fs_";
/// Prefix of organization API tokens.
pub const API_TOKEN_PREFIX: &str = "ferry_pat_";
/// `last_active_at` / `last_used_at` are refreshed at most this often.
pub const ACTIVITY_GRANULARITY_SECS: i64 = 60;
/// The one message for every bad credential, so callers learn nothing.
pub const INVALID_TOKEN: &str = "missing, invalid or expired credential";

/// Identity settings.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// How long a session lasts after login.
    pub session_ttl: Duration,
    /// Login, second-factor and registration throttling (policy and its
    /// numbers: [`auth::throttle`](crate::auth::throttle)).
    pub throttle: ThrottlePolicy,
    /// How long a second-factor challenge from `Login` stays valid.
    pub challenge_ttl: Duration,
    /// How long a remembered device skips the second factor.
    pub trusted_device_ttl: Duration,
    /// Base of invitation accept links (the public URL of Ferry's front end).
    pub public_url: String,
    /// Proxies whose `X-Forwarded-For` names the client address.
    pub trusted_proxies: crate::request::TrustedProxies,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::hours(24 * 30),
            throttle: ThrottlePolicy::default(),
            challenge_ttl: Duration::minutes(5),
            trusted_device_ttl: Duration::days(30),
            public_url: DEFAULT_PUBLIC_URL.to_owned(),
            trusted_proxies: crate::request::TrustedProxies::default(),
        }
    }
}

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// An interactive login session.
    Session { id: Uuid },
    /// An API token: limited to one organization and at most `role`.
    ApiToken {
        id: Uuid,
        organization_id: Uuid,
        role: OrgRole,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: Uuid,
    /// Platform super-admin (never through an API token).
    pub super_admin: bool,
    pub credential: Credential,
    pub meta: RequestMeta,
}

impl Actor {
    /// The session id, or `PermissionDenied` for API tokens (account
    /// management needs an interactive session).
    pub fn session_id(&self) -> Result<Uuid> {
        match self.credential {
            Credential::Session { id } => Ok(id),
            Credential::ApiToken { .. } => Err(Error::PermissionDenied(
                "this call needs a login session, not an API token".into(),
            )),
        }
    }
}

/// Authentication state shared by the identity services.
#[derive(Clone)]
pub struct Identity {
    pub db: DatabaseConnection,
    pub config: Arc<IdentityConfig>,
    /// Keys for encrypted columns (the TOTP secret); without it 2FA
    /// enrolment and checks fail with `FailedPrecondition`.
    pub keyring: Option<Arc<Keyring>>,
    /// Credentials that authenticated recently ([`cache`]).
    pub credentials: CredentialCache,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Identity {
    pub fn new(db: DatabaseConnection, config: IdentityConfig) -> Self {
        Self {
            config: Arc::new(config),
            keyring: None,
            // Caching starts only once revocations can be heard
            // (`cache::spawn_listener`, PostgreSQL). SQLite never caches: other
            // processes (the scheduler, `ferry-api` commands, an operator's
            // sqlite3) write the same file and cannot tell this one.
            credentials: CredentialCache::disabled(),
            db,
        }
    }

    /// Adds the keyring that encrypts TOTP secrets.
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Self {
        self.keyring = Some(keyring);
        self
    }

    /// The keyring, or `FailedPrecondition`.
    pub fn keyring(&self) -> Result<&Keyring> {
        self.keyring
            .as_deref()
            .ok_or_else(|| Error::FailedPrecondition("server encryption is not configured".into()))
    }

    /// THE authentication path: resolves the bearer token of `request` to
    /// an [`Actor`], or `Unauthenticated`. A token that authenticated in
    /// the last seconds is answered from memory ([`cache`]).
    pub(crate) async fn authenticate<T>(&self, request: &Request<T>) -> Result<Actor> {
        let meta = RequestMeta::of(request, &self.config.trusted_proxies);
        let token = bearer_token(request.metadata())
            .ok_or_else(|| Error::Unauthenticated(INVALID_TOKEN.into()))?;
        let now = Utc::now();
        let hash = ferry_db::token::hash_token(token);
        let generation = self.credentials.generation();
        let known = match self.credentials.get(&hash, now) {
            Some(known) => {
                let known = self.touch(known, now).await;
                self.credentials.put(hash, known, generation);
                known
            }
            None => {
                let known = if token.starts_with(SESSION_TOKEN_PREFIX) {
                    self.session(&hash, now).await?
                } else if token.starts_with(API_TOKEN_PREFIX) {
                    self.api_token(&hash, now).await?
                } else {
                    return Err(Error::Unauthenticated(INVALID_TOKEN.into()));
                };
                let known = self.touch(known, now).await;
                self.credentials.put(hash, known, generation);
                known
            }
        };
        Ok(Actor {
            user_id: known.user_id,
            super_admin: known.super_admin,
            credential: known.credential,
            meta,
        })
    }

    /// The login session whose token hashes to `hash`.
    async fn session(&self, hash: &str, now: DateTime<Utc>) -> Result<Known> {
        // One query, only the columns the check needs: session id, expiry,
        // activity, and the user's id and super-admin flag (the inner join
        // also proves the user exists).
        let found = sessions::Entity::find()
            .select_only()
            .columns([
                sessions::Column::Id,
                sessions::Column::ExpiresAt,
                sessions::Column::LastActiveAt,
            ])
            .column(users::Column::Id)
            .column(users::Column::IsSuperAdmin)
            .join(JoinType::InnerJoin, sessions::Relation::User.def())
            .filter(sessions::Column::TokenHash.eq(hash))
            .into_tuple::<(Uuid, DateTime<Utc>, DateTime<Utc>, Uuid, bool)>()
            .all(&self.db) // unique key, no LIMIT: see `authz::Caller::load`
            .await?
            .pop();
        let Some((session_id, expires_at, last_active_at, user_id, super_admin)) = found else {
            return Err(Error::Unauthenticated(INVALID_TOKEN.into()));
        };
        // Second-factor challenges live in `sessions` too; never sessions.
        if expires_at <= now || second_factor::is_challenge_activity(last_active_at) {
            return Err(Error::Unauthenticated(INVALID_TOKEN.into()));
        }
        Ok(Known {
            user_id,
            super_admin,
            credential: Credential::Session { id: session_id },
            last_used_at: Some(last_active_at),
            valid_until: CredentialCache::trust_until(now, Some(expires_at)),
        })
    }

    /// The API token whose secret hashes to `hash`.
    async fn api_token(&self, hash: &str, now: DateTime<Utc>) -> Result<Known> {
        use api_tokens::Column as C;
        let found = api_tokens::Entity::find()
            .select_only()
            .columns([
                C::Id,
                C::OrganizationId,
                C::UserId,
                C::Role,
                C::ExpiresAt,
                C::LastUsedAt,
                C::RevokedAt,
            ])
            .filter(C::TokenHash.eq(hash))
            .into_tuple::<ApiTokenRow>()
            .all(&self.db) // unique key, no LIMIT: see `authz::Caller::load`
            .await?
            .pop();
        let Some((id, organization_id, user_id, role, expires_at, last_used_at, revoked_at)) =
            found
        else {
            return Err(Error::Unauthenticated(INVALID_TOKEN.into()));
        };
        if revoked_at.is_some() || expires_at.is_some_and(|e| e <= now) {
            return Err(Error::Unauthenticated(INVALID_TOKEN.into()));
        }
        Ok(Known {
            user_id,
            super_admin: false,
            credential: Credential::ApiToken {
                id,
                organization_id,
                role: OrgRole::from(role),
            },
            last_used_at,
            valid_until: CredentialCache::trust_until(now, expires_at),
        })
    }

    /// Records the credential's use when the stored time is older than
    /// [`ACTIVITY_GRANULARITY_SECS`]. Best effort: a failed touch must not
    /// fail the call.
    async fn touch(&self, known: Known, now: DateTime<Utc>) -> Known {
        let stale = known
            .last_used_at
            .is_none_or(|t| (now - t).num_seconds() >= ACTIVITY_GRANULARITY_SECS);
        if !stale {
            return known;
        }
        let touched = match known.credential {
            Credential::Session { id } => sessions::Entity::update_many()
                .col_expr(sessions::Column::LastActiveAt, Expr::value(now))
                .filter(sessions::Column::Id.eq(id))
                .exec(&self.db)
                .await
                .map(drop),
            Credential::ApiToken { id, .. } => api_tokens::Entity::update_many()
                .col_expr(api_tokens::Column::LastUsedAt, Expr::value(Some(now)))
                .filter(api_tokens::Column::Id.eq(id))
                .exec(&self.db)
                .await
                .map(drop),
        };
        if let Err(err) = touched {
            tracing::warn!(error = %err, "recording credential use failed");
            return known;
        }
        Known {
            last_used_at: Some(now),
            ..known
        }
    }
}

/// The `api_tokens` columns authentication reads: id, organization, user,
/// role, expiry, last use, revocation.
type ApiTokenRow = (
    Uuid,
    Uuid,
    Uuid,
    InviteRole,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// The token of `authorization: Bearer <token>`, if well-formed.
pub fn bearer_token(metadata: &MetadataMap) -> Option<&str> {
    let header = metadata.get("authorization")?.to_str().ok()?;
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Verifies `password` against `stored` (or, when the account does not
/// exist or has no password, against a dummy hash, so both cases cost the
/// same argon2 work). Runs on the blocking pool.
pub async fn verify_password_timed(password: String, stored: Option<String>) -> Result<bool> {
    tokio::task::spawn_blocking(move || -> Result<bool> {
        match stored {
            Some(hash) => Ok(ferry_db::password::verify_password(&password, &hash)?),
            None => {
                let dummy = dummy_hash()?;
                // Same work as a real check; the answer is always "no".
                let _ = ferry_db::password::verify_password(&password, dummy)?;
                Ok(false)
            }
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("password check task failed: {e}")))?
}

/// Hashes a password on the blocking pool.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || ferry_db::password::hash_password(&password))
        .await
        .map_err(|e| Error::Internal(format!("password hash task failed: {e}")))?
        .map_err(Error::from)
}

fn dummy_hash() -> Result<&'static str> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let hash = ferry_db::password::hash_password("ferry-dummy-password-for-timing")?;
    Ok(DUMMY.get_or_init(|| hash))
}
