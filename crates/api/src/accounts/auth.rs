//! `ferry.v1.AuthService`: register, login, sessions, passwords, and
//! two-factor authentication (TOTP, recovery codes, trusted devices; storage
//! in [`crate::auth::second_factor`]).

use chrono::Utc;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::types::IpAddress;
use ferry_db::entities::{api_tokens, recovery_codes, sessions, trusted_devices, users};
use ferry_db::sea_orm::sea_query::{Expr, ExprTrait as _};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, Condition, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::auth_service_server::AuthService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::{Auditor, Entry};
use crate::auth::second_factor::{self, Proof};
use crate::auth::{self, Identity, RequestMeta, SESSION_TOKEN_PREFIX, throttle, totp};
use crate::authz::Caller;
use crate::db::is_unique_violation;
use crate::paging::{Key, Keyset, Kind, desc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// Shortest accepted password.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest accepted password (bounds the hashing work per request).
pub const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest accepted email address.
const MAX_EMAIL_CHARS: usize = 254;
/// The one answer for unknown accounts and wrong passwords.
pub const INVALID_CREDENTIALS: &str = "invalid credentials";
/// The one answer for a wrong code or an unknown or expired challenge.
pub const INVALID_SECOND_FACTOR: &str = "invalid or expired second-factor challenge or code";
/// Longest accepted trusted-device name.
const MAX_DEVICE_NAME_CHARS: usize = 100;

/// The `AuthService` implementation.
#[derive(Debug, Clone)]
pub struct AuthApi {
    identity: Identity,
}

impl AuthApi {
    pub fn new(identity: Identity) -> Self {
        Self { identity }
    }
}

/// `email: ...` unless it looks like name@domain.tld; returns it lower-cased.
pub fn validate_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.chars().count() <= MAX_EMAIL_CHARS
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain
                    .rsplit_once('.')
                    .is_some_and(|(host, tld)| !host.is_empty() && !tld.is_empty())
        });
    if valid {
        Ok(email)
    } else {
        Err(Error::InvalidArgument(
            "email: must look like name@domain.tld".into(),
        ))
    }
}

/// `username: must match ^[a-z0-9_-]{3,50}$`.
pub fn validate_username(username: &str) -> Result<String> {
    let ok = (3..=50).contains(&username.len())
        && username
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(username.to_owned())
    } else {
        Err(Error::InvalidArgument(
            "username: must match ^[a-z0-9_-]{3,50}$".into(),
        ))
    }
}

