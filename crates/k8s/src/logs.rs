//! A service's pod logs and Kubernetes events.
//!
//! [`Cluster::stream_logs`] reads every pod of one service (the pods
//! carrying `app.kubernetes.io/managed-by=ferry` and its
//! `ferry.dev/service-id`) through the kubelet's log endpoint and interleaves
//! their lines. Following, it watches the pods, so replicas that appear
//! during a rollout join and a restarted container is read again. All the
//! Kubernetes streams live inside the one returned future: dropping it
//! closes every one of them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures::io::AsyncBufRead;
use futures::stream::{BoxStream, SelectAll};
use futures::{AsyncBufReadExt as _, StreamExt};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event as WatchEvent};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::cluster::Cluster;
use crate::error::Result;
use crate::render::{CONTAINER_NAME, DATA_VOLUME, labels};

/// At most this many pods are read at once; more are skipped (and logged)
/// until a stream ends.
pub const MAX_PODS: usize = 50;
/// Longer lines are cut here and end with [`TRUNCATED`].
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Appended to a cut line.
pub const TRUNCATED: &str = " [line truncated by ferry]";

/// Which lines to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub follow: bool,
    pub since_seconds: Option<i64>,
    pub tail_lines: Option<i64>,
    pub previous: bool,
    /// Empty: the service's main container.
    pub container: String,
    /// Only this pod (already checked to be one of the service's).
    pub pod: Option<String>,
}

/// One line of one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodLogLine {
    pub pod: String,
    pub container: String,
    pub line: String,
    /// From the kubelet's timestamp prefix.
    pub time: Option<DateTime<Utc>>,
}

/// One Kubernetes event about a service's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEvent {
    pub type_: String,
    pub reason: String,
    pub message: String,
    /// `Kind/name`.
    pub object: String,
    pub count: i32,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    pub summary: String,
}

/// The label selector of one service's pods.
pub fn service_selector(service_id: Uuid) -> String {
    format!(
        "{}={},{}={service_id}",
        labels::MANAGED_BY,
        labels::FERRY,
        labels::SERVICE_ID
    )
}

impl Cluster {
    /// The names of the service's pods, sorted.
    pub async fn service_pods(&self, namespace: &str, service_id: Uuid) -> Result<Vec<String>> {
        let pods: Api<Pod> = Api::namespaced(self.client().clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(&service_selector(service_id)))
            .await?;
        let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
        names.sort();
        Ok(names)
    }

