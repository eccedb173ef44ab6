//! Where a build stands, read from its Job and pod.

use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::ResourceExt as _;

use super::{containers, is_digest};

/// Container waiting reasons that will not heal: the image is wrong or
/// cannot be pulled (`ErrImagePull` alone is retried once by the kubelet,
/// then becomes `ImagePullBackOff`).
const IMAGE_PULL_FAILURES: [&str; 3] =
    ["ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"];

/// Waiting reasons that mean the pod spec cannot run as written.
const CONFIG_FAILURES: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];

/// The step of a build a container belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuildStep {
    /// `clone-*`: fetching the commit.
    Clone,
    /// `prepare-*`: Railpack's build plan.
    Prepare,
    /// `build`: building and pushing the image.
    Build,
}

impl BuildStep {
    /// The step of a build pod's container, by its name.
    pub fn of_container(name: &str) -> Option<BuildStep> {
        if name.starts_with("clone-") {
            Some(BuildStep::Clone)
        } else if name.starts_with("prepare-") {
            Some(BuildStep::Prepare)
        } else if name == containers::BUILD {
            Some(BuildStep::Build)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BuildStep::Clone => "clone",
            BuildStep::Prepare => "prepare",
            BuildStep::Build => "build",
        }
    }
}

impl fmt::Display for BuildStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// It ran longer than its timeout (the Job's `DeadlineExceeded`).
    TimedOut,
    /// A step was killed for using more memory than its limit.
    OutOfMemory,
    /// A step's image could not be pulled.
    ImagePull,
    /// A step's container could not be created as specified.
    ContainerConfig,
    /// A step exited with a non-zero status.
    StepFailed,
    /// The build ended without reporting an image digest.
    NoDigest,
    /// The Job was deleted (cancelled) before it finished.
    Deleted,
    /// Anything else Kubernetes reported (the reason as it said it).
    Other(String),
}

impl FailureReason {
    pub fn as_str(&self) -> &str {
        match self {
            FailureReason::TimedOut => "TimedOut",
            FailureReason::OutOfMemory => "OutOfMemory",
            FailureReason::ImagePull => "ImagePull",
            FailureReason::ContainerConfig => "ContainerConfig",
            FailureReason::StepFailed => "StepFailed",
            FailureReason::NoDigest => "NoDigest",
            FailureReason::Deleted => "Deleted",
            FailureReason::Other(reason) => reason,
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a build stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildOutcome {
    /// Not running yet: no pod, unscheduled, pulling, mounting...
    Pending { reason: String },
    /// A step's container is running.
    Running { step: BuildStep },
    /// The image was pushed; `digest` is `sha256:<64 hex>`.
    Succeeded { digest: String },
    Failed {
        /// The step that failed, when one is known.
        step: Option<BuildStep>,
        reason: FailureReason,
        exit_code: Option<i32>,
        /// What Kubernetes or the step said (a failed step's last log
        /// lines, through `FallbackToLogsOnError`).
        message: String,
    },
}

impl BuildOutcome {
    /// Succeeded or failed: nothing will change any more.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            BuildOutcome::Succeeded { .. } | BuildOutcome::Failed { .. }
        )
    }

    /// Reads a build's state from its Job and pods (pods of other Jobs are
    /// ignored). A timeout is the Job's `DeadlineExceeded`, whatever the
    /// pod shows. Otherwise the pod's containers are read in the order they
    /// run, and the Job's verdict (`Complete`, `Failed`) stands alone only
    /// when the pod cannot tell more: the Job and pod watches are not
    /// ordered, so a Job may say `Complete` before the pod update with the
    /// digest arrives; until then the pod's last reading is returned.
    pub fn from_job(job: &Job, pods: &[Pod]) -> BuildOutcome {
        let pod = newest_pod_of(job, pods);
        let reading = pod.map(read_pod);
        // A pod on its way out will not report anything new.
        let settling = pod.is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        let is_true = |types: &[&str]| {
            conditions
                .iter()
                .find(|c| types.contains(&c.type_.as_str()) && c.status == "True")
        };
        if let Some(failed) = is_true(&["Failed", "FailureTarget"]) {
            let reason = failed.reason.clone().unwrap_or_default();
            let message = failed.message.clone().unwrap_or_default();
            if reason == "DeadlineExceeded" {
                return BuildOutcome::Failed {
                    step: pod.and_then(current_step),
                    reason: FailureReason::TimedOut,
                    exit_code: None,
                    message,
                };
            }
            match reading {
                Some(failure @ BuildOutcome::Failed { .. }) => return failure,
                Some(before) if settling => return before,
                _ => {}
            }
            return BuildOutcome::Failed {
                step: pod.and_then(current_step),
                reason: FailureReason::Other(if reason.is_empty() {
                    "Failed".into()
                } else {
                    reason
                }),
                exit_code: None,
                message,
            };
        }
        if is_true(&["Complete", "SuccessCriteriaMet"]).is_some() {
            return match reading {
                Some(end) if end.is_terminal() => end,
                Some(before) if settling => before,
                _ => BuildOutcome::Failed {
                    step: Some(BuildStep::Build),
                    reason: FailureReason::NoDigest,
                    exit_code: None,
                    message:
                        "the Job completed but its pod, which carried the image digest, is gone"
                            .into(),
                },
            };
        }
        reading.unwrap_or_else(|| BuildOutcome::Pending {
            reason: "waiting for the Job to create the build pod".into(),
        })
    }
}

/// The Job's newest pod (a Job that never retries has one; a replaced or
/// evicted one may linger).
fn newest_pod_of<'a>(job: &Job, pods: &'a [Pod]) -> Option<&'a Pod> {
    let uid = job.metadata.uid.as_deref();
    pods.iter()
        .filter(|p| uid.is_none_or(|uid| belongs_to(p, uid)))
        .max_by_key(|p| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.name_any(),
            )
        })
}

