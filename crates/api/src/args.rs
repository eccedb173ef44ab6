//! `ferry-api` configuration and subcommands. Every flag also reads an
//! environment variable; secrets never show their values in `--help`.

use std::net::SocketAddr;

use ferry_common::{CommonArgs, DatabaseArgs, EncryptionArgs};

use crate::accounts::limits::{Unit, amount};
use crate::feed::FeedToken;

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

    /// HTTP listen address: push webhooks (`POST /hooks/git/{id}`) and
    /// `GET /healthz`. Expose it through ferry-proxy on the public host.
    #[arg(
        long,
        env = "FERRY_API_HTTP_LISTEN",
        default_value = "0.0.0.0:8081",
        global = true
    )]
    pub http_listen: SocketAddr,

    /// ferry-builder's gRPC address (e.g. `http://ferry-builder:50052`).
    /// Unset: queued builds fail, saying no builder is configured.
    #[arg(long, env = "FERRY_BUILDER_URL")]
    pub builder_url: Option<String>,

    /// The builder's service credential (its `FERRY_BUILDER_TOKEN`).
    #[arg(long, env = "FERRY_BUILDER_TOKEN", hide_env_values = true)]
    pub builder_token: Option<String>,

    /// Builds of one organization that run at once by default; the rest
    /// wait queued. An organization's `concurrentBuilds` limit overrides it.
    #[arg(
        long,
        env = "FERRY_BUILDS_PER_ORG",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=50)
    )]
    pub builds_per_org: u16,

    /// Default CPU limit of one build Job (a Kubernetes quantity); it
    /// requests a quarter. An organization's `buildCpu` limit overrides it.
    #[arg(
        long,
        env = "FERRY_API_BUILD_CPU",
        default_value = "2",
        value_parser = build_cpu
    )]
    pub build_cpu: String,

    /// Default memory limit of one build Job; it requests a quarter. An
    /// organization's `buildMemory` limit overrides it.
    #[arg(
        long,
        env = "FERRY_API_BUILD_MEMORY",
        default_value = "4Gi",
        value_parser = build_memory
    )]
    pub build_memory: String,

    /// `host:port` at which the proxies reach the HTTP listener (e.g.
    /// `ferry-api.ferry.svc.cluster.local:8081`). Set: the route feed sends
    /// `/hooks/` on the public URL's host there, so providers can deliver
    /// push webhooks through ferry-proxy.
    #[arg(long, env = "FERRY_API_HOOKS_UPSTREAM")]
    pub hooks_upstream: Option<String>,

    /// Shared secret the proxies present on the internal route feed
    /// (`authorization: Bearer <token>`), at least 16 characters; e.g.
    /// `openssl rand -hex 32`. Unset: the feed refuses every proxy.
    #[arg(
        long,
        env = "FERRY_PROXY_FEED_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub proxy_feed_token: Option<FeedToken>,

    /// Seconds between full reloads of the route feed, which pick up route
    /// changes committed by other api replicas.
    #[arg(
        long,
        env = "FERRY_PROXY_FEED_RELOAD_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    pub proxy_feed_reload_secs: u64,

    /// Hours a login session lasts.
    #[arg(
        long,
        env = "FERRY_SESSION_TTL_HOURS",
        default_value_t = 720,
        value_parser = clap::value_parser!(u64).range(1..=87_600),
        global = true
    )]
    pub session_ttl_hours: u64,

    /// Public base URL of Ferry, used in invitation accept links.
    #[arg(
        long,
        env = "FERRY_PUBLIC_URL",
        default_value = crate::auth::DEFAULT_PUBLIC_URL,
        global = true
    )]
    pub public_url: String,

    /// Seconds a rollout may take before the deployment is marked failed.
    #[arg(
        long,
        env = "FERRY_ROLLOUT_TIMEOUT_SECS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(5..=86_400),
        global = true
    )]
    pub rollout_timeout_secs: u64,

    /// Namespace ferry-proxy runs in: every project's NetworkPolicy admits
    /// traffic from it.
    #[arg(
        long,
        env = "FERRY_PROXY_NAMESPACE",
        default_value = "ferry-system",
        global = true
    )]
    pub proxy_namespace: String,

    /// CIDRs tenant pods may not reach (comma-separated). The default keeps
    /// them off private, CGNAT, loopback and link-local ranges (the control
    /// plane, the Kubernetes API, cloud metadata); DNS and their own
    /// project stay reachable.
    #[arg(
        long,
        env = "FERRY_TENANT_EGRESS_DENY",
        value_delimiter = ',',
        default_values_t = ferry_k8s::spec::DEFAULT_EGRESS_DENY.map(String::from),
        global = true
    )]
    pub tenant_egress_deny: Vec<String>,

    /// Comma-separated CIDRs of proxies in front of the api (ferry-proxy, a
    /// load balancer) whose `X-Forwarded-For` names the client address,
    /// e.g. `10.0.0.0/8`. Empty: the TCP peer is the client (trust nobody).
    #[arg(
        long,
        env = "FERRY_TRUSTED_PROXIES",
        value_delimiter = ',',
        global = true
    )]
    pub trusted_proxies: Vec<crate::request::Cidr>,

    /// Default total CPU of a project namespace (ResourceQuota); an
    /// organization's `limits` setting overrides it.
    #[arg(
        long,
        env = "FERRY_PROJECT_QUOTA_CPU",
        default_value = "8",
        global = true
    )]
    pub project_quota_cpu: String,

    /// Default total memory of a project namespace.
    #[arg(
        long,
        env = "FERRY_PROJECT_QUOTA_MEMORY",
        default_value = "16Gi",
        global = true
    )]
    pub project_quota_memory: String,

    /// Default total requested volume storage of a project namespace.
    #[arg(
        long,
        env = "FERRY_PROJECT_QUOTA_STORAGE",
        default_value = "100Gi",
        global = true
    )]
    pub project_quota_storage: String,

    /// Default maximum number of pods in a project namespace.
    #[arg(
        long,
        env = "FERRY_PROJECT_QUOTA_PODS",
        default_value_t = 50,
        global = true
    )]
    pub project_quota_pods: i32,

    /// The installation's base domain (e.g. `apps.example.com`, with a
    /// wildcard DNS record pointing at ferry-proxy): any host name under it
    /// may be routed without a verified domain, first project first.
    /// Unset: every route needs a verified domain.
    #[arg(long, env = "FERRY_BASE_DOMAIN", value_parser = base_domain, global = true)]
    pub base_domain: Option<String>,

    /// The DNS resolver (`host:port`) VerifyDomain asks for the
    /// `_ferry-challenge` TXT record. Unset: the first `nameserver` of
    /// /etc/resolv.conf.
    #[arg(long, env = "FERRY_DNS_RESOLVER", global = true)]
    pub dns_resolver: Option<SocketAddr>,

    /// The port VerifyDomain fetches the HTTP challenge from
    /// (`http://<domain>:<port>/.well-known/ferry-challenge/<token>`):
    /// ferry-proxy's public plain-HTTP port, 80 unless a test or an
    /// unusual ingress says otherwise.
    #[arg(
        long,
        env = "FERRY_DOMAIN_HTTP_PORT",
        default_value_t = 80,
        global = true
    )]
    pub domain_http_port: u16,

    /// Let notification channels (webhooks, SMTP) target loopback, private
    /// and link-local addresses: for receivers inside your own network.
    /// Off: such targets are refused when saved and when sent to.
    #[arg(
        long,
        env = "FERRY_NOTIFICATIONS_ALLOW_PRIVATE_TARGETS",
        default_value_t = false,
        global = true
    )]
    pub notifications_allow_private_targets: bool,

    /// A PEM file of CA certificates trusted for SMTP relays (STARTTLS and
    /// TLS) besides the public roots: for a relay with a private CA.
    #[arg(
        long,
        env = "FERRY_SMTP_CA_FILE",
        value_name = "PEM",
        value_parser = ferry_notify::smtp::SmtpTrust::parse_file,
        global = true
    )]
    pub smtp_ca_file: Option<ferry_notify::smtp::SmtpTrust>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub encryption: EncryptionArgs,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Args {
    /// How builds reach ferry-builder.
    pub fn runner_config(&self) -> crate::builds::runner::RunnerConfig {
        crate::builds::runner::RunnerConfig {
            builder_url: self.builder_url.clone(),
            builder_token: self.builder_token.clone(),
            ..Default::default()
        }
    }

    /// The route feed, with the installation route when the proxies should
    /// forward push webhooks to this api.
    pub fn feed_hub(&self) -> crate::feed::FeedHub {
        let host = self
            .public_url
            .split_once("://")
            .map_or(self.public_url.as_str(), |(_, rest)| rest)
            .split(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        match &self.hooks_upstream {
            Some(upstream) if !host.is_empty() => {
                crate::feed::FeedHub::with_installation_route(&host, upstream)
            }
            _ => crate::feed::FeedHub::new(),
        }
    }

    /// Identity settings from the flags.
    pub fn identity_config(&self) -> crate::auth::IdentityConfig {
        crate::auth::IdentityConfig {
            session_ttl: chrono::Duration::hours(
                i64::try_from(self.session_ttl_hours).unwrap_or(87_600),
            ),
            public_url: self.public_url.trim_end_matches('/').to_owned(),
            trusted_proxies: crate::request::TrustedProxies(self.trusted_proxies.clone()),
            ..crate::auth::IdentityConfig::default()
        }
    }
}

impl Args {
    /// Deployment settings from the flags.
    pub fn deploy_config(&self, stop: ferry_common::Shutdown) -> crate::workloads::DeployConfig {
        crate::workloads::DeployConfig {
            rollout_timeout: std::time::Duration::from_secs(self.rollout_timeout_secs),
            proxy_namespace: self.proxy_namespace.clone(),
            policy: ferry_k8s::spec::ProjectPolicy {
                quota: ferry_k8s::spec::ProjectQuota {
                    cpu: self.project_quota_cpu.clone(),
                    memory: self.project_quota_memory.clone(),
                    storage: self.project_quota_storage.clone(),
                    pods: self.project_quota_pods,
                    build_cpu: self.build_cpu.clone(),
                    build_memory: self.build_memory.clone(),
                    concurrent_builds: i32::from(self.builds_per_org),
                    ..ferry_k8s::spec::ProjectQuota::default()
                },
                egress_deny_cidrs: self.tenant_egress_deny.clone(),
            },
            stop,
            replica_id: uuid::Uuid::now_v7().to_string(),
            lease_ttl: std::time::Duration::from_secs(30),
            rollouts: crate::workloads::deploy::Rollouts::default(),
            domains: crate::domains::DomainConfig {
                base_domain: self.base_domain.clone(),
                dns_resolver: self.dns_resolver,
                http_port: self.domain_http_port,
                ..crate::domains::DomainConfig::default()
            },
            notifications: crate::notifications::NotificationConfig {
                allow_private_targets: self.notifications_allow_private_targets,
                smtp_trust: self.smtp_ca_file.clone().unwrap_or_default(),
                ..crate::notifications::NotificationConfig::default()
            },
        }
    }
}

/// `--build-cpu`: a CPU quantity above zero, checked at start-up as
/// `SetOrganizationLimits` checks `buildCpu`.
fn build_cpu(value: &str) -> Result<String, String> {
    positive(value, Unit::Cpu)
}

/// `--build-memory`: a memory quantity above zero.
fn build_memory(value: &str) -> Result<String, String> {
    positive(value, Unit::Bytes)
}

fn positive(value: &str, unit: Unit) -> Result<String, String> {
    let v = value.trim();
    let (ok, example) = match unit {
        Unit::Cpu => (ferry_k8s::validate::is_cpu(v), "500m or 2"),
        Unit::Bytes => (ferry_k8s::validate::is_memory(v), "4Gi"),
    };
    if !ok {
        return Err(format!(
            "`{value}` is not a Kubernetes quantity like {example}"
        ));
    }
    if amount(unit, v).is_none_or(|a| a <= 0.0) {
        return Err(format!("`{value}` must be more than zero"));
    }
    Ok(v.to_owned())
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

/// `--base-domain`: a domain name, without `*.`.
fn base_domain(value: &str) -> Result<String, String> {
    match crate::domains::parse_domain("--base-domain", value) {
        Ok((name, false)) => Ok(name),
        Ok((name, true)) => Err(format!(
            "--base-domain: give the domain itself ({name}), not a wildcard"
        )),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn trusted_proxies_are_validated_at_start_up() {
        let args = Args::try_parse_from(["ferry-api", "--trusted-proxies", "10.0.0.0/8,fd00::/8"])
            .unwrap();
        assert_eq!(args.identity_config().trusted_proxies.0.len(), 2);
        let err = Args::try_parse_from(["ferry-api", "--trusted-proxies", "10.0.0.0/33"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`10.0.0.0/33` is not a CIDR"), "{err}");
    }

    #[test]
    fn build_defaults_are_validated_at_start_up_and_feed_the_quota() {
        let args = Args::try_parse_from([
            "ferry-api",
            "--build-cpu",
            "1500m",
            "--build-memory",
            "6Gi",
            "--builds-per-org",
            "3",
        ])
        .unwrap();
        let quota = args
            .deploy_config(ferry_common::Shutdown::new())
            .policy
            .quota;
        assert_eq!(
            (
                quota.build_cpu.as_str(),
                quota.build_memory.as_str(),
                quota.concurrent_builds
            ),
            ("1500m", "6Gi", 3)
        );
        let defaults = Args::try_parse_from(["ferry-api"])
            .unwrap()
            .deploy_config(ferry_common::Shutdown::new())
            .policy
            .quota;
        assert_eq!(defaults, ferry_k8s::spec::ProjectQuota::default());
        for (flag, value, says) in [
            ("--build-cpu", "lots", "not a Kubernetes quantity"),
            ("--build-cpu", "0m", "more than zero"),
            ("--build-memory", "4 GB", "not a Kubernetes quantity"),
            ("--build-memory", "0", "more than zero"),
            ("--builds-per-org", "0", "not in 1..=50"),
            ("--builds-per-org", "51", "not in 1..=50"),
        ] {
            let err = Args::try_parse_from(["ferry-api", flag, value])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(flag) && err.contains(says),
                "{flag} {value}: {err}"
            );
        }
    }
}
