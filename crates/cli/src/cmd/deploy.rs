//! Deployments: `deploy`, `plan`, `rollback`, `scale`, `restart`, `stop`,
//! `deployments`, `up`, `down`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use ferry_proto::ferry::v1 as pb;
use pb::DeploymentStatus as St;
use tokio_stream::StreamExt as _;

use crate::cli::{DeployArgs, DownArgs, RollbackArgs, ScaleArgs, ServiceArg, UpArgs};
use crate::error::{CliError, Result, exit};
use crate::list_all;
use crate::resources::status_word;
use crate::session::{Api, Session, pick};

fn finished(status: i32) -> bool {
    matches!(
        St::try_from(status),
        Ok(St::Running | St::Failed | St::Planned | St::Superseded)
    )
}

/// Follows `deployment` with `WatchDeployment`, printing each status change
/// and log line with the elapsed time, until it finishes. A failed rollout
/// is an error with exit code 6 and the recorded reason.
pub async fn follow(
    s: &Session,
    api: &Api,
    deployment: pb::Deployment,
    label: &str,
) -> Result<pb::Deployment> {
    let start = Instant::now();
    let out = s.out;
    let stamp = |text: &str| {
        let secs = start.elapsed().as_secs_f64();
        out.progress(&format!("{label}[{secs:6.1}s] {text}"));
    };
    stamp(&format!(
        "deployment {} {}",
        deployment.id,
        status_word(deployment.status)
    ));
    let mut last = deployment;
    if !finished(last.status) {
        let mut stream = api
            .deployments()
            .watch_deployment(api.req(pb::WatchDeploymentRequest {
                id: last.id.clone(),
            }))
            .await?
            .into_inner();
        while let Some(event) = stream.next().await {
            let event = event?;
            for line in event.logs {
                let text = match line.level.as_str() {
                    "warn" | "warning" => out.paint("33", &line.message),
                    "error" => out.paint("31", &line.message),
                    _ => line.message,
                };
                stamp(&text);
            }
            if let Some(d) = event.deployment {
                if d.status != last.status {
                    stamp(&status_word(d.status));
                }
                last = d;
            }
            if finished(last.status) {
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    match St::try_from(last.status) {
        Ok(St::Failed) => Err(CliError::new(
            exit::ROLLOUT_FAILED,
            format!(
                "{label}deployment {} failed after {secs:.1}s: {}",
                last.id,
                if last.message.is_empty() {
                    "no reason recorded"
                } else {
                    &last.message
                }
            ),
        )
        .hint("`ferry events SERVICE` and `ferry logs SERVICE --previous` show why")),
        Ok(St::Planned) => {
            out.progress(&format!(
                "{label}planned: no cluster is configured; the manifests were recorded (`ferry plan` shows them)"
            ));
            Ok(last)
        }
        _ => {
            out.progress(&format!(
                "{label}{} after {secs:.1}s",
                status_word(last.status)
            ));
            Ok(last)
        }
    }
}

/// `ferry deploy`.
pub async fn deploy(s: &mut Session, args: DeployArgs) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    if let Some(image) = args.image {
        api.services()
            .update_service(api.req(pb::UpdateServiceRequest {
                id: service_id.clone(),
                image: Some(image),
                ..Default::default()
            }))
            .await?;
    }
    let deployment = api
        .deployments()
        .deploy(api.req(pb::DeployRequest { service_id }))
        .await?
        .into_inner();
    finish(s, &api, deployment, args.detach).await
}

async fn finish(s: &Session, api: &Api, deployment: pb::Deployment, detach: bool) -> Result<()> {
    let deployment = if detach {
        deployment
    } else {
        follow(s, api, deployment, "").await?
    };
    if s.out.structured() || s.out.quiet {
        s.out.one(&deployment)
    } else {
        Ok(())
    }
}

/// `ferry plan`.
pub async fn plan(s: &mut Session, args: ServiceArg) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    let plan = api
        .deployments()
        .plan_deployment(api.req(pb::PlanDeploymentRequest { service_id }))
        .await?
        .into_inner();
    if s.out.structured() {
        return s.out.value(&serde_json::json!({
            "yaml": plan.yaml,
            "diff": plan.diff,
            "clusterConfigured": plan.cluster_configured,
            "secretsRevealed": plan.secrets_revealed,
        }));
    }
    let mut text = plan.yaml;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&s.out.paint("1", "--- diff against the cluster ---"));
    text.push('\n');
    if plan.diff.is_empty() {
        text.push_str("(no changes)\n");
    }
    for line in plan.diff.lines() {
        let code = match line.as_bytes().first() {
            Some(b'+') => "32",
            Some(b'-') => "31",
            Some(b'@') => "36",
            _ => "",
        };
        text.push_str(&if code.is_empty() {
            line.to_string()
        } else {
            s.out.paint(code, line)
        });
        text.push('\n');
    }
    if !plan.cluster_configured {
        text.push_str("(no cluster is configured: deploys are recorded as planned)\n");
    }
    crate::output::write_out(&text)
}

async fn history(api: &Api, service_id: String) -> Result<Vec<pb::Deployment>> {
    Ok(list_all!(
        api,
        deployments,
        list_deployments,
        pb::ListDeploymentsRequest {
            service_id,
            ..Default::default()
        },
        deployments
    ))
}

/// `ferry deployments`.
pub async fn deployments(s: &mut Session, args: ServiceArg) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    let all = history(&api, service_id).await?;
    s.out.list(&all)
}

