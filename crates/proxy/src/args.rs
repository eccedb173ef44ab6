//! `ferry-proxy` configuration: every flag also reads an environment variable.
//! The proxy takes no database URL and no encryption key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferry_common::CommonArgs;

use crate::resolve::ResolveOverride;

/// Command-line and environment configuration.
#[derive(Clone, clap::Parser)]
#[command(
    name = "ferry-proxy",
    version,
    about = "Ferry proxy: HTTP(S) edge for deployed applications"
)]
pub struct Args {
    /// gRPC listen address (SystemService, health, reflection).
    #[arg(long, env = "FERRY_PROXY_LISTEN", default_value = "0.0.0.0:50054")]
    pub listen: SocketAddr,

    /// Plain HTTP listen address for application traffic.
    #[arg(long, env = "FERRY_PROXY_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: SocketAddr,

    /// HTTPS listen address for application traffic.
    #[arg(long, env = "FERRY_PROXY_HTTPS_LISTEN", default_value = "0.0.0.0:8443")]
    pub https_listen: SocketAddr,

    /// Admin HTTP listen address: /healthz, /readyz, /metrics.
    #[arg(long, env = "FERRY_PROXY_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,

    /// Traffic worker threads, each with its own runtime, listeners and
    /// upstream pool. Default: one per CPU.
    #[arg(long, env = "FERRY_PROXY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,

    /// Standalone mode: serve this static JSON snapshot (see the crate
    /// README) instead of, or until, the api's feed.
    #[arg(long, env = "FERRY_PROXY_ROUTES_FILE")]
    pub routes_file: Option<PathBuf>,

    /// The api's gRPC URL for the route and certificate feed.
    #[arg(long, env = "FERRY_PROXY_API_URL")]
    pub api_url: Option<String>,

    /// Service credential for the feed.
    #[arg(long, env = "FERRY_PROXY_FEED_TOKEN", hide_env_values = true)]
    pub feed_token: Option<String>,

    /// Where the last feed snapshot is kept, so a restart without the api
    /// still serves.
    #[arg(long, env = "FERRY_PROXY_STATE_DIR", default_value = "./.ferry/proxy")]
    pub state_dir: PathBuf,

    /// PEM certificate chain served to TLS clients whose SNI matches no
    /// certificate; without it such handshakes are refused.
    #[arg(long, env = "FERRY_PROXY_DEFAULT_CERT", requires = "default_key")]
    pub default_cert: Option<PathBuf>,

    /// PEM private key of `--default-cert`.
    #[arg(long, env = "FERRY_PROXY_DEFAULT_KEY", requires = "default_cert")]
    pub default_key: Option<PathBuf>,

    /// Upstream TCP connect timeout, milliseconds.
    #[arg(long, env = "FERRY_PROXY_CONNECT_TIMEOUT_MS", default_value_t = 3_000)]
    pub connect_timeout_ms: u64,

    /// Time an upstream has to send its response head, milliseconds.
    #[arg(
        long,
        env = "FERRY_PROXY_RESPONSE_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub response_timeout_ms: u64,

    /// Idle keep-alive connections (clients and upstreams) close after
    /// this many seconds, and a streaming body (either direction) that
    /// sends nothing for this long is cut. WebSocket tunnels are exempt.
    #[arg(long, env = "FERRY_PROXY_IDLE_TIMEOUT_SECS", default_value_t = 90)]
    pub idle_timeout_secs: u64,

    /// Connect to ADDR instead of resolving the upstream NAME:PORT, like
    /// curl's `--resolve` (ADDR is an IP, or IP:PORT). Repeatable; the
    /// environment variable takes a comma-separated list. A debugging and
    /// benchmark aid for in-cluster names outside the cluster.
    #[arg(
        long = "resolve",
        env = "FERRY_PROXY_RESOLVE",
        value_name = "NAME:PORT=ADDR",
        value_delimiter = ','
    )]
    pub resolve: Vec<ResolveOverride>,

    #[command(flatten)]
    pub common: CommonArgs,
}

impl Args {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn response_timeout(&self) -> Duration {
        Duration::from_millis(self.response_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("listen", &self.listen)
            .field("http_listen", &self.http_listen)
            .field("https_listen", &self.https_listen)
            .field("admin_listen", &self.admin_listen)
            .field("routes_file", &self.routes_file)
            .field("api_url", &self.api_url)
            .field(
                "feed_token",
                &self.feed_token.as_ref().map(|_| "<redacted>"),
            )
            .field("state_dir", &self.state_dir)
            .field("default_cert", &self.default_cert)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .field("resolve", &self.resolve)
            .finish_non_exhaustive()
    }
}
