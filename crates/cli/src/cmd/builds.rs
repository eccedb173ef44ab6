//! `builds`: a service's image builds from git and the pushes that
//! triggered them (`ferry.v1.GitService`).

use std::io::Read as _;

use ferry_proto::ferry::v1 as pb;

use crate::cli::{BuildsCmd, GitCmd};
use crate::error::{CliError, Result};
use crate::list_all;
use crate::session::{Session, pick};

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
        BuildsCmd::Trigger { service, commit } => {
            let service_id = s.service_id(service.as_deref()).await?;
            let build = api
                .git()
                .trigger_build(api.req(pb::TriggerBuildRequest {
                    service_id,
                    commit_sha: commit.unwrap_or_default(),
                }))
                .await?
                .into_inner();
            s.out.one(&build)
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
