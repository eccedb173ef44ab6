//! The api's HTTP listener (`--http-listen`): push webhooks at
//! `POST /hooks/git/{integration_id}` and `GET /healthz`. Everything else
//! is gRPC.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_common::Shutdown;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::builds::webhook::{MAX_BODY, Webhooks};

/// How long a client may take to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

fn reply(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Routes one request.
pub async fn handle(webhooks: &Webhooks, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok"),
        (method, p) if p.starts_with("/hooks/git/") => {
            if method != Method::POST {
                return reply(StatusCode::METHOD_NOT_ALLOWED, "POST only");
            }
            let id = p.trim_start_matches("/hooks/git/").trim_end_matches('/');
            if request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .is_some_and(|n| n > MAX_BODY)
            {
                return reply(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the body is larger than 1 MiB",
                );
            }
            let (parts, body) = request.into_parts();
            let collected =
                tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect()).await;
            let body = match collected {
                Ok(Ok(b)) => b.to_bytes(),
                Ok(Err(_)) => {
                    return reply(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "the body is larger than 1 MiB",
                    );
                }
                Err(_) => return reply(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
            };
            let answer = webhooks.receive(id, &parts.headers, &body).await;
            let mut response = reply(answer.status, &answer.message);
            if !answer.queued.is_empty() {
                let ids: Vec<String> = answer.queued.iter().map(ToString::to_string).collect();
                let body = serde_json::json!({ "message": answer.message, "builds": ids });
                *response.body_mut() = Full::new(Bytes::from(body.to_string()));
            }
            response
        }
        _ => reply(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Serves HTTP on `listener` until `shutdown`, then drains for `grace`.
pub async fn serve(listener: TcpListener, webhooks: Webhooks, shutdown: Shutdown, grace: Duration) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let webhooks = Arc::new(webhooks);
    let graceful = GracefulShutdown::new();
    let stop = shutdown.wait();
    tokio::pin!(stop);
    loop {
        let (stream, _peer): (_, SocketAddr) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    tracing::warn!(error = %err, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let webhooks = webhooks.clone();
        let service = hyper::service::service_fn(move |req| {
            let webhooks = webhooks.clone();
            async move { Ok::<_, Infallible>(handle(&webhooks, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(err) = watched.await {
                tracing::debug!(error = %err, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!("HTTP connections still open after the grace period"),
    }
}
