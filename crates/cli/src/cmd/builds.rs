//! `builds`: a service's image builds from git and the pushes that
//! triggered them (`ferry.v1.GitService`).

use std::io::Read as _;
use std::time::Duration;

use ferry_proto::ferry::v1 as pb;
use pb::BuildStatus as Bs;
use pb::DeploymentStatus as Ds;
use tokio_stream::StreamExt as _;

use crate::cli::{BuildsCmd, GitCmd};
use crate::error::{CliError, Result, exit};
use crate::list_all;
use crate::output::{Out, enum_word};
use crate::session::{Api, Session, pick};

fn provider(name: &str) -> Result<pb::GitProvider> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "github" => pb::GitProvider::Github,
        "gitlab" => pb::GitProvider::Gitlab,
        "gitea" => pb::GitProvider::Gitea,
        "forgejo" => pb::GitProvider::Forgejo,
        "bitbucket" => pb::GitProvider::Bitbucket,
        "generic" => pb::GitProvider::Generic,
        other => {
            return Err(CliError::usage(format!(
                "`{other}` is not a provider: github, gitlab, gitea, forgejo, bitbucket or generic"
            )));
        }
    })
}

fn build_type(name: &str) -> Result<pb::BuildType> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "auto" => pb::BuildType::Auto,
        "dockerfile" => pb::BuildType::Dockerfile,
        "railpack" => pb::BuildType::Railpack,
        "buildpacks" => pb::BuildType::Buildpacks,
        "static" => pb::BuildType::Static,
        other => {
            return Err(CliError::usage(format!(
                "`{other}` is not a build type: auto, dockerfile, railpack, buildpacks or static"
            )));
        }
    })
}

async fn integrations(s: &mut Session) -> Result<Vec<pb::GitIntegration>> {
    let api = s.api().await?;
    let organization_id = s.org_id().await?;
    Ok(list_all!(
        api,
        git,
        list_git_integrations,
        pb::ListGitIntegrationsRequest {
            organization_id,
            ..Default::default()
        },
        git_integrations
    ))
}

/// `ferry git ...`.
pub async fn git(s: &mut Session, cmd: GitCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        GitCmd::List => {
            let all = integrations(s).await?;
            s.out.list(&all)
        }
        GitCmd::Connect {
            name,
            provider: kind,
            base_url,
            token_stdin,
            known_hosts,
        } => {
            let provider = provider(&kind)?;
            let token = if provider == pb::GitProvider::Generic {
                String::new()
            } else if token_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text.trim_end_matches(['\r', '\n']).to_string()
            } else {
                rpassword::prompt_password("Access token: ")
                    .map_err(|e| CliError::usage(format!("cannot read the token: {e}")))?
            };
            let ssh_known_hosts = match known_hosts {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?,
                None => String::new(),
            };
            let organization_id = s.org_id().await?;
            let created = api
                .git()
                .create_git_integration(api.req(pb::CreateGitIntegrationRequest {
                    organization_id,
                    provider: provider.into(),
                    name,
                    base_url,
                    token,
                    webhook_secret: String::new(),
                    ssh_known_hosts,
                }))
                .await?
                .into_inner();
            if s.out.structured() {
                return s.out.one(&created);
            }
            s.out.one(&created)?;
            s.out.note(format!(
                "Add a push webhook at your provider:\n  URL:    {}\n  secret: {}   (shown once)",
                created.webhook_url, created.webhook_secret
            ))?;
            if !created.ssh_public_key.is_empty() {
                s.out.note(format!(
                    "Add this read-only deploy key to the repository:\n  {}",
                    created.ssh_public_key
                ))?;
            }
            Ok(())
        }
        GitCmd::Rm { integration } => {
            let all = integrations(s).await?;
            let found = pick(
                "git integration",
                &integration,
                all,
                |g| &g.id,
                |g| vec![&g.name],
            )?;
            api.git()
                .delete_git_integration(api.req(pb::DeleteGitIntegrationRequest { id: found.id }))
                .await?;
            s.out
                .note(format!("Deleted git integration `{}`.", found.name))
        }
    }
}

