//! Organization resource limits over real gRPC, on SQLite and PostgreSQL:
//! members read them, only platform super-admins set them, and what Set
//! accepts renders into the project's ResourceQuota (the build limits
//! round-trip but stay out of it: builds run in the builds namespace;
//! tests/builds.rs shows the runner using them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry_db::entities::audit_logs;
use ferry_db::entities::enums::OrgRole;
use ferry_db::sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use ferry_proto::ferry::v1 as pb;
use pb::deployment_service_client::DeploymentServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use support::*;
use tonic::Code;

fn set_request(org: &str, limits: pb::ResourceLimits) -> pb::SetOrganizationLimitsRequest {
    pb::SetOrganizationLimitsRequest {
        organization_id: org.into(),
        limits: Some(limits),
    }
}

fn raised() -> pb::ResourceLimits {
    pb::ResourceLimits {
        cpu: Some("12500m".into()),
        memory: Some("48Gi".into()),
        pods: Some(7),
        build_cpu: Some("3".into()),
        build_memory: Some("6Gi".into()),
        concurrent_builds: Some(4),
        ..Default::default()
    }
}

/// The service's plan (as the owner), in YAML.
async fn plan(c: &Clients, token: &str, service_id: &str) -> String {
    DeploymentServiceClient::new(c.channel.clone())
        .plan_deployment(authed(
            pb::PlanDeploymentRequest {
                service_id: service_id.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .yaml
}

/// `key`'s value in the plan's ResourceQuota (quotes stripped).
fn quota(yaml: &str, key: &str) -> String {
    let doc = yaml
        .split("\n---")
        .find(|d| d.contains("kind: ResourceQuota"))
        .unwrap_or_else(|| panic!("no ResourceQuota in the plan:\n{yaml}"));
    doc.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches(['\'', '"']).to_owned())
        .unwrap_or_else(|| panic!("no {key} in:\n{doc}"))
}

#[tokio::test]
async fn super_admins_set_limits_members_read_them_and_plans_render_them() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start(&db.conn, relaxed()).await;
        let mut c = clients(api.addr).await;
        let mut tokens = std::collections::HashMap::new();
        let mut ids = std::collections::HashMap::new();
        for name in ["owner", "admin", "member", "viewer", "outsider", "root"] {
            ids.insert(name, register(&mut c, name).await.id);
            tokens.insert(name, login(&mut c, name).await);
        }
        let org = create_org(&mut c, &tokens["owner"], "Acme").await.id;
        for (name, role) in [
            ("admin", OrgRole::Admin),
            ("member", OrgRole::Member),
            ("viewer", OrgRole::Viewer),
        ] {
            add_member(&db.conn, &org, &ids[name], role).await;
        }
        make_super_admin(&db.conn, &ids["root"]).await;
        // Super-admin status is read at login.
        tokens.insert("root", login(&mut c, "root").await);

        // Before any override: the installation defaults, nothing overridden.
        let got = c
            .orgs
            .get_organization_limits(authed(
                pb::GetOrganizationLimitsRequest {
                    organization_id: org.clone(),
                },
                &tokens["viewer"],
            ))
            .await
            .unwrap()
            .into_inner();
        let defaults = got.defaults.clone().unwrap();
        assert_eq!(defaults.cpu.as_deref(), Some("8"), "{b}");
        assert_eq!(
            (
                defaults.build_cpu.as_deref(),
                defaults.build_memory.as_deref(),
                defaults.concurrent_builds
            ),
            (Some("2"), Some("4Gi"), Some(2)),
            "{b}"
        );
        assert_eq!(got.effective, got.defaults, "{b}");
        assert_eq!(got.overrides, Some(pb::ResourceLimits::default()), "{b}");

        // Tenants never raise their own quota; outsiders see nothing.
        for who in ["owner", "admin", "member", "viewer"] {
            let r = c
                .orgs
                .set_organization_limits(authed(set_request(&org, raised()), &tokens[who]))
                .await;
            assert_eq!(code(r), Code::PermissionDenied, "{b}: {who}");
        }
        for request in [
            c.orgs
                .set_organization_limits(authed(set_request(&org, raised()), &tokens["outsider"]))
                .await
                .map(drop),
            c.orgs
                .get_organization_limits(authed(
                    pb::GetOrganizationLimitsRequest {
                        organization_id: org.clone(),
                    },
                    &tokens["outsider"],
                ))
                .await
                .map(drop),
        ] {
            assert_eq!(code(request), Code::NotFound, "{b}");
        }

        // Bad input names the field; nothing is stored.
        for (limits, field) in [
            (
                pb::ResourceLimits {
                    cpu: Some("1.5 cores".into()),
                    ..Default::default()
                },
                "limits.cpu",
            ),
            (
                pb::ResourceLimits {
                    memory: Some("1Pb".into()),
                    ..Default::default()
                },
                "limits.memory",
            ),
            (
                pb::ResourceLimits {
                    default_memory_limit: Some("-1".into()),
                    ..Default::default()
                },
                "limits.defaultMemoryLimit",
            ),
            (
                pb::ResourceLimits {
                    pods: Some(0),
                    ..Default::default()
                },
                "limits.pods",
            ),
            (
                pb::ResourceLimits {
                    config_maps: Some(1_000_000),
                    ..Default::default()
                },
                "limits.configMaps",
            ),
            // A default container limit above the project's total.
            (
                pb::ResourceLimits {
                    cpu: Some("500m".into()),
                    ..Default::default()
                },
                "limits.defaultCpuLimit",
            ),
        ] {
            let err = c
                .orgs
                .set_organization_limits(authed(set_request(&org, limits), &tokens["root"]))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{b}: {field}");
            assert!(
                err.message().starts_with(&format!("{field}:")),
                "{b}: {field}: {}",
                err.message()
            );
        }

        // The super-admin (not a member) sets; audited with old and new.
        let set = c
            .orgs
            .set_organization_limits(authed(set_request(&org, raised()), &tokens["root"]))
            .await
            .unwrap()
            .into_inner();
        let effective = set.effective.unwrap();
        assert_eq!(effective.cpu.as_deref(), Some("12500m"), "{b}");
        assert_eq!(effective.pods, Some(7), "{b}");
        assert_eq!(effective.storage, defaults.storage, "{b}");
        assert_eq!(effective.build_cpu.as_deref(), Some("3"), "{b}");
        assert_eq!(effective.build_memory.as_deref(), Some("6Gi"), "{b}");
        assert_eq!(effective.concurrent_builds, Some(4), "{b}");
        assert_eq!(set.overrides, Some(raised()), "{b}");
        let audit = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("organization.set_limits"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "{b}");
        assert_eq!(audit[0].details["from"], serde_json::json!({}), "{b}");
        assert_eq!(audit[0].details["to"]["cpu"], "12500m", "{b}");
        assert_eq!(audit[0].details["to"]["pods"], 7, "{b}");
        assert_eq!(audit[0].details["to"]["build_memory"], "6Gi", "{b}");
        assert_eq!(audit[0].details["to"]["concurrent_builds"], 4, "{b}");

        // A viewer reads the override.
        let got = c
            .orgs
            .get_organization_limits(authed(
                pb::GetOrganizationLimitsRequest {
                    organization_id: org.clone(),
                },
                &tokens["viewer"],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.overrides, Some(raised()), "{b}");
        let effective = got.effective.unwrap();
        assert_eq!(effective.memory.as_deref(), Some("48Gi"), "{b}");
        assert_eq!(effective.concurrent_builds, Some(4), "{b}");

        // What Set accepted renders into the project's ResourceQuota.
        let project = ProjectServiceClient::new(c.channel.clone())
            .create_project(authed(
                pb::CreateProjectRequest {
                    organization_id: org.clone(),
                    name: "Shop".into(),
                    slug: String::new(),
                    description: String::new(),
                },
                &tokens["owner"],
            ))
            .await
            .unwrap()
            .into_inner();
        let service = ServiceServiceClient::new(c.channel.clone())
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: project.id.clone(),
                    name: "web".into(),
                    spec: Some(pb::create_service_request::Spec::Application(
                        pb::ApplicationSpec {
                            image: "ghcr.io/acme/web:1.0".into(),
                            ..Default::default()
                        },
                    )),
                    ports: vec![],
                },
                &tokens["owner"],
            ))
            .await
            .unwrap()
            .into_inner();
        let yaml = plan(&c, &tokens["owner"], &service.id).await;
        assert_eq!(quota(&yaml, "limits.cpu"), "12500m", "{b}");
        assert_eq!(quota(&yaml, "requests.memory"), "48Gi", "{b}");
        assert_eq!(quota(&yaml, "pods"), "7", "{b}");
        // Build limits are not the project's: neither in its quota nor in
        // its container defaults.
        assert!(!yaml.contains("6Gi"), "{b}: {yaml}");

        // Clearing (every field unset) falls back to the defaults.
        let cleared = c
            .orgs
            .set_organization_limits(authed(
                set_request(&org, pb::ResourceLimits::default()),
                &tokens["root"],
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(cleared.effective, cleared.defaults, "{b}");
        let yaml = plan(&c, &tokens["owner"], &service.id).await;
        assert_eq!(quota(&yaml, "limits.cpu"), "8", "{b}");
        assert_eq!(quota(&yaml, "pods"), "50", "{b}");

        // A super-admin gets NotFound for an organization that does not exist.
        let r = c
            .orgs
            .set_organization_limits(authed(
                set_request(&uuid::Uuid::now_v7().to_string(), raised()),
                &tokens["root"],
            ))
            .await;
        assert_eq!(code(r), Code::NotFound, "{b}");
    }
}
