//! Lists over real gRPC/TCP, on PostgreSQL and SQLite: page sizes and page
//! tokens, every list RPC walked one row at a time, query counts that do
//! not grow with the page, ListProjects' visibility, VerifyAuditChain in
//! batches and WatchDeployment ending with its client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ferry_api::ApiState;
use ferry_api::audit::{Auditor, Entry};
use ferry_api::auth::RequestMeta;
use ferry_api::feed::{FeedAuth, FeedHub};
use ferry_api::workloads::DeployConfig;
use ferry_db::entities::enums::{AuditResourceType, DeploymentStatus, OrgRole};
use ferry_db::entities::{audit_logs, deployments, trusted_devices};
use ferry_db::sea_orm::prelude::Uuid;
use ferry_db::sea_orm::sea_query::Expr;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, QueryFilter as _, QueryOrder as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::deployment_service_client::DeploymentServiceClient;
use pb::domain_service_client::DomainServiceClient;
use pb::git_service_client::GitServiceClient;
use pb::job_service_client::JobServiceClient;
use pb::notification_service_client::NotificationServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::registry_service_client::RegistryServiceClient;
use pb::route_service_client::RouteServiceClient;
use pb::service_service_client::ServiceServiceClient;
use pb::stack_service_client::StackServiceClient;
use pb::template_service_client::TemplateServiceClient;
use pb::variable_group_service_client::VariableGroupServiceClient;
use pb::volume_service_client::VolumeServiceClient;
use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _};
use support::*;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

/// Counts the SELECT statements the api sends, to catch per-row queries.
#[derive(Clone, Default)]
struct Selects(Arc<AtomicUsize>);

