//! Notifications end to end on PostgreSQL and SQLite: channels over real
//! gRPC, real HTTP sinks on loopback (exact Slack / Discord / webhook
//! bodies, the webhook signature), an SMTP sink for e-mail, TestChannel,
//! a failed deployment's event written with the failure and delivered by
//! the scheduler's real loop, a crash between event and delivery, racing
//! workers, retries after a 500, private targets refused, and other
//! organizations kept out.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_api::ApiState;
use ferry_db::entities::enums::{
    DeploymentStatus, NotificationDeliveryStatus, OrgRole, TriggerType,
};
use ferry_db::entities::{
    audit_logs, deployments, notification_channels, notification_deliveries, notification_outbox,
};
use ferry_db::outbox::{Event, EventKind};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, PaginatorTrait as _, QueryFilter as _, TransactionTrait as _,
};
use ferry_k8s::fake::FakeCluster;
use ferry_notify::smtp::SmtpTrust;
use ferry_notify::{SendConfig, Sender, Worker, WorkerConfig};
use ferry_proto::ferry::v1 as pb;
use http_body_util::{BodyExt as _, Full};
use pb::deployment_service_client::DeploymentServiceClient;
use pb::notification_service_client::NotificationServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::service_service_client::ServiceServiceClient;
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::transport::Channel;
use uuid::Uuid;

// ---------------------------------------------------------------- sinks

