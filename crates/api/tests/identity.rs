//! Identity, tenancy, authorization and audit over real TCP gRPC against
//! the api server, on PostgreSQL and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::*;

use ferry_api::auth::{IdentityConfig, ThrottlePolicy};
use ferry_db::entities::enums::{InviteRole, OrgRole};
use ferry_db::entities::{api_tokens, audit_logs, sessions, users};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
    QueryOrder as _,
};
use ferry_proto::ferry::v1 as pb;
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const FEED_TOKEN: &str = "feed-token-0123456789abcdef";
const USER_AGENT: &str = "ferry-identity-test/1";

#[tokio::test]
async fn account_and_organization_lifecycle() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;

        // Validation names the field.
        let bad = |email: &str, username: &str, password: &str| pb::RegisterRequest {
            email: email.into(),
            username: username.into(),
            password: password.into(),
        };
        let err = c
            .auth
            .register(bad("a@example.com", "Alice", PASSWORD))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert_eq!(
            err.message(),
            "username: must match ^[a-z0-9_-]{3,50}$",
            "{b}"
        );
        let err = c
            .auth
            .register(bad("nope", "alice", PASSWORD))
            .await
            .unwrap_err();
        assert!(err.message().starts_with("email:"), "{b}: {err:?}");
        let err = c
            .auth
            .register(bad("a@example.com", "alice", "short"))
            .await
            .unwrap_err();
        assert!(err.message().starts_with("password:"), "{b}: {err:?}");

        let alice = c
            .auth
            .register(bad("  Alice@Example.COM ", "alice", PASSWORD))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        assert_eq!(alice.email, "alice@example.com", "{b}");
        // Duplicates: the same answer whichever field is taken.
        let dup_email = c
            .auth
            .register(bad("alice@example.com", "alice2", PASSWORD))
            .await
            .unwrap_err();
        let dup_name = c
            .auth
            .register(bad("other@example.com", "alice", PASSWORD))
            .await
            .unwrap_err();
        assert_eq!(dup_email.code(), Code::AlreadyExists, "{b}");
        assert_eq!(dup_email.message(), dup_name.message(), "{b}");
        assert_eq!(dup_name.code(), Code::AlreadyExists, "{b}");

        // Login by email (any case) and by username.
        let by_email = try_login(&mut c, "ALICE@example.com", PASSWORD)
            .await
            .unwrap();
        assert!(by_email.token.starts_with("fs_"), "{b}");
        assert!(!by_email.second_factor_required, "{b}");
        assert_eq!(by_email.user.as_ref().unwrap().id, alice.id, "{b}");
        let expires = by_email.expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
        assert!(
            (29 * 86_400..=30 * 86_400).contains(&expires),
            "{b}: {expires}"
        );
        let token = login(&mut c, "alice").await;
        assert_ne!(token, by_email.token, "{b}");
        // Only the token's SHA-256 is stored.
        let stored: Vec<String> = sessions::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.token_hash)
            .collect();
        assert!(stored.contains(&ferry_db::token::hash_token(&token)), "{b}");
        assert!(!stored.contains(&token), "{b}");

        let me = c
            .auth
            .me(authed(pb::MeRequest {}, &token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(me.user.unwrap().username, "alice", "{b}");

        let org = create_org(&mut c, &token, "Acme Corp").await;
        assert_eq!(org.slug, "acme-corp", "{b}");
        assert_eq!(org.role(), pb::OrganizationRole::Owner, "{b}");
        let again = create_org(&mut c, &token, "Acme Corp").await;
        assert_ne!(again.slug, org.slug, "{b}: slugs stay unique");
        assert!(again.slug.starts_with("acme-corp-"), "{b}");

        let got = c
            .orgs
            .get_organization(authed(
                pb::GetOrganizationRequest { id: org.id.clone() },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.name, "Acme Corp", "{b}");
        let list = c
            .orgs
            .list_organizations(authed(pb::ListOrganizationsRequest::default(), &token))
            .await
            .unwrap()
            .into_inner()
            .organizations;
        assert_eq!(list.len(), 2, "{b}");

        let renamed = c
            .orgs
            .rename_organization(authed(
                pb::RenameOrganizationRequest {
                    id: org.id.clone(),
                    name: "Acme Inc".into(),
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (renamed.name.as_str(), renamed.slug.as_str()),
            ("Acme Inc", "acme-corp"),
            "{b}"
        );
        let err = c
            .orgs
            .rename_organization(authed(
                pb::RenameOrganizationRequest {
                    id: org.id.clone(),
                    name: " ".into(),
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert!(err.message().starts_with("name:"), "{b}: {err:?}");

        c.orgs
            .delete_organization(authed(
                pb::DeleteOrganizationRequest { id: org.id.clone() },
                &token,
            ))
            .await
            .unwrap();
        let gone = c
            .orgs
            .get_organization(authed(
                pb::GetOrganizationRequest { id: org.id.clone() },
                &token,
            ))
            .await;
        assert_eq!(code(gone), Code::NotFound, "{b}");
        let list = c
            .orgs
            .list_organizations(authed(pb::ListOrganizationsRequest::default(), &token))
            .await
            .unwrap()
            .into_inner()
            .organizations;
        assert_eq!(list.len(), 1, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn bad_credentials_are_indistinguishable_and_tokens_are_checked() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        register(&mut c, "alice").await;

        let wrong = try_login(&mut c, "alice", "wrong password!")
            .await
            .unwrap_err();
        let unknown = try_login(&mut c, "nobody", PASSWORD).await.unwrap_err();
        let unknown_mail = try_login(&mut c, "nobody@example.com", PASSWORD)
            .await
            .unwrap_err();
        for err in [&wrong, &unknown, &unknown_mail] {
            assert_eq!(err.code(), Code::Unauthenticated, "{b}");
            assert_eq!(err.message(), "invalid credentials", "{b}");
        }

        // No token, a malformed one, an unknown one, an expired one.
        let me = c.auth.me(pb::MeRequest {}).await;
        assert_eq!(code(me), Code::Unauthenticated, "{b}");
        for token in ["garbage", "fs_unknown", "ferry_pat_unknown"] {
            let me = c.auth.me(authed(pb::MeRequest {}, token)).await;
            assert_eq!(code(me), Code::Unauthenticated, "{b}: {token}");
        }
        let token = login(&mut c, "alice").await;
        c.auth.me(authed(pb::MeRequest {}, &token)).await.unwrap();
        sessions::Entity::update_many()
            .col_expr(
                sessions::Column::ExpiresAt,
                Expr::value(chrono::Utc::now() - chrono::Duration::seconds(1)),
            )
            .exec(&db.conn)
            .await
            .unwrap();
        // Changed behind the api's back: a replica that cached the session
        // hears of it a few milliseconds after the commit.
        let refused = refused_within(&mut c, &token).await;
        assert!(refused.is_some(), "{b}: expired");
        api.stop().await;
    }
}

#[tokio::test]
async fn sessions_are_listed_revoked_and_cut_by_password_change() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        register(&mut c, "alice").await;
        register(&mut c, "bob").await;
        let s1 = login(&mut c, "alice").await;
        let s2 = login(&mut c, "alice").await;
        let s3 = login(&mut c, "alice").await;
        let bob = login(&mut c, "bob").await;

        let listed = c
            .auth
            .list_sessions(authed(pb::ListSessionsRequest::default(), &s1))
            .await
            .unwrap()
            .into_inner()
            .sessions;
        assert_eq!(listed.len(), 3, "{b}");
        assert_eq!(listed.iter().filter(|s| s.current).count(), 1, "{b}");
        assert!(
            listed
                .iter()
                .all(|s| s.ip_address.as_deref() == Some("127.0.0.1")),
            "{b}"
        );
        assert!(
            listed.iter().all(|s| s
                .user_agent
                .as_deref()
                .is_some_and(|ua| ua.starts_with(USER_AGENT))),
            "{b}"
        );
        let s3_id = sessions::Entity::find()
            .filter(sessions::Column::TokenHash.eq(ferry_db::token::hash_token(&s3)))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .id
            .to_string();

        // Someone else's session looks missing.
        let theirs = c
            .auth
            .revoke_session(authed(pb::RevokeSessionRequest { id: s3_id.clone() }, &bob))
            .await;
        assert_eq!(code(theirs), Code::NotFound, "{b}");
        c.auth.me(authed(pb::MeRequest {}, &s3)).await.unwrap();
        c.auth
            .revoke_session(authed(pb::RevokeSessionRequest { id: s3_id }, &s1))
            .await
            .unwrap();
        assert_eq!(
            code(c.auth.me(authed(pb::MeRequest {}, &s3)).await),
            Code::Unauthenticated,
            "{b}"
        );

        // Password change: wrong current password refused; others cut.
        let wrong = c
            .auth
            .change_password(authed(
                pb::ChangePasswordRequest {
                    current_password: "not my password".into(),
                    new_password: "a brand new passphrase".into(),
                },
                &s1,
            ))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::PermissionDenied, "{b}");
        assert!(wrong.message().starts_with("currentPassword:"), "{b}");
        let changed = c
            .auth
            .change_password(authed(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "a brand new passphrase".into(),
                },
                &s1,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.revoked_sessions, 1, "{b}");
        assert_eq!(
            code(c.auth.me(authed(pb::MeRequest {}, &s2)).await),
            Code::Unauthenticated,
            "{b}"
        );
        c.auth.me(authed(pb::MeRequest {}, &s1)).await.unwrap();
        c.auth.me(authed(pb::MeRequest {}, &bob)).await.unwrap();
        assert_eq!(
            code(try_login(&mut c, "alice", PASSWORD).await),
            Code::Unauthenticated,
            "{b}"
        );
        try_login(&mut c, "alice", "a brand new passphrase")
            .await
            .unwrap();

        c.auth
            .logout(authed(pb::LogoutRequest {}, &s1))
            .await
            .unwrap();
        assert_eq!(
            code(c.auth.me(authed(pb::MeRequest {}, &s1)).await),
            Code::Unauthenticated,
            "{b}"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn login_throttling_is_shared_through_the_database() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let config = IdentityConfig {
            throttle: ThrottlePolicy {
                account_free_failures: 3,
                ip_free_failures: 8,
                base_delay: chrono::Duration::seconds(30),
                ..ThrottlePolicy::default()
            },
            ..IdentityConfig::default()
        };
        // Two replicas on the same database, each with its own pool.
        let a = start_with_feed(&db.conn, config.clone(), Some(FEED_TOKEN)).await;
        let other_pool = ferry_db::connect::connect_url(&db.url).await.unwrap();
        let r = start_with_feed(&other_pool, config, Some(FEED_TOKEN)).await;
        let mut ca = clients_as(a.addr, USER_AGENT).await;
        let mut cr = clients_as(r.addr, USER_AGENT).await;
        for name in ["alice", "bob", "carol"] {
            register(&mut ca, name).await;
        }

        // 3 failures across both replicas lock alice's account.
        for mut c in [ca.clone(), cr.clone(), ca.clone()] {
            let err = try_login(&mut c, "alice", "wrong password!")
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{b}");
        }
        for mut c in [cr.clone(), ca.clone()] {
            let err = try_login(&mut c, "alice", PASSWORD).await.unwrap_err();
            assert_eq!(err.code(), Code::ResourceExhausted, "{b}: {err:?}");
            let retry: u64 = err
                .metadata()
                .get("retry-after")
                .unwrap()
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=30).contains(&retry), "{b}: {retry}");
        }

        // A success resets the account counter (ip failures so far: 3).
        for _ in 0..2 {
            try_login(&mut cr, "bob", "wrong password!")
                .await
                .unwrap_err();
        }
        login(&mut ca, "bob").await;
        for _ in 0..2 {
            try_login(&mut cr, "bob", "wrong password!")
                .await
                .unwrap_err();
        }
        login(&mut cr, "bob").await;

        // The address has 7 failures; one more (an unknown account) locks it
        // for every account, carol included.
        let err = try_login(&mut ca, "nobody", PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{b}");
        let err = try_login(&mut cr, "carol", PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}: {err:?}");
        a.stop().await;
        r.stop().await;
        other_pool.close().await.ok();
    }
}

#[tokio::test]
async fn tenants_are_isolated_and_roles_enforced() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        let mut ids = std::collections::HashMap::new();
        for name in ["alice", "bob", "carol", "dave", "erin", "root"] {
            ids.insert(name, register(&mut c, name).await.id);
        }
        let alice = login(&mut c, "alice").await;
        let bob = login(&mut c, "bob").await;
        let acme = create_org(&mut c, &alice, "Acme").await;
        let globex = create_org(&mut c, &bob, "Globex").await;
        add_member(&db.conn, &acme.id, &ids["carol"], OrgRole::Viewer).await;
        add_member(&db.conn, &acme.id, &ids["dave"], OrgRole::Member).await;
        add_member(&db.conn, &acme.id, &ids["erin"], OrgRole::Admin).await;
        let carol = login(&mut c, "carol").await;
        let dave = login(&mut c, "dave").await;
        let erin = login(&mut c, "erin").await;

        let get = |id: &str, t: &str| authed(pb::GetOrganizationRequest { id: id.into() }, t);
        let rename = |id: &str, t: &str| {
            authed(
                pb::RenameOrganizationRequest {
                    id: id.into(),
                    name: "Renamed".into(),
                },
                t,
            )
        };
        let delete = |id: &str, t: &str| authed(pb::DeleteOrganizationRequest { id: id.into() }, t);

        // Another tenant: NotFound for everything, same as a missing org.
        let missing = Uuid::now_v7().to_string();
        for id in [acme.id.as_str(), missing.as_str()] {
            assert_eq!(
                code(c.orgs.get_organization(get(id, &bob)).await),
                Code::NotFound,
                "{b}"
            );
            assert_eq!(
                code(c.orgs.rename_organization(rename(id, &bob)).await),
                Code::NotFound,
                "{b}"
            );
            assert_eq!(
                code(c.orgs.delete_organization(delete(id, &bob)).await),
                Code::NotFound,
                "{b}"
            );
            let list = c
                .audit
                .list_audit_log(authed(
                    pb::ListAuditLogRequest {
                        organization_id: id.into(),
                        ..Default::default()
                    },
                    &bob,
                ))
                .await;
            assert_eq!(code(list), Code::NotFound, "{b}");
            let verify = c
                .audit
                .verify_audit_chain(authed(
                    pb::VerifyAuditChainRequest {
                        organization_id: id.into(),
                    },
                    &bob,
                ))
                .await;
            assert_eq!(code(verify), Code::NotFound, "{b}");
        }
        let bobs = c
            .orgs
            .list_organizations(authed(pb::ListOrganizationsRequest::default(), &bob))
            .await
            .unwrap()
            .into_inner()
            .organizations;
        assert_eq!(
            bobs.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(),
            [globex.id.as_str()],
            "{b}"
        );

        // Viewers and members read, but neither rename nor delete.
        for (who, token, role) in [
            ("carol", &carol, pb::OrganizationRole::Viewer),
            ("dave", &dave, pb::OrganizationRole::Member),
        ] {
            let got = c
                .orgs
                .get_organization(get(&acme.id, token))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(got.role(), role, "{b}: {who}");
            assert_eq!(
                code(c.orgs.rename_organization(rename(&acme.id, token)).await),
                Code::PermissionDenied,
                "{b}: {who}"
            );
            assert_eq!(
                code(c.orgs.delete_organization(delete(&acme.id, token)).await),
                Code::PermissionDenied,
                "{b}: {who}"
            );
            let list = c
                .audit
                .list_audit_log(authed(
                    pb::ListAuditLogRequest {
                        organization_id: acme.id.clone(),
                        ..Default::default()
                    },
                    token,
                ))
                .await;
            assert_eq!(code(list), Code::PermissionDenied, "{b}: {who}");
        }
        // Admins rename and read the audit log, but only the owner deletes.
        c.orgs
            .rename_organization(rename(&acme.id, &erin))
            .await
            .unwrap();
        c.audit
            .list_audit_log(authed(
                pb::ListAuditLogRequest {
                    organization_id: acme.id.clone(),
                    ..Default::default()
                },
                &erin,
            ))
            .await
            .unwrap();
        assert_eq!(
            code(c.orgs.delete_organization(delete(&acme.id, &erin)).await),
            Code::PermissionDenied,
            "{b}"
        );
        // The global chain is for super-admins only.
        let global = c
            .audit
            .verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &alice))
            .await;
        assert_eq!(code(global), Code::PermissionDenied, "{b}");
        users::Entity::update_many()
            .col_expr(users::Column::IsSuperAdmin, Expr::value(true))
            .filter(users::Column::Username.eq("root"))
            .exec(&db.conn)
            .await
            .unwrap();
        let root = login(&mut c, "root").await;
        let report = c
            .audit
            .verify_audit_chain(authed(pb::VerifyAuditChainRequest::default(), &root))
            .await
            .unwrap()
            .into_inner();
        assert!(report.ok, "{b}: {report:?}");
        let got = c
            .orgs
            .get_organization(get(&acme.id, &root))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.role(), pb::OrganizationRole::Unspecified, "{b}");

        // An API token is capped at its role and never leaves its org.
        let pat = ferry_db::token::generate_token("ferry_pat_");
        api_tokens::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(acme.id.parse().unwrap()),
            user_id: Set(ids["erin"].parse().unwrap()),
            name: Set("ci".into()),
            token_hash: Set(ferry_db::token::hash_token(&pat)),
            token_prefix: Set(pat[..14].into()),
            role: Set(InviteRole::Viewer),
            expires_at: Set(None),
            last_used_at: Set(None),
            revoked_at: Set(None),
            created_at: Set(chrono::Utc::now()),
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let got = c
            .orgs
            .get_organization(get(&acme.id, &pat))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.role(), pb::OrganizationRole::Viewer, "{b}");
        assert_eq!(
            code(c.orgs.rename_organization(rename(&acme.id, &pat)).await),
            Code::PermissionDenied,
            "{b}"
        );
        assert_eq!(
            code(c.orgs.get_organization(get(&globex.id, &pat)).await),
            Code::NotFound,
            "{b}"
        );
        let create = c
            .orgs
            .create_organization(authed(
                pb::CreateOrganizationRequest { name: "x".into() },
                &pat,
            ))
            .await;
        assert_eq!(code(create), Code::PermissionDenied, "{b}");
        let sessions = c
            .auth
            .list_sessions(authed(pb::ListSessionsRequest::default(), &pat))
            .await;
        assert_eq!(code(sessions), Code::PermissionDenied, "{b}");
        api_tokens::Entity::update_many()
            .col_expr(
                api_tokens::Column::RevokedAt,
                Expr::value(Some(chrono::Utc::now())),
            )
            .exec(&db.conn)
            .await
            .unwrap();
        // Revoked behind the api's back (SQL): on PostgreSQL the cached
        // credential is forgotten when the NOTIFY arrives, milliseconds
        // after the commit, so allow that window (and no more than 2 s).
        let mut refused = false;
        for _ in 0..100 {
            match c.orgs.get_organization(get(&acme.id, &pat)).await {
                Err(status) if status.code() == Code::Unauthenticated => {
                    refused = true;
                    break;
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert!(refused, "{b}: a revoked token still works after 2 s");

        c.orgs
            .delete_organization(delete(&acme.id, &alice))
            .await
            .unwrap();
        api.stop().await;
    }
}

/// Retention cuts the oldest rows of a chain and leaves a sealed
/// checkpoint: the chain still verifies from there, and tampering after
/// the cut (a forged checkpoint, the newest row removed, the first row
/// after the cut removed) is still found.
#[tokio::test]
async fn audit_retention_keeps_the_chain_verifiable() {
    use ferry_db::entities::audit_checkpoints;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        register(&mut c, "alice").await;
        let alice = login(&mut c, "alice").await;
        let org = create_org(&mut c, &alice, "Acme").await;
        for i in 0..9 {
            c.orgs
                .rename_organization(authed(
                    pb::RenameOrganizationRequest {
                        id: org.id.clone(),
                        name: format!("Acme {i}"),
                    },
                    &alice,
                ))
                .await
                .unwrap();
        }
        let org_id = Uuid::parse_str(&org.id).unwrap();
        let chain: Vec<audit_logs::Model> = audit_logs::Entity::find()
            .filter(audit_logs::Column::OrganizationId.eq(org_id))
            .order_by_asc(audit_logs::Column::CreatedAt)
            .order_by_asc(audit_logs::Column::Id)
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(chain.len(), 10, "{b}");
        // The first 4 rows are two years old (their order is kept).
        for (i, row) in chain.iter().take(4).enumerate() {
            audit_logs::Entity::update_many()
                .col_expr(
                    audit_logs::Column::CreatedAt,
                    Expr::value(chrono::Utc::now() - chrono::Duration::days(800 - i as i64)),
                )
                .filter(audit_logs::Column::Id.eq(row.id))
                .exec(&db.conn)
                .await
                .unwrap();
        }
        let verify = || {
            authed(
                pb::VerifyAuditChainRequest {
                    organization_id: org.id.clone(),
                },
                &alice,
            )
        };
        let report = ferry_db::retention::cleanup(
            &db.conn,
            &ferry_tests::test_keyring(),
            &ferry_db::retention::RetentionPolicy::default(),
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        assert!(report.audit_logs >= 4, "{b}: {report:?}");
        let after = c
            .audit
            .verify_audit_chain(verify())
            .await
            .unwrap()
            .into_inner();
        assert!(after.ok, "{b}: {after:?}");
        assert_eq!(after.entries_checked, 6, "{b}");
        let cp = audit_checkpoints::Entity::find()
            .filter(audit_checkpoints::Column::Chain.eq(org.id.as_str()))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(cp.deleted_count, 4, "{b}");
        assert_eq!(Some(cp.last_hash.clone()), chain[3].hash, "{b}");

        // A forged starting point (skip one more row) breaks the seal.
        let mut forged: audit_checkpoints::ActiveModel = cp.clone().into();
        forged.last_hash = Set(chain[4].hash.clone().unwrap());
        forged.through_id = Set(chain[4].id);
        forged.through_created_at = Set(chain[4].created_at);
        forged.update(&db.conn).await.unwrap();
        let broken = c
            .audit
            .verify_audit_chain(verify())
            .await
            .unwrap()
            .into_inner();
        assert!(!broken.ok, "{b}");
        assert!(broken.reason.contains("seal"), "{b}: {broken:?}");
        let restored: audit_checkpoints::ActiveModel = cp.clone().into();
        restored.reset_all().update(&db.conn).await.unwrap();
        assert!(
            c.audit
                .verify_audit_chain(verify())
                .await
                .unwrap()
                .into_inner()
                .ok,
            "{b}"
        );

        // Removing the newest entry is found: the head is kept apart.
        audit_logs::Entity::delete_by_id(chain[9].id)
            .exec(&db.conn)
            .await
            .unwrap();
        let broken = c
            .audit
            .verify_audit_chain(verify())
            .await
            .unwrap()
            .into_inner();
        assert!(!broken.ok, "{b}");
        assert_eq!(broken.first_broken_id, Some(chain[9].id.to_string()), "{b}");
        assert!(broken.reason.contains("newest"), "{b}: {broken:?}");

        // Deleting the first row after the cut is found.
        audit_logs::Entity::delete_by_id(chain[4].id)
            .exec(&db.conn)
            .await
            .unwrap();
        let broken = c
            .audit
            .verify_audit_chain(verify())
            .await
            .unwrap()
            .into_inner();
        assert!(!broken.ok, "{b}");
        assert_eq!(broken.first_broken_id, Some(chain[5].id.to_string()), "{b}");
    }
}

/// An append reads only the chain's head when there is one: its time
/// bounds the new row's (even ahead of the clock), its hash is the link. A
/// chain without a head (written before heads existed) links to its newest
/// row and gets one.
#[tokio::test]
async fn audit_appends_link_through_the_head_or_else_the_newest_row() {
    use ferry_db::entities::audit_chain_heads;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        register(&mut c, "alice").await;
        let alice = login(&mut c, "alice").await;
        let org = create_org(&mut c, &alice, "Acme").await;
        let rename = |name: &str| {
            authed(
                pb::RenameOrganizationRequest {
                    id: org.id.clone(),
                    name: name.into(),
                },
                &alice,
            )
        };
        let verify = || {
            authed(
                pb::VerifyAuditChainRequest {
                    organization_id: org.id.clone(),
                },
                &alice,
            )
        };
        let head = || {
            let conn = db.conn.clone();
            let chain = org.id.clone();
            async move {
                audit_chain_heads::Entity::find()
                    .filter(audit_chain_heads::Column::Chain.eq(chain))
                    .one(&conn)
                    .await
                    .unwrap()
            }
        };
        c.orgs.rename_organization(rename("Acme 1")).await.unwrap();

        // The head's time is ahead of the clock (another replica's): the
        // next row still comes after it.
        let ahead = chrono::Utc::now() + chrono::Duration::hours(1);
        let mut moved: audit_chain_heads::ActiveModel = head().await.unwrap().into();
        moved.last_created_at = Set(ahead);
        moved.update(&db.conn).await.unwrap();
        c.orgs.rename_organization(rename("Acme 2")).await.unwrap();
        let newest = head().await.unwrap();
        assert!(newest.last_created_at > ahead, "{b}: {newest:?}");
        let row = audit_logs::Entity::find_by_id(newest.last_id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert!(row.created_at > ahead, "{b}");
        let report = c
            .audit
            .verify_audit_chain(verify())
            .await
            .unwrap()
            .into_inner();
        assert!(report.ok, "{b}: {report:?}");

        // Without a head, the next row links to the newest row.
        audit_chain_heads::Entity::delete_by_id(newest.id)
            .exec(&db.conn)
            .await
            .unwrap();
        c.orgs.rename_organization(rename("Acme 3")).await.unwrap();
        let report = c
            .audit
            .verify_audit_chain(verify())
            .await
            .unwrap()
            .into_inner();
        assert!(report.ok, "{b}: {report:?}");
        assert_eq!(report.entries_checked, 4, "{b}");
        let recreated = head().await.unwrap();
        let last = audit_logs::Entity::find_by_id(recreated.last_id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(last.prev_hash, row.hash, "{b}");
        assert!(last.created_at > row.created_at, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn audit_chain_records_mutations_and_detects_tampering() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        let alice_user = register(&mut c, "alice").await;
        let alice = login(&mut c, "alice").await;
        let org = create_org(&mut c, &alice, "Acme").await;
        let doomed = create_org(&mut c, &alice, "Doomed").await;
        // Concurrent appends to one chain stay linked.
        let mut tasks = Vec::new();
        for i in 0..6 {
            let mut c = c.clone();
            let (id, token) = (org.id.clone(), alice.clone());
            tasks.push(tokio::spawn(async move {
                c.orgs
                    .rename_organization(authed(
                        pb::RenameOrganizationRequest {
                            id,
                            name: format!("Acme {i}"),
                        },
                        &token,
                    ))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        // Deleting another org moves its rows out of the way of both chains.
        c.orgs
            .delete_organization(authed(
                pb::DeleteOrganizationRequest {
                    id: doomed.id.clone(),
                },
                &alice,
            ))
            .await
            .unwrap();

        let verify = |org: &str| {
            authed(
                pb::VerifyAuditChainRequest {
                    organization_id: org.into(),
                },
                &alice,
            )
        };
        let report = c
            .audit
            .verify_audit_chain(verify(&org.id))
            .await
            .unwrap()
            .into_inner();
        assert!(report.ok, "{b}: {report:?}");
        assert_eq!(report.entries_checked, 7, "{b}: create + 6 renames");

        // Filters and paging, newest first.
        let list = |req: pb::ListAuditLogRequest| {
            authed(
                pb::ListAuditLogRequest {
                    organization_id: org.id.clone(),
                    ..req
                },
                &alice,
            )
        };
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = c
                .audit
                .list_audit_log(list(pb::ListAuditLogRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner();
            assert!(page.entries.len() <= 3, "{b}");
            seen.extend(page.entries);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 7, "{b}");
        assert_eq!(seen.last().unwrap().action, "organization.create", "{b}");
        assert!(seen.windows(2).all(|w| w[0].id > w[1].id), "{b}");
        let first = seen.last().unwrap();
        assert_eq!(
            first.actor_id.as_deref(),
            Some(alice_user.id.as_str()),
            "{b}"
        );
        assert_eq!(first.ip_address.as_deref(), Some("127.0.0.1"), "{b}");
        assert!(
            first.user_agent.as_deref().unwrap().starts_with(USER_AGENT),
            "{b}"
        );
        assert_eq!(first.resource_type, "organization", "{b}");
        assert_eq!(first.resource_id.as_deref(), Some(org.id.as_str()), "{b}");
        let renames = c
            .audit
            .list_audit_log(list(pb::ListAuditLogRequest {
                action: Some("organization.rename".into()),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert_eq!(renames.len(), 6, "{b}");
        let none = c
            .audit
            .list_audit_log(list(pb::ListAuditLogRequest {
                actor_id: Some(Uuid::now_v7().to_string()),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(none.is_empty(), "{b}");
        let future = prost_types::Timestamp {
            seconds: chrono::Utc::now().timestamp() + 3600,
            nanos: 0,
        };
        let later = c
            .audit
            .list_audit_log(list(pb::ListAuditLogRequest {
                since: Some(future),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(later.is_empty(), "{b}");
        let by_resource = c
            .audit
            .list_audit_log(list(pb::ListAuditLogRequest {
                resource_type: Some("organization".into()),
                resource_id: Some(org.id.clone()),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert_eq!(by_resource.len(), 7, "{b}");

        // No secret value anywhere in the log.
        let rows = audit_logs::Entity::find().all(&db.conn).await.unwrap();
        let actions: Vec<&str> = rows.iter().map(|r| r.action.as_str()).collect();
        for action in [
            "user.register",
            "user.login",
            "organization.create",
            "organization.rename",
            "organization.delete",
        ] {
            assert!(actions.contains(&action), "{b}: {action} in {actions:?}");
        }
        for row in &rows {
            let text = format!("{row:?}");
            assert!(
                !text.contains(PASSWORD) && !text.contains(&alice),
                "{b}: {text}"
            );
        }

        // The global chain (register, login, the deleted org) verifies too.
        users::Entity::update_many()
            .col_expr(users::Column::IsSuperAdmin, Expr::value(true))
            .exec(&db.conn)
            .await
            .unwrap();
        // The api forgets its cached identity on a NOTIFY (PostgreSQL) or
        // its cache timeout: a change made in SQL takes up to 2 s to show.
        let mut attempt = 0;
        let global = loop {
            match c.audit.verify_audit_chain(verify("")).await {
                Ok(r) => break r.into_inner(),
                Err(e) if e.code() == Code::PermissionDenied && attempt < 40 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("{b}: {e:?}"),
            }
        };
        assert!(global.ok, "{b}: {global:?}");
        assert_eq!(global.entries_checked, 3, "{b}");

        // Edit a row directly: the chain reports exactly that row.
        let chain: Vec<audit_logs::Model> = audit_logs::Entity::find()
            .filter(audit_logs::Column::OrganizationId.eq(org.id.parse::<Uuid>().unwrap()))
            .order_by_asc(audit_logs::Column::CreatedAt)
            .all(&db.conn)
            .await
            .unwrap();
        let victim = &chain[2];
        audit_logs::Entity::update_many()
            .col_expr(audit_logs::Column::Details, Expr::value(serde_json::json!({"from": "x", "to": "y", "chain": org.id, "actorId": alice_user.id})))
            .filter(audit_logs::Column::Id.eq(victim.id))
            .exec(&db.conn)
            .await
            .unwrap();
        let report = c
            .audit
            .verify_audit_chain(verify(&org.id))
            .await
            .unwrap()
            .into_inner();
        assert!(!report.ok, "{b}");
        assert_eq!(
            report.first_broken_id.as_deref(),
            Some(victim.id.to_string().as_str()),
            "{b}: {report:?}"
        );
        assert_eq!(report.entries_checked, 3, "{b}");

        // Restore it, then remove a row: the next one no longer links.
        audit_logs::Entity::update_many()
            .col_expr(
                audit_logs::Column::Details,
                Expr::value(victim.details.clone()),
            )
            .filter(audit_logs::Column::Id.eq(victim.id))
            .exec(&db.conn)
            .await
            .unwrap();
        assert!(
            c.audit
                .verify_audit_chain(verify(&org.id))
                .await
                .unwrap()
                .into_inner()
                .ok,
            "{b}"
        );
        audit_logs::Entity::delete_by_id(chain[4].id)
            .exec(&db.conn)
            .await
            .unwrap();
        let report = c
            .audit
            .verify_audit_chain(verify(&org.id))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            report.first_broken_id.as_deref(),
            Some(chain[5].id.to_string().as_str()),
            "{b}: {report:?}"
        );
        assert!(report.reason.contains("link"), "{b}: {report:?}");
        api.stop().await;
    }
}

/// How an RPC must treat an unauthenticated caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unauth {
    /// Works without a credential (Register, Login).
    Public,
    /// UNAUTHENTICATED.
    Rejected,
}

/// Every RPC of the public API. A new RPC fails the test until it is added
/// here AND to `cross_tenant` below.
const EXPECTATIONS: &[(&str, Unauth)] = &[
    ("/ferry.v1.AuthService/Register", Unauth::Public),
    ("/ferry.v1.AuthService/Login", Unauth::Public),
    ("/ferry.v1.AuthService/Logout", Unauth::Rejected),
    ("/ferry.v1.AuthService/Me", Unauth::Rejected),
    ("/ferry.v1.AuthService/ChangePassword", Unauth::Rejected),
    ("/ferry.v1.AuthService/ListSessions", Unauth::Rejected),
    ("/ferry.v1.AuthService/RevokeSession", Unauth::Rejected),
    (
        "/ferry.v1.AuthService/BeginTotpEnrollment",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.AuthService/ConfirmTotpEnrollment",
        Unauth::Rejected,
    ),
    ("/ferry.v1.AuthService/DisableTotp", Unauth::Rejected),
    (
        "/ferry.v1.AuthService/RegenerateRecoveryCodes",
        Unauth::Rejected,
    ),
    ("/ferry.v1.AuthService/CompleteSecondFactor", Unauth::Public),
    ("/ferry.v1.AuthService/ListTrustedDevices", Unauth::Rejected),
    (
        "/ferry.v1.AuthService/RevokeTrustedDevice",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/CreateOrganization",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/GetOrganization",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/ListOrganizations",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/RenameOrganization",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/DeleteOrganization",
        Unauth::Rejected,
    ),
    ("/ferry.v1.AuditService/ListAuditLog", Unauth::Rejected),
    ("/ferry.v1.AuditService/VerifyAuditChain", Unauth::Rejected),
    (
        "/ferry.v1.OrganizationService/ListMembers",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/ChangeMemberRole",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/RemoveMember",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/LeaveOrganization",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/TransferOwnership",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/GetOrganizationLimits",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/SetOrganizationLimits",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/GetRetentionPolicy",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.OrganizationService/SetRetentionPolicy",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.InvitationService/CreateInvitation",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.InvitationService/ListInvitations",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.InvitationService/RevokeInvitation",
        Unauth::Rejected,
    ),
    (
        "/ferry.v1.InvitationService/AcceptInvitation",
        Unauth::Rejected,
    ),
    ("/ferry.v1.ApiTokenService/CreateApiToken", Unauth::Rejected),
    ("/ferry.v1.ApiTokenService/ListApiTokens", Unauth::Rejected),
    ("/ferry.v1.ApiTokenService/RevokeApiToken", Unauth::Rejected),
    ("/ferry.v1.GrantService/CreateGrant", Unauth::Rejected),
    ("/ferry.v1.GrantService/ListGrants", Unauth::Rejected),
    ("/ferry.v1.GrantService/DeleteGrant", Unauth::Rejected),
];

fn is_workload_method(method: &str) -> bool {
    WORKLOAD_SERVICES
        .iter()
        .any(|s| method.starts_with(&format!("/ferry.v1.{s}/")))
}

/// Every public RPC (package `ferry.v1`, minus SystemService) from the
/// descriptor set, as `/package.Service/Method`.
fn public_methods() -> Vec<String> {
    let fds = prost_types::FileDescriptorSet::decode(ferry_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in &fds.file {
        if file.package() != "ferry.v1" {
            continue;
        }
        for service in &file.service {
            if service.name() == "SystemService" {
                continue;
            }
            for method in &service.method {
                methods.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    methods.sort();
    methods
}

/// Calls `method` with an empty message (and optionally a bearer token).
async fn call_empty(channel: &Channel, method: &str, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(method).unwrap();
    grpc.unary(request, path, tonic_prost::ProstCodec::<(), ()>::default())
        .await
        .map(|_| ())
}

/// What a user of another organization gets from `method` aimed at the
/// victim's organization (or session), or `None` when the method is not
/// tenant-scoped (it acts on the caller's own account only).
async fn cross_tenant(c: &mut Clients, method: &str, v: &Victim, outsider: &str) -> Option<Code> {
    let org = v.org.clone();
    if is_workload_method(method) {
        return None;
    }
    let r = match method {
        "/ferry.v1.AuthService/Register"
        | "/ferry.v1.AuthService/Login"
        | "/ferry.v1.AuthService/Logout"
        | "/ferry.v1.AuthService/Me"
        | "/ferry.v1.AuthService/ChangePassword"
        | "/ferry.v1.AuthService/ListSessions"
        | "/ferry.v1.OrganizationService/CreateOrganization"
        // Two-factor calls act on the caller's own account (or challenge);
        // other users' devices are covered in tests/two_factor.rs.
        | "/ferry.v1.AuthService/BeginTotpEnrollment"
        | "/ferry.v1.AuthService/ConfirmTotpEnrollment"
        | "/ferry.v1.AuthService/DisableTotp"
        | "/ferry.v1.AuthService/RegenerateRecoveryCodes"
        | "/ferry.v1.AuthService/CompleteSecondFactor"
        | "/ferry.v1.AuthService/ListTrustedDevices" => return None,
        "/ferry.v1.AuthService/RevokeTrustedDevice" => c
            .auth
            .revoke_trusted_device(authed(
                pb::RevokeTrustedDeviceRequest {
                    id: Uuid::now_v7().to_string(),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/ListOrganizations" => {
            let list = c
                .orgs
                .list_organizations(authed(pb::ListOrganizationsRequest::default(), outsider))
                .await
                .unwrap()
                .into_inner();
            assert!(
                list.organizations.iter().all(|o| o.id != org),
                "victim org listed"
            );
            return Some(Code::NotFound);
        }
        "/ferry.v1.AuthService/RevokeSession" => c
            .auth
            .revoke_session(authed(
                pb::RevokeSessionRequest {
                    id: v.session.clone(),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/GetOrganization" => c
            .orgs
            .get_organization(authed(pb::GetOrganizationRequest { id: org }, outsider))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/RenameOrganization" => c
            .orgs
            .rename_organization(authed(
                pb::RenameOrganizationRequest {
                    id: org,
                    name: "pwned".into(),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/DeleteOrganization" => c
            .orgs
            .delete_organization(authed(pb::DeleteOrganizationRequest { id: org }, outsider))
            .await
            .map(drop),
        "/ferry.v1.AuditService/ListAuditLog" => c
            .audit
            .list_audit_log(authed(
                pb::ListAuditLogRequest {
                    organization_id: org,
                    ..Default::default()
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.AuditService/VerifyAuditChain" => c
            .audit
            .verify_audit_chain(authed(
                pb::VerifyAuditChainRequest {
                    organization_id: org,
                },
                outsider,
            ))
            .await
            .map(drop),
        // Tenancy (tests/tenancy.rs covers these in depth): the victim's
        // organization with made-up member / resource ids.
        "/ferry.v1.OrganizationService/ListMembers" => c
            .orgs
            .list_members(authed(
                pb::ListMembersRequest {
                    organization_id: org,
                    ..Default::default()
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/ChangeMemberRole" => c
            .orgs
            .change_member_role(authed(
                pb::ChangeMemberRoleRequest {
                    organization_id: org,
                    user_id: Uuid::now_v7().to_string(),
                    role: pb::OrganizationRole::Viewer.into(),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/RemoveMember" => c
            .orgs
            .remove_member(authed(
                pb::RemoveMemberRequest {
                    organization_id: org,
                    user_id: Uuid::now_v7().to_string(),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/LeaveOrganization" => c
            .orgs
            .leave_organization(authed(
                pb::LeaveOrganizationRequest {
                    organization_id: org,
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/TransferOwnership" => c
            .orgs
            .transfer_ownership(authed(
                pb::TransferOwnershipRequest {
                    organization_id: org,
                    new_owner_user_id: Uuid::now_v7().to_string(),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/GetOrganizationLimits" => c
            .orgs
            .get_organization_limits(authed(
                pb::GetOrganizationLimitsRequest {
                    organization_id: org,
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/SetOrganizationLimits" => c
            .orgs
            .set_organization_limits(authed(
                pb::SetOrganizationLimitsRequest {
                    organization_id: org,
                    limits: Some(pb::ResourceLimits {
                        pods: Some(1),
                        ..Default::default()
                    }),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/GetRetentionPolicy" => c
            .orgs
            .get_retention_policy(authed(
                pb::GetRetentionPolicyRequest {
                    organization_id: org,
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.OrganizationService/SetRetentionPolicy" => c
            .orgs
            .set_retention_policy(authed(
                pb::SetRetentionPolicyRequest {
                    organization_id: org,
                    policy: Some(pb::RetentionPolicy {
                        deployment_logs_days: 1,
                        ..Default::default()
                    }),
                },
                outsider,
            ))
            .await
            .map(drop),
        "/ferry.v1.InvitationService/CreateInvitation" => {
            pb::invitation_service_client::InvitationServiceClient::new(c.channel.clone())
                .create_invitation(authed(
                    pb::CreateInvitationRequest {
                        organization_id: org,
                        email: "mole@example.com".into(),
                        role: pb::OrganizationRole::Admin.into(),
                        ttl_hours: 0,
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.InvitationService/ListInvitations" => {
            pb::invitation_service_client::InvitationServiceClient::new(c.channel.clone())
                .list_invitations(authed(
                    pb::ListInvitationsRequest {
                        organization_id: org,
                        include_inactive: true,
                        ..Default::default()
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.InvitationService/RevokeInvitation" => {
            pb::invitation_service_client::InvitationServiceClient::new(c.channel.clone())
                .revoke_invitation(authed(
                    pb::RevokeInvitationRequest {
                        organization_id: org,
                        id: Uuid::now_v7().to_string(),
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.InvitationService/AcceptInvitation" => {
            pb::invitation_service_client::InvitationServiceClient::new(c.channel.clone())
                .accept_invitation(authed(
                    pb::AcceptInvitationRequest {
                        token: "ferry_inv_forged".into(),
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.ApiTokenService/CreateApiToken" => {
            pb::api_token_service_client::ApiTokenServiceClient::new(c.channel.clone())
                .create_api_token(authed(
                    pb::CreateApiTokenRequest {
                        organization_id: org,
                        name: "mole".into(),
                        role: pb::OrganizationRole::Viewer.into(),
                        expires_at: None,
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.ApiTokenService/ListApiTokens" => {
            pb::api_token_service_client::ApiTokenServiceClient::new(c.channel.clone())
                .list_api_tokens(authed(
                    pb::ListApiTokensRequest {
                        organization_id: org,
                        ..Default::default()
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.ApiTokenService/RevokeApiToken" => {
            pb::api_token_service_client::ApiTokenServiceClient::new(c.channel.clone())
                .revoke_api_token(authed(
                    pb::RevokeApiTokenRequest {
                        organization_id: org,
                        id: Uuid::now_v7().to_string(),
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.GrantService/CreateGrant" => {
            pb::grant_service_client::GrantServiceClient::new(c.channel.clone())
                .create_grant(authed(
                    pb::CreateGrantRequest {
                        organization_id: org,
                        user_id: Uuid::now_v7().to_string(),
                        resource_type: pb::GrantResourceType::Project.into(),
                        resource_id: Uuid::now_v7().to_string(),
                        level: pb::GrantLevel::Manage.into(),
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.GrantService/ListGrants" => {
            pb::grant_service_client::GrantServiceClient::new(c.channel.clone())
                .list_grants(authed(
                    pb::ListGrantsRequest {
                        organization_id: org,
                        user_id: String::new(),
                        ..Default::default()
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        "/ferry.v1.GrantService/DeleteGrant" => {
            pb::grant_service_client::GrantServiceClient::new(c.channel.clone())
                .delete_grant(authed(
                    pb::DeleteGrantRequest {
                        organization_id: org,
                        id: Uuid::now_v7().to_string(),
                    },
                    outsider,
                ))
                .await
                .map(drop)
        }
        other => panic!("no cross-tenant case for {other}: add one"),
    };
    Some(r.expect_err("a cross-tenant call succeeded").code())
}

struct Victim {
    org: String,
    session: String,
}

#[tokio::test]
async fn every_rpc_is_authenticated_and_tenant_scoped() {
    let methods = public_methods();
    let listed: Vec<&str> = EXPECTATIONS.iter().map(|(m, _)| *m).collect();
    for m in &methods {
        assert!(
            listed.contains(&m.as_str()) || is_workload_method(m),
            "{m} has no entry in EXPECTATIONS: add one"
        );
    }
    let expectations: Vec<(&str, Unauth)> = EXPECTATIONS
        .iter()
        .copied()
        .chain(
            methods
                .iter()
                .filter(|m| is_workload_method(m))
                .map(|m| (m.as_str(), Unauth::Rejected)),
        )
        .collect();
    for m in &listed {
        assert!(
            methods.iter().any(|x| x == m),
            "EXPECTATIONS names {m}, which does not exist"
        );
    }

    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_with_feed(&db.conn, relaxed(), Some(FEED_TOKEN)).await;
        let mut c = clients_as(api.addr, USER_AGENT).await;
        register(&mut c, "victim").await;
        register(&mut c, "outsider").await;
        let victim = login(&mut c, "victim").await;
        let outsider = login(&mut c, "outsider").await;
        create_org(&mut c, &outsider, "Outsider Org").await;
        let v = Victim {
            org: create_org(&mut c, &victim, "Victim Org").await.id,
            session: sessions::Entity::find()
                .filter(sessions::Column::TokenHash.eq(ferry_db::token::hash_token(&victim)))
                .one(&db.conn)
                .await
                .unwrap()
                .unwrap()
                .id
                .to_string(),
        };

        for (method, unauth) in &expectations {
            let result = call_empty(&c.channel, method, None).await;
            match unauth {
                Unauth::Rejected => {
                    assert_eq!(
                        code(result),
                        Code::Unauthenticated,
                        "{b}: {method} unauthenticated"
                    );
                    for bad in ["fs_forged", "ferry_pat_forged", FEED_TOKEN] {
                        let result = call_empty(&c.channel, method, Some(bad)).await;
                        assert_eq!(
                            code(result),
                            Code::Unauthenticated,
                            "{b}: {method} with {bad}"
                        );
                    }
                }
                // An empty request is invalid, but not for lack of a credential.
                Unauth::Public => {
                    let got = code(result);
                    assert!(
                        matches!(got, Code::InvalidArgument | Code::Unauthenticated),
                        "{b}: {method}: {got:?}"
                    );
                    if *method == "/ferry.v1.AuthService/Register" {
                        assert_eq!(got, Code::InvalidArgument, "{b}");
                    }
                }
            }
            if let Some(got) = cross_tenant(&mut c, method, &v, &outsider).await {
                assert!(
                    matches!(got, Code::NotFound | Code::PermissionDenied),
                    "{b}: {method} cross-tenant: {got:?}"
                );
            }
        }
        // The victim's org and session survived every attempt.
        c.orgs
            .get_organization(authed(
                pb::GetOrganizationRequest { id: v.org.clone() },
                &victim,
            ))
            .await
            .unwrap();

        // The internal route feed takes only the service credential.
        let mut feed = ferry_proto::ferry::internal::v1::route_feed_client::RouteFeedClient::new(
            c.channel.clone(),
        );
        for token in [victim.as_str(), outsider.as_str()] {
            let watch = feed
                .watch(authed(
                    ferry_proto::ferry::internal::v1::WatchRequest {
                        resume_from_version: 0,
                        proxy_id: "t".into(),
                    },
                    token,
                ))
                .await;
            assert_eq!(
                code(watch.map(drop)),
                Code::Unauthenticated,
                "{b}: RouteFeed with a user token"
            );
        }
        api.stop().await;
    }
}

/// An auth client whose connection comes from `local` (any 127.0.0.0/8
/// address reaches the loopback server), so tests can play several
/// client addresses.
async fn auth_from(
    addr: std::net::SocketAddr,
    local: [u8; 4],
) -> pb::auth_service_client::AuthServiceClient<Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .local_address(Some(std::net::IpAddr::from(local)))
        .connect()
        .await
        .unwrap();
    pb::auth_service_client::AuthServiceClient::new(channel)
}

fn retry_after(status: &Status) -> u64 {
    status
        .metadata()
        .get("retry-after")
        .expect("retry-after")
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs 20 logins at once; returns how many were checked (wrong
/// credentials) and how many refused by the throttle.
async fn parallel_logins(
    c: &pb::auth_service_client::AuthServiceClient<Channel>,
    login_of: impl Fn(usize) -> String,
) -> (usize, usize) {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let mut c = c.clone();
            let login = login_of(i);
            tokio::spawn(async move { try_login(&mut c, &login, "wrong password!").await })
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
async fn parallel_wrong_passwords_are_counted_before_they_are_checked() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let config = IdentityConfig {
            throttle: ThrottlePolicy {
                account_free_failures: 3,
                ip_free_failures: 3,
                base_delay: chrono::Duration::seconds(30),
                ..ThrottlePolicy::default()
            },
            ..IdentityConfig::default()
        };
        let api = start(&db.conn, config).await;
        let mut c = auth_from(api.addr, [127, 0, 0, 2]).await;
        register(&mut c, "alice").await;

        // 20 wrong passwords at once for one account: each argon2 check
        // takes long enough that a check-then-count throttle lets them all
        // through; counted first, only the allowance is checked.
        let (checked, throttled) = parallel_logins(&c, |_| "alice".into()).await;
        assert_eq!((checked, throttled), (3, 17), "{b}");
        // alice, from another address, is not locked out by that.
        let mut other = auth_from(api.addr, [127, 0, 0, 3]).await;
        try_login(&mut other, "alice", PASSWORD).await.unwrap();

        // Unknown names cost a dummy argon2 check each: bounded per address
        // too, whatever names are tried.
        let c = auth_from(api.addr, [127, 0, 0, 4]).await;
        let (checked, throttled) = parallel_logins(&c, |i| format!("nobody{i}")).await;
        assert_eq!((checked, throttled), (3, 17), "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn strangers_cannot_keep_an_account_locked() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let config = IdentityConfig {
            throttle: ThrottlePolicy {
                account_free_failures: 3,
                account_wide_free_failures: 3,
                ip_free_failures: 100,
                base_delay: chrono::Duration::seconds(60),
                max_lock: chrono::Duration::hours(1),
                account_max_lock: chrono::Duration::seconds(3),
                ..ThrottlePolicy::default()
            },
            ..IdentityConfig::default()
        };
        let api = start(&db.conn, config).await;
        let mut attacker = auth_from(api.addr, [127, 0, 0, 2]).await;
        let mut alice = auth_from(api.addr, [127, 0, 0, 3]).await;
        register(&mut alice, "alice").await;

        for _ in 0..3 {
            let err = try_login(&mut attacker, "alice", "guess guess guess")
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{b}");
        }
        // The attacker's address is locked out of alice for a minute...
        let err = try_login(&mut attacker, "alice", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}");
        assert!(retry_after(&err) > 30, "{b}: {err:?}");
        // ...alice herself, from her address, only for the capped
        // account-wide lock.
        let err = try_login(&mut alice, "alice", PASSWORD).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}");
        assert!(retry_after(&err) <= 3, "{b}: {err:?}");
        tokio::time::sleep(std::time::Duration::from_millis(3_100)).await;
        try_login(&mut alice, "alice", PASSWORD).await.unwrap();
        // The attacker is still locked, and alice's success freed nothing
        // for them.
        let err = try_login(&mut attacker, "alice", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}");
        assert!(retry_after(&err) > 30, "{b}: {err:?}");
        api.stop().await;
    }
}

#[tokio::test]
async fn an_address_that_keeps_failing_stays_throttled() {
    use ferry_db::entities::auth_throttle;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let config = IdentityConfig {
            throttle: ThrottlePolicy {
                account_free_failures: 100,
                account_wide_free_failures: 100,
                ip_free_failures: 3,
                base_delay: chrono::Duration::seconds(10),
                ..ThrottlePolicy::default()
            },
            ..IdentityConfig::default()
        };
        let api = start(&db.conn, config).await;
        let mut attacker = auth_from(api.addr, [127, 0, 0, 2]).await;
        let ip_key = auth_throttle::Column::Key.eq("ip:127.0.0.2");
        let set = |locked: i64, updated: i64, started: i64| {
            let now = chrono::Utc::now();
            auth_throttle::Entity::update_many()
                .col_expr(
                    auth_throttle::Column::LockedUntil,
                    Expr::value(Some(now - chrono::Duration::seconds(locked))),
                )
                .col_expr(
                    auth_throttle::Column::UpdatedAt,
                    Expr::value(now - chrono::Duration::seconds(updated)),
                )
                .col_expr(
                    auth_throttle::Column::WindowStart,
                    Expr::value(now - chrono::Duration::seconds(started)),
                )
                .filter(ip_key.clone())
                .exec(&db.conn)
        };
        for i in 0..3 {
            let err = try_login(&mut attacker, &format!("user{i}"), PASSWORD)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{b}");
        }
        let err = try_login(&mut attacker, "user9", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}");

        // Two hours into the attack, the lock has just ended: the next
        // failure locks again at once (the run is not forgiven because it
        // started long ago).
        set(1, 10, 7_200).await.unwrap();
        let err = try_login(&mut attacker, "user9", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{b}");
        let err = try_login(&mut attacker, "user9", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}: forgiven");

        // Quiet for longer than the window after the lock: forgotten.
        set(3_700, 7_200, 7_200).await.unwrap();
        for _ in 0..3 {
            let err = try_login(&mut attacker, "user9", PASSWORD)
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{b}");
        }
        api.stop().await;
    }
}

/// Registers `name` as sent by a proxy forwarding for `client`.
async fn register_via_proxy(
    c: &mut pb::auth_service_client::AuthServiceClient<Channel>,
    name: &str,
    client: &str,
) -> Result<(), Code> {
    let mut request = tonic::Request::new(pb::RegisterRequest {
        email: format!("{name}@example.com"),
        username: name.into(),
        password: PASSWORD.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", client.parse().unwrap());
    c.register(request).await.map(drop).map_err(|e| e.code())
}

#[tokio::test]
async fn forwarded_client_addresses_count_only_behind_trusted_proxies() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        for (trusted, second_client) in [(true, Ok(())), (false, Err(Code::ResourceExhausted))] {
            let config = IdentityConfig {
                throttle: ThrottlePolicy {
                    register_free: 1,
                    base_delay: chrono::Duration::seconds(60),
                    ..ThrottlePolicy::default()
                },
                trusted_proxies: ferry_api::request::TrustedProxies(if trusted {
                    vec!["127.0.0.0/8".parse().unwrap()]
                } else {
                    vec![]
                }),
                ..IdentityConfig::default()
            };
            let api = start(&db.conn, config).await;
            let mut c = clients(api.addr).await.auth;
            let tag = if trusted { "t" } else { "u" };
            register_via_proxy(&mut c, &format!("{tag}one"), "203.0.113.1")
                .await
                .unwrap();
            assert_eq!(
                register_via_proxy(&mut c, &format!("{tag}two"), "203.0.113.1").await,
                Err(Code::ResourceExhausted),
                "{b}: trusted={trusted}"
            );
            // Behind a trusted proxy another client has its own allowance;
            // otherwise the header is ignored and everyone shares the peer's.
            assert_eq!(
                register_via_proxy(&mut c, &format!("{tag}three"), "203.0.113.2").await,
                second_client,
                "{b}: trusted={trusted}"
            );
        }
    }
}

#[tokio::test]
async fn register_is_throttled_per_address() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let config = IdentityConfig {
            throttle: ThrottlePolicy {
                register_free: 3,
                base_delay: chrono::Duration::seconds(60),
                ..ThrottlePolicy::default()
            },
            ..IdentityConfig::default()
        };
        let api = start(&db.conn, config).await;
        let mut c = auth_from(api.addr, [127, 0, 0, 2]).await;
        register(&mut c, "first").await;
        // A refused registration (name taken) counts too: it cost a lookup
        // and tells which names exist.
        let err = c
            .register(pb::RegisterRequest {
                email: "first@example.com".into(),
                username: "first".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{b}");
        register(&mut c, "second").await;
        let err = c
            .register(pb::RegisterRequest {
                email: "third@example.com".into(),
                username: "third".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{b}: {err:?}");
        assert!(retry_after(&err) > 30, "{b}");
        // Malformed requests are refused before any hashing and not counted.
        let err = c
            .register(pb::RegisterRequest {
                email: "x".into(),
                username: "fourth".into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");

        // Parallel calls from one address: at most the allowance hashes.
        let c = auth_from(api.addr, [127, 0, 0, 3]).await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let mut c = c.clone();
                tokio::spawn(async move {
                    c.register(pb::RegisterRequest {
                        email: format!("par{i}@example.com"),
                        username: format!("par{i}"),
                        password: PASSWORD.into(),
                    })
                    .await
                    .map(drop)
                    .map_err(|e| e.code())
                })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let made = results.iter().filter(|r| r.is_ok()).count();
        let refused = results
            .iter()
            .filter(|r| **r == Err(Code::ResourceExhausted))
            .count();
        assert_eq!((made, refused), (3, 17), "{b}: {results:?}");

        // Another address is not affected.
        let mut other = auth_from(api.addr, [127, 0, 0, 4]).await;
        register(&mut other, "third").await;
        api.stop().await;
    }
}

/// An SMTP sink for one message that greets only once `release` fires;
/// `connected` fires when the api has connected. Returns the port and the
/// message's DATA.
async fn gated_smtp_sink() -> (
    u16,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<String>,
) {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connected_tx, connected) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let sink = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        connected_tx.send(()).ok();
        release_rx.await.ok();
        let (read, mut write) = stream.into_split();
        let mut lines = tokio::io::BufReader::new(read).lines();
        write.write_all(b"220 sink ESMTP\r\n").await.unwrap();
        let (mut data, mut in_data) = (String::new(), false);
        while let Ok(Some(line)) = lines.next_line().await {
            if in_data {
                if line == "." {
                    in_data = false;
                    write.write_all(b"250 queued\r\n").await.unwrap();
                } else {
                    data.push_str(&line);
                    data.push('\n');
                }
                continue;
            }
            let verb = line
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase();
            let reply: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 sink\r\n",
                "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                "QUIT" => {
                    write.write_all(b"221 bye\r\n").await.ok();
                    break;
                }
                _ => b"502 no\r\n",
            };
            write.write_all(reply).await.unwrap();
        }
        data
    });
    (port, connected, release, sink)
}

#[tokio::test]
async fn invitation_email_is_sent_after_the_invitation_commits() {
    use ferry_db::entities::enums::SmtpTlsMode;
    use ferry_db::entities::org_email_configs;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        register(&mut c, "owner").await;
        let owner = login(&mut c, "owner").await;
        let org = create_org(&mut c, &owner, "Slow Mail").await.id;
        let (port, connected, release, sink) = gated_smtp_sink().await;
        let now = chrono::Utc::now();
        org_email_configs::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org.parse().unwrap()),
            smtp_host: Set("127.0.0.1".into()),
            smtp_port: Set(i32::from(port)),
            username: Set(None),
            password: Set(None),
            from_address: Set("ferry@example.com".into()),
            from_name: Set(None),
            tls_mode: Set(SmtpTlsMode::None),
            enabled: Set(true),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&db.conn)
        .await
        .unwrap();

        let mut invites = c.invites.clone();
        let request = authed(
            pb::CreateInvitationRequest {
                organization_id: org.clone(),
                email: "newcomer@example.com".into(),
                role: pb::OrganizationRole::Member.into(),
                ttl_hours: 0,
            },
            &owner,
        );
        let created = tokio::spawn(async move { invites.create_invitation(request).await });
        tokio::time::timeout(std::time::Duration::from_secs(10), connected)
            .await
            .expect("the api connects to the SMTP server")
            .unwrap();

        // The SMTP server is stalling: the invitation is committed already...
        let limit = std::time::Duration::from_secs(4);
        let listed = tokio::time::timeout(
            limit,
            c.invites.list_invitations(authed(
                pb::ListInvitationsRequest {
                    organization_id: org.clone(),
                    include_inactive: false,
                    ..Default::default()
                },
                &owner,
            )),
        )
        .await
        .expect("reading invitations waits for the e-mail")
        .unwrap()
        .into_inner()
        .invitations;
        assert_eq!(listed.len(), 1, "{b}: not committed before sending");
        // ...and no write lock is held: other writes (to the same
        // organization's audit chain, too) go through.
        tokio::time::timeout(
            limit,
            c.orgs.rename_organization(authed(
                pb::RenameOrganizationRequest {
                    id: org.clone(),
                    name: "Slow Mail Inc".into(),
                },
                &owner,
            )),
        )
        .await
        .expect("a write waits for the e-mail")
        .unwrap();
        tokio::time::timeout(limit, async {
            register(&mut c, "bystander").await;
        })
        .await
        .expect("a registration waits for the e-mail");

        release.send(()).unwrap();
        let created = created.await.unwrap().unwrap().into_inner();
        assert!(created.emailed && created.email_error.is_empty(), "{b}");
        assert!(created.token.is_empty(), "{b}");
        let data = sink.await.unwrap();
        assert!(data.contains("ferry_inv_"), "{b}: {data}");
        api.stop().await;
    }
}

/// Polls `me` with `token` on `c` until it is refused (or 3 s pass);
/// returns how long that took.
async fn refused_within(c: &mut Clients, token: &str) -> Option<std::time::Duration> {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(3) {
        match c.auth.me(authed(pb::MeRequest {}, token)).await {
            Err(e) if e.code() == Code::Unauthenticated => return Some(started.elapsed()),
            Err(e) => panic!("unexpected {e:?}"),
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    None
}

/// Credentials are cached per replica for a few seconds; a revocation made
/// anywhere (another replica, plain SQL) must still end them at once.
#[tokio::test]
async fn revocations_reach_every_replica_at_once() {
    use std::time::Duration;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let a = start(&db.conn, relaxed()).await;
        let other = start(&db.conn, relaxed()).await;
        let mut ca = clients(a.addr).await;
        let mut cb = clients(other.addr).await;
        // Give the replicas' LISTEN connections (PostgreSQL) time to start.
        tokio::time::sleep(Duration::from_millis(300)).await;
        register(&mut ca, "alice").await;

        // A logout on the same replica ends the session there.
        let s = login(&mut ca, "alice").await;
        ca.auth.me(authed(pb::MeRequest {}, &s)).await.unwrap();
        ca.auth
            .logout(authed(pb::LogoutRequest {}, &s))
            .await
            .unwrap();
        let err = ca.auth.me(authed(pb::MeRequest {}, &s)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{b}");

        if b != ferry_tests::Backend::Postgres {
            // SQLite: one process owns the file; there is no other replica.
            a.stop().await;
            other.stop().await;
            continue;
        }
        // A session cached by replica A, ended through replica B.
        let s = login(&mut ca, "alice").await;
        ca.auth.me(authed(pb::MeRequest {}, &s)).await.unwrap();
        cb.auth
            .logout(authed(pb::LogoutRequest {}, &s))
            .await
            .unwrap();
        let took = refused_within(&mut ca, &s).await;
        assert!(took.is_some(), "{b}: replica A kept a logged-out session");

        // A session cached by A, deleted with plain SQL (an operator).
        let s = login(&mut ca, "alice").await;
        ca.auth.me(authed(pb::MeRequest {}, &s)).await.unwrap();
        sessions::Entity::delete_many()
            .filter(sessions::Column::TokenHash.eq(ferry_db::token::hash_token(&s)))
            .exec(&db.conn)
            .await
            .unwrap();
        let took = refused_within(&mut ca, &s).await;
        assert!(took.is_some(), "{b}: replica A kept a deleted session");
        eprintln!("{b}: revocation seen by the other replica after {took:?}");
        a.stop().await;
        other.stop().await;
    }
}
