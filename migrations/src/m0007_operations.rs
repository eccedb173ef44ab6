//! Operations: jobs and their runs, backups (database, volume and system
//! configs plus run records) and 1-click templates.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("jobs")
            .fk("project_id", "projects", Cascade)
            .col("name", Text)
            .col("image", Text)
            .null("command", Json)
            .null("schedule", Text)
            .enum_col(
                "concurrency_policy",
                "ConcurrencyPolicy",
                &["allow", "forbid", "replace"],
                Some("forbid"),
            )
            .null("timeout_seconds", Int)
            .def("max_retries", Int, D::Int(0))
            .flag("enabled", true)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .format("name", Format::Slug)
            .check_sql("timeout_seconds", "timeout_seconds > 0")
            .check_sql("max_retries", "max_retries BETWEEN 0 AND 100")
            .unique("idx_jobs_project_name", "project_id, name"),
        Table::new("job_runs")
            .fk("job_id", "jobs", Cascade)
            .enum_col(
                "status",
                "JobRunStatus",
                &[
                    "pending",
                    "running",
                    "succeeded",
                    "failed",
                    "cancelled",
                    "timed_out",
                ],
                Some("pending"),
            )
            .enum_col(
                "trigger_type",
                "JobTrigger",
                &["schedule", "manual", "api"],
                Some("manual"),
            )
            .fk_null("triggered_by", "users", SetNull)
            .null("logs", Text)
            .null("exit_code", Int)
            .null("started_at", Timestamp)
            .null("finished_at", Timestamp)
            .created_at()
            .index("idx_job_runs_job_created", "job_id, created_at DESC")
            .index("idx_job_runs_status", "status"),
        Table::new("backup_configs")
            .fk("service_id", "services", Cascade)
            .fk_null("storage_integration_id", "storage_integrations", SetNull)
            .col("schedule", Text)
            .def("retention_count", Int, D::Int(7))
            .null("path_prefix", Text)
            .flag("enabled", true)
            .null("last_run_at", Timestamp)
            .timestamps()
            .check_sql("retention_count", "retention_count > 0")
            .index("idx_backup_configs_service_id", "service_id")
            .index(
                "idx_backup_configs_storage_integration_id",
                "storage_integration_id",
            ),
        Table::new("volume_backup_configs")
            .fk("volume_id", "volumes", Cascade)
            .fk_null("storage_integration_id", "storage_integrations", SetNull)
            .col("schedule", Text)
            .def("retention_count", Int, D::Int(7))
            .flag("enabled", true)
            .null("last_run_at", Timestamp)
            .timestamps()
            .check_sql("retention_count", "retention_count > 0")
            .index("idx_volume_backup_configs_volume_id", "volume_id"),
        Table::new("system_backup_configs")
            .fk("organization_id", "organizations", Cascade)
            .fk_null("storage_integration_id", "storage_integrations", SetNull)
            .col("schedule", Text)
            .def("retention_count", Int, D::Int(7))
            .flag("enabled", true)
            .null("last_run_at", Timestamp)
            .timestamps()
            .check_sql("retention_count", "retention_count > 0")
            .unique(
                "idx_system_backup_configs_organization_id",
                "organization_id",
            ),
        Table::new("backup_runs")
            .fk_null("backup_config_id", "backup_configs", Cascade)
            .fk_null("volume_backup_config_id", "volume_backup_configs", Cascade)
            .fk_null("system_backup_config_id", "system_backup_configs", Cascade)
            .enum_col(
                "backup_type",
                "BackupType",
                &["full", "incremental", "snapshot"],
                Some("full"),
            )
            .enum_col(
                "status",
                "BackupStatus",
                &["pending", "running", "success", "failed"],
                Some("pending"),
            )
            .null("storage_path", Text)
            .null("size_bytes", BigInt)
            .null("error_message", Text)
            .null("started_at", Timestamp)
            .null("completed_at", Timestamp)
            .created_at()
            .check_sql(
                "source",
                "(CASE WHEN backup_config_id IS NULL THEN 0 ELSE 1 END) \
                 + (CASE WHEN volume_backup_config_id IS NULL THEN 0 ELSE 1 END) \
                 + (CASE WHEN system_backup_config_id IS NULL THEN 0 ELSE 1 END) = 1",
            )
            .check_sql("size_bytes", "size_bytes >= 0")
            .index(
                "idx_backup_runs_config_created",
                "backup_config_id, created_at DESC",
            )
            .index(
                "idx_backup_runs_volume_config_id",
                "volume_backup_config_id",
            )
            .index(
                "idx_backup_runs_system_config_id",
                "system_backup_config_id",
            )
            .index("idx_backup_runs_status", "status"),
        Table::new("templates")
            .fk_null("organization_id", "organizations", Cascade)
            .col("slug", Text)
            .col("name", Text)
            .col("description", Text)
            .col("category", Text)
            .null("icon_url", Text)
            .flag("is_official", false)
            .col("spec", Json)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .format("slug", Format::Slug)
            .check_sql(
                "official",
                "(is_official AND organization_id IS NULL) \
                 OR (NOT is_official AND organization_id IS NOT NULL)",
            )
            .unique_where(
                "idx_templates_official_slug",
                "slug",
                "organization_id IS NULL",
            )
            .unique_where(
                "idx_templates_org_slug",
                "organization_id, slug",
                "organization_id IS NOT NULL",
            ),
    ]
}
