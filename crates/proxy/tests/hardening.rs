//! What the proxy refuses (400) or rewrites before a request reaches an
//! upstream, through real HTTP against an in-process proxy: the host it
//! routes on is the host it forwards, the path it matches prefixes on is
//! the path it forwards, no h2c upgrade passes, and forwarding headers are
//! the proxy's own. Malformed requests are written as raw bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;

use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::StatusCode;
use hyper::body::Bytes;
use support::{Proxy, field, get, raw, route, snapshot, upstream};

#[tokio::test]
async fn the_routed_host_is_the_forwarded_host() {
    let (public, admin) = (upstream("public").await, upstream("admin").await);
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![
                route("public", &["public.test"], &[("/", false, &[public.addr])]),
                route("admin", &["admin.test"], &[("/", false, &[admin.addr])]),
            ],
        ),
        &[],
    )
    .await;

    // HTTP/1.1 absolute form naming another host (or port) than Host:
    // routing would follow one and the upstream read the other.
    for (target, host) in [
        ("http://admin.test/x", "public.test"),
        ("http://public.test/x", "admin.test"),
        ("http://public.test:8080/x", "public.test"),
    ] {
        let (status, body) = raw(
            proxy.http,
            &format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{target} {host}: {body}");
        assert!(body.contains("different hosts"), "{body}");
    }
    // Agreeing spellings are one host: routed by it, forwarded normalised
    // in origin form.
    let (status, body) = raw(
        proxy.http,
        "GET http://Public.Test./x?y=1 HTTP/1.1\r\nHost: public.test:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "upstream"), "public");
    assert_eq!(field(&body, "host"), "public.test");
    assert_eq!(field(&body, "xfh"), "public.test");
    assert_eq!(field(&body, "path"), "/x?y=1");

    // A Host header is forwarded in its normal form, port kept.
    let (status, _, body) = get(proxy.http, "PUBLIC.test.:8080", "/").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(field(&body, "host"), "public.test:8080");
    assert_eq!(field(&body, "xfh"), "public.test:8080");

    // HTTP/2: `:authority` and a `host` header must agree as well.
    let mut h2 = support::h2c_client(proxy.http).await;
    let req = hyper::Request::get("http://public.test/x")
        .header("host", "admin.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = h2.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let req = hyper::Request::get("http://PUBLIC.test.:8443/x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = h2.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(field(&body, "upstream"), "public");
    assert_eq!(field(&body, "host"), "public.test:8443");
    assert_eq!(field(&body, "xfh"), "public.test:8443");

    assert_eq!(admin.hits.load(Ordering::SeqCst), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn malformed_hosts_are_refused() {
    let up = upstream("app").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("app", &["app.test"], &[("/", false, &[up.addr])])],
        ),
        &[],
    )
    .await;
    for host_lines in [
        "Host: app.test:evil\r\n",
        "Host: a:@b\r\n",
        "Host: app.test:@evil.test\r\n",
        "Host: user@app.test\r\n",
        "Host: app.test:80:80\r\n",
        "Host: app.test:\r\n",
        "Host: app.test:99999\r\n",
        "Host: :80\r\n",
        "Host: \r\n",
        "Host: app.test/admin\r\n",
        "Host: app.test\\x\r\n",
        "Host: *.app.test\r\n",
        "Host: app..test\r\n",
        "Host: app.test\r\nHost: other.test\r\n",
        "",
    ] {
        let (status, body) = raw(
            proxy.http,
            &format!("GET / HTTP/1.1\r\n{host_lines}Connection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{host_lines:?}: {body}");
        assert!(body.starts_with("bad request: "), "{body}");
    }
    // Also in an absolute-form target (userinfo, stray port).
    for target in ["http://user@app.test/", "http://app.test:/"] {
        let (status, body) = raw(
            proxy.http,
            &format!("GET {target} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{target}: {body}");
    }
    assert_eq!(up.hits.load(Ordering::SeqCst), 0);
    let (status, _, _) = get(proxy.http, "app.test:8080", "/").await;
    assert_eq!(status, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn prefixes_match_the_normalised_path_and_it_is_what_is_forwarded() {
    let (root, public, admin, stat) = (
        upstream("root").await,
        upstream("public").await,
        upstream("admin").await,
        upstream("static").await,
    );
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route(
                "site",
                &["p.test"],
                &[
                    ("/", false, &[root.addr]),
                    ("/public", false, &[public.addr]),
                    ("/admin", false, &[admin.addr]),
                    ("/static", true, &[stat.addr]),
                ],
            )],
        ),
        &[],
    )
    .await;

    // Dot segments are resolved and escaped unreserved characters decoded
    // before prefixes are matched; the upstream gets that same path and
    // the query as sent.
    for (path, to, forwarded) in [
        ("/public/x", "public", "/public/x"),
        ("/public/../admin", "admin", "/admin"),
        ("/public/%2e%2e/admin?x=1", "admin", "/admin?x=1"),
        ("/public/%2E%2e/admin/", "admin", "/admin/"),
        ("/public/.%2E/admin", "admin", "/admin"),
        ("/public/./a/%2e/b", "public", "/public/a/b"),
        ("/%61dmin/x", "admin", "/admin/x"),
        ("//admin", "admin", "/admin"),
        ("/static/../../etc/passwd", "root", "/etc/passwd"),
        ("/static/a/../b?q=%2F..", "static", "/b?q=%2F.."),
        ("/static/%2e%2e", "root", "/"),
    ] {
        let (status, _, body) = get(proxy.http, "p.test", path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(
            (field(&body, "upstream"), field(&body, "path")),
            (to, forwarded),
            "{path}"
        );
    }

    // Encoded separators, backslashes, `..;` and broken escapes mean
    // different things to different servers: refused.
    let before = [&root, &public, &admin, &stat].map(|u| u.hits.load(Ordering::SeqCst));
    for path in [
        "/public/%2fadmin",
        "/public/%2F..%2Fadmin",
        "/public/%5c..%5cadmin",
        "/public/%5C",
        "/public\\..\\admin",
        "/public/..;/admin",
        "/public/%2e%2e;x/admin",
        "/public/%zz",
        "/public/%2",
    ] {
        let (status, body) = raw(
            proxy.http,
            &format!("GET {path} HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.starts_with("bad request: "), "{path}: {body}");
    }
    // Targets that are not a path.
    for request in [
        "OPTIONS * HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n",
        "CONNECT p.test:80 HTTP/1.1\r\nHost: p.test:80\r\nConnection: close\r\n\r\n",
    ] {
        let (status, body) = raw(proxy.http, request).await;
        assert_eq!(status, 400, "{request:?}: {body}");
    }
    let after = [&root, &public, &admin, &stat].map(|u| u.hits.load(Ordering::SeqCst));
    assert_eq!(before, after, "no refused request reached an upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn h2c_upgrades_are_not_passed_upstream_and_websockets_still_are() {
    let up = upstream("app").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("app", &["app.test"], &[("/", false, &[up.addr])])],
        ),
        &[],
    )
    .await;
    // An upstream that accepted it would switch the connection to HTTP/2
    // behind the proxy's back; it must not even see the offer.
    for (connection, upgrade) in [
        ("Upgrade, HTTP2-Settings, close", "h2c"),
        // HTTP2-Settings not listed in Connection is still dropped.
        ("Upgrade, close", "H2C"),
    ] {
        let (status, body) = raw(
            proxy.http,
            &format!(
                "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: {connection}\r\n\
                 Upgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(field(&body, "upgrade"), "-", "{body}");
        assert_eq!(field(&body, "http2-settings"), "-", "{body}");
        assert_eq!(field(&body, "connection"), "-", "{body}");
    }
    // Offered with another protocol: only the other one passes.
    let (status, body) = raw(
        proxy.http,
        "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, close\r\n\
         Upgrade: h2c, websocket\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "upgrade"), "websocket", "{body}");

    let stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://app.test/echo", stream)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send("hi".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().to_text().unwrap(),
        "app:hi"
    );
    ws.close(None).await.unwrap();
    drop(ws);
    proxy.stop().await;
}

#[tokio::test]
async fn forwarding_headers_are_the_proxys_own() {
    let up = upstream("app").await;
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("app", &["app.test"], &[("/", false, &[up.addr])])],
        ),
        &[],
    )
    .await;
    let claims = [
        ("proxy-authorization", "Basic dXNlcjpwYXNz"),
        ("forwarded", "for=203.0.113.9;host=admin.test;proto=https"),
        ("x-real-ip", "203.0.113.9"),
        ("x-forwarded-for", "10.1.2.3"),
        ("x-forwarded-host", "admin.test"),
        ("x-forwarded-proto", "https"),
    ];
    let check = |body: &str| {
        assert_eq!(field(body, "upstream"), "app", "{body}");
        // Dropped: credentials for a proxy, the client's Forwarded.
        assert_eq!(field(body, "proxy-authorization"), "-", "{body}");
        assert_eq!(field(body, "forwarded"), "-", "{body}");
        // Overwritten with what the proxy saw.
        assert_eq!(field(body, "x-real-ip"), "127.0.0.1", "{body}");
        assert_eq!(field(body, "xfh"), "app.test", "{body}");
        assert_eq!(field(body, "xfp"), "http", "{body}");
        // Appended: the last element is the peer, as before.
        assert_eq!(field(body, "xff"), "10.1.2.3, 127.0.0.1", "{body}");
    };
    let (status, _, body) = support::try_get(proxy.http, "app.test", "/", &claims)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    check(&body);
    // A second Forwarded line is dropped too.
    let (status, body) = raw(
        proxy.http,
        "GET / HTTP/1.1\r\nHost: app.test\r\nForwarded: for=1.2.3.4\r\n\
         Forwarded: for=5.6.7.8\r\nX-Forwarded-For: 10.1.2.3\r\n\
         Connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&body, "forwarded"), "-", "{body}");

    // The same over HTTP/2.
    let mut h2 = support::h2c_client(proxy.http).await;
    let mut req = hyper::Request::get("http://app.test/");
    for (name, value) in claims {
        req = req.header(name, value);
    }
    let response = h2
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    check(&String::from_utf8_lossy(&body));
    proxy.stop().await;
}
