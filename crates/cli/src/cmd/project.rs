//! Project-level commands: `services`, `env`, `volumes`, `groups`, `routes`.

use ferry_proto::ferry::v1 as pb;

use crate::cli::{CreateServiceArgs, EnvCmd, GroupsCmd, RoutesCmd, ServicesCmd, VolumesCmd};
use crate::error::{CliError, Result};
use crate::list_all;
use crate::session::{Session, pick};

/// `KEY=VALUE` → (key, value).
pub fn parse_pair(pair: &str) -> Result<(String, String)> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(CliError::usage(format!("`{pair}` is not KEY=VALUE"))),
    }
}

/// `ferry services ...`.
pub async fn services(s: &mut Session, cmd: ServicesCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        ServicesCmd::List => {
            let all = s.all_services().await?;
            s.out.list(&all)
        }
        ServicesCmd::Get { service } => {
            let service = s.find_service(&service).await?;
            s.out.one(&service)
        }
        ServicesCmd::Create(args) => {
            let request = create_request(s.project_id().await?, args)?;
            let service = api
                .services()
                .create_service(api.req(request))
                .await?
                .into_inner();
            s.out.one(&service)
        }
        ServicesCmd::Update {
            service,
            image,
            replicas,
        } => {
            let id = s.find_service(&service).await?.id;
            let service = api
                .services()
                .update_service(api.req(pb::UpdateServiceRequest {
                    id,
                    image,
                    replicas,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            s.out.one(&service)
        }
        ServicesCmd::Delete { service } => {
            let service = s.find_service(&service).await?;
            api.services()
                .delete_service(api.req(pb::DeleteServiceRequest {
                    id: service.id.clone(),
                }))
                .await?;
            s.out.note(format!("Deleted service `{}`.", service.name))
        }
    }
}

fn create_request(project_id: String, args: CreateServiceArgs) -> Result<pb::CreateServiceRequest> {
    let spec = match (args.image, args.database) {
        (_, Some(engine)) => {
            let name = format!("DATABASE_ENGINE_{}", engine.to_ascii_uppercase());
            let engine = pb::DatabaseEngine::from_str_name(&name).ok_or_else(|| {
                CliError::usage(format!(
                    "unknown database `{engine}` (postgres, mysql, mongodb, redis)"
                ))
            })?;
            pb::create_service_request::Spec::Database(pb::DatabaseSpec {
                engine: engine as i32,
                version: args.db_version,
                storage_size_gb: args.storage_gb,
                resources: None,
            })
        }
        (Some(image), None) => pb::create_service_request::Spec::Application(pb::ApplicationSpec {
            image,
            replicas: args.replicas,
            ..Default::default()
        }),
        (None, None) => return Err(CliError::usage("--image or --database is required")),
    };
    Ok(pb::CreateServiceRequest {
        project_id,
        name: args.name,
        spec: Some(spec),
        ports: args
            .port
            .into_iter()
            .map(|container_port| pb::Port {
                container_port,
                ..Default::default()
            })
            .collect(),
    })
}

/// `ferry env ...`.
pub async fn env(s: &mut Session, cmd: EnvCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        EnvCmd::List { service } => {
            let service_id = s.find_service(&service).await?.id;
            let all = list_all!(
                api,
                services,
                list_env_vars,
                pb::ListEnvVarsRequest {
                    service_id,
                    ..Default::default()
                },
                env_vars
            );
            s.out.list(&all)
        }
        EnvCmd::Set {
            service,
            pairs,
            secret,
        } => {
            let pairs = pairs
                .iter()
                .map(|p| parse_pair(p))
                .collect::<Result<Vec<_>>>()?;
            let service_id = s.find_service(&service).await?.id;
            let mut set = Vec::new();
            for (key, value) in pairs {
                let var = api
                    .services()
                    .set_env_var(api.req(pb::SetEnvVarRequest {
                        service_id: service_id.clone(),
                        key,
                        value,
                        secret,
                    }))
                    .await?
                    .into_inner();
                set.push(var);
            }
            s.out.list(&set)
        }
        EnvCmd::Unset { service, keys } => {
            let service_id = s.find_service(&service).await?.id;
            for key in keys {
                api.services()
                    .delete_env_var(api.req(pb::DeleteEnvVarRequest {
                        service_id: service_id.clone(),
                        key: key.clone(),
                    }))
                    .await?;
                s.out.note(format!("Removed {key}."))?;
            }
            Ok(())
        }
    }
}

async fn all_volumes(s: &mut Session) -> Result<Vec<pb::Volume>> {
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    Ok(list_all!(
        api,
        volumes,
        list_volumes,
        pb::ListVolumesRequest {
            project_id,
            ..Default::default()
        },
        volumes
    ))
}

async fn find_volume(s: &mut Session, key: &str) -> Result<pb::Volume> {
    let all = all_volumes(s).await?;
    pick("volume", key, all, |v| &v.id, |v| vec![&v.name])
}

/// `ferry volumes ...`.
pub async fn volumes(s: &mut Session, cmd: VolumesCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        VolumesCmd::List => {
            let all = all_volumes(s).await?;
            s.out.list(&all)
        }
        VolumesCmd::Create {
            name,
            size,
            storage_class,
        } => {
            let project_id = s.project_id().await?;
            let volume = api
                .volumes()
                .create_volume(api.req(pb::CreateVolumeRequest {
                    project_id,
                    name,
                    size_gb: size,
                    storage_class,
                    access_mode: 0,
                }))
                .await?
                .into_inner();
            s.out.one(&volume)
        }
        VolumesCmd::Delete { volume } => {
            let volume = find_volume(s, &volume).await?;
            api.volumes()
                .delete_volume(api.req(pb::DeleteVolumeRequest {
                    id: volume.id.clone(),
                }))
                .await?;
            s.out.note(format!("Deleted volume `{}`.", volume.name))
        }
        VolumesCmd::Mount {
            service,
            volume,
            path,
            read_only,
        } => {
            let service_id = s.find_service(&service).await?.id;
            let volume_id = find_volume(s, &volume).await?.id;
            let service = api
                .services()
                .mount_volume(api.req(pb::MountVolumeRequest {
                    service_id,
                    volume_id,
                    mount_path: path,
                    sub_path: String::new(),
                    read_only,
                }))
                .await?
                .into_inner();
            s.out.one(&service)
        }
        VolumesCmd::Unmount { service, path } => {
            let service_id = s.find_service(&service).await?.id;
            let service = api
                .services()
                .unmount_volume(api.req(pb::UnmountVolumeRequest {
                    service_id,
                    mount_path: path,
                }))
                .await?
                .into_inner();
            s.out.one(&service)
        }
    }
}

