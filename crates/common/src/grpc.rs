//! The gRPC server bootstrap every service uses.
//!
//! [`GrpcServer::serve`] mounts the service's own gRPC services next to:
//! - `ferry.v1.SystemService` (from [`SystemInfo`]);
//! - the standard health service `grpc.health.v1.Health`;
//! - server reflection (`grpc.reflection.v1` and `v1alpha`) over every Ferry
//!   `.proto` plus the health protocol.
//!
//! Health is readiness: `NOT_SERVING` (for `""` and each service name)
//! until the service says it is ready, then whatever the service says.
//! [`GrpcServer::serve`] takes a latch (a future: `SERVING` once it
//! resolves, for good); [`GrpcServer::serve_with_readiness`] a
//! [`watch`](tokio::sync::watch) channel the service flips both ways (the
//! scheduler: `NOT_SERVING` while its database is unreachable). When
//! shutdown starts everything is `NOT_SERVING` again while in-flight RPCs
//! drain for at most the grace period.
//!
//! One more name, [`LIVENESS`], is `SERVING` from start to shutdown
//! whatever the readiness: a liveness probe asks for it, so a replica that
//! is alive but cut off from its database is taken out of rotation, not
//! restarted. Each RPC runs in a span built by
//! [`grpc_request_span`](crate::telemetry::grpc_request_span).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::shutdown::{Shutdown, drain};
use crate::system::SystemInfo;
use crate::telemetry::grpc_request_span;
use crate::{Error, Result};

/// How often HTTP/2 pings idle clients, so dead peers are noticed.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The health service name that is `SERVING` while the process runs, ready
/// or not (`grpc: {port, service: liveness}` in a liveness probe).
pub const LIVENESS: &str = "liveness";

/// Binds a TCP listener with a helpful error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// A service's own gRPC services, with their names for health reporting.
#[derive(Debug, Default)]
pub struct GrpcServices {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl GrpcServices {
    /// No services yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a generated tonic server (`FooServiceServer::new(impl)`).
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tonic::codegen::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Names of the services added so far.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// Builder for one service's gRPC server.
#[derive(Debug)]
pub struct GrpcServer {
    services: GrpcServices,
    system: SystemInfo,
    grace: Duration,
}

impl GrpcServer {
    /// A server that will answer `SystemService` with `system`.
    pub fn new(system: SystemInfo) -> Self {
        Self {
            services: GrpcServices::new(),
            system,
            grace: Duration::from_secs(10),
        }
    }

    /// Mounts the service's own gRPC services.
    pub fn services(mut self, services: GrpcServices) -> Self {
        let GrpcServices { routes, names } = services;
        self.services.routes = routes;
        self.services.names = names;
        self
    }

    /// How long in-flight RPCs may run after shutdown starts (default 10 s).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Serves on `listener` until `shutdown` fires, then drains.
    ///
    /// Health reports `SERVING` once `ready` resolves. Returns when every
    /// connection has closed or the grace period has run out.
    pub async fn serve<R>(self, listener: TcpListener, ready: R, shutdown: Shutdown) -> Result<()>
    where
        R: Future<Output = ()> + Send + 'static,
    {
        let (ready_tx, readiness) = watch::channel(false);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.wait() => {}
                () = ready => {
                    let _ = ready_tx.send(true);
                }
            }
        });
        self.serve_with_readiness(listener, readiness, shutdown)
            .await
    }

    /// Serves on `listener` until `shutdown` fires, then drains.
    ///
    /// Health follows `readiness`: `SERVING` while it holds `true`,
    /// `NOT_SERVING` while it holds `false` (the start, too). A dropped
    /// sender leaves the last value in place until shutdown.
    pub async fn serve_with_readiness(
        self,
        listener: TcpListener,
        mut readiness: watch::Receiver<bool>,
        shutdown: Shutdown,
    ) -> Result<()> {
        let addr = listener.local_addr()?;
        let service_name = self.system.service_name;
        let GrpcServices {
            mut routes,
            mut names,
        } = self.services;

        let system = self.system.into_service();
        names.push(<ferry_proto::ferry::v1::system_service_server::SystemServiceServer<SystemInfo> as NamedService>::NAME);
        routes.add_service(system);

        let (reporter, health) = tonic_health::server::health_reporter();
        set_all(&reporter, &names, ServingStatus::NotServing).await;
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        routes.add_service(health);

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(ferry_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        routes.add_service(reflection);
        routes.add_service(reflection_alpha);

        // The health latch doubles as tonic's stop signal, so NOT_SERVING is
        // published before the listener closes and connections drain.
        let latch = {
            let shutdown = shutdown.clone();
            let names = names.clone();
            async move {
                let mut serving = false;
                let mut ever = false;
                loop {
                    let ready = *readiness.borrow_and_update();
                    if ready != serving {
                        serving = ready;
                        if ready {
                            set_all(&reporter, &names, ServingStatus::Serving).await;
                            if ever {
                                tracing::info!(
                                    service = service_name,
                                    "ready again: health is SERVING"
                                );
                            } else {
                                tracing::info!(service = service_name, %addr, "ready: health is SERVING");
                            }
                            ever = true;
                        } else {
                            set_all(&reporter, &names, ServingStatus::NotServing).await;
                            tracing::warn!(
                                service = service_name,
                                "not ready: health is NOT_SERVING"
                            );
                        }
                    }
                    tokio::select! {
                        biased;
                        () = shutdown.wait() => break,
                        changed = readiness.changed() => {
                            if changed.is_err() {
                                // Nobody can change it any more: keep it.
                                shutdown.wait().await;
                                break;
                            }
                        }
                    }
                }
                set_all(&reporter, &names, ServingStatus::NotServing).await;
                reporter
                    .set_service_status(LIVENESS, ServingStatus::NotServing)
                    .await;
                tracing::info!(
                    service = service_name,
                    "health is NOT_SERVING; draining gRPC"
                );
            }
        };

        tracing::info!(service = service_name, %addr, services = ?names, "gRPC listening");
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .trace_fn(grpc_request_span)
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                latch,
            );

        match drain(server, &shutdown, self.grace, "gRPC server").await {
            Some(result) => result?,
            None => tracing::warn!(
                service = service_name,
                "gRPC connections cut after grace period"
            ),
        }
        tracing::info!(service = service_name, "gRPC server stopped");
        Ok(())
    }
}

