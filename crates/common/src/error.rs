//! The one error type of `ferry-common`.

use std::net::SocketAddr;

/// Errors from service plumbing (binding, serving, telemetry, signals).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("could not build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("telemetry set-up failed: {0}")]
    Telemetry(String),
    #[error("could not install signal handler: {0}")]
    Signal(std::io::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
