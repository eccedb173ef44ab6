//! The proxy's routing model: one [`Snapshot`] describes everything the proxy
//! serves. It arrives from the api's feed (converted from protobuf), from the
//! on-disk copy of the last feed snapshot, or from a static `--routes-file`
//! (JSON, same shape). Incremental feed updates are applied to a snapshot and
//! the resulting table is swapped in atomically.

use serde::{Deserialize, Serialize};

/// Everything the proxy serves, at one version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Monotonic version assigned by the api (0 for a static routes file).
    #[serde(default)]
    pub version: u64,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub acme_challenges: Vec<AcmeChallenge>,
    #[serde(default)]
    pub domain_challenges: Vec<DomainChallenge>,
}

/// A hostname rule. `id` is stable across updates (the api's `routes.id`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: String,
    /// Exact names (`app.example.com`) or one-label wildcards (`*.example.com`).
    pub hosts: Vec<String>,
    /// Path-prefix targets; the longest matching prefix wins.
    pub targets: Vec<Target>,
    /// Answer plain-HTTP requests with a 308 to HTTPS (ACME challenges excepted).
    #[serde(default)]
    pub redirect_https: bool,
}

/// Where requests under `path_prefix` go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `/` matches everything; `/api` matches `/api` and `/api/...` but not `/apix`.
    #[serde(default = "root_prefix")]
    pub path_prefix: String,
    /// Remove `path_prefix` before forwarding (`/api/users` → `/users`).
    #[serde(default)]
    pub strip_prefix: bool,
    /// `host:port` upstreams, e.g. `web.my-project.svc.cluster.local:8080` or `127.0.0.1:3000`.
    pub upstreams: Vec<String>,
    /// One weight (1–10,000) per upstream, in order; empty or all equal
    /// shares requests evenly. Round robin sends each upstream its share
    /// (smooth, nginx's algorithm); least-outstanding compares in-flight
    /// requests divided by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<u32>,
    #[serde(default)]
    pub balance: Balance,
    /// `http1` (default) or `h2c` (HTTP/2 with prior knowledge, e.g. gRPC).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
}

/// How the proxy talks to a target's upstreams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 keep-alive; upgrades (WebSocket) are tunnelled.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge: one multiplexed connection per upstream
    /// and worker, trailers and `te: trailers` passed through (gRPC).
    H2c,
}

/// How several upstreams of one target share requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastOutstanding,
}

/// A certificate chain and its private key for the listed SNI names.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    pub hosts: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// An ACME HTTP-01 token and the key authorization to answer it with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeChallenge {
    pub token: String,
    pub key_authorization: String,
}

/// A domain's HTTP challenge: `GET /.well-known/ferry-challenge/<token>`
/// on plain HTTP for exactly `host` answers the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainChallenge {
    pub host: String,
    pub token: String,
}

fn root_prefix() -> String {
    "/".to_owned()
}