/// One request an HTTP sink received.
#[derive(Debug, Clone)]
struct Captured {
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Captured {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// An HTTP/1.1 server on loopback that records every request and answers
/// with the scripted statuses in order (200 once the script is used up).
#[derive(Clone)]
struct Sink {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<Captured>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Sink {
    async fn start(script: &[u16]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Sink {
            addr: listener.local_addr().unwrap(),
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let s = sink.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let s = s.clone();
                            async move {
                                let path = req.uri().path().to_owned();
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                s.got.lock().unwrap().push(Captured {
                                    path,
                                    headers,
                                    body,
                                    at: Instant::now(),
                                });
                                let status = s.script.lock().unwrap().pop_front().unwrap_or(200);
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from_static(b"sink says hi")))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        sink
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Captured> {
        self.got.lock().unwrap().clone()
    }

    fn at(&self, path: &str) -> Vec<Captured> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

// ---------------------------------------------------------------- setup

async fn start_api(conn: &DatabaseConnection, allow_private: bool) -> (Api, ApiState) {
    start_api_on(conn, allow_private, None).await
}

/// The api with `cluster` (or none): rollouts against a fake cluster.
async fn start_api_on(
    conn: &DatabaseConnection,
    allow_private: bool,
    cluster: Option<&FakeCluster>,
) -> (Api, ApiState) {
    let state = ApiState {
        db: conn.clone(),
        keyring: Arc::new(ferry_tests::test_keyring()),
        feed: ferry_api::feed::FeedHub::new(),
        feed_auth: ferry_api::feed::FeedAuth::new(None),
        cluster: cluster.map(|f| {
            Arc::new(
                ferry_k8s::cluster::Cluster::new(f.client())
                    .with_pod_check_interval(Duration::from_millis(20)),
            )
        }),
        deploy: ferry_api::workloads::DeployConfig {
            rollout_timeout: Duration::from_secs(10),
            domains: base_domain("example.com"),
            notifications: ferry_api::notifications::NotificationConfig {
                allow_private_targets: allow_private,
                send_timeout: Duration::from_secs(3),
                smtp_trust: trust(),
            },
            ..ferry_api::workloads::DeployConfig::default()
        },
        builds: Default::default(),
    };
    (start_state(&state, relaxed()).await, state)
}

/// The api (private targets allowed), an HTTP sink answering `script`,
/// and a tenant called `name`: most tests' first step.
async fn setup(conn: &DatabaseConnection, name: &str, script: &[u16]) -> (Api, Sink, Tenant) {
    let (api, _) = start_api(conn, true).await;
    let sink = Sink::start(script).await;
    let t = tenant(&api, name).await;
    (api, sink, t)
}

/// The operator's extra SMTP CA: the one that issued the sink's certificate.
fn trust() -> SmtpTrust {
    SmtpTrust::from_pem(smtp::test_ca_pem().as_bytes()).unwrap()
}

/// A fast worker (retries after ~100-200 ms) allowed to reach loopback,
/// trusting the SMTP sink's CA.
fn worker(conn: &DatabaseConnection) -> Worker {
    worker_trusting(conn, trust())
}

fn worker_trusting(conn: &DatabaseConnection, trust: SmtpTrust) -> Worker {
    Worker::new(
        conn.clone(),
        Arc::new(ferry_tests::test_keyring()),
        Sender::new(SendConfig {
            allow_private: true,
            timeout: Duration::from_secs(3),
        })
        .unwrap()
        .with_smtp_trust(trust),
        WorkerConfig {
            backoff_base: Duration::from_millis(200),
            backoff_cap: Duration::from_secs(2),
            ..WorkerConfig::default()
        },
    )
}

struct Tenant {
    c: Clients,
    token: String,
    org: String,
    project: String,
    service: String,
    n: NotificationServiceClient<Channel>,
}

async fn tenant(api: &Api, name: &str) -> Tenant {
    let mut c = clients(api.addr).await;
    register(&mut c, name).await;
    let token = login(&mut c, name).await;
    let org = create_org(&mut c, &token, &format!("{name} org")).await.id;
    let project = ProjectServiceClient::new(c.channel.clone())
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org.clone(),
                name: format!("{name} shop"),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    let service = ServiceServiceClient::new(c.channel.clone())
        .create_service(authed(
            pb::CreateServiceRequest {
                project_id: project.clone(),
                name: "web".into(),
                spec: Some(pb::create_service_request::Spec::Application(
                    pb::ApplicationSpec {
                        image: "nginx:1".into(),
                        ..Default::default()
                    },
                )),
                ports: vec![],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    Tenant {
        n: NotificationServiceClient::new(c.channel.clone()),
        c,
        token,
        org,
        project,
        service,
    }
}

impl Tenant {
    async fn create(
        &mut self,
        kind: pb::ChannelKind,
        name: &str,
        url: &str,
        events: &[&str],
    ) -> Result<pb::CreateChannelResponse, tonic::Status> {
        self.n
            .create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: self.org.clone(),
                    kind: kind.into(),
                    name: name.into(),
                    webhook_url: url.into(),
                    events: events.iter().map(|e| (*e).to_owned()).collect(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn deliveries(&mut self, channel: &str) -> Vec<pb::NotificationDelivery> {
        self.n
            .list_deliveries(authed(
                pb::ListDeliveriesRequest {
                    channel_id: channel.into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .deliveries
    }
}

fn id(s: &str) -> Uuid {
    Uuid::parse_str(s).unwrap()
}

/// Records `kind` for the tenant's project, in its own transaction.
async fn record(conn: &DatabaseConnection, t: &Tenant, kind: EventKind, payload: Value) -> Uuid {
    let txn = conn.begin().await.unwrap();
    let event = ferry_db::outbox::enqueue(
        &txn,
        Event::new(id(&t.org), Some(id(&t.project)), kind, payload),
    )
    .await
    .unwrap();
    txn.commit().await.unwrap();
    event
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn slack_discord_teams_chat_and_signed_webhook_bodies_reach_their_sinks() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "alice", &[]).await;
        let ev = ["deployment.failed"];
        let slack_url = sink.url("/services/T000/B000/slacksecrettoken");
        let slack = t
            .create(pb::ChannelKind::Slack, "ops slack", &slack_url, &ev)
            .await
            .unwrap();
        let slack_channel = slack.channel.unwrap();
        assert_eq!(
            slack_channel.target,
            format!("http://{}/…/oken", sink.addr),
            "{b}"
        );
        assert!(slack.signing_secret.is_empty(), "{b}");
        assert_eq!(slack_channel.subscriptions.len(), 1, "{b}");
        let discord = t
            .create(
                pb::ChannelKind::Discord,
                "discord",
                &sink.url("/api/webhooks/1/discordtoken"),
                &ev,
            )
            .await
            .unwrap();
        let _teams = t
            .create(
                pb::ChannelKind::Teams,
                "teams",
                &sink.url("/workflows/teamstoken"),
                &ev,
            )
            .await
            .unwrap();
        let _chat = t
            .create(
                pb::ChannelKind::GoogleChat,
                "chat",
                &sink.url("/v1/spaces/chattoken"),
                &ev,
            )
            .await
            .unwrap();
        let hook = t
            .create(
                pb::ChannelKind::Webhook,
                "hook",
                &sink.url("/ferry-hook-receiver"),
                &ev,
            )
            .await
            .unwrap();
        let secret = hook.signing_secret.clone();
        assert_eq!(secret.len(), 64, "{b}: a generated 32-byte hex secret");
        assert!(hook.channel.as_ref().unwrap().signed, "{b}");

        // Secrets are encrypted at rest, and neither the audit log nor any
        // answer carries them.
        let stored = notification_channels::Entity::find_by_id(id(&slack_channel.id))
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        let raw = stored.webhook_url.clone().unwrap().0;
        assert!(!raw.contains("slacksecrettoken"), "{b}: {raw}");
        let audit = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("notification_channel.create"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audit.len(), 5, "{b}");
        for a in &audit {
            let d = a.details.to_string();
            for secret in [
                "slacksecrettoken",
                "discordtoken",
                "teamstoken",
                "chattoken",
                &secret,
            ] {
                assert!(!d.contains(secret), "{b}: {d}");
            }
        }
        let listed =
            t.n.list_channels(authed(
                pb::ListChannelsRequest {
                    organization_id: t.org.clone(),
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.channels.len(), 5, "{b}");
        let shown = format!("{listed:?}");
        for secret in [
            "slacksecrettoken",
            "discordtoken",
            "teamstoken",
            "chattoken",
            &secret,
        ] {
            assert!(!shown.contains(secret), "{b}: {shown}");
        }

        let event = record(
            &db.conn,
            &t,
            EventKind::DeploymentFailed,
            json!({ "summary": "Deployment of web in alice shop failed: <boom> & co" }),
        )
        .await;
        let occurred = notification_outbox::Entity::find_by_id(event)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap()
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let tick = worker(&db.conn).tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(
            (tick.dispatched, tick.created, tick.delivered),
            (1, 5, 5),
            "{b}: {tick:?}"
        );
        assert_eq!(sink.requests().len(), 5, "{b}");

        let got = sink.at("/services/T000/B000/slacksecrettoken");
        assert_eq!(
            got[0].json(),
            json!({
                "text": "Deployment failed: Deployment of web in alice shop failed: &lt;boom&gt; &amp; co",
                "blocks": [
                    { "type": "header", "text": { "type": "plain_text", "text": "Deployment failed" } },
                    { "type": "section", "text": { "type": "mrkdwn", "text": "Deployment of web in alice shop failed: &lt;boom&gt; &amp; co" } },
                    { "type": "context", "elements": [
                        { "type": "mrkdwn", "text": format!("`deployment.failed` · {occurred}") }
                    ] },
                ],
            }),
            "{b}"
        );
        assert_eq!(got[0].headers["content-type"], "application/json", "{b}");
        assert!(
            got[0].headers.get("ferry-signature").is_none(),
            "{b}: only webhooks sign"
        );

        let got = sink.at("/api/webhooks/1/discordtoken");
        assert_eq!(
            got[0].json(),
            json!({
                "content": "Deployment failed",
                "embeds": [{
                    "title": "Deployment failed",
                    "description": "Deployment of web in alice shop failed: <boom> & co",
                    "color": 0xD83C3E,
                    "timestamp": occurred,
                    "footer": { "text": "deployment.failed" },
                }],
                "allowed_mentions": { "parse": [] },
            }),
            "{b}"
        );

        let got = sink.at("/workflows/teamstoken");
        let card = &got[0].json()["attachments"][0];
        assert_eq!(
            card["contentType"], "application/vnd.microsoft.card.adaptive",
            "{b}"
        );
        assert_eq!(card["content"]["type"], "AdaptiveCard", "{b}");
        assert_eq!(
            card["content"]["body"][0]["text"], "Deployment failed",
            "{b}"
        );

        let got = sink.at("/v1/spaces/chattoken");
        assert_eq!(
            got[0].json(),
            json!({ "text": "*Deployment failed*\nDeployment of web in alice shop failed: <boom> & co" }),
            "{b}"
        );

        let got = sink.at("/ferry-hook-receiver");
        let body = got[0].json();
        assert_eq!(
            body,
            json!({
                "id": event,
                "event": "deployment.failed",
                "organization_id": t.org,
                "project_id": t.project,
                "occurred_at": occurred,
                "data": { "summary": "Deployment of web in alice shop failed: <boom> & co" },
            }),
            "{b}"
        );
        let signature = got[0].headers["ferry-signature"].to_str().unwrap();
        let now = chrono::Utc::now().timestamp();
        assert_eq!(
            ferry_notify::sign::verify(secret.as_bytes(), signature, &got[0].body, now),
            Ok(()),
            "{b}: {signature}"
        );
        // The signature covers the exact bytes and the timestamp.
        let t_value: i64 = signature[2..signature.find(',').unwrap()].parse().unwrap();
        assert!((now - t_value).abs() < 30, "{b}");
        let expected = ferry_notify::sign::mac_hex(secret.as_bytes(), t_value, &got[0].body);
        assert!(signature.ends_with(&format!("v1={expected}")), "{b}");
        assert!(
            ferry_notify::sign::verify(b"not-the-secret-at-all", signature, &got[0].body, now)
                .is_err(),
            "{b}"
        );
        assert_eq!(got[0].headers["ferry-event"], "deployment.failed", "{b}");
        assert_eq!(got[0].headers["ferry-delivery"], event.to_string(), "{b}");

        // The delivery log.
        for c in [
            &slack_channel,
            discord.channel.as_ref().unwrap(),
            hook.channel.as_ref().unwrap(),
        ] {
            let log = t.deliveries(&c.id).await;
            assert_eq!(log.len(), 1, "{b}");
            assert_eq!(
                (
                    log[0].status.as_str(),
                    log[0].attempts,
                    log[0].last_response_code,
                    log[0].event.as_str()
                ),
                ("delivered", 1, 200, "deployment.failed"),
                "{b}"
            );
            assert_eq!(log[0].project_id, t.project, "{b}");
        }
        // Nothing more to do: a second tick sends nothing again.
        let again = worker(&db.conn).tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(again, Default::default(), "{b}");
        assert_eq!(sink.requests().len(), 5, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn subscriptions_follow_event_kind_project_and_enabled() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "carol", &[]).await;
        let all = t
            .create(pb::ChannelKind::Slack, "all", &sink.url("/all"), &[])
            .await
            .unwrap()
            .channel
            .unwrap();
        let mine = t
            .create(pb::ChannelKind::Slack, "mine", &sink.url("/mine"), &[])
            .await
            .unwrap()
            .channel
            .unwrap();
        let sub = |channel: &str, event: &str, project: &str| pb::SubscribeRequest {
            channel_id: channel.into(),
            event: event.into(),
            project_id: project.into(),
        };
        t.n.subscribe(authed(sub(&all.id, "build.failed", ""), &t.token))
            .await
            .unwrap();
        // Organization-wide and per-project rows are each unique.
        let dup =
            t.n.subscribe(authed(sub(&all.id, "build.failed", ""), &t.token))
                .await;
        assert_eq!(code(dup), Code::AlreadyExists, "{b}");
        t.n.subscribe(authed(sub(&mine.id, "build.failed", &t.project), &t.token))
            .await
            .unwrap();
        let dup =
            t.n.subscribe(authed(sub(&mine.id, "build.failed", &t.project), &t.token))
                .await;
        assert_eq!(code(dup), Code::AlreadyExists, "{b}");
        let bad =
            t.n.subscribe(authed(sub(&mine.id, "build.exploded", ""), &t.token))
                .await;
        let err = bad.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert!(
            err.message().starts_with("event: one of"),
            "{b}: {}",
            err.message()
        );

        // Another project of the organization: only the org-wide channel.
        let other_project = ProjectServiceClient::new(t.c.channel.clone())
            .create_project(authed(
                pb::CreateProjectRequest {
                    organization_id: t.org.clone(),
                    name: "elsewhere".into(),
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id;
        let txn = db.conn.begin().await.unwrap();
        ferry_db::outbox::enqueue(
            &txn,
            Event::new(
                id(&t.org),
                Some(id(&other_project)),
                EventKind::BuildFailed,
                json!({}),
            ),
        )
        .await
        .unwrap();
        txn.commit().await.unwrap();
        record(&db.conn, &t, EventKind::BuildFailed, json!({})).await;
        // Not subscribed by anyone.
        record(&db.conn, &t, EventKind::DeploymentSucceeded, json!({})).await;
        let w = worker(&db.conn);
        w.tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(
            (sink.at("/all").len(), sink.at("/mine").len()),
            (2, 1),
            "{b}"
        );

        // Disabled: no new deliveries; unsubscribed: none either.
        t.n.update_channel(authed(
            pb::UpdateChannelRequest {
                id: mine.id.clone(),
                enabled: Some(false),
                ..Default::default()
            },
            &t.token,
        ))
        .await
        .unwrap();
        t.n.unsubscribe(authed(
            pb::UnsubscribeRequest {
                channel_id: all.id.clone(),
                event: "build.failed".into(),
                project_id: String::new(),
            },
            &t.token,
        ))
        .await
        .unwrap();
        record(&db.conn, &t, EventKind::BuildFailed, json!({})).await;
        w.tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(
            (sink.at("/all").len(), sink.at("/mine").len()),
            (2, 1),
            "{b}"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn test_channel_answers_with_the_targets_result_and_email_goes_through_smtp() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "dave", &[200, 404]).await;
        let c = t
            .create(
                pb::ChannelKind::Slack,
                "s",
                &sink.url("/test/hook/path/xyz"),
                &[],
            )
            .await
            .unwrap()
            .channel
            .unwrap();
        let test = |t: &Tenant, id: &str| {
            let mut n = t.n.clone();
            let req = authed(pb::TestChannelRequest { id: id.into() }, &t.token);
            async move { n.test_channel(req).await.unwrap().into_inner() }
        };
        let ok = test(&t, &c.id).await;
        assert_eq!(
            (ok.delivered, ok.status_code, ok.error.as_str()),
            (true, 200, ""),
            "{b}"
        );
        let body = sink.at("/test/hook/path/xyz")[0].json();
        assert_eq!(
            body["blocks"][0]["text"]["text"], "Test notification",
            "{b}"
        );
        let failed = test(&t, &c.id).await;
        assert_eq!((failed.delivered, failed.status_code), (false, 404), "{b}");
        assert_eq!(failed.error, "HTTP 404: sink says hi", "{b}");
        // A closed port: an error in words, no status, no URL in it.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let dead = t
            .create(
                pb::ChannelKind::Discord,
                "dead",
                &format!("http://127.0.0.1:{port}/secret-path-token"),
                &[],
            )
            .await
            .unwrap()
            .channel
            .unwrap();
        let r = test(&t, &dead.id).await;
        assert!(
            !r.delivered && r.status_code == 0 && !r.error.is_empty(),
            "{b}: {r:?}"
        );
        assert!(!r.error.contains("secret-path-token"), "{b}: {}", r.error);
        // TestChannel records no delivery.
        assert!(t.deliveries(&c.id).await.is_empty(), "{b}");

        // E-mail: the organization's SMTP settings, password write-only.
        let sink_smtp = smtp::SmtpSink::start(smtp::SmtpMode::Plain).await;
        let smtp_port = sink_smtp.port;
        let none =
            t.n.get_email_config(authed(
                pb::GetEmailConfigRequest {
                    organization_id: t.org.clone(),
                },
                &t.token,
            ))
            .await;
        assert_eq!(code(none), Code::NotFound, "{b}");
        let org = t.org.clone();
        let set = |tls: pb::SmtpTlsMode| pb::SetEmailConfigRequest {
            organization_id: org.clone(),
            smtp_host: "127.0.0.1".into(),
            smtp_port: i32::from(smtp_port),
            username: "mailer".into(),
            password: "smtp-hunter2".into(),
            from_address: "ferry@example.com".into(),
            from_name: "Ferry".into(),
            tls_mode: tls.into(),
            ..Default::default()
        };
        let cfg =
            t.n.set_email_config(authed(set(pb::SmtpTlsMode::None), &t.token))
                .await
                .unwrap()
                .into_inner();
        assert!(cfg.has_password, "{b}");
        assert!(!format!("{cfg:?}").contains("hunter2"), "{b}");
        let mail =
            t.n.create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: t.org.clone(),
                    kind: pb::ChannelKind::Email.into(),
                    name: "mail".into(),
                    email_recipients: vec!["ops@example.com".into(), "cto@example.com".into()],
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .channel
            .unwrap();
        assert_eq!(
            mail.email_recipients,
            vec!["ops@example.com", "cto@example.com"],
            "{b}"
        );
        let r = test(&t, &mail.id).await;
        assert!(r.delivered, "{b}: {r:?}");
        let got = sink_smtp.received();
        assert_eq!(got.len(), 1, "{b}");
        assert!(
            got[0].data.contains("Subject: [Ferry] Test notification"),
            "{b}: {}",
            got[0].data
        );
        assert!(
            got[0]
                .commands
                .iter()
                .any(|c| c.contains("RCPT TO:<cto@example.com>")),
            "{b}"
        );
        let auth = got[0]
            .commands
            .iter()
            .find(|c| c.starts_with("AUTH"))
            .unwrap();
        assert!(auth.contains("AG1haWxlcgBzbXRwLWh1bnRlcjI="), "{b}: {auth}");
        // STARTTLS is required when asked for: this sink offers none.
        t.n.set_email_config(authed(
            pb::SetEmailConfigRequest {
                password: String::new(),
                ..set(pb::SmtpTlsMode::Starttls)
            },
            &t.token,
        ))
        .await
        .unwrap();
        let r = test(&t, &mail.id).await;
        assert!(!r.delivered && r.error.starts_with("SMTP"), "{b}: {r:?}");
        // TLS: the sink does not speak TLS.
        t.n.set_email_config(authed(set(pb::SmtpTlsMode::Tls), &t.token))
            .await
            .unwrap();
        let r = test(&t, &mail.id).await;
        assert!(!r.delivered, "{b}: {r:?}");
        assert_eq!(sink_smtp.messages().len(), 1, "{b}");
        t.n.delete_email_config(authed(
            pb::DeleteEmailConfigRequest {
                organization_id: t.org.clone(),
            },
            &t.token,
        ))
        .await
        .unwrap();
        let r = test(&t, &mail.id).await;
        assert!(r.error.contains("no enabled SMTP settings"), "{b}: {r:?}");
        api.stop().await;
    }
}

#[tokio::test]
async fn a_failed_deployment_is_recorded_with_the_failure_and_delivered_once_after_a_crash() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, state) = start_api(&db.conn, true).await;
        let sink = Sink::start(&[]).await;
        let mut t = tenant(&api, "erin").await;
        let a = t
            .create(pb::ChannelKind::Slack, "a", &sink.url("/a"), &[])
            .await
            .unwrap()
            .channel
            .unwrap();
        let c = t
            .create(pb::ChannelKind::Webhook, "c", &sink.url("/c"), &[])
            .await
            .unwrap()
            .channel
            .unwrap();
        for ch in [&a, &c] {
            t.n.subscribe(authed(
                pb::SubscribeRequest {
                    channel_id: ch.id.clone(),
                    event: "deployment.failed".into(),
                    project_id: t.project.clone(),
                },
                &t.token,
            ))
            .await
            .unwrap();
        }
        // A rollout the api was driving when it stopped; the restart (no
        // cluster now) fails it: the real producer path.
        let deployment = Uuid::now_v7();
        deployments::ActiveModel {
            id: Set(deployment),
            service_id: Set(Some(id(&t.service))),
            trigger_type: Set(TriggerType::Manual),
            status: Set(DeploymentStatus::Pending),
            image: Set(Some("nginx:1".into())),
            k8s_artifacts: Set(json!({})),
            metadata: Set(json!({})),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        assert_eq!(
            ferry_api::deployer(&state).resume().await.unwrap(),
            1,
            "{b}"
        );
        let failed = deployments::Entity::find_by_id(deployment)
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(failed.status, DeploymentStatus::Failed, "{b}");
        let events = notification_outbox::Entity::find()
            .filter(notification_outbox::Column::Event.eq("deployment.failed"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{b}");
        let event = &events[0];
        assert_eq!(event.project_id, Some(id(&t.project)), "{b}");
        assert_eq!(event.payload["deployment"]["id"], json!(deployment), "{b}");
        assert!(
            event.payload["summary"]
                .as_str()
                .unwrap()
                .starts_with("Deployment of web in erin shop failed: the api restarted"),
            "{b}: {}",
            event.payload
        );
        let committed = Instant::now();

        // "Crash": the event is committed, no worker ran; nothing was sent.
        assert_eq!(
            notification_deliveries::Entity::find()
                .count(&db.conn)
                .await
                .unwrap(),
            0,
            "{b}"
        );
        assert!(sink.requests().is_empty(), "{b}");

        // Two workers race on it (no lease between them): still one
        // delivery row, and one request, per channel.
        let (w1, w2) = (worker(&db.conn), worker(&db.conn));
        let now = chrono::Utc::now();
        let (r1, r2) = tokio::join!(w1.tick(now), w2.tick(now));
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        assert_eq!(r1.delivered + r2.delivered, 2, "{b}: {r1:?} {r2:?}");
        assert_eq!((sink.at("/a").len(), sink.at("/c").len()), (1, 1), "{b}");
        assert_eq!(
            notification_deliveries::Entity::find()
                .count(&db.conn)
                .await
                .unwrap(),
            2,
            "{b}"
        );

        // The real scheduler loop then (under its lease) sends nothing again,
        // and delivers the next event within about one interval.
        let shutdown = ferry_common::Shutdown::new();
        let lease = ferry_scheduler::lease::Lease::new(
            ferry_scheduler::notifications::LEASE,
            "replica-a",
            Duration::from_secs(5),
        );
        let loop_worker = worker(&db.conn);
        let conn = db.conn.clone();
        let stop = shutdown.clone();
        let running = tokio::spawn(async move {
            ferry_scheduler::notifications::deliver(
                &conn,
                &loop_worker,
                &lease,
                Duration::from_millis(100),
                &stop,
            )
            .await;
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(sink.requests().len(), 2, "{b}");
        let _ = committed;
        let second = Uuid::now_v7();
        deployments::ActiveModel {
            id: Set(second),
            service_id: Set(Some(id(&t.service))),
            trigger_type: Set(TriggerType::Manual),
            status: Set(DeploymentStatus::Pending),
            k8s_artifacts: Set(json!({})),
            metadata: Set(json!({})),
            created_at: Set(chrono::Utc::now()),
            ..Default::default()
        }
        .insert(&db.conn)
        .await
        .unwrap();
        let started = Instant::now();
        ferry_api::deployer(&state).resume().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.requests().len() < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let got = sink.requests();
        assert_eq!(got.len(), 4, "{b}");
        let latency = got.iter().map(|r| r.at).max().unwrap() - started;
        println!(
            "{b}: failed deployment -> both sinks in {} ms (tick 100 ms)",
            latency.as_millis()
        );
        assert!(latency < Duration::from_secs(2), "{b}: {latency:?}");
        shutdown.trigger();
        running.await.unwrap();
        api.stop().await;
    }
}

#[tokio::test]
async fn a_500_is_retried_with_backoff_and_the_log_shows_both_attempts() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "frank", &[500, 200]).await;
        let c = t
            .create(
                pb::ChannelKind::Slack,
                "s",
                &sink.url("/flaky"),
                &["build.failed"],
            )
            .await
            .unwrap()
            .channel
            .unwrap();
        // A healthy channel next to it is not held up by the failing one.
        let ok = Sink::start(&[]).await;
        t.create(
            pb::ChannelKind::Slack,
            "ok",
            &ok.url("/fine"),
            &["build.failed"],
        )
        .await
        .unwrap();
        record(
            &db.conn,
            &t,
            EventKind::BuildFailed,
            json!({ "summary": "build broke" }),
        )
        .await;
        let w = worker(&db.conn);
        let first = w.tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(
            (first.attempted, first.delivered, first.failed),
            (2, 1, 1),
            "{b}"
        );
        assert_eq!(ok.requests().len(), 1, "{b}");
        let log = t.deliveries(&c.id).await;
        assert_eq!(
            (
                log[0].status.as_str(),
                log[0].attempts,
                log[0].last_response_code
            ),
            ("pending", 1, 500),
            "{b}"
        );
        assert_eq!(log[0].last_error, "HTTP 500: sink says hi", "{b}");
        // Backoff: base 200 ms for the first retry, jittered to 100-200 ms.
        let next = log[0].next_attempt_at.unwrap().seconds as f64
            + f64::from(log[0].next_attempt_at.unwrap().nanos) / 1e9;
        let last = log[0].last_attempt_at.unwrap().seconds as f64
            + f64::from(log[0].last_attempt_at.unwrap().nanos) / 1e9;
        let backoff = next - last;
        assert!((0.09..0.6).contains(&backoff), "{b}: backoff {backoff}");
        // Not due yet: nothing is sent.
        let early = w.tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(early.attempted, 0, "{b}");
        tokio::time::sleep(Duration::from_millis(450)).await;
        let second = w.tick(chrono::Utc::now()).await.unwrap();
        assert_eq!((second.attempted, second.delivered), (1, 1), "{b}");
        let log = t.deliveries(&c.id).await;
        assert_eq!(
            (
                log[0].status.as_str(),
                log[0].attempts,
                log[0].last_response_code,
                log[0].last_error.as_str()
            ),
            ("delivered", 2, 200, ""),
            "{b}"
        );
        assert!(log[0].delivered_at.is_some(), "{b}");
        assert_eq!(sink.requests().len(), 2, "{b}");
        // Identical bodies (the event, not the attempt).
        assert_eq!(sink.requests()[0].body, sink.requests()[1].body, "{b}");

        // A channel that never answers 2xx gives up after max attempts.
        let dead = Sink::start(&[503; 10]).await;
        let d = t
            .create(
                pb::ChannelKind::Discord,
                "dead",
                &dead.url("/down"),
                &["job_run.failed"],
            )
            .await
            .unwrap()
            .channel
            .unwrap();
        record(&db.conn, &t, EventKind::JobRunFailed, json!({})).await;
        let quick = Worker::new(
            db.conn.clone(),
            Arc::new(ferry_tests::test_keyring()),
            Sender::new(SendConfig {
                allow_private: true,
                timeout: Duration::from_secs(3),
            })
            .unwrap(),
            WorkerConfig {
                max_attempts: 3,
                backoff_base: Duration::from_millis(1),
                backoff_cap: Duration::from_millis(1),
                ..WorkerConfig::default()
            },
        );
        for _ in 0..6 {
            quick.tick(chrono::Utc::now()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let log = t.deliveries(&d.id).await;
        assert_eq!(
            (
                log[0].status.as_str(),
                log[0].attempts,
                log[0].last_response_code
            ),
            ("failed", 3, 503),
            "{b}"
        );
        assert_eq!(dead.requests().len(), 3, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn private_and_non_http_targets_are_refused_without_the_operators_flag() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, false).await;
        let sink = Sink::start(&[]).await;
        let mut t = tenant(&api, "gina").await;
        for (url, why) in [
            (sink.url("/hook"), "private"),
            (
                "http://169.254.169.254/latest/meta-data".to_owned(),
                "private",
            ),
            ("http://[::1]:8080/x".to_owned(), "private"),
            ("http://localhost:9/x".to_owned(), "private"),
            ("http://10.0.0.7/x".to_owned(), "private"),
            ("ftp://example.com/x".to_owned(), "https://"),
            ("file:///etc/passwd".to_owned(), "https://"),
            (format!("https://example.com/{}", "a".repeat(2100)), "2048"),
            (String::new(), "required"),
        ] {
            let err = t
                .create(pb::ChannelKind::Slack, "x", &url, &[])
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{b}: {url}");
            assert!(
                err.message().starts_with("webhookUrl: "),
                "{b}: {}",
                err.message()
            );
            assert!(err.message().contains(why), "{b}: {url}: {}", err.message());
        }
        let smtp =
            t.n.set_email_config(authed(
                pb::SetEmailConfigRequest {
                    organization_id: t.org.clone(),
                    smtp_host: "127.0.0.1".into(),
                    from_address: "ferry@example.com".into(),
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap_err();
        assert!(
            smtp.message().starts_with("smtpHost: "),
            "{b}: {}",
            smtp.message()
        );
        // At send time too (a channel saved while allowed, or a name that
        // resolves somewhere new): the sender refuses loopback and never
        // connects.
        let strict = Sender::new(SendConfig::default()).unwrap();
        let n = ferry_notify::Notification::test(Uuid::nil(), "x");
        for url in [
            sink.url("/direct"),
            format!("http://localhost:{}/named", sink.addr.port()),
        ] {
            let out = strict.post(&url, &json!({}), None, &n).await;
            assert!(!out.delivered, "{b}: {url}");
            assert!(
                out.error.as_deref().unwrap().contains("private"),
                "{b}: {out:?}"
            );
        }
        assert!(sink.requests().is_empty(), "{b}");
        // Bounds, each naming its field; nothing is Internal.
        let long = "n".repeat(101);
        let err = t
            .create(
                pb::ChannelKind::Slack,
                &long,
                "https://hooks.slack.com/services/x",
                &[],
            )
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("name: "),
            "{b}: {}",
            err.message()
        );
        let err = t
            .create(
                pb::ChannelKind::Unspecified,
                "k",
                "https://hooks.slack.com/services/x",
                &[],
            )
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("kind: "),
            "{b}: {}",
            err.message()
        );
        let err = t
            .create(
                pb::ChannelKind::Slack,
                "e",
                "https://hooks.slack.com/services/x",
                &["nope"],
            )
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("events: "),
            "{b}: {}",
            err.message()
        );
        let too_many: Vec<String> = (0..21).map(|i| format!("u{i}@example.com")).collect();
        let err =
            t.n.create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: t.org.clone(),
                    kind: pb::ChannelKind::Email.into(),
                    name: "m".into(),
                    email_recipients: too_many,
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("emailRecipients: "),
            "{b}: {}",
            err.message()
        );
        let err =
            t.n.create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: t.org.clone(),
                    kind: pb::ChannelKind::Webhook.into(),
                    name: "w".into(),
                    webhook_url: "https://hooks.example.com/in".into(),
                    signing_secret: "short".into(),
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap_err();
        assert!(
            err.message().starts_with("signingSecret: "),
            "{b}: {}",
            err.message()
        );
        let public = t
            .create(
                pb::ChannelKind::Slack,
                "public",
                "https://93.184.215.14/services/T/B/x",
                &[],
            )
            .await;
        assert!(public.is_ok(), "{b}: {public:?}");
        let dup = t
            .create(
                pb::ChannelKind::Slack,
                "public",
                "https://93.184.215.14/services/T/B/x",
                &[],
            )
            .await;
        let dup = dup.unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists, "{b}");
        assert!(dup.message().starts_with("name: "), "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn other_organizations_cannot_see_test_or_subscribe_a_channel_and_members_only_read() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, true).await;
        let sink = Sink::start(&[]).await;
        let mut v = tenant(&api, "victim").await;
        let c = v
            .create(
                pb::ChannelKind::Slack,
                "s",
                &sink.url("/victim"),
                &["build.failed"],
            )
            .await
            .unwrap()
            .channel
            .unwrap();
        let mut o = tenant(&api, "outsider").await;
        let tok = o.token.clone();
        let got =
            o.n.get_channel(authed(pb::GetChannelRequest { id: c.id.clone() }, &tok))
                .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.test_channel(authed(pb::TestChannelRequest { id: c.id.clone() }, &tok))
                .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.subscribe(authed(
                pb::SubscribeRequest {
                    channel_id: c.id.clone(),
                    event: "member.joined".into(),
                    project_id: String::new(),
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.list_deliveries(authed(
                pb::ListDeliveriesRequest {
                    channel_id: c.id.clone(),
                    ..Default::default()
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.list_channels(authed(
                pb::ListChannelsRequest {
                    organization_id: v.org.clone(),
                    ..Default::default()
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.delete_channel(authed(pb::DeleteChannelRequest { id: c.id.clone() }, &tok))
                .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.rotate_channel_secret(authed(
                pb::RotateChannelSecretRequest { id: c.id.clone() },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.update_channel(authed(
                pb::UpdateChannelRequest {
                    id: c.id.clone(),
                    ..Default::default()
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.get_email_config(authed(
                pb::GetEmailConfigRequest {
                    organization_id: v.org.clone(),
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.set_email_config(authed(
                pb::SetEmailConfigRequest {
                    organization_id: v.org.clone(),
                    smtp_host: "smtp.example.com".into(),
                    ..Default::default()
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        let got =
            o.n.delete_email_config(authed(
                pb::DeleteEmailConfigRequest {
                    organization_id: v.org.clone(),
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        // Subscribing one's own channel to another organization's project.
        let mine = o
            .create(pb::ChannelKind::Slack, "mine", &sink.url("/o"), &[])
            .await
            .unwrap()
            .channel
            .unwrap();
        let got =
            o.n.subscribe(authed(
                pb::SubscribeRequest {
                    channel_id: mine.id.clone(),
                    event: "build.failed".into(),
                    project_id: v.project.clone(),
                },
                &tok,
            ))
            .await;
        assert_eq!(code(got), Code::NotFound, "{b}");
        assert!(sink.requests().is_empty(), "{b}");

        // A member of the victim's organization reads, but does not test.
        let mut mc = clients(api.addr).await;
        let member = register(&mut mc, "member").await;
        add_member(&db.conn, &v.org, &member.id, OrgRole::Member).await;
        let mt = login(&mut mc, "member").await;
        let mut n = NotificationServiceClient::new(mc.channel.clone());
        let seen = n
            .get_channel(authed(pb::GetChannelRequest { id: c.id.clone() }, &mt))
            .await
            .unwrap();
        assert_eq!(
            seen.into_inner().target,
            format!("http://{}/…/", sink.addr),
            "{b}"
        );
        let got = n
            .test_channel(authed(pb::TestChannelRequest { id: c.id.clone() }, &mt))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        let got = n
            .get_email_config(authed(
                pb::GetEmailConfigRequest {
                    organization_id: v.org.clone(),
                },
                &mt,
            ))
            .await;
        assert_eq!(code(got), Code::PermissionDenied, "{b}");
        // The victim still has its channel.
        v.n.get_channel(authed(pb::GetChannelRequest { id: c.id.clone() }, &v.token))
            .await
            .unwrap();
        api.stop().await;
    }
}

#[tokio::test]
async fn an_event_is_written_only_when_its_transaction_commits_and_invitations_produce_one() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, true).await;
        let mut t = tenant(&api, "henry").await;
        let txn = db.conn.begin().await.unwrap();
        ferry_db::outbox::enqueue(
            &txn,
            Event::new(id(&t.org), None, EventKind::BackupFailed, json!({})),
        )
        .await
        .unwrap();
        txn.rollback().await.unwrap();
        let backups = notification_outbox::Entity::find()
            .filter(notification_outbox::Column::Event.eq("backup.failed"))
            .count(&db.conn)
            .await
            .unwrap();
        assert_eq!(backups, 0, "{b}");
        t.c.invites
            .create_invitation(authed(
                pb::CreateInvitationRequest {
                    organization_id: t.org.clone(),
                    email: "new@example.com".into(),
                    role: pb::OrganizationRole::Member.into(),
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap();
        let invited = notification_outbox::Entity::find()
            .filter(notification_outbox::Column::Event.eq("member.invited"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(invited.len(), 1, "{b}");
        assert_eq!(invited[0].organization_id, id(&t.org), "{b}");
        assert_eq!(invited[0].payload["email"], "new@example.com", "{b}");
        api.stop().await;
    }
}

/// Waits (up to 20 s) until deployment `id` is `status`.
async fn wait_deployment(conn: &DatabaseConnection, id: &str, status: DeploymentStatus) {
    let id: Uuid = id.parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = deployments::Entity::find_by_id(id)
            .one(conn)
            .await
            .unwrap()
            .unwrap();
        if d.status == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "deployment stuck at {:?}",
            d.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every outbox event, oldest first, as (kind, payload).
async fn outbox_events(conn: &DatabaseConnection) -> Vec<(String, Value)> {
    use ferry_db::sea_orm::QueryOrder as _;
    notification_outbox::Entity::find()
        .order_by_asc(notification_outbox::Column::CreatedAt)
        .order_by_asc(notification_outbox::Column::Id)
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.event, e.payload))
        .collect()
}

#[tokio::test]
async fn deployments_rollbacks_and_joins_produce_exactly_their_events_and_are_delivered() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let fake = FakeCluster::new();
        let (api, _) = start_api_on(&db.conn, true, Some(&fake)).await;
        let sink = Sink::start(&[]).await;
        let mut t = tenant(&api, "ivy").await;
        let events = [
            "deployment.succeeded",
            "deployment.rolled_back",
            "member.joined",
        ];
        t.create(
            pb::ChannelKind::Webhook,
            "hook",
            &sink.url("/hook"),
            &events,
        )
        .await
        .unwrap();
        let deploys = DeploymentServiceClient::new(t.c.channel.clone());
        let deploy = |service: String| {
            let req = authed(
                pb::DeployRequest {
                    service_id: service,
                },
                &t.token,
            );
            let mut d = deploys.clone();
            async move { d.deploy(req).await.unwrap().into_inner().id }
        };
        let d1 = deploy(t.service.clone()).await;
        wait_deployment(&db.conn, &d1, DeploymentStatus::Running).await;
        let d2 = deploy(t.service.clone()).await;
        wait_deployment(&db.conn, &d2, DeploymentStatus::Running).await;
        let r = deploys
            .clone()
            .rollback(authed(
                pb::RollbackRequest {
                    deployment_id: d1.clone(),
                },
                &t.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .id;
        wait_deployment(&db.conn, &r, DeploymentStatus::Running).await;

        // A new member joins through an invitation.
        let invited =
            t.c.invites
                .create_invitation(authed(
                    pb::CreateInvitationRequest {
                        organization_id: t.org.clone(),
                        email: "ivyjoiner@example.com".into(),
                        role: pb::OrganizationRole::Viewer.into(),
                        ..Default::default()
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
        let mut c = clients(api.addr).await;
        let joiner = register(&mut c, "ivyjoiner").await;
        let joiner_token = login(&mut c, "ivyjoiner").await;
        c.invites
            .accept_invitation(authed(
                pb::AcceptInvitationRequest {
                    token: invited.token,
                },
                &joiner_token,
            ))
            .await
            .unwrap();

        // Exactly these events, in this order, with the right subjects.
        let got = outbox_events(&db.conn).await;
        let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "deployment.succeeded",
                "deployment.succeeded",
                "deployment.rolled_back",
                "member.invited",
                "member.joined"
            ],
            "{b}"
        );
        let ids: Vec<&Value> = got[..3]
            .iter()
            .map(|(_, p)| &p["deployment"]["id"])
            .collect();
        assert_eq!(ids, [&json!(d1), &json!(d2), &json!(r)], "{b}");
        assert_eq!(got[0].1["service"]["id"], json!(t.service), "{b}");
        assert_eq!(got[0].1["summary"], "web in ivy shop is deployed", "{b}");
        assert_eq!(got[2].1["deployment"]["rollbackOf"], json!(d1), "{b}");
        assert_eq!(got[2].1["deployment"]["trigger"], "rollback", "{b}");
        assert_eq!(
            got[2].1["summary"], "web in ivy shop was rolled back",
            "{b}"
        );
        assert_eq!(got[4].1["userId"], json!(joiner.id), "{b}");
        assert_eq!(got[4].1["role"], "viewer", "{b}");
        assert_eq!(got[4].1["summary"], "ivyjoiner joined as viewer", "{b}");

        // The subscribed three kinds reach the webhook; the invitation not.
        worker(&db.conn).tick(chrono::Utc::now()).await.unwrap();
        let mut sent: Vec<String> = sink
            .at("/hook")
            .iter()
            .map(|r| r.headers["ferry-event"].to_str().unwrap().to_owned())
            .collect();
        sent.sort();
        assert_eq!(
            sent,
            [
                "deployment.rolled_back",
                "deployment.succeeded",
                "deployment.succeeded",
                "member.joined"
            ],
            "{b}"
        );
        api.stop().await;
    }
}

/// Moves event `id` back `days` days.
async fn age(conn: &DatabaseConnection, id: Uuid, days: i64) {
    let mut e: notification_outbox::ActiveModel = notification_outbox::Entity::find_by_id(id)
        .one(conn)
        .await
        .unwrap()
        .unwrap()
        .into();
    e.created_at = Set(chrono::Utc::now() - chrono::Duration::days(days));
    e.update(conn).await.unwrap();
}

/// Sets the status of event `id`'s deliveries.
async fn set_status(conn: &DatabaseConnection, id: Uuid, status: NotificationDeliveryStatus) {
    use ferry_db::sea_orm::sea_query::Expr;
    notification_deliveries::Entity::update_many()
        .col_expr(notification_deliveries::Column::Status, Expr::value(status))
        .filter(notification_deliveries::Column::EventId.eq(id))
        .exec(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn settled_events_past_the_retention_are_deleted_with_their_deliveries() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "rita", &[]).await;
        t.create(
            pb::ChannelKind::Webhook,
            "hook",
            &sink.url("/h"),
            &["backup.failed"],
        )
        .await
        .unwrap();
        let ev = |n: u32| json!({ "summary": format!("event {n}") });
        let delivered = record(&db.conn, &t, EventKind::BackupFailed, ev(1)).await;
        let given_up = record(&db.conn, &t, EventKind::BackupFailed, ev(2)).await;
        let pending = record(&db.conn, &t, EventKind::BackupFailed, ev(3)).await;
        let unsubscribed = record(&db.conn, &t, EventKind::JobRunFailed, ev(4)).await;
        let recent = record(&db.conn, &t, EventKind::BackupFailed, ev(5)).await;
        let w = worker(&db.conn);
        w.tick(chrono::Utc::now()).await.unwrap();
        assert_eq!(sink.requests().len(), 4, "{b}");
        let undispatched = record(&db.conn, &t, EventKind::BackupFailed, ev(6)).await;
        set_status(&db.conn, given_up, NotificationDeliveryStatus::Failed).await;
        set_status(&db.conn, pending, NotificationDeliveryStatus::Pending).await;
        for e in [delivered, given_up, pending, unsubscribed, undispatched] {
            age(&db.conn, e, 31).await;
        }
        age(&db.conn, recent, 29).await;

        // Retention off: nothing goes.
        let keep_all = Worker::new(
            db.conn.clone(),
            Arc::new(ferry_tests::test_keyring()),
            Sender::new(SendConfig::default()).unwrap(),
            WorkerConfig {
                retention: None,
                ..WorkerConfig::default()
            },
        );
        assert_eq!(keep_all.prune(chrono::Utc::now()).await.unwrap(), 0, "{b}");

        // 30 days (the default): the settled old ones go, with their log.
        assert_eq!(w.prune(chrono::Utc::now()).await.unwrap(), 3, "{b}");
        let mut left: Vec<Uuid> = notification_outbox::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        left.sort();
        let mut want = vec![pending, recent, undispatched];
        want.sort();
        assert_eq!(left, want, "{b}");
        let mut logged: Vec<Uuid> = notification_deliveries::Entity::find()
            .all(&db.conn)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.event_id)
            .collect();
        logged.sort();
        let mut want = vec![pending, recent];
        want.sort();
        assert_eq!(logged, want, "{b}");

        // In bounded batches: one event per transaction still gets them all.
        set_status(&db.conn, pending, NotificationDeliveryStatus::Delivered).await;
        age(&db.conn, recent, 31).await;
        let cutoff = chrono::Utc::now() - chrono::Duration::days(30);
        let gone = ferry_db::outbox::prune_settled(&db.conn, cutoff, 1)
            .await
            .unwrap();
        assert_eq!(gone, 2, "{b}");
        assert_eq!(
            notification_deliveries::Entity::find()
                .count(&db.conn)
                .await
                .unwrap(),
            0,
            "{b}"
        );
        api.stop().await;
    }
}

#[tokio::test]
async fn on_postgresql_a_committed_event_wakes_the_delivery_loop_before_its_tick() {
    use ferry_db::sea_orm::DbBackend;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let pg = db.conn.get_database_backend() == DbBackend::Postgres;
        let (api, sink, mut t) = setup(&db.conn, "walt", &[]).await;
        t.create(
            pb::ChannelKind::Webhook,
            "hook",
            &sink.url("/w"),
            &["backup.failed"],
        )
        .await
        .unwrap();
        // A 30 s poll: only a wake-up can deliver within the test.
        let shutdown = ferry_common::Shutdown::new();
        let lease = ferry_scheduler::lease::Lease::new(
            ferry_scheduler::notifications::LEASE,
            "replica-w",
            Duration::from_secs(60),
        );
        let (conn, stop, w) = (db.conn.clone(), shutdown.clone(), worker(&db.conn));
        let running = tokio::spawn(async move {
            ferry_scheduler::notifications::deliver(
                &conn,
                &w,
                &lease,
                Duration::from_secs(30),
                &stop,
            )
            .await;
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        record(
            &db.conn,
            &t,
            EventKind::BackupFailed,
            json!({ "summary": "wake" }),
        )
        .await;
        let wait = if pg { 5 } else { 1 };
        let deadline = Instant::now() + Duration::from_secs(wait);
        while sink.requests().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let got = sink.requests();
        if pg {
            assert_eq!(got.len(), 1, "{b}: not woken");
            let latency = got[0].at - started;
            println!(
                "{b}: commit -> webhook in {} ms (poll 30 s)",
                latency.as_millis()
            );
            assert!(latency < Duration::from_secs(1), "{b}: {latency:?}");
        } else {
            assert!(got.is_empty(), "{b}: SQLite polls; nothing wakes it");
        }
        shutdown.trigger();
        running.await.unwrap();
        api.stop().await;
    }
}

/// Whether the captured request's `Ferry-Signature` verifies with `secret`.
fn signed_with(r: &Captured, secret: &str) -> bool {
    let signature = r.headers["ferry-signature"].to_str().unwrap();
    let now = chrono::Utc::now().timestamp();
    ferry_notify::sign::verify(secret.as_bytes(), signature, &r.body, now).is_ok()
}

#[tokio::test]
async fn a_rotated_signing_secret_signs_the_next_delivery_and_the_old_one_no_longer_verifies() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "rosa", &[]).await;
        let created = t
            .create(
                pb::ChannelKind::Webhook,
                "hook",
                &sink.url("/r"),
                &["backup.failed"],
            )
            .await
            .unwrap();
        let old = created.signing_secret.clone();
        let hook = created.channel.unwrap();
        let w = worker(&db.conn);
        record(
            &db.conn,
            &t,
            EventKind::BackupFailed,
            json!({ "summary": "one" }),
        )
        .await;
        w.tick(chrono::Utc::now()).await.unwrap();
        assert!(signed_with(&sink.at("/r")[0], &old), "{b}");

        let rotated =
            t.n.rotate_channel_secret(authed(
                pb::RotateChannelSecretRequest {
                    id: hook.id.clone(),
                },
                &t.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let new = rotated.signing_secret.clone();
        assert_eq!(new.len(), 64, "{b}");
        assert_ne!(new, old, "{b}");
        assert!(rotated.channel.as_ref().unwrap().signed, "{b}");
        assert!(
            !format!("{rotated:?}").contains(&new),
            "{b}: Debug shows no secret"
        );

        record(
            &db.conn,
            &t,
            EventKind::BackupFailed,
            json!({ "summary": "two" }),
        )
        .await;
        w.tick(chrono::Utc::now()).await.unwrap();
        let got = sink.at("/r");
        assert_eq!(got.len(), 2, "{b}");
        assert!(
            signed_with(&got[1], &new),
            "{b}: not signed with the new secret"
        );
        assert!(
            !signed_with(&got[1], &old),
            "{b}: still signed with the old secret"
        );

        // Audited, without the secret.
        let audit = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("notification_channel.rotate_secret"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audit.len(), 1, "{b}");
        assert_eq!(audit[0].resource_id, Some(id(&hook.id)), "{b}");
        assert!(!audit[0].details.to_string().contains(&new), "{b}");

        // Unsigned kinds have nothing to rotate; members may not rotate.
        let slack = t
            .create(pb::ChannelKind::Slack, "s", &sink.url("/s"), &[])
            .await
            .unwrap()
            .channel
            .unwrap();
        let err =
            t.n.rotate_channel_secret(authed(
                pb::RotateChannelSecretRequest { id: slack.id },
                &t.token,
            ))
            .await;
        assert_eq!(code(err), Code::FailedPrecondition, "{b}");
        let mut m = clients(api.addr).await;
        let member = register(&mut m, "rosa-member").await;
        let member_token = login(&mut m, "rosa-member").await;
        add_member(&db.conn, &t.org, &member.id, OrgRole::Member).await;
        let err = NotificationServiceClient::new(m.channel.clone())
            .rotate_channel_secret(authed(
                pb::RotateChannelSecretRequest {
                    id: hook.id.clone(),
                },
                &member_token,
            ))
            .await;
        assert_eq!(code(err), Code::PermissionDenied, "{b}");
        api.stop().await;
    }
}

impl Tenant {
    /// Sets the organization's SMTP relay to 127.0.0.1:`port` in `tls`.
    async fn smtp(&mut self, port: u16, tls: pb::SmtpTlsMode) {
        self.n
            .set_email_config(authed(
                pb::SetEmailConfigRequest {
                    organization_id: self.org.clone(),
                    smtp_host: "127.0.0.1".into(),
                    smtp_port: i32::from(port),
                    username: "mailer".into(),
                    password: "smtp-hunter2".into(),
                    from_address: "ferry@example.com".into(),
                    from_name: "Ferry".into(),
                    tls_mode: tls.into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap();
    }

    /// An e-mail channel to ops@example.com subscribed to `events`.
    async fn email_channel(&mut self, name: &str, events: &[&str]) -> pb::NotificationChannel {
        self.n
            .create_channel(authed(
                pb::CreateChannelRequest {
                    organization_id: self.org.clone(),
                    kind: pb::ChannelKind::Email.into(),
                    name: name.into(),
                    email_recipients: vec!["ops@example.com".into()],
                    events: events.iter().map(|e| (*e).to_owned()).collect(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .channel
            .unwrap()
    }
}

/// Records a `backup.failed` event and runs one tick of `w`; returns the
/// channel's newest delivery.
async fn deliver_one(
    conn: &DatabaseConnection,
    t: &mut Tenant,
    w: &Worker,
    channel: &str,
    summary: &str,
) -> pb::NotificationDelivery {
    record(
        conn,
        t,
        EventKind::BackupFailed,
        json!({ "summary": summary }),
    )
    .await;
    w.tick(chrono::Utc::now()).await.unwrap();
    t.deliveries(channel).await.remove(0)
}

#[tokio::test]
async fn email_is_delivered_over_starttls_and_implicit_tls_trusting_the_operators_ca() {
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, true).await;
        let mut t = tenant(&api, "tls").await;
        let mail = t.email_channel("mail", &["backup.failed"]).await;
        let w = worker(&db.conn);
        for (mode, tls) in [
            (smtp::SmtpMode::StartTls, pb::SmtpTlsMode::Starttls),
            (smtp::SmtpMode::Tls, pb::SmtpTlsMode::Tls),
        ] {
            let sink = smtp::SmtpSink::start(mode).await;
            t.smtp(sink.port, tls).await;
            let summary = format!("nightly backup failed ({mode:?})");
            let d = deliver_one(&db.conn, &mut t, &w, &mail.id, &summary).await;
            assert_eq!(d.status, "delivered", "{b} {mode:?}: {d:?}");
            assert_eq!(d.last_response_code, 250, "{b} {mode:?}");
            let got = sink.messages();
            assert_eq!(got.len(), 1, "{b} {mode:?}: {:?}", sink.received());
            assert!(got[0].tls, "{b} {mode:?}: the message went in the clear");
            assert!(
                got[0]
                    .data
                    .contains(&format!("Subject: [Ferry] Backup failed: {summary}")),
                "{b} {mode:?}: {}",
                got[0].data
            );
            assert!(got[0].data.contains("Event: backup.failed"), "{b} {mode:?}");
            let auth = got[0].commands.iter().find(|c| c.starts_with("AUTH"));
            assert_eq!(
                auth.map(String::as_str),
                Some("AUTH PLAIN AG1haWxlcgBzbXRwLWh1bnRlcjI="),
                "{b} {mode:?}"
            );
            if mode == smtp::SmtpMode::StartTls {
                // The credentials went only after the upgrade.
                let starttls = got[0].commands.iter().position(|c| c == "STARTTLS");
                let auth = got[0].commands.iter().position(|c| c.starts_with("AUTH"));
                assert!(
                    starttls.unwrap() < auth.unwrap(),
                    "{b}: {:?}",
                    got[0].commands
                );
            }
            // TestChannel (the api, started with the same CA) too.
            let r =
                t.n.test_channel(authed(
                    pb::TestChannelRequest {
                        id: mail.id.clone(),
                    },
                    &t.token,
                ))
                .await
                .unwrap()
                .into_inner();
            assert!(r.delivered, "{b} {mode:?}: {r:?}");
            assert_eq!(sink.messages().len(), 2, "{b} {mode:?}");
        }

        // Implicit TLS against a STARTTLS relay: a clear delivery error.
        let starttls = smtp::SmtpSink::start(smtp::SmtpMode::StartTls).await;
        t.smtp(starttls.port, pb::SmtpTlsMode::Tls).await;
        let d = deliver_one(&db.conn, &mut t, &w, &mail.id, "mismatch").await;
        assert_eq!(d.status, "pending", "{b}: retried later: {d:?}");
        assert!(d.last_error.starts_with("SMTP: "), "{b}: {}", d.last_error);
        assert!(
            d.last_error.contains("Connection error")
                || d.last_error.contains("InvalidContentType"),
            "{b}: {}",
            d.last_error
        );
        assert!(starttls.messages().is_empty(), "{b}");

        // Without the operator's CA the relay's certificate is refused.
        let tls = smtp::SmtpSink::start(smtp::SmtpMode::Tls).await;
        t.smtp(tls.port, pb::SmtpTlsMode::Tls).await;
        let untrusting = worker_trusting(&db.conn, SmtpTrust::default());
        let d = deliver_one(&db.conn, &mut t, &untrusting, &mail.id, "untrusted").await;
        assert_eq!(d.status, "pending", "{b}: {d:?}");
        assert!(
            d.last_error.contains("UnknownIssuer"),
            "{b}: {}",
            d.last_error
        );
        assert!(tls.messages().is_empty(), "{b}");
        api.stop().await;
    }
}

/// Worker throughput: `N` events to two channels on a loopback sink, and
/// the time the worker takes to deliver them all (default settings: 200
/// per tick, 8 in flight). `cargo nextest run -p ferry-api --run-ignored
/// only --no-capture -E 'test(bench_notification_throughput)'`.
#[tokio::test]
#[ignore = "benchmark"]
async fn bench_notification_throughput() {
    const N: usize = 1000;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, sink, mut t) = setup(&db.conn, "bench", &[]).await;
        for name in ["one", "two"] {
            t.create(
                pb::ChannelKind::Webhook,
                name,
                &sink.url(&format!("/{name}")),
                &["build.failed"],
            )
            .await
            .unwrap();
        }
        for i in 0..N {
            record(
                &db.conn,
                &t,
                EventKind::BuildFailed,
                json!({ "summary": format!("build {i}") }),
            )
            .await;
        }
        let w = Worker::new(
            db.conn.clone(),
            Arc::new(ferry_tests::test_keyring()),
            Sender::new(SendConfig {
                allow_private: true,
                timeout: Duration::from_secs(5),
            })
            .unwrap(),
            WorkerConfig::default(),
        );
        let started = Instant::now();
        let mut ticks = 0;
        while sink.requests().len() < 2 * N && ticks < 100 {
            w.tick(chrono::Utc::now()).await.unwrap();
            ticks += 1;
        }
        let took = started.elapsed();
        assert_eq!(sink.requests().len(), 2 * N, "{b}");
        println!(
            "{b}: {} deliveries in {} ms ({ticks} ticks): {:.0} deliveries/s",
            2 * N,
            took.as_millis(),
            (2 * N) as f64 / took.as_secs_f64()
        );
        api.stop().await;
    }
}
