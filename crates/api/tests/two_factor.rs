//! Two-factor authentication end to end over real TCP gRPC, on PostgreSQL
//! and SQLite: TOTP enrolment, second-factor login, recovery codes,
//! trusted devices, throttling, and no secrets at rest or in the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{PASSWORD, authed, channel, clients, code, create_org, register, start, throttle};

use std::net::SocketAddr;

use ferry_db::entities::{
    audit_logs, auth_throttle, recovery_codes, sessions, trusted_devices, users,
};
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::auth_service_client::AuthServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

async fn client(addr: SocketAddr) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(channel(addr, Some("ferry-2fa-test/1")).await)
}

async fn login(
    c: &mut AuthServiceClient<Channel>,
    username: &str,
    device_token: &str,
) -> pb::LoginResponse {
    c.login(pb::LoginRequest {
        login: username.into(),
        password: PASSWORD.into(),
        device_token: device_token.into(),
    })
    .await
    .unwrap()
    .into_inner()
}

/// Logs in expecting the second-factor answer; returns the challenge.
async fn challenge(c: &mut AuthServiceClient<Channel>, username: &str, device: &str) -> String {
    let r = login(c, username, device).await;
    assert!(r.second_factor_required, "{r:?}");
    assert!(r.token.is_empty(), "a session token next to a challenge");
    assert!(r.challenge_token.starts_with("fc_"));
    r.challenge_token
}

async fn complete(
    c: &mut AuthServiceClient<Channel>,
    challenge_token: &str,
    totp: &str,
    recovery: &str,
    remember: bool,
) -> Result<pb::CompleteSecondFactorResponse, Status> {
    c.complete_second_factor(pb::CompleteSecondFactorRequest {
        challenge_token: challenge_token.into(),
        code: totp.into(),
        recovery_code: recovery.into(),
        remember_device: remember,
        device_name: remember.then(|| "laptop".into()),
    })
    .await
    .map(tonic::Response::into_inner)
}

/// The current TOTP code for `secret`, computed independently with totp-rs.
fn totp_now(secret: &str, offset_steps: i64) -> String {
    let totp = totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret).unwrap())
        .build()
        .unwrap();
    let t = u64::try_from(chrono::Utc::now().timestamp() + offset_steps * 30).unwrap();
    totp.generate(t).to_string()
}

/// Forgets the last accepted TOTP step, so a test can use another code in
/// the same 30 s window (the replay guard itself is tested separately).
async fn forget_step(db: &DatabaseConnection) {
    auth_throttle::Entity::delete_many()
        .filter(auth_throttle::Column::Key.starts_with("account:totp-step:"))
        .exec(db)
        .await
        .unwrap();
}

/// A BeginTotpEnrollment request with the right password.
fn begin_request() -> pb::BeginTotpEnrollmentRequest {
    pb::BeginTotpEnrollmentRequest {
        password: PASSWORD.into(),
    }
}

