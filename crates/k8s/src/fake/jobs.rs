//! The fake's Job controller and kubelet, just enough for build lifecycle
//! tests.
//!
//! Creating a Job creates its one pod (`<job>-<5 chars>`, the template's
//! labels plus `job-name`, `batch.kubernetes.io/job-name`,
//! `controller-uid` and `batch.kubernetes.io/controller-uid`, an owner
//! reference to the Job), every container waiting (`PodInitializing`). A
//! test then drives the containers with [`FakeCluster::set_container_state`];
//! the pod's phase and the Job's status and conditions follow as the real
//! controllers set them (`restartPolicy: Never`, `backoffLimit: 0`).
//! [`FakeCluster::fail_job`] fails the Job as its controller does on
//! `activeDeadlineSeconds` (`DeadlineExceeded`, pods deleted).

use serde_json::{Value, json};

use super::{FakeCluster, Key, State, now};

/// Labels the Job controller puts on its pods.
pub const JOB_NAME_LABELS: [&str; 2] = ["job-name", "batch.kubernetes.io/job-name"];
pub const CONTROLLER_UID_LABELS: [&str; 2] =
    ["controller-uid", "batch.kubernetes.io/controller-uid"];

const JOBS: &str = "batch/v1/jobs";
const PODS: &str = "v1/pods";

/// What a test makes a container do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeContainerState {
    Waiting {
        reason: String,
        message: String,
    },
    Running,
    /// Exited. `message` is the termination message (what the container
    /// wrote to its termination log, or its log tail on error).
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
    },
}

impl FakeContainerState {
    /// Exited 0 (`Completed`) with this termination message.
    pub fn succeeded(message: impl Into<String>) -> Self {
        FakeContainerState::Terminated {
            exit_code: 0,
            reason: "Completed".into(),
            message: message.into(),
        }
    }

    /// Exited non-zero (`Error`) with this termination message.
    pub fn failed(exit_code: i32, message: impl Into<String>) -> Self {
        FakeContainerState::Terminated {
            exit_code,
            reason: "Error".into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            FakeContainerState::Waiting { reason, message } => {
                json!({ "waiting": { "reason": reason, "message": message } })
            }
            FakeContainerState::Running => json!({ "running": { "startedAt": now() } }),
            FakeContainerState::Terminated {
                exit_code,
                reason,
                message,
            } => json!({ "terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "message": message,
                "startedAt": now(),
                "finishedAt": now(),
            }}),
        }
    }
}

impl FakeCluster {
    /// The pods of a Job (by its `job-name` label).
    pub fn job_pods(&self, namespace: &str, job: &str) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((r, ns, _), pod)| {
                r == PODS && ns == namespace && pod["metadata"]["labels"]["job-name"] == job
            })
            .map(|(_, pod)| pod.clone())
            .collect()
    }

    /// The name of a Job's (first) pod.
    pub fn job_pod_name(&self, namespace: &str, job: &str) -> Option<String> {
        self.job_pods(namespace, job)
            .first()
            .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned))
    }

    /// Sets one container's state (init or main) as the kubelet would: the
    /// pod's phase follows, a terminated container's log ends, and the
    /// owning Job's status follows the pod. Returns false when there is no
    /// such pod or container.
    pub fn set_container_state(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        state: FakeContainerState,
    ) -> bool {
        let key: Key = (PODS.into(), namespace.into(), pod.into());
        let mut s = self.lock();
        let Some(mut obj) = s.objects.get(&key).cloned() else {
            return false;
        };
        let mut found = false;
        for list in ["initContainerStatuses", "containerStatuses"] {
            if let Some(statuses) = obj["status"][list].as_array_mut() {
                for status in statuses.iter_mut().filter(|c| c["name"] == container) {
                    status["state"] = state.to_json();
                    status["ready"] =
                        json!(list == "containerStatuses" && state == FakeContainerState::Running);
                    found = true;
                }
            }
        }
        if !found {
            return false;
        }
        obj["status"]["phase"] = json!(pod_phase(&obj));
        let stored = s.store(key, obj, "MODIFIED");
        if matches!(state, FakeContainerState::Terminated { .. }) {
            s.finish_log(namespace, pod, container);
        }
        s.sync_job(namespace, &stored);
        true
    }

    /// Fails a Job as its controller does when `activeDeadlineSeconds`
    /// passes (`reason` `DeadlineExceeded`): conditions first, then its
    /// pods are deleted.
    pub fn fail_job(&self, namespace: &str, job: &str, reason: &str, message: &str) -> bool {
        let key: Key = (JOBS.into(), namespace.into(), job.into());
        let mut s = self.lock();
        let Some(mut obj) = s.objects.get(&key).cloned() else {
            return false;
        };
        obj["status"] = failed_status(reason, message);
        s.store(key, obj, "MODIFIED");
        let pods: Vec<Key> = s
            .objects
            .iter()
            .filter(|((r, ns, _), pod)| {
                r == PODS && ns == namespace && pod["metadata"]["labels"]["job-name"] == job
            })
            .map(|(k, _)| k.clone())
            .collect();
        for pod in pods {
            s.remove(&pod);
        }
        true
    }
}