fn belongs_to(pod: &Pod, job_uid: &str) -> bool {
    let by_owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == job_uid);
    let by_label = ["batch.kubernetes.io/controller-uid", "controller-uid"]
        .iter()
        .any(|k| pod.labels().get(*k).map(String::as_str) == Some(job_uid));
    by_owner || by_label
}

/// Container names of the pod in the order they run.
pub(crate) fn container_order(pod: &Pod) -> Vec<String> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c| c.name.clone())
        .collect()
}

/// A container's status, init or main.
pub(crate) fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

/// The step of the first container that has not finished successfully.
fn current_step(pod: &Pod) -> Option<BuildStep> {
    container_order(pod)
        .iter()
        .find(|name| {
            let done = container_status(pod, name)
                .and_then(|s| s.state.as_ref()?.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0);
            !done
        })
        .and_then(|name| BuildStep::of_container(name))
}

/// The pod's containers in the order they run: the first one not done
/// successfully decides. Waiting for the next container once an earlier one
/// has finished is part of running (the step it is about to start), not
/// pending.
fn read_pod(pod: &Pod) -> BuildOutcome {
    let mut started = false;
    for name in container_order(pod) {
        let step = BuildStep::of_container(&name);
        let Some(state) = container_status(pod, &name).and_then(|s| s.state.as_ref()) else {
            return pending(pod);
        };
        if let Some(t) = &state.terminated {
            let message = t.message.clone().unwrap_or_default();
            if t.exit_code != 0 {
                let reason = match t.reason.as_deref() {
                    Some("OOMKilled") => FailureReason::OutOfMemory,
                    _ => FailureReason::StepFailed,
                };
                return BuildOutcome::Failed {
                    step,
                    reason,
                    exit_code: Some(t.exit_code),
                    message: message.trim().to_owned(),
                };
            }
            if name == containers::BUILD {
                return match parse_digest(&message) {
                    Some(digest) => BuildOutcome::Succeeded { digest },
                    None => BuildOutcome::Failed {
                        step,
                        reason: FailureReason::NoDigest,
                        exit_code: Some(0),
                        message: "the build exited successfully but reported no image digest"
                            .into(),
                    },
                };
            }
            started = true;
            continue;
        }
        if state.running.is_some() {
            return match step {
                Some(step) => BuildOutcome::Running { step },
                None => pending(pod),
            };
        }
        if let Some(w) = &state.waiting {
            let reason = w.reason.clone().unwrap_or_default();
            let message = w.message.clone().unwrap_or_default();
            let failure = if IMAGE_PULL_FAILURES.contains(&reason.as_str()) {
                Some(FailureReason::ImagePull)
            } else if CONFIG_FAILURES.contains(&reason.as_str()) {
                Some(FailureReason::ContainerConfig)
            } else {
                None
            };
            return match (failure, step) {
                (Some(reason), _) => BuildOutcome::Failed {
                    step,
                    reason,
                    exit_code: None,
                    message,
                },
                (None, Some(step)) if started => BuildOutcome::Running { step },
                (None, _) => BuildOutcome::Pending {
                    reason: if reason.is_empty() {
                        format!("waiting for {name}")
                    } else {
                        reason
                    },
                },
            };
        }
        return pending(pod);
    }
    pending(pod)
}