/// Enrols `username` (logged in with `token`); returns secret, first code
/// used and the recovery codes.
async fn enrol(c: &mut AuthServiceClient<Channel>, token: &str) -> (String, String, Vec<String>) {
    let begun = c
        .begin_totp_enrollment(authed(begin_request(), token))
        .await
        .unwrap()
        .into_inner();
    let first = totp_now(&begun.secret, 0);
    let codes = c
        .confirm_totp_enrollment(authed(
            pb::ConfirmTotpEnrollmentRequest {
                code: first.clone(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .recovery_codes;
    (begun.secret, first, codes)
}

#[tokio::test]
async fn totp_login_recovery_codes_trusted_devices_and_disable() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, throttle(50, 500)).await;
        let mut c = client(api.addr).await;
        let alice = register(&mut c, "alice").await;
        register(&mut c, "bob").await;
        let session = login(&mut c, "alice", "").await.token;
        let bob = login(&mut c, "bob", "").await.token;
        // Everything that must never show up in the audit log or at rest.
        let mut secrets: Vec<String> = Vec::new();

        // Enrolment: the secret is pending until a first code confirms it.
        let begun = c
            .begin_totp_enrollment(authed(begin_request(), &session))
            .await
            .unwrap()
            .into_inner();
        let secret = begun.secret.clone();
        secrets.push(secret.clone());
        assert!(
            begun
                .otpauth_uri
                .starts_with("otpauth://totp/Ferry:alice%40example.com?"),
            "{b}: {}",
            begun.otpauth_uri
        );
        assert!(
            begun.otpauth_uri.contains(&format!("secret={secret}")),
            "{b}"
        );
        assert!(begun.otpauth_uri.contains("issuer=Ferry"), "{b}");
        let row = users::Entity::find_by_id(alice.id.parse::<uuid::Uuid>().unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.totp_enabled, "{b}");
        let stored = row.totp_secret.expect("secret stored").0;
        assert!(
            !stored.contains(&secret),
            "{b}: TOTP secret stored in clear"
        );
        assert!(
            !stored.to_lowercase().contains(&secret.to_lowercase()[..16]),
            "{b}"
        );
        // Not enabled yet: login needs no second factor.
        assert!(
            !login(&mut c, "alice", "").await.second_factor_required,
            "{b}"
        );

        let wrong = c
            .confirm_totp_enrollment(authed(
                pb::ConfirmTotpEnrollmentRequest {
                    code: "000000".into(),
                },
                &session,
            ))
            .await;
        assert_eq!(code(wrong), Code::InvalidArgument, "{b}");
        let first = totp_now(&secret, 0);
        secrets.push(first.clone());
        let recovery = c
            .confirm_totp_enrollment(authed(
                pb::ConfirmTotpEnrollmentRequest {
                    code: first.clone(),
                },
                &session,
            ))
            .await
            .unwrap()
            .into_inner()
            .recovery_codes;
        assert_eq!(recovery.len(), 10, "{b}");
        for r in &recovery {
            let groups: Vec<&str> = r.split('-').collect();
            assert!(
                groups.len() == 3
                    && groups
                        .iter()
                        .all(|g| g.len() == 4 && g.bytes().all(|x| x.is_ascii_alphanumeric())),
                "{b}: {r}"
            );
        }
        secrets.extend(recovery.iter().cloned());
        let stored_codes = recovery_codes::Entity::find().all(&db.conn).await.unwrap();
        assert_eq!(stored_codes.len(), 10, "{b}");
        assert!(
            stored_codes
                .iter()
                .all(|s| recovery.iter().all(|r| !s.code_hash.contains(r.as_str()))),
            "{b}"
        );
        let me = c
            .me(authed(pb::MeRequest {}, &session))
            .await
            .unwrap()
            .into_inner();
        assert!(me.user.unwrap().totp_enabled, "{b}");
        // Enabling twice is refused.
        let again = c
            .begin_totp_enrollment(authed(begin_request(), &session))
            .await;
        assert_eq!(code(again), Code::FailedPrecondition, "{b}");

        // Login now stops at the second factor; the challenge is no session.
        let list = |c: &mut AuthServiceClient<Channel>| {
            let mut c = c.clone();
            let session = session.clone();
            async move {
                c.list_sessions(authed(pb::ListSessionsRequest::default(), &session))
                    .await
                    .unwrap()
                    .into_inner()
                    .sessions
                    .len()
            }
        };
        let listed_before = list(&mut c).await;
        let rows_before = sessions::Entity::find().count(&db.conn).await.unwrap();
        let ch = challenge(&mut c, "alice", "").await;
        secrets.push(ch.clone());
        let me = c.me(authed(pb::MeRequest {}, &ch)).await;
        assert_eq!(code(me), Code::Unauthenticated, "{b}: challenge as bearer");
        assert_eq!(
            sessions::Entity::find().count(&db.conn).await.unwrap(),
            rows_before + 1,
            "{b}: the challenge row"
        );
        assert_eq!(
            list(&mut c).await,
            listed_before,
            "{b}: the challenge is listed as a session"
        );
        // A wrong code, and the enrolment code again (same step), fail.
        let r = complete(&mut c, &ch, "000000", "", false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}");
        let r = complete(&mut c, &ch, &first, "", false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}: TOTP step replayed");
        // Both given, or none: invalid.
        let r = complete(&mut c, &ch, "123456", &recovery[0], false).await;
        assert_eq!(code(r), Code::InvalidArgument, "{b}");
        // The next step's code works and gives a session.
        let next = totp_now(&secret, 1);
        secrets.push(next.clone());
        let done = complete(&mut c, &ch, &next, "", false).await.unwrap();
        assert!(
            done.token.starts_with("fs_") && done.device_token.is_empty(),
            "{b}"
        );
        secrets.push(done.token.clone());
        c.me(authed(pb::MeRequest {}, &done.token)).await.unwrap();
        // The challenge is single use.
        forget_step(&db.conn).await;
        let r = complete(&mut c, &ch, &totp_now(&secret, 0), "", false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}: challenge reused");

        // A recovery code works exactly once.
        let ch = challenge(&mut c, "alice", "").await;
        let done = complete(&mut c, &ch, "", &recovery[0].to_uppercase(), false)
            .await
            .unwrap();
        assert!(!done.token.is_empty(), "{b}");
        let ch = challenge(&mut c, "alice", "").await;
        let r = complete(&mut c, &ch, "", &recovery[0], false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}: recovery code reused");

        // Remember the device: its token skips the second factor.
        let done = complete(&mut c, &ch, "", &recovery[1], true).await.unwrap();
        let device_token = done.device_token.clone();
        secrets.push(device_token.clone());
        assert!(device_token.starts_with("fd_"), "{b}");
        let device = done.device.unwrap();
        assert_eq!(device.name.as_deref(), Some("laptop"), "{b}");
        let stored = trusted_devices::Entity::find().all(&db.conn).await.unwrap();
        assert_eq!(stored.len(), 1, "{b}");
        assert_eq!(
            stored[0].token_hash,
            ferry_db::token::hash_token(&device_token),
            "{b}: device token not hashed"
        );
        let skipped = login(&mut c, "alice", &device_token).await;
        assert!(
            !skipped.second_factor_required && skipped.token.starts_with("fs_"),
            "{b}: {skipped:?}"
        );
        // Another user's device token does not help bob.
        let r = login(&mut c, "bob", &device_token).await;
        assert!(!r.second_factor_required && !r.token.is_empty(), "{b}");
        let devices = c
            .list_trusted_devices(authed(pb::ListTrustedDevicesRequest::default(), &session))
            .await
            .unwrap()
            .into_inner()
            .devices;
        assert_eq!(devices.len(), 1, "{b}");
        assert_eq!(devices[0].id, device.id, "{b}");
        assert!(devices[0].last_used_at.is_some(), "{b}");
        let bobs = c
            .list_trusted_devices(authed(pb::ListTrustedDevicesRequest::default(), &bob))
            .await
            .unwrap()
            .into_inner()
            .devices;
        assert!(bobs.is_empty(), "{b}");
        let r = c
            .revoke_trusted_device(authed(
                pb::RevokeTrustedDeviceRequest {
                    id: device.id.clone(),
                },
                &bob,
            ))
            .await;
        assert_eq!(code(r), Code::NotFound, "{b}: someone else's device");

        // An expired device no longer skips (and is not listed).
        let device_id: uuid::Uuid = device.id.parse().unwrap();
        let set_expiry = |at: chrono::DateTime<chrono::Utc>| {
            trusted_devices::Entity::update_many()
                .col_expr(trusted_devices::Column::ExpiresAt, Expr::value(at))
                .filter(trusted_devices::Column::Id.eq(device_id))
                .exec(&db.conn)
        };
        set_expiry(chrono::Utc::now() - chrono::Duration::minutes(1))
            .await
            .unwrap();
        challenge(&mut c, "alice", &device_token).await;
        let devices = c
            .list_trusted_devices(authed(pb::ListTrustedDevicesRequest::default(), &session))
            .await
            .unwrap()
            .into_inner()
            .devices;
        assert!(devices.is_empty(), "{b}: expired device listed");
        set_expiry(chrono::Utc::now() + chrono::Duration::days(1))
            .await
            .unwrap();
        assert!(
            !login(&mut c, "alice", &device_token)
                .await
                .second_factor_required,
            "{b}"
        );
        // A revoked device no longer skips.
        c.revoke_trusted_device(authed(
            pb::RevokeTrustedDeviceRequest {
                id: device.id.clone(),
            },
            &session,
        ))
        .await
        .unwrap();
        challenge(&mut c, "alice", &device_token).await;

        // Regenerating replaces every recovery code (needs a valid code).
        let r = c
            .regenerate_recovery_codes(authed(
                pb::RegenerateRecoveryCodesRequest {
                    code: "000000".into(),
                },
                &session,
            ))
            .await;
        assert_eq!(code(r), Code::InvalidArgument, "{b}");
        forget_step(&db.conn).await;
        let fresh = c
            .regenerate_recovery_codes(authed(
                pb::RegenerateRecoveryCodesRequest {
                    code: totp_now(&secret, 0),
                },
                &session,
            ))
            .await
            .unwrap()
            .into_inner()
            .recovery_codes;
        assert_eq!(fresh.len(), 10, "{b}");
        assert!(fresh.iter().all(|f| !recovery.contains(f)), "{b}");
        secrets.extend(fresh.iter().cloned());
        let ch = challenge(&mut c, "alice", "").await;
        let r = complete(&mut c, &ch, "", &recovery[2], false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}: old recovery code");

        // Disabling needs a valid code or an unused recovery code.
        for (totp, rec) in [("", ""), ("000000", ""), ("", recovery[3].as_str())] {
            let r = c
                .disable_totp(authed(
                    pb::DisableTotpRequest {
                        code: totp.into(),
                        recovery_code: rec.into(),
                        password: PASSWORD.into(),
                    },
                    &session,
                ))
                .await;
            assert_eq!(code(r), Code::InvalidArgument, "{b}: {totp:?} {rec:?}");
        }
        assert!(
            login(&mut c, "alice", "").await.second_factor_required,
            "{b}: still enabled"
        );
        forget_step(&db.conn).await;
        c.disable_totp(authed(
            pb::DisableTotpRequest {
                code: totp_now(&secret, 0),
                recovery_code: String::new(),
                password: PASSWORD.into(),
            },
            &session,
        ))
        .await
        .unwrap();
        let r = login(&mut c, "alice", "").await;
        assert!(!r.second_factor_required && !r.token.is_empty(), "{b}");
        let row = users::Entity::find_by_id(user_uuid(&alice))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.totp_enabled && row.totp_secret.is_none(), "{b}");
        assert_eq!(
            recovery_codes::Entity::find()
                .count(&db.conn)
                .await
                .unwrap(),
            0,
            "{b}"
        );

        // The audit log tells what happened, and never a secret.
        let rows = audit_logs::Entity::find().all(&db.conn).await.unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        for expected in [
            "user.totp_enrollment_begin",
            "user.totp_enable",
            "user.login_challenge",
            "user.trusted_device_revoke",
            "user.recovery_codes_regenerate",
            "user.totp_disable",
        ] {
            assert!(
                actions.contains(&expected),
                "{b}: no {expected} in {actions:?}"
            );
        }
        let two_factor_logins = rows
            .iter()
            .filter(|r| r.action == "user.login" && r.details.get("secondFactor").is_some())
            .count();
        assert_eq!(two_factor_logins, 3, "{b}");
        for row in &rows {
            let text = format!("{} {:?} {:?}", row.details, row.user_agent, row.action);
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()),
                    "{b}: audit row {} leaks a secret",
                    row.action
                );
            }
        }
        api.stop().await;
    }
}

