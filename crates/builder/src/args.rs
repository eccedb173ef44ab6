//! `ferry-builder` configuration: every flag also reads an environment variable.

use std::net::SocketAddr;

use ferry_common::CommonArgs;

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

    #[command(flatten)]
    pub common: CommonArgs,
}
