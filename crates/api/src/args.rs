//! `ferry-api` configuration and subcommands. Every flag also reads an
//! environment variable; secrets never show their values in `--help`.

use std::net::SocketAddr;

use ferry_common::{CommonArgs, DatabaseArgs, EncryptionArgs};

/// Command-line and environment configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ferry-api",
    version,
    about = "Ferry api: control-plane gRPC API (migrates the database on start)"
)]
pub struct Args {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// gRPC listen address.
    #[arg(
        long,
        env = "FERRY_API_LISTEN",
        default_value = "0.0.0.0:50051",
        global = true
    )]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub encryption: EncryptionArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

/// `ferry-api` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Migrate the database, then serve gRPC (the default).
    Serve,
    /// Manage database migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Insert the RBAC catalogue and official templates (idempotent).
    Seed,
    /// Re-encrypt every encrypted column under the current ENCRYPTION_KEY;
    /// older keys go in ENCRYPTION_KEY_PREVIOUS.
    RotateKey,
    /// Print a new random encryption key (64 hex characters).
    GenerateKey,
}

/// `ferry-api migrate` actions.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back applied migrations, newest first.
    Down {
        /// How many to roll back.
        #[arg(
            long,
            env = "FERRY_MIGRATE_DOWN_STEPS",
            default_value_t = 1,
            conflicts_with = "all"
        )]
        steps: u32,
        /// Roll back every migration.
        #[arg(long)]
        all: bool,
    },
    /// List migrations and whether each is applied.
    Status,
    /// Drop every table and re-apply all migrations (destroys all data).
    Fresh,
}