impl Selects {
    fn now(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The api without a cluster, on a connection that counts its SELECTs.
async fn start_counted(conn: &DatabaseConnection) -> (Api, Selects) {
    let selects = Selects::default();
    let counter = selects.0.clone();
    let mut counted = conn.clone();
    counted.set_metric_callback(move |info| {
        let sql = &info.statement.sql;
        // Authentication is one lookup per call or none (a cached
        // credential, forgotten whenever a session changes): not per row.
        let authenticating = sql.contains("\"token_hash\" = ");
        if !authenticating && sql.trim_start().to_ascii_uppercase().starts_with("SELECT") {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let state = ApiState {
        db: counted,
        keyring: Arc::new(ferry_tests::test_keyring()),
        feed: FeedHub::new(),
        feed_auth: FeedAuth::new(None),
        cluster: None,
        deploy: DeployConfig {
            domains: base_domain("example.com"),
            ..DeployConfig::default()
        },
        builds: Default::default(),
    };
    (start_state(&state, relaxed()).await, selects)
}

/// The workload clients.
struct W {
    projects: ProjectServiceClient<Channel>,
    services: ServiceServiceClient<Channel>,
    volumes: VolumeServiceClient<Channel>,
    groups: VariableGroupServiceClient<Channel>,
    stacks: StackServiceClient<Channel>,
    templates: TemplateServiceClient<Channel>,
    deploys: DeploymentServiceClient<Channel>,
    routes: RouteServiceClient<Channel>,
    registries: RegistryServiceClient<Channel>,
    git: GitServiceClient<Channel>,
    jobs: JobServiceClient<Channel>,
    domains: DomainServiceClient<Channel>,
    notifications: NotificationServiceClient<Channel>,
}

fn w(channel: &Channel) -> W {
    W {
        projects: ProjectServiceClient::new(channel.clone()),
        services: ServiceServiceClient::new(channel.clone()),
        volumes: VolumeServiceClient::new(channel.clone()),
        groups: VariableGroupServiceClient::new(channel.clone()),
        stacks: StackServiceClient::new(channel.clone()),
        templates: TemplateServiceClient::new(channel.clone()),
        deploys: DeploymentServiceClient::new(channel.clone()),
        routes: RouteServiceClient::new(channel.clone()),
        registries: RegistryServiceClient::new(channel.clone()),
        git: GitServiceClient::new(channel.clone()),
        jobs: JobServiceClient::new(channel.clone()),
        domains: DomainServiceClient::new(channel.clone()),
        notifications: NotificationServiceClient::new(channel.clone()),
    }
}

/// An owner with an organization, a project and a service, and a member
/// to grant things to.
struct Owner {
    c: Clients,
    w: W,
    token: String,
    user_id: String,
    org: String,
    project: String,
    service: String,
    /// A job that runs beside itself (ALLOW), for ListJobRuns.
    job: String,
    /// A notification channel, for ListDeliveries.
    channel: String,
    grantee: String,
    /// Items added so far of each kind (names are numbered).
    added: usize,
}

fn app_spec() -> Option<pb::create_service_request::Spec> {
    Some(pb::create_service_request::Spec::Application(
        pb::ApplicationSpec {
            image: "nginx:1.27".into(),
            ..Default::default()
        },
    ))
}

fn http_port() -> Vec<pb::Port> {
    vec![pb::Port {
        name: "http".into(),
        container_port: 8080,
        protocol: pb::Protocol::Tcp.into(),
    }]
}

async fn owner(api: &Api, db: &DatabaseConnection, name: &str) -> Owner {
    let mut c = clients(api.addr).await;
    let user = register(&mut c, name).await;
    let token = login(&mut c, name).await;
    let org = create_org(&mut c, &token, &format!("{name} org")).await.id;
    let mut w = w(&c.channel);
    let project = w
        .projects
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.clone(),
                name: "Main".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let service = w
        .services
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: project.clone(),
                name: "web".into(),
                spec: app_spec(),
                ports: http_port(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let job = w
        .jobs
        .create_job(authed(
            pb::CreateJobRequest {
                project_id: project.clone(),
                name: "main-job".into(),
                image: "busybox:1.36".into(),
                concurrency_policy: pb::ConcurrencyPolicy::Allow.into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let channel = w
        .notifications
        .create_channel(authed(
            pb::CreateChannelRequest {
                organization_id: org.clone(),
                kind: pb::ChannelKind::Webhook.into(),
                name: "main channel".into(),
                webhook_url: "https://93.184.215.14/main".into(),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .channel
        .unwrap()
        .id;
    let grantee = register(&mut c, &format!("{name}-grantee")).await.id;
    add_member(db, &org, &grantee, OrgRole::Member).await;
    Owner {
        c,
        w,
        token,
        user_id: user.id,
        org,
        project,
        service,
        job,
        channel,
        grantee,
        added: 0,
    }
}

/// Adds `k` rows to every list the owner can read.
async fn add_items(o: &mut Owner, db: &DatabaseConnection, k: usize) {
    let tok = o.token.clone();
    for i in o.added..o.added + k {
        o.c.tokens
            .create_api_token(authed(
                pb::CreateApiTokenRequest {
                    organization_id: o.org.clone(),
                    name: format!("token {i}"),
                    role: pb::OrganizationRole::Member.into(),
                    expires_at: None,
                },
                &tok,
            ))
            .await
            .unwrap();
        create_org(&mut o.c, &tok, &format!("Org {i}")).await;
        let member = register(&mut o.c, &format!("member{i}")).await.id;
        add_member(db, &o.org, &member, OrgRole::Viewer).await;
        o.c.invites
            .create_invitation(authed(
                pb::CreateInvitationRequest {
                    organization_id: o.org.clone(),
                    email: format!("invitee{i}@example.com"),
                    role: pb::OrganizationRole::Member.into(),
                    ttl_hours: 0,
                },
                &tok,
            ))
            .await
            .unwrap();
        // Another session of the owner (ListSessions).
        login(&mut o.c, OWNER).await;
        trusted_device(db, &o.user_id, i).await;
        let project =
            o.w.projects
                .create_project(authed(
                    pb::CreateProjectRequest {
                        organization_id: o.org.clone(),
                        name: format!("Project {i}"),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        o.c.grants
            .create_grant(authed(
                pb::CreateGrantRequest {
                    organization_id: o.org.clone(),
                    user_id: o.grantee.clone(),
                    resource_type: pb::GrantResourceType::Project.into(),
                    resource_id: project,
                    level: pb::GrantLevel::View.into(),
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.services
            .create_service(authed(
                pb::CreateServiceRequest {
                    project_id: o.project.clone(),
                    name: format!("svc{i}"),
                    spec: app_spec(),
                    ports: http_port(),
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.services
            .set_env_var(authed(
                pb::SetEnvVarRequest {
                    service_id: o.service.clone(),
                    key: format!("KEY_{i}"),
                    value: "v".into(),
                    secret: i % 2 == 0,
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.volumes
            .create_volume(authed(
                pb::CreateVolumeRequest {
                    project_id: o.project.clone(),
                    name: format!("vol{i}"),
                    size_gb: 1,
                    storage_class: String::new(),
                    access_mode: pb::VolumeAccessMode::ReadWriteOnce.into(),
                },
                &tok,
            ))
            .await
            .unwrap();
        let group =
            o.w.groups
                .create_variable_group(authed(
                    pb::CreateVariableGroupRequest {
                        project_id: o.project.clone(),
                        name: format!("group {i}"),
                        description: String::new(),
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        o.w.groups
            .set_variable(authed(
                pb::SetVariableRequest {
                    variable_group_id: group,
                    key: "SHARED".into(),
                    value: "x".into(),
                    secret: false,
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.stacks
            .create_stack(authed(
                pb::CreateStackRequest {
                    project_id: o.project.clone(),
                    name: format!("stack{i}"),
                    compose_file: format!("services:\n  api{i}:\n    image: nginx:1\n"),
                    variables: Default::default(),
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.templates
            .create_template(authed(
                pb::CreateTemplateRequest {
                    organization_id: o.org.clone(),
                    slug: format!("tpl{i}"),
                    name: format!("Template {i}"),
                    spec_json: r#"{"kind":"application","image":"nginx:1"}"#.into(),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.routes
            .create_route(authed(
                pb::CreateRouteRequest {
                    project_id: o.project.clone(),
                    hostname: format!("h{i}.{}.example.com", o.org),
                    targets: vec![pb::RouteTarget {
                        service_id: o.service.clone(),
                        port: 8080,
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.notifications
            .create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: o.org.clone(),
                    kind: pb::ChannelKind::Slack.into(),
                    name: format!("Channel {i}"),
                    webhook_url: format!("https://93.184.215.14/services/{i}"),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        notification_delivery(db, o).await;
        let domain =
            o.w.domains
                .add_domain(authed(
                    pb::AddDomainRequest {
                        project_id: o.project.clone(),
                        domain: format!("d{i}.{}.example.net", o.org),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        ferry_tests::fixtures::certificate(db, domain.parse().unwrap(), "key").await;
        o.w.registries
            .create_registry(authed(
                pb::CreateRegistryRequest {
                    organization_id: o.org.clone(),
                    name: format!("Registry {i}"),
                    url: "ghcr.io".into(),
                    username: "bot".into(),
                    password: "hunter2".into(),
                },
                &tok,
            ))
            .await
            .unwrap();
        o.w.deploys
            .deploy(authed(
                pb::DeployRequest {
                    service_id: o.service.clone(),
                },
                &tok,
            ))
            .await
            .unwrap();
        let integration =
            o.w.git
                .create_git_integration(authed(
                    pb::CreateGitIntegrationRequest {
                        organization_id: o.org.clone(),
                        provider: pb::GitProvider::Github.into(),
                        name: format!("Git {i}"),
                        token: "github_pat_x".into(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        o.w.git
            .set_build_config(authed(
                pb::SetBuildConfigRequest {
                    service_id: o.service.clone(),
                    git_integration_id: integration.clone(),
                    repository: "acme/web".into(),
                    ..Default::default()
                },
                &tok,
            ))
            .await
            .unwrap();
        // Each newer build cancels the previous one: one row each.
        o.w.git
            .trigger_build(authed(
                pb::TriggerBuildRequest {
                    service_id: o.service.clone(),
                    commit_sha: String::new(),
                },
                &tok,
            ))
            .await
            .unwrap();
        // Jobs (each with a run: ListJobs shows every job's last run) and
        // runs of the owner's job.
        let job =
            o.w.jobs
                .create_job(authed(
                    pb::CreateJobRequest {
                        project_id: o.project.clone(),
                        name: format!("job{i}"),
                        schedule: "@hourly".into(),
                        image: "busybox:1.36".into(),
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner()
                .id;
        for id in [job, o.job.clone()] {
            o.w.jobs
                .run_job_now(authed(pb::RunJobNowRequest { id }, &tok))
                .await
                .unwrap();
        }
        // Deliveries straight into the table: this test is about paging.
        ferry_db::entities::webhook_deliveries::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(o.org.parse().unwrap()),
            git_integration_id: Set(integration.parse().unwrap()),
            service_id: Set(Some(o.service.parse().unwrap())),
            delivery_id: Set(format!("delivery-{i}")),
            event: Set("push".into()),
            repository: Set(None),
            branch: Set(None),
            before_sha: Set(None),
            after_sha: Set(None),
            status: Set(ferry_db::entities::enums::WebhookDeliveryStatus::Ignored),
            reason: Set(None),
            build_id: Set(None),
            created_at: Set(chrono::Utc::now()),
        }
        .insert(db)
        .await
        .unwrap();
    }
    o.added += k;
}

/// The owner's login name in every test.
const OWNER: &str = "olivia";

async fn trusted_device(db: &DatabaseConnection, user: &str, i: usize) {
    let now = chrono::Utc::now();
    trusted_devices::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user.parse().unwrap()),
        token_hash: Set(format!("{:064x}", Uuid::now_v7().as_u128())),
        name: Set(Some(format!("device {i}"))),
        user_agent: Set(None),
        expires_at: Set(now + chrono::Duration::days(30)),
        last_used_at: Set(None),
        created_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
}

/// One event delivered to the owner's channel (the worker's rows).
async fn notification_delivery(db: &DatabaseConnection, o: &Owner) {
    use ferry_db::entities::enums::NotificationDeliveryStatus;
    use ferry_db::entities::notification_deliveries;
    let org = Uuid::parse_str(&o.org).unwrap();
    let event = ferry_db::outbox::enqueue(
        db,
        ferry_db::outbox::Event::new(
            org,
            None,
            ferry_db::outbox::EventKind::MemberJoined,
            serde_json::json!({}),
        ),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now();
    notification_deliveries::ActiveModel {
        id: Set(Uuid::now_v7()),
        event_id: Set(event),
        channel_id: Set(Uuid::parse_str(&o.channel).unwrap()),
        organization_id: Set(org),
        status: Set(NotificationDeliveryStatus::Delivered),
        attempts: Set(1),
        next_attempt_at: Set(None),
        last_response_code: Set(Some(200)),
        last_error: Set(None),
        last_attempt_at: Set(Some(now)),
        delivered_at: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(db)
    .await
    .unwrap();
}

/// A list RPC as the descriptors describe it.
#[derive(Debug, Clone)]
struct ListRpc {
    path: String,
    /// Field 1 when it names the scope (`organization_id`, ...).
    scope: Option<String>,
    page_size: u32,
    page_token: u32,
}

/// Every `List*` RPC of `ferry.v1`, with its paging fields' numbers.
fn list_rpcs() -> Vec<ListRpc> {
    let fds = prost_types::FileDescriptorSet::decode(ferry_proto::FILE_DESCRIPTOR_SET).unwrap();
    let message = |name: &str| {
        let name = name.trim_start_matches(".ferry.v1.");
        fds.file
            .iter()
            .filter(|f| f.package() == "ferry.v1")
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == name)
            .unwrap()
            .clone()
    };
    let number = |m: &prost_types::DescriptorProto, field: &str| {
        let f = m.field.iter().find(|f| f.name() == field);
        u32::try_from(
            f.unwrap_or_else(|| panic!("{}: no {field}", m.name()))
                .number(),
        )
        .unwrap()
    };
    let mut out = Vec::new();
    for file in fds.file.iter().filter(|f| f.package() == "ferry.v1") {
        for service in &file.service {
            for method in service
                .method
                .iter()
                .filter(|m| m.name().starts_with("List"))
            {
                let input = message(method.input_type());
                let output = message(method.output_type());
                // Every response: the rows in field 1, the token in field 2.
                assert_eq!(number(&output, "next_page_token"), 2, "{}", method.name());
                let rows = output.field.iter().find(|f| f.number() == 1).unwrap();
                assert_eq!(
                    rows.label(),
                    prost_types::field_descriptor_proto::Label::Repeated,
                    "{}",
                    method.name()
                );
                let scope = input
                    .field
                    .iter()
                    .find(|f| f.number() == 1 && f.name().ends_with("_id"))
                    .map(|f| f.name().to_owned());
                out.push(ListRpc {
                    path: format!("/ferry.v1.{}/{}", service.name(), method.name()),
                    scope,
                    page_size: number(&input, "page_size"),
                    page_token: number(&input, "page_token"),
                });
            }
        }
    }
    out
}

/// A response's rows (each as its encoded message) and next token.
#[derive(Clone, PartialEq, prost::Message)]
struct RawPage {
    #[prost(bytes = "vec", repeated, tag = "1")]
    rows: Vec<Vec<u8>>,
    #[prost(string, tag = "2")]
    next_page_token: String,
}

/// Sends and receives already-encoded messages.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

/// The owner's scope id for a list's field 1.
fn scope_id(o: &Owner, rpc: &ListRpc) -> Option<String> {
    rpc.scope.as_deref().map(|field| match field {
        "organization_id" => o.org.clone(),
        "project_id" => o.project.clone(),
        "service_id" => o.service.clone(),
        "job_id" => o.job.clone(),
        "channel_id" => o.channel.clone(),
        other => panic!("{}: no owner resource for {other}: add one", rpc.path),
    })
}

/// One page of `rpc` as the owner.
async fn page(o: &Owner, rpc: &ListRpc, size: u32, token: &str) -> Result<RawPage, tonic::Status> {
    let mut body = Vec::new();
    if let Some(id) = scope_id(o, rpc) {
        prost::encoding::string::encode(1, &id, &mut body);
    }
    if size > 0 {
        prost::encoding::uint32::encode(rpc.page_size, &size, &mut body);
    }
    if !token.is_empty() {
        prost::encoding::string::encode(rpc.page_token, &token.to_owned(), &mut body);
    }
    let mut grpc = tonic::client::Grpc::new(o.c.channel.clone());
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(rpc.path.as_str()).unwrap();
    let bytes = grpc
        .unary(authed(body, &o.token), path, RawCodec)
        .await?
        .into_inner();
    Ok(RawPage::decode(bytes.as_slice()).unwrap())
}

/// Every row of `rpc`, one page of `size` after another.
async fn walk(o: &Owner, rpc: &ListRpc, size: u32, max_pages: usize) -> Vec<Vec<u8>> {
    let mut rows = Vec::new();
    let mut token = String::new();
    for _ in 0..max_pages {
        let p = page(o, rpc, size, &token).await.unwrap();
        assert!(
            p.rows.len() <= size as usize,
            "{}: {} rows on a page of {size}",
            rpc.path,
            p.rows.len()
        );
        if !p.next_page_token.is_empty() {
            assert_eq!(p.rows.len(), size as usize, "{}: short page", rpc.path);
        }
        rows.extend(p.rows);
        if p.next_page_token.is_empty() {
            return rows;
        }
        token = p.next_page_token;
    }
    panic!("{}: still paging after {max_pages} pages", rpc.path);
}

/// SELECTs of one full listing of `rpc` (after one warm-up call, so a
/// session's activity refresh is not counted).
async fn selects_of(o: &Owner, rpc: &ListRpc, selects: &Selects) -> (usize, usize) {
    page(o, rpc, 500, "").await.unwrap();
    let before = selects.now();
    let p = page(o, rpc, 500, "").await.unwrap();
    assert!(p.next_page_token.is_empty(), "{}", rpc.path);
    (selects.now() - before, p.rows.len())
}

#[tokio::test]
async fn every_list_rpc_pages_one_row_at_a_time_without_gaps_or_repeats() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, selects) = start_counted(&db.conn).await;
        let mut o = owner(&api, &db.conn, OWNER).await;
        let rpcs = list_rpcs();
        assert_eq!(rpcs.len(), 27, "{b}: {rpcs:#?}");

        // Queries per listing do not depend on how many rows it returns.
        add_items(&mut o, &db.conn, 2).await;
        let mut small = Vec::new();
        for rpc in &rpcs {
            small.push(selects_of(&o, rpc, &selects).await);
        }
        add_items(&mut o, &db.conn, 3).await;
        for (rpc, (few, few_rows)) in rpcs.iter().zip(small) {
            let (many, many_rows) = selects_of(&o, rpc, &selects).await;
            assert!(
                many_rows > few_rows,
                "{b}: {}: {few_rows} -> {many_rows}",
                rpc.path
            );
            assert_eq!(
                few, many,
                "{b}: {}: {few} SELECTs for {few_rows} rows, {many} for {many_rows}",
                rpc.path
            );
        }

        for rpc in &rpcs {
            let all = walk(&o, rpc, 500, 1).await;
            assert!(all.len() >= 3, "{b}: {}: {} rows", rpc.path, all.len());
            let one_by_one = walk(&o, rpc, 1, all.len() + 1).await;
            let distinct: HashSet<&Vec<u8>> = one_by_one.iter().collect();
            assert_eq!(
                distinct.len(),
                one_by_one.len(),
                "{b}: {}: repeats",
                rpc.path
            );
            assert_eq!(one_by_one, all, "{b}: {}: rows or order differ", rpc.path);
            let in_threes = walk(&o, rpc, 3, all.len()).await;
            assert_eq!(in_threes, all, "{b}: {}: pages of 3 differ", rpc.path);
        }
        api.stop().await;
    }
}

fn invalid_argument_on(result: Result<RawPage, tonic::Status>, field: &str) -> String {
    let status = match result {
        Ok(page) => panic!(
            "expected InvalidArgument on {field}, got {} rows",
            page.rows.len()
        ),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")),
        "{}",
        status.message()
    );
    status.message().to_owned()
}

fn b64(json: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

#[tokio::test]
async fn page_sizes_default_to_50_stop_at_500_and_bad_tokens_are_refused() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_counted(&db.conn).await;
        let o = owner(&api, &db.conn, OWNER).await;
        let org: Uuid = o.org.parse().unwrap();
        // Rows straight into the table: this test is about paging only.
        for i in 0..54 {
            ferry_tests::fixtures::project(
                &db.conn,
                org,
                &format!("Bulk {i:02}"),
                &format!("bulk-{i}"),
            )
            .await;
        }
        let rpcs = list_rpcs();
        let rpc = |name: &str| {
            rpcs.iter()
                .find(|r| r.path.ends_with(&format!("/{name}")))
                .unwrap()
                .clone()
        };
        let projects = rpc("ListProjects");

        // 55 projects: 50 by default, then the last 5.
        let first = page(&o, &projects, 0, "").await.unwrap();
        assert_eq!(first.rows.len(), 50, "{b}");
        assert!(!first.next_page_token.is_empty(), "{b}");
        let rest = page(&o, &projects, 0, &first.next_page_token)
            .await
            .unwrap();
        assert_eq!(
            (rest.rows.len(), rest.next_page_token.as_str()),
            (5, ""),
            "{b}"
        );
        let max = page(&o, &projects, 500, "").await.unwrap();
        assert_eq!(
            (max.rows.len(), max.next_page_token.as_str()),
            (55, ""),
            "{b}"
        );

        // Above 500 is refused on every list, naming pageSize.
        for rpc in &rpcs {
            let m = invalid_argument_on(page(&o, rpc, 501, "").await, "pageSize");
            assert!(m.contains("500"), "{b}: {}: {m}", rpc.path);
            invalid_argument_on(page(&o, rpc, u32::MAX, "").await, "pageSize");
        }

        // Tokens are opaque and bound to their list; tampering is refused.
        let token = page(&o, &projects, 2, "").await.unwrap().next_page_token;
        let mut flipped = token.clone().into_bytes();
        flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };
        let orgs_token = page(&o, &rpc("ListOrganizations"), 0, "").await.unwrap();
        assert!(orgs_token.next_page_token.is_empty(), "{b}");
        let sessions_token = {
            // Three sessions, so a page of one has a token.
            let mut c = o.c.clone();
            login(&mut c, OWNER).await;
            login(&mut c, OWNER).await;
            page(&o, &rpc("ListSessions"), 1, "")
                .await
                .unwrap()
                .next_page_token
        };
        for bad in [
            "garbage".to_owned(),
            "50".to_owned(),
            Uuid::now_v7().to_string(),
            String::from_utf8(flipped).unwrap(),
            format!("{token}x"),
            sessions_token,
            b64(r#"{"l":"projects","k":["Bulk 01","not-a-uuid"]}"#),
            b64(r#"{"l":"projects","k":["Bulk 01"]}"#),
            b64(r#"{"l":"services","k":["Bulk 01","0190e9d0-0000-7000-8000-000000000000"]}"#),
            "x".repeat(10_000),
        ] {
            invalid_argument_on(page(&o, &projects, 1, &bad).await, "pageToken");
        }
        // A well-formed token of the same list is just a position.
        let after = page(
            &o,
            &projects,
            1,
            &b64(r#"{"l":"projects","k":["Bulk 52","00000000-0000-0000-0000-000000000000"]}"#),
        )
        .await
        .unwrap();
        assert_eq!(after.rows.len(), 1, "{b}");
        let name = pb::Project::decode(after.rows[0].as_slice()).unwrap().name;
        assert_eq!(name, "Bulk 52", "{b}");
        api.stop().await;
    }
}

/// Which of `all` GetProject lets `token` read.
async fn gettable(w: &mut W, token: &str, all: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for id in all {
        let got = w
            .projects
            .get_project(authed(pb::GetProjectRequest { id: id.clone() }, token))
            .await;
        if got.is_ok() {
            out.push(id.clone());
        }
    }
    out.sort();
    out
}

async fn listed(w: &mut W, token: &str, org: &str) -> Result<Vec<String>, Code> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let got = w
            .projects
            .list_projects(authed(
                pb::ListProjectsRequest {
                    organization_id: org.into(),
                    page_size: 7,
                    page_token,
                },
                token,
            ))
            .await
            .map_err(|s| s.code())?
            .into_inner();
        out.extend(got.projects.into_iter().map(|p| p.id));
        if got.next_page_token.is_empty() {
            out.sort();
            return Ok(out);
        }
        page_token = got.next_page_token;
    }
}

/// SELECTs and rows of the owner's full ListProjects walk (pages of 7),
/// after a warm-up walk.
async fn list_selects(o: &mut Owner, selects: &Selects) -> (usize, usize) {
    listed(&mut o.w, &o.token, &o.org).await.unwrap();
    let before = selects.now();
    let all = listed(&mut o.w, &o.token, &o.org).await.unwrap();
    (selects.now() - before, all.len())
}

#[tokio::test]
async fn list_projects_shows_what_get_project_allows_in_constant_queries() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, selects) = start_counted(&db.conn).await;
        let mut o = owner(&api, &db.conn, OWNER).await;
        let org: Uuid = o.org.parse().unwrap();

        // Callers of every kind.
        let mut c = o.c.clone();
        let mut callers = vec![("owner", o.token.clone())];
        for (name, role) in [
            ("vic", OrgRole::Viewer),
            ("mel", OrgRole::Member),
            ("ada", OrgRole::Admin),
        ] {
            let user = register(&mut c, name).await;
            add_member(&db.conn, &o.org, &user.id, role).await;
            callers.push((name, login(&mut c, name).await));
        }
        // The grantee holds grants on some projects (added below).
        callers.push(("grantee", login(&mut c, &format!("{OWNER}-grantee")).await));
        let viewer_token =
            o.c.tokens
                .create_api_token(authed(
                    pb::CreateApiTokenRequest {
                        organization_id: o.org.clone(),
                        name: "ci".into(),
                        role: pb::OrganizationRole::Viewer.into(),
                        expires_at: None,
                    },
                    &o.token,
                ))
                .await
                .unwrap()
                .into_inner()
                .token;
        callers.push(("viewer api token", viewer_token));
        register(&mut c, "outsider").await;
        let outsider = login(&mut c, "outsider").await;

        add_items(&mut o, &db.conn, 2).await;
        let (few, few_rows) = list_selects(&mut o, &selects).await;
        for i in 0..40 {
            ferry_tests::fixtures::project(
                &db.conn,
                org,
                &format!("More {i:02}"),
                &format!("more-{i}"),
            )
            .await;
        }
        let (many, many_rows) = list_selects(&mut o, &selects).await;
        assert_eq!(many_rows, few_rows + 40, "{b}");
        // Page size 7: same number of pages' worth of queries per page.
        let pages = |rows: usize| rows.div_ceil(7);
        assert_eq!(
            few / pages(few_rows),
            many / pages(many_rows),
            "{b}: {few} SELECTs for {few_rows} projects, {many} for {many_rows}"
        );
        assert_eq!(few % pages(few_rows), 0, "{b}: {few}");
        assert_eq!(many % pages(many_rows), 0, "{b}: {many}");

        let all = listed(&mut o.w, &o.token, &o.org).await.unwrap();
        for (who, token) in &callers {
            let shown = listed(&mut o.w, token, &o.org).await.unwrap();
            assert_eq!(shown, gettable(&mut o.w, token, &all).await, "{b}: {who}");
        }
        assert_eq!(
            listed(&mut o.w, &outsider, &o.org).await,
            Err(Code::NotFound),
            "{b}"
        );
        api.stop().await;
    }
}

/// Appends `n` entries to `org`'s chain in one transaction.
async fn append_chain(db: &DatabaseConnection, org: Uuid, n: usize) {
    let txn = ferry_api::db::begin_write(db).await.unwrap();
    let meta = RequestMeta::default();
    for i in 0..n {
        Auditor::system(&meta, Some(org))
            .record(
                &txn,
                Entry::new("test.bulk", AuditResourceType::Organization, org)
                    .details(serde_json::json!({ "i": i })),
            )
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
}

#[tokio::test]
async fn verify_audit_chain_reads_in_batches_and_finds_a_break_in_the_second() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let batch = usize::try_from(ferry_api::audit::VERIFY_BATCH).unwrap();
        let (api, _) = start_counted(&db.conn).await;
        let o = owner(&api, &db.conn, OWNER).await;
        let org: Uuid = o.org.parse().unwrap();
        append_chain(&db.conn, org, batch + 200).await;

        // The chain statements VerifyAuditChain sends, counted on the side.
        let chain_reads = Arc::new(AtomicUsize::new(0));
        let limited = Arc::new(AtomicUsize::new(0));
        let mut conn = db.conn.clone();
        let (reads, lim) = (chain_reads.clone(), limited.clone());
        conn.set_metric_callback(move |info| {
            let sql = &info.statement.sql;
            if sql.contains("audit_logs") && sql.trim_start().starts_with("SELECT") {
                reads.fetch_add(1, Ordering::SeqCst);
                if sql.contains(&format!("LIMIT {batch}"))
                    || sql.contains("LIMIT $")
                    || sql.contains("LIMIT ?")
                {
                    lim.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        let state = ApiState {
            db: conn,
            keyring: Arc::new(ferry_tests::test_keyring()),
            feed: FeedHub::new(),
            feed_auth: FeedAuth::new(None),
            cluster: None,
            deploy: DeployConfig {
                domains: base_domain("example.com"),
                ..DeployConfig::default()
            },
            builds: Default::default(),
        };
        let counted = start_state(&state, relaxed()).await;
        let mut c = clients(counted.addr).await;
        let token = login(&mut c, OWNER).await;
        let verify = |c: &mut Clients| {
            let mut audit = c.audit.clone();
            let (token, org) = (token.clone(), o.org.clone());
            async move {
                audit
                    .verify_audit_chain(authed(
                        pb::VerifyAuditChainRequest {
                            organization_id: org,
                        },
                        &token,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
            }
        };

        let chain: Vec<audit_logs::Model> = audit_logs::Entity::find()
            .filter(audit_logs::Column::OrganizationId.eq(org))
            .order_by_asc(audit_logs::Column::CreatedAt)
            .order_by_asc(audit_logs::Column::Id)
            .all(&db.conn)
            .await
            .unwrap();
        let total = chain.len();
        assert!(total > batch, "{b}: {total}");
        chain_reads.store(0, Ordering::SeqCst);
        limited.store(0, Ordering::SeqCst);
        let ok = verify(&mut c).await;
        assert!(ok.ok, "{b}: {ok:?}");
        assert_eq!(ok.entries_checked, total as u64, "{b}");
        // Whole batches plus the short last one, each with a LIMIT.
        let reads = chain_reads.load(Ordering::SeqCst);
        assert_eq!(
            reads,
            total / batch + 1,
            "{b}: {reads} chain reads for {total} rows"
        );
        assert_eq!(
            limited.load(Ordering::SeqCst),
            reads,
            "{b}: a read without LIMIT"
        );

        // Edit a row in the second batch.
        let victim = &chain[batch + 50];
        audit_logs::Entity::update_many()
            .col_expr(audit_logs::Column::Action, Expr::value("test.edited"))
            .filter(audit_logs::Column::Id.eq(victim.id))
            .exec(&db.conn)
            .await
            .unwrap();
        chain_reads.store(0, Ordering::SeqCst);
        let broken = verify(&mut c).await;
        assert!(!broken.ok, "{b}");
        assert_eq!(broken.first_broken_id, Some(victim.id.to_string()), "{b}");
        assert_eq!(broken.entries_checked, (batch + 51) as u64, "{b}");
        assert!(broken.reason.contains("edited"), "{b}: {}", broken.reason);
        assert_eq!(chain_reads.load(Ordering::SeqCst), 2, "{b}");

        // Any batch size gives the same answer, breaks at batch edges too.
        for size in [1, 2, 50, 51, ferry_api::audit::VERIFY_BATCH, 100_000] {
            let report = ferry_api::audit::verify_chain_in_batches(&db.conn, None, Some(org), size)
                .await
                .unwrap();
            assert_eq!(
                report.first_broken.as_ref().map(|(id, _)| *id),
                Some(victim.id),
                "{b}: batch {size}"
            );
            assert_eq!(
                report.entries_checked,
                (batch + 51) as u64,
                "{b}: batch {size}"
            );
        }
        counted.stop().await;
        api.stop().await;
    }
}

#[tokio::test]
async fn watch_deployment_stops_polling_when_the_client_goes_away() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, selects) = start_counted(&db.conn).await;
        let mut o = owner(&api, &db.conn, OWNER).await;
        let deployment =
            o.w.deploys
                .deploy(authed(
                    pb::DeployRequest {
                        service_id: o.service.clone(),
                    },
                    &o.token,
                ))
                .await
                .unwrap()
                .into_inner();
        // A deployment that never finishes: nothing ever ends the watch but
        // its client.
        let id: Uuid = deployment.id.parse().unwrap();
        let mut row: deployments::ActiveModel = deployments::Entity::find_by_id(id)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .into();
        row.status = Set(DeploymentStatus::Pending);
        row.finished_at = Set(None);
        row.update(&db.conn).await.unwrap();

        let mut gauge = ferry_api::workloads::deployments::active_watches();
        assert_eq!(*gauge.borrow_and_update(), 0, "{b}");
        let channel = channel(api.addr, None).await;
        let mut client = DeploymentServiceClient::new(channel);
        let mut stream = client
            .watch_deployment(authed(
                pb::WatchDeploymentRequest {
                    id: deployment.id.clone(),
                },
                &o.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(
            first.deployment.unwrap().status(),
            pb::DeploymentStatus::Pending,
            "{b}"
        );
        tokio::time::timeout(Duration::from_secs(5), gauge.wait_for(|n| *n == 1))
            .await
            .expect("the watch task runs")
            .unwrap();

        drop(stream);
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), gauge.wait_for(|n| *n == 0))
            .await
            .unwrap_or_else(|_| panic!("{b}: the watch task outlived its client"))
            .unwrap();
        // And with it the polling: no query for several poll periods.
        let after = selects.now();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(selects.now(), after, "{b}: still querying");
        api.stop().await;
    }
}
