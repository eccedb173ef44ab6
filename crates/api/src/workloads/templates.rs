//! `ferry.v1.TemplateService`: official 1-click templates (seeded, and
//! built into the binary) and each organization's own.

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, TriggerType};
use ferry_db::entities::templates;
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, Condition, EntityTrait as _,
    QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::template_service_server::TemplateService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::deployments::deployment_to_pb;
use super::sensitive::is_secret_key;
use super::services::service_to_pb;
use super::spec::{self, NewService, TemplateSpec};
use super::variables::MASK;
use super::{Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller, Resource};
use crate::paging::{Key, Keyset, Kind, asc, desc};
use crate::wire::parse_id;
use crate::{Error, Result};

/// The `TemplateService` implementation.
#[derive(Debug, Clone)]
pub struct TemplateApi(pub Workloads);

/// `spec` with the literal value of every secret variable (flagged
/// `secret`, or secret by its key: [`super::sensitive`]) replaced by
/// `***`. Like every secret value, they are write-only: templates are
/// listed to every member, viewers included.
fn masked_spec(spec: &serde_json::Value) -> serde_json::Value {
    let mut spec = spec.clone();
    let vars = spec
        .get_mut("env")
        .and_then(serde_json::Value::as_array_mut);
    for var in vars.into_iter().flatten() {
        let key = var.get("key").and_then(|k| k.as_str()).unwrap_or_default();
        let flagged = var.get("secret").and_then(serde_json::Value::as_bool) == Some(true);
        if (flagged || is_secret_key(key))
            && let Some(value) = var.get_mut("value")
        {
            *value = json!(MASK);
        }
    }
    spec
}

fn template_to_pb(t: &templates::Model) -> pb::Template {
    pb::Template {
        id: t.id.to_string(),
        organization_id: t.organization_id.map(|i| i.to_string()).unwrap_or_default(),
        slug: t.slug.clone(),
        name: t.name.clone(),
        description: t.description.clone(),
        category: t.category.clone(),
        official: t.is_official,
        spec_json: masked_spec(&t.spec).to_string(),
    }
}

/// ListTemplates' order: official ones first, then by slug, then id.
static TEMPLATES: Keyset<templates::Column> = Keyset {
    list: "templates",
    columns: &[
        desc(templates::Column::IsOfficial, Kind::Flag),
        asc(templates::Column::Slug, Kind::Text),
        asc(templates::Column::Id, Kind::Id),
    ],
};

