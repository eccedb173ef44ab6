//! Workloads end to end over real gRPC/TCP: projects, services, variables,
//! volumes, stacks, templates and deployments, against an in-memory
//! Kubernetes API (`ferry_k8s::fake::FakeCluster`), on PostgreSQL and SQLite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use ferry_api::ApiState;
use ferry_db::entities::enums::{DeploymentStatus, OrgRole};
use ferry_db::entities::{audit_logs, deployments};
use ferry_db::sea_orm::{DatabaseConnection, EntityTrait as _};
use ferry_k8s::fake::{Behavior, FakeCluster};
use ferry_proto::ferry::v1 as pb;
use pb::certificate_service_client::CertificateServiceClient;
use pb::deployment_service_client::DeploymentServiceClient;
use pb::domain_service_client::DomainServiceClient;
use pb::git_service_client::GitServiceClient;
use pb::job_service_client::JobServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::registry_service_client::RegistryServiceClient;
use pb::route_service_client::RouteServiceClient;
use pb::service_service_client::ServiceServiceClient;
use pb::stack_service_client::StackServiceClient;
use pb::template_service_client::TemplateServiceClient;
use pb::variable_group_service_client::VariableGroupServiceClient;
use pb::volume_service_client::VolumeServiceClient;
use serde_json::Value;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "s3cr3t-Value-never-shown";
const GROUP_SECRET: &str = "group-Secret-never-shown";

struct W {
    projects: ProjectServiceClient<Channel>,
    services: ServiceServiceClient<Channel>,
    volumes: VolumeServiceClient<Channel>,
    groups: VariableGroupServiceClient<Channel>,
    stacks: StackServiceClient<Channel>,
    templates: TemplateServiceClient<Channel>,
    deploys: DeploymentServiceClient<Channel>,
    routes: RouteServiceClient<Channel>,
    registries: RegistryServiceClient<Channel>,
    git: GitServiceClient<Channel>,
    jobs: JobServiceClient<Channel>,
    domains: DomainServiceClient<Channel>,
    certs: CertificateServiceClient<Channel>,
}

fn w(channel: &Channel) -> W {
    W {
        projects: ProjectServiceClient::new(channel.clone()),
        services: ServiceServiceClient::new(channel.clone()),
        volumes: VolumeServiceClient::new(channel.clone()),
        groups: VariableGroupServiceClient::new(channel.clone()),
        stacks: StackServiceClient::new(channel.clone()),
        templates: TemplateServiceClient::new(channel.clone()),
        deploys: DeploymentServiceClient::new(channel.clone()),
        routes: RouteServiceClient::new(channel.clone()),
        registries: RegistryServiceClient::new(channel.clone()),
        git: GitServiceClient::new(channel.clone()),
        jobs: JobServiceClient::new(channel.clone()),
        domains: DomainServiceClient::new(channel.clone()),
        certs: CertificateServiceClient::new(channel.clone()),
    }
}

/// The api with `cluster` (or none) and a short rollout timeout.
async fn start_api(
    conn: &DatabaseConnection,
    cluster: Option<&FakeCluster>,
    timeout: Duration,
) -> (Api, ApiState) {
    start_with_cluster(conn, cluster, timeout).await
}

/// A user with an organization and a project.
struct Tenant {
    c: Clients,
    w: W,
    token: String,
    org: String,
    project: pb::Project,
}

