//! Organization retention windows over real gRPC, on SQLite and
//! PostgreSQL: members read them, admins and the owner set them (audit
//! logs at least 30 days unless a super-admin sets less), bad input names
//! its field, other organizations cannot touch them, and ferry-scheduler's
//! cleanup then keeps each organization's data as long as it chose, its
//! audit chain still verifying.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;

use chrono::{Duration, Utc};
use ferry_db::entities::enums::{LogLevel, OrgRole};
use ferry_db::entities::{
    audit_checkpoints, audit_logs, deployment_logs, deployments, organizations,
};
use ferry_db::retention::{RetentionPolicy, cleanup};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _,
    Set,
};
use ferry_proto::ferry::v1 as pb;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use support::*;
use tonic::{Code, Status};
use uuid::Uuid;

fn policy(f: impl FnOnce(&mut pb::RetentionPolicy)) -> pb::RetentionPolicy {
    let mut p = pb::RetentionPolicy::default();
    f(&mut p);
    p
}

async fn set(
    c: &mut Clients,
    org: &str,
    p: pb::RetentionPolicy,
    token: &str,
) -> Result<pb::RetentionPolicy, Status> {
    c.orgs
        .set_retention_policy(authed(
            pb::SetRetentionPolicyRequest {
                organization_id: org.into(),
                policy: Some(p),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().overrides.unwrap())
}

async fn get(c: &mut Clients, org: &str, token: &str) -> Result<pb::RetentionPolicy, Status> {
    c.orgs
        .get_retention_policy(authed(
            pb::GetRetentionPolicyRequest {
                organization_id: org.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().overrides.unwrap())
}

/// A service of a new project of `org`, with one deployment row (no
/// cluster needed: the rows are what retention reads).
async fn deployment(c: &Clients, db: &ferry_tests::TestDb, org: &str, token: &str) -> Uuid {
    let project = ProjectServiceClient::new(c.channel.clone())
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.into(),
                name: "Shop".into(),
                slug: String::new(),
                description: String::new(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    let service = ServiceServiceClient::new(c.channel.clone())
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: project.id,
                name: "web".into(),
                spec: Some(pb::create_service_request::Spec::Application(
                    pb::ApplicationSpec {
                        image: "ghcr.io/acme/web:1.0".into(),
                        ..Default::default()
                    },
                )),
                ports: vec![],
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner();
    deployments::ActiveModel {
        id: Set(Uuid::now_v7()),
        service_id: Set(Some(service.id.parse().unwrap())),
        ..Default::default()
    }
    .insert(&db.conn)
    .await
    .unwrap()
    .id
}

#[tokio::test]
async fn admins_set_retention_members_read_it_and_cleanup_keeps_each_orgs_window() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let mut tokens = HashMap::new();
        let mut ids = HashMap::new();
        for name in ["owner", "admin", "member", "viewer", "outsider", "root"] {
            ids.insert(name, register(&mut c, name).await.id);
            tokens.insert(name, login(&mut c, name).await);
        }
        let org = create_org(&mut c, &tokens["owner"], "Acme").await.id;
        let other = create_org(&mut c, &tokens["outsider"], "Other").await.id;
        for (name, role) in [
            ("admin", OrgRole::Admin),
            ("member", OrgRole::Member),
            ("viewer", OrgRole::Viewer),
        ] {
            add_member(&db.conn, &org, &ids[name], role).await;
        }
        make_super_admin(&db.conn, &ids["root"]).await;
        tokens.insert("root", login(&mut c, "root").await);
        // Another setting of the organization, which retention must keep.
        c.orgs
            .set_organization_limits(authed(
                pb::SetOrganizationLimitsRequest {
                    organization_id: org.clone(),
                    limits: Some(pb::ResourceLimits {
                        pods: Some(7),
                        ..Default::default()
                    }),
                },
                &tokens["root"],
            ))
            .await
            .unwrap();

        // Nothing overridden yet: 0 everywhere (the installation default).
        let none = pb::RetentionPolicy::default();
        assert_eq!(
            get(&mut c, &org, &tokens["viewer"]).await.unwrap(),
            none,
            "{b}"
        );

        // Members and viewers read but do not set; other tenants see nothing.
        let chosen = policy(|p| {
            p.deployment_logs_days = 90;
            p.audit_logs_days = 30;
        });
        for who in ["member", "viewer"] {
            let r = set(&mut c, &org, chosen, &tokens[who]).await;
            assert_eq!(code(r), Code::PermissionDenied, "{b}: {who}");
        }
        assert_eq!(
            code(set(&mut c, &org, chosen, &tokens["outsider"]).await),
            Code::NotFound,
            "{b}"
        );
        assert_eq!(
            code(get(&mut c, &org, &tokens["outsider"]).await),
            Code::NotFound,
            "{b}"
        );
        // ... and the owner of this one cannot reach the other's.
        assert_eq!(
            code(set(&mut c, &other, chosen, &tokens["owner"]).await),
            Code::NotFound,
            "{b}"
        );
        assert_eq!(
            code(get(&mut c, &other, &tokens["admin"]).await),
            Code::NotFound,
            "{b}"
        );

        // Bad input names the field; nothing is stored.
        for (bad, field) in [
            (
                policy(|p| p.deployment_logs_days = 3651),
                "policy.deploymentLogsDays",
            ),
            (policy(|p| p.job_runs_days = 100_000), "policy.jobRunsDays"),
            (
                policy(|p| p.container_metrics_days = u32::MAX),
                "policy.containerMetricsDays",
            ),
            (
                policy(|p| p.webhook_deliveries_days = 3651),
                "policy.webhookDeliveriesDays",
            ),
            (policy(|p| p.audit_logs_days = 4000), "policy.auditLogsDays"),
            // Tenants keep their audit log at least 30 days.
            (policy(|p| p.audit_logs_days = 29), "policy.auditLogsDays"),
        ] {
            let err = set(&mut c, &org, bad, &tokens["admin"]).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{b}: {field}");
            assert!(
                err.message().starts_with(&format!("{field}:")),
                "{b}: {field}: {}",
                err.message()
            );
        }
        assert_eq!(
            get(&mut c, &org, &tokens["viewer"]).await.unwrap(),
            none,
            "{b}"
        );

        // An admin sets; audited with the old and new overrides.
        assert_eq!(
            set(&mut c, &org, chosen, &tokens["admin"]).await.unwrap(),
            chosen,
            "{b}"
        );
        assert_eq!(
            get(&mut c, &org, &tokens["viewer"]).await.unwrap(),
            chosen,
            "{b}"
        );
        let audit = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("organization.set_retention"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "{b}");
        assert_eq!(audit[0].organization_id, Some(org.parse().unwrap()), "{b}");
        assert_eq!(audit[0].user_id, Some(ids["admin"].parse().unwrap()), "{b}");
        assert_eq!(audit[0].details["from"], serde_json::json!({}), "{b}");
        assert_eq!(
            audit[0].details["to"],
            serde_json::json!({"deployment_logs_days": 90, "audit_logs_days": 30}),
            "{b}"
        );
        // The limits set before are still there.
        let stored = organizations::Entity::find_by_id(org.parse::<Uuid>().unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.settings["limits"]["pods"], 7,
            "{b}: {}",
            stored.settings
        );

        // A super-admin (not a member) may keep audit logs shorter.
        let short = policy(|p| p.audit_logs_days = 7);
        assert_eq!(
            set(&mut c, &org, short, &tokens["root"]).await.unwrap(),
            short,
            "{b}"
        );
        // The owner clears everything; other settings stay.
        assert_eq!(
            set(&mut c, &org, none, &tokens["owner"]).await.unwrap(),
            none,
            "{b}"
        );
        let stored = organizations::Entity::find_by_id(org.parse::<Uuid>().unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert!(
            stored.settings.get("retention").is_none(),
            "{b}: {}",
            stored.settings
        );
        assert_eq!(stored.settings["limits"]["pods"], 7, "{b}");

        // Acme keeps deployment logs 90 days and its audit log 30; Other
        // keeps logs 7 days and the audit log as long as the installation.
        set(&mut c, &org, chosen, &tokens["owner"]).await.unwrap();
        set(
            &mut c,
            &other,
            policy(|p| p.deployment_logs_days = 7),
            &tokens["outsider"],
        )
        .await
        .unwrap();
        // Cleanup runs 45 days from now: every audit row is then 45 days old.
        let now = Utc::now() + Duration::days(45);
        let mine = deployment(&c, &db, &org, &tokens["owner"]).await;
        let theirs = deployment(&c, &db, &other, &tokens["outsider"]).await;
        for deployment in [mine, theirs] {
            for age in [3, 10, 45, 100] {
                deployment_logs::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    deployment_id: Set(deployment),
                    level: Set(LogLevel::Info),
                    message: Set(age.to_string()),
                    timestamp: Set(now - Duration::days(age)),
                    ..Default::default()
                }
                .insert(&db.conn)
                .await
                .unwrap();
            }
        }
        let chain = |o: &str| {
            let conn = db.conn.clone();
            let o: Uuid = o.parse().unwrap();
            async move {
                audit_logs::Entity::find()
                    .filter(audit_logs::Column::OrganizationId.eq(o))
                    .order_by_asc(audit_logs::Column::CreatedAt)
                    .order_by_asc(audit_logs::Column::Id)
                    .all(&conn)
                    .await
                    .unwrap()
            }
        };
        let acme_chain = chain(&org).await;
        let other_chain = chain(&other).await;

        let report = cleanup(
            &db.conn,
            &ferry_tests::test_keyring(),
            &RetentionPolicy::default(),
            now,
        )
        .await
        .unwrap();
        assert_eq!(report.deployment_logs, 4, "{b}: {report:?}");
        // Acme's whole chain is past its 30 days; Other keeps 365.
        assert_eq!(
            report.audit_logs,
            acme_chain.len() as u64,
            "{b}: {report:?}"
        );
        assert!(chain(&org).await.is_empty(), "{b}");
        assert_eq!(chain(&other).await, other_chain, "{b}");
        let left = |deployment: Uuid| {
            let conn = db.conn.clone();
            async move {
                let mut ages: Vec<i64> = deployment_logs::Entity::find()
                    .filter(deployment_logs::Column::DeploymentId.eq(deployment))
                    .all(&conn)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|l| l.message.parse().unwrap())
                    .collect();
                ages.sort_unstable();
                ages
            }
        };
        assert_eq!(left(mine).await, [3, 10, 45], "{b}");
        assert_eq!(left(theirs).await, [3], "{b}");

        // Acme's chain was cut (sealed checkpoint), Other's was not; both
        // verify.
        let cp = audit_checkpoints::Entity::find()
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(cp.len(), 1, "{b}");
        assert_eq!(cp[0].chain, org, "{b}");
        assert_eq!(cp[0].deleted_count, acme_chain.len() as i64, "{b}");
        assert_eq!(
            cp[0].last_hash,
            acme_chain.last().unwrap().hash.clone().unwrap(),
            "{b}"
        );
        // The next entry links to the cut chain's head.
        set(&mut c, &org, none, &tokens["owner"]).await.unwrap();
        for (o, token, entries) in [
            (&org, &tokens["owner"], 1),
            (&other, &tokens["outsider"], other_chain.len() as u64),
        ] {
            let verified = c
                .audit
                .verify_audit_chain(authed(
                    pb::VerifyAuditChainRequest {
                        organization_id: o.clone(),
                    },
                    token,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(verified.ok, "{b}: {verified:?}");
            assert_eq!(verified.entries_checked, entries, "{b}");
        }
        api.stop().await;
    }
}
