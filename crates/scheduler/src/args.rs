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

    /// ACME issuance and renewal.
    #[command(flatten)]
    pub acme: AcmeArgs,

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

/// Which service publishes DNS-01 records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DnsProviderKind {
    /// RFC 2136 dynamic updates (`--acme-dns-server`, `--acme-dns-zone`).
    Rfc2136,
    /// Cloudflare's API (`--acme-cloudflare-api-token`).
    Cloudflare,
}

/// ACME flags. Debug hides the secrets.
#[derive(Clone, clap::Args)]
pub struct AcmeArgs {
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

    /// Who publishes DNS-01 records for wildcard domains: `rfc2136` (with
    /// `--acme-dns-server`; unset server: no DNS-01) or `cloudflare`.
    #[arg(
        long,
        env = "FERRY_ACME_DNS_PROVIDER",
        value_enum,
        default_value = "rfc2136"
    )]
    pub acme_dns_provider: DnsProviderKind,

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

    /// Cloudflare API token (Zone:Read and DNS:Edit on the zones) for
    /// `--acme-dns-provider cloudflare`.
    #[arg(long, env = "FERRY_ACME_CLOUDFLARE_API_TOKEN", hide_env_values = true)]
    pub acme_cloudflare_api_token: Option<String>,

    /// Cloudflare's API root (changed only for tests or a relay).
    #[arg(
        long,
        env = "FERRY_ACME_CLOUDFLARE_API_URL",
        default_value = crate::cloudflare::DEFAULT_API_URL
    )]
    pub acme_cloudflare_api_url: String,

    /// The Cloudflare zone id to put every record in; unset: found by the
    /// record's name.
    #[arg(long, env = "FERRY_ACME_CLOUDFLARE_ZONE_ID")]
    pub acme_cloudflare_zone_id: Option<String>,

    /// Seconds between certificate passes (orders due, renewals).
    #[arg(
        long,
        env = "FERRY_ACME_INTERVAL_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub acme_interval_secs: u64,
}

impl std::fmt::Debug for AcmeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "[redacted]" } else { "[unset]" };
        f.debug_struct("AcmeArgs")
            .field("acme_directory", &self.acme_directory)
            .field("acme_contact", &self.acme_contact)
            .field("acme_root_ca", &self.acme_root_ca)
            .field("acme_dns_provider", &self.acme_dns_provider)
            .field("acme_dns_server", &self.acme_dns_server)
            .field("acme_dns_zone", &self.acme_dns_zone)
            .field("acme_dns_tsig_name", &self.acme_dns_tsig_name)
            .field("acme_dns_tsig_secret", &set(&self.acme_dns_tsig_secret))
            .field(
                "acme_cloudflare_api_token",
                &set(&self.acme_cloudflare_api_token),
            )
            .field("acme_cloudflare_api_url", &self.acme_cloudflare_api_url)
            .field("acme_cloudflare_zone_id", &self.acme_cloudflare_zone_id)
            .field("acme_interval_secs", &self.acme_interval_secs)
            .finish()
    }
}

/// How long one DNS provider call may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

impl AcmeArgs {
    /// The ACME settings, if a directory is configured; an unusable DNS-01
    /// setting is an error naming its flag.
    pub fn config(&self) -> crate::Result<Option<crate::acme::AcmeConfig>> {
        let Some(directory) = self.acme_directory.clone() else {
            return Ok(None);
        };
        let mut config = crate::acme::AcmeConfig::new(directory);
        config.contact = self.acme_contact.clone();
        config.root_pem = self.acme_root_ca.clone();
        config.dns = match self.acme_dns_provider {
            DnsProviderKind::Rfc2136 => self.rfc2136()?,
            DnsProviderKind::Cloudflare => Some(self.cloudflare()?),
        };
        Ok(Some(config))
    }

    /// The RFC 2136 provider, if a server is set.
    fn rfc2136(&self) -> crate::Result<Option<std::sync::Arc<dyn crate::dns01::DnsProvider>>> {
        let (Some(server), Some(zone)) = (self.acme_dns_server, self.acme_dns_zone.clone()) else {
            return Ok(None);
        };
        let key = match (&self.acme_dns_tsig_name, &self.acme_dns_tsig_secret) {
            (Some(name), Some(secret)) => Some(crate::dns01::TsigKey {
                name: name.clone(),
                secret: tsig_secret(secret)?,
            }),
            _ => None,
        };
        Ok(Some(std::sync::Arc::new(crate::dns01::Rfc2136 {
            server,
            zone,
            key,
            timeout: Duration::from_secs(5),
        })))
    }

    /// The Cloudflare provider; the token is required.
    fn cloudflare(&self) -> crate::Result<std::sync::Arc<dyn crate::dns01::DnsProvider>> {
        let token = self.acme_cloudflare_api_token.as_deref().ok_or_else(|| {
            crate::Error::Config(
                "--acme-dns-provider cloudflare needs --acme-cloudflare-api-token \
                 (FERRY_ACME_CLOUDFLARE_API_TOKEN)"
                    .into(),
            )
        })?;
        Ok(std::sync::Arc::new(crate::cloudflare::Cloudflare::new(
            &self.acme_cloudflare_api_url,
            token,
            self.acme_cloudflare_zone_id.clone(),
            DNS_TIMEOUT,
        )?))
    }
}

/// The TSIG secret's bytes; not base64 (or empty) is an error that names
/// the flag, never the value.
fn tsig_secret(secret: &str) -> crate::Result<Vec<u8>> {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(secret.trim()) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(crate::Error::Config(
            "--acme-dns-tsig-secret (FERRY_ACME_DNS_TSIG_SECRET) is not base64 \
             (use the `secret` of BIND's `key` statement, e.g. from `tsig-keygen`)"
                .into(),
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn parse(extra: &[&str]) -> Args {
        let mut argv = vec!["ferry-scheduler", "--acme-directory", "https://ca.test/dir"];
        argv.extend(extra);
        Args::parse_from(argv)
    }

    #[test]
    fn bad_dns01_settings_are_errors_naming_the_flag() {
        let args = parse(&[
            "--acme-dns-server",
            "127.0.0.1:53",
            "--acme-dns-zone",
            "example.com",
            "--acme-dns-tsig-name",
            "ferry",
            "--acme-dns-tsig-secret",
            "not base64 at all!",
        ]);
        let err = args.acme.config().unwrap_err().to_string();
        assert!(err.contains("--acme-dns-tsig-secret"), "{err}");
        assert!(!err.contains("not base64 at all"), "{err}");
        let err = parse(&["--acme-dns-provider", "cloudflare"])
            .acme
            .config()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--acme-cloudflare-api-token"), "{err}");
        let args = parse(&[
            "--acme-dns-provider",
            "cloudflare",
            "--acme-cloudflare-api-token",
            "cf-secret-token",
        ]);
        assert!(args.acme.config().unwrap().unwrap().dns.is_some());
        assert!(!format!("{args:?}").contains("cf-secret-token"));
        assert!(parse(&[]).acme.config().unwrap().unwrap().dns.is_none());
    }
}
