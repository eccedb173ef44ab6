//! Infrastructure: projects (Kubernetes namespaces), mesh nodes and their
//! tokens, custom domains and their TLS certificates.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("projects")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .col("slug", Text)
            .null("description", Text)
            .fk_null("created_by", "users", SetNull)
            .def("metadata", Json, D::Json("{}"))
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .format("slug", Format::Slug)
            .unique("idx_projects_slug", "slug")
            .unique("idx_projects_org_name", "organization_id, name")
            .index("idx_projects_created_by", "created_by"),
        Table::new("nodes")
            .fk_null("organization_id", "organizations", Cascade)
            .col("name", Text)
            .null("hostname", Text)
            .enum_col("role", "NodeRole", &["server", "agent"], Some("agent"))
            .enum_col(
                "status",
                "NodeStatus",
                &[
                    "pending",
                    "provisioning",
                    "online",
                    "offline",
                    "draining",
                    "failed",
                ],
                Some("pending"),
            )
            .null("mesh_ip", Inet)
            .null("public_ip", Inet)
            .null("headscale_node_id", Text)
            .null("k3s_version", Text)
            .null("os", Text)
            .enum_null("arch", "NodeArch", &["amd64", "arm64"])
            .null("cpu_cores", Int)
            .null("memory_bytes", BigInt)
            .def("labels", Json, D::Json("{}"))
            .null("ssh_user", Text)
            .null("ssh_port", Int)
            .null("ssh_private_key", Encrypted)
            .null("last_seen_at", Timestamp)
            .timestamps()
            .format("name", Format::Slug)
            .format("mesh_ip", Format::Ip)
            .format("public_ip", Format::Ip)
            .check_sql("cpu_cores", "cpu_cores > 0")
            .check_sql("memory_bytes", "memory_bytes > 0")
            .check_sql("ssh_port", "ssh_port BETWEEN 1 AND 65535")
            .unique("idx_nodes_name", "name")
            .index("idx_nodes_organization_id", "organization_id")
            .index("idx_nodes_status", "status"),
        Table::new("node_registration_tokens")
            .fk_null("organization_id", "organizations", Cascade)
            .col("token_hash", Text)
            .null("description", Text)
            .fk_null("created_by", "users", SetNull)
            .def("use_count", Int, D::Int(0))
            .null("expires_at", Timestamp)
            .null("last_used_at", Timestamp)
            .null("revoked_at", Timestamp)
            .created_at()
            .format("token_hash", Format::Sha256Hex)
            .check_sql("use_count", "use_count >= 0")
            .unique("idx_node_registration_tokens_token_hash", "token_hash"),
        Table::new("node_provisioning_tokens")
            .fk_null("organization_id", "organizations", Cascade)
            .fk_null("node_id", "nodes", Cascade)
            .col("token_hash", Text)
            .fk_null("created_by", "users", SetNull)
            .col("expires_at", Timestamp)
            .null("used_at", Timestamp)
            .created_at()
            .format("token_hash", Format::Sha256Hex)
            .unique("idx_node_provisioning_tokens_token_hash", "token_hash")
            .index("idx_node_provisioning_tokens_node_id", "node_id"),
        Table::new("domains")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .null("verification_token", Text)
            .null("verified_at", Timestamp)
            .flag("tls_enabled", true)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .null("deleted_at", Timestamp)
            .format("name", Format::Hostname)
            // Names are lower-case (CHECK), so a plain column is case-insensitive.
            .unique_where(
                "idx_unique_domain_per_org",
                "organization_id, name",
                "deleted_at IS NULL",
            )
            .index("idx_domains_name", "name"),
        Table::new("certificates")
            .fk("domain_id", "domains", Cascade)
            .col("issuer", Text)
            .col("certificate_pem", Text)
            .col("private_key", Encrypted)
            .null("not_before", Timestamp)
            .col("expires_at", Timestamp)
            .created_at()
            .check_sql("validity", "not_before IS NULL OR not_before < expires_at")
            .index("idx_certificates_domain_id", "domain_id")
            .index("idx_certificates_expires_at", "expires_at"),
    ]
}
