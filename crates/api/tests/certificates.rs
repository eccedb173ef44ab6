//! CertificateService end to end over real gRPC/TCP on PostgreSQL and
//! SQLite: uploads checked (chain order and signatures, key match, names,
//! validity, sizes), stored with the key encrypted, listed, carried by the
//! route feed, deleted; refusals name the field.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use chrono::{Datelike as _, Utc};
use ferry_api::ApiState;
use ferry_api::testing::TxtServer;
use ferry_db::entities::{audit_logs, certificates};
use ferry_db::sea_orm::{ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _};
use ferry_proto::ferry::v1 as pb;
use pb::certificate_service_client::CertificateServiceClient;
use pb::domain_service_client::DomainServiceClient;
use pb::project_service_client::ProjectServiceClient;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, date_time_ymd};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

async fn start_api(conn: &DatabaseConnection, dns: &TxtServer) -> (Api, ApiState) {
    let state = ApiState {
        db: conn.clone(),
        keyring: std::sync::Arc::new(ferry_tests::test_keyring()),
        feed: ferry_api::feed::FeedHub::new(),
        feed_auth: ferry_api::feed::FeedAuth::new(None),
        cluster: None,
        deploy: ferry_api::workloads::DeployConfig {
            domains: ferry_api::domains::DomainConfig {
                dns_resolver: Some(dns.addr),
                dns_timeout: std::time::Duration::from_millis(500),
                ..base_domain("apps.example.com")
            },
            ..ferry_api::workloads::DeployConfig::default()
        },
        builds: Default::default(),
    };
    (start_state(&state, relaxed()).await, state)
}

struct Tenant {
    token: String,
    project: String,
    domains: DomainServiceClient<Channel>,
    certs: CertificateServiceClient<Channel>,
}