/// Password length rules, naming `field`.
pub fn validate_password(field: &str, password: &str) -> Result<()> {
    let n = password.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(Error::InvalidArgument(format!(
            "{field}: must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if n > MAX_PASSWORD_CHARS {
        return Err(Error::InvalidArgument(format!(
            "{field}: must have at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

pub(crate) fn user_to_pb(user: &users::Model) -> pb::User {
    pb::User {
        id: user.id.to_string(),
        email: user.email.clone(),
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        is_super_admin: user.is_super_admin,
        totp_enabled: user.totp_enabled,
        created_at: Some(ts(user.created_at)),
        last_login_at: user.last_login_at.map(ts),
    }
}

impl AuthApi {
    async fn register(&self, meta: RequestMeta, req: pb::RegisterRequest) -> Result<pb::User> {
        let email = validate_email(&req.email)?;
        let username = validate_username(&req.username)?;
        validate_password("password", &req.password)?;
        let db = &self.identity.db;
        if let Some(ip) = meta.ip {
            // Every call counts (each costs an argon2 hash and may probe
            // which names are taken), successful or not.
            let policy = &self.identity.config.throttle;
            let _counted =
                throttle::begin(db, policy, &[policy.register_key(ip)], Utc::now()).await?;
        }
        let taken = users::Entity::find()
            .filter(
                users::Column::Email
                    .eq(email.as_str())
                    .or(users::Column::Username.eq(username.as_str())),
            )
            .one(db)
            .await?
            .is_some();
        if taken {
            return Err(already_registered());
        }
        let password_hash = auth::hash_password(req.password).await?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let user = users::ActiveModel {
            id: Set(Uuid::now_v7()),
            username: Set(username),
            email: Set(email),
            password_hash: Set(Some(password_hash)),
            display_name: Set(None),
            avatar_url: Set(None),
            is_super_admin: Set(false),
            totp_secret: Set(None),
            totp_enabled: Set(false),
            preferences: Set(json!({})),
            last_login_at: Set(None),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                already_registered()
            } else {
                e.into()
            }
        })?;
        Auditor::user(&meta, Some(user.id))
            .record(
                &txn,
                Entry::new("user.register", AuditResourceType::User, user.id)
                    .details(json!({ "username": user.username })),
            )
            .await?;
        txn.commit().await?;
        Ok(user_to_pb(&user))
    }

    async fn login(&self, meta: RequestMeta, req: pb::LoginRequest) -> Result<pb::LoginResponse> {
        let db = &self.identity.db;
        let policy = &self.identity.config.throttle;
        let login = req.login.trim().to_lowercase();
        if login.is_empty() || login.chars().count() > MAX_EMAIL_CHARS {
            return Err(Error::Unauthenticated(INVALID_CREDENTIALS.into()));
        }
        let user = users::Entity::find()
            .filter(if login.contains('@') {
                users::Column::Email.eq(login.as_str())
            } else {
                users::Column::Username.eq(login.as_str())
            })
            .one(db)
            .await?;
        let who = match &user {
            Some(u) => format!("id:{}", u.id),
            None => format!("login:{login}"),
        };
        // Counted before the (slow) check, so parallel guesses cannot all
        // be checked before the counters move.
        let attempt =
            throttle::begin(db, policy, &policy.password_keys(&who, meta.ip), Utc::now()).await?;
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let ok = auth::verify_password_timed(req.password, stored).await?;
        let Some(user) = user.filter(|_| ok) else {
            return Err(Error::Unauthenticated(INVALID_CREDENTIALS.into()));
        };
        attempt.succeeded(db).await?;

        let now = Utc::now();
        let mut device = None;
        if user.totp_enabled {
            let token = req.device_token.trim();
            if !token.is_empty() {
                device = second_factor::find_trusted_device(db, user.id, token, now).await?;
            }
            if device.is_none() {
                return self.challenge(&meta, &user, now).await;
            }
        }
        let txn = crate::db::begin_write(db).await?;
        let (token, expires_at, session) = self.open_session(&txn, &user, &meta, now).await?;
        if let Some(device) = &device {
            trusted_devices::Entity::update_many()
                .col_expr(trusted_devices::Column::LastUsedAt, Expr::value(Some(now)))
                .filter(trusted_devices::Column::Id.eq(device.id))
                .exec(&txn)
                .await?;
        }
        let details = match &device {
            Some(d) => json!({ "trustedDeviceId": d.id }),
            None => json!({}),
        };
        Auditor::user(&meta, Some(user.id))
            .record(
                &txn,
                Entry::new("user.login", AuditResourceType::Session, session.id).details(details),
            )
            .await?;
        txn.commit().await?;
        let user = users::Model {
            last_login_at: Some(now),
            ..user
        };
        Ok(pb::LoginResponse {
            token,
            expires_at: Some(ts(expires_at)),
            user: Some(user_to_pb(&user)),
            ..Default::default()
        })
    }

    /// Creates a session for `user` in `txn` and stamps `last_login_at`.
    async fn open_session<C: ferry_db::sea_orm::ConnectionTrait>(
        &self,
        txn: &C,
        user: &users::Model,
        meta: &RequestMeta,
        now: chrono::DateTime<Utc>,
    ) -> Result<(String, chrono::DateTime<Utc>, sessions::Model)> {
        let token = ferry_db::token::generate_token(SESSION_TOKEN_PREFIX);
        let expires_at = now + self.identity.config.session_ttl;
        let session = sessions::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            token_hash: Set(ferry_db::token::hash_token(&token)),
            expires_at: Set(expires_at),
            ip_address: Set(meta.ip.map(IpAddress)),
            user_agent: Set(meta.user_agent.clone()),
            created_at: Set(now),
            last_active_at: Set(now),
        }
        .insert(txn)
        .await?;
        users::Entity::update_many()
            .col_expr(users::Column::LastLoginAt, Expr::value(Some(now)))
            .filter(users::Column::Id.eq(user.id))
            .exec(txn)
            .await?;
        Ok((token, expires_at, session))
    }

    /// The "second factor required" answer: a fresh challenge, no session.
    async fn challenge(
        &self,
        meta: &RequestMeta,
        user: &users::Model,
        now: chrono::DateTime<Utc>,
    ) -> Result<pb::LoginResponse> {
        let txn = crate::db::begin_write(&self.identity.db).await?;
        let (challenge_token, row) = second_factor::create_challenge(
            &txn,
            user.id,
            meta,
            now,
            self.identity.config.challenge_ttl,
        )
        .await?;
        Auditor::user(meta, Some(user.id))
            .record(
                &txn,
                Entry::new("user.login_challenge", AuditResourceType::User, user.id),
            )
            .await?;
        txn.commit().await?;
        Ok(pb::LoginResponse {
            second_factor_required: true,
            challenge_token,
            challenge_expires_at: Some(ts(row.expires_at)),
            ..Default::default()
        })
    }

    async fn current_user(&self, user_id: Uuid) -> Result<users::Model> {
        users::Entity::find_by_id(user_id)
            .one(&self.identity.db)
            .await?
            .ok_or_else(|| Error::Unauthenticated(auth::INVALID_TOKEN.into()))
    }
}

/// Two-factor authentication.
impl AuthApi {
    /// The calling user behind an interactive session (2FA management is
    /// not for API tokens).
    async fn session_user(&self, caller: &Caller) -> Result<users::Model> {
        caller.session_id()?;
        self.current_user(caller.user_id).await
    }

    /// Verifies and consumes `proof` for `user` in `txn`. On a wrong code
    /// the transaction is rolled back and `wrong` returned (the attempt was
    /// counted by [`Self::second_factor_attempt`] already).
    async fn check_proof(
        &self,
        txn: ferry_db::sea_orm::DatabaseTransaction,
        user: &users::Model,
        proof: Proof<'_>,
        wrong: Error,
    ) -> Result<ferry_db::sea_orm::DatabaseTransaction> {
        let now = Utc::now();
        if second_factor::verify(&txn, self.identity.keyring()?, user, proof, now).await? {
            return Ok(txn);
        }
        txn.rollback().await?;
        Err(wrong)
    }

    /// Counts a second-factor attempt of `user_id` before its code is
    /// checked; `Throttled` while its keys are locked.
    async fn second_factor_attempt(
        &self,
        user_id: Uuid,
        meta: &RequestMeta,
    ) -> Result<throttle::Attempt> {
        let policy = &self.identity.config.throttle;
        let keys = second_factor::throttle_keys(policy, user_id, meta);
        throttle::begin(&self.identity.db, policy, &keys, Utc::now()).await
    }

    /// Asks for the caller's password again before a sensitive change. It
    /// counts on the login throttle like a login; a wrong one is
    /// `PermissionDenied` naming `field` (the session is fine, the step-up
    /// is not), an empty one `InvalidArgument`.
    async fn recheck_password(
        &self,
        user: &users::Model,
        meta: &RequestMeta,
        field: &str,
        password: String,
    ) -> Result<()> {
        if password.is_empty() {
            return Err(Error::InvalidArgument(format!("{field}: is required")));
        }
        let db = &self.identity.db;
        let policy = &self.identity.config.throttle;
        let attempt = throttle::begin(
            db,
            policy,
            &policy.account_keys(user.id, meta.ip),
            Utc::now(),
        )
        .await?;
        if !auth::verify_password_timed(password, user.password_hash.clone()).await? {
            return Err(wrong_password(field));
        }
        attempt.succeeded(db).await
    }

    async fn audit_user(
        &self,
        txn: &ferry_db::sea_orm::DatabaseTransaction,
        meta: &RequestMeta,
        user_id: Uuid,
        action: &'static str,
        details: serde_json::Value,
    ) -> Result<()> {
        Auditor::user(meta, Some(user_id))
            .record(
                txn,
                Entry::new(action, AuditResourceType::User, user_id).details(details),
            )
            .await?;
        Ok(())
    }

    async fn begin_totp(
        &self,
        caller: &Caller,
        req: pb::BeginTotpEnrollmentRequest,
    ) -> Result<pb::BeginTotpEnrollmentResponse> {
        let user = self.session_user(caller).await?;
        if user.totp_enabled {
            return Err(Error::FailedPrecondition(
                "two-factor authentication is already enabled".into(),
            ));
        }
        // A stolen session alone must not bind the account to a new device.
        self.recheck_password(&user, &caller.meta, "password", req.password)
            .await?;
        let secret = totp::new_secret();
        let otpauth_uri = totp::otpauth_uri(&secret, &user.email)?;
        let stored = second_factor::encrypt_secret(self.identity.keyring()?, user.id, &secret)?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        users::Entity::update_many()
            .col_expr(users::Column::TotpSecret, Expr::value(Some(stored)))
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::TotpEnabled.eq(false))
            .exec(&txn)
            .await?;
        self.audit_user(
            &txn,
            &caller.meta,
            user.id,
            "user.totp_enrollment_begin",
            json!({}),
        )
        .await?;
        txn.commit().await?;
        Ok(pb::BeginTotpEnrollmentResponse {
            secret,
            otpauth_uri,
        })
    }

    async fn confirm_totp(
        &self,
        caller: &Caller,
        req: pb::ConfirmTotpEnrollmentRequest,
    ) -> Result<pb::ConfirmTotpEnrollmentResponse> {
        let user = self.session_user(caller).await?;
        if user.totp_enabled {
            return Err(Error::FailedPrecondition(
                "two-factor authentication is already enabled".into(),
            ));
        }
        if user.totp_secret.is_none() {
            return Err(Error::FailedPrecondition(
                "no enrolment in progress: call BeginTotpEnrollment first".into(),
            ));
        }
        if req.code.trim().is_empty() {
            return Err(Error::InvalidArgument("code: is required".into()));
        }
        let attempt = self.second_factor_attempt(user.id, &caller.meta).await?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        let txn = self
            .check_proof(
                txn,
                &user,
                Proof::Totp(&req.code),
                Error::InvalidArgument("code: is not valid".into()),
            )
            .await?;
        let now = Utc::now();
        users::Entity::update_many()
            .col_expr(users::Column::TotpEnabled, Expr::value(true))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(user.id))
            .exec(&txn)
            .await?;
        let recovery_codes = second_factor::replace_recovery_codes(&txn, user.id, now).await?;
        self.audit_user(
            &txn,
            &caller.meta,
            user.id,
            "user.totp_enable",
            json!({ "recoveryCodes": recovery_codes.len() }),
        )
        .await?;
        txn.commit().await?;
        attempt.succeeded(&self.identity.db).await?;
        Ok(pb::ConfirmTotpEnrollmentResponse { recovery_codes })
    }

    async fn disable_totp(&self, caller: &Caller, req: pb::DisableTotpRequest) -> Result<()> {
        let user = self.session_user(caller).await?;
        let proof = second_factor::proof(&req.code, &req.recovery_code)?;
        if !user.totp_enabled {
            return Err(Error::FailedPrecondition(
                "two-factor authentication is not enabled".into(),
            ));
        }
        // Both factors: a stolen session plus a phished code is not enough.
        self.recheck_password(&user, &caller.meta, "password", req.password.clone())
            .await?;
        let attempt = self.second_factor_attempt(user.id, &caller.meta).await?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        let wrong = Error::InvalidArgument(format!("{}: is not valid", proof.field()));
        let txn = self.check_proof(txn, &user, proof, wrong).await?;
        users::Entity::update_many()
            .col_expr(
                users::Column::TotpSecret,
                Expr::value(Option::<ferry_db::crypto::Encrypted>::None),
            )
            .col_expr(users::Column::TotpEnabled, Expr::value(false))
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user.id))
            .exec(&txn)
            .await?;
        recovery_codes::Entity::delete_many()
            .filter(recovery_codes::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        let devices = trusted_devices::Entity::delete_many()
            .filter(trusted_devices::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?
            .rows_affected;
        self.audit_user(
            &txn,
            &caller.meta,
            user.id,
            "user.totp_disable",
            json!({ "method": proof.method(), "revokedDevices": devices }),
        )
        .await?;
        txn.commit().await?;
        attempt.succeeded(&self.identity.db).await?;
        Ok(())
    }

    async fn regenerate_codes(
        &self,
        caller: &Caller,
        req: pb::RegenerateRecoveryCodesRequest,
    ) -> Result<Vec<String>> {
        let user = self.session_user(caller).await?;
        if req.code.trim().is_empty() {
            return Err(Error::InvalidArgument("code: is required".into()));
        }
        if !user.totp_enabled {
            return Err(Error::FailedPrecondition(
                "two-factor authentication is not enabled".into(),
            ));
        }
        let attempt = self.second_factor_attempt(user.id, &caller.meta).await?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        let txn = self
            .check_proof(
                txn,
                &user,
                Proof::Totp(&req.code),
                Error::InvalidArgument("code: is not valid".into()),
            )
            .await?;
        let codes = second_factor::replace_recovery_codes(&txn, user.id, Utc::now()).await?;
        self.audit_user(
            &txn,
            &caller.meta,
            user.id,
            "user.recovery_codes_regenerate",
            json!({ "recoveryCodes": codes.len() }),
        )
        .await?;
        txn.commit().await?;
        attempt.succeeded(&self.identity.db).await?;
        Ok(codes)
    }

    async fn complete_second_factor(
        &self,
        meta: RequestMeta,
        req: pb::CompleteSecondFactorRequest,
    ) -> Result<pb::CompleteSecondFactorResponse> {
        let proof = second_factor::proof(&req.code, &req.recovery_code)?;
        let name = req
            .device_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_DEVICE_NAME_CHARS)
        {
            return Err(Error::InvalidArgument(format!(
                "deviceName: must have at most {MAX_DEVICE_NAME_CHARS} characters"
            )));
        }
        let db = &self.identity.db;
        let invalid = || Error::Unauthenticated(INVALID_SECOND_FACTOR.into());
        let now = Utc::now();
        let challenge = second_factor::find_challenge(db, req.challenge_token.trim(), now)
            .await?
            .ok_or_else(invalid)?;
        let user = users::Entity::find_by_id(challenge.user_id)
            .one(db)
            .await?
            .filter(|u| u.totp_enabled)
            .ok_or_else(invalid)?;
        let attempt = self.second_factor_attempt(user.id, &meta).await?;
        // A challenge survives MAX_CHALLENGE_FAILURES codes, counted before
        // each is checked so parallel guesses cannot exceed it.
        let Some(n) = second_factor::count_challenge_attempt(db, &challenge, now).await? else {
            return Err(invalid());
        };
        let txn = crate::db::begin_write(db).await?;
        let txn = match self.check_proof(txn, &user, proof, invalid()).await {
            Ok(txn) => txn,
            Err(err) => {
                if n >= second_factor::MAX_CHALLENGE_FAILURES {
                    second_factor::delete_challenge(db, challenge.id).await?;
                }
                return Err(err);
            }
        };
        let now = Utc::now();
        // Single use: a concurrent completion of the same challenge loses.
        let consumed = sessions::Entity::delete_many()
            .filter(sessions::Column::Id.eq(challenge.id))
            .exec(&txn)
            .await?
            .rows_affected;
        if consumed != 1 {
            return Err(invalid());
        }
        let (token, expires_at, session) = self.open_session(&txn, &user, &meta, now).await?;
        let device = if req.remember_device {
            let ttl = self.identity.config.trusted_device_ttl;
            Some(second_factor::remember_device(&txn, user.id, name, &meta, now, ttl).await?)
        } else {
            None
        };
        Auditor::user(&meta, Some(user.id))
            .record(
                &txn,
                Entry::new("user.login", AuditResourceType::Session, session.id).details(json!({
                    "secondFactor": proof.method(),
                    "trustedDeviceId": device.as_ref().map(|(_, d)| d.id),
                })),
            )
            .await?;
        txn.commit().await?;
        attempt.succeeded(db).await?;
        let user = users::Model {
            last_login_at: Some(now),
            ..user
        };
        let (device_token, device) = match device {
            Some((token, d)) => (token, Some(device_to_pb(d))),
            None => (String::new(), None),
        };
        Ok(pb::CompleteSecondFactorResponse {
            token,
            expires_at: Some(ts(expires_at)),
            user: Some(user_to_pb(&user)),
            device_token,
            device,
        })
    }
}

/// ListSessions' order: newest first, then id.
static SESSIONS: Keyset<sessions::Column> = Keyset {
    list: "sessions",
    columns: &[
        desc(sessions::Column::CreatedAt, Kind::Time),
        desc(sessions::Column::Id, Kind::Id),
    ],
};

/// ListTrustedDevices' order: newest first, then id.
static TRUSTED_DEVICES: Keyset<trusted_devices::Column> = Keyset {
    list: "trusted-devices",
    columns: &[
        desc(trusted_devices::Column::CreatedAt, Kind::Time),
        desc(trusted_devices::Column::Id, Kind::Id),
    ],
};

fn device_to_pb(d: trusted_devices::Model) -> pb::TrustedDevice {
    pb::TrustedDevice {
        id: d.id.to_string(),
        name: d.name,
        user_agent: d.user_agent,
        created_at: Some(ts(d.created_at)),
        last_used_at: d.last_used_at.map(ts),
        expires_at: Some(ts(d.expires_at)),
    }
}

/// The answer to a wrong password on a step-up check.
fn wrong_password(field: &str) -> Error {
    Error::PermissionDenied(format!("{field}: is not correct"))
}

fn already_registered() -> Error {
    Error::AlreadyExists("an account with this email or username already exists".into())
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let meta = RequestMeta::of(&request, &self.identity.config.trusted_proxies);
        let user = AuthApi::register(self, meta, request.into_inner()).await?;
        Ok(Response::new(pb::RegisterResponse { user: Some(user) }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let meta = RequestMeta::of(&request, &self.identity.config.trusted_proxies);
        Ok(Response::new(
            AuthApi::login(self, meta, request.into_inner()).await?,
        ))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let session_id = caller.session_id()?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        sessions::Entity::delete_by_id(session_id)
            .exec(&txn)
            .await
            .map_err(Error::from)?;
        Auditor::global(&caller)
            .record(
                &txn,
                Entry::new("user.logout", AuditResourceType::Session, session_id),
            )
            .await?;
        txn.commit().await.map_err(Error::from)?;
        self.identity.credentials.forget_all(); // credentials may have ended
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn me(
        &self,
        request: Request<pb::MeRequest>,
    ) -> Result<Response<pb::MeResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let user = self.current_user(caller.user_id).await?;
        Ok(Response::new(pb::MeResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let session_id = caller.session_id()?;
        let req = request.into_inner();
        validate_password("newPassword", &req.new_password)?;
        let db = &self.identity.db;
        let user = self.current_user(caller.user_id).await?;
        self.recheck_password(&user, &caller.meta, "currentPassword", req.current_password)
            .await?;
        let new_hash = auth::hash_password(req.new_password).await?;
        let txn = crate::db::begin_write(db).await?;
        users::Entity::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(Some(new_hash)))
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(caller.user_id))
            .exec(&txn)
            .await
            .map_err(Error::from)?;
        let revoked = sessions::Entity::delete_many()
            .filter(sessions::Column::UserId.eq(caller.user_id))
            .filter(sessions::Column::Id.ne(session_id))
            .exec(&txn)
            .await
            .map_err(Error::from)?
            .rows_affected;
        // A remembered device would skip the second factor with the new
        // password too: the old password may be what leaked.
        let devices = trusted_devices::Entity::delete_many()
            .filter(trusted_devices::Column::UserId.eq(caller.user_id))
            .exec(&txn)
            .await
            .map_err(Error::from)?
            .rows_affected;
        // API tokens are not tied to the password: they stay, and the
        // answer says how many, so the user can review them.
        let now = Utc::now();
        let tokens = api_tokens::Entity::find()
            .filter(api_tokens::Column::UserId.eq(caller.user_id))
            .filter(api_tokens::Column::RevokedAt.is_null())
            .filter(
                Condition::any()
                    .add(api_tokens::Column::ExpiresAt.is_null())
                    .add(api_tokens::Column::ExpiresAt.gt(now)),
            )
            .count(&txn)
            .await
            .map_err(Error::from)?;
        Auditor::global(&caller)
            .record(
                &txn,
                Entry::new(
                    "user.change_password",
                    AuditResourceType::User,
                    caller.user_id,
                )
                .details(json!({
                    "revokedSessions": revoked,
                    "revokedTrustedDevices": devices,
                    "activeApiTokens": tokens,
                })),
            )
            .await?;
        txn.commit().await.map_err(Error::from)?;
        self.identity.credentials.forget_all(); // credentials may have ended
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: u32::try_from(revoked).unwrap_or(u32::MAX),
            revoked_trusted_devices: u32::try_from(devices).unwrap_or(u32::MAX),
            active_api_tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let current = caller.session_id()?;
        let req = request.get_ref();
        let page = SESSIONS.page(req.page_size, &req.page_token)?;
        let query = sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(caller.user_id))
            .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
            // Second-factor challenges (see `is_challenge`) are not sessions;
            // filtered here so that pages stay full.
            .filter(sessions::Column::LastActiveAt.gt(chrono::DateTime::<Utc>::UNIX_EPOCH));
        let rows = page
            .apply(query)
            .all(&self.identity.db)
            .await
            .map_err(Error::from)?;
        let (rows, next_page_token) =
            page.finish(rows, |s| vec![Key::Time(s.created_at), Key::Id(s.id)]);
        let sessions = rows
            .into_iter()
            .filter(|s| !second_factor::is_challenge(s))
            .map(|s| pb::Session {
                id: s.id.to_string(),
                created_at: Some(ts(s.created_at)),
                last_active_at: Some(ts(s.last_active_at)),
                expires_at: Some(ts(s.expires_at)),
                ip_address: s.ip_address.map(|ip| ip.to_string()),
                user_agent: s.user_agent,
                current: s.id == current,
            })
            .collect();
        Ok(Response::new(pb::ListSessionsResponse {
            sessions,
            next_page_token,
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        caller.session_id()?;
        let id = parse_id("id", &request.get_ref().id)?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        // Someone else's session is indistinguishable from a missing one.
        let deleted = sessions::Entity::delete_many()
            .filter(sessions::Column::Id.eq(id))
            .filter(sessions::Column::UserId.eq(caller.user_id))
            .exec(&txn)
            .await
            .map_err(Error::from)?
            .rows_affected;
        if deleted == 0 {
            return Err(Error::NotFound("session not found".into()).into());
        }
        Auditor::global(&caller)
            .record(
                &txn,
                Entry::new("session.revoke", AuditResourceType::Session, id),
            )
            .await?;
        txn.commit().await.map_err(Error::from)?;
        self.identity.credentials.forget_all(); // credentials may have ended
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTotpEnrollmentResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        Ok(Response::new(
            self.begin_totp(&caller, request.into_inner()).await?,
        ))
    }

    async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        Ok(Response::new(
            self.confirm_totp(&caller, request.into_inner()).await?,
        ))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Result<Response<pb::DisableTotpResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        AuthApi::disable_totp(self, &caller, request.into_inner()).await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Result<Response<pb::RegenerateRecoveryCodesResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        let recovery_codes = self.regenerate_codes(&caller, request.into_inner()).await?;
        Ok(Response::new(pb::RegenerateRecoveryCodesResponse {
            recovery_codes,
        }))
    }

    async fn complete_second_factor(
        &self,
        request: Request<pb::CompleteSecondFactorRequest>,
    ) -> Result<Response<pb::CompleteSecondFactorResponse>, Status> {
        let meta = RequestMeta::of(&request, &self.identity.config.trusted_proxies);
        Ok(Response::new(
            AuthApi::complete_second_factor(self, meta, request.into_inner()).await?,
        ))
    }

    async fn list_trusted_devices(
        &self,
        request: Request<pb::ListTrustedDevicesRequest>,
    ) -> Result<Response<pb::ListTrustedDevicesResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        caller.session_id()?;
        let req = request.get_ref();
        let page = TRUSTED_DEVICES.page(req.page_size, &req.page_token)?;
        let query = trusted_devices::Entity::find()
            .filter(trusted_devices::Column::UserId.eq(caller.user_id))
            .filter(trusted_devices::Column::ExpiresAt.gt(Utc::now()));
        let rows = page
            .apply(query)
            .all(&self.identity.db)
            .await
            .map_err(Error::from)?;
        let (rows, next_page_token) =
            page.finish(rows, |d| vec![Key::Time(d.created_at), Key::Id(d.id)]);
        Ok(Response::new(pb::ListTrustedDevicesResponse {
            devices: rows.into_iter().map(device_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn revoke_trusted_device(
        &self,
        request: Request<pb::RevokeTrustedDeviceRequest>,
    ) -> Result<Response<pb::RevokeTrustedDeviceResponse>, Status> {
        let caller = Caller::of(&self.identity, &request).await?;
        caller.session_id()?;
        let id = parse_id("id", &request.get_ref().id)?;
        let txn = crate::db::begin_write(&self.identity.db).await?;
        // Someone else's device is indistinguishable from a missing one.
        let deleted = trusted_devices::Entity::delete_many()
            .filter(trusted_devices::Column::Id.eq(id))
            .filter(trusted_devices::Column::UserId.eq(caller.user_id))
            .exec(&txn)
            .await
            .map_err(Error::from)?
            .rows_affected;
        if deleted == 0 {
            return Err(Error::NotFound("trusted device not found".into()).into());
        }
        self.audit_user(
            &txn,
            &caller.meta,
            caller.user_id,
            "user.trusted_device_revoke",
            json!({ "deviceId": id }),
        )
        .await?;
        txn.commit().await.map_err(Error::from)?;
        Ok(Response::new(pb::RevokeTrustedDeviceResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_validation_names_the_field() {
        assert_eq!(
            validate_email(" A@Example.COM ").ok().as_deref(),
            Some("a@example.com")
        );
        for bad in ["", "a", "a@b", "@b.c", "a@@b.c", "a b@c.d", "a@.c", "a@b."] {
            let err = validate_email(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.starts_with("email:"), "{bad:?} -> {err}");
        }
        assert!(validate_username("al_ice-9").is_ok());
        for bad in ["al", "Alice", "al ice", "ålice", &"a".repeat(51)] {
            let err = validate_username(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(err, "username: must match ^[a-z0-9_-]{3,50}$", "{bad:?}");
        }
        assert!(validate_password("password", "123456789").is_err());
        assert!(validate_password("password", "1234567890").is_ok());
        assert!(validate_password("password", &"x".repeat(1025)).is_err());
    }
}
