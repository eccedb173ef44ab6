//! ACME against a real CA here: Debian's `pebble` (with
//! `pebble-challtestsrv` as its DNS, answering 127.0.0.1), validating
//! HTTP-01 through a real ferry-proxy fed by the real api feed, on
//! PostgreSQL and SQLite. Issuance → a certificate row → the proxy serves
//! it over TLS; a forced renewal replaces it while an open TLS connection
//! keeps working; a failed order records pebble's error text and backs
//! off. Skips, loudly, when pebble is not installed (`make test-deps`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use ferry_db::entities::enums::CertificateOrderStatus;
use ferry_db::entities::{certificate_orders, certificates};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, DatabaseConnection,
    EntityTrait as _, IntoActiveModel as _, QueryFilter as _,
};
use ferry_scheduler::acme::{AcmeConfig, Issuer};
use ferry_tests::fixtures;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn find_binary(name: &str) -> Option<String> {
    ["/usr/bin", "/usr/local/bin", "/usr/sbin"]
        .iter()
        .map(|d| format!("{d}/{name}"))
        .find(|p| std::path::Path::new(p).exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble + its DNS, with its HTTP-01 checks sent to `http_port`.
struct Pebble {
    directory: String,
    root: std::path::PathBuf,
    dns_management: u16,
    _dir: tempfile::TempDir,
    _procs: Vec<Kill>,
}

async fn start_pebble(
    pebble: &str,
    challtestsrv: &str,
    http_port: u16,
    resolver: Option<SocketAddr>,
) -> Pebble {
    let dir = tempfile::tempdir().unwrap();
    // pebble's own HTTPS certificate, from a root the issuer trusts.
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "pebble test root");
    let root_cert = root.self_signed(&root_key).unwrap();
    let issuer = rcgen::Issuer::new(root, root_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("root.pem"), root_cert.pem()).unwrap();
    std::fs::write(p("cert.pem"), server.pem()).unwrap();
    std::fs::write(p("key.pem"), key.serialize_pem()).unwrap();
    let (listen, management, tls, dns, dns_management) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let config = serde_json::json!({ "pebble": {
        "listenAddress": format!("127.0.0.1:{listen}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": p("cert.pem"),
        "privateKey": p("key.pem"),
        "httpPort": http_port,
        "tlsPort": tls,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(p("pebble.json"), config.to_string()).unwrap();
    let quiet = || Stdio::null();
    let dns_proc = Command::new(challtestsrv)
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-management", &format!("127.0.0.1:{dns_management}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .unwrap();
    let pebble_proc = Command::new(pebble)
        .arg("-config")
        .arg(p("pebble.json"))
        .args([
            "-dnsserver",
            &resolver.map_or_else(|| format!("127.0.0.1:{dns}"), |r| r.to_string()),
        ])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .unwrap();
    for port in [listen, dns_management] {
        let mut up = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(up, "pebble (or its DNS) did not start on {port}");
    }
    Pebble {
        directory: format!("https://127.0.0.1:{listen}/dir"),
        root: p("root.pem"),
        dns_management,
        _dir: dir,
        _procs: vec![Kill(dns_proc), Kill(pebble_proc)],
    }
}

/// One call to challtestsrv's management API (`/add-a`, `/set-txt`, ...).
async fn challtestsrv_call(port: u16, path: &str, body: serde_json::Value) {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
}

/// Points `host` at `ip` in pebble's DNS (challtestsrv management API).
async fn dns_a(port: u16, host: &str, ip: &str) {
    let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip] });
    challtestsrv_call(port, "/add-a", body).await;
}

/// Accepts any server certificate: the test compares it with the row.
#[derive(Debug)]
struct AnyCert;
impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the proxy for `host`, and the leaf it presented
/// (`None`: the proxy has no certificate for it yet).
async fn try_tls(addr: SocketAddr, host: &str) -> Option<(Tls, Vec<u8>)> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
        .ok()?;
    let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    Some((stream, leaf))
}

async fn tls(addr: SocketAddr, host: &str) -> (Tls, Vec<u8>) {
    try_tls(addr, host)
        .await
        .expect("TLS handshake with the proxy")
}

/// The first certificate of a PEM chain, as DER.
fn leaf_der(chain: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// Until the proxy presents the leaf of `chain` for `host`.
async fn wait_served(addr: SocketAddr, host: &str, chain: &str) {
    let want = leaf_der(chain);
    for _ in 0..200 {
        if try_tls(addr, host)
            .await
            .is_some_and(|(_, leaf)| leaf == want)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the proxy never served the issued certificate for {host}");
}

async fn order_of(db: &DatabaseConnection, domain: uuid::Uuid) -> certificate_orders::Model {
    certificate_orders::Entity::find()
        .filter(certificate_orders::Column::DomainId.eq(domain))
        .one(db)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn pebble_issues_through_ferry_proxy_renews_and_records_failures() {
    let (Some(pebble), Some(challtestsrv)) =
        (find_binary("pebble"), find_binary("pebble-challtestsrv"))
    else {
        eprintln!(
            "\n!!!!! SKIPPED: pebble / pebble-challtestsrv not installed \
             (apt-get install pebble, or `make test-deps`): ACME is untested !!!!!\n"
        );
        return;
    };
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = db.conn.clone();
        // The api (feed only) and a proxy fed by it.
        let state = ferry_api::testing::state(&conn, Some(support::proxy::FEED_TOKEN));
        state.feed.reload(&conn, &state.keyring).await.unwrap();
        let api = start_state(&state, relaxed()).await;
        let proxy = support::proxy::bind_proxy().await.feed_from(&api, &state);
        let (http, https) = (proxy.http, proxy.https);
        let ca = start_pebble(&pebble, &challtestsrv, http.port(), None).await;

        // A verified domain with a TLS route.
        let org = fixtures::organization(&conn, "Acme", "acme").await;
        let project = fixtures::project(&conn, org, "Shop", "shop").await;
        let web = fixtures::service(&conn, project, "web", 8080).await;
        let domain = fixtures::domain(&conn, org, "shop.acme.test", false).await;
        let route =
            fixtures::route(&conn, project, Some(domain), "shop.acme.test", "/", true).await;
        fixtures::target(&conn, route, web, 8080, false).await;

        let mut config = AcmeConfig::new(ca.directory.clone());
        config.root_pem = Some(ca.root.clone());
        config.propagation = Duration::from_millis(300);
        config.timeout = Duration::from_secs(30);
        let issuer = Issuer::new(conn.clone(), state.keyring.clone(), config);

        // Issued through the proxy's HTTP-01 answer, stored, served.
        let report = issuer.tick(Utc::now()).await.unwrap();
        let order = order_of(&conn, domain).await;
        assert_eq!(
            (report.issued, report.failed, order.status),
            (1, 0, CertificateOrderStatus::Valid),
            "{b}: {order:?}"
        );
        let first = certificates::Entity::find_by_id(order.certificate_id.unwrap())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.source, "acme", "{b}");
        assert_eq!(
            first.hostnames,
            serde_json::json!(["shop.acme.test"]),
            "{b}"
        );
        // Renewal is planned when a third of the lifetime remains.
        let lifetime = first.expires_at - first.not_before.unwrap();
        let planned = order.next_attempt_at - first.not_before.unwrap();
        assert!(
            (planned - lifetime * 2 / 3).num_seconds().abs() <= 1,
            "{b}: {planned} of {lifetime}"
        );
        wait_served(https, "shop.acme.test", &first.certificate_pem).await;
        // Not due: a second pass does nothing.
        assert_eq!(issuer.tick(Utc::now()).await.unwrap().issued, 0, "{b}");

        // Forced renewal: a new certificate, served, an open connection
        // still answered.
        let (mut open, _) = tls(https, "shop.acme.test").await;
        let mut due = order.clone().into_active_model();
        due.next_attempt_at = Set(Utc::now());
        due.update(&conn).await.unwrap();
        assert_eq!(issuer.tick(Utc::now()).await.unwrap().issued, 1, "{b}");
        let renewed = order_of(&conn, domain).await;
        assert_ne!(renewed.certificate_id, order.certificate_id, "{b}");
        let second = certificates::Entity::find_by_id(renewed.certificate_id.unwrap())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        wait_served(https, "shop.acme.test", &second.certificate_pem).await;
        open.write_all(b"GET / HTTP/1.1\r\nHost: shop.acme.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = open.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 "), "{b}: {answer:?}");

        // A host the CA cannot reach: pebble's error is recorded, and the
        // order waits (backoff) instead of retrying on the next pass.
        let broken = fixtures::domain(&conn, org, "broken.acme.test", false).await;
        let r = fixtures::route(&conn, project, Some(broken), "broken.acme.test", "/", true).await;
        fixtures::target(&conn, r, web, 8080, false).await;
        dns_a(ca.dns_management, "broken.acme.test", "127.0.0.2").await;
        let before = Utc::now();
        let report = issuer.tick(Utc::now()).await.unwrap();
        assert_eq!(report.failed, 1, "{b}: {report:?}");
        let failed = order_of(&conn, broken).await;
        assert_eq!(failed.status, CertificateOrderStatus::Failed, "{b}");
        assert_eq!(failed.attempts, 1, "{b}");
        let error = failed.last_error.clone().unwrap();
        assert!(
            error.contains("127.0.0.2") || error.to_lowercase().contains("connect"),
            "{b}: not pebble's words: {error}"
        );
        assert!(
            failed.next_attempt_at >= before + chrono::Duration::minutes(4),
            "{b}: {failed:?}"
        );
        assert_eq!(issuer.tick(Utc::now()).await.unwrap().failed, 0, "{b}");
        assert_eq!(order_of(&conn, broken).await.attempts, 1, "{b}");
        // Challenges are cleaned up after each order.
        assert!(
            ferry_db::entities::acme_challenges::Entity::find()
                .all(&conn)
                .await
                .unwrap()
                .is_empty(),
            "{b}"
        );

        proxy.stop().await;
        api.stop().await;
    }
}

const TSIG_SECRET: &str = "c2VjcmV0LWtleS1mb3ItZmVycnktdGVzdHMtMDEyMzQ1Njc4OQ==";

/// BIND (`named`) authoritative for `acme.test` on a loopback port,
/// accepting updates signed with the `ferry` TSIG key.
fn start_named(named: &str, dir: &std::path::Path) -> (SocketAddr, Kill) {
    let port = free_port();
    let zone = "$TTL 60\n@ IN SOA ns.acme.test. admin.acme.test. 1 60 60 60 60\n\
                @ IN NS ns.acme.test.\nns IN A 127.0.0.1\n";
    std::fs::write(dir.join("acme.test.zone"), zone).unwrap();
    let d = dir.display();
    let conf = format!(
        "options {{ directory \"{d}\"; listen-on port {port} {{ 127.0.0.1; }}; \
         listen-on-v6 {{ none; }}; pid-file \"{d}/named.pid\"; \
         session-keyfile \"{d}/session.key\"; recursion no; dnssec-validation no; }};\n\
         key \"ferry\" {{ algorithm hmac-sha256; secret \"{TSIG_SECRET}\"; }};\n\
         controls {{ }};\n\
         zone \"acme.test\" {{ type primary; file \"{d}/acme.test.zone\"; \
         allow-update {{ key \"ferry\"; }}; }};\n"
    );
    std::fs::write(dir.join("named.conf"), conf).unwrap();
    let child = Command::new(named)
        .args(["-g", "-n", "1", "-c"])
        .arg(dir.join("named.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("named.log")).unwrap())
        .spawn()
        .unwrap();
    (SocketAddr::from(([127, 0, 0, 1], port)), Kill(child))
}

fn rfc2136(server: SocketAddr, secret: &[u8]) -> Arc<ferry_scheduler::dns01::Rfc2136> {
    Arc::new(ferry_scheduler::dns01::Rfc2136 {
        server,
        zone: "acme.test".into(),
        key: Some(ferry_scheduler::dns01::TsigKey {
            name: "ferry".into(),
            secret: secret.to_vec(),
        }),
        timeout: Duration::from_secs(3),
    })
}

#[tokio::test]
async fn a_wildcard_domain_gets_a_wildcard_certificate_through_dns01_rfc2136() {
    let (Some(pebble), Some(challtestsrv), Some(named)) = (
        find_binary("pebble"),
        find_binary("pebble-challtestsrv"),
        find_binary("named"),
    ) else {
        eprintln!(
            "\n!!!!! SKIPPED: pebble, pebble-challtestsrv or named (bind9) not installed \
             (`make test-deps`): DNS-01 is untested !!!!!\n"
        );
        return;
    };
    use base64::Engine as _;
    let secret = base64::engine::general_purpose::STANDARD
        .decode(TSIG_SECRET)
        .unwrap();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = db.conn.clone();
        let dir = tempfile::tempdir().unwrap();
        let (dns, _named) = start_named(&named, dir.path());
        let mut up = false;
        for _ in 0..200 {
            // An unsigned update is refused once named answers.
            let probe = ferry_scheduler::dns01::Rfc2136 {
                key: None,
                ..(*rfc2136(dns, &secret)).clone()
            };
            use ferry_scheduler::dns01::DnsProvider as _;
            if let Err(err) = probe.add_txt("probe.acme.test", "x").await
                && err.to_string().contains("REFUSED")
            {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            up,
            "{b}: named did not start: {}",
            std::fs::read_to_string(dir.path().join("named.log")).unwrap_or_default()
        );
        // The proxy only serves here: the CA checks TXT records at named.
        let state = ferry_api::testing::state(&conn, Some(support::proxy::FEED_TOKEN));
        state.feed.reload(&conn, &state.keyring).await.unwrap();
        let api = start_state(&state, relaxed()).await;
        let proxy = support::proxy::bind_proxy().await.feed_from(&api, &state);
        let (http, https) = (proxy.http, proxy.https);
        let ca = start_pebble(&pebble, &challtestsrv, http.port(), Some(dns)).await;

        let org = fixtures::organization(&conn, "Acme", "acme").await;
        let project = fixtures::project(&conn, org, "Shop", "shop").await;
        let web = fixtures::service(&conn, project, "web", 8080).await;
        let domain = fixtures::domain(&conn, org, "wild.acme.test", false).await;
        let mut wild = ferry_db::entities::domains::Entity::find_by_id(domain)
            .one(&conn)
            .await
            .unwrap()
            .unwrap()
            .into_active_model();
        wild.wildcard = Set(true);
        wild.update(&conn).await.unwrap();
        let route =
            fixtures::route(&conn, project, Some(domain), "a.wild.acme.test", "/", true).await;
        fixtures::target(&conn, route, web, 8080, false).await;

        // A wrong TSIG key: named refuses, the order records it and waits.
        let mut config = AcmeConfig::new(ca.directory.clone());
        config.root_pem = Some(ca.root.clone());
        config.propagation = Duration::from_millis(200);
        config.timeout = Duration::from_secs(30);
        config.dns = Some(rfc2136(dns, b"not-the-key"));
        let wrong = Issuer::new(conn.clone(), state.keyring.clone(), config.clone());
        assert_eq!(wrong.tick(Utc::now()).await.unwrap().failed, 1, "{b}");
        let failed = order_of(&conn, domain).await;
        assert!(
            failed
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("NOTAUTH"),
            "{b}: {failed:?}"
        );
        // The right key: one certificate for *.wild.acme.test and the apex.
        let mut due = failed.into_active_model();
        due.next_attempt_at = Set(Utc::now());
        due.update(&conn).await.unwrap();
        config.dns = Some(rfc2136(dns, &secret));
        let issuer = Issuer::new(conn.clone(), state.keyring.clone(), config);
        let report = issuer.tick(Utc::now()).await.unwrap();
        let order = order_of(&conn, domain).await;
        assert_eq!(
            (report.issued, order.status),
            (1, CertificateOrderStatus::Valid),
            "{b}: {order:?}"
        );
        let cert = certificates::Entity::find_by_id(order.certificate_id.unwrap())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        let mut names: Vec<String> = serde_json::from_value(cert.hostnames.clone()).unwrap();
        names.sort();
        assert_eq!(names, ["*.wild.acme.test", "wild.acme.test"], "{b}");
        wait_served(https, "a.wild.acme.test", &cert.certificate_pem).await;

        proxy.stop().await;
        api.stop().await;
    }
}

const CF_TOKEN: &str = "cf-test-token-0123456789";
/// The one zone the fake Cloudflare account has.
const CF_ZONE: (&str, &str) = ("cf.test", "zone-cf-0001");

/// What the fake Cloudflare API holds and was asked.
#[derive(Default)]
struct CfState {
    /// (id, name, content) of live TXT records.
    records: Vec<(String, String, String)>,
    zone_lookups: Vec<String>,
    created: usize,
    deleted: usize,
}

/// A fake Cloudflare v4 API on loopback: checks the bearer token, knows
/// one zone, and mirrors its TXT records into a real challtestsrv (the
/// DNS pebble asks), so a record exists for the CA exactly while the API
/// says it does.
#[derive(Clone)]
struct FakeCloudflare {
    addr: SocketAddr,
    state: Arc<std::sync::Mutex<CfState>>,
    dns_management: u16,
}

fn cf_answer(
    status: u16,
    body: serde_json::Value,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap()
}

fn cf_ok(result: serde_json::Value) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    cf_answer(
        200,
        serde_json::json!({ "success": true, "errors": [], "messages": [], "result": result }),
    )
}

fn cf_error(
    status: u16,
    code: u32,
    message: &str,
) -> http::Response<http_body_util::Full<bytes::Bytes>> {
    cf_answer(
        status,
        serde_json::json!({ "success": false, "errors": [{ "code": code, "message": message }], "messages": [], "result": null }),
    )
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl FakeCloudflare {
    async fn start(dns_management: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeCloudflare {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            dns_management,
        };
        let f = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let f = f.clone();
                            async move { Ok::<_, std::convert::Infallible>(f.handle(req).await) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    fn url(&self) -> String {
        format!("http://{}/client/v4", self.addr)
    }

    /// Re-publishes `name`'s TXT values in challtestsrv.
    async fn mirror(&self, name: &str) {
        let values: Vec<String> = {
            let state = self.state.lock().unwrap();
            state
                .records
                .iter()
                .filter(|r| r.1 == name)
                .map(|r| r.2.clone())
                .collect()
        };
        let host = format!("{name}.");
        challtestsrv_call(
            self.dns_management,
            "/clear-txt",
            serde_json::json!({ "host": host }),
        )
        .await;
        for value in values {
            challtestsrv_call(
                self.dns_management,
                "/set-txt",
                serde_json::json!({ "host": host, "value": value }),
            )
            .await;
        }
    }

    async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        use http_body_util::BodyExt as _;
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {CF_TOKEN}")) {
            return cf_error(403, 10000, "Authentication error");
        }
        let method = req.method().clone();
        let path = req.uri().path().trim_start_matches("/client/v4").to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let records_path = format!("/zones/{}/dns_records", CF_ZONE.1);
        match (method.as_str(), path.as_str()) {
            ("GET", "/zones") => {
                let name = query_param(&query, "name").unwrap_or("").to_owned();
                self.state.lock().unwrap().zone_lookups.push(name.clone());
                if name == CF_ZONE.0 {
                    cf_ok(serde_json::json!([{ "id": CF_ZONE.1, "name": CF_ZONE.0 }]))
                } else {
                    cf_ok(serde_json::json!([]))
                }
            }
            ("POST", p) if p == records_path => {
                let record: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(record["type"], "TXT", "{record}");
                let name = record["name"].as_str().unwrap().to_owned();
                let id = uuid::Uuid::new_v4().simple().to_string();
                {
                    let mut state = self.state.lock().unwrap();
                    state.created += 1;
                    state.records.push((
                        id.clone(),
                        name.clone(),
                        record["content"].as_str().unwrap().to_owned(),
                    ));
                }
                self.mirror(&name).await;
                cf_ok(serde_json::json!({ "id": id, "type": "TXT", "name": name }))
            }
            ("GET", p) if p == records_path => {
                let name = query_param(&query, "name").unwrap_or("");
                let state = self.state.lock().unwrap();
                // Cloudflare answers TXT content quoted.
                let found: Vec<serde_json::Value> = state
                    .records
                    .iter()
                    .filter(|r| r.1 == name)
                    .map(|r| serde_json::json!({ "id": r.0, "type": "TXT", "name": r.1, "content": format!("\"{}\"", r.2) }))
                    .collect();
                cf_ok(serde_json::json!(found))
            }
            ("DELETE", p) if p.starts_with(&format!("{records_path}/")) => {
                let id = p.rsplit('/').next().unwrap().to_owned();
                let name = {
                    let mut state = self.state.lock().unwrap();
                    let Some(at) = state.records.iter().position(|r| r.0 == id) else {
                        return cf_error(404, 81044, "Record does not exist.");
                    };
                    state.deleted += 1;
                    state.records.remove(at).1
                };
                self.mirror(&name).await;
                cf_ok(serde_json::json!({ "id": id }))
            }
            _ => cf_error(404, 7003, "Could not route to the path"),
        }
    }
}

#[tokio::test]
async fn a_wildcard_domain_gets_a_wildcard_certificate_through_dns01_cloudflare() {
    let (Some(pebble), Some(challtestsrv)) =
        (find_binary("pebble"), find_binary("pebble-challtestsrv"))
    else {
        eprintln!(
            "\n!!!!! SKIPPED: pebble / pebble-challtestsrv not installed \
             (`make test-deps`): DNS-01 through Cloudflare is untested !!!!!\n"
        );
        return;
    };
    use ferry_scheduler::cloudflare::Cloudflare;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = db.conn.clone();
        let keyring = ferry_api::testing::state(&conn, None).keyring.clone();
        // pebble checks TXT records at challtestsrv, which the fake API feeds.
        let ca = start_pebble(&pebble, &challtestsrv, free_port(), None).await;
        let cf = FakeCloudflare::start(ca.dns_management).await;

        let domain = wildcard_site(&conn, "wild.cf.test").await;

        let mut config = AcmeConfig::new(ca.directory.clone());
        config.root_pem = Some(ca.root.clone());
        config.propagation = Duration::from_millis(200);
        config.timeout = Duration::from_secs(30);
        let provider = |token: &str| {
            Arc::new(Cloudflare::new(&cf.url(), token, None, Duration::from_secs(5)).unwrap())
        };

        // A wrong token: Cloudflare's words on the order, and a backoff.
        config.dns = Some(provider("not-the-token"));
        let wrong = Issuer::new(conn.clone(), keyring.clone(), config.clone());
        let before = Utc::now();
        assert_eq!(wrong.tick(Utc::now()).await.unwrap().failed, 1, "{b}");
        let failed = order_of(&conn, domain).await;
        let error = failed.last_error.clone().unwrap_or_default();
        assert!(error.contains("Authentication error"), "{b}: {error}");
        assert!(error.contains("10000"), "{b}: {error}");
        assert!(!error.contains("not-the-token"), "{b}: {error}");
        assert_eq!(failed.status, CertificateOrderStatus::Failed, "{b}");
        assert!(
            failed.next_attempt_at >= before + chrono::Duration::minutes(4),
            "{b}: {failed:?}"
        );
        assert_eq!(wrong.tick(Utc::now()).await.unwrap().failed, 0, "{b}");

        // The right token: *.wild.cf.test and the apex in one certificate,
        // the zone found by walking up from the record's name.
        let mut due = failed.into_active_model();
        due.next_attempt_at = Set(Utc::now());
        due.update(&conn).await.unwrap();
        config.dns = Some(provider(CF_TOKEN));
        let issuer = Issuer::new(conn.clone(), keyring.clone(), config);
        let started = std::time::Instant::now();
        let report = issuer.tick(Utc::now()).await.unwrap();
        eprintln!(
            "{b}: wildcard issued through Cloudflare DNS-01 in {:?}",
            started.elapsed()
        );
        let order = order_of(&conn, domain).await;
        assert_eq!(
            (report.issued, order.status),
            (1, CertificateOrderStatus::Valid),
            "{b}: {order:?}"
        );
        let cert = certificates::Entity::find_by_id(order.certificate_id.unwrap())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        let mut names: Vec<String> = serde_json::from_value(cert.hostnames.clone()).unwrap();
        names.sort();
        assert_eq!(names, ["*.wild.cf.test", "wild.cf.test"], "{b}");
        {
            let state = cf.state.lock().unwrap();
            assert_eq!((state.created, state.deleted), (2, 2), "{b}");
            assert!(state.records.is_empty(), "{b}: TXT records left behind");
            assert!(
                state
                    .zone_lookups
                    .starts_with(&["wild.cf.test".to_owned(), "cf.test".to_owned()]),
                "{b}: {:?}",
                state.zone_lookups
            );
        }
        // One certificate.issued; the failed first issuance is no renewal.
        let issued = outbox(&conn, "certificate.issued").await;
        assert_eq!(issued.len(), 1, "{b}: {issued:?}");
        assert_eq!(
            issued[0]["certificateId"],
            serde_json::json!(cert.id),
            "{b}"
        );
        assert_eq!(issued[0]["domain"]["name"], "wild.cf.test", "{b}");
        assert!(
            outbox(&conn, "certificate.renewal_failed").await.is_empty(),
            "{b}"
        );
    }
}

/// A verified wildcard domain `name` with a TLS route `a.<name>`.
async fn wildcard_site(conn: &DatabaseConnection, name: &str) -> uuid::Uuid {
    let org = fixtures::organization(conn, "Acme", "acme").await;
    let project = fixtures::project(conn, org, "Shop", "shop").await;
    let web = fixtures::service(conn, project, "web", 8080).await;
    let domain = fixtures::domain(conn, org, name, false).await;
    let mut wild = ferry_db::entities::domains::Entity::find_by_id(domain)
        .one(conn)
        .await
        .unwrap()
        .unwrap()
        .into_active_model();
    wild.wildcard = Set(true);
    wild.update(conn).await.unwrap();
    let route = fixtures::route(conn, project, Some(domain), &format!("a.{name}"), "/", true).await;
    fixtures::target(conn, route, web, 8080, false).await;
    domain
}

/// The payloads of the outbox events of `kind`, oldest first.
async fn outbox(conn: &DatabaseConnection, kind: &str) -> Vec<serde_json::Value> {
    use ferry_db::entities::notification_outbox;
    use ferry_db::sea_orm::QueryOrder as _;
    notification_outbox::Entity::find()
        .filter(notification_outbox::Column::Event.eq(kind))
        .order_by_asc(notification_outbox::Column::CreatedAt)
        .all(conn)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.payload)
        .collect()
}

/// An HTTPS front for pebble 2.4 (which has no ARI): serves pebble's
/// directory with `renewalInfo` pointing at itself (everything else still
/// points at pebble) and answers `GET /renewal-info/<id>` with a window in
/// the past or a month ahead, with `Retry-After: 3600`, recording each id
/// asked about. Its certificate is pebble's own (same test root).
#[derive(Clone)]
struct AriFront {
    directory: String,
    asked: Arc<std::sync::Mutex<Vec<String>>>,
    window_past: Arc<std::sync::atomic::AtomicBool>,
    dir_json: Arc<String>,
}

/// pebble's directory JSON, fetched over TLS.
async fn pebble_directory(directory_url: &str) -> serde_json::Value {
    let port: u16 = directory_url
        .trim_start_matches("https://127.0.0.1:")
        .trim_end_matches("/dir")
        .parse()
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCert))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    // pebble builds its URLs from the Host header.
    let req = format!("GET /dir HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    let body = &out[out.find('{').unwrap()..=out.rfind('}').unwrap()];
    serde_json::from_str(body).unwrap()
}

