//! Access grants on individual resources and the audit trail. Last, because
//! grants reference projects, services, stacks and jobs.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

/// Resource types an audit entry can be about.
pub(crate) const AUDIT_RESOURCE_TYPES: &[&str] = &[
    "user",
    "session",
    "organization",
    "member",
    "invitation",
    "api_token",
    "project",
    "node",
    "domain",
    "certificate",
    "integration",
    "notification_channel",
    "stack",
    "service",
    "volume",
    "variable_group",
    "route",
    "deployment",
    "job",
    "backup",
    "template",
    "system",
];

/// Exactly the FK column that matches `resource_type` is set.
fn one_target() -> String {
    const TARGETS: [(&str, &str); 4] = [
        ("project", "project_id"),
        ("service", "service_id"),
        ("stack", "stack_id"),
        ("job", "job_id"),
    ];
    TARGETS
        .iter()
        .map(|(kind, col)| {
            let others: Vec<String> = TARGETS
                .iter()
                .filter(|(_, c)| c != col)
                .map(|(_, c)| format!("{c} IS NULL"))
                .collect();
            format!(
                "(resource_type = '{kind}' AND {col} IS NOT NULL AND {})",
                others.join(" AND ")
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("resource_permissions")
            .fk("organization_id", "organizations", Cascade)
            .fk("user_id", "users", Cascade)
            .enum_col(
                "resource_type",
                "ResourceType",
                &["project", "service", "stack", "job"],
                None,
            )
            .fk_null("project_id", "projects", Cascade)
            .fk_null("service_id", "services", Cascade)
            .fk_null("stack_id", "stacks", Cascade)
            .fk_null("job_id", "jobs", Cascade)
            .enum_col(
                "permission",
                "ResourceAccess",
                &["view", "deploy", "manage"],
                Some("view"),
            )
            .fk_null("granted_by", "users", SetNull)
            .created_at()
            .check_sql("target", one_target())
            .unique(
                "idx_resource_permissions_user_resource",
                "user_id, resource_type, coalesce(project_id, service_id, stack_id, job_id)",
            )
            .index(
                "idx_resource_permissions_organization_id",
                "organization_id",
            )
            .index("idx_resource_permissions_project_id", "project_id")
            .index("idx_resource_permissions_service_id", "service_id")
            .index("idx_resource_permissions_stack_id", "stack_id")
            .index("idx_resource_permissions_job_id", "job_id"),
        Table::new("audit_logs")
            .fk_null("organization_id", "organizations", SetNull)
            .fk_null("user_id", "users", SetNull)
            .col("action", Text)
            .enum_col(
                "resource_type",
                "AuditResourceType",
                AUDIT_RESOURCE_TYPES,
                None,
            )
            .null("resource_id", Uuid)
            .def("details", Json, D::Json("{}"))
            .null("ip_address", Inet)
            .null("user_agent", Text)
            .created_at()
            .null("prev_hash", Text)
            .null("hash", Text)
            .check_sql("action", "length(action) BETWEEN 1 AND 100")
            .format("ip_address", Format::Ip)
            .format("prev_hash", Format::Sha256Hex)
            .format("hash", Format::Sha256Hex)
            .index("idx_audit_logs_user_id", "user_id, created_at DESC")
            .index(
                "idx_audit_logs_organization_id",
                "organization_id, created_at DESC",
            )
            .index("idx_audit_logs_resource", "resource_type, resource_id")
            .index("idx_audit_logs_action", "action")
            .index("idx_audit_logs_created_at", "created_at DESC"),
    ]
}