fn user_uuid(user: &pb::User) -> uuid::Uuid {
    user.id.parse().unwrap()
}

#[tokio::test]
async fn second_factor_attempts_are_throttled_per_account_and_address() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        // 3 wrong codes lock an account; 5 lock the address.
        let api = start(&db.conn, throttle(3, 5)).await;
        let mut c = client(api.addr).await;
        register(&mut c, "carol").await;
        register(&mut c, "dave").await;
        let carol = login(&mut c, "carol", "").await.token;
        let dave = login(&mut c, "dave", "").await.token;
        let (carol_secret, _, _) = enrol(&mut c, &carol).await;
        let (dave_secret, _, _) = enrol(&mut c, &dave).await;

        let ch = challenge(&mut c, "carol", "").await;
        for i in 0..3 {
            let r = complete(&mut c, &ch, "000000", "", false).await;
            assert_eq!(code(r), Code::Unauthenticated, "{b}: attempt {i}");
        }
        // Locked now: even the right code is refused, with a retry-after.
        forget_step(&db.conn).await;
        let err = complete(&mut c, &ch, &totp_now(&carol_secret, 0), "", false)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}: {err:?}");
        assert!(err.metadata().get("retry-after").is_some(), "{b}");
        // A correct password does not clear the second-factor lock.
        let ch = challenge(&mut c, "carol", "").await;
        let r = complete(&mut c, &ch, &totp_now(&carol_secret, 0), "", false).await;
        assert_eq!(code(r), Code::ResourceExhausted, "{b}");

        // Dave's account is fine, but the address has 3 failures: 2 more
        // lock it for everyone behind it.
        let ch = challenge(&mut c, "dave", "").await;
        for _ in 0..2 {
            let r = complete(&mut c, &ch, "000000", "", false).await;
            assert_eq!(code(r), Code::Unauthenticated, "{b}");
        }
        forget_step(&db.conn).await;
        let r = complete(&mut c, &ch, &totp_now(&dave_secret, 0), "", false).await;
        assert_eq!(
            code(r),
            Code::ResourceExhausted,
            "{b}: address not throttled"
        );
        // Management RPCs that take a code share the lock.
        let r = c
            .regenerate_recovery_codes(authed(
                pb::RegenerateRecoveryCodesRequest {
                    code: totp_now(&dave_secret, 0),
                },
                &dave,
            ))
            .await;
        assert_eq!(code(r), Code::ResourceExhausted, "{b}");

        // Once the locks lapse the right code works (and clears the account).
        auth_throttle::Entity::update_many()
            .col_expr(
                auth_throttle::Column::LockedUntil,
                Expr::value(Some(chrono::Utc::now() - chrono::Duration::seconds(1))),
            )
            .exec(&db.conn)
            .await
            .unwrap();
        forget_step(&db.conn).await;
        complete(&mut c, &ch, &totp_now(&dave_secret, 0), "", false)
            .await
            .unwrap();
        api.stop().await;
    }
}