impl AriFront {
    async fn start(ca: &Pebble) -> Self {
        use rustls::pki_types::pem::PemObject as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut dir = pebble_directory(&ca.directory).await;
        dir["renewalInfo"] = serde_json::json!(format!("https://127.0.0.1:{port}/renewal-info"));
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(ca.root.with_file_name("cert.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(ca.root.with_file_name("key.pem"))
                .unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let front = AriFront {
            directory: format!("https://127.0.0.1:{port}/dir"),
            asked: Arc::default(),
            window_past: Arc::default(),
            dir_json: Arc::new(dir.to_string()),
        };
        let f = front.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (f, acceptor) = (f.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let f = f.clone();
                            async move { Ok::<_, std::convert::Infallible>(f.handle(&req)) }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        front
    }

    fn handle(
        &self,
        req: &http::Request<hyper::body::Incoming>,
    ) -> http::Response<http_body_util::Full<bytes::Bytes>> {
        let path = req.uri().path();
        let answer = |status: u16, body: String| {
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("retry-after", "3600")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap()
        };
        if path == "/dir" {
            return answer(200, self.dir_json.to_string());
        }
        let Some(id) = path.strip_prefix("/renewal-info/") else {
            return answer(404, "{}".into());
        };
        self.asked.lock().unwrap().push(id.to_owned());
        let now = Utc::now();
        let (start, end) = if self.window_past.load(std::sync::atomic::Ordering::SeqCst) {
            (
                now - chrono::Duration::days(2),
                now - chrono::Duration::days(1),
            )
        } else {
            (
                now + chrono::Duration::days(30),
                now + chrono::Duration::days(31),
            )
        };
        let fmt = |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        answer(
            200,
            serde_json::json!({ "suggestedWindow": { "start": fmt(start), "end": fmt(end) } })
                .to_string(),
        )
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn ari_moves_renewal_into_the_cas_window_and_renewal_failures_notify_once() {
    let (Some(pebble), Some(challtestsrv)) =
        (find_binary("pebble"), find_binary("pebble-challtestsrv"))
    else {
        eprintln!(
            "\n!!!!! SKIPPED: pebble / pebble-challtestsrv not installed: ARI is untested !!!!!\n"
        );
        return;
    };
    use ferry_scheduler::cloudflare::Cloudflare;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = db.conn.clone();
        let keyring = ferry_api::testing::state(&conn, None).keyring.clone();
        let ca = start_pebble(&pebble, &challtestsrv, free_port(), None).await;
        let cf = FakeCloudflare::start(ca.dns_management).await;
        let front = AriFront::start(&ca).await;
        let domain = wildcard_site(&conn, "ari.cf.test").await;
        let mut config = AcmeConfig::new(front.directory.clone());
        config.root_pem = Some(ca.root.clone());
        config.propagation = Duration::from_millis(200);
        config.timeout = Duration::from_secs(30);
        let provider = |token: &str| {
            Arc::new(Cloudflare::new(&cf.url(), token, None, Duration::from_secs(5)).unwrap())
        };
        config.dns = Some(provider(CF_TOKEN));
        let issuer = Issuer::new(conn.clone(), keyring.clone(), config.clone());

        let report = issuer.tick(Utc::now()).await.unwrap();
        let first = order_of(&conn, domain).await;
        assert_eq!(report.issued, 1, "{b}: {first:?}");
        let first_cert = certificates::Entity::find_by_id(first.certificate_id.unwrap())
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        let third_left = first.next_attempt_at;
        assert!(
            third_left > Utc::now() + chrono::Duration::days(60),
            "{b}: {first:?}"
        );

        // A window a month ahead: asked about (by its ARI id), the renewal
        // planned inside it, nothing renewed.
        assert_eq!(issuer.tick(Utc::now()).await.unwrap().issued, 0, "{b}");
        let id = ferry_scheduler::ari::certificate_id(&first_cert.certificate_pem)
            .unwrap()
            .to_string();
        assert_eq!(front.asked(), vec![id], "{b}");
        let planned = order_of(&conn, domain).await;
        let window_start = planned.ari_window_start.unwrap();
        assert!(
            planned.next_attempt_at >= window_start
                && planned.next_attempt_at <= planned.ari_window_end.unwrap(),
            "{b}: {planned:?}"
        );
        assert_ne!(planned.next_attempt_at, third_left, "{b}");
        let recheck = planned.ari_next_check_at.unwrap();
        assert!(
            recheck > Utc::now() + chrono::Duration::minutes(55),
            "{b}: {planned:?}"
        );

        // The window moves into the past, but Retry-After (an hour) has
        // not passed: not asked, not renewed.
        front
            .window_past
            .store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(issuer.tick(Utc::now()).await.unwrap().issued, 0, "{b}");
        assert_eq!(front.asked().len(), 1, "{b}");

        // An hour later: asked again, the window has come, renewed at once
        // although a third of the lifetime is far away.
        let later = recheck + chrono::Duration::seconds(1);
        let report = issuer.tick(later).await.unwrap();
        assert_eq!(
            (report.issued, report.failed),
            (1, 0),
            "{b}: {:?}",
            order_of(&conn, domain).await
        );
        assert_eq!(front.asked().len(), 2, "{b}");
        let renewed = order_of(&conn, domain).await;
        assert_ne!(renewed.certificate_id, first.certificate_id, "{b}");
        assert_eq!(
            renewed.ari_window_start, None,
            "{b}: the new certificate is asked about afresh"
        );
        assert_eq!(outbox(&conn, "certificate.issued").await.len(), 2, "{b}");

        // A renewal that fails (Cloudflare refuses the token): one
        // certificate.renewal_failed in the failure's transaction, none
        // for the retry of the same streak.
        config.dns = Some(provider("revoked-token"));
        let broken = Issuer::new(conn.clone(), keyring.clone(), config.clone());
        for attempt in 1..=2 {
            let mut due = order_of(&conn, domain).await.into_active_model();
            due.next_attempt_at = Set(Utc::now());
            due.ari_next_check_at = Set(Some(Utc::now() + chrono::Duration::hours(1)));
            due.update(&conn).await.unwrap();
            assert_eq!(broken.tick(Utc::now()).await.unwrap().failed, 1, "{b}");
            assert_eq!(order_of(&conn, domain).await.attempts, attempt, "{b}");
        }
        let failed = outbox(&conn, "certificate.renewal_failed").await;
        assert_eq!(failed.len(), 1, "{b}: {failed:?}");
        assert!(
            failed[0]["error"]
                .as_str()
                .unwrap()
                .contains("Authentication error"),
            "{b}: {failed:?}"
        );
        assert_eq!(
            failed[0]["certificateId"],
            serde_json::json!(renewed.certificate_id.unwrap()),
            "{b}"
        );
    }
}

#[tokio::test]
async fn certificates_under_14_days_notify_once_unless_replaced() {
    use ferry_scheduler::expiry::notify_expiring;
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let conn = db.conn.clone();
        let keyring = ferry_api::testing::state(&conn, None).keyring.clone();
        let org = fixtures::organization(&conn, "Acme", "acme").await;
        let domain = fixtures::domain(&conn, org, "exp.acme.test", false).await;
        let now = Utc::now();
        let cert = |names: &[&str], days: i64, source: &str| {
            let id = uuid::Uuid::now_v7();
            certificates::ActiveModel {
                id: Set(id),
                domain_id: Set(domain),
                issuer: Set("CN=test".into()),
                certificate_pem: Set("-".into()),
                private_key: Set(keyring
                    .encrypt("certificates", "private_key", id, "k")
                    .unwrap()),
                not_before: Set(Some(now - chrono::Duration::days(60))),
                expires_at: Set(now + chrono::Duration::days(days)),
                created_at: Set(now),
                source: Set(source.into()),
                hostnames: Set(serde_json::json!(names)),
                expiring_notified_at: Set(None),
            }
        };
        // (Two levels down: the wildcard below does not cover it.)
        let soon = cert(&["a.up.exp.acme.test"], 10, "uploaded")
            .insert(&conn)
            .await
            .unwrap();
        // Replaced by a wildcard certificate valid for two more months.
        cert(&["old.exp.acme.test"], 5, "acme")
            .insert(&conn)
            .await
            .unwrap();
        cert(&["*.exp.acme.test", "exp.acme.test"], 60, "acme")
            .insert(&conn)
            .await
            .unwrap();
        cert(&["later.exp.acme.test"], 30, "uploaded")
            .insert(&conn)
            .await
            .unwrap();

        assert_eq!(notify_expiring(&conn, now).await.unwrap(), 1, "{b}");
        let sent = outbox(&conn, "certificate.expiring").await;
        assert_eq!(sent.len(), 1, "{b}: {sent:?}");
        assert_eq!(sent[0]["certificateId"], serde_json::json!(soon.id), "{b}");
        assert_eq!(sent[0]["source"], "uploaded", "{b}");
        // Once: the next passes find nothing new.
        assert_eq!(notify_expiring(&conn, now).await.unwrap(), 0, "{b}");
        assert_eq!(
            notify_expiring(&conn, now + chrono::Duration::days(1))
                .await
                .unwrap(),
            0,
            "{b}"
        );
        assert_eq!(outbox(&conn, "certificate.expiring").await.len(), 1, "{b}");
        let row = certificates::Entity::find_by_id(soon.id)
            .one(&conn)
            .await
            .unwrap()
            .unwrap();
        assert!(row.expiring_notified_at.is_some(), "{b}");
    }
}
