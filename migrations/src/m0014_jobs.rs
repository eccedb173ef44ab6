//! Scheduled jobs (ferry-scheduler).
//!
//! `jobs` and `job_runs` were drafted in m0007 before any code wrote them:
//! no time zone, no "image of service X", no missed-run policy, and a run
//! status list without `skipped`, `missed` or `planned` (SQLite cannot widen
//! a CHECK in place). Nothing ever wrote them, so this migration recreates
//! both; it refuses to run if either holds a row. It adds `leases`: which
//! scheduler replica runs each loop, and until when.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

/// The tables this migration drops and recreates, parents first.
pub(crate) const REPLACES: &[&str] = &["jobs", "job_runs"];

/// Run states in which a run counts against the concurrency policy.
pub const ACTIVE_RUN: &str = "status IN ('pending', 'running')";

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("jobs")
            .fk("project_id", "projects", Cascade)
            .col("name", Text)
            // NULL: runs on demand only.
            .null("schedule", Text)
            .def("timezone", Text, D::Text("UTC"))
            // Exactly one of image and service_id (the service's current
            // image and environment); a job goes with its service.
            .null("image", Text)
            .fk_null("service_id", "services", Cascade)
            .def("command", Json, D::Json("[]"))
            .def("args", Json, D::Json("[]"))
            .enum_col(
                "concurrency_policy",
                "ConcurrencyPolicy",
                &["allow", "forbid", "replace"],
                Some("forbid"),
            )
            .null("timeout_seconds", Int)
            .def("max_retries", Int, D::Int(0))
            // A missed slot runs late only within this many seconds.
            .null("starting_deadline_seconds", Int)
            .flag("enabled", true)
            // The next slot to fire, kept by the api and the scheduler: one
            // indexed range scan finds what is due.
            .null("next_run_at", Timestamp)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .format("name", Format::Slug)
            .check_sql("schedule", "length(schedule) BETWEEN 1 AND 200")
            .check_sql("timezone", "length(timezone) BETWEEN 1 AND 64")
            .check_sql(
                "target",
                "(image IS NULL AND service_id IS NOT NULL) OR (image IS NOT NULL AND service_id IS NULL)",
            )
            .check_sql(
                "timeout_seconds",
                "timeout_seconds BETWEEN 1 AND 604800",
            )
            .check_sql("max_retries", "max_retries BETWEEN 0 AND 10")
            .check_sql(
                "starting_deadline_seconds",
                "starting_deadline_seconds BETWEEN 1 AND 604800",
            )
            .unique("idx_jobs_project_name", "project_id, name")
            .index("idx_jobs_next_run_at", "next_run_at")
            .index("idx_jobs_service_id", "service_id"),
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
                    "skipped",
                    "missed",
                    "planned",
                ],
                Some("pending"),
            )
            .enum_col(
                "trigger_type",
                "JobTrigger",
                &["schedule", "manual", "api"],
                Some("manual"),
            )
            // The slot of a scheduled run: unique per job, so two replicas
            // racing on one slot create one run.
            .null("scheduled_for", Timestamp)
            .fk_null("triggered_by", "users", SetNull)
            .def("attempts", Int, D::Int(0))
            .null("k8s_job_name", Text)
            .null("logs", Text)
            .null("exit_code", Int)
            .null("reason", Text)
            // Planned runs: the Job as YAML.
            .null("rendered", Text)
            .null("started_at", Timestamp)
            .null("finished_at", Timestamp)
            .created_at()
            .unique("idx_job_runs_slot", "job_id, scheduled_for")
            .index("idx_job_runs_job_created", "job_id, created_at")
            .index("idx_job_runs_status", "status"),
        Table::new("leases")
            .col("name", Text)
            // The replica holding it (`<host>/<pid>/<random>`).
            .col("holder", Text)
            .col("expires_at", Timestamp)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .unique("idx_leases_name", "name"),
    ]
}
