//! `ferry.v1.VariableGroupService`: variables shared by several services.
//! Secret values are encrypted at rest and never returned.

use std::collections::HashMap;

use chrono::Utc;
use ferry_db::entities::enums::AuditResourceType;
use ferry_db::entities::{variable_group_items, variable_groups};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, QueryFilter as _, QueryOrder as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::variable_group_service_server::VariableGroupService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::spec::{GROUP_TABLE, VALUE_COLUMN};
use super::{Scope, Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `VariableGroupService` implementation.
#[derive(Debug, Clone)]
pub struct VariableApi(pub Workloads);

/// What secret values read as.
pub const MASK: &str = "***";

/// A variable as returned: secret values masked.
pub(crate) fn env_to_pb(
    key: &str,
    value: Option<&String>,
    secret: bool,
    updated: chrono::DateTime<Utc>,
) -> pb::EnvVar {
    pb::EnvVar {
        key: key.to_owned(),
        value: if secret {
            MASK.to_owned()
        } else {
            value.cloned().unwrap_or_default()
        },
        secret,
        updated_at: Some(ts(updated)),
    }
}

async fn group_to_pb<C: ConnectionTrait>(
    db: &C,
    g: &variable_groups::Model,
) -> Result<pb::VariableGroup> {
    let mut out = groups_to_pb(db, std::slice::from_ref(g)).await?;
    out.pop()
        .ok_or_else(|| Error::Internal("variable group message not built".into()))
}

/// [`group_to_pb`] for many groups with one query for all their items,
/// not one per group.
async fn groups_to_pb<C: ConnectionTrait>(
    db: &C,
    rows: &[variable_groups::Model],
) -> Result<Vec<pb::VariableGroup>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut items: HashMap<Uuid, Vec<variable_group_items::Model>> = HashMap::new();
    for i in variable_group_items::Entity::find()
        .filter(variable_group_items::Column::VariableGroupId.is_in(rows.iter().map(|g| g.id)))
        .order_by_asc(variable_group_items::Column::Key)
        .all(db)
        .await?
    {
        items.entry(i.variable_group_id).or_default().push(i);
    }
    Ok(rows
        .iter()
        .map(|g| group_message(g, &items.remove(&g.id).unwrap_or_default()))
        .collect())
}

fn group_message(
    g: &variable_groups::Model,
    items: &[variable_group_items::Model],
) -> pb::VariableGroup {
    pb::VariableGroup {
        id: g.id.to_string(),
        project_id: g.project_id.to_string(),
        name: g.name.clone(),
        description: g.description.clone().unwrap_or_default(),
        variables: items
            .iter()
            .map(|i| env_to_pb(&i.key, i.value.as_ref(), i.is_secret, i.updated_at))
            .collect(),
        created_at: Some(ts(g.created_at)),
    }
}

/// ListVariableGroups' order: by name, then id.
static VARIABLE_GROUPS: Keyset<variable_groups::Column> = Keyset {
    list: "variable-groups",
    columns: &[
        asc(variable_groups::Column::Name, Kind::Text),
        asc(variable_groups::Column::Id, Kind::Id),
    ],
};

