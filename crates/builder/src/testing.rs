//! The real builder in-process, for tests (feature `testing`): this
//! crate's, and the api's, which run builds end to end against it.
//!
//! ```ignore
//! use ferry_builder::testing::{self, TestConfig};
//! use ferry_k8s::fake::FakeCluster;
//!
//! let fake = FakeCluster::new();
//! // Without `with_cluster`, builds are planned (`Planned`), not run.
//! let builder = testing::start(TestConfig::new().with_cluster(fake.client())).await?;
//! let mut client = builder.client();
//! let stream = client.run_build(builder.request(run_build_request)).await?;
//! // ... drive the Job with fake.set_container_state(...), read the events.
//! // The api points its builder client at `builder.url()` with
//! // `authorization: Bearer <builder.token.expose()>`.
//! builder.stop().await?;
//! ```
//!
//! [`TestConfig::new`] allows `http://` repositories (for
//! `ferry_git::testing::GitServer`), pushes to `registry.ferry.test/ferry`
//! and uses a fresh random token; change `config` for anything else.

use std::net::SocketAddr;
use std::time::Duration;

use ferry_common::Shutdown;
use ferry_k8s::Cluster;
use ferry_proto::ferry::internal::v1::builder_service_client::BuilderServiceClient;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::auth::ServiceToken;
use crate::config::Config;
use crate::error::{Error, Result};

/// The registry [`TestConfig::new`] pushes to.
pub const TEST_REGISTRY: &str = "registry.ferry.test/ferry";

/// What to start.
#[derive(Clone)]
pub struct TestConfig {
    /// The builder's settings; `config.token` must be set.
    pub config: Config,
    /// The cluster to run Jobs on (a `FakeCluster`'s `client()`); `None`
    /// plans builds only.
    pub cluster: Option<kube::Client>,
}

impl TestConfig {
    pub fn new() -> TestConfig {
        let token = format!("test-builder-{}", uuid::Uuid::new_v4().simple());
        TestConfig {
            config: Config {
                token: token.parse().ok(),
                registry: Some(TEST_REGISTRY.into()),
                allow_http_git: true,
                git_timeout: Duration::from_secs(30),
                ..Config::default()
            },
            cluster: None,
        }
    }

    pub fn with_cluster(mut self, client: kube::Client) -> TestConfig {
        self.cluster = Some(client);
        self
    }
}

impl std::fmt::Debug for TestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestConfig")
            .field("config", &self.config)
            .field("cluster", &self.cluster.is_some())
            .finish()
    }
}

impl Default for TestConfig {
    fn default() -> Self {
        TestConfig::new()
    }
}

/// A running builder on 127.0.0.1. Stopped (without waiting) when dropped.
#[derive(Debug)]
pub struct TestBuilder {
    pub addr: SocketAddr,
    pub token: ServiceToken,
    pub shutdown: Shutdown,
    server: Option<JoinHandle<Result<()>>>,
}

/// Starts the real server (BuilderService, health, reflection,
/// SystemService) on a random loopback port.
pub async fn start(config: TestConfig) -> Result<TestBuilder> {
    let token = config
        .config
        .token
        .clone()
        .ok_or_else(|| Error::Config("TestConfig needs config.token".into()))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let cluster = config.cluster.map(Cluster::new);
    let server = tokio::spawn(crate::serve(
        config.config,
        cluster,
        listener,
        Duration::from_secs(5),
        shutdown.clone(),
    ));
    Ok(TestBuilder {
        addr,
        token,
        shutdown,
        server: Some(server),
    })
}

impl TestBuilder {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client on a new connection (made on first use).
    pub fn client(&self) -> BuilderServiceClient<Channel> {
        // A loopback URL always parses; the fallback keeps this infallible.
        let endpoint = Endpoint::from_shared(self.url())
            .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:1"));
        BuilderServiceClient::new(endpoint.connect_lazy())
    }

    /// `message` with this builder's `authorization: Bearer` header.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = self.token.bearer().parse() {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Stops the server (open streams end, Jobs stay) and waits for it.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.trigger();
        match self.server.take() {
            Some(server) => server
                .await
                .map_err(|e| Error::Io(std::io::Error::other(e)))?,
            None => Ok(()),
        }
    }
}

impl Drop for TestBuilder {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}
