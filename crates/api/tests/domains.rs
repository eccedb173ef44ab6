//! Domains end to end over real gRPC/TCP on PostgreSQL and SQLite: a TXT
//! challenge answered by a real (loopback) DNS server, claims across
//! organizations, operator pre-verification, and the host names routes may
//! use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use ferry_api::ApiState;
use ferry_api::testing::TxtServer;
use ferry_db::entities::audit_logs;
use ferry_db::entities::enums::OrgRole;
use ferry_db::sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use ferry_proto::ferry::v1 as pb;
use pb::domain_service_client::DomainServiceClient;
use pb::project_service_client::ProjectServiceClient;
use pb::route_service_client::RouteServiceClient;
use pb::service_service_client::ServiceServiceClient;
use support::*;
use tonic::Code;
use tonic::transport::Channel;

const BASE: &str = "apps.example.com";

async fn start_api(conn: &DatabaseConnection, dns: &TxtServer) -> Api {
    start_api_with(conn, dns, 80).await.0
}

/// The api with a route feed (for a real ferry-proxy) and VerifyDomain's
/// HTTP challenge fetched from `http_port`.
async fn start_api_with(
    conn: &DatabaseConnection,
    dns: &TxtServer,
    http_port: u16,
) -> (Api, ApiState) {
    let token: ferry_api::feed::FeedToken = support::proxy::FEED_TOKEN.parse().unwrap();
    let state = ApiState {
        db: conn.clone(),
        keyring: std::sync::Arc::new(ferry_tests::test_keyring()),
        feed: ferry_api::feed::FeedHub::new(),
        feed_auth: ferry_api::feed::FeedAuth::new(Some(&token)),
        cluster: None,
        deploy: ferry_api::workloads::DeployConfig {
            domains: ferry_api::domains::DomainConfig {
                dns_resolver: Some(dns.addr),
                dns_timeout: std::time::Duration::from_millis(500),
                http_port,
                ..base_domain(BASE)
            },
            ..ferry_api::workloads::DeployConfig::default()
        },
        builds: Default::default(),
    };
    (start_state(&state, relaxed()).await, state)
}

/// A user with an organization, a project and a service `web` on 8080.
struct Tenant {
    c: Clients,
    user: pb::User,
    token: String,
    org: String,
    project: String,
    service: String,
    domains: DomainServiceClient<Channel>,
    routes: RouteServiceClient<Channel>,
}

async fn tenant(api: &Api, name: &str) -> Tenant {
    let mut c = clients(api.addr).await;
    let user = register(&mut c, name).await;
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
                ports: vec![pb::Port {
                    name: "http".into(),
                    container_port: 8080,
                    protocol: pb::Protocol::Tcp.into(),
                }],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    Tenant {
        domains: DomainServiceClient::new(c.channel.clone()),
        routes: RouteServiceClient::new(c.channel.clone()),
        c,
        user,
        token,
        org,
        project,
        service,
    }
}

