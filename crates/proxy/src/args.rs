//! `ferry-proxy` configuration: every flag also reads an environment variable.
//! The proxy takes no database URL and no encryption key.

use std::net::SocketAddr;

use ferry_common::CommonArgs;

/// Command-line and environment configuration.
#[derive(Debug, Clone, clap::Parser)]
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

    #[command(flatten)]
    pub common: CommonArgs,
}
