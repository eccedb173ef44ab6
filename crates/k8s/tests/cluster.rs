//! `Cluster` against the in-memory `FakeCluster`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{app_spec, db_spec};
use ferry_k8s::fake::{Behavior, FakeCluster};
use ferry_k8s::spec::WorkloadSpec;
use ferry_k8s::{Cluster, Owner, RolloutEvent, RolloutOutcome, WorkloadKindRef, render};

fn service_owner(spec: &WorkloadSpec) -> Owner {
    Owner::service("shop", spec.project_id, spec.service_id)
}

fn project_owner() -> Owner {
    Owner::project("shop", app_spec().project_id)
}

fn cluster(fake: &FakeCluster) -> Cluster {
    Cluster::new(fake.client()).with_pod_check_interval(Duration::from_millis(20))
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn apply_creates_every_object_with_the_ferry_field_manager() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    let rendered = render(&app_spec()).unwrap();
    let applied = c.apply(&rendered).await.unwrap();
    assert_eq!(applied.kind, WorkloadKindRef::Deployment);
    assert_eq!(applied.name, "web");
    assert_eq!(applied.namespace, "shop");
    assert_eq!(applied.generation, 1);

    let requests = fake.requests();
    let (applies, reads): (Vec<_>, Vec<_>) = requests.iter().partition(|r| r.is_apply());
    // Every apply is preceded by the ownership check of the same object.
    let (gets, lists): (Vec<&ferry_k8s::fake::RecordedRequest>, Vec<_>) = reads
        .iter()
        .partition(|r| applies.iter().any(|a| a.path == r.path));
    assert_eq!(gets.len(), applies.len());
    assert!(gets.iter().all(|r| r.method == "GET"));
    // After the apply, the prune lists this service's Services and Secrets.
    let listed: Vec<_> = lists.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        listed,
        [
            "/api/v1/namespaces/shop/services",
            "/api/v1/namespaces/shop/secrets"
        ]
    );
    let requests = applies;
    let paths: Vec<_> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop",
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/ferry-default-deny",
            "/api/v1/namespaces/shop/resourcequotas/ferry-quota",
            "/api/v1/namespaces/shop/limitranges/ferry-limits",
            "/api/v1/namespaces/shop/secrets/web-env",
            "/api/v1/namespaces/shop/secrets/web-registry",
            "/api/v1/namespaces/shop/persistentvolumeclaims/vol-uploads",
            "/api/v1/namespaces/shop/services/web",
            "/apis/apps/v1/namespaces/shop/deployments/web",
        ]
    );
    for r in &requests {
        assert!(r.is_apply(), "{r:?}");
        assert_eq!(r.field_manager(), Some("ferry"));
        assert_eq!(r.param("force"), Some("true"));
    }
    for kind in [
        "Namespace",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Service",
        "Deployment",
    ] {
        assert_eq!(fake.objects(kind).len(), 1, "{kind}");
    }
    assert_eq!(fake.objects("Secret").len(), 2);
    let d = fake.get("Deployment", "shop", "web").unwrap();
    assert_eq!(d["metadata"]["managedFields"][0]["manager"], "ferry");

    // Same spec again: generation unchanged; new image: generation bumps.
    assert_eq!(c.apply(&rendered).await.unwrap().generation, 1);
    let mut spec = app_spec();
    spec.image = "ghcr.io/acme/web:2".into();
    assert_eq!(
        c.apply(&render(&spec).unwrap()).await.unwrap().generation,
        2
    );
}

#[tokio::test]
async fn rollout_succeeds_when_ready() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    let spec = app_spec();
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    let mut events = Vec::new();
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |e| events.push(e))
        .await
        .unwrap();
    assert_eq!(outcome, RolloutOutcome::Succeeded);
    assert!(events.contains(&RolloutEvent::Progress {
        updated: 2,
        ready: 2,
        available: 2,
        desired: 2
    }));
    // The watcher asked for this workload only.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/apis/apps/v1/namespaces/shop/deployments"
                && r.param("fieldSelector") == Some("metadata.name=web"))
    );
}