impl Tenant {
    async fn add(&mut self, domain: &str) -> Result<pb::Domain, tonic::Status> {
        let req = pb::AddDomainRequest {
            project_id: self.project.clone(),
            domain: domain.into(),
            preverified: false,
        };
        self.domains
            .add_domain(authed(req, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }
    async fn verify(&mut self, id: &str) -> Result<pb::Domain, tonic::Status> {
        self.verify_by(id, "").await
    }
    async fn verify_by(&mut self, id: &str, method: &str) -> Result<pb::Domain, tonic::Status> {
        let req = pb::VerifyDomainRequest {
            id: id.into(),
            method: method.into(),
        };
        self.domains
            .verify_domain(authed(req, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }
    async fn route(&mut self, host: &str) -> Result<pb::Route, tonic::Status> {
        let req = pb::CreateRouteRequest {
            project_id: self.project.clone(),
            hostname: host.into(),
            targets: vec![pb::RouteTarget {
                service_id: self.service.clone(),
                port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        };
        self.routes
            .create_route(authed(req, &self.token))
            .await
            .map(tonic::Response::into_inner)
    }
    /// Adds `domain`, publishes its record on `dns` and verifies it.
    async fn own(&mut self, dns: &TxtServer, domain: &str) -> pb::Domain {
        let d = self.add(domain).await.unwrap();
        dns.set(&d.txt_record_name, &[&d.txt_record_value]);
        self.verify(&d.id).await.unwrap()
    }
}

fn precondition(result: Result<impl std::fmt::Debug, tonic::Status>, words: &str) -> String {
    let status = result.expect_err("expected FailedPrecondition");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains(words),
        "{words:?} not in {:?}",
        status.message()
    );
    status.message().to_owned()
}

#[tokio::test]
async fn a_domain_is_verified_by_its_txt_record_and_nothing_else() {
    let dns = TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_api(&db.conn, &dns).await;
        let mut t = tenant(&api, "alice").await;
        let d = t.add("Shop.Acme-Example.TEST.").await.unwrap();
        assert_eq!(
            (
                d.domain.as_str(),
                d.verified,
                d.status.as_str(),
                d.txt_record_name.as_str(),
                d.project_id.as_str(),
            ),
            (
                "shop.acme-example.test",
                false,
                "pending",
                "_ferry-challenge.shop.acme-example.test",
                t.project.as_str()
            ),
            "{b}"
        );
        assert!(d.txt_record_value.len() >= 32, "{b}: {d:?}");
        // No record, then a record with another value: not verified.
        precondition(t.verify(&d.id).await, "no TXT record _ferry-challenge.shop");
        dns.set(&d.txt_record_name, &["ferry-somebody-else"]);
        precondition(t.verify(&d.id).await, "ferry-somebody-else");
        let listed = t
            .domains
            .list_domains(authed(
                pb::ListDomainsRequest {
                    project_id: t.project.clone(),
                    ..Default::default()
                },
                &t.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .domains;
        assert_eq!(listed.len(), 1, "{b}");
        assert!(!listed[0].verified, "{b}");
        assert!(
            listed[0].last_check_error.contains("ferry-somebody-else"),
            "{b}: {:?}",
            listed[0]
        );
        // The right value among others verifies it, and says who and how.
        dns.set(&d.txt_record_name, &["v=spf1 -all", &d.txt_record_value]);
        let v = t.verify(&d.id).await.unwrap();
        assert!(v.verified, "{b}");
        assert_eq!(
            (v.status.as_str(), v.method.as_str(), v.verified_by.as_str()),
            ("verified", "dns", t.user.id.as_str()),
            "{b}"
        );
        assert!(
            v.verified_at.is_some() && v.last_check_error.is_empty(),
            "{b}"
        );
        let audited = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.is_in(["domain.add", "domain.verify"]))
            .filter(audit_logs::Column::ResourceId.eq(d.id.parse::<uuid::Uuid>().unwrap()))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audited.len(), 2, "{b}");

        // The same name twice in one organization; bad names.
        let err = t.add("shop.acme-example.test").await.unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists, "{b}: {err:?}");
        for bad in [
            "bücher.test",
            "*.*.acme.test",
            "acme",
            "-x.acme.test",
            "1.2.3.4",
        ] {
            let err = t.add(bad).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{b}: {bad}: {err:?}");
            assert!(err.message().starts_with("domain: "), "{b}: {err:?}");
        }
        assert!(
            t.add("bücher.test")
                .await
                .unwrap_err()
                .message()
                .contains("punycode"),
            "{b}"
        );

        // Deleted: gone from the list, and the name can be added again.
        t.domains
            .delete_domain(authed(
                pb::DeleteDomainRequest { id: d.id.clone() },
                &t.token,
            ))
            .await
            .unwrap();
        let err = t.verify(&d.id).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}");
        t.add("shop.acme-example.test").await.unwrap();
        dns.set(&d.txt_record_name, &[]);
        api.stop().await;
    }
}

#[tokio::test]
async fn a_domain_verified_by_one_organization_cannot_be_claimed_by_another() {
    let dns = TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_api(&db.conn, &dns).await;
        let mut a = tenant(&api, "alice").await;
        let mut m = tenant(&api, "mallory").await;
        // Both add it while nobody has verified it; mallory even publishes
        // her token, but alice verifies first.
        let mine = a.add("claimed.test").await.unwrap();
        let theirs = m.add("claimed.test").await.unwrap();
        assert_ne!(mine.txt_record_value, theirs.txt_record_value, "{b}");
        dns.set(
            &mine.txt_record_name,
            &[&mine.txt_record_value, &theirs.txt_record_value],
        );
        a.verify(&mine.id).await.unwrap();
        precondition(
            m.verify(&theirs.id).await,
            "claimed.test is verified by another organization",
        );
        // Adding it (or a wildcard over it) afterwards is refused as well.
        precondition(m.add("claimed.test").await, "another organization");
        let wild = a.own(&dns, "*.wild.test").await;
        assert!(
            wild.wildcard && wild.domain == "*.wild.test",
            "{b}: {wild:?}"
        );
        precondition(m.add("shop.wild.test").await, "*.wild.test is verified");
        precondition(m.add("*.wild.test").await, "another organization");
        // A sibling name alice never claimed is free.
        m.add("other.test").await.unwrap();
        // And mallory's routes cannot use alice's names.
        precondition(m.route("claimed.test").await, "hostname: claimed.test");
        precondition(m.route("x.wild.test").await, "hostname: x.wild.test");
        a.route("claimed.test").await.unwrap();
        a.route("x.y.wild.test").await.unwrap();
        dns.set(&mine.txt_record_name, &[]);
        dns.set("_ferry-challenge.wild.test", &[]);
        api.stop().await;
    }
}

#[tokio::test]
async fn routes_use_verified_domains_of_their_organization_or_the_base_domain() {
    let dns = TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_api(&db.conn, &dns).await;
        let mut t = tenant(&api, "olga").await;
        // Under the base domain: no domain needed; the base itself is not.
        t.route("olga.apps.example.com").await.unwrap();
        t.route("a.b.apps.example.com").await.unwrap();
        let msg = precondition(
            t.route("apps.example.com").await,
            "hostname: apps.example.com",
        );
        assert!(msg.contains("base domain apps.example.com"), "{b}: {msg}");
        precondition(t.route("shop.olga.test").await, "hostname: shop.olga.test");
        // A pending domain is not enough.
        let apex = t.add("shop.olga.test").await.unwrap();
        precondition(t.route("shop.olga.test").await, "hostname: shop.olga.test");
        dns.set(&apex.txt_record_name, &[&apex.txt_record_value]);
        t.verify(&apex.id).await.unwrap();
        t.route("shop.olga.test").await.unwrap();
        // An apex domain covers its own name only.
        precondition(
            t.route("www.shop.olga.test").await,
            "hostname: www.shop.olga.test",
        );
        // A wildcard covers every name under it, at any depth.
        t.own(&dns, "*.olga.test").await;
        t.route("www.shop.olga.test").await.unwrap();
        t.route("olga.test").await.unwrap();
        dns.set(&apex.txt_record_name, &[]);
        dns.set("_ferry-challenge.olga.test", &[]);
        api.stop().await;
    }
}