    /// Sends the service's log lines (each through `wrap`) to `tx` until
    /// they end (without follow) or `tx` closes. A pod whose log cannot be
    /// read is skipped (logged): the others go on.
    pub async fn stream_logs<T>(
        &self,
        namespace: &str,
        service_id: Uuid,
        query: &LogQuery,
        tx: &mpsc::Sender<T>,
        wrap: impl Fn(PodLogLine) -> T,
    ) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client().clone(), namespace);
        let selector = service_selector(service_id);
        let fields = query.pod.as_ref().map(|pod| format!("metadata.name={pod}"));
        let container = container_of(query);
        let mut streams: SelectAll<BoxStream<'static, PodLogLine>> = SelectAll::new();
        // (pod uid, restart count): a restarted container is read again.
        let mut started: HashSet<(String, i32)> = HashSet::new();
        let mut start = |pod: &Pod, streams: &mut SelectAll<_>| {
            let Some(instance) = readable_instance(pod, &container, query.previous) else {
                return;
            };
            if started.contains(&instance) {
                return;
            }
            if streams.len() >= MAX_PODS {
                tracing::warn!(pod = %pod.name_any(), max = MAX_PODS, "too many pods to stream; skipped");
                return;
            }
            started.insert(instance);
            streams.push(pod_lines(
                api.clone(),
                pod.name_any(),
                container.clone(),
                query,
            ));
        };

        let mut pods: BoxStream<'static, _> = if query.follow {
            let mut config = watcher::Config::default().labels(&selector);
            if let Some(fields) = &fields {
                config = config.fields(fields);
            }
            watcher::watcher(api.clone(), config)
                .default_backoff()
                .boxed()
        } else {
            let mut params = ListParams::default().labels(&selector);
            if let Some(fields) = &fields {
                params = params.fields(fields);
            }
            for pod in api.list(&params).await? {
                start(&pod, &mut streams);
            }
            futures::stream::pending().boxed()
        };
        loop {
            if !query.follow && streams.is_empty() {
                return Ok(());
            }
            tokio::select! {
                event = pods.next() => match event {
                    Some(Ok(WatchEvent::Apply(pod) | WatchEvent::InitApply(pod))) => {
                        start(&pod, &mut streams);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => tracing::debug!(error = %err, "pod watch failed; retrying"),
                    None => return Ok(()),
                },
                // None: the last pod's log ended (the loop decides what next).
                line = streams.next(), if !streams.is_empty() => {
                    if let Some(line) = line
                        && tx.send(wrap(line)).await.is_err()
                    {
                        return Ok(());
                    }
                }
                () = tx.closed() => return Ok(()),
            }
        }
    }

    /// The core/v1 events of the service's objects: its workload (named
    /// `workload`), that workload's ReplicaSets and pods (also gone ones,
    /// by their generated names), and `claims`. Oldest first, the last
    /// `limit` of them.
    pub async fn service_events(
        &self,
        namespace: &str,
        service_id: Uuid,
        workload: &str,
        claims: &[String],
        limit: usize,
    ) -> Result<Vec<ServiceEvent>> {
        let pods = self.service_pods(namespace, service_id).await?;
        let api: Api<Event> = Api::namespaced(self.client().clone(), namespace);
        let mut events: Vec<ServiceEvent> = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|e| {
                let kind = e.involved_object.kind.as_deref().unwrap_or_default();
                let name = e.involved_object.name.as_deref().unwrap_or_default();
                concerns(workload, &pods, claims, kind, name)
            })
            .map(service_event)
            .collect();
        events.sort_by_key(|e| e.last_seen);
        let skip = events.len().saturating_sub(limit);
        events.drain(..skip);
        Ok(events)
    }
}

fn container_of(query: &LogQuery) -> String {
    if query.container.is_empty() {
        CONTAINER_NAME.to_owned()
    } else {
        query.container.clone()
    }
}

/// The (uid, restart count) of the pod's container when it has logs to
/// read: started (running or terminated), or, for `previous`, restarted.
fn readable_instance(pod: &Pod, container: &str, previous: bool) -> Option<(String, i32)> {
    let status = pod.status.as_ref()?;
    let uid = pod.metadata.uid.clone().unwrap_or_else(|| pod.name_any());
    let Some(c) = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == container)
    else {
        // No container status yet: a pod past Pending has logs.
        let phase = status.phase.as_deref().unwrap_or("Pending");
        return (phase != "Pending").then_some((uid, 0));
    };
    let state = c.state.as_ref();
    let started = state.is_some_and(|s| s.running.is_some() || s.terminated.is_some());
    let ok = if previous {
        c.last_state
            .as_ref()
            .is_some_and(|s| s.terminated.is_some())
    } else {
        started
    };
    ok.then_some((uid, c.restart_count))
}

/// One pod's lines as a stream that ends with the pod's log.
pub(crate) fn pod_lines(
    api: Api<Pod>,
    pod: String,
    container: String,
    query: &LogQuery,
) -> BoxStream<'static, PodLogLine> {
    let params = LogParams {
        container: Some(container.clone()),
        follow: query.follow,
        previous: query.previous,
        since_seconds: query.since_seconds,
        tail_lines: query.tail_lines,
        timestamps: true,
        ..LogParams::default()
    };
    futures::stream::once(async move {
        match api.log_stream(&pod, &params).await {
            Ok(reader) => Some((reader, pod, container)),
            Err(err) => {
                tracing::warn!(%pod, error = %err, "cannot read the pod's log");
                None
            }
        }
    })
    .filter_map(std::future::ready)
    .flat_map(|(reader, pod, container)| {
        futures::stream::unfold(Box::pin(reader), |mut reader| async move {
            match read_line(&mut reader).await {
                Ok(Some(bytes)) => Some((bytes, reader)),
                Ok(None) => None,
                Err(err) => {
                    tracing::debug!(error = %err, "pod log stream ended");
                    None
                }
            }
        })
        .map(move |bytes| {
            let (time, line) = split_timestamp(&bytes);
            PodLogLine {
                pod: pod.clone(),
                container: container.clone(),
                line,
                time,
            }
        })
    })
    .boxed()
}

