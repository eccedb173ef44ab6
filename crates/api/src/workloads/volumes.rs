//! `ferry.v1.VolumeService`: project volumes (PersistentVolumeClaims).

use chrono::Utc;
use ferry_db::entities::enums::{AuditResourceType, VolumeAccessMode, VolumeType};
use ferry_db::entities::{volume_mounts, volumes};
use ferry_db::sea_orm::{
    ActiveModelTrait as _, ActiveValue::Set, ColumnTrait as _, EntityTrait as _,
    PaginatorTrait as _, QueryFilter as _,
};
use ferry_proto::ferry::v1 as pb;
use pb::volume_service_server::VolumeService;
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Workloads, unique_as, validate};
use crate::audit::Entry;
use crate::authz::{Action, Caller};
use crate::paging::{Key, Keyset, Kind, asc};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// The `VolumeService` implementation.
#[derive(Debug, Clone)]
pub struct VolumeApi(pub Workloads);

pub(crate) fn volume_to_pb(v: &volumes::Model) -> pb::Volume {
    pb::Volume {
        id: v.id.to_string(),
        project_id: v.project_id.to_string(),
        name: v.name.clone(),
        size_gb: v.size_gb,
        storage_class: v.storage_class.clone().unwrap_or_default(),
        access_mode: match v.access_mode {
            VolumeAccessMode::ReadWriteOnce => pb::VolumeAccessMode::ReadWriteOnce,
            VolumeAccessMode::ReadWriteMany => pb::VolumeAccessMode::ReadWriteMany,
            VolumeAccessMode::ReadOnlyMany => pb::VolumeAccessMode::ReadOnlyMany,
        }
        .into(),
        created_at: Some(ts(v.created_at)),
    }
}

/// ListVolumes' order: by name, then id.
static VOLUMES: Keyset<volumes::Column> = Keyset {
    list: "volumes",
    columns: &[
        asc(volumes::Column::Name, Kind::Text),
        asc(volumes::Column::Id, Kind::Id),
    ],
};

impl VolumeApi {
    async fn create(&self, request: Request<pb::CreateVolumeRequest>) -> Result<pb::Volume> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let db = &self.0.identity.db;
        let (scope, _) = caller
            .project(db, Action::ProjectManage, project_id)
            .await?;
        validate::dns_label("name", &req.name, 58)?;
        let size = validate::size_gb("sizeGb", req.size_gb)?;
        let storage_class = if req.storage_class.is_empty() {
            None
        } else {
            validate::dns_label("storageClass", &req.storage_class, 253)?;
            Some(req.storage_class.clone())
        };
        let access_mode = match pb::VolumeAccessMode::try_from(req.access_mode) {
            Ok(pb::VolumeAccessMode::Unspecified | pb::VolumeAccessMode::ReadWriteOnce) => {
                VolumeAccessMode::ReadWriteOnce
            }
            Ok(pb::VolumeAccessMode::ReadWriteMany) => VolumeAccessMode::ReadWriteMany,
            Ok(pb::VolumeAccessMode::ReadOnlyMany) => VolumeAccessMode::ReadOnlyMany,
            Err(_) => return Err(Error::InvalidArgument("accessMode: unknown value".into())),
        };
        let now = Utc::now();
        let txn = crate::db::begin_write(db).await?;
        let volume = volumes::ActiveModel {
            id: Set(Uuid::now_v7()),
            project_id: Set(project_id),
            name: Set(req.name.clone()),
            volume_type: Set(VolumeType::Pvc),
            size_gb: Set(size),
            storage_class: Set(storage_class),
            access_mode: Set(access_mode),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(unique_as(
            "a volume with this name already exists in the project",
        ))?;
        scope
            .audit(
                &txn,
                Entry::new("volume.create", AuditResourceType::Volume, volume.id)
                    .details(json!({ "name": volume.name, "sizeGb": size })),
            )
            .await?;
        txn.commit().await?;
        Ok(volume_to_pb(&volume))
    }

    async fn list(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<pb::ListVolumesResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let project_id = parse_id("projectId", &req.project_id)?;
        let page = VOLUMES.page(req.page_size, &req.page_token)?;
        let db = &self.0.identity.db;
        caller.project(db, Action::ProjectRead, project_id).await?;
        let query = volumes::Entity::find().filter(volumes::Column::ProjectId.eq(project_id));
        let rows = page.apply(query).all(db).await?;
        let (rows, next_page_token) =
            page.finish(rows, |v| vec![Key::Text(v.name.clone()), Key::Id(v.id)]);
        Ok(pb::ListVolumesResponse {
            volumes: rows.iter().map(volume_to_pb).collect(),
            next_page_token,
        })
    }

    async fn delete(&self, request: Request<pb::DeleteVolumeRequest>) -> Result<()> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let id = parse_id("id", &request.get_ref().id)?;
        let db = &self.0.identity.db;
        let volume = volumes::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(|| Error::NotFound("volume not found".into()))?;
        let (scope, project) = caller
            .project(db, Action::ProjectManage, volume.project_id)
            .await?;
        let txn = crate::db::begin_write(db).await?;
        let mounts = volume_mounts::Entity::find()
            .filter(volume_mounts::Column::VolumeId.eq(id))
            .count(&txn)
            .await?;
        if mounts > 0 {
            return Err(Error::FailedPrecondition(format!(
                "volume {} is mounted by {mounts} service(s); unmount it first",
                volume.name
            )));
        }
        volumes::Entity::delete_by_id(id).exec(&txn).await?;
        scope
            .audit(
                &txn,
                Entry::new("volume.delete", AuditResourceType::Volume, id)
                    .details(json!({ "name": volume.name })),
            )
            .await?;
        txn.commit().await?;
        if let Some(cluster) = &self.0.deployer.cluster
            && let Err(err) = cluster
                .delete_volume_claim(
                    &ferry_k8s::Owner::project(&project.namespace, project.id),
                    &volume.name,
                )
                .await
        {
            tracing::warn!(error = %err, volume = %volume.name, "deleting the PVC failed; it stays in the cluster");
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl VolumeService for VolumeApi {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::Volume>, Status> {
        Ok(Response::new(self.create(request).await?))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        Ok(Response::new(self.list(request).await?))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        self.delete(request).await?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }
}