#[tokio::test]
async fn operators_pre_verify_and_nobody_else_does() {
    let dns = TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_api(&db.conn, &dns).await;
        let mut t = tenant(&api, "owen").await;
        let req = |domain: &str| pb::AddDomainRequest {
            project_id: t.project.clone(),
            domain: domain.into(),
            preverified: true,
        };
        let err = t
            .domains
            .add_domain(authed(req("pre.test"), &t.token))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{b}: {err:?}");
        let root = register(&mut t.c, "root").await;
        make_super_admin(&db.conn, &root.id).await;
        add_member(&db.conn, &t.org, &root.id, OrgRole::Admin).await;
        let root_token = login(&mut t.c, "root").await;
        let d = t
            .domains
            .add_domain(authed(req("pre.test"), &root_token))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (d.verified, d.method.as_str(), d.verified_by.as_str()),
            (true, "operator", root.id.as_str()),
            "{b}"
        );
        t.route("pre.test").await.unwrap();
        api.stop().await;
    }
}

/// The `domain.verification_lost` events queued for domain `id`.
async fn lost_events(
    conn: &DatabaseConnection,
    id: &str,
) -> Vec<ferry_db::entities::notification_outbox::Model> {
    use ferry_db::entities::notification_outbox as outbox;
    outbox::Entity::find()
        .filter(outbox::Column::Event.eq("domain.verification_lost"))
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.payload["domainId"] == id)
        .collect()
}

