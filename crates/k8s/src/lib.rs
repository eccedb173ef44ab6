//! Ferry's Kubernetes layer: render a [`spec::WorkloadSpec`] into typed
//! k8s-openapi objects, apply them with server-side apply (field manager
//! `ferry`), watch rollouts, scale, restart and delete by label.

pub mod spec;