impl State {
    /// A new Job: its initial status, and the pod the controller creates.
    pub(super) fn start_job(key: &Key, job: &mut Value) -> Value {
        job["status"] = json!({ "active": 1, "ready": 0, "startTime": now() });
        let name = &key.2;
        let uid = job["metadata"]["uid"].clone();
        let template = &job["spec"]["template"];
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        for k in JOB_NAME_LABELS {
            labels[k] = json!(name);
        }
        for k in CONTROLLER_UID_LABELS {
            labels[k] = uid.clone();
        }
        let waiting = |c: &Value| {
            json!({
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": false,
                "restartCount": 0,
                "state": { "waiting": { "reason": "PodInitializing" } },
            })
        };
        let statuses = |list: &str| -> Vec<Value> {
            template["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .map(waiting)
                .collect()
        };
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{name}-{}", random_suffix()),
                "namespace": key.1,
                "labels": labels,
                "ownerReferences": [{
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": template["spec"],
            "status": {
                "phase": "Pending",
                "initContainerStatuses": statuses("initContainers"),
                "containerStatuses": statuses("containers"),
            },
        })
    }

    /// The Job controller's reaction to its pod's phase.
    fn sync_job(&mut self, namespace: &str, pod: &Value) {
        let Some(job) = pod["metadata"]["labels"]["job-name"].as_str() else {
            return;
        };
        let key: Key = (JOBS.into(), namespace.into(), job.into());
        let Some(mut obj) = self.objects.get(&key).cloned() else {
            return;
        };
        let finished = obj["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Complete" || c["type"] == "Failed")
        });
        if finished {
            return;
        }
        obj["status"] = match pod["status"]["phase"].as_str() {
            Some("Succeeded") => json!({
                "succeeded": 1,
                "active": 0,
                "startTime": obj["status"]["startTime"],
                "completionTime": now(),
                "conditions": [
                    condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                    condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
                ],
            }),
            Some("Failed") => failed_status(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
            Some("Running") => {
                json!({ "active": 1, "ready": 1, "startTime": obj["status"]["startTime"] })
            }
            _ => return,
        };
        self.store(key, obj, "MODIFIED");
    }
}

fn condition(type_: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": now(),
        "lastTransitionTime": now(),
    })
}

fn failed_status(reason: &str, message: &str) -> Value {
    json!({
        "failed": 1,
        "active": 0,
        "conditions": [
            condition("FailureTarget", reason, message),
            condition("Failed", reason, message),
        ],
    })
}

/// A pod's phase under `restartPolicy: Never`.
fn pod_phase(pod: &Value) -> &'static str {
    let list = |name: &str| pod["status"][name].as_array().cloned().unwrap_or_default();
    let (init, main) = (list("initContainerStatuses"), list("containerStatuses"));
    let exit = |c: &Value| c["state"]["terminated"]["exitCode"].as_i64();
    if init
        .iter()
        .chain(&main)
        .any(|c| exit(c).is_some_and(|e| e != 0))
    {
        "Failed"
    } else if !main.is_empty() && main.iter().all(|c| exit(c) == Some(0)) {
        "Succeeded"
    } else if init.iter().all(|c| exit(c) == Some(0))
        && main.iter().any(|c| !c["state"]["running"].is_null())
    {
        "Running"
    } else {
        "Pending"
    }
}

/// Five characters of Kubernetes' name generator alphabet.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}