async fn all_groups(s: &mut Session) -> Result<Vec<pb::VariableGroup>> {
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    Ok(list_all!(
        api,
        groups,
        list_variable_groups,
        pb::ListVariableGroupsRequest {
            project_id,
            ..Default::default()
        },
        variable_groups
    ))
}

async fn find_group(s: &mut Session, key: &str) -> Result<pb::VariableGroup> {
    let all = all_groups(s).await?;
    pick("variable group", key, all, |g| &g.id, |g| vec![&g.name])
}

/// `ferry groups ...`.
pub async fn groups(s: &mut Session, cmd: GroupsCmd) -> Result<()> {
    let api = s.api().await?;
    let attach = matches!(cmd, GroupsCmd::Attach { .. });
    match cmd {
        GroupsCmd::List => {
            let all = all_groups(s).await?;
            s.out.list(&all)
        }
        GroupsCmd::Create { name, description } => {
            let project_id = s.project_id().await?;
            let group = api
                .groups()
                .create_variable_group(api.req(pb::CreateVariableGroupRequest {
                    project_id,
                    name,
                    description,
                }))
                .await?
                .into_inner();
            s.out.one(&group)
        }
        GroupsCmd::Delete { group } => {
            let group = find_group(s, &group).await?;
            api.groups()
                .delete_variable_group(api.req(pb::DeleteVariableGroupRequest {
                    id: group.id.clone(),
                }))
                .await?;
            s.out
                .note(format!("Deleted variable group `{}`.", group.name))
        }
        GroupsCmd::Set {
            group,
            pairs,
            secret,
        } => {
            let pairs = pairs
                .iter()
                .map(|p| parse_pair(p))
                .collect::<Result<Vec<_>>>()?;
            let mut group = find_group(s, &group).await?;
            for (key, value) in pairs {
                group = api
                    .groups()
                    .set_variable(api.req(pb::SetVariableRequest {
                        variable_group_id: group.id.clone(),
                        key,
                        value,
                        secret,
                    }))
                    .await?
                    .into_inner();
            }
            s.out.list(&group.variables)
        }
        GroupsCmd::Unset { group, keys } => {
            let mut group = find_group(s, &group).await?;
            for key in keys {
                group = api
                    .groups()
                    .delete_variable(api.req(pb::DeleteVariableRequest {
                        variable_group_id: group.id.clone(),
                        key,
                    }))
                    .await?
                    .into_inner();
            }
            s.out.list(&group.variables)
        }
        GroupsCmd::Attach { group, service } | GroupsCmd::Detach { group, service } => {
            let variable_group_id = find_group(s, &group).await?.id;
            let service_id = s.find_service(&service).await?.id;
            let service = if attach {
                api.services()
                    .attach_variable_group(api.req(pb::AttachVariableGroupRequest {
                        service_id,
                        variable_group_id,
                    }))
                    .await?
            } else {
                api.services()
                    .detach_variable_group(api.req(pb::DetachVariableGroupRequest {
                        service_id,
                        variable_group_id,
                    }))
                    .await?
            };
            s.out.one(&service.into_inner())
        }
    }
}

/// `ferry routes ...`.
pub async fn routes(s: &mut Session, cmd: RoutesCmd) -> Result<()> {
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    let list = || pb::ListRoutesRequest {
        project_id: project_id.clone(),
        ..Default::default()
    };
    match cmd {
        RoutesCmd::List => {
            let all = list_all!(api, routes, list_routes, list(), routes);
            s.out.list(&all)
        }
        RoutesCmd::Create {
            hostname,
            service,
            port,
            path,
            tls,
        } => {
            let service_id = s.find_service(&service).await?.id;
            let route = api
                .routes()
                .create_route(api.req(pb::CreateRouteRequest {
                    project_id: project_id.clone(),
                    hostname,
                    path_prefix: path,
                    tls_enabled: tls,
                    https_redirect: tls,
                    targets: vec![pb::RouteTarget {
                        service_id,
                        port,
                        weight: 1,
                        strip_path: false,
                    }],
                }))
                .await?
                .into_inner();
            s.out.one(&route)
        }
        RoutesCmd::Delete { route } => {
            let all = list_all!(api, routes, list_routes, list(), routes);
            let found = pick("route", &route, all, |r| &r.id, |r| vec![&r.hostname])?;
            api.routes()
                .delete_route(api.req(pb::DeleteRouteRequest {
                    id: found.id.clone(),
                }))
                .await?;
            s.out
                .note(format!("Deleted the route for {}.", found.hostname))
        }
    }
}
