//! `ferry.v1.CertificateService`: TLS certificates of verified domains.
//!
//! Uploaded certificates are checked ([`validate`]) and stored with their
//! private key encrypted (`certificates.private_key`, bound to the row).
//! ACME certificates are written by ferry-scheduler (`source = 'acme'`);
//! their domain's order state (`certificate_orders`) is shown next to
//! them. The route feed serves, per domain, the certificate that expires
//! last, to the hosts its names cover.

pub mod validate;

use chrono::{DateTime, Duration, Utc};
use ferry_common::GrpcServices;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::{certificate_orders, certificates, domains};
use ferry_db::sea_orm::{
    ActiveEnum as _, ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    ModelTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::certificate_service_server::CertificateService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::Entry;
use crate::authz::{Action, Caller, Scope};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::workloads::Workloads;
use crate::{Error, Result};

/// A valid certificate expiring sooner than this is `expiring_soon`.
pub const EXPIRY_WARNING: Duration = Duration::days(14);

/// `uploaded` or `acme`.
pub const SOURCE_UPLOADED: &str = "uploaded";
pub const SOURCE_ACME: &str = "acme";

/// The certificate's leaf names as stored (a JSON array of strings).
pub fn stored_hostnames(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn certificate_message(
    c: &certificates::Model,
    domain: &domains::Model,
    order: Option<&certificate_orders::Model>,
    now: DateTime<Utc>,
) -> pb::Certificate {
    let status = if c.expires_at <= now {
        "expired"
    } else if c.not_before.is_some_and(|nb| nb > now) {
        "not_yet_valid"
    } else {
        "valid"
    };
    let acme = c.source == SOURCE_ACME;
    pb::Certificate {
        id: c.id.to_string(),
        domain_id: c.domain_id.to_string(),
        hostnames: stored_hostnames(&c.hostnames),
        issuer: c.issuer.clone(),
        not_before: c.not_before.map(ts),
        expires_at: Some(ts(c.expires_at)),
        source: c.source.clone(),
        status: status.into(),
        expiring_soon: status == "valid" && c.expires_at - now < EXPIRY_WARNING,
        project_id: domain.project_id.map(|p| p.to_string()).unwrap_or_default(),
        organization_id: domain.organization_id.to_string(),
        created_at: Some(ts(c.created_at)),
        renewal_status: order
            .filter(|_| acme)
            .map(|o| o.status.to_value())
            .unwrap_or_default(),
        renewal_error: order
            .filter(|_| acme)
            .and_then(|o| o.last_error.clone())
            .unwrap_or_default(),
    }
}

/// ListCertificates' order: by id (v7: creation order).
static CERTIFICATES: Keyset<certificates::Column> = Keyset {
    list: "certificates",
    columns: &[asc(certificates::Column::Id, Kind::Id)],
};

/// The `CertificateService` implementation.
#[derive(Debug, Clone)]
pub struct CertificateApi(pub Workloads);

/// Adds `CertificateService` to `services`.
pub fn add_certificate_service(services: GrpcServices, workloads: &Workloads) -> GrpcServices {
    services.add_service(
        pb::certificate_service_server::CertificateServiceServer::new(CertificateApi(
            workloads.clone(),
        )),
    )
}

impl CertificateApi {
    /// A live domain of a project the caller may `action`.
    async fn domain(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, domains::Model)> {
        let db = &self.0.identity.db;
        let missing = || Error::NotFound("domain not found".into());
        let row = domains::Entity::find_by_id(id)
            .filter(domains::Column::DeletedAt.is_null())
            .one(db)
            .await?
            .ok_or_else(missing)?;
        let project_id = row.project_id.ok_or_else(missing)?;
        let (scope, project) = caller.project(db, action, project_id).await?;
        if project.organization_id != row.organization_id {
            return Err(missing());
        }
        Ok((scope, row))
    }

    async fn upload(
        &self,
        request: Request<pb::UploadCertificateRequest>,
    ) -> Result<pb::Certificate> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let domain_id = parse_id("domainId", &req.domain_id)?;
        let (scope, domain) = self
            .domain(&caller, Action::CertificateManage, domain_id)
            .await?;
        if domain.verified_at.is_none() {
            return Err(Error::FailedPrecondition(format!(
                "domainId: the domain {} is not verified yet; verify it first \
                 (DomainService.VerifyDomain)",
                domain.name
            )));
        }
        let now = Utc::now();
        let checked = validate::check(
            &req.certificate_pem,
            &req.private_key_pem,
            &domain.name,
            domain.wildcard,
            now,
        )?;
        let id = Uuid::now_v7();
        let key = self.0.deployer.keyring.encrypt(
            "certificates",
            "private_key",
            id,
            req.private_key_pem.trim(),
        )?;
        let db = &self.0.identity.db;
        let txn = crate::db::begin_write(db).await?;
        let row = certificates::ActiveModel {
            id: Set(id),
            domain_id: Set(domain_id),
            issuer: Set(checked.issuer.clone()),
            certificate_pem: Set(format!("{}\n", req.certificate_pem.trim())),
            private_key: Set(key),
            not_before: Set(Some(checked.not_before)),
            expires_at: Set(checked.not_after),
            created_at: Set(now),
            source: Set(SOURCE_UPLOADED.into()),
            hostnames: Set(json!(checked.hostnames)),
            expiring_notified_at: Set(None),
        }
        .insert(&txn)
        .await?;
        scope
            .audit(
                &txn,
                Entry::new("certificate.upload", AuditResourceType::Certificate, id).details(
                    json!({
                        "domainId": domain_id,
                        "hostnames": checked.hostnames,
                        "issuer": checked.issuer,
                        "expiresAt": checked.not_after.to_rfc3339(),
                    }),
                ),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(certificate_message(&row, &domain, None, now))
    }

    async fn list(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<pb::ListCertificatesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let domain_filter = if req.domain_id.trim().is_empty() {
            None
        } else {
            Some(parse_id("domainId", &req.domain_id)?)
        };
        let page = CERTIFICATES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        let (_, project) = caller
            .project(db, Action::CertificateRead, project_id)
            .await?;
        let mut domains_query = domains::Entity::find()
            .filter(domains::Column::ProjectId.eq(project_id))
            .filter(domains::Column::OrganizationId.eq(project.organization_id))
            .filter(domains::Column::DeletedAt.is_null());
        if let Some(id) = domain_filter {
            domains_query = domains_query.filter(domains::Column::Id.eq(id));
        }
        let domains: Vec<domains::Model> = domains_query.all(db).await?;
        if let Some(id) = domain_filter
            && domains.is_empty()
        {
            return Err(Error::NotFound(format!(
                "domainId: no domain {id} in this project"
            )));
        }
        let ids: Vec<Uuid> = domains.iter().map(|d| d.id).collect();
        let rows = page
            .apply(certificates::Entity::find().filter(certificates::Column::DomainId.is_in(ids)))
            .all(db)
            .await?;
        let (rows, next_page_token) = page.finish(rows, |c| vec![Key::Id(c.id)]);
        let acme_domains: Vec<Uuid> = rows
            .iter()
            .filter(|c| c.source == SOURCE_ACME)
            .map(|c| c.domain_id)
            .collect();
        let orders = if acme_domains.is_empty() {
            Vec::new()
        } else {
            certificate_orders::Entity::find()
                .filter(certificate_orders::Column::DomainId.is_in(acme_domains))
                .all(db)
                .await?
        };
        let now = Utc::now();
        let certificates = rows
            .iter()
            .filter_map(|c| {
                let domain = domains.iter().find(|d| d.id == c.domain_id)?;
                let order = orders.iter().find(|o| o.domain_id == c.domain_id);
                Some(certificate_message(c, domain, order, now))
            })
            .collect();
        Ok(pb::ListCertificatesResponse {
            certificates,
            next_page_token,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteCertificateRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let missing = || Error::NotFound("certificate not found".into());
        let domain_id = certificates::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(missing)?
            .domain_id;
        let (scope, domain) = self
            .domain(&caller, Action::CertificateManage, domain_id)
            .await
            .map_err(|e| match e {
                Error::NotFound(_) => missing(),
                other => other,
            })?;
        let txn = crate::db::begin_write(db).await?;
        let Some(cert) = certificates::Entity::find_by_id(id).one(&txn).await? else {
            return Err(missing());
        };
        let hostnames = stored_hostnames(&cert.hostnames);
        cert.delete(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("certificate.delete", AuditResourceType::Certificate, id)
                    .details(json!({ "domainId": domain.id, "hostnames": hostnames })),
            )
            .await?;
        txn.commit().await?;
        self.0.feed.notify_committed();
        Ok(())
    }
}

#[tonic::async_trait]
impl CertificateService for CertificateApi {
    async fn upload_certificate(
        &self,
        request: Request<pb::UploadCertificateRequest>,
    ) -> Result<Response<pb::Certificate>, Status> {
        Ok(Response::new(self.upload(request).await?))
    }
    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn delete_certificate(
        &self,
        request: Request<pb::DeleteCertificateRequest>,
    ) -> Result<Response<pb::DeleteCertificateResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteCertificateResponse {}))
    }
}