/// `ferry builds ...`.
pub async fn builds(s: &mut Session, cmd: BuildsCmd) -> Result<()> {
    let api = s.api().await?;
    match cmd {
        BuildsCmd::Config {
            service,
            git,
            repo,
            branch,
            build_type: kind,
            root_dir,
            dockerfile,
            watch_paths,
            no_auto_deploy,
        } => {
            let build_type = build_type(&kind)?;
            let service_id = s.service_id(Some(&service)).await?;
            let all = integrations(s).await?;
            let integration = pick("git integration", &git, all, |g| &g.id, |g| vec![&g.name])?;
            let config = api
                .git()
                .set_build_config(api.req(pb::SetBuildConfigRequest {
                    service_id,
                    git_integration_id: integration.id,
                    repository: repo,
                    branch,
                    root_dir,
                    build_type: build_type.into(),
                    dockerfile_path: dockerfile.unwrap_or_default(),
                    watch_paths,
                    auto_deploy: !no_auto_deploy,
                    ..Default::default()
                }))
                .await?
                .into_inner();
            s.out.one(&config)
        }
        BuildsCmd::List { service } => {
            let service_id = s.service_id(service.as_deref()).await?;
            let all = list_all!(
                api,
                git,
                list_builds,
                pb::ListBuildsRequest {
                    service_id,
                    ..Default::default()
                },
                builds
            );
            s.out.list(&all)
        }
        BuildsCmd::Trigger {
            service,
            commit,
            follow,
        } => {
            let service_id = s.service_id(service.as_deref()).await?;
            let build = api
                .git()
                .trigger_build(api.req(pb::TriggerBuildRequest {
                    service_id,
                    commit_sha: commit.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            if !follow {
                return s.out.one(&build);
            }
            if !s.out.quiet {
                eprintln!("build {} queued", build.id);
            }
            // Under -o json|yaml and -q stdout is the build object alone, as
            // `ferry deploy` does with its rollout lines.
            let sink = if s.out.structured() || s.out.quiet {
                Sink::Progress
            } else {
                Sink::Stdout
            };
            let build = stream_logs(&api, s.out, build, true, sink).await?;
            verdict(s.out, &build)?;
            if s.out.structured() || s.out.quiet {
                s.out.one(&build)?;
            }
            Ok(())
        }
        BuildsCmd::Logs { build, follow } => {
            let build = api
                .git()
                .get_build(api.req(pb::GetBuildRequest { id: build }))
                .await?
                .into_inner();
            let build = stream_logs(&api, s.out, build, follow, Sink::Stdout).await?;
            if follow {
                verdict(s.out, &build)
            } else {
                if !s.out.quiet {
                    eprintln!("{}", summary(&build));
                }
                Ok(())
            }
        }
        BuildsCmd::Cancel { build } => {
            let build = api
                .git()
                .cancel_build(api.req(pb::CancelBuildRequest { id: build }))
                .await?
                .into_inner();
            s.out.one(&build)
        }
        BuildsCmd::Deliveries { service } => {
            let service_id = s.service_id(service.as_deref()).await?;
            let all = list_all!(
                api,
                git,
                list_webhook_deliveries,
                pb::ListWebhookDeliveriesRequest {
                    service_id,
                    ..Default::default()
                },
                deliveries
            );
            s.out.list(&all)
        }
    }
}

/// Where a build's log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// stdout: they are the command's output (one JSON object a line under
    /// `-o json|yaml`).
    Stdout,
    /// Progress lines: stderr under `-o json|yaml`, nothing under `-q`.
    Progress,
}

/// True once nothing more happens to the build.
fn build_finished(status: Bs) -> bool {
    !matches!(
        status,
        Bs::Unspecified | Bs::Queued | Bs::Cloning | Bs::Building
    )
}

/// True for a deployment whose WatchDeployment stream ends by itself.
fn deployment_finished(status: Ds) -> bool {
    matches!(
        status,
        Ds::Running | Ds::Failed | Ds::Planned | Ds::Superseded | Ds::Cancelled
    )
}

fn print_line(out: Out, sink: Sink, line: &pb::DeploymentLogLine) -> Result<()> {
    if sink == Sink::Stdout && out.structured() {
        let value = crate::output::to_json(line)?;
        return crate::output::write_out(&format!("{value}\n"));
    }
    // Decoration (time, colour) only on a terminal: piped, the lines are
    // exactly what the build printed.
    let text = if out.color {
        let time = line
            .timestamp
            .as_ref()
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map_or_else(String::new, |t| t.format("%H:%M:%S ").to_string());
        let message = match line.level.as_str() {
            "warn" | "warning" => out.paint("33", &line.message),
            "error" => out.paint("31", &line.message),
            _ => line.message.clone(),
        };
        format!("{}{message}", out.paint("2", &time))
    } else {
        line.message.clone()
    };
    match sink {
        Sink::Stdout => crate::output::write_out(&format!("{text}\n")),
        Sink::Progress => {
            out.progress(&text);
            Ok(())
        }
    }
}

/// Prints `build`'s log lines stored so far and, with `follow`, the new
/// ones until the build finishes. Returns the build as last read.
///
/// The lines are its deployment's (`WatchDeployment`), whose first event
/// carries every line stored so far. The deployment stays `building` while
/// the build runs; after that it either ends (failed, cancelled, planned:
/// its stream closes after the last lines) or rolls the image out, which is
/// no longer the build's business.
async fn stream_logs(
    api: &Api,
    out: Out,
    build: pb::Build,
    follow: bool,
    sink: Sink,
) -> Result<pb::Build> {
    if build.deployment_id.is_empty() {
        return Ok(build);
    }
    let mut stream = api
        .deployments()
        .watch_deployment(api.req(pb::WatchDeploymentRequest {
            id: build.deployment_id.clone(),
        }))
        .await?
        .into_inner();
    while let Some(event) = stream.next().await {
        let event = event?;
        for line in &event.logs {
            print_line(out, sink, line)?;
        }
        if !follow {
            break;
        }
        let status = event
            .deployment
            .as_ref()
            .map_or(Ds::Building, pb::Deployment::status);
        if status != Ds::Building && !deployment_finished(status) {
            break;
        }
    }
    if follow {
        wait_finished(api, &build.id).await
    } else {
        get_build(api, &build.id).await
    }
}

async fn get_build(api: &Api, id: &str) -> Result<pb::Build> {
    Ok(api
        .git()
        .get_build(api.req(pb::GetBuildRequest { id: id.to_owned() }))
        .await?
        .into_inner())
}

/// The build once it is finished. Its deployment leaves `building` a moment
/// before the build row says so (a success is deployed first), hence the
/// short wait.
async fn wait_finished(api: &Api, id: &str) -> Result<pb::Build> {
    const POLLS: u32 = 80;
    let mut build = get_build(api, id).await?;
    for _ in 0..POLLS {
        if build_finished(build.status()) {
            return Ok(build);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        build = get_build(api, id).await?;
    }
    Err(CliError::msg(format!(
        "build {id} is still {} but its log stream ended",
        enum_word(build.status().as_str_name(), "BUILD_STATUS_")
    ))
    .hint(format!("`ferry builds logs {id} -f` follows it again")))
}

/// One line on where `build` stands.
fn summary(build: &pb::Build) -> String {
    let reason = build
        .message
        .lines()
        .next()
        .filter(|l| !l.is_empty())
        .unwrap_or("no reason recorded");
    let id = &build.id;
    match build.status() {
        Bs::Succeeded => format!("build {id} succeeded: {}", build.image),
        Bs::Failed => format!("build {id} failed: {reason}"),
        Bs::TimedOut => format!("build {id} timed out: {reason}"),
        Bs::Cancelled => format!("build {id} was cancelled: {reason}"),
        Bs::Skipped => format!("build {id} was skipped: {reason}"),
        Bs::Planned => format!("build {id} was planned, not run: {reason}"),
        other => format!(
            "build {id} is {} (`-f` follows it)",
            enum_word(other.as_str_name(), "BUILD_STATUS_")
        ),
    }
}

/// A followed build's outcome: a failure, time-out or cancellation is an
/// error (exit 7) with the recorded reason.
fn verdict(out: Out, build: &pb::Build) -> Result<()> {
    if matches!(build.status(), Bs::Failed | Bs::TimedOut | Bs::Cancelled) {
        return Err(CliError::new(exit::BUILD_FAILED, summary(build)));
    }
    if !out.quiet {
        eprintln!("{}", summary(build));
    }
    Ok(())
}