/// ferry-scheduler's re-check, one pass now, every verified domain due.
async fn recheck(conn: &DatabaseConnection, dns: &TxtServer) -> ferry_scheduler::domains::Report {
    recheck_at(conn, dns, 80).await
}

/// [`recheck`], fetching HTTP challenges from `http_port`.
async fn recheck_at(
    conn: &DatabaseConnection,
    dns: &TxtServer,
    http_port: u16,
) -> ferry_scheduler::domains::Report {
    ferry_scheduler::domains::Recheck {
        resolver: dns.addr,
        timeout: std::time::Duration::from_millis(300),
        every: chrono::Duration::zero(),
        http_port,
    }
    .pass(conn, chrono::Utc::now())
    .await
    .unwrap()
}

impl Tenant {
    async fn domain(&mut self, id: &str) -> pb::Domain {
        let req = pb::ListDomainsRequest {
            project_id: self.project.clone(),
            ..Default::default()
        };
        self.domains
            .list_domains(authed(req, &self.token))
            .await
            .unwrap()
            .into_inner()
            .domains
            .into_iter()
            .find(|d| d.id == id)
            .expect("the domain is listed")
    }
    async fn hosts(&mut self) -> Vec<String> {
        let req = pb::ListRoutesRequest {
            project_id: self.project.clone(),
            ..Default::default()
        };
        let mut hosts: Vec<String> = self
            .routes
            .list_routes(authed(req, &self.token))
            .await
            .unwrap()
            .into_inner()
            .routes
            .into_iter()
            .map(|r| r.hostname)
            .collect();
        hosts.sort();
        hosts
    }
}

/// A verified domain whose TXT record disappears is flagged by the
/// scheduler's re-check (never on a resolver failure), keeps its routes,
/// refuses new ones, and is verified again when the record is back; while
/// it is lost another organization that proves the name may take it.
#[tokio::test]
async fn a_domain_whose_record_is_gone_is_flagged_and_keeps_its_routes() {
    let dns = TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_api(&db.conn, &dns).await;
        let mut a = tenant(&api, "lena").await;
        let d = a.own(&dns, "*.lost.test").await;
        a.route("a.lost.test").await.unwrap();

        // A resolver that fails says nothing: the domain stays verified.
        dns.fail(true);
        let report = recheck(&db.conn, &dns).await;
        assert_eq!(
            (report.unknown, report.lost.len()),
            (1, 0),
            "{b}: {report:?}"
        );
        dns.fail(false);
        let now = a.domain(&d.id).await;
        assert_eq!(now.status, "verified", "{b}: {now:?}");
        assert!(now.last_check_error.contains("SERVFAIL"), "{b}: {now:?}");
        a.route("b.lost.test").await.unwrap();

        // The record is gone: flagged, routes kept, new routes refused.
        dns.set(&d.txt_record_name, &[]);
        let report = recheck(&db.conn, &dns).await;
        assert_eq!(report.lost.len(), 1, "{b}: {report:?}");
        let lost = a.domain(&d.id).await;
        assert_eq!((lost.status.as_str(), lost.verified), ("lost", true), "{b}");
        assert!(lost.verification_lost_at.is_some(), "{b}: {lost:?}");
        assert!(
            lost.last_check_error.contains("no TXT record"),
            "{b}: {lost:?}"
        );
        precondition(a.route("c.lost.test").await, "was found gone");
        assert_eq!(a.hosts().await, ["a.lost.test", "b.lost.test"], "{b}");
        // A second pass keeps the first time it was found lost.
        recheck(&db.conn, &dns).await;
        let again = a.domain(&d.id).await;
        assert_eq!(again.verification_lost_at, lost.verification_lost_at, "{b}");
        // The owners hear about it once (the notification outbox).
        let events = lost_events(&db.conn, &d.id).await;
        assert_eq!(events.len(), 1, "{b}: {events:?}");
        assert_eq!(events[0].payload["domain"], "*.lost.test", "{b}");
        assert_eq!(
            events[0].project_id.map(|p| p.to_string()),
            Some(a.project.clone())
        );

        // The owner publishes it again and verifies: back to normal.
        dns.set(&d.txt_record_name, &[&d.txt_record_value]);
        let back = a.verify(&d.id).await.unwrap();
        assert_eq!(back.status, "verified", "{b}: {back:?}");
        assert!(back.verification_lost_at.is_none(), "{b}");
        a.route("c.lost.test").await.unwrap();
        // Or the re-check sees it back by itself.
        dns.set(&d.txt_record_name, &[]);
        recheck(&db.conn, &dns).await;
        dns.set(&d.txt_record_name, &[&d.txt_record_value]);
        let report = recheck(&db.conn, &dns).await;
        assert_eq!(report.restored, 1, "{b}: {report:?}");
        assert_eq!(a.domain(&d.id).await.status, "verified", "{b}");

        // Lost again; now another organization proves the name and takes it.
        dns.set(&d.txt_record_name, &[]);
        recheck(&db.conn, &dns).await;
        let mut m = tenant(&api, "mort").await;
        m.own(&dns, "*.lost.test").await;
        m.route("d.lost.test").await.unwrap();
        dns.set(&d.txt_record_name, &[&d.txt_record_value]);
        precondition(a.verify(&d.id).await, "verified by another organization");
        precondition(a.route("e.lost.test").await, "was found gone");
        assert_eq!(
            a.hosts().await,
            ["a.lost.test", "b.lost.test", "c.lost.test"],
            "{b}: the old routes stay"
        );
        dns.set(&d.txt_record_name, &[]);
        api.stop().await;
    }
}

