//! One RunBuild, after validation: re-attach or resolve, check the watch
//! paths, detect, then plan (no cluster) or start and follow the Job.

use ferry_git::Changes;
use ferry_k8s::build::job_name;
use ferry_k8s::{Cluster, builds_namespace};
use ferry_proto::ferry::internal::v1 as pb;
use pb::build_event::Event;

use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::follow::{Followed, follow};
use crate::kind;
use crate::plan::{self, PLANNED_REASON};
use crate::request::{BuildRequest, Requested, WatchPaths};
use crate::resolution::Resolution;
use crate::service::Builder;

/// Runs the build to its terminal event (or an error for the stream).
pub async fn run(builder: &Builder, request: BuildRequest, events: &Events) -> Result<()> {
    let config = &builder.config;
    let registry = config.registry()?;
    let image = format!(
        "{}/{}/{}",
        registry, request.project_name, request.service_name
    );
    if let Some(cluster) = &builder.cluster
        && let Some(existing) = cluster
            .find_build(&config.namespace, request.build_id)
            .await?
    {
        // Started before (by this builder or one that restarted): report
        // what it was started with and follow it; never a second Job.
        tracing::info!(job = %existing.job_name, "re-attaching to the build's Job");
        events.send(Resolution::from_job(&existing).event()).await;
        return follow_build(cluster, builder, &request, image, events).await;
    }

    let commit = match &request.commit {
        Some(commit) => commit.clone(),
        None => match builder
            .resolver
            .resolve(&request.remote, &request.branch)
            .await
        {
            Ok(commit) => commit,
            Err(err) => return terminal(events, git_failed("resolve", &err)).await,
        },
    };
    if let (Some(before), Some(watch)) = (&request.before, &request.watch) {
        let changes = builder
            .resolver
            .changes(&request.remote, before, &commit)
            .await;
        match watched(changes, watch) {
            Watched::Build(message) => events.send(events::progress("resolve", message)).await,
            Watched::Skip(reason) => {
                return terminal(events, Event::Skipped(pb::Skipped { reason })).await;
            }
            Watched::Failed(event) => return terminal(events, event).await,
        }
    }
    let (build_kind, detection) = match &request.build_type {
        Requested::Explicit(kind) => (kind.clone(), kind::explicit_lines(kind)),
        Requested::Auto { dockerfile_target } => {
            let detected = builder
                .resolver
                .detect(&request.remote, &commit, &request.root_dir)
                .await;
            match detected {
                Ok(detection) => (
                    kind::from_detection(
                        &detection,
                        &request.root_dir,
                        dockerfile_target.clone(),
                        &config.buildpacks_builder,
                    ),
                    detection.reasons,
                ),
                Err(err) if err.is_invalid_input() => {
                    return terminal(events, events::failed("detect", err.to_string())).await;
                }
                Err(err) => return terminal(events, git_failed("resolve", &err)).await,
            }
        }
    };
    let resolution = Resolution {
        commit_sha: commit.to_string(),
        build_type: kind::type_name(&build_kind).to_owned(),
        detection,
        job_name: job_name(request.build_id),
    };
    let spec = plan::spec(
        &request,
        config,
        registry,
        commit.as_str(),
        build_kind,
        resolution.annotations(),
    );
    events.send(resolution.event()).await;

    let Some(cluster) = &builder.cluster else {
        let job_yaml = plan::job_yaml(&spec, &request)?;
        let planned = pb::Planned {
            job_yaml,
            reason: PLANNED_REASON.into(),
        };
        return terminal(events, Event::Planned(planned)).await;
    };
    builder.ensure_namespace(cluster).await?;
    let credentials = plan::credentials(&request, config);
    // Applied to completion even if the client goes away meanwhile: a Job
    // without its Secret would wait for the mount forever, and a re-attach
    // never applies the Secret again.
    let starting = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.start_build(&spec, &credentials).await })
    };
    let started = starting
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
        .map_err(|e| plan::from_render(&request, e))?;
    tracing::info!(job = %started.job_name, "build Job started");
    follow_build(cluster, builder, &request, image, events).await
}

