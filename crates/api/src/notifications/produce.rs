//! The api's notification producers: each writes its outbox event in the
//! transaction that makes the change it reports (`ferry_db::outbox`), so
//! an event exists exactly when the change committed. Payloads carry ids,
//! names and a one-line `summary`, never secrets.

use ferry_db::entities::enums::{BuildStatus, DeploymentStatus, OrgRole, TriggerType};
use ferry_db::entities::{builds, deployments, projects, services, users};
use ferry_db::outbox::{self, Event, EventKind};
use ferry_db::sea_orm::{ConnectionTrait, EntityTrait as _};
use serde_json::json;
use uuid::Uuid;

use crate::Result;

/// The service and project of a deployment or build.
async fn service_and_project<C: ConnectionTrait>(
    conn: &C,
    service_id: Option<Uuid>,
) -> Result<Option<(services::Model, projects::Model)>> {
    let Some(service_id) = service_id else {
        return Ok(None);
    };
    let Some(service) = services::Entity::find_by_id(service_id).one(conn).await? else {
        return Ok(None);
    };
    let Some(project) = projects::Entity::find_by_id(service.project_id)
        .one(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some((service, project)))
}

fn cut(s: &str) -> String {
    s.chars().take(1000).collect()
}

/// `deployment.succeeded` (or `.rolled_back` for a rollback deployment)
/// when `d` ended `Running`, `deployment.failed` when it ended `Failed`.
pub async fn deployment_finished<C: ConnectionTrait>(
    conn: &C,
    d: &deployments::Model,
    status: DeploymentStatus,
    reason: Option<&str>,
) -> Result<()> {
    let kind = match status {
        DeploymentStatus::Running if d.trigger_type == TriggerType::Rollback => {
            EventKind::DeploymentRolledBack
        }
        DeploymentStatus::Running => EventKind::DeploymentSucceeded,
        DeploymentStatus::Failed => EventKind::DeploymentFailed,
        _ => return Ok(()),
    };
    let Some((service, project)) = service_and_project(conn, d.service_id).await? else {
        return Ok(());
    };
    let summary = match kind {
        EventKind::DeploymentFailed => format!(
            "Deployment of {} in {} failed: {}",
            service.name,
            project.name,
            reason.unwrap_or("no reason recorded")
        ),
        EventKind::DeploymentRolledBack => {
            format!("{} in {} was rolled back", service.name, project.name)
        }
        _ => format!("{} in {} is deployed", service.name, project.name),
    };
    outbox::enqueue(
        conn,
        Event::new(
            project.organization_id,
            Some(project.id),
            kind,
            json!({
                "summary": cut(&summary),
                "project": { "id": project.id, "name": project.name },
                "service": { "id": service.id, "name": service.name },
                "deployment": {
                    "id": d.id,
                    "image": d.image,
                    "commitSha": d.commit_sha,
                    "trigger": format!("{:?}", d.trigger_type).to_lowercase(),
                    "rollbackOf": d.rollback_of_id,
                },
                "reason": reason.map(cut),
            }),
        ),
    )
    .await?;
    Ok(())
}

/// `build.failed` when `build` ended `Failed` or `TimedOut`.
pub async fn build_finished<C: ConnectionTrait>(
    conn: &C,
    build: &builds::Model,
    status: BuildStatus,
    message: &str,
) -> Result<()> {
    if !matches!(status, BuildStatus::Failed | BuildStatus::TimedOut) {
        return Ok(());
    }
    let Some((service, project)) = service_and_project(conn, Some(build.service_id)).await? else {
        return Ok(());
    };
    outbox::enqueue(
        conn,
        Event::new(
            project.organization_id,
            Some(project.id),
            EventKind::BuildFailed,
            json!({
                "summary": cut(&format!("Build of {} in {}: {message}", service.name, project.name)),
                "project": { "id": project.id, "name": project.name },
                "service": { "id": service.id, "name": service.name },
                "build": {
                    "id": build.id,
                    "branch": build.branch,
                    "commitSha": build.commit_sha,
                    "timedOut": status == BuildStatus::TimedOut,
                },
                "deploymentId": build.deployment_id,
            }),
        ),
    )
    .await?;
    Ok(())
}

fn role_name(role: OrgRole) -> &'static str {
    match role {
        OrgRole::Owner => "owner",
        OrgRole::Admin => "admin",
        OrgRole::Member => "member",
        OrgRole::Viewer => "viewer",
    }
}

/// `member.invited`.
pub async fn member_invited<C: ConnectionTrait>(
    conn: &C,
    organization_id: Uuid,
    invitation_id: Uuid,
    email: &str,
    role: OrgRole,
) -> Result<()> {
    outbox::enqueue(
        conn,
        Event::new(
            organization_id,
            None,
            EventKind::MemberInvited,
            json!({
                "summary": format!("{email} was invited as {}", role_name(role)),
                "invitationId": invitation_id,
                "email": email,
                "role": role_name(role),
            }),
        ),
    )
    .await?;
    Ok(())
}

/// `member.joined`.
pub async fn member_joined<C: ConnectionTrait>(
    conn: &C,
    organization_id: Uuid,
    user_id: Uuid,
    role: OrgRole,
) -> Result<()> {
    let username = users::Entity::find_by_id(user_id)
        .one(conn)
        .await?
        .map(|u| u.username)
        .unwrap_or_default();
    outbox::enqueue(
        conn,
        Event::new(
            organization_id,
            None,
            EventKind::MemberJoined,
            json!({
                "summary": format!("{username} joined as {}", role_name(role)),
                "userId": user_id,
                "username": username,
                "role": role_name(role),
            }),
        ),
    )
    .await?;
    Ok(())
}
