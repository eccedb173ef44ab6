//! TLS on the HTTPS listener with certificates generated here: SNI picks
//! exact and wildcard certificates from the snapshot, ALPN negotiates h2,
//! unknown names fall back to the default certificate or are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use ferry_proxy::config::{Certificate, Snapshot};
use http_body_util::{BodyExt as _, Empty};
use hyper::StatusCode;
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use support::{Proxy, field, route, snapshot, upstream};
use tokio::net::TcpStream;

struct Generated {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn generate(names: &[&str]) -> Generated {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    Generated {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

fn client(roots: &[&Generated], alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    ferry_proxy::tls::install_provider();
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.der.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// An HTTPS GET for `name` (SNI and Host); returns ALPN, status and body.
async fn https_get(
    addr: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
    name: &str,
) -> std::io::Result<(Vec<u8>, StatusCode, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = connector.connect(server_name, tcp).await?;
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let io = TokioIo::new(tls);
    let response = if alpn == b"h2" {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("https://{name}/path"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/path")
            .header("host", name)
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    };
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((alpn, status, String::from_utf8_lossy(&body).into_owned()))
}

fn with_certs(mut snap: Snapshot, certs: &[(&Generated, &[&str])]) -> Snapshot {
    snap.certificates = certs
        .iter()
        .map(|(g, hosts)| Certificate {
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            cert_pem: g.cert_pem.clone(),
            key_pem: g.key_pem.clone(),
        })
        .collect();
    snap
}

#[tokio::test]
async fn sni_selects_snapshot_certificates_and_refuses_unknown_names() {
    let up = upstream("tls").await;
    let exact = generate(&["secure.test"]);
    let wild = generate(&["*.wild.test"]);
    let mut secure = route(
        "secure",
        &["secure.test", "*.wild.test"],
        &[("/", false, &[up.addr])],
    );
    // Redirects apply to plain HTTP only.
    secure.redirect_https = true;
    let snap = with_certs(
        snapshot(1, vec![secure]),
        &[(&exact, &["secure.test"]), (&wild, &["*.wild.test"])],
    );
    let proxy = Proxy::start(snap, &[]).await;
    let trusting = client(&[&exact, &wild], &[b"h2", b"http/1.1"]);

    let (alpn, status, body) = https_get(proxy.https, &trusting, "secure.test")
        .await
        .unwrap();
    assert_eq!(
        (alpn.as_slice(), status),
        (&b"h2"[..], StatusCode::OK),
        "{body}"
    );
    assert_eq!(field(&body, "upstream"), "tls");
    assert_eq!(field(&body, "xfp"), "https");

    let http1 = client(&[&exact, &wild], &[b"http/1.1"]);
    let (alpn, status, body) = https_get(proxy.https, &http1, "a.wild.test").await.unwrap();
    assert_eq!(
        (alpn.as_slice(), status),
        (&b"http/1.1"[..], StatusCode::OK),
        "{body}"
    );

    // Only the exact certificate is trusted: the wildcard one must not be
    // served for secure.test, and vice versa.
    let only_exact = client(&[&exact], &[]);
    assert!(
        https_get(proxy.https, &only_exact, "x.wild.test")
            .await
            .is_err()
    );
    // No certificate and no default: the handshake is refused.
    assert!(
        https_get(proxy.https, &trusting, "other.test")
            .await
            .is_err()
    );
    assert!(
        https_get(proxy.https, &trusting, "a.b.wild.test")
            .await
            .is_err()
    );

    // A new snapshot brings a certificate for a new host.
    let other = generate(&["other.test"]);
    let snap = with_certs(
        snapshot(
            2,
            vec![route("other", &["other.test"], &[("/", false, &[up.addr])])],
        ),
        &[(&other, &["other.test"])],
    );
    proxy.state.apply_snapshot(snap).unwrap();
    let trusting = client(&[&other], &[]);
    let (_, status, _) = https_get(proxy.https, &trusting, "other.test")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    proxy.stop().await;
}

#[tokio::test]
async fn default_certificate_covers_unknown_names() {
    let up = upstream("d").await;
    let fallback = generate(&["fallback.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &fallback.cert_pem).unwrap();
    std::fs::write(&key, &fallback.key_pem).unwrap();
    let proxy = Proxy::start(
        snapshot(
            1,
            vec![route("fb", &["fallback.test"], &[("/", false, &[up.addr])])],
        ),
        &[
            "--default-cert",
            cert.to_str().unwrap(),
            "--default-key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    let (_, status, body) = https_get(proxy.https, &client(&[&fallback], &[]), "fallback.test")
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    // An unknown name still completes the handshake (with the default
    // certificate) and then gets the plain 404.
    let tcp = TcpStream::connect(proxy.https).await.unwrap();
    let connector = client(&[&fallback], &[]);
    let tls = connector
        .connect(ServerName::try_from("fallback.test").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/")
        .header("host", "nobody.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send.send_request(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    proxy.stop().await;
}

#[test]
fn an_unchanged_certificate_is_not_parsed_again_on_a_route_change() {
    let (a, b) = (generate(&["a.test"]), generate(&["b.test"]));
    let cert = |g: &Generated, host: &str| Certificate {
        hosts: vec![host.into()],
        cert_pem: g.cert_pem.clone(),
        key_pem: g.key_pem.clone(),
    };
    let state = ferry_proxy::ProxyState::default();
    let mut snap = Snapshot {
        version: 1,
        certificates: vec![cert(&a, "a.test"), cert(&b, "b.test")],
        ..Snapshot::default()
    };
    state.apply_snapshot(snap.clone()).unwrap();
    let first = state.table();
    // A route change; b's key is replaced, a's is not.
    let b2 = generate(&["b.test"]);
    snap.version = 2;
    snap.certificates[1] = cert(&b2, "b.test");
    snap.routes.push(route("r", &["r.test"], &[]));
    state.apply_snapshot(snap).unwrap();
    let second = state.table();
    let key = |t: &ferry_proxy::table::Table, name| t.certs().get(name).unwrap().clone();
    assert!(Arc::ptr_eq(&key(&first, "a.test"), &key(&second, "a.test")));
    assert!(!Arc::ptr_eq(
        &key(&first, "b.test"),
        &key(&second, "b.test")
    ));
    assert_eq!(second.certs().len(), 2);
}
