//! `ferry.v1.RegistryService`: an organization's registry credentials,
//! rendered as image pull secrets for the services that name them.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, RegistryProvider};
use ferry_db::entities::registry_integrations as registries;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::registry_service_server::RegistryService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `RegistryService` implementation.
#[derive(Debug, Clone)]
pub struct RegistryApi(pub Workloads);

fn registry_to_pb(r: &registries::Model) -> pb::Registry {
    pb::Registry {
        id: r.id.to_string(),
        organization_id: r.organization_id.to_string(),
        name: r.name.clone(),
        url: r.url.clone(),
        username: r.username.clone().unwrap_or_default(),
        created_at: Some(ts(r.created_at)),
    }
}

/// A registry host, optionally with a scheme and port.
fn registry_url(value: &str) -> Result<String> {
    let v = value.trim().trim_end_matches('/');
    let host = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .unwrap_or(v);
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'/'))
        && !host.starts_with(['.', '-', ':', '/']);
    if ok {
        Ok(v.to_owned())
    } else {
        Err(Error::InvalidArgument(
            "url: must be a registry host like ghcr.io or https://registry.example.com".into(),
        ))
    }
}

fn provider(url: &str) -> RegistryProvider {
    let host = url
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    match host.split(['/', ':']).next().unwrap_or_default() {
        "ghcr.io" => RegistryProvider::Ghcr,
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => RegistryProvider::DockerHub,
        "registry.gitlab.com" => RegistryProvider::Gitlab,
        h if h.ends_with(".amazonaws.com") => RegistryProvider::Ecr,
        h if h.ends_with("gcr.io") || h.ends_with(".pkg.dev") => RegistryProvider::Gcr,
        h if h.ends_with(".azurecr.io") => RegistryProvider::Acr,
        _ => RegistryProvider::Generic,
    }
}

/// ListRegistries' order: by name, then id.
static REGISTRIES: Keyset<registries::Column> = Keyset {
    list: "registries",
    columns: &[
        asc(registries::Column::Name, Kind::Text),
        asc(registries::Column::Id, Kind::Id),
    ],
};

impl RegistryApi {
    async fn create(&self, request: Request<pb::CreateRegistryRequest>) -> Result<pb::Registry> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller.organization(db, Action::RegistryManage, org).await?;
        let name = validate::display_name("name", &req.name)?;
        let url = registry_url(&req.url)?;
        if req.username.trim().is_empty() || req.username.len() > 255 {
            return Err(Error::InvalidArgument(
                "username: 1 to 255 characters".into(),
            ));
        }
        if req.password.is_empty() || req.password.len() > 8192 {
            return Err(Error::InvalidArgument("password: 1 to 8192 bytes".into()));
        }
        let keyring = self.0.identity.keyring()?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let registry_id = Uuid::now_v7();
        let registry = registries::ActiveModel {
            id: Set(registry_id),
            organization_id: Set(org),
            name: Set(name),
            provider: Set(provider(&url)),
            url: Set(url),
            username: Set(Some(req.username.trim().to_owned())),
            password: Set(Some(keyring.encrypt(
                "registry_integrations",
                "password",
                registry_id,
                &req.password,
            )?)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "the organization already has a registry with this name",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "registry.create",
                    AuditResourceType::Integration,
                    registry.id,
                )
                .details(json!({ "name": registry.name, "url": registry.url })),
            )
            .await?;
        txn.commit().await?;
        Ok(registry_to_pb(&registry))
    }

    async fn list(
        &self,
        request: Request<pb::ListRegistriesRequest>,
    ) -> Result<pb::ListRegistriesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = REGISTRIES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller
            .can(db, Action::RegistryRead, Resource::Organization(org))
            .await?;
        let query = registries::Entity::find().filter(registries::Column::OrganizationId.eq(org));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |r| vec![Key::Text(r.name.clone()), Key::Id(r.id)]);
        Ok(pb::ListRegistriesResponse {
            registries: rows.iter().map(registry_to_pb).collect(),
            next_page_token,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteRegistryRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller.organization(db, Action::RegistryManage, org).await?;
        let id = parse_id("id", &req.id)?;
        let txn = crate::db::begin_write(db).await?;
        let registry = registries::Entity::find_by_id(id)
            .filter(registries::Column::OrganizationId.eq(org))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("registry not found".into()))?;
        registries::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("registry.delete", AuditResourceType::Integration, id)
                    .details(json!({ "name": registry.name })),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

#[tonic::async_trait]
impl RegistryService for RegistryApi {
    async fn create_registry(
        &self,
        request: Request<pb::CreateRegistryRequest>,
    ) -> Result<Response<pb::Registry>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn list_registries(
        &self,
        request: Request<pb::ListRegistriesRequest>,
    ) -> Result<Response<pb::ListRegistriesResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn delete_registry(
        &self,
        request: Request<pb::DeleteRegistryRequest>,
    ) -> Result<Response<pb::DeleteRegistryResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteRegistryResponse {}))
    }
}