/// The next line without its newline, at most [`MAX_LINE_BYTES`] (then cut
/// and marked); the rest of a long line is read and dropped, never held.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok((!line.is_empty() || cut).then(|| finish(line, cut)));
        }
        let (chunk, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        cut |= chunk.len() > room;
        let consumed = done.unwrap_or(buf.len());
        reader.consume_unpin(consumed);
        if done.is_some() {
            return Ok(Some(finish(line, cut)));
        }
    }
}

fn finish(mut line: Vec<u8>, cut: bool) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if cut {
        line.extend_from_slice(TRUNCATED.as_bytes());
    }
    line
}

/// Splits the kubelet's `2024-05-01T10:00:00.123456789Z ` prefix off.
pub fn split_timestamp(bytes: &[u8]) -> (Option<DateTime<Utc>>, String) {
    let text = String::from_utf8_lossy(bytes);
    if let Some((first, rest)) = text.split_once(' ')
        && let Ok(time) = DateTime::parse_from_rfc3339(first)
    {
        return (Some(time.with_timezone(&Utc)), rest.to_owned());
    }
    (None, text.into_owned())
}

/// Whether an event's object (`kind`, `name`) is one of the service's.
fn concerns(workload: &str, pods: &[String], claims: &[String], kind: &str, name: &str) -> bool {
    let suffix = name
        .strip_prefix(workload)
        .and_then(|s| s.strip_prefix('-'));
    match kind {
        "Deployment" | "StatefulSet" => name == workload,
        // `<deployment>-<pod-template-hash>`
        "ReplicaSet" => suffix.is_some_and(|s| generated(s, 1..=10)),
        // Live ones, or `<replicaset>-<5 random>` / `<statefulset>-<ordinal>`.
        "Pod" => {
            pods.iter().any(|p| p == name)
                || suffix.is_some_and(|s| {
                    is_ordinal(s)
                        || s.split_once('-').is_some_and(|(hash, random)| {
                            generated(hash, 1..=10) && generated(random, 5..=5)
                        })
                })
        }
        // Mounted volumes, and a database's `data-<statefulset>-<ordinal>`.
        "PersistentVolumeClaim" => {
            claims.iter().any(|c| c == name)
                || name
                    .strip_prefix(DATA_VOLUME)
                    .and_then(|n| n.strip_prefix('-'))
                    .and_then(|n| n.strip_prefix(workload))
                    .and_then(|n| n.strip_prefix('-'))
                    .is_some_and(is_ordinal)
        }
        _ => false,
    }
}

/// Made by Kubernetes' name generator (vowel-free alphabet), so that
/// `web`'s pods are not confused with those of a `web-api`.
fn generated(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    len.contains(&s.len()) && s.bytes().all(|b| ALPHABET.contains(&b))
}

fn is_ordinal(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn service_event(e: Event) -> ServiceEvent {
    let reason = e.reason.unwrap_or_default();
    let message = e.message.unwrap_or_default();
    let first_seen = e
        .first_timestamp
        .map(|t| t.0)
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let last_seen = e
        .last_timestamp
        .map(|t| t.0)
        .or(e
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0)))
        .or(e.event_time.as_ref().map(|t| t.0))
        .or(first_seen);
    let count = e
        .count
        .or(e.series.as_ref().and_then(|s| s.count))
        .unwrap_or(1);
    ServiceEvent {
        summary: summary(&reason, &message),
        type_: e.type_.unwrap_or_else(|| "Normal".into()),
        object: format!(
            "{}/{}",
            e.involved_object.kind.unwrap_or_default(),
            e.involved_object.name.unwrap_or_default()
        ),
        reason,
        message,
        count,
        first_seen: first_seen.and_then(to_chrono),
        last_seen: last_seen.and_then(to_chrono),
    }
}

pub(crate) fn to_chrono(t: k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), u32::try_from(t.subsec_nanosecond()).ok()?)
}

