//! Cluster status sync (ferry-scheduler).
//!
//! `containers` was drafted in m0006 from GoForge's Docker containers and
//! never written: it had no readiness, node name, waiting or termination
//! reason, and no way to keep a pod that went away for its metrics. This
//! migration recreates it (it refuses to run if the table holds a row);
//! `container_metrics` keeps its shape and its reference.
//!
//! `service_health` holds what the cluster last said about each service's
//! workload, separate from `services.status` (the deploy lifecycle Ferry
//! drives): ready against desired replicas, a state in words, and when the
//! scheduler saw the change and wrote it (the sync lag).
//!
//! `cluster_facts` holds small facts the scheduler learns about the
//! cluster for the api to show (e.g. whether metrics.k8s.io is served).

use crate::schema::{ColumnDefault as D, OnDelete::*, Table, Ty::*};

/// The tables this migration drops and recreates.
pub(crate) const REPLACES: &[&str] = &["containers"];

/// Health states, in the order the api documents them.
pub const HEALTH_STATES: &[&str] = &[
    "running",
    "degraded",
    "crash_looping",
    "pending",
    "stopped",
    "failed",
    "missing",
];

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("containers")
            .fk_null("deployment_id", "deployments", SetNull)
            .fk("service_id", "services", Cascade)
            .fk_null("node_id", "nodes", SetNull)
            .col("namespace", Text)
            .col("pod_name", Text)
            .col("pod_uid", Text)
            .col("container_name", Text)
            .col("image", Text)
            // The Kubernetes node the pod is bound to (not a Ferry node).
            .null("node_name", Text)
            .enum_col(
                "status",
                "ContainerStatus",
                &["waiting", "running", "terminated", "unknown"],
                Some("waiting"),
            )
            .flag("ready", false)
            .def("restart_count", Int, D::Int(0))
            // Why it waits or ended (CrashLoopBackOff, ImagePullBackOff,
            // Completed, ...) and the kubelet's message.
            .null("reason", Text)
            .null("message", Text)
            .null("last_termination_reason", Text)
            .null("last_exit_code", Int)
            .null("last_terminated_at", Timestamp)
            .def("ports", Json, D::Json("[]"))
            .def("labels", Json, D::Json("{}"))
            .null("started_at", Timestamp)
            // The pod is gone; the row stays for its metrics until
            // retention removes it.
            .null("removed_at", Timestamp)
            .timestamps()
            .check_sql("restart_count", "restart_count >= 0")
            .check_sql("reason", "reason IS NULL OR length(reason) <= 256")
            .check_sql("message", "message IS NULL OR length(message) <= 2048")
            .index("idx_containers_deployment_id", "deployment_id")
            .index("idx_containers_service_id", "service_id, removed_at")
            .index("idx_containers_node_id", "node_id")
            .index("idx_containers_removed_at", "removed_at")
            .unique("idx_containers_pod_uid", "pod_uid, container_name"),
        Table::new("service_health")
            .fk("service_id", "services", Cascade)
            .enum_col("state", "HealthState", HEALTH_STATES, Some("pending"))
            .def("desired_replicas", Int, D::Int(0))
            .def("ready_replicas", Int, D::Int(0))
            .def("restarts", Int, D::Int(0))
            .null("reason", Text)
            .null("message", Text)
            // When the watch event that led to this row arrived, and the
            // milliseconds from then until the row was written.
            .col("observed_at", Timestamp)
            .def("lag_ms", BigInt, D::Int(0))
            // When `state` last changed.
            .col("state_since", Timestamp)
            .timestamps()
            .check_sql(
                "replicas",
                "desired_replicas >= 0 AND ready_replicas >= 0 AND restarts >= 0 AND lag_ms >= 0",
            )
            .check_sql("reason", "reason IS NULL OR length(reason) <= 256")
            .check_sql("message", "message IS NULL OR length(message) <= 2048")
            .unique("idx_service_health_service_id", "service_id"),
        Table::new("cluster_facts")
            .col("name", Text)
            .col("value", Json)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 64")
            .unique("idx_cluster_facts_name", "name"),
    ]
}