#[tokio::test]
async fn rollout_succeeds_when_readiness_arrives_through_the_watch() {
    let fake = FakeCluster::new();
    fake.set_behavior("web", Behavior::Hang);
    let c = cluster(&fake);
    let spec = app_spec();
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    let (fake2, c2) = (fake.clone(), c.clone());
    let controller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        fake2.set_behavior("web", Behavior::Ready);
        // Any write makes the simulated controller run again.
        c2.scale(
            &service_owner(&app_spec()),
            "web",
            WorkloadKindRef::Deployment,
            2,
        )
        .await
        .unwrap();
    });
    let mut events = Vec::new();
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |e| events.push(e))
        .await
        .unwrap();
    controller.await.unwrap();
    assert_eq!(outcome, RolloutOutcome::Succeeded);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.param("watch") == Some("true")
                && r.param("fieldSelector") == Some("metadata.name=web"))
    );
    let progress: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, RolloutEvent::Progress { .. }))
        .collect();
    assert_eq!(progress.len(), 2, "{events:?}");
}

#[tokio::test]
async fn database_rollout_succeeds_when_ready() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    let spec = db_spec();
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    assert_eq!(applied.kind, WorkloadKindRef::StatefulSet);
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |_| {})
        .await
        .unwrap();
    assert_eq!(outcome, RolloutOutcome::Succeeded);
}

#[tokio::test]
async fn rollout_fails_on_image_pull_back_off() {
    let fake = FakeCluster::new();
    fake.set_behavior("web", Behavior::ImagePullBackOff);
    let c = cluster(&fake);
    let spec = app_spec();
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    let mut events = Vec::new();
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |e| events.push(e))
        .await
        .unwrap();
    let RolloutOutcome::Failed { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.starts_with("ImagePullBackOff: "), "{reason}");
    assert!(reason.contains("ghcr.io/acme/web:1.2.3"), "{reason}");
    assert!(events.iter().any(
        |e| matches!(e, RolloutEvent::PodWaiting { reason, .. } if reason == "ImagePullBackOff")
    ));
    // Pods were looked up by this deployment's id.
    let selector = format!("ferry.dev/deployment-id={}", spec.deployment_id);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path == "/api/v1/namespaces/shop/pods"
                && r.param("labelSelector") == Some(selector.as_str()))
    );
}

#[tokio::test]
async fn rollout_fails_on_crash_loop() {
    let fake = FakeCluster::new();
    fake.set_default_behavior(Behavior::CrashLoop);
    let c = cluster(&fake);
    let spec = db_spec();
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |_| {})
        .await
        .unwrap();
    let RolloutOutcome::Failed { reason } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(reason.starts_with("CrashLoopBackOff"), "{reason}");
}

#[tokio::test]
async fn old_deployments_failing_pods_do_not_fail_a_new_rollout() {
    let fake = FakeCluster::new();
    fake.set_behavior("web", Behavior::CrashLoop);
    let c = cluster(&fake);
    c.apply(&render(&app_spec()).unwrap()).await.unwrap();
    // A new deployment whose pods become ready; the old crashing pod stays.
    fake.set_behavior("web", Behavior::Ready);
    let mut spec = app_spec();
    spec.deployment_id = uuid::Uuid::from_u128(99);
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    assert_eq!(fake.objects("Pod").len(), 1);
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |_| {})
        .await
        .unwrap();
    assert_eq!(outcome, RolloutOutcome::Succeeded);
}

