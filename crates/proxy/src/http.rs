//! The hyper 1 server loop shared by the listeners (HTTP/1.1 and HTTP/2,
//! h2c by prior knowledge, optional TLS, graceful drain) and the admin
//! endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use ferry_common::Shutdown;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Responses are small and built in memory.
pub type Body = Full<Bytes>;

pub use crate::state::ProxyState;

/// Header and keep-alive timeouts of the data-plane listeners.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A client must send a request head within this long, also between
    /// requests on a keep-alive connection.
    pub header_timeout: Duration,
    /// TLS handshakes must finish within this long.
    pub handshake_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves connections on `listener` (TLS-terminated when `tls` is set)
/// with the service `make(peer)` builds, until `shutdown` fires, then lets
/// open connections finish for at most `grace`.
pub async fn serve<F, S, B>(
    listener: TcpListener,
    name: &'static str,
    make: F,
    tls: Option<TlsAcceptor>,
    options: ServeOptions,
    shutdown: Shutdown,
    grace: Duration,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Usually EMFILE; back off instead of spinning.
                    tracing::warn!(listener = name, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = make(peer);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let served = match tls {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(options.handshake_timeout, acceptor.accept(stream))
                            .await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(err)) => {
                            tracing::debug!(listener = name, %peer, error = %err, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(conn).await
                }
            };
            if let Err(err) = served {
                tracing::debug!(listener = name, %peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let open = graceful.count();
    tokio::select! {
        () = graceful.shutdown() => tracing::info!(listener = name, "HTTP listener drained"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            listener = name,
            open,
            "grace period elapsed; closing remaining HTTP connections"
        ),
    }
}

/// The admin endpoints as a hyper service.
pub fn admin_service(
    state: Arc<ProxyState>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ Sync
+ 'static {
    hyper::service::service_fn(move |req| std::future::ready(Ok(admin(&state, &req))))
}

/// `/healthz` (alive), `/readyz` (accepting traffic), `/metrics` (Prometheus text).
pub fn admin(state: &ProxyState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, &metrics(state));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Prometheus text exposition of the proxy's counters.
pub fn metrics(state: &ProxyState) -> String {
    let uptime = SystemTime::now()
        .duration_since(state.started_at)
        .unwrap_or_default()
        .as_secs();
    let ready = u8::from(state.is_ready());
    let mut out = format!(
        "# HELP ferry_proxy_build_info Build information.\n\
         # TYPE ferry_proxy_build_info gauge\n\
         ferry_proxy_build_info{{version=\"{version}\"}} 1\n\
         # HELP ferry_proxy_ready Whether the proxy accepts traffic.\n\
         # TYPE ferry_proxy_ready gauge\n\
         ferry_proxy_ready {ready}\n\
         # HELP ferry_proxy_uptime_seconds Seconds since the process started.\n\
         # TYPE ferry_proxy_uptime_seconds gauge\n\
         ferry_proxy_uptime_seconds {uptime}\n\
         # HELP ferry_proxy_http_requests_total Requests answered on the HTTP listener.\n\
         # TYPE ferry_proxy_http_requests_total counter\n\
         ferry_proxy_http_requests_total {http}\n\
         # HELP ferry_proxy_https_connections_total Connections accepted on the HTTPS listener.\n\
         # TYPE ferry_proxy_https_connections_total counter\n\
         ferry_proxy_https_connections_total {https}\n",
        version = env!("CARGO_PKG_VERSION"),
        http = state.http_requests.load(Ordering::Relaxed),
        https = state.https_connections.load(Ordering::Relaxed),
    );
    state.metrics.render(&mut out);
    out
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let state = ProxyState::default();
        state.http_requests.fetch_add(3, Ordering::Relaxed);
        state.ready.store(true, Ordering::Relaxed);
        assert!(metrics(&state).contains("\nferry_proxy_ready 0\n"));
        state
            .apply_snapshot(crate::config::Snapshot::default())
            .unwrap();
        let text = metrics(&state);
        assert!(
            text.contains("\nferry_proxy_http_requests_total 3\n"),
            "{text}"
        );
        assert!(text.contains("\nferry_proxy_ready 1\n"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(!name.is_empty());
            value.parse::<f64>().unwrap();
        }
    }
}