/// `ferry rollback`.
pub async fn rollback(s: &mut Session, args: RollbackArgs) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    let all = history(&api, service_id).await?;
    let target = match &args.deployment {
        Some(key) => pick("deployment", key, all, |d| &d.id, |_| Vec::new())?,
        None => all
            .into_iter()
            .skip(1)
            .find(|d| St::try_from(d.status) != Ok(St::Failed))
            .ok_or_else(|| {
                CliError::new(exit::NOT_FOUND, "no earlier deployment to roll back to")
            })?,
    };
    s.out.progress(&format!("rolling back to {}", target.id));
    let deployment = api
        .deployments()
        .rollback(api.req(pb::RollbackRequest {
            deployment_id: target.id,
        }))
        .await?
        .into_inner();
    finish(s, &api, deployment, args.detach).await
}

/// `ferry scale`.
pub async fn scale(s: &mut Session, args: ScaleArgs) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(Some(&args.service)).await?;
    let service = api
        .deployments()
        .scale(api.req(pb::ScaleRequest {
            service_id,
            replicas: args.replicas,
        }))
        .await?
        .into_inner();
    s.out.one(&service)
}

/// `ferry restart` (`stop = false`) and `ferry stop`.
pub async fn restart_or_stop(s: &mut Session, args: ServiceArg, stop: bool) -> Result<()> {
    let api = s.api().await?;
    let service_id = s.service_id(args.service.as_deref()).await?;
    let service = if stop {
        api.deployments()
            .stop(api.req(pb::StopRequest { service_id }))
            .await?
    } else {
        api.deployments()
            .restart(api.req(pb::RestartRequest { service_id }))
            .await?
    };
    s.out.one(&service.into_inner())
}

/// The stack name: `--name`, else the Compose file's directory name.
fn stack_name(name: Option<String>, file: &Path) -> Result<String> {
    if let Some(name) = name {
        return Ok(name);
    }
    let dir = std::fs::canonicalize(file)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .or_else(|| std::env::current_dir().ok());
    dir.and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            CliError::usage("cannot name the stack from the file's directory; pass --name")
        })
}

async fn find_stack(s: &mut Session, name: &str) -> Result<Option<pb::Stack>> {
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    let stacks = list_all!(
        api,
        stacks,
        list_stacks,
        pb::ListStacksRequest {
            project_id,
            ..Default::default()
        },
        stacks
    );
    match pick("stack", name, stacks, |st| &st.id, |st| vec![&st.name]) {
        Ok(stack) => Ok(Some(stack)),
        Err(e) if e.code == exit::NOT_FOUND => Ok(None),
        Err(e) => Err(e),
    }
}

/// `ferry up`.
pub async fn up(s: &mut Session, args: UpArgs) -> Result<()> {
    let compose_file = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", args.file.display())))?;
    let name = stack_name(args.name, &args.file)?;
    let api = s.api().await?;
    let project_id = s.project_id().await?;
    let response = match find_stack(s, &name).await? {
        Some(stack) => api
            .stacks()
            .update_stack(api.req(pb::UpdateStackRequest {
                id: stack.id,
                compose_file,
                variables: HashMap::new(),
            }))
            .await?
            .into_inner(),
        None => api
            .stacks()
            .create_stack(api.req(pb::CreateStackRequest {
                project_id,
                name: name.clone(),
                compose_file,
                variables: HashMap::new(),
            }))
            .await?
            .into_inner(),
    };
    for warning in &response.warnings {
        eprintln!(
            "{} {}: {}",
            crate::output::paint(s.out.color, "33", "warning:"),
            warning.path,
            warning.message
        );
    }
    let stack = response.stack.unwrap_or_default();
    for (verb, names) in [
        ("created", &response.created),
        ("updated", &response.updated),
        ("removed", &response.removed),
    ] {
        if !names.is_empty() {
            s.out.progress(&format!("{verb}: {}", names.join(", ")));
        }
    }
    if args.no_deploy {
        return s.out.one(&stack);
    }
    let deployed = api
        .stacks()
        .deploy_stack(api.req(pb::DeployStackRequest {
            id: stack.id.clone(),
        }))
        .await?
        .into_inner()
        .deployments;
    let mut done = Vec::new();
    let mut failure = None;
    for deployment in deployed {
        if args.detach {
            done.push(deployment);
            continue;
        }
        let label = format!("{} ", short_id(&deployment.service_id));
        match follow(s, &api, deployment, &label).await {
            Ok(d) => done.push(d),
            Err(e) => {
                eprintln!("{e}");
                failure.get_or_insert(e);
            }
        }
    }
    if s.out.structured() || s.out.quiet {
        s.out.list(&done)?;
    } else {
        s.out.progress(&format!(
            "stack `{}`: {} service(s) deployed",
            stack.name,
            done.len()
        ));
    }
    failure.map_or(Ok(()), Err)
}

fn short_id(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// `ferry down`.
pub async fn down(s: &mut Session, args: DownArgs) -> Result<()> {
    let name = stack_name(args.name, &args.file)?;
    let api = s.api().await?;
    let stack = find_stack(s, &name)
        .await?
        .ok_or_else(|| CliError::new(exit::NOT_FOUND, format!("no stack named `{name}`")))?;
    api.stacks()
        .delete_stack(api.req(pb::DeleteStackRequest { id: stack.id }))
        .await?;
    s.out
        .note(format!("Deleted stack `{name}` and its services."))
}