async fn tenant(api: &Api, name: &str) -> Tenant {
    let mut c = clients(api.addr).await;
    register(&mut c, name).await;
    let token = login(&mut c, name).await;
    let org = create_org(&mut c, &token, &format!("{name} org")).await.id;
    let mut w = w(&c.channel);
    let project = w
        .projects
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.clone(),
                name: format!("{name} Shop"),
                slug: String::new(),
                description: "the shop".into(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    Tenant {
        c,
        w,
        token,
        org,
        project,
    }
}

fn app(image: &str) -> pb::create_service_request::Spec {
    pb::create_service_request::Spec::Application(pb::ApplicationSpec {
        image: image.into(),
        command: vec![],
        args: vec!["--port".into(), "8080".into()],
        replicas: Some(2),
        resources: Some(pb::Resources {
            cpu_request: "100m".into(),
            cpu_limit: "1".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
        }),
        health_check: Some(pb::HealthCheck {
            path: "/healthz".into(),
            port: 8080,
            interval_seconds: 10,
        }),
        registry_integration_id: String::new(),
    })
}

fn http_port() -> Vec<pb::Port> {
    vec![pb::Port {
        name: "http".into(),
        container_port: 8080,
        protocol: pb::Protocol::Tcp.into(),
    }]
}

/// A service `web` with a plain and a secret variable, a variable group
/// (overridden by the service's own value) and a mounted volume.
async fn web_service(t: &mut Tenant) -> pb::Service {
    let tok = t.token.clone();
    let svc =
        t.w.services
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: t.project.id.clone(),
                    name: "web".into(),
                    spec: Some(app("ghcr.io/acme/web:1.0")),
                    ports: http_port(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
    for (key, value, secret) in [("LOG_LEVEL", "debug", false), ("API_KEY", SECRET, true)] {
        let v =
            t.w.services
                .set_env_var(authed(
                    pb::SetEnvVarRequest {
                        service_id: svc.id.clone(),
                        key: key.into(),
                        value: value.into(),
                        secret,
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(v.value, if secret { "***" } else { value });
    }
    let group =
        t.w.groups
            .create_variable_group(authed(
                pb::CreateVariableGroupRequest {
                    project_id: t.project.id.clone(),
                    name: "shared".into(),
                    description: String::new(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
    for (key, value, secret) in [
        ("LOG_LEVEL", "info", false),
        ("SHARED_TOKEN", GROUP_SECRET, true),
    ] {
        t.w.groups
            .set_variable(authed(
                pb::SetVariableRequest {
                    variable_group_id: group.id.clone(),
                    key: key.into(),
                    value: value.into(),
                    secret,
                },
                &tok,
            ))
            .await
            .unwrap();
    }
    t.w.services
        .attach_variable_group(authed(
            pb::AttachVariableGroupRequest {
                service_id: svc.id.clone(),
                variable_group_id: group.id.clone(),
            },
            &tok,
        ))
        .await
        .unwrap();
    let volume =
        t.w.volumes
            .create_volume(authed(
                pb::CreateVolumeRequest {
                    project_id: t.project.id.clone(),
                    name: "uploads".into(),
                    size_gb: 5,
                    storage_class: String::new(),
                    access_mode: pb::VolumeAccessMode::ReadWriteOnce.into(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
    t.w.services
        .mount_volume(authed(
            pb::MountVolumeRequest {
                service_id: svc.id.clone(),
                volume_id: volume.id.clone(),
                mount_path: "/app/uploads".into(),
                sub_path: String::new(),
                read_only: false,
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Follows WatchDeployment until the deployment finishes.
async fn wait_done(w: &mut W, token: &str, id: &str) -> (pb::Deployment, Vec<String>) {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(20),
        w.deploys
            .watch_deployment(authed(pb::WatchDeploymentRequest { id: id.into() }, token)),
    )
    .await
    .unwrap()
    .unwrap()
    .into_inner();
    let mut last = None;
    let mut logs = Vec::new();
    while let Some(event) = tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("watch stalled")
        .unwrap()
    {
        logs.extend(event.logs.iter().map(|l| l.message.clone()));
        last = event.deployment;
    }
    (last.expect("at least one event"), logs)
}

fn secret_env(fake: &FakeCluster, ns: &str, name: &str) -> serde_json::Map<String, Value> {
    let secret = fake
        .get("Secret", ns, &format!("{name}-env"))
        .expect("env secret");
    let mut out = serde_json::Map::new();
    if let Some(data) = secret["data"].as_object() {
        for (k, v) in data {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            out.insert(k.clone(), Value::String(String::from_utf8(bytes).unwrap()));
        }
    }
    if let Some(data) = secret["stringData"].as_object() {
        out.extend(data.clone());
    }
    out
}

/// Waits (up to 20 s) until deployment `id` has `status` in the database.
async fn wait_status(db: &DatabaseConnection, id: &str, status: DeploymentStatus) {
    let id: uuid::Uuid = id.parse().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = deployments::Entity::find_by_id(id)
            .one(db)
            .await
            .unwrap()
            .unwrap();
        if row.status == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} stuck at {:?}",
            row.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn status(d: &pb::Deployment) -> pb::DeploymentStatus {
    pb::DeploymentStatus::try_from(d.status).unwrap()
}

/// Everything logged at DEBUG and above by every crate, for the secret check.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn deploy_change_rollback_scale_delete_against_a_fake_cluster() {
    // nextest runs each test in its own process, so a global subscriber is fine.
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _state) = start_api(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        let mut t = tenant(&api, "alice").await;
        let ns = t.project.namespace.clone();
        assert!(
            ns.starts_with("ferry-alice-shop-") && ns.len() == "ferry-alice-shop-".len() + 12,
            "{b}: {ns}"
        );
        assert_eq!(t.project.slug, "alice-shop", "{b}");
        let svc = web_service(&mut t).await;
        let tok = t.token.clone();

        // Deploy #1.
        let d1 =
            t.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(status(&d1), pb::DeploymentStatus::Pending, "{b}");
        let (d1, logs) = wait_done(&mut t.w, &tok, &d1.id).await;
        assert_eq!(status(&d1), pb::DeploymentStatus::Running, "{b}: {d1:?}");
        assert!(
            logs.iter().any(|l| l.contains("rollout complete")),
            "{b}: {logs:?}"
        );

        // What the cluster got.
        let dep = fake.get("Deployment", &ns, "web").expect("deployment");
        assert_eq!(dep["spec"]["replicas"], 2, "{b}");
        let c = &dep["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "ghcr.io/acme/web:1.0", "{b}");
        assert_eq!(c["args"], serde_json::json!(["--port", "8080"]), "{b}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/healthz", "{b}");
        assert_eq!(
            c["securityContext"]["allowPrivilegeEscalation"], false,
            "{b}"
        );
        assert_eq!(
            dep["metadata"]["labels"]["app.kubernetes.io/managed-by"], "ferry",
            "{b}"
        );
        assert!(fake.get("Namespace", "", &ns).is_some(), "{b}");
        assert!(
            fake.get("NetworkPolicy", &ns, "ferry-default-deny")
                .is_some(),
            "{b}"
        );
        assert!(
            fake.get("PersistentVolumeClaim", &ns, "vol-uploads")
                .is_some(),
            "{b}"
        );
        let service = fake.get("Service", &ns, "web").expect("service");
        assert_eq!(service["spec"]["ports"][0]["port"], 8080, "{b}");
        let env = secret_env(&fake, &ns, "web");
        // The service's own value overrides the group's.
        assert_eq!(env["LOG_LEVEL"], "debug", "{b}");
        assert_eq!(env["API_KEY"], SECRET, "{b}");
        assert_eq!(env["SHARED_TOKEN"], GROUP_SECRET, "{b}");
        // Every apply used server-side apply with the `ferry` manager.
        let applies: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.is_apply())
            .collect();
        assert!(applies.len() >= 6, "{b}: {applies:?}");
        assert!(
            applies.iter().all(|r| r.field_manager() == Some("ferry")),
            "{b}"
        );

        // The recorded manifests mask secret values (Secret data is base64).
        assert!(d1.manifests_yaml.contains("kind: Deployment"), "{b}");
        let recorded = revealed(&d1.manifests_yaml);
        assert!(
            !recorded.contains(SECRET) && !recorded.contains(GROUP_SECRET),
            "{b}: {recorded}"
        );

        // Deploy #2 with a new image; #1 becomes superseded.
        t.w.services
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: svc.id.clone(),
                    image: Some("ghcr.io/acme/web:2.0".into()),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        let plan =
            t.w.deploys
                .plan_deployment(authed(
                    pb::PlanDeploymentRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(plan.cluster_configured && plan.secrets_revealed, "{b}");
        assert!(
            plan.diff.contains("-") && plan.diff.contains("web:2.0"),
            "{b}: {}",
            plan.diff
        );
        let d2 =
            t.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let (d2, _) = wait_done(&mut t.w, &tok, &d2.id).await;
        assert_eq!(status(&d2), pb::DeploymentStatus::Running, "{b}");
        let dep = fake.get("Deployment", &ns, "web").unwrap();
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/web:2.0",
            "{b}"
        );
        let d1_now =
            t.w.deploys
                .get_deployment(authed(pb::GetDeploymentRequest { id: d1.id.clone() }, &tok))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(status(&d1_now), pb::DeploymentStatus::Superseded, "{b}");

        // Changing a variable after #1 does not leak into its rollback:
        // the rollback restores #1's image and environment.
        t.w.services
            .set_env_var(authed(
                pb::SetEnvVarRequest {
                    service_id: svc.id.clone(),
                    key: "LOG_LEVEL".into(),
                    value: "trace".into(),
                    secret: false,
                },
                &tok,
            ))
            .await
            .unwrap();
        let r =
            t.w.deploys
                .rollback(authed(
                    pb::RollbackRequest {
                        deployment_id: d1.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(r.rollback_of_id, d1.id, "{b}");
        let (r, _) = wait_done(&mut t.w, &tok, &r.id).await;
        assert_eq!(status(&r), pb::DeploymentStatus::Running, "{b}");
        assert_eq!(
            pb::DeploymentTrigger::try_from(r.trigger).unwrap(),
            pb::DeploymentTrigger::Rollback
        );
        let dep = fake.get("Deployment", &ns, "web").unwrap();
        assert_eq!(
            dep["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/web:1.0",
            "{b}"
        );
        assert_eq!(secret_env(&fake, &ns, "web")["LOG_LEVEL"], "debug", "{b}");

        // History, newest first, paged.
        let page =
            t.w.deploys
                .list_deployments(authed(
                    pb::ListDeploymentsRequest {
                        service_id: svc.id.clone(),
                        page_size: 2,
                        page_token: String::new(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(page.deployments.len(), 2, "{b}");
        assert_eq!(page.deployments[0].id, r.id, "{b}");
        assert!(!page.next_page_token.is_empty(), "{b}");

        // Scale, restart, stop.
        let s =
            t.w.deploys
                .scale(authed(
                    pb::ScaleRequest {
                        service_id: svc.id.clone(),
                        replicas: 3,
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(s.replicas, 3, "{b}");
        assert_eq!(
            fake.get("Deployment", &ns, "web").unwrap()["spec"]["replicas"],
            3,
            "{b}"
        );
        t.w.deploys
            .restart(authed(
                pb::RestartRequest {
                    service_id: svc.id.clone(),
                },
                &tok,
            ))
            .await
            .unwrap();
        let dep = fake.get("Deployment", &ns, "web").unwrap();
        assert!(
            dep["spec"]["template"]["metadata"]["annotations"]["ferry.dev/restarted-at"]
                .is_string(),
            "{b}: {dep}"
        );
        let s =
            t.w.deploys
                .stop(authed(
                    pb::StopRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!((s.replicas, s.status.as_str()), (0, "stopped"), "{b}");
        assert_eq!(
            fake.get("Deployment", &ns, "web").unwrap()["spec"]["replicas"],
            0,
            "{b}"
        );

        // Delete: cluster objects by label, then rows.
        let deleted =
            t.w.services
                .delete_service(authed(
                    pb::DeleteServiceRequest { id: svc.id.clone() },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(
            deleted
                .deleted_objects
                .iter()
                .any(|o| o.contains("Deployment")),
            "{b}: {deleted:?}"
        );
        assert!(fake.get("Deployment", &ns, "web").is_none(), "{b}");
        assert!(fake.get("Secret", &ns, "web-env").is_none(), "{b}");
        let err =
            t.w.services
                .get_service(authed(pb::GetServiceRequest { id: svc.id.clone() }, &tok))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}");

        // No secret value in any audit row or recorded deployment.
        for row in audit_logs::Entity::find().all(&db.conn).await.unwrap() {
            let text = row.details.to_string();
            assert!(
                !text.contains(SECRET) && !text.contains(GROUP_SECRET),
                "{b}: {text}"
            );
        }
        for d in deployments::Entity::find().all(&db.conn).await.unwrap() {
            let text = revealed(&d.k8s_artifacts.to_string());
            assert!(
                !text.contains(SECRET) && !text.contains(GROUP_SECRET),
                "{b}"
            );
        }
        api.stop().await;
    }
    // Nor in any log line, in clear or base64 (kube, hyper, sqlx, ours).
    let text = logs.text();
    assert!(
        text.len() > 10_000,
        "log capture works: {} bytes",
        text.len()
    );
    let text = revealed(&text);
    for secret in [SECRET, GROUP_SECRET] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}

#[tokio::test]
async fn failed_rollouts_keep_the_previous_version_serving() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _state) = start_api(&db.conn, Some(&fake), Duration::from_secs(2)).await;
        let mut t = tenant(&api, "bob").await;
        let ns = t.project.namespace.clone();
        let svc = web_service(&mut t).await;
        let tok = t.token.clone();
        let deploy = |w: &mut W| {
            let mut d = w.deploys.clone();
            let id = svc.id.clone();
            let tok = tok.clone();
            async move {
                d.deploy(authed(pb::DeployRequest { service_id: id }, &tok))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };
        let d1 = deploy(&mut t.w).await;
        assert_eq!(
            status(&wait_done(&mut t.w, &tok, &d1.id).await.0),
            pb::DeploymentStatus::Running
        );

        for (behavior, image, expect) in [
            (
                Behavior::ImagePullBackOff,
                "ghcr.io/acme/web:missing",
                "ImagePullBackOff",
            ),
            (
                Behavior::CrashLoop,
                "ghcr.io/acme/web:crashes",
                "CrashLoopBackOff",
            ),
            (Behavior::Hang, "ghcr.io/acme/web:slow", "did not finish"),
        ] {
            fake.set_behavior("web", behavior);
            t.w.services
                .update_service(authed(
                    pb::UpdateServiceRequest {
                        id: svc.id.clone(),
                        image: Some(image.into()),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap();
            let d = deploy(&mut t.w).await;
            let (d, logs) = wait_done(&mut t.w, &tok, &d.id).await;
            assert_eq!(
                status(&d),
                pb::DeploymentStatus::Failed,
                "{b}: {behavior:?}"
            );
            assert!(
                d.message.contains(expect),
                "{b}: {behavior:?}: {}",
                d.message
            );
            assert!(
                logs.iter()
                    .any(|l| l.contains("previous version keeps serving")),
                "{b}: {logs:?}"
            );
            // The running deployment's objects were re-applied.
            fake.set_behavior("web", Behavior::Ready);
            let dep = fake.get("Deployment", &ns, "web").unwrap();
            assert_eq!(
                dep["spec"]["template"]["spec"]["containers"][0]["image"], "ghcr.io/acme/web:1.0",
                "{b}: {behavior:?}"
            );
            let svc_now =
                t.w.services
                    .get_service(authed(pb::GetServiceRequest { id: svc.id.clone() }, &tok))
                    .await
                    .unwrap()
                    .into_inner();
            assert_eq!(svc_now.status, "running", "{b}");
        }
        // The first deployment is still the running one.
        let first =
            t.w.deploys
                .get_deployment(authed(pb::GetDeploymentRequest { id: d1.id.clone() }, &tok))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(status(&first), pb::DeploymentStatus::Running, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn without_a_cluster_deployments_are_planned_and_restarts_resolve_unfinished_ones() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, state) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut t = tenant(&api, "carol").await;
        let svc = web_service(&mut t).await;
        let tok = t.token.clone();
        let d =
            t.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(status(&d), pb::DeploymentStatus::Planned, "{b}");
        assert!(
            d.message.contains("no Kubernetes cluster"),
            "{b}: {}",
            d.message
        );
        assert!(
            d.manifests_yaml.contains("kind: Deployment")
                && !revealed(&d.manifests_yaml).contains(SECRET),
            "{b}"
        );
        let plan =
            t.w.deploys
                .plan_deployment(authed(
                    pb::PlanDeploymentRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(!plan.cluster_configured, "{b}");
        assert!(
            plan.diff.is_empty(),
            "{b}: nothing changed since the plan: {}",
            plan.diff
        );
        // Restart needs a cluster; scale just records.
        let err =
            t.w.deploys
                .restart(authed(
                    pb::RestartRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}");

        // A deployment left `deploying` by a crashed api (no cluster now):
        // marked failed with a reason on start.
        let fake = FakeCluster::new();
        fake.set_default_behavior(Behavior::Hang);
        let (api2, state2) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        let mut w2 = w(&clients(api2.addr).await.channel);
        let stuck = w2
            .deploys
            .deploy(authed(
                pb::DeployRequest {
                    service_id: svc.id.clone(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
        // Let the background task reach `deploying`, then "crash".
        wait_status(&db.conn, &stuck.id, DeploymentStatus::Deploying).await;
        state2.deploy.stop.trigger();
        api2.stop().await;
        assert!(state2.deploy.rollouts.drained(Duration::from_secs(5)).await);
        let resumed = ferry_api::deployer(&state).resume().await.unwrap();
        assert!(resumed >= 1, "{b}");
        let row = deployments::Entity::find_by_id(stuck.id.parse::<uuid::Uuid>().unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, DeploymentStatus::Failed, "{b}");
        assert!(row.error_message.unwrap().contains("restarted"), "{b}");

        // With a cluster, an unfinished rollout is resumed and completes.
        let (api3, state3) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        let mut w3 = w(&clients(api3.addr).await.channel);
        let d = w3
            .deploys
            .deploy(authed(
                pb::DeployRequest {
                    service_id: svc.id.clone(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
        wait_status(&db.conn, &d.id, DeploymentStatus::Deploying).await;
        state3.deploy.stop.trigger();
        api3.stop().await;
        assert!(state3.deploy.rollouts.drained(Duration::from_secs(5)).await);
        let row = deployments::Entity::find_by_id(d.id.parse::<uuid::Uuid>().unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.status, DeploymentStatus::Deploying, "{b}");
        fake.set_default_behavior(Behavior::Ready);
        let (api4, state4) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        let resumed = ferry_api::deployer(&state4).resume().await.unwrap();
        assert_eq!(resumed, 1, "{b}");
        let (d, logs) = wait_done(&mut t.w, &tok, &d.id).await;
        assert_eq!(status(&d), pb::DeploymentStatus::Running, "{b}: {d:?}");
        assert!(logs.iter().any(|l| l.contains("resuming")), "{b}: {logs:?}");
        api4.stop().await;
        api.stop().await;
    }
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let db = ferry_tests::TestDb::sqlite().await;
    db.migrate().await;
    let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
    let mut t = tenant(&api, "dave").await;
    let tok = t.token.clone();
    let project = t.project.id.clone();
    let create = |name: &str, spec: pb::create_service_request::Spec, ports: Vec<pb::Port>| {
        pb::CreateServiceRequest {
            project_id: project.clone(),
            name: name.into(),
            spec: Some(spec),
            ports,
        }
    };
    let mut bad_resources = app("nginx:1");
    if let pb::create_service_request::Spec::Application(a) = &mut bad_resources {
        a.resources.as_mut().unwrap().memory_limit = "lots".into();
    }
    let mut bad_health = app("nginx:1");
    if let pb::create_service_request::Spec::Application(a) = &mut bad_health {
        a.health_check.as_mut().unwrap().path = "no-slash".into();
    }
    let cases = vec![
        (create("Web_1", app("nginx:1"), vec![]), "name"),
        (
            create("web", app("nginx latest; rm -rf /"), vec![]),
            "application.image",
        ),
        (
            create("web", bad_resources, vec![]),
            "resources.memoryLimit",
        ),
        (create("web", bad_health, vec![]), "healthCheck.path"),
        (
            create(
                "web",
                app("nginx:1"),
                vec![pb::Port {
                    name: String::new(),
                    container_port: 70000,
                    protocol: 0,
                }],
            ),
            "ports[0].containerPort",
        ),
        (
            create(
                "db",
                pb::create_service_request::Spec::Database(pb::DatabaseSpec {
                    engine: 0,
                    ..Default::default()
                }),
                vec![],
            ),
            "database.engine",
        ),
    ];
    for (req, field) in cases {
        let err =
            t.w.services
                .create_service(authed(req, &tok))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let err =
        t.w.volumes
            .create_volume(authed(
                pb::CreateVolumeRequest {
                    project_id: t.project.id.clone(),
                    name: "data".into(),
                    size_gb: 0,
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap_err();
    assert!(err.message().starts_with("sizeGb"), "{err}");
    let svc = web_service(&mut t).await;
    for (key, field) in [("1BAD", "key"), ("A-B", "key")] {
        let err =
            t.w.services
                .set_env_var(authed(
                    pb::SetEnvVarRequest {
                        service_id: svc.id.clone(),
                        key: key.into(),
                        value: "x".into(),
                        secret: false,
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert!(err.message().starts_with(field), "{err}");
    }
    let err =
        t.w.services
            .mount_volume(authed(
                pb::MountVolumeRequest {
                    service_id: svc.id.clone(),
                    volume_id: uuid::Uuid::now_v7().to_string(),
                    mount_path: "/a/../etc".into(),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap_err();
    assert!(err.message().starts_with("mountPath"), "{err}");
    api.stop().await;
}

#[tokio::test]
async fn viewers_never_see_secret_values() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut t = tenant(&api, "frank").await;
        let svc = web_service(&mut t).await;
        let mut c = clients(api.addr).await;
        let viewer = register(&mut c, "vera").await;
        let vtok = login(&mut c, "vera").await;
        add_member(&db.conn, &t.org, &viewer.id, OrgRole::Viewer).await;
        let mut vw = w(&c.channel);
        let plan = vw
            .deploys
            .plan_deployment(authed(
                pb::PlanDeploymentRequest {
                    service_id: svc.id.clone(),
                },
                &vtok,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!plan.secrets_revealed, "{b}");
        let shown = revealed(&plan.yaml);
        for secret in [SECRET, GROUP_SECRET] {
            assert!(!shown.contains(secret), "{b}: {shown}");
        }
        assert!(plan.yaml.contains("***"), "{b}");
        let env = vw
            .services
            .list_env_vars(authed(
                pb::ListEnvVarsRequest {
                    service_id: svc.id.clone(),
                    ..Default::default()
                },
                &vtok,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(
            env.env_vars
                .iter()
                .any(|v| v.key == "API_KEY" && v.value == "***"),
            "{b}"
        );
        // Viewers may not deploy, change or read credentials.
        let err = vw
            .deploys
            .deploy(authed(
                pb::DeployRequest {
                    service_id: svc.id.clone(),
                },
                &vtok,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}");
        // The owner's plan shows the values.
        let plan =
            t.w.deploys
                .plan_deployment(authed(
                    pb::PlanDeploymentRequest {
                        service_id: svc.id.clone(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(
            plan.secrets_revealed && plan.yaml.contains(&b64(SECRET)),
            "{b}"
        );

        // A database: credentials only for those who may deploy.
        let pg =
            t.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: t.project.id.clone(),
                        name: "db".into(),
                        spec: Some(pb::create_service_request::Spec::Database(
                            pb::DatabaseSpec {
                                engine: pb::DatabaseEngine::Postgres.into(),
                                version: "16".into(),
                                storage_size_gb: 20,
                                resources: None,
                            },
                        )),
                        ports: vec![],
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            (pg.image.as_str(), pg.storage_size_gb),
            ("postgres:16", 20),
            "{b}"
        );
        let info =
            t.w.services
                .get_connection_info(authed(
                    pb::GetConnectionInfoRequest {
                        service_id: pg.id.clone(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            info.host,
            format!("db.{}.svc.cluster.local", t.project.namespace),
            "{b}"
        );
        assert_eq!(info.port, 5432, "{b}");
        assert!(info.password.len() >= 20, "{b}");
        assert!(
            info.url.starts_with("postgresql://postgres:") && info.url.contains(&info.password),
            "{b}"
        );
        let err = vw
            .services
            .get_connection_info(authed(
                pb::GetConnectionInfoRequest {
                    service_id: pg.id.clone(),
                },
                &vtok,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}");
        // The generated password is a secret variable, rendered as a StatefulSet.
        let plan =
            t.w.deploys
                .plan_deployment(authed(
                    pb::PlanDeploymentRequest {
                        service_id: pg.id.clone(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(
            plan.yaml.contains("kind: StatefulSet") && plan.yaml.contains(&b64(&info.password)),
            "{b}"
        );
        let vplan = vw
            .deploys
            .plan_deployment(authed(
                pb::PlanDeploymentRequest {
                    service_id: pg.id.clone(),
                },
                &vtok,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!revealed(&vplan.yaml).contains(&info.password), "{b}");
        for row in audit_logs::Entity::find().all(&db.conn).await.unwrap() {
            let text = row.details.to_string();
            assert!(
                !text.contains(&info.password) && !text.contains(SECRET),
                "{b}: {text}"
            );
        }
        let _ = &mut t.c;
        api.stop().await;
    }
}

const COMPOSE: &str = r#"
services:
  web:
    image: ghcr.io/acme/shop:${TAG:-1.0}
    ports: ["8080:80"]
    environment:
      DATABASE_URL: postgres://shop:${DB_PASSWORD}@db:5432/shop
      MODE: production
    depends_on: [db]
    restart: unless-stopped
  db:
    image: postgres:16
    environment:
      POSTGRES_PASSWORD: ${DB_PASSWORD}
    volumes:
      - pgdata:/var/lib/postgresql/data
volumes:
  pgdata:
"#;

#[tokio::test]
async fn compose_stacks_create_reconcile_and_deploy() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _) = start_api(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        let mut t = tenant(&api, "gina").await;
        let tok = t.token.clone();
        let vars = |pw: &str| {
            [("DB_PASSWORD".to_owned(), pw.to_owned())]
                .into_iter()
                .collect()
        };

        // Refused keys are all named, and nothing is created.
        let err = t
            .w
            .stacks
            .create_stack(authed(
                pb::CreateStackRequest {
                    project_id: t.project.id.clone(),
                    name: "bad".into(),
                    compose_file: "services:\n  x:\n    image: alpine\n    privileged: true\n    network_mode: host\n    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n".into(),
                    variables: Default::default(),
                },
                &tok,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        for path in [
            "services.x.privileged",
            "services.x.network_mode",
            "services.x.volumes[0]",
        ] {
            assert!(
                err.message().contains(path),
                "{b}: {path}: {}",
                err.message()
            );
        }
        // An unset variable is an error, not an empty string.
        let err =
            t.w.stacks
                .create_stack(authed(
                    pb::CreateStackRequest {
                        project_id: t.project.id.clone(),
                        name: "shop".into(),
                        compose_file: COMPOSE.into(),
                        variables: Default::default(),
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert!(err.message().contains("DB_PASSWORD"), "{b}: {err}");

        let created =
            t.w.stacks
                .create_stack(authed(
                    pb::CreateStackRequest {
                        project_id: t.project.id.clone(),
                        name: "shop".into(),
                        compose_file: COMPOSE.into(),
                        variables: vars("pw-one"),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            created.created,
            vec!["db", "web"],
            "{b}: dependencies first"
        );
        assert!(
            created
                .warnings
                .iter()
                .any(|w| w.path == "services.web.restart"),
            "{b}: {:?}",
            created.warnings
        );
        let stack = created.stack.unwrap();
        assert_eq!(stack.service_ids.len(), 2, "{b}");
        let services =
            t.w.services
                .list_services(authed(
                    pb::ListServicesRequest {
                        project_id: t.project.id.clone(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .services;
        let web = services.iter().find(|s| s.name == "web").unwrap();
        assert_eq!(web.image, "ghcr.io/acme/shop:1.0", "{b}");
        assert_eq!(web.ports[0].container_port, 80, "{b}");
        let dbs = services.iter().find(|s| s.name == "db").unwrap();
        assert_eq!(dbs.mounts[0].mount_path, "/var/lib/postgresql/data", "{b}");
        assert_eq!(dbs.mounts[0].volume_name, "shop-pgdata", "{b}");
        let env =
            t.w.services
                .list_env_vars(authed(
                    pb::ListEnvVarsRequest {
                        service_id: dbs.id.clone(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        // Sensitive-looking keys are stored as secrets.
        assert!(
            env.env_vars
                .iter()
                .any(|v| v.key == "POSTGRES_PASSWORD" && v.secret && v.value == "***"),
            "{b}"
        );

        let deployed =
            t.w.stacks
                .deploy_stack(authed(
                    pb::DeployStackRequest {
                        id: stack.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(deployed.deployments.len(), 2, "{b}");
        for d in &deployed.deployments {
            let (d, _) = wait_done(&mut t.w, &tok, &d.id).await;
            assert_eq!(status(&d), pb::DeploymentStatus::Running, "{b}");
        }
        let rolled_up =
            t.w.stacks
                .get_stack(authed(
                    pb::GetStackRequest {
                        id: stack.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .stack
                .unwrap();
        assert_eq!(
            rolled_up.status, "running",
            "{b}: the stack follows its services"
        );
        assert!(
            fake.get("Deployment", &t.project.namespace, "web")
                .is_some(),
            "{b}"
        );
        assert_eq!(
            secret_env(&fake, &t.project.namespace, "db")["POSTGRES_PASSWORD"],
            "pw-one",
            "{b}"
        );

        // Update: web changes, db goes away, cache arrives.
        let updated_file = "services:\n  web:\n    image: ghcr.io/acme/shop:2.0\n    ports: [\"80\"]\n  cache:\n    image: redis:7\n";
        let updated =
            t.w.stacks
                .update_stack(authed(
                    pb::UpdateStackRequest {
                        id: stack.id.clone(),
                        compose_file: updated_file.into(),
                        variables: Default::default(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(updated.created, vec!["cache"], "{b}");
        assert_eq!(updated.updated, vec!["web"], "{b}");
        assert_eq!(updated.removed, vec!["db"], "{b}");
        assert!(
            fake.get("StatefulSet", &t.project.namespace, "db")
                .is_none()
                && fake.get("Deployment", &t.project.namespace, "db").is_none(),
            "{b}"
        );
        let web_now =
            t.w.services
                .get_service(authed(pb::GetServiceRequest { id: web.id.clone() }, &tok))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(web_now.image, "ghcr.io/acme/shop:2.0", "{b}");

        t.w.stacks
            .delete_stack(authed(
                pb::DeleteStackRequest {
                    id: stack.id.clone(),
                },
                &tok,
            ))
            .await
            .unwrap();
        assert!(
            fake.get("Deployment", &t.project.namespace, "web")
                .is_none(),
            "{b}"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn templates_list_create_and_deploy() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        ferry_db::seed::run(&db.conn).await.unwrap();
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut t = tenant(&api, "hank").await;
        let tok = t.token.clone();
        let list =
            t.w.templates
                .list_templates(authed(
                    pb::ListTemplatesRequest {
                        organization_id: t.org.clone(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        for slug in ["postgres", "mysql", "mongodb", "redis", "uptime-kuma"] {
            assert!(
                list.templates.iter().any(|x| x.slug == slug && x.official),
                "{b}: {slug}"
            );
        }
        let err = t
            .w
            .templates
            .create_template(authed(
                pb::CreateTemplateRequest {
                    organization_id: t.org.clone(),
                    slug: "mine".into(),
                    name: "Mine".into(),
                    spec_json: r#"{"kind":"application","image":"nginx","privileged":true}"#.into(),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap_err();
        assert!(err.message().starts_with("specJson"), "{b}: {err}");
        t.w.templates
            .create_template(authed(
                pb::CreateTemplateRequest {
                    organization_id: t.org.clone(),
                    slug: "echo".into(),
                    name: "Echo".into(),
                    spec_json: r#"{"kind":"application","image":"hashicorp/http-echo:1.0","ports":[{"name":"http","container_port":5678}],"http_port":5678,"env":[{"key":"TOKEN","generate":"hex32","secret":true}]}"#.into(),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        let deployed =
            t.w.templates
                .deploy_template(authed(
                    pb::DeployTemplateRequest {
                        project_id: t.project.id.clone(),
                        template_slug: "echo".into(),
                        service_name: String::new(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let svc = deployed.service.unwrap();
        assert_eq!(
            (svc.name.as_str(), svc.template_slug.as_str()),
            ("echo", "echo"),
            "{b}"
        );
        assert_eq!(
            status(&deployed.deployment.unwrap()),
            pb::DeploymentStatus::Planned,
            "{b}"
        );
        let redis =
            t.w.templates
                .deploy_template(authed(
                    pb::DeployTemplateRequest {
                        project_id: t.project.id.clone(),
                        template_slug: "redis".into(),
                        service_name: "cache".into(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let cache = redis.service.unwrap();
        assert_eq!(
            pb::ServiceKind::try_from(cache.kind).unwrap(),
            pb::ServiceKind::Database,
            "{b}"
        );
        assert!(
            redis
                .deployment
                .unwrap()
                .manifests_yaml
                .contains("kind: StatefulSet"),
            "{b}"
        );
        let _ = &mut t.c;
        api.stop().await;
    }
}

/// A request message with only field 1 (every workload request's first
/// field names the resource it acts on).
#[derive(Clone, PartialEq, prost::Message)]
struct FirstField {
    #[prost(string, tag = "1")]
    id: String,
}

/// `(method path, name of field 1)` of every workload RPC.
fn workload_methods() -> Vec<(String, String, String)> {
    use prost::Message as _;
    let fds = prost_types::FileDescriptorSet::decode(ferry_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "ferry.v1") {
        for service in file
            .service
            .iter()
            .filter(|s| WORKLOAD_SERVICES.contains(&s.name()))
        {
            for method in &service.method {
                let input = method.input_type().trim_start_matches(".ferry.v1.");
                let message = fds
                    .file
                    .iter()
                    .filter(|f| f.package() == "ferry.v1")
                    .flat_map(|f| &f.message_type)
                    .find(|m| m.name() == input)
                    .unwrap();
                let first = message.field.iter().find(|f| f.number() == 1).unwrap();
                out.push((
                    service.name().to_owned(),
                    format!("/ferry.v1.{}/{}", service.name(), method.name()),
                    first.name().to_owned(),
                ));
            }
        }
    }
    assert!(out.len() >= 40, "{}", out.len());
    out
}

#[tokio::test]
async fn every_workload_rpc_is_tenant_scoped() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut v = tenant(&api, "victim").await;
        let svc = web_service(&mut v).await;
        let vt = v.token.clone();
        let deployment =
            v.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner();
        let stack =
            v.w.stacks
                .create_stack(authed(
                    pb::CreateStackRequest {
                        project_id: v.project.id.clone(),
                        name: "st".into(),
                        compose_file: "services:\n  api:\n    image: nginx:1\n".into(),
                        variables: Default::default(),
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .stack
                .unwrap();
        let group =
            v.w.groups
                .list_variable_groups(authed(
                    pb::ListVariableGroupsRequest {
                        project_id: v.project.id.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .variable_groups[0]
                .id
                .clone();
        let volume = svc.mounts[0].volume_id.clone();
        let route =
            v.w.routes
                .create_route(authed(
                    pb::CreateRouteRequest {
                        project_id: v.project.id.clone(),
                        hostname: "victim.example.com".into(),
                        targets: vec![pb::RouteTarget {
                            service_id: svc.id.clone(),
                            port: 8080,
                            ..Default::default()
                        }],
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        let integration =
            v.w.git
                .create_git_integration(authed(
                    pb::CreateGitIntegrationRequest {
                        organization_id: v.org.clone(),
                        provider: pb::GitProvider::Github.into(),
                        name: "gh".into(),
                        token: "github_pat_x".into(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        v.w.git
            .set_build_config(authed(
                pb::SetBuildConfigRequest {
                    service_id: svc.id.clone(),
                    git_integration_id: integration.clone(),
                    repository: "acme/web".into(),
                    ..Default::default()
                },
                &vt,
            ))
            .await
            .unwrap();
        let build =
            v.w.git
                .trigger_build(authed(
                    pb::TriggerBuildRequest {
                        service_id: svc.id.clone(),
                        commit_sha: String::new(),
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        let job =
            v.w.jobs
                .create_job(authed(
                    pb::CreateJobRequest {
                        project_id: v.project.id.clone(),
                        name: "nightly".into(),
                        schedule: "@daily".into(),
                        service_id: svc.id.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner();
        let job_run =
            v.w.jobs
                .run_job_now(authed(pb::RunJobNowRequest { id: job.id.clone() }, &vt))
                .await
                .unwrap()
                .into_inner()
                .id;
        let domain =
            v.w.domains
                .add_domain(authed(
                    pb::AddDomainRequest {
                        project_id: v.project.id.clone(),
                        domain: "victim.example.org".into(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        let channel =
            pb::notification_service_client::NotificationServiceClient::new(v.c.channel.clone())
                .create_channel(authed(
                    pb::CreateChannelRequest {
                        organization_id: v.org.clone(),
                        kind: pb::ChannelKind::Slack.into(),
                        name: "victim channel".into(),
                        webhook_url: "https://93.184.215.14/services/victim".into(),
                        events: vec!["deployment.failed".into()],
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .channel
                .unwrap()
                .id;
        let certificate =
            ferry_tests::fixtures::certificate(&db.conn, domain.parse().unwrap(), "victim-key")
                .await
                .to_string();
        let outsider = tenant(&api, "outsider").await;

        let mut grpc = tonic::client::Grpc::new(outsider.c.channel.clone());
        for (service, method, field) in workload_methods() {
            let id = match (field.as_str(), service.as_str()) {
                ("id", "GitService") if method.contains("Build") => build.clone(),
                ("id", "GitService") => integration.clone(),
                ("id", "JobService") if method.contains("JobRun") => job_run.clone(),
                ("job_id", _) | ("id", "JobService") => job.id.clone(),
                ("organization_id", _) => v.org.clone(),
                ("project_id", _) | ("id", "ProjectService") => v.project.id.clone(),
                ("service_id", _) | ("id", "ServiceService") => svc.id.clone(),
                ("variable_group_id", _) | ("id", "VariableGroupService") => group.clone(),
                ("deployment_id", _) | ("id", "DeploymentService") => deployment.id.clone(),
                ("id", "StackService") => stack.id.clone(),
                ("id", "VolumeService") => volume.clone(),
                ("id", "RouteService") => route.clone(),
                ("id", "DomainService") | ("domain_id", _) => domain.clone(),
                ("channel_id", _) | ("id", "NotificationService") => channel.clone(),
                ("id", "CertificateService") => certificate.clone(),
                other => panic!("{method}: no victim resource for {other:?}: add one"),
            };
            grpc.ready().await.unwrap();
            let path = tonic::codegen::http::uri::PathAndQuery::try_from(method.as_str()).unwrap();
            let result = grpc
                .unary(
                    authed(FirstField { id }, &outsider.token),
                    path,
                    tonic_prost::ProstCodec::<FirstField, ()>::default(),
                )
                .await;
            let code = result
                .expect_err(&format!("{b}: {method} succeeded cross-tenant"))
                .code();
            assert!(
                matches!(code, Code::NotFound | Code::PermissionDenied),
                "{b}: {method} cross-tenant: {code:?}"
            );
        }
        // Everything of the victim's is still there.
        let still =
            v.w.services
                .get_service(authed(pb::GetServiceRequest { id: svc.id.clone() }, &vt))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            (still.image.as_str(), still.replicas),
            ("ghcr.io/acme/web:1.0", 2),
            "{b}"
        );
        v.w.stacks
            .get_stack(authed(
                pb::GetStackRequest {
                    id: stack.id.clone(),
                },
                &vt,
            ))
            .await
            .unwrap();
        let env =
            v.w.services
                .list_env_vars(authed(
                    pb::ListEnvVarsRequest {
                        service_id: svc.id.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(env.env_vars.len(), 2, "{b}");
        let still =
            v.w.git
                .get_build(authed(pb::GetBuildRequest { id: build.clone() }, &vt))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(still.status(), pb::BuildStatus::Queued, "{b}");
        let still =
            v.w.jobs
                .get_job(authed(pb::GetJobRequest { id: job.id.clone() }, &vt))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(
            (still.schedule.as_str(), still.enabled, still.retries),
            ("@daily", true, 0),
            "{b}"
        );
        assert_eq!(
            still.last_run.map(|r| (r.status(), r.id)),
            Some((pb::JobRunStatus::Pending, job_run.clone())),
            "{b}: the victim's run is neither cancelled nor joined by another"
        );
        v.w.git
            .get_git_integration(authed(
                pb::GetGitIntegrationRequest {
                    id: integration.clone(),
                },
                &vt,
            ))
            .await
            .unwrap();
        let domains =
            v.w.domains
                .list_domains(authed(
                    pb::ListDomainsRequest {
                        project_id: v.project.id.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .domains;
        assert_eq!(
            domains.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            vec![domain.as_str()],
            "{b}: the victim's domain is still there"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn routes_reach_the_proxy_feed_on_commit() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, state) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        state.feed.reload(&db.conn, &state.keyring).await.unwrap();
        let _reloader = state.feed.spawn_reloader(
            db.conn.clone(),
            state.keyring.clone(),
            Duration::from_secs(3600),
            ferry_common::Shutdown::new(),
        );
        let mut t = tenant(&api, "ivan").await;
        let svc = web_service(&mut t).await;
        let tok = t.token.clone();
        let target = |port: u32| pb::RouteTarget {
            service_id: svc.id.clone(),
            port,
            weight: 0,
            strip_path: true,
        };
        let create = |host: &str, prefix: &str, port: u32| pb::CreateRouteRequest {
            project_id: t.project.id.clone(),
            hostname: host.into(),
            path_prefix: prefix.into(),
            tls_enabled: false,
            https_redirect: false,
            targets: vec![target(port)],
        };
        for (req, field) in [
            (create("Shop.Example.com", "/", 8080), "hostname"),
            (create("shop.example.com", "api", 8080), "pathPrefix"),
            (create("shop.example.com", "/", 9999), "targets[0].port"),
        ] {
            let err =
                t.w.routes
                    .create_route(authed(req, &tok))
                    .await
                    .unwrap_err();
            assert!(err.message().starts_with(field), "{b}: {field}: {err}");
        }
        let route =
            t.w.routes
                .create_route(authed(create("shop.example.com", "/api", 8080), &tok))
                .await
                .unwrap()
                .into_inner();
        let upstream = format!("web.{}.svc.cluster.local:8080", t.project.namespace);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let snap = state.feed.snapshot();
            let found = snap.routes.iter().any(|r| {
                r.hosts.contains(&"shop.example.com".to_owned())
                    && r.targets.iter().any(|tg| {
                        tg.path_prefix == "/api"
                            && tg.strip_prefix
                            && tg.upstreams.contains(&upstream)
                    })
            });
            if found {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{b}: route never reached the feed: {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Weights reach the proxy in upstream order; a single upstream
        // (the /api route, weight 0 = default) needs none.
        let canary =
            t.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: t.project.id.clone(),
                        name: "canary".into(),
                        spec: Some(app("ghcr.io/acme/web:1.1")),
                        ports: http_port(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let weighted = |service: &pb::Service, weight| pb::RouteTarget {
            service_id: service.id.clone(),
            port: 8080,
            weight,
            strip_path: false,
        };
        let root =
            t.w.routes
                .create_route(authed(
                    pb::CreateRouteRequest {
                        targets: vec![weighted(&svc, 90), weighted(&canary, 10)],
                        ..create("shop.example.com", "/", 8080)
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        // A port named `grpc` makes its path an HTTP/2 (h2c) target.
        let rpc =
            t.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: t.project.id.clone(),
                        name: "rpc".into(),
                        spec: Some(app("ghcr.io/acme/rpc:1.0")),
                        ports: vec![pb::Port {
                            name: "grpc".into(),
                            container_port: 9090,
                            protocol: pb::Protocol::Tcp.into(),
                        }],
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let rpc_route =
            t.w.routes
                .create_route(authed(
                    pb::CreateRouteRequest {
                        targets: vec![pb::RouteTarget {
                            service_id: rpc.id.clone(),
                            port: 9090,
                            weight: 0,
                            strip_path: false,
                        }],
                        ..create("shop.example.com", "/pkg.Svc", 9090)
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let rpc_upstream = format!("rpc.{}.svc.cluster.local:9090", t.project.namespace);
        let canary_upstream = format!("canary.{}.svc.cluster.local:8080", t.project.namespace);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let snap = state.feed.snapshot();
            let targets: Vec<_> = snap
                .routes
                .iter()
                .filter(|r| r.hosts.contains(&"shop.example.com".to_owned()))
                .flat_map(|r| r.targets.iter())
                .map(|tg| {
                    (
                        tg.path_prefix.as_str(),
                        tg.upstreams.clone(),
                        tg.weights.clone(),
                        ferry_proto::ferry::internal::v1::UpstreamProtocol::try_from(tg.protocol)
                            .unwrap(),
                    )
                })
                .collect();
            if targets.len() == 3 {
                use ferry_proto::ferry::internal::v1::UpstreamProtocol::{H2c, Http1};
                assert_eq!(
                    targets,
                    vec![
                        (
                            "/",
                            vec![canary_upstream.clone(), upstream.clone()],
                            vec![10, 90],
                            Http1
                        ),
                        ("/api", vec![upstream.clone()], vec![], Http1),
                        ("/pkg.Svc", vec![rpc_upstream.clone()], vec![], H2c),
                    ],
                    "{b}"
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{b}: weighted route never reached the feed: {snap:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let err =
            t.w.routes
                .create_route(authed(create("shop.example.com", "/api", 8080), &tok))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{b}");
        // Another tenant cannot capture a path under this host.
        let mut other = tenant(&api, "mallory").await;
        let other_svc = web_service(&mut other).await;
        let err = other
            .w
            .routes
            .create_route(authed(
                pb::CreateRouteRequest {
                    project_id: other.project.id.clone(),
                    hostname: "shop.example.com".into(),
                    path_prefix: "/admin".into(),
                    targets: vec![pb::RouteTarget {
                        service_id: other_svc.id.clone(),
                        port: 8080,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                &other.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{b}: {err}");
        for id in [&route.id, &root.id, &rpc_route.id] {
            t.w.routes
                .delete_route(authed(pb::DeleteRouteRequest { id: id.clone() }, &tok))
                .await
                .unwrap();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while state
            .feed
            .snapshot()
            .routes
            .iter()
            .any(|r| r.hosts.contains(&"shop.example.com".to_owned()))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{b}: deleted route still fed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        api.stop().await;
    }
}

#[tokio::test]
async fn private_images_pull_with_the_organizations_registry_credentials() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _) = start_api(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        let mut t = tenant(&api, "judy").await;
        let tok = t.token.clone();
        let password = "ghp_registry-Token-never-shown";
        let err =
            t.w.registries
                .create_registry(authed(
                    pb::CreateRegistryRequest {
                        organization_id: t.org.clone(),
                        name: "GitHub".into(),
                        url: "ghcr.io; rm -rf /".into(),
                        username: "judy".into(),
                        password: password.into(),
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert!(err.message().starts_with("url"), "{b}: {err}");
        let registry =
            t.w.registries
                .create_registry(authed(
                    pb::CreateRegistryRequest {
                        organization_id: t.org.clone(),
                        name: "GitHub".into(),
                        url: "ghcr.io".into(),
                        username: "judy".into(),
                        password: password.into(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let listed =
            t.w.registries
                .list_registries(authed(
                    pb::ListRegistriesRequest {
                        organization_id: t.org.clone(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(listed.registries.len(), 1, "{b}");
        assert!(!format!("{listed:?}").contains(password), "{b}");
        let mut spec = app("ghcr.io/judy/private:1");
        if let pb::create_service_request::Spec::Application(a) = &mut spec {
            a.registry_integration_id = registry.id.clone();
        }
        let svc =
            t.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: t.project.id.clone(),
                        name: "private".into(),
                        spec: Some(spec),
                        ports: http_port(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(svc.registry_integration_id, registry.id, "{b}");
        let d =
            t.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let (d, _) = wait_done(&mut t.w, &tok, &d.id).await;
        assert_eq!(status(&d), pb::DeploymentStatus::Running, "{b}");
        let ns = t.project.namespace.clone();
        let pull = fake
            .get("Secret", &ns, "private-registry")
            .expect("pull secret");
        assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson", "{b}");
        let config = base64::engine::general_purpose::STANDARD
            .decode(pull["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap();
        let config: Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["auths"]["ghcr.io"]["password"], password, "{b}");
        assert_eq!(
            config["auths"]["ghcr.io"]["auth"],
            b64(&format!("judy:{password}")),
            "{b}"
        );
        let dep = fake.get("Deployment", &ns, "private").unwrap();
        assert_eq!(
            dep["spec"]["template"]["spec"]["imagePullSecrets"][0]["name"], "private-registry",
            "{b}"
        );
        assert!(!revealed(&d.manifests_yaml).contains(password), "{b}");
        // A registry of another organization cannot be used.
        let other = tenant(&api, "kim").await;
        let mut other_w = w(&other.c.channel);
        let err = other_w
            .services
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: svc.id.clone(),
                    registry_integration_id: Some(registry.id.clone()),
                    ..Default::default()
                },
                &other.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}");
        api.stop().await;
    }
}

/// Deploys `service_id` and waits for the outcome.
async fn deploy_and_wait(t: &mut Tenant, service_id: &str) -> (pb::Deployment, Vec<String>) {
    let tok = t.token.clone();
    let d =
        t.w.deploys
            .deploy(authed(
                pb::DeployRequest {
                    service_id: service_id.into(),
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner();
    wait_done(&mut t.w, &tok, &d.id).await
}

#[tokio::test]
async fn ferry_never_adopts_or_deletes_cluster_objects_it_does_not_own() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        // A namespace of the cluster's own, with a workload in it.
        fake.insert(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "kube-system" },
        }));
        fake.insert(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "web-env", "namespace": "kube-system" },
            "data": { "TOKEN": b64("cluster-admin") },
        }));
        let (api, _state) = start_api(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        let mut t = tenant(&api, "mallory").await;
        let tok = t.token.clone();

        // A project named after a system namespace gets a namespace of its own.
        let evil =
            t.w.projects
                .create_project(authed(
                    pb::CreateProjectRequest {
                        organization_id: t.org.clone(),
                        name: "Kube System".into(),
                        slug: "kube-system".into(),
                        description: String::new(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(evil.slug, "kube-system", "{b}");
        assert!(
            evil.namespace.starts_with("ferry-kube-system-"),
            "{b}: {}",
            evil.namespace
        );
        let svc =
            t.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: evil.id.clone(),
                        name: "web".into(),
                        spec: Some(app("ghcr.io/acme/web:1.0")),
                        ports: http_port(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let (d, logs) = deploy_and_wait(&mut t, &svc.id).await;
        assert_eq!(status(&d), pb::DeploymentStatus::Running, "{b}: {logs:?}");
        assert!(fake.get("Deployment", &evil.namespace, "web").is_some());
        t.w.projects
            .delete_project(authed(
                pb::DeleteProjectRequest {
                    id: evil.id.clone(),
                },
                &tok,
            ))
            .await
            .unwrap();
        assert!(fake.get("Namespace", "", &evil.namespace).is_none(), "{b}");
        let system = fake.get("Secret", "kube-system", "web-env");
        assert!(
            fake.get("Namespace", "", "kube-system").is_some() && system.is_some(),
            "{b}: a system namespace was touched"
        );
        assert_eq!(system.unwrap()["data"]["TOKEN"], b64("cluster-admin"));

        // An object in the project's namespace that Ferry did not create
        // (no ownership labels) is refused, never overwritten.
        let svc = web_service(&mut t).await;
        let (d, _) = deploy_and_wait(&mut t, &svc.id).await;
        assert_eq!(status(&d), pb::DeploymentStatus::Running, "{b}");
        let ns = t.project.namespace.clone();
        fake.insert(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "web-env", "namespace": ns },
            "data": { "FOREIGN": b64("keep me") },
        }));
        let (d, logs) = deploy_and_wait(&mut t, &svc.id).await;
        assert_eq!(status(&d), pb::DeploymentStatus::Failed, "{b}: {logs:?}");
        assert!(
            d.message.contains("Secret")
                && d.message.contains("web-env")
                && d.message.contains("not managed by this Ferry project"),
            "{b}: {}",
            d.message
        );
        let foreign = fake.get("Secret", &ns, "web-env").unwrap();
        assert_eq!(foreign["data"]["FOREIGN"], b64("keep me"), "{b}");
        assert!(foreign["data"].get("API_KEY").is_none(), "{b}: overwritten");

        // Scale and restart refuse a workload of the same name that is not
        // this service's.
        fake.insert(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "web", "namespace": ns,
                          "labels": { "app.kubernetes.io/managed-by": "ferry" } },
            "spec": { "replicas": 1, "selector": {}, "template": {} },
        }));
        let err =
            t.w.deploys
                .scale(authed(
                    pb::ScaleRequest {
                        service_id: svc.id.clone(),
                        replicas: 5,
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err}");
        assert!(err.message().contains("ferry.dev/project-id"), "{b}: {err}");
        assert_eq!(
            fake.get("Deployment", &ns, "web").unwrap()["spec"]["replicas"],
            1,
            "{b}"
        );
        let err =
            t.w.deploys
                .restart(authed(
                    pb::RestartRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err}");

        // A namespace of that name that is not this project's is not deleted,
        // and the project stays.
        fake.insert(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns },
        }));
        let err =
            t.w.projects
                .delete_project(authed(
                    pb::DeleteProjectRequest {
                        id: t.project.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err}");
        assert!(fake.get("Namespace", "", &ns).is_some(), "{b}");
        t.w.projects
            .get_project(authed(
                pb::GetProjectRequest {
                    id: t.project.id.clone(),
                },
                &tok,
            ))
            .await
            .unwrap();
        api.stop().await;
    }
}

#[tokio::test]
async fn deleting_an_organization_deletes_its_namespaces_then_rows_and_tells_the_proxies() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, state) = start_api(&db.conn, Some(&fake), Duration::from_secs(10)).await;
        state.feed.reload(&db.conn, &state.keyring).await.unwrap();
        // No periodic reload to hide a missing notification.
        let _reloader = state.feed.spawn_reloader(
            db.conn.clone(),
            state.keyring.clone(),
            Duration::from_secs(3600),
            ferry_common::Shutdown::new(),
        );
        let mut gone = tenant(&api, "olga").await;
        let mut kept = tenant(&api, "pete").await;
        for t in [&mut gone, &mut kept] {
            let svc = web_service(t).await;
            let (d, _) = deploy_and_wait(t, &svc.id).await;
            assert_eq!(status(&d), pb::DeploymentStatus::Running, "{b}");
            let host = format!("{}.example.com", t.project.slug);
            t.w.routes
                .create_route(authed(
                    pb::CreateRouteRequest {
                        project_id: t.project.id.clone(),
                        hostname: host,
                        path_prefix: "/".into(),
                        tls_enabled: false,
                        https_redirect: false,
                        targets: vec![pb::RouteTarget {
                            service_id: svc.id.clone(),
                            port: 8080,
                            weight: 0,
                            strip_path: false,
                        }],
                    },
                    &t.token,
                ))
                .await
                .unwrap();
        }
        let has_host = |host: &str| {
            state
                .feed
                .snapshot()
                .routes
                .iter()
                .any(|r| r.hosts.iter().any(|h| h == host))
        };
        let gone_host = format!("{}.example.com", gone.project.slug);
        let kept_host = format!("{}.example.com", kept.project.slug);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(has_host(&gone_host) && has_host(&kept_host)) {
            assert!(tokio::time::Instant::now() < deadline, "{b}: routes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let ns = gone.project.namespace.clone();
        assert!(
            fake.get("PersistentVolumeClaim", &ns, "vol-uploads")
                .is_some()
        );

        gone.c
            .orgs
            .delete_organization(authed(
                pb::DeleteOrganizationRequest {
                    id: gone.org.clone(),
                },
                &gone.token,
            ))
            .await
            .unwrap();
        // The cluster first: the namespace, and every claim with it, so a
        // later tenant can never bind this tenant's data.
        assert!(fake.get("Namespace", "", &ns).is_none(), "{b}");
        let left: Vec<Value> = ["PersistentVolumeClaim", "Secret", "Deployment"]
            .iter()
            .flat_map(|k| fake.objects(k))
            .filter(|o| o["metadata"]["namespace"] == ns.as_str())
            .collect();
        assert!(left.is_empty(), "{b}: {left:?}");
        assert!(
            fake.get("Deployment", &kept.project.namespace, "web")
                .is_some(),
            "{b}"
        );
        // The proxies hear it at once (the periodic reload is an hour away).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while has_host(&gone_host) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{b}: the deleted organization's route is still fed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(has_host(&kept_host), "{b}");
        let rows = ferry_db::entities::projects::Entity::find()
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "{b}");
        api.stop().await;
    }
}

/// `text` plus every base64 run in it decoded, three levels deep (a docker
/// config inside a Secret holds base64 `user:password` again). Secret data
/// is base64: a secret's absence only means something on this.
fn revealed(text: &str) -> String {
    let mut out = text.to_owned();
    let mut layer = text.to_owned();
    for _ in 0..3 {
        let decoded: Vec<String> = layer
            .split(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')))
            .filter(|run| run.len() >= 4)
            .filter_map(|run| base64::engine::general_purpose::STANDARD.decode(run).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .collect();
        layer = decoded.join("\n");
        out.push('\n');
        out.push_str(&layer);
    }
    out
}

/// A new Member of `t`'s organization holding `level` on one resource;
/// returns the member's token and clients.
async fn member_with_grant(
    api: &Api,
    db: &DatabaseConnection,
    t: &mut Tenant,
    name: &str,
    kind: pb::GrantResourceType,
    resource_id: &str,
    level: pb::GrantLevel,
) -> (String, W) {
    let mut c = clients(api.addr).await;
    let user = register(&mut c, name).await;
    let token = login(&mut c, name).await;
    add_member(db, &t.org, &user.id, OrgRole::Member).await;
    t.c.grants
        .create_grant(authed(
            pb::CreateGrantRequest {
                organization_id: t.org.clone(),
                user_id: user.id.clone(),
                resource_type: kind.into(),
                resource_id: resource_id.into(),
                level: level.into(),
            },
            &t.token,
        ))
        .await
        .unwrap();
    (token, w(&c.channel))
}

/// An application spec pulling `image` with `registry`'s credentials.
fn app_with_registry(image: &str, registry: &str) -> pb::create_service_request::Spec {
    let mut spec = app(image);
    if let pb::create_service_request::Spec::Application(a) = &mut spec {
        a.registry_integration_id = registry.into();
    }
    spec
}

async fn create_registry(t: &mut Tenant, password: &str) -> pb::Registry {
    t.w.registries
        .create_registry(authed(
            pb::CreateRegistryRequest {
                organization_id: t.org.clone(),
                name: "GitHub".into(),
                url: "ghcr.io".into(),
                username: "pull-bot".into(),
                password: password.into(),
            },
            &t.token,
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn plain_service(t: &mut Tenant, name: &str) -> pb::Service {
    t.w.services
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: t.project.id.clone(),
                name: name.into(),
                spec: Some(app("ghcr.io/acme/plain:1")),
                ports: http_port(),
            },
            &t.token,
        ))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn registry_credentials_are_shown_to_no_one_and_attached_by_registry_managers_only() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut t = tenant(&api, "rita").await;
        let tok = t.token.clone();
        let password = "ghp_pull-Password-shown-to-no-one";
        let registry = create_registry(&mut t, password).await;
        let svc =
            t.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: t.project.id.clone(),
                        name: "private".into(),
                        spec: Some(app_with_registry("ghcr.io/rita/app:1", &registry.id)),
                        ports: http_port(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        t.w.services
            .set_env_var(authed(
                pb::SetEnvVarRequest {
                    service_id: svc.id.clone(),
                    key: "API_KEY".into(),
                    value: SECRET.into(),
                    secret: true,
                },
                &tok,
            ))
            .await
            .unwrap();

        // The owner's plan reveals the environment, never the registry password.
        let plan =
            t.w.deploys
                .plan_deployment(authed(
                    pb::PlanDeploymentRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let shown = revealed(&plan.yaml);
        assert!(plan.secrets_revealed && shown.contains(SECRET), "{b}");
        assert!(
            plan.yaml.contains("kubernetes.io/dockerconfigjson"),
            "{b}: {}",
            plan.yaml
        );
        assert!(!shown.contains(password), "{b}: {shown}");
        assert!(!shown.contains("pull-bot:"), "{b}: basic auth in {shown}");
        // Nor the recorded deployment, nor the stored artefacts.
        let d =
            t.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(!revealed(&d.manifests_yaml).contains(password), "{b}");
        for row in deployments::Entity::find().all(&db.conn).await.unwrap() {
            assert!(
                !revealed(&row.k8s_artifacts.to_string()).contains(password),
                "{b}"
            );
        }

        // A service manager and a project manager cannot attach the
        // organization's registry credentials.
        let plain = plain_service(&mut t, "plain").await;
        let (stok, mut sw) = member_with_grant(
            &api,
            &db.conn,
            &mut t,
            "sam",
            pb::GrantResourceType::Service,
            &plain.id,
            pb::GrantLevel::Manage,
        )
        .await;
        let err = sw
            .services
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: plain.id.clone(),
                    registry_integration_id: Some(registry.id.clone()),
                    ..Default::default()
                },
                &stok,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err}");
        assert!(
            err.message().starts_with("registryIntegrationId"),
            "{b}: {err}"
        );
        let project_id = t.project.id.clone();
        let (ptok, mut pw) = member_with_grant(
            &api,
            &db.conn,
            &mut t,
            "pam",
            pb::GrantResourceType::Project,
            &project_id,
            pb::GrantLevel::Manage,
        )
        .await;
        let err = pw
            .services
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: t.project.id.clone(),
                    name: "sneaky".into(),
                    spec: Some(app_with_registry("ghcr.io/rita/app:1", &registry.id)),
                    ports: http_port(),
                },
                &ptok,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err}");
        assert!(
            err.message()
                .starts_with("application.registryIntegrationId"),
            "{b}: {err}"
        );
        let services =
            t.w.services
                .list_services(authed(
                    pb::ListServicesRequest {
                        project_id: t.project.id.clone(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .services;
        assert!(!services.iter().any(|s| s.name == "sneaky"), "{b}");
        let plain_now = services.iter().find(|s| s.name == "plain").unwrap();
        assert_eq!(plain_now.registry_integration_id, "", "{b}");
        // Keeping the registry a service has, or dropping it, needs no more.
        let kept = pw
            .services
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: svc.id.clone(),
                    replicas: Some(1),
                    registry_integration_id: Some(registry.id.clone()),
                    ..Default::default()
                },
                &ptok,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kept.registry_integration_id, registry.id, "{b}");
        let dropped = pw
            .services
            .update_service(authed(
                pb::UpdateServiceRequest {
                    id: svc.id.clone(),
                    registry_integration_id: Some(String::new()),
                    ..Default::default()
                },
                &ptok,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(dropped.registry_integration_id, "", "{b}");
        let _ = &mut t.c;
        api.stop().await;
    }
}

#[tokio::test]
async fn a_service_or_stack_grant_reaches_no_other_project_volume_or_variable_group() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut t = tenant(&api, "olga").await;
        let web = web_service(&mut t).await;
        let group = web.variable_group_ids[0].clone();
        let volume = web.mounts[0].volume_id.clone();
        let target = plain_service(&mut t, "api").await;
        let (stok, mut sw) = member_with_grant(
            &api,
            &db.conn,
            &mut t,
            "sid",
            pb::GrantResourceType::Service,
            &target.id,
            pb::GrantLevel::Manage,
        )
        .await;
        let mount = pb::MountVolumeRequest {
            service_id: target.id.clone(),
            volume_id: volume.clone(),
            mount_path: "/loot".into(),
            sub_path: String::new(),
            read_only: false,
        };
        let attach = pb::AttachVariableGroupRequest {
            service_id: target.id.clone(),
            variable_group_id: group.clone(),
        };
        let err = sw
            .services
            .mount_volume(authed(mount.clone(), &stok))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err}");
        assert!(err.message().starts_with("volumeId"), "{b}: {err}");
        let err = sw
            .services
            .attach_variable_group(authed(attach.clone(), &stok))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err}");
        assert!(err.message().starts_with("variableGroupId"), "{b}: {err}");
        // The grant still covers the service itself.
        sw.services
            .set_env_var(authed(
                pb::SetEnvVarRequest {
                    service_id: target.id.clone(),
                    key: "TZ".into(),
                    value: "UTC".into(),
                    secret: false,
                },
                &stok,
            ))
            .await
            .unwrap();
        let now =
            t.w.services
                .get_service(authed(
                    pb::GetServiceRequest {
                        id: target.id.clone(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(
            now.mounts.is_empty() && now.variable_group_ids.is_empty(),
            "{b}: {now:?}"
        );
        // Manage on the project allows both.
        let project_id = t.project.id.clone();
        let (ptok, mut pw) = member_with_grant(
            &api,
            &db.conn,
            &mut t,
            "pia",
            pb::GrantResourceType::Project,
            &project_id,
            pb::GrantLevel::Manage,
        )
        .await;
        pw.services
            .mount_volume(authed(mount, &ptok))
            .await
            .unwrap();
        let now = pw
            .services
            .attach_variable_group(authed(attach, &ptok))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (now.mounts.len(), now.variable_group_ids.len()),
            (1, 1),
            "{b}"
        );

        // A stack grant cannot take a project volume by naming it in the
        // compose file; the stack's own volumes keep working.
        let with_data = "services:\n  s:\n    image: nginx:1\n    volumes: [\"data:/data\"]\nvolumes:\n  data:\n";
        let stack =
            t.w.stacks
                .create_stack(authed(
                    pb::CreateStackRequest {
                        project_id: t.project.id.clone(),
                        name: "a".into(),
                        compose_file: with_data.into(),
                        variables: Default::default(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner()
                .stack
                .unwrap();
        t.w.volumes
            .create_volume(authed(
                pb::CreateVolumeRequest {
                    project_id: t.project.id.clone(),
                    name: "a-loot".into(),
                    size_gb: 1,
                    storage_class: String::new(),
                    access_mode: pb::VolumeAccessMode::ReadWriteOnce.into(),
                },
                &t.token,
            ))
            .await
            .unwrap();
        let (ktok, mut kw) = member_with_grant(
            &api,
            &db.conn,
            &mut t,
            "kai",
            pb::GrantResourceType::Stack,
            &stack.id,
            pb::GrantLevel::Manage,
        )
        .await;
        let update = |file: &str| pb::UpdateStackRequest {
            id: stack.id.clone(),
            compose_file: file.into(),
            variables: Default::default(),
        };
        let err = kw
            .stacks
            .update_stack(authed(
                update("services:\n  s:\n    image: nginx:1\n    volumes: [\"data:/data\", \"loot:/loot\"]\nvolumes:\n  data:\n  loot:\n"),
                &ktok,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err}");
        assert!(err.message().starts_with("volumes.loot"), "{b}: {err}");
        kw.stacks
            .update_stack(authed(
                update(&with_data.replace("nginx:1", "nginx:2")),
                &ktok,
            ))
            .await
            .unwrap();
        let _ = &mut t.c;
        api.stop().await;
    }
}

const LITERAL_SECRETS: [&str; 5] = [
    "anchor-Literal-secret",
    "db-Literal-secret",
    "salt-Literal-secret",
    "smtp-Literal-secret",
    "tmpl-Literal-secret",
];

const SECRET_COMPOSE: &str = r#"
x-common: &common
  SHARED_TOKEN: anchor-Literal-secret
services:
  app:
    image: ghcr.io/acme/app:1
    environment:
      <<: *common
      DATABASE_URL: postgres://app:db-Literal-secret@db/app
      SESSION_SALT: salt-Literal-secret
      DB_HOST: db
      TZ: Europe/Paris
  worker:
    image: ghcr.io/acme/worker:1
    environment:
      - SMTP_PASS=smtp-Literal-secret
      - NODE_ENV=production
"#;

fn has_no_literal_secret(text: &str) -> bool {
    LITERAL_SECRETS.iter().all(|s| !text.contains(s))
}

#[tokio::test]
// List requests are gaining paging fields: `..Default::default()` stays.
#[allow(clippy::needless_update)]
async fn compose_values_are_secret_unless_clearly_not_and_viewers_see_them_masked() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        ferry_db::seed::run(&db.conn).await.unwrap();
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        let mut t = tenant(&api, "uma").await;
        let tok = t.token.clone();
        let stack =
            t.w.stacks
                .create_stack(authed(
                    pb::CreateStackRequest {
                        project_id: t.project.id.clone(),
                        name: "shop".into(),
                        compose_file: SECRET_COMPOSE.into(),
                        variables: Default::default(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .stack
                .unwrap();
        // Stored: secret unless the key is clearly not sensitive.
        let services =
            t.w.services
                .list_services(authed(
                    pb::ListServicesRequest {
                        project_id: t.project.id.clone(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .services;
        let mut seen = Vec::new();
        for s in &services {
            let env =
                t.w.services
                    .list_env_vars(authed(
                        pb::ListEnvVarsRequest {
                            service_id: s.id.clone(),
                            ..Default::default()
                        },
                        &tok,
                    ))
                    .await
                    .unwrap()
                    .into_inner();
            for v in env.env_vars {
                assert!(has_no_literal_secret(&v.value), "{b}: {v:?}");
                seen.push((v.key, v.secret));
            }
        }
        seen.sort();
        let expected: Vec<(String, bool)> = [
            ("DATABASE_URL", true),
            ("DB_HOST", false),
            ("NODE_ENV", false),
            ("SESSION_SALT", true),
            ("SHARED_TOKEN", true),
            ("SMTP_PASS", true),
            ("TZ", false),
        ]
        .iter()
        .map(|(k, s)| ((*k).to_owned(), *s))
        .collect();
        assert_eq!(seen, expected, "{b}");

        // Viewers get the file with secret values masked; deployers as written.
        let mut c = clients(api.addr).await;
        let viewer = register(&mut c, "vic").await;
        let vtok = login(&mut c, "vic").await;
        add_member(&db.conn, &t.org, &viewer.id, OrgRole::Viewer).await;
        let mut vw = w(&c.channel);
        let get = pb::GetStackRequest {
            id: stack.id.clone(),
        };
        let file = vw
            .stacks
            .get_stack(authed(get.clone(), &vtok))
            .await
            .unwrap()
            .into_inner()
            .stack
            .unwrap()
            .compose_file;
        assert!(has_no_literal_secret(&file), "{b}: {file}");
        assert!(file.contains("***"), "{b}: {file}");
        assert!(
            file.contains("Europe/Paris") && file.contains("NODE_ENV=production"),
            "{b}: {file}"
        );
        let listed = vw
            .stacks
            .list_stacks(authed(
                pb::ListStacksRequest {
                    project_id: t.project.id.clone(),
                    ..Default::default()
                },
                &vtok,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(has_no_literal_secret(&format!("{listed:?}")), "{b}");
        let (dtok, mut dw) = member_with_grant(
            &api,
            &db.conn,
            &mut t,
            "dee",
            pb::GrantResourceType::Stack,
            &stack.id,
            pb::GrantLevel::Deploy,
        )
        .await;
        let file = dw
            .stacks
            .get_stack(authed(get, &dtok))
            .await
            .unwrap()
            .into_inner()
            .stack
            .unwrap()
            .compose_file;
        assert_eq!(file, SECRET_COMPOSE, "{b}");

        // Template specs carry no literal secret value.
        let spec = serde_json::json!({
            "kind": "application",
            "image": "ghcr.io/acme/admin:1",
            "env": [
                { "key": "ADMIN_PASSWORD", "value": "tmpl-Literal-secret", "secret": true },
                { "key": "DATABASE_URL", "value": "postgres://a:db-Literal-secret@db/a" },
                { "key": "TZ", "value": "UTC" },
                { "key": "SIGNING_KEY", "generate": "hex32", "secret": true }
            ]
        });
        t.w.templates
            .create_template(authed(
                pb::CreateTemplateRequest {
                    organization_id: t.org.clone(),
                    slug: "admin".into(),
                    name: "Admin".into(),
                    spec_json: spec.to_string(),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        let templates = vw
            .templates
            .list_templates(authed(
                pb::ListTemplatesRequest {
                    organization_id: t.org.clone(),
                    ..Default::default()
                },
                &vtok,
            ))
            .await
            .unwrap()
            .into_inner()
            .templates;
        let admin = templates.iter().find(|x| x.slug == "admin").unwrap();
        assert!(
            has_no_literal_secret(&admin.spec_json),
            "{b}: {}",
            admin.spec_json
        );
        let shown: Value = serde_json::from_str(&admin.spec_json).unwrap();
        assert_eq!(shown["env"][0]["value"], "***", "{b}");
        assert_eq!(shown["env"][2]["value"], "UTC", "{b}");
        assert_eq!(shown["env"][3]["generate"], "hex32", "{b}");
        // Deploying still uses the real value.
        let deployed =
            t.w.templates
                .deploy_template(authed(
                    pb::DeployTemplateRequest {
                        project_id: t.project.id.clone(),
                        template_slug: "admin".into(),
                        service_name: String::new(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        let plan =
            t.w.deploys
                .plan_deployment(authed(
                    pb::PlanDeploymentRequest {
                        service_id: deployed.service.unwrap().id,
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
        assert!(revealed(&plan.yaml).contains("tmpl-Literal-secret"), "{b}");
        let _ = &mut t.c;
        api.stop().await;
    }
}

/// Workload RPCs whose request names a resource beyond field 1: a second
/// id field, or an id inside a nested message (route targets, the
/// application spec's registry).
fn nested_id_methods() -> Vec<String> {
    use prost::Message as _;
    use prost_types::DescriptorProto;
    let fds = prost_types::FileDescriptorSet::decode(ferry_proto::FILE_DESCRIPTOR_SET).unwrap();
    // Only ferry.v1: ferry.internal.v1 reuses some message names.
    let messages: Vec<&DescriptorProto> = fds
        .file
        .iter()
        .filter(|f| f.package() == "ferry.v1")
        .flat_map(|f| &f.message_type)
        .collect();
    let find = |name: &str| {
        let name = name.trim_start_matches(".ferry.v1.");
        messages.iter().find(|m| m.name() == name).copied()
    };
    fn names_id(name: &str) -> bool {
        name == "id" || name.ends_with("_id") || name.ends_with("_ids")
    }
    let nested_ids = |m: &DescriptorProto| {
        m.field.iter().any(|f| {
            f.type_name
                .as_deref()
                .and_then(find)
                .is_some_and(|inner| inner.field.iter().any(|g| names_id(g.name())))
        })
    };
    let mut out = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "ferry.v1") {
        for service in file
            .service
            .iter()
            .filter(|s| WORKLOAD_SERVICES.contains(&s.name()))
        {
            for method in &service.method {
                let input = find(method.input_type()).unwrap();
                let second_id = input
                    .field
                    .iter()
                    .any(|f| f.number() != 1 && names_id(f.name()));
                if second_id || nested_ids(input) {
                    out.push(format!("{}/{}", service.name(), method.name()));
                }
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
// List requests are gaining paging fields: `..Default::default()` stays.
#[allow(clippy::needless_update)]
async fn nested_ids_of_another_tenant_are_not_found_and_change_nothing() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        ferry_db::seed::run(&db.conn).await.unwrap();
        let (api, _) = start_api(&db.conn, None, Duration::from_secs(5)).await;
        // The victim: a service with a mounted volume and a variable group,
        // a deployment, a route, a registry and a template of its own.
        let mut v = tenant(&api, "victor").await;
        let vt = v.token.clone();
        let v_svc = web_service(&mut v).await;
        let v_volume = v_svc.mounts[0].volume_id.clone();
        let v_group = v_svc.variable_group_ids[0].clone();
        let v_deployment =
            v.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: v_svc.id.clone(),
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        let v_registry = create_registry(&mut v, "victim-Registry-password").await;
        let v_integration =
            v.w.git
                .create_git_integration(authed(
                    pb::CreateGitIntegrationRequest {
                        organization_id: v.org.clone(),
                        provider: pb::GitProvider::Github.into(),
                        name: "victim-gh".into(),
                        token: "github_pat_victim".into(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        let v_template = v
            .w
            .templates
            .create_template(authed(
                pb::CreateTemplateRequest {
                    organization_id: v.org.clone(),
                    slug: "victims-app".into(),
                    name: "Victim's app".into(),
                    spec_json: r#"{"kind":"application","image":"ghcr.io/victor/app:1"}"#.into(),
                    ..Default::default()
                },
                &vt,
            ))
            .await
            .unwrap()
            .into_inner();
        let target = |service_id: &str| pb::RouteTarget {
            service_id: service_id.into(),
            port: 8080,
            ..Default::default()
        };
        v.w.routes
            .create_route(authed(
                pb::CreateRouteRequest {
                    project_id: v.project.id.clone(),
                    hostname: "victor.example.com".into(),
                    targets: vec![target(&v_svc.id)],
                    ..Default::default()
                },
                &vt,
            ))
            .await
            .unwrap();

        // The attacker names its own resource first, the victim's after.
        let mut a = tenant(&api, "mallory").await;
        let at = a.token.clone();
        let a_svc = web_service(&mut a).await;
        let a_route =
            a.w.routes
                .create_route(authed(
                    pb::CreateRouteRequest {
                        project_id: a.project.id.clone(),
                        hostname: "mallory.example.com".into(),
                        targets: vec![target(&a_svc.id)],
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .unwrap()
                .into_inner();
        let get = |id: &str| pb::GetServiceRequest { id: id.into() };
        let v_before =
            v.w.services
                .get_service(authed(get(&v_svc.id), &vt))
                .await
                .unwrap()
                .into_inner();
        let a_before =
            a.w.services
                .get_service(authed(get(&a_svc.id), &at))
                .await
                .unwrap()
                .into_inner();
        use ferry_db::entities::organization_members as members;
        use ferry_db::sea_orm::{ColumnTrait as _, QueryFilter as _};
        let a_user = members::Entity::find()
            .filter(members::Column::OrganizationId.eq(a.org.parse::<uuid::Uuid>().unwrap()))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .user_id;
        let mut tried: Vec<(&str, Result<(), tonic::Status>)> = Vec::new();
        let app_spec = app_with_registry("ghcr.io/mallory/x:1", &v_registry.id);
        tried.push((
            "ServiceService/CreateService",
            a.w.services
                .create_service(authed(
                    pb::CreateServiceRequest {
                        project_id: a.project.id.clone(),
                        name: "stolen".into(),
                        spec: Some(app_spec),
                        ports: http_port(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "ServiceService/UpdateService",
            a.w.services
                .update_service(authed(
                    pb::UpdateServiceRequest {
                        id: a_svc.id.clone(),
                        registry_integration_id: Some(v_registry.id.clone()),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "ServiceService/MountVolume",
            a.w.services
                .mount_volume(authed(
                    pb::MountVolumeRequest {
                        service_id: a_svc.id.clone(),
                        volume_id: v_volume.clone(),
                        mount_path: "/loot".into(),
                        sub_path: String::new(),
                        read_only: true,
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        let group_request = pb::AttachVariableGroupRequest {
            service_id: a_svc.id.clone(),
            variable_group_id: v_group.clone(),
        };
        tried.push((
            "ServiceService/AttachVariableGroup",
            a.w.services
                .attach_variable_group(authed(group_request.clone(), &at))
                .await
                .map(drop),
        ));
        tried.push((
            "ServiceService/DetachVariableGroup",
            a.w.services
                .detach_variable_group(authed(
                    pb::DetachVariableGroupRequest {
                        service_id: group_request.service_id,
                        variable_group_id: group_request.variable_group_id,
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "RouteService/CreateRoute",
            a.w.routes
                .create_route(authed(
                    pb::CreateRouteRequest {
                        project_id: a.project.id.clone(),
                        hostname: "loot.example.com".into(),
                        targets: vec![target(&v_svc.id)],
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "RouteService/SetRouteTargets",
            a.w.routes
                .set_route_targets(authed(
                    pb::SetRouteTargetsRequest {
                        id: a_route.id.clone(),
                        targets: vec![target(&a_svc.id), target(&v_svc.id)],
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "RegistryService/DeleteRegistry",
            a.w.registries
                .delete_registry(authed(
                    pb::DeleteRegistryRequest {
                        organization_id: a.org.clone(),
                        id: v_registry.id.clone(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "TemplateService/DeleteTemplate",
            a.w.templates
                .delete_template(authed(
                    pb::DeleteTemplateRequest {
                        organization_id: a.org.clone(),
                        id: v_template.id.clone(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        // Not ids, but naming the victim's resources all the same.
        tried.push((
            "TemplateService/DeployTemplate",
            a.w.templates
                .deploy_template(authed(
                    pb::DeployTemplateRequest {
                        project_id: a.project.id.clone(),
                        template_slug: v_template.slug.clone(),
                        service_name: String::new(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "DeploymentService/Rollback",
            a.w.deploys
                .rollback(authed(
                    pb::RollbackRequest {
                        deployment_id: v_deployment.clone(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "GrantService/CreateGrant",
            a.c.grants
                .create_grant(authed(
                    pb::CreateGrantRequest {
                        organization_id: a.org.clone(),
                        user_id: a_user.to_string(),
                        resource_type: pb::GrantResourceType::Service.into(),
                        resource_id: v_svc.id.clone(),
                        level: pb::GrantLevel::Manage.into(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "GitService/SetBuildConfig",
            a.w.git
                .set_build_config(authed(
                    pb::SetBuildConfigRequest {
                        service_id: a_svc.id.clone(),
                        git_integration_id: v_integration.clone(),
                        repository: "victor/app".into(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        // A job of the attacker's that would run the victim's service, with
        // its environment.
        tried.push((
            "JobService/CreateJob",
            a.w.jobs
                .create_job(authed(
                    pb::CreateJobRequest {
                        project_id: a.project.id.clone(),
                        name: "stolen".into(),
                        service_id: v_svc.id.clone(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        let a_job =
            a.w.jobs
                .create_job(authed(
                    pb::CreateJobRequest {
                        project_id: a.project.id.clone(),
                        name: "mine".into(),
                        image: "ghcr.io/mallory/x:1".into(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .unwrap()
                .into_inner();
        tried.push((
            "JobService/UpdateJob",
            a.w.jobs
                .update_job(authed(
                    pb::UpdateJobRequest {
                        id: a_job.id.clone(),
                        image: Some(String::new()),
                        service_id: Some(v_svc.id.clone()),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        // The attacker's own channel, subscribed to the victim's project.
        let mut notify =
            pb::notification_service_client::NotificationServiceClient::new(a.c.channel.clone());
        let a_channel = notify
            .create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: a.org.clone(),
                    kind: pb::ChannelKind::Slack.into(),
                    name: "mallory channel".into(),
                    webhook_url: "https://93.184.215.14/services/mallory".into(),
                    ..Default::default()
                },
                &at,
            ))
            .await
            .unwrap()
            .into_inner()
            .channel
            .unwrap()
            .id;
        tried.push((
            "NotificationService/Subscribe",
            notify
                .subscribe(authed(
                    pb::SubscribeRequest {
                        channel_id: a_channel.clone(),
                        event: "deployment.failed".into(),
                        project_id: v.project.id.clone(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        tried.push((
            "NotificationService/Unsubscribe",
            notify
                .unsubscribe(authed(
                    pb::UnsubscribeRequest {
                        channel_id: a_channel.clone(),
                        event: "deployment.failed".into(),
                        project_id: v.project.id.clone(),
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        // The victim's domain, in a listing of the attacker's project.
        let v_domain =
            v.w.domains
                .add_domain(authed(
                    pb::AddDomainRequest {
                        project_id: v.project.id.clone(),
                        domain: "victor.example.org".into(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        ferry_tests::fixtures::certificate(&db.conn, v_domain.parse().unwrap(), "victor-key").await;
        tried.push((
            "CertificateService/ListCertificates",
            a.w.certs
                .list_certificates(authed(
                    pb::ListCertificatesRequest {
                        project_id: a.project.id.clone(),
                        domain_id: v_domain.clone(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .map(drop),
        ));
        for (method, result) in &tried {
            let code = result.as_ref().map_or_else(|e| e.code(), |()| Code::Ok);
            assert_eq!(code, Code::NotFound, "{b}: {method}: {result:?}");
        }
        let jobs =
            a.w.jobs
                .list_jobs(authed(
                    pb::ListJobsRequest {
                        project_id: a.project.id.clone(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .unwrap()
                .into_inner()
                .jobs;
        let jobs: Vec<(String, String, String)> = jobs
            .into_iter()
            .map(|j| (j.id, j.image, j.service_id))
            .collect();
        assert_eq!(
            jobs,
            [(a_job.id, a_job.image, String::new())],
            "{b}: no stolen job, the other unchanged"
        );
        // Every RPC that takes a second id is tried above.
        let covered: Vec<&str> = tried.iter().map(|(m, _)| *m).collect();
        let nested = nested_id_methods();
        for known in [
            "ServiceService/CreateService",
            "ServiceService/MountVolume",
            "RouteService/SetRouteTargets",
        ] {
            assert!(nested.iter().any(|m| m == known), "{b}: {nested:?}");
        }
        for method in nested {
            assert!(
                covered.contains(&method.as_str()),
                "{b}: {method} takes a second id: add it to this test"
            );
        }

        // Nothing changed on either side.
        let still =
            v.w.services
                .get_service(authed(get(&v_svc.id), &vt))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(still, v_before, "{b}");
        let mine =
            a.w.services
                .get_service(authed(get(&a_svc.id), &at))
                .await
                .unwrap()
                .into_inner();
        assert_eq!(mine, a_before, "{b}");
        let services =
            a.w.services
                .list_services(authed(
                    pb::ListServicesRequest {
                        project_id: a.project.id.clone(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .unwrap()
                .into_inner()
                .services;
        assert_eq!(services.len(), 1, "{b}: {services:?}");
        let routes =
            a.w.routes
                .list_routes(authed(
                    pb::ListRoutesRequest {
                        project_id: a.project.id.clone(),
                        ..Default::default()
                    },
                    &at,
                ))
                .await
                .unwrap()
                .into_inner()
                .routes;
        assert_eq!(routes, vec![a_route], "{b}");
        let registries =
            v.w.registries
                .list_registries(authed(
                    pb::ListRegistriesRequest {
                        organization_id: v.org.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .registries;
        assert_eq!(registries.len(), 1, "{b}");
        let templates =
            v.w.templates
                .list_templates(authed(
                    pb::ListTemplatesRequest {
                        organization_id: v.org.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .templates;
        assert!(templates.iter().any(|x| x.id == v_template.id), "{b}");
        let history =
            v.w.deploys
                .list_deployments(authed(
                    pb::ListDeploymentsRequest {
                        service_id: v_svc.id.clone(),
                        ..Default::default()
                    },
                    &vt,
                ))
                .await
                .unwrap()
                .into_inner()
                .deployments;
        assert_eq!(history.len(), 1, "{b}");
        let _ = (&mut v.c, &mut a.c);
        api.stop().await;
    }
}

#[tokio::test]
async fn concurrent_deploys_of_one_service_cannot_both_proceed() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        fake.set_default_behavior(Behavior::Hang);
        let (api, _state) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        let mut t = tenant(&api, "quinn").await;
        let svc = web_service(&mut t).await;
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let mut deploys = t.w.deploys.clone();
            let req = authed(
                pb::DeployRequest {
                    service_id: svc.id.clone(),
                },
                &t.token,
            );
            calls.spawn(async move { deploys.deploy(req).await });
        }
        let results: Vec<_> = calls.join_all().await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{b}: {results:?}");
        for err in results.iter().filter_map(|r| r.as_ref().err()) {
            assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err}");
        }
        api.stop().await;
    }
}

#[tokio::test]
async fn exactly_one_replica_resumes_an_abandoned_rollout() {
    use ferry_db::sea_orm::{ActiveModelTrait as _, IntoActiveModel as _, Set};
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        fake.set_default_behavior(Behavior::Hang);
        let (api, state) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        let mut t = tenant(&api, "rita").await;
        let svc = web_service(&mut t).await;
        let d =
            t.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: svc.id.clone(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        wait_status(&db.conn, &d.id, DeploymentStatus::Deploying).await;
        let id: uuid::Uuid = d.id.parse().unwrap();
        let row = deployments::Entity::find_by_id(id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            row.lease_owner.as_deref(),
            Some(state.deploy.replica_id.as_str())
        );
        // The driving replica is alive: nobody else takes its rollout.
        let (_api2, state2) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        assert_eq!(
            ferry_api::deployer(&state2).resume().await.unwrap(),
            0,
            "{b}"
        );
        // It dies without a word (no release): its lease runs out.
        state.deploy.stop.trigger();
        api.stop().await;
        let mut row = deployments::Entity::find_by_id(id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        row.lease_owner = Set(Some("dead-replica".into()));
        row.lease_expires_at = Set(Some(chrono::Utc::now() - chrono::Duration::seconds(1)));
        row.update(&db.conn).await.unwrap();
        // Two live replicas look for abandoned rollouts at the same moment.
        let (_api3, state3) = start_api(&db.conn, Some(&fake), Duration::from_secs(60)).await;
        let (d2, d3) = (ferry_api::deployer(&state2), ferry_api::deployer(&state3));
        let (a, c) = tokio::join!(d2.resume(), d3.resume());
        assert_eq!(a.unwrap() + c.unwrap(), 1, "{b}: exactly one takes it");
        let row = deployments::Entity::find_by_id(id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        let owner = row.lease_owner.unwrap();
        assert!(
            owner == state2.deploy.replica_id || owner == state3.deploy.replica_id,
            "{b}: {owner}"
        );
        let resumed = ferry_db::entities::deployment_logs::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.deployment_id == id && l.message.contains("resuming"))
            .count();
        assert_eq!(resumed, 1, "{b}");
        state2.deploy.stop.trigger();
        state3.deploy.stop.trigger();
    }
}

#[tokio::test]
async fn compose_alias_bombs_are_refused_quickly_naming_the_problem() {
    let db = ferry_tests::migrated_dbs()
        .await
        .into_iter()
        .next()
        .unwrap();
    let (api, _state) = start_api(&db.conn, None, Duration::from_secs(5)).await;
    let mut t = tenant(&api, "sam").await;
    // Wide fan-out: 9 levels of 9 aliases (about 387 million nodes).
    let mut bomb = String::from("x-a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*a{}", i - 1); 9].join(", ");
        bomb.push_str(&format!("x-a{i}: &a{i} [{refs}]\n"));
    }
    bomb.push_str("services:\n  web:\n    image: nginx\n    command: *a8\n");
    // One big anchor used many times (each alias alone is small).
    let list = vec!["item"; 3000].join(", ");
    let mut wide =
        format!("x-big: &big [{list}]\nservices:\n  web:\n    image: nginx\n    environment:\n");
    for i in 0..3000 {
        wide.push_str(&format!("      - K{i}=v\n"));
    }
    wide.push_str("x-uses: [");
    wide.push_str(&vec!["*big"; 3000].join(", "));
    wide.push_str("]\n");
    for (name, file) in [("bomb", bomb), ("wide", wide)] {
        let started = std::time::Instant::now();
        let err =
            t.w.stacks
                .create_stack(authed(
                    pb::CreateStackRequest {
                        project_id: t.project.id.clone(),
                        name: name.into(),
                        compose_file: file,
                        variables: Default::default(),
                    },
                    &t.token,
                ))
                .await
                .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert!(err.message().starts_with("composeFile"), "{name}: {err}");
        assert!(
            err.message().contains("alias") || err.message().contains("repetition"),
            "{name}: {err}"
        );
        // A guard, not a benchmark: the refusal does not expand the file.
        assert!(started.elapsed() < Duration::from_secs(5), "{name}");
    }
    api.stop().await;
}