async fn set_all(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(name, status).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ferry_proto::ferry::v1::GetServerInfoRequest;
    use ferry_proto::ferry::v1::system_service_client::SystemServiceClient;
    use tonic::transport::{Channel, Endpoint};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus as Wire;
    use tonic_health::pb::health_client::HealthClient;

    async fn check(channel: &Channel, service: &str) -> Wire {
        HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status()
    }

    #[tokio::test]
    async fn health_latches_on_readiness_and_shutdown_stops_the_server() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::new();
        let server = tokio::spawn(
            GrpcServer::new(SystemInfo::new("ferry-test", "0.0.0"))
                .grace(Duration::from_secs(5))
                .serve(
                    listener,
                    async move {
                        ready_rx.await.ok();
                    },
                    shutdown.clone(),
                ),
        );
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();

        assert_eq!(check(&channel, "").await, Wire::NotServing);
        ready_tx.send(()).unwrap();
        let mut status = Wire::NotServing;
        for _ in 0..50 {
            status = check(&channel, "").await;
            if status == Wire::Serving {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, Wire::Serving);
        assert_eq!(
            check(&channel, "ferry.v1.SystemService").await,
            Wire::Serving
        );

        let info = SystemServiceClient::new(channel.clone())
            .get_server_info(GetServerInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(info.service, "ferry-test");

        shutdown.trigger();
        drop(channel);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops within the grace period")
            .unwrap()
            .unwrap();
        // The listener is closed: new connections are refused.
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    async fn wait_for(channel: &Channel, service: &str, want: Wire) {
        let mut status = check(channel, service).await;
        for _ in 0..100 {
            if status == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            status = check(channel, service).await;
        }
        assert_eq!(status, want, "health of {service:?}");
    }

    #[tokio::test]
    async fn health_follows_readiness_both_ways_and_liveness_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ready, readiness) = watch::channel(false);
        let shutdown = Shutdown::new();
        let server = tokio::spawn(
            GrpcServer::new(SystemInfo::new("ferry-test", "0.0.0"))
                .grace(Duration::from_secs(5))
                .serve_with_readiness(listener, readiness, shutdown.clone()),
        );
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();

        assert_eq!(check(&channel, "").await, Wire::NotServing);
        assert_eq!(check(&channel, LIVENESS).await, Wire::Serving);
        ready.send(true).unwrap();
        wait_for(&channel, "", Wire::Serving).await;
        wait_for(&channel, "ferry.v1.SystemService", Wire::Serving).await;
        // Not ready any more (say, the database went away), then back.
        ready.send(false).unwrap();
        wait_for(&channel, "", Wire::NotServing).await;
        wait_for(&channel, "ferry.v1.SystemService", Wire::NotServing).await;
        assert_eq!(check(&channel, LIVENESS).await, Wire::Serving);
        ready.send(true).unwrap();
        wait_for(&channel, "", Wire::Serving).await;
        // A dropped sender keeps the last word.
        drop(ready);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(check(&channel, "").await, Wire::Serving);

        shutdown.trigger();
        drop(channel);
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server stops within the grace period")
            .unwrap()
            .unwrap();
    }
}
