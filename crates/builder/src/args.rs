//! `ferry-builder` configuration: every flag also reads an environment variable.
//! [`crate::Config::from_args`] turns these into checked settings.

use std::net::SocketAddr;
use std::path::PathBuf;

use ferry_common::CommonArgs;

use crate::auth::ServiceToken;

/// Command-line and environment configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "ferry-builder",
    version,
    about = "Ferry builder: builds container images from git sources"
)]
pub struct Args {
    /// gRPC listen address.
    #[arg(long, env = "FERRY_BUILDER_LISTEN", default_value = "0.0.0.0:50052")]
    pub listen: SocketAddr,

    /// Service credential the api presents (`authorization: Bearer ...`), at
    /// least 16 characters. Without it BuilderService refuses every call.
    #[arg(long, env = "FERRY_BUILDER_TOKEN", hide_env_values = true)]
    pub token: Option<ServiceToken>,

    /// Where images are pushed: `<registry>/<project>/<service>:<commit>`,
    /// e.g. `registry.example.com/ferry`. Required to run builds.
    #[arg(long, env = "FERRY_BUILDER_REGISTRY")]
    pub registry: Option<String>,

    /// A docker `config.json` with the push credential for `--registry`
    /// (`auths.<host>.auth` or `username`/`password`). Without it, pushes
    /// are anonymous.
    #[arg(long, env = "FERRY_BUILDER_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,

    /// The namespace build Jobs run in (created with its NetworkPolicies).
    #[arg(long, env = "FERRY_BUILDER_NAMESPACE", default_value = "ferry-builds")]
    pub namespace: String,

    /// Build timeout when a request gives none, seconds.
    #[arg(
        long,
        env = "FERRY_BUILDER_DEFAULT_TIMEOUT_SECS",
        default_value_t = 1800
    )]
    pub default_timeout_secs: u32,

    /// The longest timeout a request may ask for, seconds.
    #[arg(long, env = "FERRY_BUILDER_MAX_TIMEOUT_SECS", default_value_t = 7200)]
    pub max_timeout_secs: u32,

    /// Deadline of each git command the builder runs itself (resolving a
    /// branch, diffing a push, checking out for detection), seconds.
    #[arg(long, env = "FERRY_BUILDER_GIT_TIMEOUT_SECS", default_value_t = 120)]
    pub git_timeout_secs: u64,

    /// Where checkouts for build-type detection go (each in a fresh
    /// directory, removed afterwards). Default: a private temp dir.
    #[arg(long, env = "FERRY_BUILDER_WORK_DIR")]
    pub work_dir: Option<PathBuf>,

    /// Accept `http://` repository URLs (tests, an in-cluster Gitea): code
    /// and tokens then travel unencrypted.
    #[arg(long, env = "FERRY_BUILDER_ALLOW_HTTP_GIT")]
    pub allow_http_git: bool,

    /// The cluster's own ranges (pods, services, nodes), comma-separated:
    /// the builds namespace's egress policy denies them.
    #[arg(
        long,
        env = "FERRY_BUILDER_CLUSTER_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub cluster_cidrs: Vec<String>,

    /// The Kubernetes API server's addresses (IPs or CIDRs), comma-separated:
    /// denied to builds as well.
    #[arg(
        long,
        env = "FERRY_BUILDER_API_SERVER_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub api_server_cidrs: Vec<String>,

    /// At most this many git operations (resolve, diff, checkout) at once.
    #[arg(
        long,
        env = "FERRY_BUILDER_MAX_CONCURRENT_RESOLVES",
        default_value_t = 4,
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub max_concurrent_resolves: u16,

    /// CPU request of each build step when a request gives none.
    #[arg(long, env = "FERRY_BUILDER_CPU_REQUEST", default_value = "500m")]
    pub cpu_request: String,

    /// CPU limit of each build step when a request gives none.
    #[arg(long, env = "FERRY_BUILDER_CPU_LIMIT", default_value = "2")]
    pub cpu_limit: String,

    /// Memory request of each build step when a request gives none.
    #[arg(long, env = "FERRY_BUILDER_MEMORY_REQUEST", default_value = "1Gi")]
    pub memory_request: String,

    /// Memory limit of each build step when a request gives none.
    #[arg(long, env = "FERRY_BUILDER_MEMORY_LIMIT", default_value = "4Gi")]
    pub memory_limit: String,

    /// Size limit of a build's scratch volumes (checkout, build state).
    #[arg(long, env = "FERRY_BUILDER_SCRATCH_SIZE", default_value = "20Gi")]
    pub scratch_size: String,

    /// A finished build Job (and its pod and Secret) is deleted this long
    /// after it ends, seconds.
    #[arg(long, env = "FERRY_BUILDER_JOB_TTL_SECS", default_value_t = 3600)]
    pub job_ttl_secs: u32,

    /// The Cloud Native Buildpacks builder image of `buildpacks` builds.
    #[arg(
        long,
        env = "FERRY_BUILDER_BUILDPACKS_BUILDER",
        default_value = "paketobuildpacks/builder-jammy-base:0.4.552"
    )]
    pub buildpacks_builder: String,

    #[command(flatten)]
    pub common: CommonArgs,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn defaults_and_lists() {
        let args = Args::try_parse_from([
            "ferry-builder",
            "--cluster-cidrs",
            "10.0.0.0/8,fd00::/8",
            "--allow-http-git",
        ])
        .unwrap();
        assert_eq!(args.namespace, "ferry-builds");
        assert_eq!(args.default_timeout_secs, 1800);
        assert_eq!(args.max_timeout_secs, 7200);
        assert_eq!(args.git_timeout_secs, 120);
        assert_eq!(args.max_concurrent_resolves, 4);
        assert_eq!(args.cluster_cidrs, ["10.0.0.0/8", "fd00::/8"]);
        assert!(args.allow_http_git);
        assert!(args.token.is_none());
    }

    #[test]
    fn short_tokens_are_refused_and_never_shown() {
        let err = Args::try_parse_from(["ferry-builder", "--token", "short"]).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        let args =
            Args::try_parse_from(["ferry-builder", "--token", "0123456789abcdef-hunter2"]).unwrap();
        assert!(!format!("{args:?}").contains("hunter2"));
        assert!(Args::try_parse_from(["ferry-builder", "--max-concurrent-resolves", "0"]).is_err());
    }
}
