//! Shared harness for the api integration tests: the api server on a
//! loopback port, gRPC clients, and register/login/organization helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proxy;
pub mod smtp;

use std::net::SocketAddr;

use ferry_api::ApiState;
use ferry_api::auth::{IdentityConfig, ThrottlePolicy};
use ferry_db::entities::enums::OrgRole;
use ferry_db::entities::organization_members;
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::{ActiveModelTrait as _, ActiveValue::Set, DatabaseConnection};
use ferry_proto::ferry::v1 as pb;
use pb::api_token_service_client::ApiTokenServiceClient;
use pb::audit_service_client::AuditServiceClient;
use pb::auth_service_client::AuthServiceClient;
use pb::grant_service_client::GrantServiceClient;
use pb::invitation_service_client::InvitationServiceClient;
use pb::organization_service_client::OrganizationServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

pub const PASSWORD: &str = "correct horse battery";

/// The api's gRPC server on a loopback port.
pub use ferry_api::testing::TestApi as Api;

/// An identity config whose login throttle frees `account` failures per
/// account and `ip` failures per address (registrations are not limited:
/// every test registers its users from 127.0.0.1).
pub fn throttle(account: u32, ip: u32) -> IdentityConfig {
    IdentityConfig {
        throttle: ThrottlePolicy {
            account_free_failures: account,
            ip_free_failures: ip,
            register_free: 10_000,
            ..ThrottlePolicy::default()
        },
        ..IdentityConfig::default()
    }
}

/// A throttle loose enough that tests which are not about it never hit it.
pub fn relaxed() -> IdentityConfig {
    throttle(50, 500)
}

/// Starts the api without a feed service credential.
pub async fn start(conn: &DatabaseConnection, config: IdentityConfig) -> Api {
    start_with_feed(conn, config, None).await
}

/// Starts the api, with `feed_token` as the feed service credential if any.
pub async fn start_with_feed(
    conn: &DatabaseConnection,
    config: IdentityConfig,
    feed_token: Option<&str>,
) -> Api {
    start_state(&ferry_api::testing::state(conn, feed_token), config).await
}

/// Starts the api's gRPC server for `state`.
/// An api with the test keyring and, when given, the in-memory cluster
/// (rollouts time out after `timeout`).
pub async fn start_with_cluster(
    conn: &DatabaseConnection,
    cluster: Option<&ferry_k8s::fake::FakeCluster>,
    timeout: std::time::Duration,
) -> (Api, ApiState) {
    let state = ApiState {
        db: conn.clone(),
        keyring: std::sync::Arc::new(ferry_tests::test_keyring()),
        feed: ferry_api::feed::FeedHub::new(),
        feed_auth: ferry_api::feed::FeedAuth::new(None),
        cluster: cluster.map(|f| {
            std::sync::Arc::new(
                ferry_k8s::cluster::Cluster::new(f.client())
                    .with_pod_check_interval(std::time::Duration::from_millis(20)),
            )
        }),
        deploy: ferry_api::workloads::DeployConfig {
            rollout_timeout: timeout,
            domains: base_domain("example.com"),
            ..ferry_api::workloads::DeployConfig::default()
        },
        builds: Default::default(),
    };
    (start_state(&state, relaxed()).await, state)
}

pub async fn start_state(state: &ApiState, config: IdentityConfig) -> Api {
    ferry_api::testing::start_state(state, config).await
}

/// A channel to the api at `addr`, sending `user_agent` if given.
pub async fn channel(addr: SocketAddr, user_agent: Option<&str>) -> Channel {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    if let Some(user_agent) = user_agent {
        endpoint = endpoint.user_agent(user_agent).unwrap();
    }
    endpoint.connect().await.unwrap()
}

#[derive(Clone)]
pub struct Clients {
    pub channel: Channel,
    pub auth: AuthServiceClient<Channel>,
    pub orgs: OrganizationServiceClient<Channel>,
    pub audit: AuditServiceClient<Channel>,
    pub invites: InvitationServiceClient<Channel>,
    pub tokens: ApiTokenServiceClient<Channel>,
    pub grants: GrantServiceClient<Channel>,
}

/// Clients for every public service, without a user agent.
pub async fn clients(addr: SocketAddr) -> Clients {
    clients_on(channel(addr, None).await)
}