/// Why a pod without a running container is not running: its phase, an
/// eviction, or the scheduler's verdict.
fn pending(pod: &Pod) -> BuildOutcome {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    if phase == "Failed" {
        return BuildOutcome::Failed {
            step: current_step(pod),
            reason: FailureReason::Other(
                status
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_else(|| "PodFailed".into()),
            ),
            exit_code: None,
            message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
        };
    }
    let unschedulable = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    let reason = match unschedulable {
        Some(c) => format!(
            "{}: {}",
            c.reason.as_deref().unwrap_or("Unschedulable"),
            c.message.as_deref().unwrap_or_default()
        ),
        None => phase.to_owned(),
    };
    BuildOutcome::Pending { reason }
}

/// The pushed image's digest from a build container's termination message:
/// buildctl's metadata JSON (`containerimage.digest`) or the CNB
/// lifecycle's report (`digest = "sha256:..."` under `[image]`). Only a
/// well-formed `sha256:<64 hex>` is returned.
pub fn parse_digest(message: &str) -> Option<String> {
    let candidate = match serde_json::from_str::<serde_json::Value>(message) {
        Ok(json) => json.get("containerimage.digest")?.as_str()?.to_owned(),
        Err(_) => message.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == "digest").then(|| value.trim().trim_matches('"').to_owned())
        })?,
    };
    is_digest(&candidate).then_some(candidate)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn digests_from_buildctl_and_lifecycle() {
        let json = format!(
            r#"{{"containerimage.config.digest":"sha256:00","containerimage.digest":"{DIGEST}","image.name":"r/p/s:1"}}"#
        );
        assert_eq!(parse_digest(&json).as_deref(), Some(DIGEST));
        let toml = format!("[image]\n  tags = [\"r/p/s:1\"]\n  digest = \"{DIGEST}\"\n");
        assert_eq!(parse_digest(&toml).as_deref(), Some(DIGEST));
        for bad in [
            r#"{"containerimage.digest":"sha256:abc"}"#,
            r#"{"containerimage.digest":"md5:9f86d081884c7d659a2feaa0c55ad015"}"#,
            "error: failed to solve",
            "",
        ] {
            assert_eq!(parse_digest(bad), None, "{bad}");
        }
        let upper = format!(r#"{{"containerimage.digest":"{}"}}"#, DIGEST.to_uppercase());
        assert_eq!(parse_digest(&upper), None);
    }

    #[test]
    fn steps_by_container_name() {
        assert_eq!(
            BuildStep::of_container("clone-fetch"),
            Some(BuildStep::Clone)
        );
        assert_eq!(
            BuildStep::of_container("prepare-plan"),
            Some(BuildStep::Prepare)
        );
        assert_eq!(BuildStep::of_container("build"), Some(BuildStep::Build));
        assert_eq!(BuildStep::of_container("sidecar"), None);
    }
}
