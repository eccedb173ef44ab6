//! The api in-process on a loopback port, for integration tests of this
//! crate and of its clients (feature `testing`; never in a release build).
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_common::{GrpcServer, Shutdown, SystemInfo};
use ferry_db::sea_orm::DatabaseConnection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::ApiState;
use crate::auth::IdentityConfig;
use crate::feed::{FeedAuth, FeedHub, FeedToken};

/// The api's gRPC server on a loopback port; [`TestApi::stop`] drains it.
#[derive(Debug)]
pub struct TestApi {
    /// Where it listens (`127.0.0.1:<ephemeral>`).
    pub addr: SocketAddr,
    shutdown: Shutdown,
    server: JoinHandle<ferry_common::Result<()>>,
}

impl TestApi {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Triggers the graceful shutdown and waits (10 s at most) for it.
    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server stops")
            .expect("server task")
            .expect("server result");
    }
}

/// An [`ApiState`] on `conn` with the test keyring, no cluster (deployments
/// are only planned) and `feed_token` as the feed service credential if any.
pub fn state(conn: &DatabaseConnection, feed_token: Option<&str>) -> ApiState {
    let token: Option<FeedToken> = feed_token.map(|t| t.parse().expect("valid feed token"));
    ApiState {
        db: conn.clone(),
        keyring: Arc::new(ferry_tests::test_keyring()),
        feed: FeedHub::new(),
        feed_auth: FeedAuth::new(token.as_ref()),
        cluster: None,
        deploy: crate::workloads::DeployConfig::default(),
        builds: crate::builds::runner::BuildQueue::default(),
    }
}

/// Starts the api on `conn` (a migrated database) without a cluster.
pub async fn start(conn: &DatabaseConnection, config: IdentityConfig) -> TestApi {
    start_state(&state(conn, None), config).await
}

/// Starts the api's gRPC server for `state`.
pub async fn start_state(state: &ApiState, config: IdentityConfig) -> TestApi {
    let shutdown = Shutdown::new();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(
        GrpcServer::new(SystemInfo::new("ferry-api", "test"))
            .services(crate::services_with(state, &config))
            .grace(Duration::from_secs(5))
            .serve(listener, std::future::ready(()), shutdown.clone()),
    );
    TestApi {
        addr,
        shutdown,
        server,
    }
}

/// The DNS server VerifyDomain asks in tests.
pub use ferry_common::dns::TxtServer;
