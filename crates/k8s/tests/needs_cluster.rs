//! The `needs-cluster` tier: runs against a real Kubernetes API only when a
//! kubeconfig (or in-cluster config) is present, and says it skipped
//! otherwise. `cargo nextest run -p ferry-k8s -E 'test(needs_cluster)'`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use ferry_k8s::{Cluster, RolloutOutcome, render};

#[tokio::test]
async fn needs_cluster_apply_roll_out_and_delete() {
    let Some(cluster) = Cluster::from_env().await.unwrap() else {
        eprintln!("needs-cluster: skipped (no KUBECONFIG, ~/.kube/config or in-cluster config)");
        return;
    };
    let mut spec = common::app_spec();
    spec.namespace = format!(
        "ferry-e2e-{}",
        &uuid::Uuid::now_v7().simple().to_string()[..12]
    );
    // A small public image that serves HTTP on 8080 as a non-root user.
    spec.image = "registry.k8s.io/e2e-test-images/agnhost:2.52".into();
    spec.command = vec![];
    spec.args = vec!["netexec".into(), "--http-port=8080".into()];
    spec.replicas = 1;
    spec.image_pull = None;
    spec.volumes.clear();
    spec.mounts.clear();
    spec.health_check = Some(ferry_k8s::spec::HealthCheck {
        path: Some("/".into()),
        port: 8080,
        interval_seconds: 5,
    });
    let rendered = render(&spec).unwrap();
    let applied = cluster.apply(&rendered).await.unwrap();
    let outcome = cluster
        .wait_rollout(
            &applied,
            spec.deployment_id,
            Duration::from_secs(180),
            |e| eprintln!("{e:?}"),
        )
        .await;
    let cleanup = cluster
        .delete_namespace(&ferry_k8s::Owner::project(&spec.namespace, spec.project_id))
        .await;
    assert_eq!(outcome.unwrap(), RolloutOutcome::Succeeded);
    cleanup.unwrap();
}
