//! Organisation-scoped integrations: object storage, container registries,
//! git providers, notification channels and SMTP.

use crate::schema::{ColumnDefault as D, Format, OnDelete::*, Table, Ty::*};

pub(crate) fn tables() -> Vec<Table> {
    vec![
        Table::new("storage_integrations")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .enum_col(
                "provider",
                "StorageProvider",
                &["s3", "r2", "minio", "b2", "wasabi", "spaces", "other"],
                Some("s3"),
            )
            .null("endpoint", Text)
            .null("region", Text)
            .col("bucket", Text)
            .null("path_prefix", Text)
            .col("access_key_id", Encrypted)
            .col("secret_access_key", Encrypted)
            .flag("force_path_style", false)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .unique("idx_storage_integrations_org_name", "organization_id, name"),
        Table::new("registry_integrations")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .enum_col(
                "provider",
                "RegistryProvider",
                &[
                    "docker_hub",
                    "ghcr",
                    "gitlab",
                    "ecr",
                    "gcr",
                    "acr",
                    "harbor",
                    "generic",
                ],
                Some("generic"),
            )
            .col("url", Text)
            .null("username", Text)
            .null("password", Encrypted)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .unique(
                "idx_registry_integrations_org_name",
                "organization_id, name",
            ),
        Table::new("git_integrations")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .enum_col(
                "provider",
                "GitProvider",
                &["github", "gitlab", "gitea", "bitbucket", "ssh"],
                None,
            )
            .enum_col(
                "auth_type",
                "GitAuthType",
                &["github_app", "oauth", "token", "ssh_key"],
                None,
            )
            .null("api_url", Text)
            .null("app_id", BigInt)
            .null("installation_id", BigInt)
            .null("client_id", Text)
            .null("client_secret", Encrypted)
            .null("private_key", Encrypted)
            .null("access_token", Encrypted)
            .null("refresh_token", Encrypted)
            .null("token_expires_at", Timestamp)
            .null("ssh_private_key", Encrypted)
            .null("webhook_secret", Encrypted)
            .flag("is_default", false)
            .fk_null("created_by", "users", SetNull)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .check_sql(
                "ssh",
                "auth_type <> 'ssh_key' OR ssh_private_key IS NOT NULL",
            )
            .unique("idx_git_integrations_org_name", "organization_id, name"),
        Table::new("notification_channels")
            .fk("organization_id", "organizations", Cascade)
            .col("name", Text)
            .enum_col(
                "kind",
                "NotificationKind",
                &["slack", "discord", "webhook", "email"],
                None,
            )
            .def("config", Json, D::Json("{}"))
            .null("webhook_url", Encrypted)
            .null("signing_secret", Encrypted)
            .def("events", Json, D::Json("[]"))
            .flag("enabled", true)
            .timestamps()
            .check_sql("name", "length(name) BETWEEN 1 AND 100")
            .unique(
                "idx_notification_channels_org_name",
                "organization_id, name",
            ),
        Table::new("org_email_configs")
            .fk("organization_id", "organizations", Cascade)
            .col("smtp_host", Text)
            .def("smtp_port", Int, D::Int(587))
            .null("username", Text)
            .null("password", Encrypted)
            .col("from_address", Text)
            .null("from_name", Text)
            .enum_col(
                "tls_mode",
                "SmtpTlsMode",
                &["none", "starttls", "tls"],
                Some("starttls"),
            )
            .flag("enabled", true)
            .timestamps()
            .check_sql("smtp_port", "smtp_port BETWEEN 1 AND 65535")
            .format("from_address", Format::Email)
            .unique("idx_org_email_configs_organization_id", "organization_id"),
    ]
}
