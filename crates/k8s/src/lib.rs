//! Ferry's Kubernetes layer: render a [`spec::WorkloadSpec`] into typed
//! k8s-openapi objects ([`render()`]), apply them with server-side apply
//! (field manager `ferry`), watch rollouts, scale, restart and delete by
//! label ([`Cluster`]); render image builds as Jobs ([`build`]) and run,
//! watch, list and cancel them ([`builds`]); run users' scheduled jobs as
//! Jobs ([`jobrun`]); follow every service's health through watches
//! ([`status`]).
//!
//! With the `testing` feature, [`fake::FakeCluster`] is an in-memory API
//! server (with a simulated workload controller) for end-to-end tests.

pub mod build;
pub mod builds;
pub mod cluster;
pub mod error;
#[cfg(feature = "testing")]
pub mod fake;
pub mod jobrun;
pub mod jobwatch;
pub mod logs;
pub mod metrics;
pub mod render;
pub mod spec;
pub mod status;
pub mod validate;

pub use build::{
    BuildCredentials, BuildKind, BuildOutcome, BuildSpec, BuildStep, EgressPolicy, FailureReason,
    GitAuth, GitCredential, builds_namespace, render_build, render_build_secret,
};
pub use builds::{BuildStatus, StartedBuild};
pub use cluster::{Applied, Cluster, Owner, RolloutEvent, RolloutOutcome};
pub use error::{Error, Result};
pub use jobrun::{JobRunSpec, RunOutcome, RunStatus, kubernetes_job_name, render_job_run};
pub use metrics::{ContainerUsage, PodMetrics};
pub use render::{Redact, Rendered, Workload, WorkloadKindRef, diff, render};
pub use status::{
    ContainerObservation, ContainerState, HealthState, ServiceObservation, StatusChange,
    StatusView, StatusWatch,
};
