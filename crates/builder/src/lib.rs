//! `ferry-builder`: builds container images from git sources (later issues)
//! and reports progress to the api over gRPC. Today it boots its gRPC server
//! with health, reflection and `ferry.v1.SystemService`.

pub mod args;
pub mod error;

use ferry_common::grpc::{GrpcServer, bind};
use ferry_common::{Shutdown, SystemInfo};

pub use args::Args;
pub use error::{Error, Result};

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-builder";

/// Runs the builder until `shutdown` fires, then drains.
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    let mut system = SystemInfo::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"));
    system.kube_configured = ferry_common::kubernetes_configured();
    let listener = bind(args.listen).await?;
    GrpcServer::new(system)
        .grace(args.common.shutdown_grace())
        .serve(listener, std::future::ready(()), shutdown)
        .await?;
    Ok(())
}