#[tokio::test]
async fn rollout_times_out_when_hanging() {
    let fake = FakeCluster::new();
    fake.set_behavior("web", Behavior::Hang);
    let c = cluster(&fake);
    let spec = app_spec();
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    let started = std::time::Instant::now();
    let outcome = c
        .wait_rollout(
            &applied,
            spec.deployment_id,
            Duration::from_millis(300),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(outcome, RolloutOutcome::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn zero_replicas_is_done_at_once() {
    let fake = FakeCluster::new();
    fake.set_behavior("web", Behavior::Hang);
    let c = cluster(&fake);
    let mut spec = app_spec();
    spec.replicas = 0;
    let applied = c.apply(&render(&spec).unwrap()).await.unwrap();
    let outcome = c
        .wait_rollout(&applied, spec.deployment_id, TIMEOUT, |_| {})
        .await
        .unwrap();
    assert_eq!(outcome, RolloutOutcome::Succeeded);
}

#[tokio::test]
async fn scale_patches_replicas_without_ferry_apply() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    c.apply(&render(&app_spec()).unwrap()).await.unwrap();
    c.apply(&render(&db_spec()).unwrap()).await.unwrap();
    fake.clear_requests();
    c.scale(
        &service_owner(&app_spec()),
        "web",
        WorkloadKindRef::Deployment,
        5,
    )
    .await
    .unwrap();
    c.scale(
        &service_owner(&db_spec()),
        "db",
        WorkloadKindRef::StatefulSet,
        0,
    )
    .await
    .unwrap();
    // Each scale is an ownership GET, then the patch of the scale subresource.
    let requests: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .collect();
    assert_eq!(
        requests[0].path,
        "/apis/apps/v1/namespaces/shop/deployments/web/scale"
    );
    assert_eq!(
        requests[1].path,
        "/apis/apps/v1/namespaces/shop/statefulsets/db/scale"
    );
    for r in &requests {
        assert_eq!(r.method, "PATCH");
        assert!(!r.is_apply());
        assert_ne!(r.field_manager(), Some("ferry"));
    }
    let d = fake.get("Deployment", "shop", "web").unwrap();
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["status"]["readyReplicas"], 5);
    // Everything else the apply set is still there.
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "ghcr.io/acme/web:1.2.3"
    );
    assert_eq!(
        fake.get("StatefulSet", "shop", "db").unwrap()["spec"]["replicas"],
        0
    );
}

#[tokio::test]
async fn restart_stamps_the_pod_template_and_survives_the_next_apply() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    let rendered = render(&app_spec()).unwrap();
    c.apply(&rendered).await.unwrap();
    fake.clear_requests();
    c.restart(
        &service_owner(&app_spec()),
        "web",
        WorkloadKindRef::Deployment,
    )
    .await
    .unwrap();
    let requests = fake.requests();
    assert_eq!(requests[0].method, "GET", "the ownership check");
    let r = &requests[1];
    assert_eq!(r.method, "PATCH");
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(r.field_manager(), Some("ferry-restart"));
    let d = fake.get("Deployment", "shop", "web").unwrap();
    let stamp = d["spec"]["template"]["metadata"]["annotations"]["ferry.dev/restarted-at"]
        .as_str()
        .unwrap()
        .to_owned();
    chrono::DateTime::parse_from_rfc3339(&stamp).unwrap();
    assert_eq!(d["metadata"]["generation"], 2);
    let applied = c.apply(&rendered).await.unwrap();
    let d = fake.get("Deployment", "shop", "web").unwrap();
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"]["ferry.dev/restarted-at"],
        stamp.as_str()
    );
    assert_eq!(applied.generation, 2);
}