/// A name one organization verified under another's wildcard is the first
/// one's: the most specific claim decides what routes may use.
#[tokio::test]
async fn the_most_specific_verified_claim_decides() {
    let dns = TxtServer::start().await;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let api = start_api(&db.conn, &dns).await;
        let mut a = tenant(&api, "sven").await;
        let mut m = tenant(&api, "zoe").await;
        a.own(&dns, "shop.zone.test").await;
        m.own(&dns, "*.zone.test").await;
        let msg = precondition(m.route("shop.zone.test").await, "hostname: shop.zone.test");
        assert!(
            msg.contains("verified by another organization"),
            "{b}: {msg}"
        );
        m.route("www.zone.test").await.unwrap();
        a.route("shop.zone.test").await.unwrap();
        precondition(a.route("blog.zone.test").await, "hostname: blog.zone.test");
        dns.set("_ferry-challenge.shop.zone.test", &[]);
        dns.set("_ferry-challenge.zone.test", &[]);
        api.stop().await;
    }
}

/// A web server that answers 404 to everything (a name moved elsewhere).
async fn not_found_server(at: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind(at).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf).await;
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
        }
    })
}

/// The HTTP challenge: a real ferry-proxy, fed by the api, answers it for
/// the pending apex domain's host only; VerifyDomain fetches it from where
/// the name points. It is refused for wildcards and while another
/// organization claims the name, and another organization's TXT proof
/// takes an HTTP-verified name over (lost, routes removed, told).
#[tokio::test]
async fn an_apex_domain_is_verified_over_http_through_ferry_proxy() {
    use ferry_db::entities::{notification_outbox as outbox, routes};
    use support::proxy::{bind_proxy, http_get};
    let dns = TxtServer::start().await;
    let loopback = std::net::Ipv4Addr::LOCALHOST;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        dns.set_a("shop.http.test", &[]);
        let bound = bind_proxy().await;
        let (api, state) = start_api_with(&db.conn, &dns, bound.http.port()).await;
        let proxy = bound.feed_from(&api, &state);
        let mut a = tenant(&api, "hana").await;
        let mut z = tenant(&api, "zora").await;

        let d = a.add("shop.http.test").await.unwrap();
        let token = d.http_token.clone();
        assert_eq!(token, d.txt_record_value, "{b}");
        let path = format!("/.well-known/ferry-challenge/{token}");
        assert_eq!(d.http_url, format!("http://shop.http.test{path}"), "{b}");
        // Not pointed anywhere yet, then pointed where nothing answers.
        precondition(a.verify_by(&d.id, "http").await, "has no A record");
        dns.set_a("shop.http.test", &[std::net::Ipv4Addr::new(127, 0, 0, 2)]);
        precondition(a.verify_by(&d.id, "http").await, "failed");
        // Pointed at the proxy, which answers the token for this host only.
        dns.set_a("shop.http.test", &[loopback]);
        let mut served = (0, String::new());
        for _ in 0..100 {
            served = http_get(proxy.http, "shop.http.test", &path).await;
            if served.0 == 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(served, (200, token.clone()), "{b}");
        assert_ne!(
            http_get(proxy.http, "other.http.test", &path).await.0,
            200,
            "{b}"
        );
        let verified = a.verify_by(&d.id, "http").await.unwrap();
        assert_eq!(
            (verified.status.as_str(), verified.method.as_str()),
            ("verified", "http"),
            "{b}"
        );
        a.route("shop.http.test").await.unwrap();

        // The scheduler's re-check fetches it again: still there; then the
        // name moves to another web server, and the domain is lost.
        let port = proxy.http.port();
        let report = recheck_at(&db.conn, &dns, port).await;
        assert!(
            report.checked >= 1 && report.lost.is_empty(),
            "{b}: {report:?}"
        );
        let elsewhere = not_found_server(std::net::SocketAddr::from(([127, 0, 0, 2], port))).await;
        dns.set_a("shop.http.test", &[std::net::Ipv4Addr::new(127, 0, 0, 2)]);
        let report = recheck_at(&db.conn, &dns, port).await;
        assert_eq!(report.lost.len(), 1, "{b}: {report:?}");
        assert_eq!(a.domain(&d.id).await.status, "lost", "{b}");
        dns.set_a("shop.http.test", &[loopback]);
        // A lost HTTP domain waits for its owner, who proves it again.
        assert_eq!(recheck_at(&db.conn, &dns, port).await.restored, 0, "{b}");
        let again = a.verify_by(&d.id, "http").await.unwrap();
        assert_eq!(again.status, "verified", "{b}");
        elsewhere.abort();
        outbox::Entity::delete_many().exec(&db.conn).await.unwrap();

        // A wildcard needs the TXT record; an unknown method is refused.
        let w = a.add("*.wild-http.test").await.unwrap();
        assert!(w.http_token.is_empty() && w.http_url.is_empty(), "{b}");
        let err = a.verify_by(&w.id, "http").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");
        assert!(err.message().starts_with("method: "), "{b}: {err:?}");
        let err = a.verify_by(&w.id, "carrier-pigeon").await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{b}");

        // Two organizations claim a name: HTTP cannot tell them apart.
        dns.set_a("both.http.test", &[loopback]);
        z.add("both.http.test").await.unwrap();
        let mine = a.add("both.http.test").await.unwrap();
        precondition(
            a.verify_by(&mine.id, "http").await,
            "also claimed by another organization",
        );

        // zora proves shop.http.test with its TXT record: hana's HTTP-only
        // claim gives way, its route on the name is removed, it is told.
        let theirs = z.add("shop.http.test").await.unwrap();
        precondition(
            z.verify_by(&theirs.id, "http").await,
            "also claimed by another organization",
        );
        dns.set(&theirs.txt_record_name, &[&theirs.txt_record_value]);
        let won = z.verify(&theirs.id).await.unwrap();
        assert_eq!(
            (won.status.as_str(), won.method.as_str()),
            ("verified", "dns"),
            "{b}"
        );
        let lost = a.domain(&d.id).await;
        assert_eq!(lost.status, "lost", "{b}");
        assert!(
            lost.last_check_error.contains("TXT record"),
            "{b}: {lost:?}"
        );
        assert!(a.hosts().await.is_empty(), "{b}: hana's route is gone");
        assert_eq!(
            routes::Entity::find()
                .filter(routes::Column::Hostname.eq("shop.http.test"))
                .all(&db.conn)
                .await
                .unwrap()
                .len(),
            0,
            "{b}"
        );
        z.route("shop.http.test").await.unwrap();
        precondition(a.route("shop.http.test").await, "shop.http.test");
        let told = outbox::Entity::find()
            .filter(outbox::Column::Event.eq("domain.verification_lost"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(told.len(), 1, "{b}");
        assert_eq!(told[0].organization_id.to_string(), a.org, "{b}");
        let audited = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("domain.taken_over"))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audited.len(), 1, "{b}");
        assert_eq!(
            audited[0].organization_id.map(|o| o.to_string()),
            Some(a.org.clone()),
            "{b}"
        );
        // A name verified by DNS is not open to an HTTP claim.
        let again = a.add("shop.http.test").await;
        precondition(again, "verified by another organization");

        proxy.stop().await;
        api.stop().await;
    }
}
