//! Shared helpers for the proxy's integration tests: an in-process proxy
//! and local hyper upstreams that describe what they received.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser as _;
use ferry_common::Shutdown;
use ferry_proxy::config::{Balance, Route, Snapshot, Target};
use ferry_proxy::{Args, ProxyState};
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderMap;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::Digest as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A proxy running in this process.
pub struct Proxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub state: Arc<ProxyState>,
    pub shutdown: Shutdown,
    pub task: JoinHandle<ferry_proxy::Result<()>>,
}

impl Proxy {
    pub async fn start(snapshot: Snapshot, extra: &[&str]) -> Self {
        // Port 0 everywhere, read back from the bound listeners: a port
        // picked and released beforehand can be picked again by a parallel
        // test, and SO_REUSEPORT would then let both proxies share it.
        let mut argv: Vec<String> = vec!["ferry-proxy".into()];
        for flag in [
            "--listen",
            "--http-listen",
            "--https-listen",
            "--admin-listen",
        ] {
            argv.push(flag.into());
            argv.push("127.0.0.1:0".into());
        }
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        let args = Args::parse_from(argv);
        let listeners = ferry_proxy::Listeners::bind(&args).await.unwrap();
        let (http, https, admin) = (
            listeners.http_addr().unwrap(),
            listeners.https_addr().unwrap(),
            listeners.admin_addr().unwrap(),
        );
        let state = Arc::new(ProxyState::default());
        state.apply_snapshot(snapshot).unwrap();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(ferry_proxy::run_with_listeners(
            args,
            listeners,
            state.clone(),
            shutdown.clone(),
        ));
        // Wait until the admin port says ready.
        for _ in 0..200 {
            if let Ok((StatusCode::OK, _, _)) = try_get(admin, "admin", "/readyz", &[]).await {
                return Self {
                    http,
                    https,
                    admin,
                    state,
                    shutdown,
                    task,
                };
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("proxy did not become ready");
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("proxy stops")
            .unwrap()
            .unwrap();
    }

    pub async fn metrics(&self) -> String {
        get(self.admin, "admin", "/metrics").await.2
    }
}

/// A route with one target per `(prefix, strip, upstreams)`.
pub fn route(id: &str, hosts: &[&str], targets: &[(&str, bool, &[SocketAddr])]) -> Route {
    Route {
        id: id.into(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        targets: targets
            .iter()
            .map(|(prefix, strip, ups)| Target {
                path_prefix: (*prefix).to_owned(),
                strip_prefix: *strip,
                upstreams: ups.iter().map(ToString::to_string).collect(),
                balance: Balance::RoundRobin,
                protocol: Default::default(),
                weights: Vec::new(),
            })
            .collect(),
        redirect_https: false,
    }
}

pub fn snapshot(version: u64, routes: Vec<Route>) -> Snapshot {
    Snapshot {
        version,
        routes,
        ..Snapshot::default()
    }
}

/// A local upstream. Every answer starts with `upstream=<name>` and lists
/// what it received; `/slow` waits 3 s; a POST body is hashed while it
/// streams in; WebSocket upgrades get an echo server.
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Notified when the first body bytes of a POST arrive.
    pub first_bytes: Arc<Notify>,
}

pub async fn upstream(name: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let first_bytes = Arc::new(Notify::new());
    let (h, f) = (hits.clone(), first_bytes.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (hits, first_bytes) = (h.clone(), f.clone());
            let service = hyper::service::service_fn(move |req| {
                hits.fetch_add(1, Ordering::SeqCst);
                upstream_handle(name, req, first_bytes.clone())
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades(),
            );
        }
    });
    Upstream {
        addr,
        hits,
        first_bytes,
    }
}

async fn upstream_handle(
    name: &'static str,
    mut req: Request<Incoming>,
    first_bytes: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let h = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned()
    };
    if let Some(key) = req.headers().get("sec-websocket-key") {
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = TokioIo::new(upgrade.await.unwrap());
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                io,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    let text = format!("{name}:{}", msg.to_text().unwrap_or(""));
                    if ws.send(text.into()).await.is_err() {
                        break;
                    }
                }
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", accept)
            .body(Full::default())
            .unwrap());
    }
    let mut text = format!(
        "upstream={name}\npath={}\nhost={}\nxff={}\nxfp={}\nxfh={}\nrid={}\nsecret={}\n",
        req.uri()
            .path_and_query()
            .map_or("", hyper::http::uri::PathAndQuery::as_str),
        h("host"),
        h("x-forwarded-for"),
        h("x-forwarded-proto"),
        h("x-forwarded-host"),
        h("x-request-id"),
        h("x-secret"),
    );
    // Headers a client could use to mislead the upstream.
    for name in [
        "upgrade",
        "connection",
        "http2-settings",
        "x-real-ip",
        "forwarded",
        "proxy-authorization",
    ] {
        text.push_str(&format!("{name}={}\n", h(name)));
    }
    if req.uri().path() == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    if req.method() == hyper::Method::POST {
        let mut body = req.into_body();
        let mut hasher = sha2::Sha256::new();
        let mut len = 0usize;
        let mut notified = false;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                if !notified && !data.is_empty() {
                    first_bytes.notify_one();
                    notified = true;
                }
                len += data.len();
                hasher.update(&data);
            }
        }
        text.push_str(&format!("len={len}\nsha256={}\n", hex(&hasher.finalize())));
    }
    Ok(Response::new(Full::new(Bytes::from(text))))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// GET `path` with `Host: host` on a fresh HTTP/1.1 connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, HeaderMap, String) {
    try_get(addr, host, path, &[]).await.unwrap()
}

pub async fn try_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, String), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        send.send_request(req.body(Empty::<Bytes>::new())?),
    )
    .await??;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// Writes `request` as is on a new connection and reads until the proxy
/// closes it (send `Connection: close`): the status and the body. For
/// requests a well-behaved client library would not send.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// The value of `key=` in an upstream's description.
pub fn field<'a>(body: &'a str, key: &str) -> &'a str {
    body.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {body:?}"))
}

/// A local HTTP/2-only (prior knowledge) upstream, like a gRPC server: it
/// answers with `upstream=<name>`, the version, `:authority` and `te` it
/// saw, followed by a `grpc-status: 0` trailer.
pub async fn upstream_h2c(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                let text = format!(
                    "upstream={name}\nversion={:?}\nauthority={}\nte={}\npath={}\n",
                    req.version(),
                    req.uri().authority().map_or("-", |a| a.as_str()),
                    req.headers()
                        .get("te")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-"),
                    req.uri().path(),
                );
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                let frames = vec![
                    Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(text))),
                    Ok(hyper::body::Frame::trailers(trailers)),
                ];
                let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                Ok::<_, Infallible>(Response::new(body))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    addr
}

/// An HTTP/2 (prior knowledge) client connection to `addr`.
pub async fn h2c_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    send
}
