//! Test support for the services' boot tests (feature `testing`): run a
//! service binary as a child process and talk to it over real TCP.
//!
//! Panics with a descriptive message on failure: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_proto::ferry::v1::ServerInfo;
use ferry_proto::ferry::v1::system_service_client::SystemServiceClient;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, BufReader,
};
use tokio::process::{Child, Command};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
pub use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// Environment variables a service reads; removed from the child's
/// environment so the test runner's own settings (e.g. the PostgreSQL admin
/// `DATABASE_URL`) never leak into the service under test.
pub const SERVICE_ENV: &[&str] = &[
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "DATABASE_SSL",
    "ENCRYPTION_KEY",
    "ENCRYPTION_KEY_PREVIOUS",
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "RUST_LOG",
];

/// A loopback address with a port the OS just handed out (and released).
pub fn free_addr() -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port address")
}

/// A running service binary whose stdout and stderr are captured. Killed
/// (SIGKILL) on drop if still running.
pub struct ServiceProcess {
    name: String,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl std::fmt::Debug for ServiceProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceProcess")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .finish()
    }
}

impl ServiceProcess {
    /// Starts `bin` with `args` and extra `env` (on top of the runner's
    /// environment minus [`SERVICE_ENV`] and every `FERRY_*` variable).
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in SERVICE_ENV {
            cmd.env_remove(name);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("FERRY_") {
                cmd.env_remove(name);
            }
        }
        cmd.env("FERRY_LOG_FORMAT", "text").env("RUST_LOG", "info");
        for (name, value) in env {
            cmd.env(name, value);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let stdout = capture(child.stdout.take().expect("piped stdout"));
        let stderr = capture(child.stderr.take().expect("piped stderr"));
        Self {
            name: bin.rsplit('/').next().unwrap_or(bin).to_owned(),
            child,
            stdout,
            stderr,
        }
    }

    /// Everything the process wrote to stdout so far.
    /// The process id (for measurements such as its RSS).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for `needle` to appear on stdout. Log lines
    /// reach the capture asynchronously, so a check right after some other
    /// observable effect (a health answer) would race.
    pub async fn wait_for_stdout(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.stdout().contains(needle) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Both streams, labelled, for assertion messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let pid = self.child.id().expect("process is still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Sends SIGKILL: the process dies at once, with no shutdown of any kind.
    pub fn sigkill(&self) {
        let pid = self.child.id().expect("process is still running");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -KILL {pid} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it did not.
    /// Output readers are given a moment to collect the last lines.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for child"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        status
    }

    /// Whether the process has exited already.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll child")
    }
}

fn capture(stream: impl AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let sink = buffer.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut out = sink.lock().unwrap();
            out.push_str(&line);
            out.push('\n');
        }
    });
    buffer
}

/// A lazily connecting channel to `addr`.
pub fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("valid endpoint")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_lazy()
}

/// `grpc.health.v1.Health/Check` for `service` (`""`: the whole server).
pub async fn health_status(
    addr: SocketAddr,
    service: &str,
) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(channel(addr))
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(response.into_inner().status())
}

/// Polls health until `SERVING` or `timeout`; panics with the process
/// output if the process exits or the deadline passes.
pub async fn wait_until_serving(process: &mut ServiceProcess, addr: SocketAddr, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = process.try_exited() {
            panic!(
                "{} exited early with {status}\n{}",
                process.name,
                process.output()
            );
        }
        let last = match health_status(addr, "").await {
            Ok(ServingStatus::Serving) => return,
            Ok(other) => format!("{other:?}"),
            Err(err) => err.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "{} not SERVING on {addr} after {timeout:?} (last: {last})\n{}",
                process.name,
                process.output()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Service names listed by server reflection (`grpc.reflection.v1`).
pub async fn reflection_services(addr: SocketAddr) -> Vec<String> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(channel(addr))
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection call")
        .into_inner();
    let response = stream
        .message()
        .await
        .expect("reflection response")
        .expect("one reflection response");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection response {other:?}"),
    }
}

/// `ferry.v1.SystemService/GetServerInfo`.
pub async fn server_info(addr: SocketAddr) -> ServerInfo {
    SystemServiceClient::new(channel(addr))
        .get_server_info(ferry_proto::ferry::v1::GetServerInfoRequest {})
        .await
        .expect("GetServerInfo")
        .into_inner()
}

/// A plain HTTP/1.1 GET over TCP; returns the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut raw))
        .await
        .expect("response within 5 s")
        .expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    (status, body.to_owned())
}

/// Services every Ferry binary must list over reflection.
pub const REQUIRED_SERVICES: &[&str] = &["ferry.v1.SystemService", "grpc.health.v1.Health"];

/// Starts `bin`, waits (up to 60 s: a cold PostgreSQL migration is slow on
/// small machines) until health says `SERVING` on `grpc_addr`, checks that
/// reflection lists [`REQUIRED_SERVICES`] and that `GetServerInfo` names
/// `service`. Returns the running process and its `ServerInfo`.
pub async fn boot(
    bin: &str,
    args: &[&str],
    env: &[(&str, &str)],
    grpc_addr: SocketAddr,
    service: &str,
) -> (ServiceProcess, ServerInfo) {
    let mut process = ServiceProcess::spawn(bin, args, env);
    wait_until_serving(&mut process, grpc_addr, Duration::from_secs(60)).await;
    let listed = reflection_services(grpc_addr).await;
    for required in REQUIRED_SERVICES {
        assert!(
            listed.iter().any(|s| s == required),
            "{service}: reflection lists {listed:?}, missing {required}"
        );
    }
    let info = server_info(grpc_addr).await;
    assert_eq!(info.service, service, "{}", process.output());
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(info.started_at.is_some());
    (process, info)
}

/// Sends SIGTERM and asserts a clean exit (status 0) within `within`.
pub async fn stop_cleanly(mut process: ServiceProcess, within: Duration) -> String {
    process.sigterm();
    let status = process.wait_exit(within).await;
    let output = process.output();
    let status = status.unwrap_or_else(|| panic!("no exit within {within:?} of SIGTERM\n{output}"));
    assert!(
        status.success(),
        "exit status {status} after SIGTERM\n{output}"
    );
    output
}