/// Clients for every public service, sending `user_agent`.
pub async fn clients_as(addr: SocketAddr, user_agent: &str) -> Clients {
    clients_on(channel(addr, Some(user_agent)).await)
}

fn clients_on(channel: Channel) -> Clients {
    Clients {
        auth: AuthServiceClient::new(channel.clone()),
        orgs: OrganizationServiceClient::new(channel.clone()),
        audit: AuditServiceClient::new(channel.clone()),
        invites: InvitationServiceClient::new(channel.clone()),
        tokens: ApiTokenServiceClient::new(channel.clone()),
        grants: GrantServiceClient::new(channel.clone()),
        channel,
    }
}

/// Anything holding an auth service client.
pub trait Auth {
    fn auth(&mut self) -> &mut AuthServiceClient<Channel>;
}

impl Auth for Clients {
    fn auth(&mut self) -> &mut AuthServiceClient<Channel> {
        &mut self.auth
    }
}

impl Auth for AuthServiceClient<Channel> {
    fn auth(&mut self) -> &mut AuthServiceClient<Channel> {
        self
    }
}

pub fn authed<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    result.expect_err("expected an error").code()
}

/// Registers `username` (`username@example.com`, [`PASSWORD`]).
pub async fn register(c: &mut impl Auth, username: &str) -> pb::User {
    c.auth()
        .register(pb::RegisterRequest {
            email: format!("{username}@example.com"),
            username: username.into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

pub async fn try_login(
    c: &mut impl Auth,
    login: &str,
    password: &str,
) -> Result<pb::LoginResponse, Status> {
    c.auth()
        .login(pb::LoginRequest {
            login: login.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Logs in with [`PASSWORD`]; returns the session token.
pub async fn login(c: &mut impl Auth, login: &str) -> String {
    try_login(c, login, PASSWORD).await.unwrap().token
}

pub async fn create_org(c: &mut Clients, token: &str, name: &str) -> pb::Organization {
    c.orgs
        .create_organization(authed(
            pb::CreateOrganizationRequest { name: name.into() },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

pub async fn add_member(db: &DatabaseConnection, org: &str, user: &str, role: OrgRole) {
    organization_members::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org.parse().unwrap()),
        user_id: Set(user.parse().unwrap()),
        role: Set(role),
        invited_by: Set(None),
        joined_at: Set(chrono::Utc::now()),
    }
    .insert(db)
    .await
    .unwrap();
}

/// Makes `user_id` a platform super-admin (read at login: log in again).
pub async fn make_super_admin(db: &DatabaseConnection, user_id: &str) {
    use ferry_db::entities::users;
    use ferry_db::sea_orm::sea_query::Expr;
    use ferry_db::sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
    users::Entity::update_many()
        .col_expr(users::Column::IsSuperAdmin, Expr::value(true))
        .filter(users::Column::Id.eq(user_id.parse::<Uuid>().unwrap()))
        .exec(db)
        .await
        .unwrap();
}

/// The workload services (tests/workloads.rs): every RPC rejects
/// unauthenticated callers (checked in tests/identity.rs) and is tenant
/// scoped against real victim resources (`every_workload_rpc_is_tenant_scoped`).
pub const WORKLOAD_SERVICES: &[&str] = &[
    "ProjectService",
    "ServiceService",
    "VolumeService",
    "VariableGroupService",
    "StackService",
    "TemplateService",
    "DeploymentService",
    "RouteService",
    "RegistryService",
    "GitService",
    "JobService",
    "DomainService",
    "NotificationService",
    "CertificateService",
];

/// One HTTP/1.1 POST of `body` with `Host: host` over a fresh connection;
/// `(status, body)`, `(0, "")` when the connection fails. Webhook tests.
pub async fn http_post(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    // A server may answer (413) before reading a large body.
    let _ = stream.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut out),
    )
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Domain settings with `base` as the installation's base domain (routes
/// under it need no verified domain) and the system resolver.
pub fn base_domain(base: &str) -> ferry_api::domains::DomainConfig {
    ferry_api::domains::DomainConfig {
        base_domain: Some(base.into()),
        ..ferry_api::domains::DomainConfig::default()
    }
}
