//! Flags shared by every binary; each service flattens [`CommonArgs`] into
//! its own clap config. Every flag also reads an environment variable.

use std::time::Duration;

use crate::telemetry::LogFormat;

/// Logging and shutdown settings common to all services.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Log output format.
    #[arg(long, env = "FERRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` EnvFilter syntax (e.g. `info,ferry_api=debug`).
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, env = "FERRY_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

impl CommonArgs {
    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}

/// Database connection flags (api and scheduler). Parsed and validated by
/// `ferry_db::connect::ConnectConfig`, so the rules live in one place.
#[derive(Clone, Default, clap::Args)]
pub struct DatabaseArgs {
    /// Database URL: `postgres://user:pass@host/db` or `sqlite://path/ferry.db?mode=rwc`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, global = true)]
    pub database_url: Option<String>,

    /// Maximum connections in the pool (driver default when unset).
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true)]
    pub database_pool_size: Option<String>,

    /// Require TLS to PostgreSQL: true/1/require or false/0/disable.
    #[arg(long, env = "DATABASE_SSL", global = true)]
    pub database_ssl: Option<String>,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_ref().map(|_| "[redacted]"),
            )
            .field("database_pool_size", &self.database_pool_size)
            .field("database_ssl", &self.database_ssl)
            .finish()
    }
}

/// Encryption key flags (api and scheduler).
#[derive(Clone, Default, clap::Args)]
pub struct EncryptionArgs {
    /// The 32-byte key for encrypted columns: 64 hex characters, base64, or
    /// 32 raw characters. Generate one with `openssl rand -hex 32`.
    #[arg(long, env = "ENCRYPTION_KEY", hide_env_values = true, global = true)]
    pub encryption_key: Option<String>,

    /// Older keys still accepted for reading (comma-separated), during rotation.
    #[arg(
        long,
        env = "ENCRYPTION_KEY_PREVIOUS",
        hide_env_values = true,
        global = true
    )]
    pub encryption_key_previous: Option<String>,
}

impl std::fmt::Debug for EncryptionArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "[redacted]" } else { "[unset]" };
        f.debug_struct("EncryptionArgs")
            .field("encryption_key", &set(&self.encryption_key))
            .field(
                "encryption_key_previous",
                &set(&self.encryption_key_previous),
            )
            .finish()
    }
}

#[cfg(feature = "db")]
impl DatabaseArgs {
    /// The validated connection settings; errors name the offending variable.
    pub fn connect_config(&self) -> ferry_db::Result<ferry_db::connect::ConnectConfig> {
        use ferry_db::connect::{ConnectConfig, ENV_POOL_SIZE, ENV_SSL, ENV_URL};
        ConnectConfig::from_lookup(|name| match name {
            ENV_URL => self.database_url.clone(),
            ENV_POOL_SIZE => self.database_pool_size.clone(),
            ENV_SSL => self.database_ssl.clone(),
            _ => None,
        })
    }
}

#[cfg(feature = "db")]
impl EncryptionArgs {
    /// The keyring; a missing or malformed key is an error that names
    /// `ENCRYPTION_KEY` and says how to generate one.
    pub fn keyring(&self) -> ferry_db::Result<ferry_db::crypto::Keyring> {
        use ferry_db::crypto::{ENV_KEY, ENV_KEY_PREVIOUS, Keyring};
        Keyring::from_lookup(|name| match name {
            ENV_KEY => self.encryption_key.clone(),
            ENV_KEY_PREVIOUS => self.encryption_key_previous.clone(),
            _ => None,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn flags_parse_and_bad_values_are_rejected() {
        let cli = Cli::try_parse_from([
            "x",
            "--log-format",
            "json",
            "--shutdown-grace-secs",
            "3",
            "--log-filter",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.common.log_format, LogFormat::Json);
        assert_eq!(cli.common.shutdown_grace(), Duration::from_secs(3));
        assert_eq!(cli.common.log_filter, "debug");
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let db = DatabaseArgs {
            database_url: Some("postgres://u:hunter2@h/db".into()),
            ..DatabaseArgs::default()
        };
        let keys = EncryptionArgs {
            encryption_key: Some("k".repeat(64)),
            encryption_key_previous: None,
        };
        let out = format!("{db:?} {keys:?}");
        assert!(!out.contains("hunter2") && !out.contains("kkkk"), "{out}");
        assert!(out.contains("[unset]"), "{out}");
    }

    #[cfg(feature = "db")]
    #[test]
    fn db_and_key_args_validate_through_ferry_db() {
        let keys = EncryptionArgs::default();
        let err = keys.keyring().unwrap_err().to_string();
        assert!(err.contains("ENCRYPTION_KEY"), "{err}");
        let keys = EncryptionArgs {
            encryption_key: Some("ab".repeat(32)),
            encryption_key_previous: Some("cd".repeat(32)),
        };
        keys.keyring().unwrap();
        let err = DatabaseArgs::default()
            .connect_config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
        let db = DatabaseArgs {
            database_url: Some("sqlite://x.db".into()),
            database_pool_size: Some("3".into()),
            database_ssl: None,
        };
        assert_eq!(db.connect_config().unwrap().pool_size, Some(3));
    }
}