/// Sends 20 codes at once on `ch`; returns how many were checked (wrong
/// code) and how many refused by the throttle.
async fn parallel_codes(c: &AuthServiceClient<Channel>, ch: &str) -> (usize, usize) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let mut c = c.clone();
            let ch = ch.to_owned();
            tokio::spawn(async move {
                complete(&mut c, &ch, &format!("{:06}", 100_000 + i), "", false).await
            })
        })
        .collect();
    let (mut checked, mut throttled) = (0, 0);
    for t in tasks {
        match t.await.unwrap().map(drop).unwrap_err().code() {
            Code::Unauthenticated => checked += 1,
            Code::ResourceExhausted => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    (checked, throttled)
}

#[tokio::test]
async fn parallel_wrong_codes_are_counted_before_they_are_checked() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        // 3 wrong codes lock the account's second factor.
        let api = start(&db.conn, throttle(3, 1_000)).await;
        let mut c = client(api.addr).await;
        register(&mut c, "carol").await;
        let carol = login(&mut c, "carol", "").await.token;
        enrol(&mut c, &carol).await;
        let ch = challenge(&mut c, "carol", "").await;
        let (checked, throttled) = parallel_codes(&c, &ch).await;
        assert_eq!((checked, throttled), (3, 17), "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn a_challenge_dies_after_five_wrong_codes() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, throttle(50, 500)).await;
        let mut c = client(api.addr).await;
        register(&mut c, "erin").await;
        let erin = login(&mut c, "erin", "").await.token;
        let (secret, _, _) = enrol(&mut c, &erin).await;

        // Five wrong codes, one at a time: then even the right one fails.
        let ch = challenge(&mut c, "erin", "").await;
        for i in 0..5 {
            let r = complete(&mut c, &ch, "000000", "", false).await;
            assert_eq!(code(r), Code::Unauthenticated, "{b}: attempt {i}");
        }
        forget_step(&db.conn).await;
        let r = complete(&mut c, &ch, &totp_now(&secret, 0), "", false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}: challenge survived");

        // Twenty at once: the challenge is gone after them all the same.
        let ch = challenge(&mut c, "erin", "").await;
        let (checked, throttled) = parallel_codes(&c, &ch).await;
        assert_eq!((checked, throttled), (20, 0), "{b}");
        forget_step(&db.conn).await;
        let r = complete(&mut c, &ch, &totp_now(&secret, 0), "", false).await;
        assert_eq!(code(r), Code::Unauthenticated, "{b}: challenge survived");

        // A new challenge works (four wrong codes are still fine).
        let ch = challenge(&mut c, "erin", "").await;
        for _ in 0..4 {
            let r = complete(&mut c, &ch, "000000", "", false).await;
            assert_eq!(code(r), Code::Unauthenticated, "{b}");
        }
        forget_step(&db.conn).await;
        complete(&mut c, &ch, &totp_now(&secret, 0), "", false)
            .await
            .unwrap();
        api.stop().await;
    }
}