#[tokio::test]
async fn delete_service_removes_only_that_service() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    let web = app_spec();
    c.apply(&render(&web).unwrap()).await.unwrap();
    c.apply(&render(&db_spec()).unwrap()).await.unwrap();
    let mut deleted = c.delete_service("shop", web.service_id).await.unwrap();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "Deployment/web",
            "Secret/web-env",
            "Secret/web-registry",
            "Service/web",
        ]
    );
    assert!(fake.get("Deployment", "shop", "web").is_none());
    // Project volumes may be shared: they go with DeleteVolume only.
    assert!(
        fake.get("PersistentVolumeClaim", "shop", "vol-uploads")
            .is_some()
    );
    c.delete_volume_claim(&project_owner(), "uploads")
        .await
        .unwrap();
    c.delete_volume_claim(&project_owner(), "uploads")
        .await
        .unwrap();
    assert!(
        fake.get("PersistentVolumeClaim", "shop", "vol-uploads")
            .is_none()
    );
    assert!(fake.get("StatefulSet", "shop", "db").is_some());
    assert!(fake.get("Secret", "shop", "db-env").is_some());
    assert!(fake.get("Service", "shop", "db").is_some());
    assert!(
        fake.get("NetworkPolicy", "shop", "ferry-default-deny")
            .is_some()
    );
    assert!(fake.get("Namespace", "", "shop").is_some());
    // Again: nothing left, no error.
    assert!(
        c.delete_service("shop", web.service_id)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn apply_prunes_a_dropped_service_port_and_registry_secret_but_not_claims() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    let full = app_spec();
    c.apply(&render(&full).unwrap()).await.unwrap();
    c.apply(&render(&db_spec()).unwrap()).await.unwrap();
    assert!(fake.get("Service", "shop", "web").is_some());
    assert!(fake.get("Secret", "shop", "web-registry").is_some());

    let mut bare = full.clone();
    bare.ports.clear();
    bare.image_pull = None;
    c.apply(&render(&bare).unwrap()).await.unwrap();
    assert!(fake.get("Service", "shop", "web").is_none());
    assert!(fake.get("Secret", "shop", "web-registry").is_none());
    assert!(fake.get("Secret", "shop", "web-env").is_some());
    assert!(fake.get("Deployment", "shop", "web").is_some());
    assert!(
        fake.get("PersistentVolumeClaim", "shop", "vol-uploads")
            .is_some()
    );
    // Another service's objects are untouched.
    assert!(fake.get("Service", "shop", "db").is_some());
    assert!(fake.get("Secret", "shop", "db-env").is_some());
}

#[tokio::test]
async fn workload_json_and_namespace_delete() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    assert!(
        c.get_workload_json("shop", "web", WorkloadKindRef::Deployment)
            .await
            .unwrap()
            .is_none()
    );
    c.apply(&render(&app_spec()).unwrap()).await.unwrap();
    let live = c
        .get_workload_json("shop", "web", WorkloadKindRef::Deployment)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live["kind"], "Deployment");
    assert_eq!(live["status"]["availableReplicas"], 2);
    c.delete_namespace(&project_owner()).await.unwrap();
    assert!(fake.objects("Deployment").is_empty());
    assert!(fake.objects("Namespace").is_empty());
    c.delete_namespace(&project_owner()).await.unwrap();
}

#[tokio::test]
async fn from_env_without_any_config_is_none() {
    // Only meaningful where no kubeconfig exists (CI, this machine).
    if std::env::var_os("KUBECONFIG").is_some()
        || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("HOME")
            .is_some_and(|h| std::path::Path::new(&h).join(".kube/config").exists())
    {
        return;
    }
    assert!(Cluster::from_env().await.unwrap().is_none());
}

#[tokio::test]
async fn nothing_foreign_is_adopted_scaled_or_deleted() {
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    // The namespace exists, made by someone else.
    fake.insert(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "shop" },
    }));
    let err = c.apply(&render(&app_spec()).unwrap()).await.unwrap_err();
    assert!(
        matches!(&err, ferry_k8s::Error::NotOwned { kind, object, .. } if kind == "Namespace" && object == "shop"),
        "{err:?}"
    );
    assert!(fake.objects("Deployment").is_empty(), "nothing applied");
    let err = c.delete_namespace(&project_owner()).await.unwrap_err();
    assert!(matches!(err, ferry_k8s::Error::NotOwned { .. }), "{err:?}");
    assert!(fake.get("Namespace", "", "shop").is_some());

    // Another project's namespace of that name is not ours either.
    let fake = FakeCluster::new();
    let c = cluster(&fake);
    c.apply(&render(&app_spec()).unwrap()).await.unwrap();
    let stranger = Owner::project("shop", uuid::Uuid::from_u128(99));
    assert!(c.delete_namespace(&stranger).await.is_err());
    assert!(
        c.delete_volume_claim(&stranger, "uploads").await.is_err(),
        "another project's claim"
    );
    let other_service = Owner::service("shop", app_spec().project_id, uuid::Uuid::from_u128(98));
    let err = c
        .scale(&other_service, "web", WorkloadKindRef::Deployment, 0)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ferry.dev/service-id"), "{err}");
    assert!(fake.get("Namespace", "", "shop").is_some());
    assert!(
        fake.get("PersistentVolumeClaim", "shop", "vol-uploads")
            .is_some()
    );
}
