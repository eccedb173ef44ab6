//! A real ferry-proxy fed by a test api's route feed, on loopback ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use ferry_api::ApiState;
use ferry_common::Shutdown;
use tokio::task::JoinHandle;

use super::Api;

/// The feed token the test api and its proxies share
/// (`ferry_api::testing::state(conn, Some(FEED_TOKEN))`).
pub const FEED_TOKEN: &str = "feed-token-0123456789abcdef";

/// Listeners bound before the api starts (so the api's config can name
/// the proxy's port).
pub struct BoundProxy {
    listeners: ferry_proxy::Listeners,
    pub http: SocketAddr,
    pub https: SocketAddr,
    dir: tempfile::TempDir,
}

/// A running proxy and the loop that reloads the api's feed from the
/// database (what the api binary's reloader does).
pub struct FedProxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    stop: Shutdown,
    tasks: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// ferry-proxy's arguments: every listener on an ephemeral loopback port,
/// fed by `api` with `token`, keeping its snapshot in `state_dir`.
pub fn args(api: &str, token: &str, state_dir: &std::path::Path) -> ferry_proxy::Args {
    let mut argv: Vec<String> = vec!["ferry-proxy".into()];
    for flag in [
        "--listen",
        "--http-listen",
        "--https-listen",
        "--admin-listen",
    ] {
        argv.extend([flag.to_owned(), "127.0.0.1:0".to_owned()]);
    }
    argv.extend([
        "--api-url".to_owned(),
        api.to_owned(),
        "--feed-token".to_owned(),
        token.to_owned(),
        "--state-dir".to_owned(),
        state_dir.display().to_string(),
    ]);
    ferry_proxy::Args::parse_from(argv)
}

pub async fn bind_proxy() -> BoundProxy {
    let dir = tempfile::tempdir().unwrap();
    let listeners =
        ferry_proxy::Listeners::bind(&args("http://127.0.0.1:1", FEED_TOKEN, dir.path()))
            .await
            .unwrap();
    BoundProxy {
        http: listeners.http_addr().unwrap(),
        https: listeners.https_addr().unwrap(),
        listeners,
        dir,
    }
}

impl BoundProxy {
    /// Runs the proxy on the feed of `api` (started from `state`).
    pub fn feed_from(self, api: &Api, state: &ApiState) -> FedProxy {
        let stop = Shutdown::new();
        let reloader = {
            let (feed, conn, keyring, stop) = (
                state.feed.clone(),
                state.db.clone(),
                state.keyring.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.is_triggered() {
                    let _ = feed.reload(&conn, &keyring).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let args = args(&format!("http://{}", api.addr), FEED_TOKEN, self.dir.path());
        let proxy_stop = stop.clone();
        let listeners = self.listeners;
        let proxy = tokio::spawn(async move {
            ferry_proxy::run_with_listeners(
                args,
                listeners,
                Arc::new(ferry_proxy::ProxyState::default()),
                proxy_stop,
            )
            .await
            .unwrap();
        });
        FedProxy {
            http: self.http,
            https: self.https,
            stop,
            tasks: vec![reloader, proxy],
            _dir: self.dir,
        }
    }
}

impl FedProxy {
    pub async fn stop(self) {
        self.stop.trigger();
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// `GET http://<host>/<path>` at the proxy's plain-HTTP port: status and
/// body.
pub async fn http_get(proxy: SocketAddr, host: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}
