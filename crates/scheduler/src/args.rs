//! `ferry-scheduler` configuration: every flag also reads an environment
//! variable; secrets never show their values in `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_common::{CommonArgs, DatabaseArgs, EncryptionArgs};

/// Command-line and environment configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ferry-scheduler",
    version,
    about = "Ferry scheduler: retention cleanup, backups and other periodic jobs"
)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, env = "FERRY_SCHEDULER_LISTEN", default_value = "0.0.0.0:50053")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub encryption: EncryptionArgs,

    /// Seconds between retention cleanup runs (the first runs at start-up).
    #[arg(
        long,
        env = "FERRY_SCHEDULER_RETENTION_INTERVAL_SECS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub retention_interval_secs: u64,

    /// Days audit log entries are kept.
    #[arg(
        long,
        env = "FERRY_AUDIT_RETENTION_DAYS",
        default_value_t = 365,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub audit_retention_days: u32,

    /// Seconds to wait at start-up for ferry-api to migrate the database
    /// before giving up (0: check once).
    #[arg(long, env = "FERRY_SCHEDULER_SCHEMA_WAIT_SECS", default_value_t = 60)]
    pub schema_wait_secs: u64,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Args {
    /// Time between retention runs.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval_secs)
    }

    /// How long to wait for the schema.
    pub fn schema_wait(&self) -> Duration {
        Duration::from_secs(self.schema_wait_secs)
    }
}