/// An event's reason and message in plain words.
pub fn summary(reason: &str, message: &str) -> String {
    let pull = message.contains("pull") || message.contains("image");
    let words = match reason {
        "ErrImagePull" | "ImagePullBackOff" | "InspectFailed" | "ErrImageNeverPull" => {
            "the image could not be pulled (check its name, tag and registry credentials)"
        }
        "Failed" if pull => {
            "the image could not be pulled (check its name, tag and registry credentials)"
        }
        "BackOff" if pull => "waiting to retry pulling the image",
        "BackOff" | "CrashLoopBackOff" => {
            "the container keeps crashing and is restarted with growing delays (crash loop); see its logs, with --previous for the last run"
        }
        "OOMKilling" | "OOMKilled" => {
            "the container ran out of memory and was killed; raise its memory limit or use less"
        }
        "Unhealthy" => "a health check failed",
        "FailedScheduling" => {
            "no node can run the pod yet (not enough CPU or memory, or a volume or quota constraint)"
        }
        "FailedMount" | "FailedAttachVolume" => "a volume could not be mounted",
        "FailedCreate" => "the pod could not be created (often the project's quota)",
        "Killing" => "the container is being stopped",
        "Pulling" => "pulling the image",
        "Pulled" => "the image was pulled",
        "Created" => "the container was created",
        "Started" => "the container started",
        "Scheduled" => "the pod was placed on a node",
        "ScalingReplicaSet" => "the rollout changed the number of replicas",
        "SuccessfulCreate" => "a pod was created",
        "SuccessfulDelete" => "a pod was deleted",
        "Failed" => "something failed",
        _ => return format!("{reason}: {message}"),
    };
    if message.is_empty() {
        words.to_owned()
    } else {
        format!("{words}: {message}")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        let mut reader = futures::io::BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        while let Some(line) = read_line(&mut reader).await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        assert_eq!(
            lines(b"a\r\nbc\n\nlast").await,
            [&b"a"[..], b"bc", b"", b"last"]
        );
        let long = [vec![b'x'; MAX_LINE_BYTES + 10], b"\nnext\n".to_vec()].concat();
        let got = lines(&long).await;
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE_BYTES + TRUNCATED.len());
        assert!(got[0].ends_with(TRUNCATED.as_bytes()));
        assert_eq!(got[1], b"next");
    }

    #[test]
    fn kubelet_timestamps_are_parsed() {
        let (time, line) = split_timestamp(b"2024-05-01T10:00:00.123456789Z hello world");
        assert_eq!(line, "hello world");
        assert_eq!(time.unwrap().timestamp_subsec_nanos(), 123_456_789);
        assert_eq!(
            split_timestamp(b"no stamp here"),
            (None, "no stamp here".into())
        );
        assert_eq!(split_timestamp(b"\xff ok").1, "\u{fffd} ok");
    }

    #[test]
    fn events_concern_only_the_services_objects() {
        let pods = ["web-0".to_owned()];
        let claims = ["vol-uploads".to_owned()];
        let yes = |kind, name| concerns("web", &pods, &claims, kind, name);
        assert!(yes("Deployment", "web") && yes("StatefulSet", "web"));
        assert!(yes("ReplicaSet", "web-7d9f8") && yes("Pod", "web-7d9f8-x2b4z"));
        assert!(yes("Pod", "web-3") && yes("Pod", "web-0"));
        assert!(yes("PersistentVolumeClaim", "vol-uploads"));
        assert!(yes("PersistentVolumeClaim", "data-web-0"));
        for (kind, name) in [
            ("Deployment", "web-api"),
            ("ReplicaSet", "web-api-7d9f8"),
            ("Pod", "web-api-7d9f8-x2b4z"),
            ("Pod", "web-api-x2b4z"),
            ("Pod", "web-x-0"),
            ("PersistentVolumeClaim", "data-web-api-0"),
            ("Secret", "web"),
        ] {
            assert!(!yes(kind, name), "{kind}/{name}");
        }
    }

    #[test]
    fn summaries_are_plain_words() {
        assert!(summary("Failed", "Failed to pull image \"x\"").starts_with("the image could not"));
        assert!(summary("BackOff", "Back-off restarting failed container").contains("crash loop"));
        assert!(summary("BackOff", "Back-off pulling image \"x\"").starts_with("waiting to retry"));
        assert_eq!(summary("Odd", "thing"), "Odd: thing");
    }
}
