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

    /// ACME directory URL to order certificates from (e.g.
    /// https://acme-v02.api.letsencrypt.org/directory); unset: no ACME.
    #[arg(long, env = "FERRY_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,

    /// Contact for the ACME account (`mailto:ops@example.com`).
    #[arg(long, env = "FERRY_ACME_CONTACT")]
    pub acme_contact: Option<String>,

    /// A PEM root certificate to trust for the ACME CA's HTTPS (test CAs).
    #[arg(long, env = "FERRY_ACME_ROOT_CA")]
    pub acme_root_ca: Option<std::path::PathBuf>,

    /// DNS-01 for wildcard domains over RFC 2136: the zone's primary
    /// server (`ip:port`).
    #[arg(long, env = "FERRY_ACME_DNS_SERVER", requires = "acme_dns_zone")]
    pub acme_dns_server: Option<std::net::SocketAddr>,

    /// The zone the `_acme-challenge` records are updated in.
    #[arg(long, env = "FERRY_ACME_DNS_ZONE")]
    pub acme_dns_zone: Option<String>,

    /// TSIG key name for the updates (HMAC-SHA256).
    #[arg(
        long,
        env = "FERRY_ACME_DNS_TSIG_NAME",
        requires = "acme_dns_tsig_secret"
    )]
    pub acme_dns_tsig_name: Option<String>,

    /// TSIG secret, base64 (as in BIND's `key` statement).
    #[arg(long, env = "FERRY_ACME_DNS_TSIG_SECRET", hide_env_values = true)]
    pub acme_dns_tsig_secret: Option<String>,

    /// Seconds between certificate passes (orders due, renewals).
    #[arg(
        long,
        env = "FERRY_ACME_INTERVAL_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub acme_interval_secs: u64,

    /// Days audit log entries are kept: the installation default, which an
    /// organization may override (`SetRetentionPolicy`), as it may the four
    /// windows below.
    #[arg(
        long,
        env = "FERRY_AUDIT_RETENTION_DAYS",
        default_value_t = 365,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub audit_retention_days: u32,

    /// Days deployment (and build) logs are kept; 0 keeps them forever.
    #[arg(
        long,
        env = "FERRY_DEPLOYMENT_LOG_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub deployment_log_retention_days: u32,

    /// Days container metric samples are kept; 0 keeps them forever.
    #[arg(long, env = "FERRY_METRICS_RETENTION_DAYS", default_value_t = 7)]
    pub metrics_retention_days: u32,

    /// Days finished job runs (and their logs) are kept; 0 keeps them forever.
    #[arg(long, env = "FERRY_JOB_RUN_RETENTION_DAYS", default_value_t = 30)]
    pub job_run_retention_days: u32,

    /// Days push webhook deliveries are kept; 0 keeps them forever.
    #[arg(
        long,
        env = "FERRY_WEBHOOK_DELIVERY_RETENTION_DAYS",
        default_value_t = 30
    )]
    pub webhook_delivery_retention_days: u32,

    /// Seconds to wait at start-up for ferry-api to migrate the database
    /// before giving up (0: check once).
    #[arg(long, env = "FERRY_SCHEDULER_SCHEMA_WAIT_SECS", default_value_t = 60)]
    pub schema_wait_secs: u64,

    /// Milliseconds between job ticks (fire due schedules, start pending
    /// runs, record finished ones).
    #[arg(
        long,
        env = "FERRY_SCHEDULER_JOBS_INTERVAL_MS",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(100..=60_000)
    )]
    pub jobs_interval_ms: u64,

    /// Seconds a replica's lease on a loop lasts without renewal: how long
    /// another replica waits to take over after a crash.
    #[arg(
        long,
        env = "FERRY_SCHEDULER_LEASE_TTL_SECS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(2..=600)
    )]
    pub lease_ttl_secs: u64,

    /// Seconds between container metrics samples (metrics.k8s.io).
    #[arg(
        long,
        env = "FERRY_SCHEDULER_METRICS_INTERVAL_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(5..=3600)
    )]
    pub metrics_interval_secs: u64,

    /// Milliseconds between readiness checks (`SELECT 1` on the database,
    /// one LIST on the cluster if configured); health is `NOT_SERVING` while
    /// either fails.
    #[arg(
        long,
        env = "FERRY_SCHEDULER_READINESS_INTERVAL_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(100..=60_000)
    )]
    pub readiness_interval_ms: u64,

    /// Seconds after which a verified domain's TXT record is looked up
    /// again; a record that is gone flags the domain.
    #[arg(
        long,
        env = "FERRY_SCHEDULER_DOMAIN_RECHECK_SECS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(60..=604_800)
    )]
    pub domain_recheck_secs: u64,

    /// The DNS resolver (`ip:port`) domain re-checks ask, as the api's
    /// `--dns-resolver`. Unset: the first `nameserver` of /etc/resolv.conf.
    #[arg(long, env = "FERRY_DNS_RESOLVER")]
    pub dns_resolver: Option<std::net::SocketAddr>,

    /// ferry-proxy's public plain-HTTP port, where re-checks fetch the HTTP
    /// challenge of domains verified over HTTP (as the api's
    /// `--domain-http-port`).
    #[arg(long, env = "FERRY_DOMAIN_HTTP_PORT", default_value_t = 80)]
    pub domain_http_port: u16,

    /// Notification delivery settings (the `notifications` lease).
    #[command(flatten)]
    pub notifications: crate::notifications::NotificationArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Args {
    /// Time between retention runs.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval_secs)
    }

    /// The ACME settings, if a directory is configured.
    pub fn acme(&self) -> Option<crate::acme::AcmeConfig> {
        let mut config = crate::acme::AcmeConfig::new(self.acme_directory.clone()?);
        config.contact = self.acme_contact.clone();
        config.root_pem = self.acme_root_ca.clone();
        if let (Some(server), Some(zone)) = (self.acme_dns_server, self.acme_dns_zone.clone()) {
            use base64::Engine as _;
            let key = match (&self.acme_dns_tsig_name, &self.acme_dns_tsig_secret) {
                (Some(name), Some(secret)) => {
                    match base64::engine::general_purpose::STANDARD.decode(secret.trim()) {
                        Ok(secret) => Some(crate::dns01::TsigKey {
                            name: name.clone(),
                            secret,
                        }),
                        Err(_) => {
                            tracing::error!("--acme-dns-tsig-secret is not base64: DNS-01 is off");
                            return Some(config);
                        }
                    }
                }
                _ => None,
            };
            config.dns = Some(std::sync::Arc::new(crate::dns01::Rfc2136 {
                server,
                zone,
                key,
                timeout: Duration::from_secs(5),
            }));
        }
        Some(config)
    }

    /// Time between job ticks.
    pub fn jobs_interval(&self) -> Duration {
        Duration::from_millis(self.jobs_interval_ms)
    }

    /// Time between metrics samples.
    pub fn metrics_interval(&self) -> Duration {
        Duration::from_secs(self.metrics_interval_secs)
    }

    /// How long a lease lasts without renewal.
    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }

    /// Time between readiness checks.
    pub fn readiness_interval(&self) -> Duration {
        Duration::from_millis(self.readiness_interval_ms)
    }

    /// How domains are re-checked.
    pub fn domain_recheck(&self) -> crate::domains::Recheck {
        crate::domains::Recheck {
            resolver: self
                .dns_resolver
                .unwrap_or_else(ferry_common::dns::system_resolver),
            timeout: Duration::from_secs(3),
            http_port: self.domain_http_port,
            every: chrono::Duration::seconds(
                i64::try_from(self.domain_recheck_secs).unwrap_or(3600),
            ),
        }
    }

    /// Time between re-check passes: a minute, or the re-check age if
    /// shorter.
    pub fn domain_pass_interval(&self) -> Duration {
        Duration::from_secs(self.domain_recheck_secs.min(60))
    }

    /// How long to wait for the schema.
    pub fn schema_wait(&self) -> Duration {
        Duration::from_secs(self.schema_wait_secs)
    }
}
