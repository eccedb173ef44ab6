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
use clap::Parser as _;
use ferry_common::Shutdown;
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

/// Points `host` at `ip` in pebble's DNS (challtestsrv management API).
async fn dns_a(port: u16, host: &str, ip: &str) {
    let body = serde_json::json!({ "host": format!("{host}."), "addresses": [ip] }).to_string();
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "POST /add-a HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
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
        let stop = Shutdown::new();
        let state = ferry_api::testing::state(&conn, Some("feed-token-0123456789abcdef"));
        state.feed.reload(&conn, &state.keyring).await.unwrap();
        let api = start_state(&state, relaxed()).await;
        let reloader = {
            let (feed, conn, keyring, stop) = (
                state.feed.clone(),
                conn.clone(),
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
        let dir = tempfile::tempdir().unwrap();
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
            format!("http://{}", api.addr),
            "--feed-token".to_owned(),
            "feed-token-0123456789abcdef".to_owned(),
            "--state-dir".to_owned(),
            dir.path().display().to_string(),
        ]);
        let args = ferry_proxy::Args::parse_from(argv);
        let listeners = ferry_proxy::Listeners::bind(&args).await.unwrap();
        let (http, https) = (
            listeners.http_addr().unwrap(),
            listeners.https_addr().unwrap(),
        );
        let proxy_stop = stop.clone();
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

        stop.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), proxy).await;
        let _ = reloader.await;
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
        let state = ferry_api::testing::state(&conn, Some("feed-token-0123456789abcdef"));
        state.feed.reload(&conn, &state.keyring).await.unwrap();
        let api = start_state(&state, relaxed()).await;
        let stop = Shutdown::new();
        let proxy_dir = tempfile::tempdir().unwrap();
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
            format!("http://{}", api.addr),
            "--feed-token".to_owned(),
            "feed-token-0123456789abcdef".to_owned(),
            "--state-dir".to_owned(),
            proxy_dir.path().display().to_string(),
        ]);
        let args = ferry_proxy::Args::parse_from(argv);
        let listeners = ferry_proxy::Listeners::bind(&args).await.unwrap();
        let (http, https) = (
            listeners.http_addr().unwrap(),
            listeners.https_addr().unwrap(),
        );
        let proxy_stop = stop.clone();
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
        // (No reloader runs here: the feed is reloaded once, by hand.)
        state.feed.reload(&conn, &state.keyring).await.unwrap();
        wait_served(https, "a.wild.acme.test", &cert.certificate_pem).await;

        stop.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(10), proxy).await;
        api.stop().await;
    }
}