impl VariableApi {
    /// A group the caller may act on with `action` (on its project).
    async fn authorize(
        &self,
        caller: &Caller,
        action: Action,
        id: Uuid,
    ) -> Result<(Scope, variable_groups::Model)> {
        let db = &self.0.identity.db;
        let group = variable_groups::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("variable group not found".into()))?;
        let (scope, _) = caller.project(db, action, group.project_id).await?;
        Ok((scope, group))
    }

    async fn create(
        &self,
        request: Request<pb::CreateVariableGroupRequest>,
    ) -> Result<pb::VariableGroup> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller
            .project(db, Action::ProjectManage, project_id)
            .await?;
        let name = validate::display_name("name", &req.name)?;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let group = variable_groups::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project_id),
            name: Set(name),
            description: Set(
                (!req.description.trim().is_empty()).then(|| req.description.trim().to_owned())
            ),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "a variable group with this name already exists in the project",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "variable_group.create",
                    AuditResourceType::VariableGroup,
                    group.id,
                )
                .details(json!({ "name": group.name })),
            )
            .await?;
        txn.commit().await?;
        group_to_pb(db, &group).await
    }

    async fn get(
        &self,
        request: Request<pb::GetVariableGroupRequest>,
    ) -> Result<pb::VariableGroup> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (_, group) = self.authorize(&caller, Action::ProjectRead, id).await?;
        group_to_pb(&self.0.identity.db, &group).await
    }

    async fn list(
        &self,
        request: Request<pb::ListVariableGroupsRequest>,
    ) -> Result<pb::ListVariableGroupsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = VARIABLE_GROUPS.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.project(db, Action::ProjectRead, project_id).await?;
        let query = variable_groups::Entity::find()
            .filter(variable_groups::Column::ProjectId.eq(project_id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |g| vec![Key::Text(g.name.clone()), Key::Id(g.id)]);
        Ok(pb::ListVariableGroupsResponse {
            variable_groups: groups_to_pb(db, &rows).await?,
            next_page_token,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteVariableGroupRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let (scope, group) = self.authorize(&caller, Action::ProjectManage, id).await?;
        let txn = crate::db::begin_write(&self.0.identity.db).await?;
        variable_groups::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new(
                    "variable_group.delete",
                    AuditResourceType::VariableGroup,
                    id,
                )
                .details(json!({ "name": group.name })),
            )
            .await?;
        txn.commit().await?;
        Ok(())
    }

    async fn set(&self, request: Request<pb::SetVariableRequest>) -> Result<pb::VariableGroup> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("variableGroupId", &req.variable_group_id)?;
        let (scope, group) = self.authorize(&caller, Action::ProjectManage, id).await?;
        validate::env_key("key", &req.key)?;
        validate::env_value("value", &req.value)?;
        let keyring = self.0.identity.keyring()?;
        let db = &self.0.identity.db;
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let existing = variable_group_items::Entity::find()
            .filter(variable_group_items::Column::VariableGroupId.eq(id))
            .filter(variable_group_items::Column::Key.eq(&req.key))
            .one(&txn)
            .await?;
        // The value is bound to the row it is stored in.
        let item_id = existing.as_ref().map_or_else(Uuid::now_v7, |item| item.id);
        let (plain, enc) = if req.secret {
            (
                None,
                Some(keyring.encrypt(GROUP_TABLE, VALUE_COLUMN, item_id, &req.value)?),
            )
        } else {
            (Some(req.value.clone()), None)
        };
        match existing {
            Some(item) => {
                let mut row = item.into_active_model();
                row.value = Set(plain);
                row.value_encrypted = Set(enc);
                row.is_secret = Set(req.secret);
                row.updated_at = Set(now);
                row.update(&txn).await?;
            }
            None => {
                variable_group_items::ActiveModel {
                    id: Set(item_id),
                    variable_group_id: Set(id),
                    key: Set(req.key.clone()),
                    value: Set(plain),
                    value_encrypted: Set(enc),
                    is_secret: Set(req.secret),
                    created_at: Set(now),
                    updated_at: Set(now),
                }
                .insert(&txn)
                .await?;
            }
        }
        // The key is audited, never the value.
        scope
            .audit(
                &txn,
                Entry::new(
                    "variable_group.set_variable",
                    AuditResourceType::VariableGroup,
                    id,
                )
                .details(json!({ "key": req.key, "secret": req.secret })),
            )
            .await?;
        txn.commit().await?;
        group_to_pb(db, &group).await
    }

    async fn unset(
        &self,
        request: Request<pb::DeleteVariableRequest>,
    ) -> Result<pb::VariableGroup> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("variableGroupId", &req.variable_group_id)?;
        let (scope, group) = self.authorize(&caller, Action::ProjectManage, id).await?;
        let db = &self.0.identity.db;
        scope
            .remove(
                db,
                variable_group_items::Entity::delete_many()
                    .filter(variable_group_items::Column::VariableGroupId.eq(id))
                    .filter(variable_group_items::Column::Key.eq(&req.key)),
                "variable not found",
                Entry::new(
                    "variable_group.delete_variable",
                    AuditResourceType::VariableGroup,
                    id,
                )
                .details(json!({ "key": req.key })),
            )
            .await?;
        group_to_pb(db, &group).await
    }
}

#[tonic::async_trait]
impl VariableGroupService for VariableApi {
    async fn create_variable_group(
        &self,
        request: Request<pb::CreateVariableGroupRequest>,
    ) -> Result<Response<pb::VariableGroup>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn get_variable_group(
        &self,
        request: Request<pb::GetVariableGroupRequest>,
    ) -> Result<Response<pb::VariableGroup>, Status> {
        Ok(Response::new(self.get(request).await?))
    }

    async fn list_variable_groups(
        &self,
        request: Request<pb::ListVariableGroupsRequest>,
    ) -> Result<Response<pb::ListVariableGroupsResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn delete_variable_group(
        &self,
        request: Request<pb::DeleteVariableGroupRequest>,
    ) -> Result<Response<pb::DeleteVariableGroupResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteVariableGroupResponse {}))
    }

    async fn set_variable(
        &self,
        request: Request<pb::SetVariableRequest>,
    ) -> Result<Response<pb::VariableGroup>, Status> {
        Ok(Response::new(self.set(request).await?))
    }

    async fn delete_variable(
        &self,
        request: Request<pb::DeleteVariableRequest>,
    ) -> Result<Response<pb::VariableGroup>, Status> {
        Ok(Response::new(self.unset(request).await?))
    }
}