#[tokio::test]
async fn account_changes_ask_for_the_password_again() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        // 3 wrong passwords from one address lock the account there (for
        // 3 s: time enough to observe it on a busy machine).
        let mut config = throttle(3, 500);
        config.throttle.base_delay = chrono::Duration::seconds(3);
        let api = start(&db.conn, config).await;
        let mut all = clients(api.addr).await;
        let mut c = client(api.addr).await;
        register(&mut c, "frank").await;
        let session = login(&mut c, "frank", "").await.token;
        let begin = |password: &str| {
            let mut c = c.clone();
            let request = authed(
                pb::BeginTotpEnrollmentRequest {
                    password: password.into(),
                },
                &session,
            );
            async move { c.begin_totp_enrollment(request).await }
        };
        let mut c = c.clone();

        // Enrolment: no password, a wrong one, then the throttle.
        let err = begin("").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert!(err.message().starts_with("password:"), "{b}: {err:?}");
        for _ in 0..3 {
            let err = begin("not my password").await.unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{b}");
            assert_eq!(err.message(), "password: is not correct", "{b}");
        }
        let err = begin(PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}: {err:?}");
        // Logging in shares that counter.
        let r = c
            .login(pb::LoginRequest {
                login: "frank".into(),
                password: PASSWORD.into(),
                ..Default::default()
            })
            .await;
        assert_eq!(code(r), Code::ResourceExhausted, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
        let begun = begin(PASSWORD).await.unwrap().into_inner();
        let codes = c
            .confirm_totp_enrollment(authed(
                pb::ConfirmTotpEnrollmentRequest {
                    code: totp_now(&begun.secret, 0),
                },
                &session,
            ))
            .await
            .unwrap()
            .into_inner()
            .recovery_codes;

        // Disabling: a valid recovery code is not enough without the
        // password.
        for (password, expected) in [
            ("", Code::InvalidArgument),
            ("nope nope", Code::PermissionDenied),
        ] {
            let r = c
                .disable_totp(authed(
                    pb::DisableTotpRequest {
                        code: String::new(),
                        recovery_code: codes[0].clone(),
                        password: password.into(),
                    },
                    &session,
                ))
                .await;
            assert_eq!(code(r), expected, "{b}: {password:?}");
        }
        assert!(
            login(&mut c, "frank", "").await.second_factor_required,
            "{b}: disabled without the password"
        );

        // A remembered device and API tokens, then a password change.
        let ch = challenge(&mut c, "frank", "").await;
        let device = complete(&mut c, &ch, "", &codes[1], true).await.unwrap();
        let org = create_org(&mut all, &session, "Frank Co").await.id;
        let mut token_ids = Vec::new();
        for name in ["ci", "deploy"] {
            let made = all
                .tokens
                .create_api_token(authed(
                    pb::CreateApiTokenRequest {
                        organization_id: org.clone(),
                        name: name.into(),
                        role: pb::OrganizationRole::Viewer.into(),
                        expires_at: None,
                    },
                    &session,
                ))
                .await
                .unwrap()
                .into_inner();
            token_ids.push(made.api_token.unwrap().id);
        }
        all.tokens
            .revoke_api_token(authed(
                pb::RevokeApiTokenRequest {
                    organization_id: org.clone(),
                    id: token_ids[0].clone(),
                },
                &session,
            ))
            .await
            .unwrap();
        let changed = c
            .change_password(authed(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "another long passphrase".into(),
                },
                &session,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.revoked_trusted_devices, 1, "{b}");
        assert_eq!(changed.active_api_tokens, 1, "{b}");
        let devices = c
            .list_trusted_devices(authed(pb::ListTrustedDevicesRequest::default(), &session))
            .await
            .unwrap()
            .into_inner()
            .devices;
        assert!(devices.is_empty(), "{b}: {devices:?}");
        // The device token no longer skips the second factor.
        let r = c
            .login(pb::LoginRequest {
                login: "frank".into(),
                password: "another long passphrase".into(),
                device_token: device.device_token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.second_factor_required, "{b}: device survived");
        // The remaining token is still listed (and revocable).
        let listed = all
            .tokens
            .list_api_tokens(authed(
                pb::ListApiTokensRequest {
                    organization_id: org.clone(),
                    ..Default::default()
                },
                &session,
            ))
            .await
            .unwrap()
            .into_inner()
            .api_tokens;
        assert!(
            listed
                .iter()
                .any(|t| t.id == token_ids[1] && t.revoked_at.is_none()),
            "{b}: {listed:?}"
        );
        api.stop().await;
    }
}
