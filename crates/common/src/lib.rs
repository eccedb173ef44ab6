//! Shared plumbing for the four Ferry services, written once:
//!
//! - [`args`]: the clap flags every binary has (log format, shutdown grace),
//!   and the database and encryption-key flags of the api and scheduler;
//! - [`telemetry`]: `tracing` set-up (text or JSON), optional OTLP export and
//!   W3C trace-context propagation over gRPC metadata;
//! - [`shutdown`]: SIGTERM/SIGINT handling and a drain with a grace period;
//! - [`grpc`]: the gRPC server bootstrap (health, reflection, per-RPC spans,
//!   readiness latch, graceful drain);
//! - [`system`]: the `ferry.v1.SystemService` implementation all services share;
//! - [`service`]: the body of each binary's `main`;
//! - [`dns`]: TXT and A lookups for the domain challenge (and a test server);
//! - [`http_proof`]: the HTTP domain challenge, fetched from where a name points;
//! - `testing` (feature `testing`): helpers for the services' boot tests.

pub mod args;
pub mod dns;
pub mod error;
pub mod grpc;
pub mod http_proof;
#[cfg(feature = "db")]
pub mod listen;
pub mod service;
pub mod shutdown;
pub mod system;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use args::{CommonArgs, DatabaseArgs, EncryptionArgs};
pub use error::{Error, Result};
pub use grpc::{GrpcServer, GrpcServices};
pub use service::run_service;
pub use shutdown::{Shutdown, shutdown_signal};
pub use system::{SystemInfo, kubernetes_configured};
pub use telemetry::{LogFormat, TelemetryGuard, init_tracing};
