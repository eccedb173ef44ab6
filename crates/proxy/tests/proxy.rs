//! Real HTTP through an in-process proxy to local hyper upstreams: host and
//! wildcard matching, longest prefix with strip, forwarding headers,
//! balancing and ejection, WebSocket across a route swap, streaming a large
//! body, h2c, 502/504, ACME answers and HTTPS redirects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use ferry_common::testing::free_addr;
use ferry_proxy::config::{AcmeChallenge, Balance};
use ferry_proxy::metrics::UpstreamError;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::StatusCode;
use hyper::body::Bytes;
use sha2::Digest as _;
use support::{Proxy, field, get, hex, route, snapshot, try_get, upstream};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test]
async fn hosts_wildcards_prefixes_and_forwarding_headers() {
    let (a, b, c, w) = (
        upstream("a").await,
        upstream("b").await,
        upstream("c").await,
        upstream("w").await,
    );
    let proxy = Proxy::start(
        snapshot(
            7,
            vec![
                route(
                    "app",
                    &["app.test"],
                    &[
                        ("/", false, &[a.addr]),
                        ("/api", true, &[b.addr]),
                        ("/api/v2", false, &[c.addr]),
                    ],
                ),
                route("wild", &["*.apps.test"], &[("/", false, &[w.addr])]),
                route("exact", &["special.apps.test"], &[("/", false, &[a.addr])]),
            ],
        ),
        &[],
    )
    .await;
    assert_eq!(proxy.state.current_version(), 7);
    let up = |body: &str| field(body, "upstream").to_owned();

    let (status, headers, body) = get(proxy.http, "APP.test:80", "/index.html?x=1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(up(&body), "a");
    assert_eq!(field(&body, "path"), "/index.html?x=1");
    // The host routing used, normalised (lowercase, port kept).
    assert_eq!(field(&body, "host"), "app.test:80");
    assert_eq!(field(&body, "xff"), "127.0.0.1");
    assert_eq!(field(&body, "xfp"), "http");
    assert_eq!(field(&body, "xfh"), "app.test:80");
    let rid = field(&body, "rid");
    assert!(rid.len() >= 16, "{rid}");
    assert_eq!(headers["x-request-id"], rid);

    // Longest prefix on segment boundaries; strip keeps the query.
    let (_, _, body) = get(proxy.http, "app.test", "/api/users?q=2").await;
    assert_eq!(
        (up(&body).as_str(), field(&body, "path")),
        ("b", "/users?q=2")
    );
    let (_, _, body) = get(proxy.http, "app.test", "/api").await;
    assert_eq!((up(&body).as_str(), field(&body, "path")), ("b", "/"));
    let (_, _, body) = get(proxy.http, "app.test", "/apix").await;
    assert_eq!((up(&body).as_str(), field(&body, "path")), ("a", "/apix"));
    let (_, _, body) = get(proxy.http, "app.test", "/api/v2/x").await;
    assert_eq!(
        (up(&body).as_str(), field(&body, "path")),
        ("c", "/api/v2/x")
    );

    // Wildcard: one label only; exact wins over wildcard.
    let (_, _, body) = get(proxy.http, "one.apps.test", "/").await;
    assert_eq!(up(&body), "w");
    let (_, _, body) = get(proxy.http, "special.apps.test", "/").await;
    assert_eq!(up(&body), "a");
    for host in ["a.b.apps.test", "apps.test", "unknown.test"] {
        let (status, _, body) = get(proxy.http, host, "/").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::NOT_FOUND, "no route\n"),
            "{host}"
        );
    }

    // An incoming request id is kept, XFF is appended, hop-by-hop headers
    // (including those named in Connection) are dropped.
    let (_, _, body) = try_get(
        proxy.http,
        "app.test",
        "/",
        &[
            ("x-request-id", "abc-123"),
            ("x-forwarded-for", "10.1.2.3"),
            ("connection", "x-secret"),
            ("x-secret", "1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(field(&body, "rid"), "abc-123");
    assert_eq!(field(&body, "xff"), "10.1.2.3, 127.0.0.1");
    assert_eq!(field(&body, "secret"), "-");

    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("ferry_proxy_route_requests_total{route=\"app\",class=\"2xx\"} 6\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_proxy_feed_version 7\n"),
        "{metrics}"
    );
    assert!(metrics.contains("ferry_proxy_routes 3\n"), "{metrics}");
    proxy.stop().await;
}

#[tokio::test]
async fn round_robin_least_outstanding_and_ejection() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    let dead = free_addr();
    let mut lo = route("lo", &["lo.test"], &[("/", false, &[a.addr, b.addr])]);
    lo.targets[0].balance = Balance::LeastOutstanding;
    let mut wrr = route("wrr", &["wrr.test"], &[("/", false, &[a.addr, b.addr])]);
    wrr.targets[0].weights = vec![1, 3];
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![
                wrr,
                route("rr", &["rr.test"], &[("/", false, &[a.addr, b.addr])]),
                route("ej", &["ej.test"], &[("/", false, &[dead, a.addr])]),
                lo,
            ],
        ),
        &[],
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..6 {
        let (_, _, body) = get(proxy.http, "rr.test", "/").await;
        seen.push(field(&body, "upstream").to_owned());
    }
    assert_eq!(seen.iter().filter(|u| *u == "a").count(), 3, "{seen:?}");
    assert_ne!(seen[0], seen[1], "{seen:?}");

    // Weights 1:3, spread out (never a run of four `b`).
    let mut seen = String::new();
    for _ in 0..40 {
        let (_, _, body) = get(proxy.http, "wrr.test", "/").await;
        seen.push_str(field(&body, "upstream"));
    }
    assert_eq!(seen.matches('a').count(), 10, "{seen}");
    assert!(!seen.contains("bbbb"), "{seen}");

    // Least-outstanding: a slow request holds `a` or `b`; the next requests go to the other one.
    let slow = tokio::spawn(get(proxy.http, "lo.test", "/slow"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, _, first) = get(proxy.http, "lo.test", "/").await;
    let (_, _, second) = get(proxy.http, "lo.test", "/").await;
    assert_eq!(field(&first, "upstream"), field(&second, "upstream"));
    let (_, _, slow_body) = slow.await.unwrap();
    assert_ne!(field(&slow_body, "upstream"), field(&first, "upstream"));

    // The dead upstream refuses once, is ejected, and no client sees an error.
    let before = a.hits.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..6 {
        let (status, _, body) = get(proxy.http, "ej.test", "/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(field(&body, "upstream"), "a");
    }
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst) - before, 6);
    assert_eq!(
        proxy.state.metrics.upstream_errors(UpstreamError::Connect),
        1
    );
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_failures_answer_502_and_504() {
    let slow = upstream("slow").await;
    let dead = free_addr();
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![
                route("dead", &["dead.test"], &[("/", false, &[dead])]),
                route("slow", &["slow.test"], &[("/", false, &[slow.addr])]),
                route("empty", &["empty.test"], &[("/", false, &[])]),
            ],
        ),
        &["--response-timeout-ms", "500"],
    )
    .await;
    let (status, _, body) = get(proxy.http, "dead.test", "/").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::BAD_GATEWAY, "upstream unavailable\n")
    );
    let started = std::time::Instant::now();
    let (status, _, body) = get(proxy.http, "slow.test", "/slow").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "upstream timeout\n")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    let (status, _, _) = get(proxy.http, "empty.test", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("ferry_proxy_upstream_errors_total{kind=\"connect\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_proxy_upstream_errors_total{kind=\"timeout\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_proxy_route_requests_total{route=\"dead\",class=\"5xx\"} 1\n"),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn websocket_echo_survives_a_route_swap() {
    let ws_up = upstream("ws").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("ws", &["ws.test"], &[("/", false, &[ws_up.addr])])],
        ),
        &[],
    )
    .await;
    let stream = TcpStream::connect(proxy.http).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://ws.test/echo", stream)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send("one".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        "ws:one"
    );

    // Remove the route: new requests get 404, the open socket keeps working.
    proxy.state.apply_snapshot(snapshot(2, vec![])).unwrap();
    let (status, _, _) = get(proxy.http, "ws.test", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    ws.send("two".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        "ws:two"
    );
    ws.close(None).await.unwrap();
    // An open tunnel would hold the drain for the grace period.
    drop(ws);
    proxy.stop().await;
}