impl TemplateApi {
    async fn list(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<pb::ListTemplatesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let page = TEMPLATES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller
            .can(db, Action::TemplateRead, Resource::Organization(org))
            .await?;
        let query = templates::Entity::find().filter(
            Condition::any()
                .add(templates::Column::OrganizationId.is_null())
                .add(templates::Column::OrganizationId.eq(org)),
        );
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) = page.finish(rows, |t| {
            vec![
                Key::Flag(t.is_official),
                Key::Text(t.slug.clone()),
                Key::Id(t.id),
            ]
        });
        Ok(pb::ListTemplatesResponse {
            templates: rows.iter().map(template_to_pb).collect(),
            next_page_token,
        })
    }

    async fn create(&self, request: Request<pb::CreateTemplateRequest>) -> Result<pb::Template> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller.organization(db, Action::TemplateManage, org).await?;
        validate::dns_label("slug", &req.slug, 63)?;
        let name = validate::display_name("name", &req.name)?;
        let category = if req.category.trim().is_empty() {
            "custom".to_owned()
        } else {
            validate::dns_label("category", &req.category, 40)?;
            req.category.clone()
        };
        if req.description.chars().count() > 2000 {
            return Err(Error::InvalidArgument(
                "description: at most 2000 characters".into(),
            ));
        }
        let spec: serde_json::Value = serde_json::from_str(&req.spec_json)
            .map_err(|e| Error::InvalidArgument(format!("specJson: not JSON: {e}")))?;
        TemplateSpec::parse(&spec)?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let template = templates::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(Some(org)),
            slug: Set(req.slug.clone()),
            name: Set(name),
            description: Set(req.description.clone()),
            category: Set(category),
            icon_url: Set(None),
            is_official: Set(false),
            spec: Set(spec),
            created_by: Set(Some(caller.user_id)),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "the organization already has a template with this slug",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new("template.create", AuditResourceType::Template, template.id)
                    .details(json!({ "slug": template.slug })),
            )
            .await?;
        txn.commit().await?;
        Ok(template_to_pb(&template))
    }

    async fn delete(&self, request: Request<pb::DeleteTemplateRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let org = parse_id("organizationId", &req.organization_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller.organization(db, Action::TemplateManage, org).await?;
        let id = parse_id("id", &req.id)?;
        let txn = crate::db::begin_write(db).await?;
        // Official templates have no organization: never found here.
        let template = templates::Entity::find_by_id(id)
            .filter(templates::Column::OrganizationId.eq(org))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound("template not found".into()))?;
        templates::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("template.delete", AuditResourceType::Template, id)
                    .details(json!({ "slug": template.slug })),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn deploy(
        &self,
        request: Request<pb::DeployTemplateRequest>,
    ) -> Result<pb::DeployTemplateResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, project) = caller
            .project(db, Action::ProjectManage, project_id)
            .await?;
        validate::dns_label("templateSlug", &req.template_slug, 63)?;
        let name = if req.service_name.is_empty() {
            req.template_slug.clone()
        } else {
            req.service_name.clone()
        };
        validate::dns_label("serviceName", &name, 63)?;
        // The organization's own template wins over an official one.
        let own = templates::Entity::find()
            .filter(templates::Column::OrganizationId.eq(project.organization_id))
            .filter(templates::Column::Slug.eq(&req.template_slug))
            .one(db)
            .await?;
        let blueprint = match own {
            Some(t) => t.spec,
            None => ferry_db::seed::official_template_spec(&req.template_slug)
                .ok_or_else(|| Error::NotFound("template not found".into()))?,
        };
        let blueprint = TemplateSpec::parse(&blueprint)?;
        let keyring = self.0.identity.keyring()?;
        let txn = crate::db::begin_write(db).await?;
        let service = spec::create_from_template(
            &txn,
            keyring,
            NewService {
                project: &project,
                name: &name,
                created_by: scope.actor().user_id,
                stack_id: None,
                template_slug: Some(req.template_slug.clone()),
                version: None,
                storage_gb: None,
                quantities: validate::Quantities::default(),
                replicas: 1,
            },
            &blueprint,
        )
        .await?;
        scope
            .audit(
                &txn,
                Entry::new("service.create", AuditResourceType::Service, service.id)
                    .details(json!({ "name": service.name, "template": req.template_slug })),
            )
            .await?;
        txn.commit().await?;
        let deployment = self
            .0
            .deployer
            .start(&scope, &service, &project, TriggerType::Manual, None)
            .await?;
        Ok(pb::DeployTemplateResponse {
            service: Some(service_to_pb(db, &service).await?),
            deployment: Some(deployment_to_pb(&deployment)),
        })
    }
}

#[tonic::async_trait]
impl TemplateService for TemplateApi {
    async fn list_templates(
        &self,
        request: Request<pb::ListTemplatesRequest>,
    ) -> Result<Response<pb::ListTemplatesResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }
    async fn create_template(
        &self,
        request: Request<pb::CreateTemplateRequest>,
    ) -> Result<Response<pb::Template>, Status> {
        Ok(Response::new(self.create(request).await?))
    }
    async fn delete_template(
        &self,
        request: Request<pb::DeleteTemplateRequest>,
    ) -> Result<Response<pb::DeleteTemplateResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteTemplateResponse {}))
    }
    async fn deploy_template(
        &self,
        request: Request<pb::DeployTemplateRequest>,
    ) -> Result<Response<pb::DeployTemplateResponse>, Status> {
        Ok(Response::new(self.deploy(request).await?))
    }
}
