//! Ferry's job-run Jobs and their pods, kept live by watches.
//!
//! [`Cluster::watch_job_runs`] follows kube-runtime watchers on every Job
//! and Pod of the cluster labelled as a job run (`managed-by=ferry`,
//! `component=job`). Each event says which runs may have changed, and
//! [`JobRunView::runs`] reads where every run stands from the reflector
//! stores, the same answer [`Cluster::job_runs`] gives from two LISTs.
//! Nothing here polls or writes.

use std::collections::BTreeSet;

use futures::StreamExt as _;
use futures::stream::BoxStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::Store;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::jobrun::{JOB_RUN_ID, RunStatus, run_statuses, runs_selector};
use crate::status::{Affected, apply};

/// What a watch event means for the runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunsChange {
    /// The Jobs or pods of these runs changed.
    Changed(BTreeSet<Uuid>),
    /// Both watches (re)listed everything: any run may have changed.
    Resynced,
}

enum Change {
    Job(Box<Event<Job>>),
    Pod(Box<Event<Pod>>),
}

impl Cluster {
    /// Watches every job-run Job and pod of the cluster (needs list/watch
    /// on Jobs and pods cluster-wide). Watch errors are retried with
    /// backoff and logged.
    pub fn watch_job_runs(&self) -> JobRunWatch {
        let config = watcher::Config::default().labels(&runs_selector());
        let client = self.client().clone();
        let jobs = watcher::watcher(Api::<Job>::all(client.clone()), config.clone())
            .default_backoff()
            .map(|e| e.map(|e| Change::Job(Box::new(e))))
            .boxed();
        let pods = watcher::watcher(Api::<Pod>::all(client), config)
            .default_backoff()
            .map(|e| e.map(|e| Change::Pod(Box::new(e))))
            .boxed();
        JobRunWatch {
            changes: futures::stream::select_all([jobs, pods]).boxed(),
            jobs: Writer::default(),
            pods: Writer::default(),
            listed: [false; 2],
        }
    }
}

/// The live state behind [`Cluster::watch_job_runs`].
pub struct JobRunWatch {
    changes: BoxStream<'static, Result<Change, watcher::Error>>,
    jobs: Writer<Job>,
    pods: Writer<Pod>,
    /// Which of the two watches have listed once.
    listed: [bool; 2],
}

impl JobRunWatch {
    /// The next change. Waits until both watches have listed once (the
    /// first answer is [`RunsChange::Resynced`]). `None` only if the
    /// watches end, which they do not unless the client is dropped.
    pub async fn next(&mut self) -> Option<RunsChange> {
        loop {
            let change = match self.changes.next().await? {
                Ok(change) => change,
                Err(err) => {
                    tracing::warn!(error = %err, "job-run watch failed; retrying");
                    continue;
                }
            };
            let (index, affected) = match &change {
                Change::Job(event) => (0, apply(&mut self.jobs, event, JOB_RUN_ID)),
                Change::Pod(event) => (1, apply(&mut self.pods, event, JOB_RUN_ID)),
            };
            let was_listed = self.listed.iter().all(|l| *l);
            match affected {
                Affected::Objects(ids) if was_listed && !ids.is_empty() => {
                    let ids: BTreeSet<Uuid> = ids
                        .iter()
                        .filter_map(|id| Uuid::parse_str(id).ok())
                        .collect();
                    if !ids.is_empty() {
                        return Some(RunsChange::Changed(ids));
                    }
                }
                Affected::Objects(_) | Affected::RelistStarted => {}
                Affected::RelistDone => {
                    self.listed[index] = true;
                    if self.listed.iter().all(|l| *l) {
                        return Some(RunsChange::Resynced);
                    }
                }
            }
        }
    }

    /// A read handle on the watched objects (it follows later events).
    pub fn view(&self) -> JobRunView {
        JobRunView {
            jobs: self.jobs.as_reader(),
            pods: self.pods.as_reader(),
        }
    }
}

/// Read access to [`JobRunWatch`]'s objects.
#[derive(Clone)]
pub struct JobRunView {
    jobs: Store<Job>,
    pods: Store<Pod>,
}

impl JobRunView {
    /// Every job-run Job on the cluster with where it stands.
    pub fn runs(&self) -> Vec<RunStatus> {
        let jobs = self.jobs.state();
        let pods = self.pods.state();
        run_statuses(jobs.iter().map(|j| &**j), pods.iter().map(|p| &**p))
    }
}