#[tokio::test]
async fn large_bodies_stream_through_without_buffering() {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 64 << 10;
    let up = upstream("big").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("big", &["big.test"], &[("/", false, &[up.addr])])],
        ),
        &[],
    )
    .await;
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i * 31 % 251) as u8).collect();
    let mut expected = sha2::Sha256::new();
    for _ in 0..TOTAL / CHUNK {
        expected.update(&chunk);
    }
    let expected = hex(&expected.finalize());

    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: big.test\r\nContent-Length: {TOTAL}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Send 1 MiB, then wait until the upstream has seen body bytes: the
    // proxy forwards before the client has finished sending.
    for _ in 0..16 {
        stream.write_all(&chunk).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(5), up.first_bytes.notified())
        .await
        .expect("upstream sees the body before the client finished sending");
    for _ in 16..TOTAL / CHUNK {
        stream.write_all(&chunk).await.unwrap();
    }
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    assert_eq!(field(body, "len"), TOTAL.to_string());
    assert_eq!(field(body, "sha256"), expected);
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied() {
    let up = upstream("h2").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("h2", &["h2.test"], &[("/", false, &[up.addr])])],
        ),
        &[],
    )
    .await;
    let mut send = support::h2c_client(proxy.http).await;
    let req = hyper::Request::get("http://h2.test/hello")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(field(&body, "upstream"), "h2");
    assert_eq!(field(&body, "host"), "h2.test");
    proxy.stop().await;
}

