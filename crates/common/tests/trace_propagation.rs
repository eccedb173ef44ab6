//! W3C trace context across a real gRPC hop on loopback TCP: the client's
//! span and the server's RPC span are one trace, the server's a child of
//! the client's. Spans are collected by an in-memory exporter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ferry_common::telemetry::TraceContextInterceptor;
use ferry_common::{GrpcServer, Shutdown, SystemInfo};
use ferry_proto::ferry::v1 as pb;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use pb::system_service_client::SystemServiceClient;
use tokio::net::TcpListener;
use tonic::transport::Endpoint;
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// Waits until spans named `client` and `server` have been exported.
async fn finished(
    exporter: &InMemorySpanExporter,
    client: &str,
    server: &str,
) -> (SpanData, SpanData) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        let find = |name: &str| spans.iter().find(|s| s.name == name).cloned();
        if let (Some(c), Some(s)) = (find(client), find(server)) {
            return (c, s);
        }
        assert!(tokio::time::Instant::now() < deadline, "spans: {spans:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_servers_rpc_span_is_a_child_of_the_client_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // nextest runs each test in its own process.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = Shutdown::new();
    let server = tokio::spawn(
        GrpcServer::new(SystemInfo::new("ferry-test", "test")).serve(
            listener,
            std::future::ready(()),
            shutdown.clone(),
        ),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SystemServiceClient::with_interceptor(channel, TraceContextInterceptor);
    let call = tracing::info_span!("client_call", otel.kind = "client");
    client
        .get_server_info(pb::GetServerInfoRequest {})
        .instrument(call)
        .await
        .unwrap();

    let (client_span, server_span) = finished(&exporter, "client_call", "grpc").await;
    assert_eq!(
        server_span.span_context.trace_id(),
        client_span.span_context.trace_id(),
        "one trace across the hop"
    );
    assert_eq!(
        server_span.parent_span_id,
        client_span.span_context.span_id()
    );
    assert!(server_span.parent_span_is_remote);

    shutdown.trigger();
    server.await.unwrap().unwrap();
}
