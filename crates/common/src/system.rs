//! The `ferry.v1.SystemService` implementation every service mounts.

use std::time::SystemTime;

use ferry_proto::ferry::v1::system_service_server::{SystemService, SystemServiceServer};
use ferry_proto::ferry::v1::{GetServerInfoRequest, ServerInfo};
use tonic::{Request, Response, Status};

/// Git commit baked in at build time (`FERRY_GIT_COMMIT=$(git rev-parse HEAD) cargo build`).
pub const GIT_COMMIT: Option<&str> = option_env!("FERRY_GIT_COMMIT");

/// Static facts about a running service, answered by `GetServerInfo`.
#[derive(Debug, Clone)]
pub struct SystemInfo {
    /// e.g. `ferry-api`.
    pub service_name: &'static str,
    /// The service's package version.
    pub version: &'static str,
    /// When the process started.
    pub started_at: SystemTime,
    /// `postgres`, `sqlite`, or empty for services without a database.
    pub db_backend: &'static str,
    /// Whether a Kubernetes cluster is configured.
    pub kube_configured: bool,
}

impl SystemInfo {
    /// Facts for `service_name` at `version`, started now, with no database
    /// and no cluster; adjust the public fields as needed.
    pub fn new(service_name: &'static str, version: &'static str) -> Self {
        Self {
            service_name,
            version,
            started_at: SystemTime::now(),
            db_backend: "",
            kube_configured: false,
        }
    }

    /// The current `ServerInfo` message.
    pub fn server_info(&self) -> ServerInfo {
        let uptime = SystemTime::now()
            .duration_since(self.started_at)
            .unwrap_or_default();
        ServerInfo {
            service: self.service_name.to_owned(),
            version: self.version.to_owned(),
            git_commit: GIT_COMMIT.filter(|c| !c.is_empty()).map(str::to_owned),
            started_at: Some(prost_types::Timestamp::from(self.started_at)),
            uptime_seconds: uptime.as_secs(),
            database_backend: self.db_backend.to_owned(),
            kubernetes_configured: self.kube_configured,
        }
    }

    /// The tonic service wrapping this implementation.
    pub fn into_service(self) -> SystemServiceServer<Self> {
        SystemServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl SystemService for SystemInfo {
    async fn get_server_info(
        &self,
        _request: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        Ok(Response::new(self.server_info()))
    }
}

/// True when a Kubernetes cluster is reachable by configuration: `KUBECONFIG`
/// is set, or the process runs in a pod (`KUBERNETES_SERVICE_HOST`).
pub fn kubernetes_configured() -> bool {
    kubernetes_configured_from(|name| std::env::var(name).ok())
}

/// [`kubernetes_configured`] with an injectable variable lookup.
pub fn kubernetes_configured_from(lookup: impl Fn(&str) -> Option<String>) -> bool {
    ["KUBECONFIG", "KUBERNETES_SERVICE_HOST"]
        .iter()
        .any(|name| lookup(name).is_some_and(|v| !v.trim().is_empty()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn server_info_reports_uptime_and_config() {
        let mut info = SystemInfo::new("ferry-test", "1.2.3");
        info.started_at = SystemTime::now() - Duration::from_secs(90);
        info.db_backend = "sqlite";
        info.kube_configured = true;
        let msg = info.server_info();
        assert_eq!(msg.service, "ferry-test");
        assert_eq!(msg.version, "1.2.3");
        assert!(
            (90..95).contains(&msg.uptime_seconds),
            "{}",
            msg.uptime_seconds
        );
        assert_eq!(msg.database_backend, "sqlite");
        assert!(msg.kubernetes_configured);
        let started = msg.started_at.unwrap();
        assert_eq!(SystemTime::try_from(started).unwrap(), info.started_at);
    }

    #[test]
    fn kubernetes_detection() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert!(!kubernetes_configured_from(env(&[])));
        assert!(!kubernetes_configured_from(env(&[("KUBECONFIG", " ")])));
        assert!(kubernetes_configured_from(env(&[(
            "KUBECONFIG",
            "/k/config"
        )])));
        assert!(kubernetes_configured_from(env(&[(
            "KUBERNETES_SERVICE_HOST",
            "10.0.0.1"
        )])));
    }
}