#[tokio::test]
async fn acme_challenges_and_https_redirects() {
    let up = upstream("app").await;
    let mut secure = route("secure", &["secure.test"], &[("/", false, &[up.addr])]);
    secure.redirect_https = true;
    let mut snap = snapshot(
        1,
        vec![
            secure,
            route("plain", &["plain.test"], &[("/", false, &[up.addr])]),
        ],
    );
    snap.acme_challenges.push(AcmeChallenge {
        token: "tok_EN-1".into(),
        key_authorization: "tok_EN-1.thumbprint".into(),
    });
    let proxy = Proxy::start(snap, &[]).await;

    // Answered for any host, even unknown ones, and before the redirect.
    for host in ["secure.test", "unknown.test"] {
        let (status, _, body) = get(proxy.http, host, "/.well-known/acme-challenge/tok_EN-1").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "tok_EN-1.thumbprint"),
            "{host}"
        );
    }
    let (status, _, _) = get(
        proxy.http,
        "unknown.test",
        "/.well-known/acme-challenge/other",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, headers, _) = get(proxy.http, "secure.test:8080", "/a/b?c=d").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "https://secure.test/a/b?c=d");
    let (status, _, _) = get(proxy.http, "plain.test", "/").await;
    assert_eq!(status, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn routes_file_serves_standalone_and_the_example_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/routes.json");
    let parsed = ferry_proxy::load_routes_file(&example).unwrap();
    assert_eq!(parsed.routes.len(), 2);
    ferry_proxy::ProxyState::default()
        .apply_snapshot(parsed)
        .unwrap();

    let up = upstream("file").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.json");
    let json = format!(
        r#"{{"routes": [{{"id": "f", "hosts": ["file.test"],
            "targets": [{{"path_prefix": "/svc", "strip_prefix": true, "upstreams": ["{}"]}}]}}]}}"#,
        up.addr
    );
    std::fs::write(&file, json).unwrap();
    // The state starts with nothing; the routes file replaces it.
    let proxy = Proxy::start(
        snapshot(0, vec![]),
        &["--routes-file", file.to_str().unwrap()],
    )
    .await;
    let (status, _, body) = get(proxy.http, "file.test", "/svc/a?b").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "path"), "/a?b");
    proxy.stop().await;

    // A broken routes file stops start-up with a clear error.
    std::fs::write(
        &file,
        r#"{"routes": [{"id": "x", "hosts": ["bad host"], "targets": []}]}"#,
    )
    .unwrap();
    let args = <ferry_proxy::Args as clap::Parser>::parse_from([
        "ferry-proxy",
        "--routes-file",
        file.to_str().unwrap(),
    ]);
    let err = ferry_proxy::run(args, ferry_common::Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad host"), "{err}");
}

