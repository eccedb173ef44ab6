//! Deployments and observability: deployment history, structured deployment
//! logs, the pods/containers that run (GoForge's containers adapted to
//! Kubernetes) and their metrics.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

/// Union of GoForge's and Dokploy's deployment states.
pub(crate) const DEPLOYMENT_STATUSES: &[&str] = &[
    "pending",
    "cloning",
    "building",
    "deploying",
    "running",
    "success",
    "failed",
    "rolled_back",
    "cancelled",
    // Rendered and recorded, not applied: no cluster configured.
    "planned",
];

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("deployments")
            .fk_null("service_id", "services", Cascade)
            .fk_null("stack_id", "stacks", Cascade)
            .fk_null("triggered_by", "users", SetNull)
            .enum_col(
                "trigger_type",
                "TriggerType",
                &["manual", "webhook", "rollback", "api"],
                Some("manual"),
            )
            .enum_col(
                "status",
                "DeploymentStatus",
                DEPLOYMENT_STATUSES,
                Some("pending"),
            )
            .null("commit_sha", Text)
            .null("commit_message", Text)
            .null("commit_author", Text)
            .null("branch", Text)
            .null("image", Text)
            .fk_null("rollback_of_id", "deployments", SetNull)
            .null("error_message", Text)
            .def("k8s_artifacts", Json, D::Json("{}"))
            // The merged environment the deployment applied (JSON), so a
            // rollback restores config as well as code.
            .null("env_snapshot", Encrypted)
            .def("metadata", Json, D::Json("{}"))
            .null("started_at", Timestamp)
            .null("finished_at", Timestamp)
            .created_at()
            .check_sql(
                "target",
                "(service_id IS NOT NULL AND stack_id IS NULL) \
                 OR (service_id IS NULL AND stack_id IS NOT NULL)",
            )
            .format("commit_sha", Format::CommitSha)
            .index(
                "idx_deployments_service_created",
                "service_id, created_at DESC",
            )
            .index("idx_deployments_stack_created", "stack_id, created_at DESC")
            .index("idx_deployments_status", "status")
            .index("idx_deployments_created_at", "created_at DESC")
            .index("idx_deployments_triggered_by", "triggered_by"),
        Table::new("deployment_logs")
            .fk("deployment_id", "deployments", Cascade)
            .def("timestamp", Timestamp, D::Now)
            .enum_col(
                "level",
                "LogLevel",
                &["debug", "info", "warn", "error"],
                Some("info"),
            )
            .null("source", Text)
            .col("message", Text)
            .index("idx_deployment_logs_deployment_id", "deployment_id")
            .index(
                "idx_deployment_logs_timestamp",
                "deployment_id, \"timestamp\"",
            )
            .index("idx_deployment_logs_level", "level")
            .index("idx_deployment_logs_retention", "\"timestamp\""),
        Table::new("containers")
            .fk_null("deployment_id", "deployments", SetNull)
            .fk("service_id", "services", Cascade)
            .fk_null("node_id", "nodes", SetNull)
            .col("namespace", Text)
            .col("pod_name", Text)
            .col("pod_uid", Text)
            .col("container_name", Text)
            .col("image", Text)
            .enum_col(
                "status",
                "ContainerStatus",
                &["pending", "running", "succeeded", "failed", "unknown"],
                Some("pending"),
            )
            .def("restart_count", Int, D::Int(0))
            .def("ports", Json, D::Json("[]"))
            .def("labels", Json, D::Json("{}"))
            .null("started_at", Timestamp)
            .timestamps()
            .check_sql("restart_count", "restart_count >= 0")
            .index("idx_containers_deployment_id", "deployment_id")
            .index("idx_containers_service_id", "service_id")
            .index("idx_containers_node_id", "node_id")
            .unique("idx_containers_pod_uid", "pod_uid, container_name"),
        Table::new("container_metrics")
            .fk("container_id", "containers", Cascade)
            .def("timestamp", Timestamp, D::Now)
            .null("cpu_percent", Real)
            .null("memory_usage", BigInt)
            .null("memory_limit", BigInt)
            .null("memory_percent", Real)
            .null("network_rx", BigInt)
            .null("network_tx", BigInt)
            .null("block_read", BigInt)
            .null("block_write", BigInt)
            .check_sql("cpu_percent", "cpu_percent >= 0")
            .check_sql("memory_percent", "memory_percent BETWEEN 0 AND 100")
            .check_sql(
                "counters",
                "memory_usage >= 0 AND memory_limit > 0 AND network_rx >= 0 \
                 AND network_tx >= 0 AND block_read >= 0 AND block_write >= 0",
            )
            .index(
                "idx_container_metrics_container_timestamp",
                "container_id, \"timestamp\" DESC",
            )
            .index("idx_container_metrics_retention", "\"timestamp\""),
    ]
}
