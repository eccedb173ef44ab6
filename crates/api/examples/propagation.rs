//! Route propagation benchmark: time from a committed route change
//! (`FeedHub::notify_committed` right after the insert commits) to the first
//! HTTP request the proxy answers through the new route, over 200 changes.
//!
//! Everything runs in this process over loopback: the api's feed server
//! (reading SQLite, or PostgreSQL when `DATABASE_URL` is set), a
//! `ferry-proxy` data plane, and its feed client. Upstreams are in-cluster
//! names that do not resolve here (and the failed DNS lookup can take
//! seconds), so the time measured is until the proxy's live routing table,
//! the one every new request reads, routes the new host. Before each change
//! an HTTP request for the host is checked to get `404 no route`; after the
//! run one HTTP request checks a new host is no longer a 404.
//!
//! `cargo run --release -p ferry-api --example propagation [-- CHANGES]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser as _;
use ferry_api::ApiState;
use ferry_api::feed::{FeedAuth, FeedHub, FeedToken};
use ferry_common::testing::free_addr;
use ferry_common::{GrpcServer, Shutdown, SystemInfo};
use ferry_db::sea_orm::DatabaseConnection;
use ferry_db::sea_orm::prelude::Uuid;
use ferry_proxy::ProxyState;
use ferry_proxy::feed::FeedConfig;
use ferry_tests::fixtures;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "propagation-benchmark-token";

#[tokio::main]
async fn main() {
    let changes: usize = std::env::args()
        .nth(1)
        .map_or(200, |n| n.parse().expect("CHANGES is a number"));
    let db = match std::env::var("DATABASE_URL") {
        Ok(admin) => ferry_tests::TestDb::postgres(&admin).await,
        Err(_) => ferry_tests::TestDb::sqlite().await,
    };
    db.migrate().await;
    let conn = db.conn.clone();
    let (project, service) = seed(&conn).await;

    // api: feed hub + reloader + gRPC server.
    let keyring = Arc::new(ferry_tests::test_keyring());
    let hub = FeedHub::new();
    hub.reload(&conn, &keyring).await.unwrap();
    let token: FeedToken = TOKEN.parse().unwrap();
    let state = ApiState {
        db: conn.clone(),
        keyring: keyring.clone(),
        feed: hub.clone(),
        feed_auth: FeedAuth::new(Some(&token)),
        cluster: None,
        deploy: ferry_api::workloads::DeployConfig::default(),
    };
    let shutdown = Shutdown::new();
    hub.spawn_reloader(
        conn.clone(),
        keyring,
        Duration::from_secs(3600),
        shutdown.clone(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = listener.local_addr().unwrap();
    tokio::spawn(
        GrpcServer::new(SystemInfo::new("ferry-api", "bench"))
            .services(ferry_api::services(&state))
            .serve(listener, std::future::ready(()), shutdown.clone()),
    );

    // proxy: data plane + feed client.
    let http = free_addr();
    let args = ferry_proxy::Args::parse_from([
        "ferry-proxy".to_owned(),
        "--listen".into(),
        free_addr().to_string(),
        "--http-listen".into(),
        http.to_string(),
        "--https-listen".into(),
        free_addr().to_string(),
        "--admin-listen".into(),
        free_addr().to_string(),
    ]);
    let proxy_state = Arc::new(ProxyState::default());
    tokio::spawn(ferry_proxy::run_with_state(
        args,
        proxy_state.clone(),
        shutdown.clone(),
    ));
    let state_dir = tempfile::tempdir().unwrap();
    tokio::spawn(ferry_proxy::feed::run(
        FeedConfig {
            api_url: format!("http://{api_addr}"),
            token: TOKEN.into(),
            state_dir: state_dir.path().to_owned(),
        },
        proxy_state.clone(),
        shutdown.clone(),
    ));
    while proxy_state.current_version() != hub.version() || status(http, "warm.test").await == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut table = Vec::with_capacity(changes);
    for i in 0..changes {
        let host = format!("r{i}.bench.test");
        assert_eq!(status(http, &host).await, 404, "{host} routed too early");
        add_route(&conn, project, service, &host).await;
        let committed = Instant::now();
        hub.notify_committed();
        while proxy_state.table().route(&host).is_none() {
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "{host} never routed"
            );
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        table.push(committed.elapsed());
    }
    let last = format!("r{}.bench.test", changes.saturating_sub(1));
    assert_ne!(status(http, &last).await, 404, "{last} is not served");
    println!("route propagation over {changes} changes ({}):", db.backend);
    report("commit -> proxy routing table", table);
    shutdown.trigger();
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pct = |p: f64| {
        let idx = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[idx].as_secs_f64() * 1000.0
    };
    println!(
        "  {what}: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0)
    );
}

/// The status line's code of `GET /` for `host` on a fresh connection
/// (0 when the proxy is not answering yet).
async fn status(addr: SocketAddr, host: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    if stream.read_exact(&mut head).await.is_err() {
        return 0;
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn seed(conn: &DatabaseConnection) -> (Uuid, Uuid) {
    let org = fixtures::organization(conn, "Bench", "bench").await;
    let project = fixtures::project(conn, org, "Bench", "bench").await;
    let service = fixtures::service(conn, project, "web", 8080).await;
    add_route(conn, project, service, "warm.test").await;
    (project, service)
}

async fn add_route(conn: &DatabaseConnection, project: Uuid, service: Uuid, host: &str) {
    let route = fixtures::route(conn, project, None, host, "/", false).await;
    fixtures::target(conn, route, service, 8080, false).await;
}
