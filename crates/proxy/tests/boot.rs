//! The `ferry-proxy` binary boots: gRPC health, reflection and
//! `GetServerInfo` over TCP; admin `/healthz`, `/readyz`, `/metrics` and the
//! data plane's `404 no route` over real HTTP; exit 0 on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_common::testing::{boot, free_addr, http_get, stop_cleanly};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-proxy");

#[tokio::test]
async fn proxy_boots_serves_admin_http_and_stops_on_sigterm() {
    let (grpc, http, https, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let (grpc_s, http_s, https_s, admin_s) = (
        grpc.to_string(),
        http.to_string(),
        https.to_string(),
        admin.to_string(),
    );
    let (process, info) = boot(
        BIN,
        &[],
        &[
            ("FERRY_PROXY_LISTEN", grpc_s.as_str()),
            ("FERRY_PROXY_HTTP_LISTEN", http_s.as_str()),
            ("FERRY_PROXY_HTTPS_LISTEN", https_s.as_str()),
            ("FERRY_PROXY_ADMIN_LISTEN", admin_s.as_str()),
            ("FERRY_SHUTDOWN_GRACE_SECS", "5"),
            // Must be ignored: the proxy takes no database.
            ("DATABASE_URL", "postgres://proxy:must-not-use@nowhere/db"),
        ],
        grpc,
        "ferry-proxy",
    )
    .await;
    assert_eq!(info.database_backend, "");

    assert_eq!(http_get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let (status, body) = http_get(http, "/some/app").await;
    assert_eq!((status, body.as_str()), (404, "no route\n"));
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ferry_proxy_http_requests_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("ferry_proxy_ready 1\n"), "{metrics}");
    assert_eq!(http_get(admin, "/nope").await.0, 404);
    // HTTPS is bound (TLS arrives later): the connection is accepted.
    tokio::net::TcpStream::connect(https).await.unwrap();

    let output = stop_cleanly(process, Duration::from_secs(8)).await;
    assert!(!output.contains("must-not-use"), "{output}");
    // Every port is released.
    for addr in [grpc, http, https, admin] {
        std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("{addr} still bound after exit: {e}"));
    }
}

/// `FERRY_PROXY_RESOLVE` (comma-separated) points an in-cluster upstream
/// name from `FERRY_PROXY_ROUTES_FILE` at a local server.
#[tokio::test]
async fn resolve_env_reaches_an_in_cluster_name() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut stream, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\npinned ok")
                    .await;
            });
        }
    });
    let (grpc, http, https, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.json");
    // `http_get` sends `Host: <proxy address>`.
    let routes_json = serde_json::json!({
        "routes": [{ "id": "web", "hosts": [http.ip().to_string()],
            "targets": [{ "upstreams": ["web.ferry-boot-test.svc.cluster.local:8080"] }] }]
    });
    std::fs::write(&routes, routes_json.to_string()).unwrap();
    let resolve = format!(
        "nobody.test:80=127.0.0.1,web.ferry-boot-test.svc.cluster.local:8080={upstream_addr}"
    );
    let vars = [
        ("FERRY_PROXY_LISTEN", grpc.to_string()),
        ("FERRY_PROXY_HTTP_LISTEN", http.to_string()),
        ("FERRY_PROXY_HTTPS_LISTEN", https.to_string()),
        ("FERRY_PROXY_ADMIN_LISTEN", admin.to_string()),
        ("FERRY_PROXY_ROUTES_FILE", routes.display().to_string()),
        ("FERRY_PROXY_RESOLVE", resolve),
        ("FERRY_SHUTDOWN_GRACE_SECS", "5".to_owned()),
    ];
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (process, _) = boot(BIN, &[], &env, grpc, "ferry-proxy").await;
    assert_eq!(http_get(http, "/").await, (200, "pinned ok".to_owned()));
    stop_cleanly(process, Duration::from_secs(8)).await;
}