async fn tenant(api: &Api, name: &str) -> Tenant {
    let mut c = clients(api.addr).await;
    register(&mut c, name).await;
    let token = login(&mut c, name).await;
    let org = create_org(&mut c, &token, &format!("{name} org")).await.id;
    let project = ProjectServiceClient::new(c.channel.clone())
        .create_project(authed(
            pb::CreateProjectRequest {
                organization_id: org,
                name: format!("{name} shop"),
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .id;
    Tenant {
        domains: DomainServiceClient::new(c.channel.clone()),
        certs: CertificateServiceClient::new(c.channel.clone()),
        token,
        project,
    }
}

impl Tenant {
    /// Adds `domain` and, with `dns`, verifies it.
    async fn domain(&mut self, dns: Option<&TxtServer>, domain: &str) -> pb::Domain {
        let d = self
            .domains
            .add_domain(authed(
                pb::AddDomainRequest {
                    project_id: self.project.clone(),
                    domain: domain.into(),
                    preverified: false,
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner();
        let Some(dns) = dns else { return d };
        dns.set(&d.txt_record_name, &[&d.txt_record_value]);
        let v = self
            .domains
            .verify_domain(authed(
                pb::VerifyDomainRequest {
                    id: d.id.clone(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner();
        dns.set(&d.txt_record_name, &[]);
        v
    }

    async fn upload(
        &mut self,
        domain_id: &str,
        chain: &str,
        key: &str,
    ) -> Result<pb::Certificate, tonic::Status> {
        self.certs
            .upload_certificate(authed(
                pb::UploadCertificateRequest {
                    domain_id: domain_id.into(),
                    certificate_pem: chain.into(),
                    private_key_pem: key.into(),
                },
                &self.token,
            ))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn list(&mut self, domain_id: &str) -> Vec<pb::Certificate> {
        self.certs
            .list_certificates(authed(
                pb::ListCertificatesRequest {
                    project_id: self.project.clone(),
                    domain_id: domain_id.into(),
                    ..Default::default()
                },
                &self.token,
            ))
            .await
            .unwrap()
            .into_inner()
            .certificates
    }
}

/// A CA (root → intermediate) that signs leaf certificates.
struct Ca {
    root_pem: String,
    inter_pem: String,
    inter: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.distinguished_name
        .push(DnType::CommonName, "Ferry Test Root");
    let root_cert = root.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root, root_key);
    let inter_key = KeyPair::generate().unwrap();
    let mut inter = CertificateParams::new(Vec::<String>::new()).unwrap();
    inter.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    inter
        .distinguished_name
        .push(DnType::CommonName, "Ferry Test Intermediate");
    let inter_cert = inter.signed_by(&inter_key, &root_issuer).unwrap();
    Ca {
        root_pem: root_cert.pem(),
        inter_pem: inter_cert.pem(),
        inter: Issuer::new(inter, inter_key),
    }
}

/// A leaf for `names` valid from `from` to `until` (y, m, d): its PEM and
/// its key's PEM.
fn leaf(ca: &Ca, names: &[&str], from: (i32, u8, u8), until: (i32, u8, u8)) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.not_before = date_time_ymd(from.0, from.1, from.2);
    params.not_after = date_time_ymd(until.0, until.1, until.2);
    let cert = params.signed_by(&key, &ca.inter).unwrap();
    (cert.pem(), key.serialize_pem())
}

const ALWAYS: ((i32, u8, u8), (i32, u8, u8)) = ((2020, 1, 1), (2090, 1, 1));

fn valid_leaf(ca: &Ca, names: &[&str]) -> (String, String) {
    leaf(ca, names, ALWAYS.0, ALWAYS.1)
}

fn invalid(result: Result<pb::Certificate, tonic::Status>, field: &str, words: &str) {
    let status = result.expect_err("expected InvalidArgument");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(&format!("{field}: ")) && status.message().contains(words),
        "{field}: {words:?} not in {:?}",
        status.message()
    );
}

#[tokio::test]
async fn an_uploaded_chain_is_stored_encrypted_listed_fed_and_deleted() {
    let dns = TxtServer::start().await;
    let ca = ca();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, state) = start_api(&db.conn, &dns).await;
        let mut t = tenant(&api, "carla").await;
        let d = t.domain(Some(&dns), "shop.carla.test").await;
        assert!(d.verified, "{b}");
        let (leaf_pem, key_pem) = valid_leaf(&ca, &["shop.carla.test", "www.shop.carla.test"]);
        let chain = format!("{leaf_pem}{}", ca.inter_pem);
        let cert = t.upload(&d.id, &chain, &key_pem).await.unwrap();
        assert_eq!(
            (
                cert.domain_id.as_str(),
                cert.hostnames.clone(),
                cert.source.as_str(),
                cert.status.as_str(),
                cert.expiring_soon,
                cert.project_id.as_str(),
            ),
            (
                d.id.as_str(),
                vec!["shop.carla.test".to_owned(), "www.shop.carla.test".into()],
                "uploaded",
                "valid",
                false,
                t.project.as_str()
            ),
            "{b}"
        );
        assert!(
            cert.issuer.contains("Ferry Test Intermediate"),
            "{b}: {cert:?}"
        );
        assert_eq!(
            cert.expires_at.unwrap().seconds,
            chrono::DateTime::parse_from_rfc3339("2090-01-01T00:00:00Z")
                .unwrap()
                .timestamp(),
            "{b}"
        );
        // Listed, by project and by domain; the key never leaves.
        let listed = t.list("").await;
        assert_eq!(listed, vec![cert.clone()], "{b}");
        assert_eq!(t.list(&d.id).await.len(), 1, "{b}");
        // Stored encrypted, bound to its row.
        let row = certificates::Entity::find_by_id(cert.id.parse::<uuid::Uuid>().unwrap())
            .one(&db.conn)
            .await
            .unwrap()
            .unwrap();
        assert!(!row.private_key.as_str().contains("PRIVATE KEY"), "{b}");
        assert_eq!(
            state
                .keyring
                .decrypt("certificates", "private_key", row.id, &row.private_key)
                .unwrap()
                .expose(),
            key_pem.trim(),
            "{b}"
        );
        let audited = audit_logs::Entity::find()
            .filter(audit_logs::Column::Action.eq("certificate.upload"))
            .filter(audit_logs::Column::ResourceId.eq(row.id))
            .all(&db.conn)
            .await
            .unwrap();
        assert_eq!(audited.len(), 1, "{b}");
        assert!(!audited[0].details.to_string().contains("PRIVATE"), "{b}");

        // The feed carries it to the proxies, with its key.
        state.feed.reload(&db.conn, &state.keyring).await.unwrap();
        let snap = state.feed.snapshot();
        let fed = snap
            .certificates
            .iter()
            .find(|c| c.id == d.id)
            .unwrap_or_else(|| panic!("{b}: not in the feed: {snap:?}"));
        assert_eq!(fed.cert_pem.trim(), chain.trim(), "{b}");
        assert_eq!(fed.key_pem, key_pem.trim(), "{b}");
        assert!(fed.hosts.contains(&"shop.carla.test".to_owned()), "{b}");

        // A certificate expiring within 14 days is flagged.
        let soon = Utc::now().date_naive() + chrono::Days::new(5);
        let (soon_pem, soon_key) = leaf(
            &ca,
            &["shop.carla.test"],
            ALWAYS.0,
            (soon.year(), soon.month() as u8, soon.day() as u8),
        );
        let soon_cert = t.upload(&d.id, &soon_pem, &soon_key).await.unwrap();
        assert!(soon_cert.expiring_soon, "{b}: {soon_cert:?}");
        // The feed keeps serving the one expiring last.
        state.feed.reload(&db.conn, &state.keyring).await.unwrap();
        let snap = state.feed.snapshot();
        let fed = snap.certificates.iter().find(|c| c.id == d.id).unwrap();
        assert_eq!(fed.key_pem, key_pem.trim(), "{b}");

        // Deleted: gone from the list; the feed falls back to the other.
        t.certs
            .delete_certificate(authed(
                pb::DeleteCertificateRequest {
                    id: cert.id.clone(),
                },
                &t.token,
            ))
            .await
            .unwrap();
        assert_eq!(t.list("").await, vec![soon_cert.clone()], "{b}");
        state.feed.reload(&db.conn, &state.keyring).await.unwrap();
        let snap = state.feed.snapshot();
        let fed = snap.certificates.iter().find(|c| c.id == d.id).unwrap();
        assert_eq!(fed.key_pem, soon_key.trim(), "{b}");
        let err = t
            .certs
            .delete_certificate(authed(
                pb::DeleteCertificateRequest {
                    id: cert.id.clone(),
                },
                &t.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}");
        api.stop().await;
    }
}

#[tokio::test]
async fn bad_uploads_are_refused_naming_the_field() {
    let dns = TxtServer::start().await;
    let ca = ca();
    for db in ferry_tests::migrated_dbs().await {
        let b = db.backend;
        let (api, _) = start_api(&db.conn, &dns).await;
        let mut t = tenant(&api, "dora").await;
        let d = t.domain(Some(&dns), "shop.dora.test").await;
        let wild = t.domain(Some(&dns), "*.wild.dora.test").await;
        let (leaf_pem, key_pem) = valid_leaf(&ca, &["shop.dora.test"]);
        let (_, other_key) = valid_leaf(&ca, &["shop.dora.test"]);

        // Garbage, empty and oversized PEM.
        invalid(
            t.upload(&d.id, "not a certificate", &key_pem).await,
            "certificatePem",
            "no -----BEGIN CERTIFICATE----- block",
        );
        invalid(
            t.upload(&d.id, "", &key_pem).await,
            "certificatePem",
            "required",
        );
        invalid(
            t.upload(
                &d.id,
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                &key_pem,
            )
            .await,
            "certificatePem",
            "certificate 1 is not a valid X.509 certificate",
        );
        invalid(
            t.upload(&d.id, &"x".repeat(70_000), &key_pem).await,
            "certificatePem",
            "at most 65536 bytes",
        );
        let eleven = format!("{leaf_pem}{}", ca.inter_pem.repeat(10));
        invalid(
            t.upload(&d.id, &eleven, &key_pem).await,
            "certificatePem",
            "at most 10 certificates",
        );
        invalid(
            t.upload(&d.id, &leaf_pem, "garbage").await,
            "privateKeyPem",
            "no private key found",
        );
        invalid(
            t.upload(&d.id, &leaf_pem, "").await,
            "privateKeyPem",
            "required",
        );
        // The key of another certificate.
        invalid(
            t.upload(&d.id, &leaf_pem, &other_key).await,
            "privateKeyPem",
            "does not match the leaf certificate's public key",
        );
        // Out of order: the intermediate first, or the root in between.
        invalid(
            t.upload(&d.id, &format!("{}{leaf_pem}", ca.inter_pem), &key_pem)
                .await,
            "certificatePem",
            "out of order",
        );
        invalid(
            t.upload(&d.id, &format!("{leaf_pem}{}", ca.root_pem), &key_pem)
                .await,
            "certificatePem",
            "out of order",
        );
        // An issuer of the right name but another key: the signature fails.
        let impostor = {
            // An intermediate with the right subject but another key.
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name
                .push(DnType::CommonName, "Ferry Test Intermediate");
            p.self_signed(&key).unwrap().pem()
        };
        invalid(
            t.upload(&d.id, &format!("{leaf_pem}{impostor}"), &key_pem)
                .await,
            "certificatePem",
            "signature of certificate 1 does not verify",
        );
        // Expired, and not yet valid.
        let (old, old_key) = leaf(&ca, &["shop.dora.test"], (2020, 1, 1), (2021, 1, 1));
        invalid(
            t.upload(&d.id, &old, &old_key).await,
            "certificatePem",
            "expired at 2021-01-01",
        );
        let (future, future_key) = leaf(&ca, &["shop.dora.test"], (2080, 1, 1), (2090, 1, 1));
        invalid(
            t.upload(&d.id, &future, &future_key).await,
            "certificatePem",
            "not valid before 2080-01-01",
        );
        // Names that do not cover the domain.
        let (www, www_key) = valid_leaf(&ca, &["www.shop.dora.test"]);
        invalid(
            t.upload(&d.id, &www, &www_key).await,
            "certificatePem",
            "does not cover the domain shop.dora.test",
        );
        // A wildcard domain needs the wildcard name.
        let (one, one_key) = valid_leaf(&ca, &["a.wild.dora.test", "wild.dora.test"]);
        invalid(
            t.upload(&wild.id, &one, &one_key).await,
            "certificatePem",
            "does not cover the domain *.wild.dora.test",
        );
        let (star, star_key) = valid_leaf(&ca, &["*.wild.dora.test"]);
        t.upload(&wild.id, &star, &star_key).await.unwrap();
        // A bare leaf (no intermediate) of the right names is fine.
        t.upload(&d.id, &leaf_pem, &key_pem).await.unwrap();

        // An unverified domain.
        let pending = t.domain(None, "pending.dora.test").await;
        let (p_pem, p_key) = valid_leaf(&ca, &["pending.dora.test"]);
        let err = t.upload(&pending.id, &p_pem, &p_key).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{b}: {err:?}");
        assert!(err.message().starts_with("domainId: "), "{b}: {err:?}");
        // Another organization's verified domain: not found, nothing stored.
        let mut m = tenant(&api, "mallory").await;
        let err = m.upload(&d.id, &leaf_pem, &key_pem).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}: {err:?}");
        let err = m
            .certs
            .list_certificates(authed(
                pb::ListCertificatesRequest {
                    project_id: m.project.clone(),
                    domain_id: d.id.clone(),
                    ..Default::default()
                },
                &m.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{b}: {err:?}");
        invalid(
            m.upload("nope", &leaf_pem, &key_pem).await,
            "domainId",
            "UUID",
        );
        assert_eq!(t.list("").await.len(), 2, "{b}");
        api.stop().await;
    }
}