/// A route whose one target balances over upstreams given by name.
fn named_route(id: &str, host: &str, upstreams: &[&str]) -> ferry_proxy::config::Route {
    ferry_proxy::config::Route {
        id: id.into(),
        hosts: vec![host.into()],
        targets: vec![ferry_proxy::config::Target {
            path_prefix: "/".into(),
            strip_prefix: false,
            upstreams: upstreams.iter().map(|u| (*u).to_owned()).collect(),
            balance: Balance::RoundRobin,
            protocol: Default::default(),
            weights: Vec::new(),
        }],
        redirect_https: false,
    }
}

#[tokio::test]
async fn resolve_overrides_reach_in_cluster_names() {
    let (a, b) = (upstream("a").await, upstream("b").await);
    // In-cluster names that do not resolve outside a cluster.
    let web = "web.ferry-resolve-test.svc.cluster.local:8080";
    let api = format!("API.ferry-resolve-test.svc.cluster.local:{}", b.addr.port());
    let other = "other.ferry-resolve-test.svc.cluster.local:8080";
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![
                named_route("web", "web.test", &[web]),
                named_route("api", "api.test", &[api.as_str()]),
                named_route("other", "other.test", &[other]),
            ],
        ),
        &[
            // NAME:PORT=IP:PORT, and NAME:PORT=IP (the port stays) matched
            // case-insensitively; commas separate several.
            "--resolve",
            &format!("{web}={}", a.addr),
            "--resolve",
            &format!(
                "nobody.test:1=127.0.0.1,{}=127.0.0.1",
                api.to_ascii_lowercase()
            ),
            "--connect-timeout-ms",
            "1000",
        ],
    )
    .await;

    for _ in 0..3 {
        let (status, _, body) = get(proxy.http, "web.test", "/x").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The upstream still sees the client's host, not the override.
        assert_eq!(
            (field(&body, "upstream"), field(&body, "host")),
            ("a", "web.test")
        );
        let (status, _, body) = get(proxy.http, "api.test", "/").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(field(&body, "upstream"), "b");
    }
    assert_eq!(a.hits.load(std::sync::atomic::Ordering::SeqCst), 3);

    // Without an override the same kind of name is not reachable.
    let (status, _, body) = get(proxy.http, "other.test", "/").await;
    assert!(
        status == StatusCode::BAD_GATEWAY || status == StatusCode::GATEWAY_TIMEOUT,
        "{status} {body}"
    );
    proxy.stop().await;
}

#[test]
fn resolve_flag_rejects_malformed_overrides() {
    use clap::Parser as _;
    for bad in ["web:8080", "web=127.0.0.1", "web:8080=not-an-ip"] {
        assert!(
            ferry_proxy::Args::try_parse_from(["ferry-proxy", "--resolve", bad]).is_err(),
            "{bad}"
        );
    }
    let args = ferry_proxy::Args::try_parse_from([
        "ferry-proxy",
        "--resolve",
        "a:1=127.0.0.1,b:2=127.0.0.2:3",
        "--resolve",
        "c:4=::1",
    ])
    .unwrap();
    let got: Vec<String> = args
        .resolve
        .iter()
        .map(|o| format!("{}={}", o.upstream, o.addr))
        .collect();
    assert_eq!(got, ["a:1=127.0.0.1:1", "b:2=127.0.0.2:3", "c:4=[::1]:4"]);
}

