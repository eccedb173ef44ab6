//! `ferry-proxy`: the HTTP(S) edge in front of deployed applications.
//!
//! Today it binds all its ports and serves:
//! - gRPC (`FERRY_PROXY_LISTEN`): `ferry.v1.SystemService`, health, reflection;
//! - plain HTTP (`FERRY_PROXY_HTTP_LISTEN`): `404 no route` for every request,
//!   until routing arrives in a later issue;
//! - HTTPS (`FERRY_PROXY_HTTPS_LISTEN`): bound, connections closed until
//!   certificates are managed;
//! - admin HTTP (`FERRY_PROXY_ADMIN_LISTEN`): `/healthz`, `/readyz`, `/metrics`.
//!
//! On shutdown `/readyz` turns 503 first, the traffic listeners drain, and the
//! admin port closes last. The proxy holds no database credentials and no key.

pub mod args;
pub mod error;
pub mod http;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferry_common::grpc::{GrpcServer, bind};
use ferry_common::{Shutdown, SystemInfo};

pub use args::Args;
pub use error::{Error, Result};
use http::ProxyState;

/// The service name used in logs, traces and `ServerInfo`.
pub const SERVICE_NAME: &str = "ferry-proxy";

/// Runs the proxy until `shutdown` fires, then drains.
pub async fn run(args: Args, shutdown: Shutdown) -> Result<()> {
    let grace = args.common.shutdown_grace();
    let grpc_listener = bind(args.listen).await?;
    let http_listener = bind(args.http_listen).await?;
    let https_listener = bind(args.https_listen).await?;
    let admin_listener = bind(args.admin_listen).await?;
    tracing::info!(
        http = %http_listener.local_addr()?,
        https = %https_listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        "proxy HTTP listeners bound"
    );

    let state = Arc::new(ProxyState::default());
    // The admin port outlives the traffic listeners so probes see the drain.
    let admin_stop = Shutdown::new();
    let admin = {
        let state = state.clone();
        tokio::spawn(http::serve(
            admin_listener,
            "admin",
            move |req| http::admin(&state, &req),
            admin_stop.clone(),
            grace,
        ))
    };
    let unready = {
        let state = state.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.wait().await;
            state.ready.store(false, Ordering::Relaxed);
        }
    };

    let mut system = SystemInfo::new(SERVICE_NAME, env!("CARGO_PKG_VERSION"));
    system.kube_configured = ferry_common::kubernetes_configured();
    let grpc = {
        let shutdown = shutdown.clone();
        async move {
            let served = GrpcServer::new(system)
                .grace(grace)
                .serve(grpc_listener, std::future::ready(()), shutdown.clone())
                .await;
            // A failed gRPC server takes the HTTP listeners down with it.
            shutdown.trigger();
            served
        }
    };
    let data = {
        let state = state.clone();
        http::serve(
            http_listener,
            "http",
            move |req| http::data_plane(&state, &req),
            shutdown.clone(),
            grace,
        )
    };
    let https = http::https_placeholder(https_listener, state.clone(), shutdown.clone());

    state.ready.store(true, Ordering::Relaxed);
    let (grpc, (), (), ()) = tokio::join!(grpc, data, https, unready);

    admin_stop.trigger();
    if let Err(err) = admin.await {
        tracing::warn!(error = %err, "admin server task failed");
    }
    grpc?;
    Ok(())
}
