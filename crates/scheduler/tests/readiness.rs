//! Readiness of the `ferry-scheduler` binary over gRPC health (TCP): it is
//! `SERVING` while its database (and its cluster, when one is configured)
//! answers, `NOT_SERVING` while either does not, and `SERVING` again when
//! it comes back; the `liveness` name stays `SERVING` throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ferry_common::testing::{
    ServiceProcess, ServingStatus, free_addr, health_status, stop_cleanly, wait_until_serving,
};
use ferry_db::sea_orm::ConnectionTrait as _;
use ferry_k8s::fake::{FakeBody, FakeCluster};
use ferry_tests::{TestDb, test_key};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::ServiceExt as _;

const BIN: &str = env!("CARGO_BIN_EXE_ferry-scheduler");

/// Polls health of `""` until it is `want`; panics after `timeout`.
async fn wait_for_health(
    process: &ServiceProcess,
    addr: SocketAddr,
    want: ServingStatus,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = health_status(addr, "").await;
        if matches!(&last, Ok(status) if *status == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health not {want:?} after {timeout:?} (last: {last:?})\n{}",
            process.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn spawn(addr: SocketAddr, url: &str, extra: &[(&str, &str)]) -> ServiceProcess {
    let listen = addr.to_string();
    let mut env = vec![
        ("FERRY_SCHEDULER_LISTEN", listen.as_str()),
        ("DATABASE_URL", url),
        ("ENCRYPTION_KEY", test_key()),
        ("FERRY_SCHEDULER_READINESS_INTERVAL_MS", "200"),
        ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
    ];
    env.extend_from_slice(extra);
    ServiceProcess::spawn(BIN, &[], &env)
}

#[tokio::test]
async fn health_follows_the_database_going_away_and_coming_back() {
    let Some(admin_url) = ferry_tests::postgres_admin_url() else {
        eprintln!("skipped: needs PostgreSQL (the database is taken away server-side)");
        return;
    };
    let db = TestDb::postgres(&admin_url).await;
    db.migrate().await;
    let name = url::Url::parse(&db.url).unwrap().path()[1..].to_owned();
    let addr = free_addr();
    let mut process = spawn(addr, &db.url, &[]);
    wait_until_serving(&mut process, addr, Duration::from_secs(30)).await;

    // The database goes away: no new sessions, existing ones ended.
    let admin = ferry_db::connect::connect_url(&admin_url).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"
        ))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        ))
        .await
        .unwrap();
    wait_for_health(
        &process,
        addr,
        ServingStatus::NotServing,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        health_status(addr, "liveness").await.unwrap(),
        ServingStatus::Serving,
        "liveness does not depend on the database"
    );
    assert!(
        process
            .wait_for_stdout("database unreachable", Duration::from_secs(5))
            .await,
        "{}",
        process.output()
    );

    // It comes back.
    admin
        .execute_unprepared(&format!(
            "ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"
        ))
        .await
        .unwrap();
    wait_for_health(
        &process,
        addr,
        ServingStatus::Serving,
        Duration::from_secs(15),
    )
    .await;
    let _ = admin.close().await;
    stop_cleanly(process, Duration::from_secs(15)).await;
}

/// Serves `fake` over HTTP on loopback; while `up` is false every request
/// is answered 503, as an API server that is down behind its load balancer.
async fn serve_fake_cluster(fake: FakeCluster, up: Arc<AtomicBool>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (fake, up) = (fake.clone(), up.clone());
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let (fake, up) = (fake.clone(), up.clone());
                async move {
                    if !up.load(Ordering::SeqCst) {
                        let body: FakeBody =
                            Full::new(Bytes::from_static(b"{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"status\":\"Failure\",\"message\":\"down\",\"code\":503}"))
                                .boxed_unsync();
                        return Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(503)
                                .header("content-type", "application/json")
                                .body(body)
                                .unwrap(),
                        );
                    }
                    let (parts, body) = req.into_parts();
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let req =
                        http::Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
                    fake.service().oneshot(req).await
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn health_follows_the_cluster_going_away_and_coming_back() {
    let db = TestDb::sqlite().await;
    db.migrate().await;
    let up = Arc::new(AtomicBool::new(true));
    let api = serve_fake_cluster(FakeCluster::new(), up.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n"
        ),
    )
    .unwrap();
    let addr = free_addr();
    let mut process = spawn(
        addr,
        &db.url,
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    wait_until_serving(&mut process, addr, Duration::from_secs(30)).await;

    up.store(false, Ordering::SeqCst);
    wait_for_health(
        &process,
        addr,
        ServingStatus::NotServing,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        health_status(addr, "liveness").await.unwrap(),
        ServingStatus::Serving
    );
    assert!(
        process
            .wait_for_stdout("Kubernetes API unreachable", Duration::from_secs(5))
            .await,
        "{}",
        process.output()
    );

    up.store(true, Ordering::SeqCst);
    wait_for_health(
        &process,
        addr,
        ServingStatus::Serving,
        Duration::from_secs(15),
    )
    .await;
    stop_cleanly(process, Duration::from_secs(15)).await;
}