#[tokio::test]
async fn stalled_bodies_are_cut_after_the_idle_timeout() {
    // An upstream that sends part of a chunked body, then nothing, holding
    // the connection open; it also never reads a request body to its end.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_addr = stall.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = stall.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).starts_with("GET") {
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
                    )
                    .await
                    .ok();
                }
                // Keep reading (a stalled request body) without answering.
                while conn.read(&mut buf).await.is_ok_and(|n| n > 0) {}
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let up = upstream("echo").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![
                route("stall", &["stall.test"], &[("/", false, &[stall_addr])]),
                route("echo", &["echo.test"], &[("/", false, &[up.addr])]),
            ],
        ),
        &["--idle-timeout-secs", "1"],
    )
    .await;

    // Response direction: the client gets the first chunk, then the
    // connection ends short of a complete body instead of hanging.
    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: stall.test\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut raw))
        .await
        .expect("the proxy cuts a stalled response body")
        .ok();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("hello"), "{raw}");
    assert!(!raw.ends_with("0\r\n\r\n"), "no clean end of body: {raw}");
    assert!(started.elapsed() >= Duration::from_millis(900));

    // Request direction: a client that stops sending mid-body does not
    // hold the upstream forever; the upstream sees the body fail.
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    client
        .write_all(
            b"POST /upload HTTP/1.1\r\nhost: echo.test\r\ncontent-length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut raw))
        .await
        .expect("the proxy gives up on a stalled request body")
        .ok();
    let raw = String::from_utf8_lossy(&raw);
    assert!(!raw.contains("len=100"), "{raw}");
    proxy.stop().await;
}

#[tokio::test]
async fn websockets_get_the_grace_period_on_shutdown() {
    let ws_up = upstream("ws").await;
    let open_ws = |proxy: std::net::SocketAddr| async move {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async("ws://ws.test/echo", stream)
            .await
            .unwrap();
        ws
    };
    let routes = || {
        snapshot(
            1,
            vec![route("ws", &["ws.test"], &[("/", false, &[ws_up.addr])])],
        )
    };

    // A socket that closes on its own during the drain ends it early.
    let proxy = Proxy::start(routes(), &["--shutdown-grace-secs", "8"]).await;
    let mut ws = open_ws(proxy.http).await;
    proxy.shutdown.trigger();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws.send("still there".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        "ws:still there"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    let started = std::time::Instant::now();
    proxy.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // One that stays open is closed when the grace period runs out.
    let proxy = Proxy::start(routes(), &["--shutdown-grace-secs", "1"]).await;
    let mut ws = open_ws(proxy.http).await;
    let started = std::time::Instant::now();
    proxy.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the tunnel is closed");
    assert!(!matches!(&ended, Some(Ok(m)) if m.is_text()), "{ended:?}");
}

#[tokio::test]
async fn h2c_upstreams_carry_grpc_style_trailers() {
    let grpc = support::upstream_h2c("grpc").await;
    let mut r = route("grpc", &["grpc.test"], &[("/", false, &[grpc])]);
    r.targets[0].protocol = ferry_proxy::config::UpstreamProtocol::H2c;
    let proxy = Proxy::start(snapshot(1, vec![r]), &[]).await;

    // An HTTP/2 client (gRPC-like): te: trailers reaches the upstream and
    // the trailers come back.
    let mut send = support::h2c_client(proxy.http).await;
    for i in 0..3 {
        let req = hyper::Request::post("http://grpc.test/pkg.Svc/Call")
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(http_body_util::Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let response = send.send_request(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "call {i}");
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "0");
        let body = String::from_utf8_lossy(&collected.to_bytes()).into_owned();
        assert_eq!(field(&body, "upstream"), "grpc");
        assert_eq!(field(&body, "version"), "HTTP/2.0");
        assert_eq!(field(&body, "authority"), "grpc.test");
        assert_eq!(field(&body, "te"), "trailers");
        assert_eq!(field(&body, "path"), "/pkg.Svc/Call");
    }

    // An HTTP/1.1 client reaches the same upstream over HTTP/2.
    let (status, _, body) = get(proxy.http, "grpc.test", "/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(field(&body, "version"), "HTTP/2.0");
    assert_eq!(field(&body, "te"), "-");
    proxy.stop().await;
}
