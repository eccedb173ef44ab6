//! Git sources and builds (ferry-builder).
//!
//! `git_integrations` and `build_configs` were drafted in m0004/m0005 before
//! any code wrote them, with provider and builder lists that no longer fit
//! (no Forgejo, no Railpack, no `auto`), and SQLite cannot widen a CHECK in
//! place. Nothing ever wrote them, so this migration recreates both in their
//! real shape; it refuses to run if either holds a row. It adds the record
//! of every push received (`webhook_deliveries`) and of every build
//! (`builds`, one per deployment it produces).

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

/// The tables this migration drops and recreates, parents first.
pub(crate) const REPLACES: &[&str] = &["git_integrations", "build_configs"];

/// Build states in which a build holds its service's slot.
pub const ACTIVE_BUILD: &str = "status IN ('queued', 'cloning', 'building')";

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("git_integrations")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .enum_col(
                "provider",
                "GitProvider",
                &["github", "gitlab", "gitea", "forgejo", "bitbucket", "generic"],
                None,
            )
            .enum_col(
                "auth_type",
                "GitAuthType",
                &["token", "github_app", "ssh_key"],
                None,
            )
            // Self-hosted servers; NULL for github.com and bitbucket.org.
            .null("base_url", Text)
            .null("access_token", Encrypted)
            // GitHub App (manifest flow).
            .null("app_id", BigInt)
            .null("installation_id", BigInt)
            .null("private_key", Encrypted)
            // Generic: a generated ed25519 deploy key.
            .null("ssh_private_key", Encrypted)
            .null("ssh_public_key", Text)
            // known_hosts lines of the server: build Jobs check the host
            // key strictly.
            .null("ssh_known_hosts", Text)
            // Never empty: HMAC key (or GitLab's shared token) for push hooks.
            .col("webhook_secret", Encrypted)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .check_sql(
                "ssh",
                "auth_type <> 'ssh_key' OR (ssh_private_key IS NOT NULL AND ssh_public_key IS NOT NULL)",
            )
            .check_sql("token", "auth_type <> 'token' OR access_token IS NOT NULL")
            .check_sql(
                "app",
                "auth_type <> 'github_app' OR (app_id IS NOT NULL AND private_key IS NOT NULL)",
            )
            .unique("idx_git_integrations_org_name", "organization_id, name"),
        Table::new("build_configs")
            .fk("service_id", "services", Cascade)
            .fk_null("git_integration_id", "git_integrations", SetNull)
            // owner/name on hosted providers, the clone URL for generic ones.
            .col("repository", Text)
            .def("branch", Text, D::Text("main"))
            .def("root_dir", Text, D::Text(""))
            .enum_col(
                "build_type",
                "BuildType",
                &["auto", "dockerfile", "railpack", "buildpacks", "static"],
                Some("auto"),
            )
            .def("dockerfile_path", Text, D::Text("Dockerfile"))
            .null("dockerfile_target", Text)
            // Plain build args: {"NAME": "value"}.
            .def("build_args", Json, D::Json("{}"))
            // Secret build args: the JSON object, encrypted.
            .null("secret_build_args", Encrypted)
            .def("watch_paths", Json, D::Json("[]"))
            .flag("auto_deploy", true)
            .timestamps()
            .check_sql("repository", "length(repository) BETWEEN 1 AND 2048")
            .check_sql("branch", "length(branch) BETWEEN 1 AND 255")
            .unique("idx_build_configs_service_id", "service_id"),
        Table::new("builds")
            .fk("organization_id", "organizations", Cascade)
            .fk("service_id", "services", Cascade)
            .fk("deployment_id", "deployments", Cascade)
            .enum_col(
                "status",
                "BuildStatus",
                &[
                    "queued",
                    "cloning",
                    "building",
                    "succeeded",
                    "failed",
                    "cancelled",
                    "timed_out",
                    "skipped",
                    "planned",
                ],
                Some("queued"),
            )
            .enum_col(
                "trigger_type",
                "TriggerType",
                &["manual", "webhook", "rollback", "api"],
                None,
            )
            .col("branch", Text)
            .null("commit_sha", Text)
            // The pushed-from commit of a webhook build: watch paths diff
            // before..commit_sha.
            .null("before_sha", Text)
            .null("image", Text)
            .null("job_name", Text)
            .null("failed_step", Text)
            .null("error_message", Text)
            // What `auto` detected and why, and the rendered Job.
            .def("detection", Json, D::Json("[]"))
            .fk_null("triggered_by", "users", SetNull)
            // Which api replica dispatches the build, and until when.
            .null("lease_owner", Text)
            .null("lease_expires_at", Timestamp)
            .created_at()
            .null("started_at", Timestamp)
            .null("finished_at", Timestamp)
            .format("commit_sha", Format::CommitSha)
            .format("before_sha", Format::CommitSha)
            .index("idx_builds_service_created", "service_id, created_at")
            .index("idx_builds_status", "status")
            // A newer push cancels the older build in the same transaction.
            .unique_where("idx_builds_one_active", "service_id", ACTIVE_BUILD)
            .unique("idx_builds_deployment_id", "deployment_id"),
        Table::new("webhook_deliveries")
            .fk("organization_id", "organizations", Cascade)
            .fk("git_integration_id", "git_integrations", Cascade)
            // One row per service the push concerned; NULL: it matched none.
            .fk_null("service_id", "services", Cascade)
            .col("delivery_id", Text)
            .col("event", Text)
            .null("repository", Text)
            .null("branch", Text)
            .null("before_sha", Text)
            .null("after_sha", Text)
            .enum_col(
                "status",
                "WebhookDeliveryStatus",
                &["received", "ignored", "queued", "failed"],
                None,
            )
            .null("reason", Text)
            .fk_null("build_id", "builds", SetNull)
            .created_at()
            .check_sql("delivery_id", "length(delivery_id) BETWEEN 1 AND 200")
            .index("idx_webhook_deliveries_service", "service_id, created_at")
            // A redelivered push is recognised by its delivery id.
            .unique(
                "idx_webhook_deliveries_once",
                "git_integration_id, delivery_id, service_id",
            )
            .unique_where(
                "idx_webhook_deliveries_unmatched_once",
                "git_integration_id, delivery_id",
                "service_id IS NULL",
            ),
    ]
}