async fn follow_build(
    cluster: &Cluster,
    builder: &Builder,
    request: &BuildRequest,
    image: String,
    events: &Events,
) -> Result<()> {
    let followed = Followed {
        cluster,
        namespace: &builder.config.namespace,
        build_id: request.build_id,
        image,
    };
    follow(followed, events).await
}

async fn terminal(events: &Events, event: Event) -> Result<()> {
    events.send(event).await;
    Ok(())
}

/// A git failure as the terminal event: git's reason in words (credentials
/// are already redacted by ferry-git).
fn git_failed(step: &str, err: &ferry_git::Error) -> Event {
    tracing::info!(error = %err, step, "git failed");
    events::failed(step, err.to_string())
}

/// What the watch paths say about a push.
#[derive(Debug, PartialEq)]
enum Watched {
    /// Build, and say why.
    Build(String),
    Skip(String),
    Failed(Event),
}

fn watched(changes: ferry_git::Result<Changes>, watch: &WatchPaths) -> Watched {
    let patterns = watch.patterns.join(", ");
    match changes {
        Ok(Changes::Known {
            capped: true,
            paths,
        }) => Watched::Build(format!(
            "more than {} files changed; building without checking the watch paths",
            paths.len()
        )),
        Ok(Changes::Known { paths, .. }) => match watch.matcher.matches(&paths) {
            Some(hit) => Watched::Build(format!("watch paths: {hit}")),
            None => {
                let files = match paths.len() {
                    1 => "1 file changed".to_owned(),
                    n => format!("{n} files changed"),
                };
                Watched::Skip(format!(
                    "no watched path changed: {files}, none matches {patterns}"
                ))
            }
        },
        Ok(Changes::Unknown { reason }) => Watched::Build(format!(
            "the changed files are unknown ({reason}); building without checking the watch paths"
        )),
        Err(err) => Watched::Failed(git_failed("resolve", &err)),
    }
}

impl Builder {
    /// Applies the builds namespace once per process; a failure is
    /// retried by the next build.
    pub async fn ensure_namespace(&self, cluster: &Cluster) -> Result<()> {
        let mut ready = self.namespace_ready.lock().await;
        if !*ready {
            let objects = builds_namespace(&self.config.namespace, &self.config.egress)?;
            cluster.ensure_builds_namespace(&objects).await?;
            tracing::info!(namespace = %self.config.namespace, "builds namespace applied");
            *ready = true;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use ferry_git::watch::Matcher;

    use super::*;

    fn watch(patterns: &[&str]) -> WatchPaths {
        let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
        WatchPaths {
            matcher: Matcher::new(&patterns).unwrap(),
            patterns,
        }
    }

    fn known(paths: &[&str]) -> ferry_git::Result<Changes> {
        Ok(Changes::Known {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            capped: false,
        })
    }

    #[test]
    fn watch_paths_in_words() {
        let w = watch(&["apps/web/**"]);
        assert_eq!(
            watched(known(&["README.md", "apps/api/main.go", "go.mod"]), &w),
            Watched::Skip(
                "no watched path changed: 3 files changed, none matches apps/web/**".into()
            )
        );
        assert_eq!(
            watched(known(&["apps/web/page.tsx"]), &w),
            Watched::Build("watch paths: apps/web/page.tsx matched apps/web/**".into())
        );
        let unknown = Ok(Changes::Unknown {
            reason: "new branch".into(),
        });
        assert!(matches!(watched(unknown, &w), Watched::Build(m) if m.contains("new branch")));
        let capped = Ok(Changes::Known {
            paths: vec!["a".into()],
            capped: true,
        });
        assert!(matches!(watched(capped, &w), Watched::Build(_)));
        assert!(matches!(
            watched(Err(ferry_git::Error::Spawn(std::io::ErrorKind::NotFound.into())), &w),
            Watched::Failed(Event::Failed(f)) if f.step == "resolve"
        ));
    }
}
