//! A minimal hyper 1 server (HTTP/1.1 and HTTP/2) with graceful drain, and
//! the two handlers the proxy has today: the data plane, which has no routes
//! yet, and the admin endpoints.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ferry_common::Shutdown;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Responses are small and built in memory.
pub type Body = Full<Bytes>;

/// Counters and flags shared by the listeners and the admin endpoints.
#[derive(Debug)]
pub struct ProxyState {
    /// True once every listener is bound; false again when draining starts.
    pub ready: AtomicBool,
    /// Requests answered on the plain HTTP listener.
    pub http_requests: AtomicU64,
    /// Connections accepted on the HTTPS listener.
    pub https_connections: AtomicU64,
    /// Process start, for the uptime gauge.
    pub started_at: SystemTime,
}

impl Default for ProxyState {
    fn default() -> Self {
        Self {
            ready: AtomicBool::new(false),
            http_requests: AtomicU64::new(0),
            https_connections: AtomicU64::new(0),
            started_at: SystemTime::now(),
        }
    }
}

/// Serves `handler` on `listener` until `shutdown` fires, then lets open
/// connections finish for at most `grace`.
pub async fn serve<H>(
    listener: TcpListener,
    name: &'static str,
    handler: H,
    shutdown: Shutdown,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> Response<Body> + Clone + Send + Sync + 'static,
{
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
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
        let handler = handler.clone();
        let service = hyper::service::service_fn(move |req| {
            let response = handler(req);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = conn.await {
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

/// The data plane: no routes exist until a later issue adds them.
pub fn data_plane(state: &ProxyState, req: &Request<Incoming>) -> Response<Body> {
    state.http_requests.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(method = %req.method(), host = ?req.headers().get("host"), path = %req.uri().path(), "no route");
    text(StatusCode::NOT_FOUND, "no route\n")
}

/// `/healthz` (alive), `/readyz` (accepting traffic), `/metrics` (Prometheus text).
pub fn admin(state: &ProxyState, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.ready.load(Ordering::Relaxed) {
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
    let ready = u8::from(state.ready.load(Ordering::Relaxed));
    format!(
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
    )
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

/// Accepts HTTPS connections and closes them: TLS termination arrives with
/// certificate management in a later issue, but the port is bound and
/// configurable now.
pub async fn https_placeholder(listener: TcpListener, state: Arc<ProxyState>, shutdown: Shutdown) {
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((_stream, peer)) => {
                    state.https_connections.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "HTTPS is not configured yet; closing connection");
                }
                Err(err) => {
                    tracing::warn!(listener = "https", error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
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
