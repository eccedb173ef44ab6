//! The registry of encrypted columns: every column whose entity type is
//! [`crate::crypto::Encrypted`]. Key rotation walks this list, and the schema
//! test checks it against the migrations in both directions (every listed
//! column exists, every `Encrypted` column is listed).

/// One encrypted column. Its table has a UUID primary key named `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptedColumn {
    pub table: &'static str,
    pub column: &'static str,
}

const fn col(table: &'static str, column: &'static str) -> EncryptedColumn {
    EncryptedColumn { table, column }
}

/// Every encrypted column, grouped by what it protects.
pub const ENCRYPTED_COLUMNS: &[EncryptedColumn] = &[
    // 2FA
    col("users", "totp_secret"),
    // audit retention checkpoints (sealed, not secret)
    col("audit_checkpoints", "seal"),
    // SSH keys
    col("nodes", "ssh_private_key"),
    col("git_integrations", "ssh_private_key"),
    // certificate private keys
    col("certificates", "private_key"),
    // the ACME account key (m0018)
    col("acme_accounts", "credentials"),
    // storage keys
    col("storage_integrations", "access_key_id"),
    col("storage_integrations", "secret_access_key"),
    // registry credentials
    col("registry_integrations", "password"),
    // git tokens and app credentials
    col("git_integrations", "private_key"),
    col("git_integrations", "access_token"),
    col("git_integrations", "webhook_secret"),
    // secret build args
    col("build_configs", "secret_build_args"),
    // notification webhooks and SMTP passwords
    col("notification_channels", "webhook_url"),
    col("notification_channels", "signing_secret"),
    col("org_email_configs", "password"),
    // generated database passwords and connection strings
    col("database_configs", "password"),
    col("database_configs", "connection_string"),
    // secret environment values
    col("service_env_vars", "value_encrypted"),
    col("variable_group_items", "value_encrypted"),
    // the environment a deployment applied (for rollbacks)
    col("deployments", "env_snapshot"),
];
