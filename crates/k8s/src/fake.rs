//! An in-memory Kubernetes API server for tests (feature `testing`).
//!
//! ```ignore
//! let fake = FakeCluster::new();
//! let client = kube::Client::new(fake.service(), "default"); // or fake.client()
//! ```
//!
//! It stores objects per (resource, namespace, name) and understands what
//! [`crate::Cluster`] and kube-runtime's watcher send: server-side apply
//! (approximated: the applied top-level fields replace the stored ones,
//! labels and annotations are replaced, pod-template annotations set by
//! other managers are kept), JSON merge patch (also on `/scale`), create,
//! replace, GET, LIST and WATCH with equality label selectors and
//! `metadata.name`/`metadata.namespace` field selectors, DELETE of one
//! object or a labelled collection. It sets uid, resourceVersion (one
//! global counter), creationTimestamp and `metadata.generation` (1 on
//! create, +1 when `spec` changes).
//!
//! A simulated controller sets the status of Deployments and StatefulSets
//! after every write, according to the [`Behavior`] of the workload's name
//! (or the default, [`Behavior::Ready`]).
//!
//! Jobs get a simulated Job controller and kubelet ([`FakeContainerState`]): creating a
//! Job creates its pod, tests drive its containers, and the Job's status
//! follows. Deleting an object deletes its dependents (by owner reference)
//! unless the propagation policy is `Orphan`, which is a Job's default when
//! the request names none (as the real API does for batch/v1 Jobs).
//! Delete preconditions (`uid`) are checked.
//!
//! Pod logs (`GET .../pods/{name}/log` with `container`, `follow`,
//! `tailLines`, `sinceSeconds`, `timestamps`, `previous`) are served from
//! lines a test appends with [`FakeCluster::append_log`]; a following
//! request receives later lines until [`FakeCluster::end_log`] or the pod's
//! deletion. [`FakeCluster::open_log_streams`] and
//! [`FakeCluster::open_watches`] count the connections a client still holds.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::StreamExt;
use futures::future::BoxFuture;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, BodyStream, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::render::labels;

mod jobs;

pub use jobs::{CONTROLLER_UID_LABELS, FakeContainerState, JOB_NAME_LABELS};

/// Response body of the fake: a whole JSON document, or a watch stream.
pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the simulated controller does with a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Every replica becomes updated, ready and available at once.
    Ready,
    /// A pod of the rollout waits with `ImagePullBackOff`; never ready.
    ImagePullBackOff,
    /// A pod of the rollout waits with `CrashLoopBackOff`; never ready.
    CrashLoop,
    /// The controller observes the generation but nothing becomes ready.
    Hang,
}

/// One request the fake received.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters (`fieldManager`, `force`, `labelSelector`...).
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    /// The body when it was JSON (or YAML).
    pub body: Option<Value>,
}

impl RecordedRequest {
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }

    pub fn field_manager(&self) -> Option<&str> {
        self.param("fieldManager")
    }

    /// A server-side apply (PATCH with `application/apply-patch+yaml`).
    pub fn is_apply(&self) -> bool {
        self.method == "PATCH" && self.content_type.as_deref() == Some(APPLY_PATCH)
    }
}

const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// The in-memory API server. Cheap to clone (shared state).
#[derive(Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("FakeCluster")
            .field("objects", &state.objects.len())
            .field("resource_version", &state.rv)
            .finish()
    }
}

/// (group/version/resource, namespace or "", name)
type Key = (String, String, String);

struct State {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: Vec<Change>,
    watches: Vec<Watch>,
    behaviors: HashMap<String, Behavior>,
    default_behavior: Behavior,
    requests: Vec<RecordedRequest>,
    logs: BTreeMap<LogKey, ContainerLog>,
    /// Whether metrics.k8s.io is served (as with metrics-server).
    metrics_api: bool,
}

/// (namespace, pod, container)
type LogKey = (String, String, String);

/// One container's log: the current instance's lines, the previous
/// (terminated) instance's, and the requests following it.
#[derive(Default)]
struct ContainerLog {
    lines: Vec<LogEntry>,
    previous: Vec<LogEntry>,
    followers: Vec<Follower>,
    /// The container exited and will not restart (a Job's pod): its lines
    /// stay readable, and following them ends at once.
    finished: bool,
}

/// A `follow=true` log request.
struct Follower {
    tx: mpsc::UnboundedSender<Bytes>,
    timestamps: bool,
}

/// One line a container wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub time: chrono::DateTime<chrono::Utc>,
    pub line: String,
}

impl LogEntry {
    fn render(&self, timestamps: bool) -> Bytes {
        if timestamps {
            let time = self
                .time
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            Bytes::from(format!("{time} {}\n", self.line))
        } else {
            Bytes::from(format!("{}\n", self.line))
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State {
            objects: BTreeMap::new(),
            rv: 0,
            history: Vec::new(),
            watches: Vec::new(),
            metrics_api: false,
            behaviors: HashMap::new(),
            default_behavior: Behavior::Ready,
            requests: Vec::new(),
            logs: BTreeMap::new(),
        }
    }
}

struct Change {
    rv: u64,
    resource: String,
    namespace: String,
    type_: &'static str,
    object: Value,
}

struct Watch {
    filter: Filter,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct Filter {
    resource: String,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    Exists(String),
    NotExists(String),
}

impl Filter {
    fn matches(&self, resource: &str, namespace: &str, obj: &Value) -> bool {
        if resource != self.resource {
            return false;
        }
        if let Some(ns) = &self.namespace
            && ns != namespace
        {
            return false;
        }
        let labels = &obj["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let field = |k: &str| {
            k.split('.')
                .try_fold(obj, |v, seg| v.get(seg))
                .and_then(Value::as_str)
        };
        self.labels.iter().all(|r| r.matches(label)) && self.fields.iter().all(|r| r.matches(field))
    }
}

impl Requirement {
    fn parse_all(selector: Option<&String>) -> Vec<Requirement> {
        let Some(selector) = selector else {
            return Vec::new();
        };
        selector
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|term| {
                if let Some((k, v)) = term.split_once("!=") {
                    Requirement::NotEq(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    Requirement::Eq(k.trim().into(), v.trim().into())
                } else if let Some(k) = term.strip_prefix('!') {
                    Requirement::NotExists(k.trim().into())
                } else {
                    Requirement::Exists(term.into())
                }
            })
            .collect()
    }

    fn matches<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        match self {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        }
    }
}

/// What a request path addresses.
struct Target {
    group_version: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        let (group_version, rest) = if let Some(rest) = path.strip_prefix("/api/v1/") {
            ("v1".to_owned(), rest)
        } else {
            let rest = path.strip_prefix("/apis/")?;
            let mut it = rest.splitn(3, '/');
            let (group, version, rest) = (it.next()?, it.next()?, it.next().unwrap_or_default());
            (format!("{group}/{version}"), rest)
        };
        let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let owned = |i: usize| segs.get(i).map(|s| (*s).to_owned());
        if segs.first() == Some(&"namespaces") && segs.len() >= 3 {
            Some(Target {
                group_version,
                resource: segs[2].to_owned(),
                namespace: owned(1),
                name: owned(3),
                subresource: owned(4),
            })
        } else {
            Some(Target {
                group_version,
                resource: owned(0)?,
                namespace: None,
                name: owned(1),
                subresource: owned(2),
            })
        }
    }

    fn key_resource(&self) -> String {
        format!("{}/{}", self.group_version, self.resource)
    }

    fn namespace(&self) -> String {
        self.namespace.clone().unwrap_or_default()
    }

    fn kind(&self) -> String {
        kind_of(&self.resource)
    }
}

fn kind_of(resource: &str) -> String {
    match resource {
        "namespaces" => "Namespace",
        "secrets" => "Secret",
        "services" => "Service",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "pods" => "Pod",
        "configmaps" => "ConfigMap",
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "networkpolicies" => "NetworkPolicy",
        "resourcequotas" => "ResourceQuota",
        "limitranges" => "LimitRange",
        "jobs" => "Job",
        other => other,
    }
    .to_owned()
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn status_body(code: StatusCode, reason: &str, message: impl Into<String>) -> Response<FakeBody> {
    json_response(
        code,
        &json!({
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": message.into(),
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

fn json_response(code: StatusCode, value: &Value) -> Response<FakeBody> {
    let mut resp = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(t) = target {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

impl FakeCluster {
    pub fn new() -> Self {
        FakeCluster::default()
    }

    /// The `tower::Service` to hand to `kube::Client::new`.
    pub fn service(&self) -> FakeService {
        FakeService {
            cluster: self.clone(),
        }
    }

    /// A client talking to this fake (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Behaviour of the workload named `name` (any namespace, either kind).
    pub fn set_behavior(&self, name: &str, behavior: Behavior) {
        self.lock().behaviors.insert(name.to_owned(), behavior);
    }

    /// Behaviour of workloads without their own (initially `Ready`).
    pub fn set_default_behavior(&self, behavior: Behavior) {
        self.lock().default_behavior = behavior;
    }

    /// Every stored object of a kind (`"Deployment"`, `"Secret"`...).
    pub fn objects(&self, kind: &str) -> Vec<Value> {
        self.lock()
            .objects
            .values()
            .filter(|o| o["kind"] == kind)
            .cloned()
            .collect()
    }

    /// One object by kind, namespace (`""` for cluster-scoped) and name.
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .iter()
            .find(|((_, ns, n), o)| ns == namespace && n == name && o["kind"] == kind)
            .map(|(_, o)| o.clone())
    }

    /// Every request so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Replaces the `status` of a stored object as its controller (or
    /// kubelet) would, without running the simulated controller; watches
    /// see a MODIFIED event. `false` when there is no such object.
    pub fn set_status(&self, kind: &str, namespace: &str, name: &str, status: Value) -> bool {
        let mut state = self.lock();
        let Some(key) = state
            .objects
            .keys()
            .find(|(r, ns, n)| {
                r.rsplit('/').next() == Some(plural(kind).as_str()) && ns == namespace && n == name
            })
            .cloned()
        else {
            return false;
        };
        let rv = state.next_rv();
        let Some(obj) = state.objects.get_mut(&key) else {
            return false;
        };
        obj["status"] = status;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let obj = obj.clone();
        state.notify(rv, &key, "MODIFIED", &obj);
        true
    }

    /// Serves metrics.k8s.io (PodMetrics objects are [`Self::insert`]ed
    /// with `apiVersion: metrics.k8s.io/v1beta1`); without it, requests
    /// to that group get 404 as from a cluster without metrics-server.
    pub fn serve_metrics(&self, on: bool) {
        self.lock().metrics_api = on;
    }

    /// Stores an object as if created by someone else (`apiVersion`,
    /// `kind`, `metadata.name` and, when namespaced, `metadata.namespace`
    /// must be set). Returns the stored object.
    pub fn insert(&self, object: Value) -> Value {
        let api_version = object["apiVersion"].as_str().unwrap_or("v1").to_owned();
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let resource = format!("{api_version}/{}", plural(&kind));
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.lock()
            .store((resource, namespace, name), object, "ADDED")
    }

    /// Appends a line (written now) to a container's log and sends it to
    /// the requests following it.
    pub fn append_log(&self, namespace: &str, pod: &str, container: &str, line: &str) {
        self.append_log_at(namespace, pod, container, chrono::Utc::now(), line);
    }

    /// [`FakeCluster::append_log`] with the time the container wrote it.
    pub fn append_log_at(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        time: chrono::DateTime<chrono::Utc>,
        line: &str,
    ) {
        let entry = LogEntry {
            time,
            line: line.to_owned(),
        };
        let mut state = self.lock();
        let log = state
            .logs
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default();
        log.followers
            .retain(|f| f.tx.send(entry.render(f.timestamps)).is_ok());
        log.lines.push(entry);
    }

    /// The container exits: its lines become the previous instance's and
    /// following requests end (as the kubelet ends them).
    pub fn end_log(&self, namespace: &str, pod: &str, container: &str) {
        let mut state = self.lock();
        if let Some(log) = state
            .logs
            .get_mut(&(namespace.into(), pod.into(), container.into()))
        {
            log.previous = std::mem::take(&mut log.lines);
            log.followers.clear();
        }
    }

    /// The container exited for good (`restartPolicy: Never`): following
    /// requests end, its lines stay the current ones (unlike
    /// [`FakeCluster::end_log`], which models a restart).
    pub fn finish_log(&self, namespace: &str, pod: &str, container: &str) {
        self.lock().finish_log(namespace, pod, container);
    }

    /// Pod log requests still following (their client has not gone away).
    pub fn open_log_streams(&self) -> usize {
        let mut state = self.lock();
        state
            .logs
            .values_mut()
            .map(|log| {
                log.followers.retain(|f| !f.tx.is_closed());
                log.followers.len()
            })
            .sum()
    }

    /// Watch requests whose client still listens.
    pub fn open_watches(&self) -> usize {
        let mut state = self.lock();
        state.watches.retain(|w| !w.tx.is_closed());
        state.watches.len()
    }

    fn handle(
        &self,
        method: &Method,
        uri: &http::Uri,
        content_type: Option<String>,
        body: &[u8],
    ) -> Response<FakeBody> {
        let query = parse_query(uri.query());
        let body_value: Option<Value> = if body.is_empty() {
            None
        } else {
            serde_json::from_slice(body)
                .ok()
                .or_else(|| serde_yaml_ng::from_slice(body).ok())
        };
        let mut state = self.lock();
        state.requests.push(RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_owned(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body_value.clone(),
        });
        let Some(target) = Target::parse(uri.path()) else {
            return status_body(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no route {}", uri.path()),
            );
        };
        if target.group_version.starts_with("metrics.k8s.io/") && !state.metrics_api {
            return status_body(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        match (method.clone(), &target.name) {
            (Method::GET, None)
                if matches!(query.get("watch").map(String::as_str), Some("true" | "1")) =>
            {
                state.watch(&target, &query)
            }
            (Method::GET, None) => state.list(&target, &query),
            (Method::GET, Some(name))
                if target.resource == "pods" && target.subresource.as_deref() == Some("log") =>
            {
                state.pod_log(&target, name, &query)
            }
            (Method::GET, Some(name)) => state.get_one(&target, name),
            (Method::POST, None) => match body_value {
                Some(body) => state.create(&target, body),
                None => status_body(StatusCode::BAD_REQUEST, "BadRequest", "no body"),
            },
            (Method::PUT, Some(name)) => match body_value {
                Some(body) => state.replace(&target, name, body),
                None => status_body(StatusCode::BAD_REQUEST, "BadRequest", "no body"),
            },
            (Method::PATCH, Some(name)) => {
                let Some(patch) = body_value else {
                    return status_body(StatusCode::BAD_REQUEST, "BadRequest", "no body");
                };
                match content_type.as_deref() {
                    Some(APPLY_PATCH) => match query.get("fieldManager") {
                        Some(manager) => state.apply(&target, name, patch, manager),
                        None => status_body(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
                        ),
                    },
                    Some(
                        "application/merge-patch+json" | "application/strategic-merge-patch+json",
                    ) => state.merge(&target, name, &patch, query.get("fieldManager")),
                    other => status_body(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "UnsupportedMediaType",
                        format!("the fake does not support patch type {other:?}"),
                    ),
                }
            }
            (Method::DELETE, Some(name)) => {
                state.delete_one(&target, name, body_value.as_ref(), &query)
            }
            (Method::DELETE, None) => state.delete_collection(&target, &query),
            _ => status_body(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} {}", uri.path()),
            ),
        }
    }
}

fn plural(kind: &str) -> String {
    match kind {
        "PodMetrics" => "pods".into(),
        "NetworkPolicy" => "networkpolicies".into(),
        other => format!("{}s", other.to_ascii_lowercase()),
    }
}

fn key_of(target: &Target, name: &str) -> Key {
    (target.key_resource(), target.namespace(), name.to_owned())
}

fn not_found(target: &Target, name: &str) -> Response<FakeBody> {
    status_body(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", target.resource),
    )
}

fn scale_view(obj: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1",
        "kind": "Scale",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
        },
        "spec": { "replicas": obj["spec"]["replicas"].as_i64().unwrap_or(1) },
        "status": { "replicas": obj["status"]["replicas"].as_i64().unwrap_or(0) },
    })
}

fn set_manager(obj: &mut Value, manager: Option<&String>, operation: &str) {
    let Some(manager) = manager else { return };
    let api_version = obj["apiVersion"].clone();
    let entries = &mut obj["metadata"]["managedFields"];
    if !entries.is_array() {
        *entries = json!([]);
    }
    if let Value::Array(list) = entries {
        list.retain(|e| !(e["manager"] == manager.as_str() && e["operation"] == operation));
        list.push(json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now(),
        }));
    }
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` at `key`, filling in server-set metadata, runs the
    /// simulated controller and notifies watches.
    fn store(&mut self, key: Key, mut obj: Value, type_: &'static str) -> Value {
        let old = self.objects.get(&key).cloned();
        let rv = self.next_rv();
        let meta = &mut obj["metadata"];
        meta["name"] = json!(key.2);
        if !key.1.is_empty() {
            meta["namespace"] = json!(key.1);
        }
        meta["resourceVersion"] = json!(rv.to_string());
        match &old {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = old.get("spec") != obj.get("spec");
                obj["metadata"]["generation"] = json!(generation + i64::from(changed));
            }
            None => {
                meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
                meta["creationTimestamp"] = json!(now());
                meta["generation"] = json!(1);
            }
        }
        // The API server turns stringData into data.
        if let Some(Value::Object(string_data)) =
            obj.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            for (k, v) in string_data {
                obj["data"][k] = json!(BASE64.encode(v.as_str().unwrap_or_default()));
            }
        }
        if obj["kind"] == "Namespace" {
            obj["metadata"]["labels"][labels::NAMESPACE_NAME] = json!(key.2);
            obj["status"] = json!({ "phase": "Active" });
        }
        let mut pods = self.simulate(&key, &mut obj);
        if key.0 == "batch/v1/jobs" && old.is_none() {
            pods.push(State::start_job(&key, &mut obj));
        }
        self.objects.insert(key.clone(), obj.clone());
        let type_ = if old.is_some() && type_ == "ADDED" {
            "MODIFIED"
        } else {
            type_
        };
        self.notify(rv, &key, type_, &obj);
        for pod in pods {
            let name = pod["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            self.store(("v1/pods".into(), key.1.clone(), name), pod, "ADDED");
        }
        obj
    }

    fn finish_log(&mut self, namespace: &str, pod: &str, container: &str) {
        let log = self
            .logs
            .entry((namespace.into(), pod.into(), container.into()))
            .or_default();
        log.followers.clear();
        log.finished = true;
    }

    fn remove(&mut self, key: &Key) -> Option<Value> {
        self.remove_with(key, true)
    }

    /// Removes an object; `cascade` deletes its dependents (objects with an
    /// owner reference to its uid), otherwise they are orphaned (their
    /// owner reference dropped), as the garbage collector does.
    fn remove_with(&mut self, key: &Key, cascade: bool) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.notify(rv, key, "DELETED", &obj);
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            let owned_by = |o: &Value| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            };
            let dependents: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, o)| owned_by(o))
                .map(|(k, _)| k.clone())
                .collect();
            for dependent in dependents {
                if cascade {
                    self.remove(&dependent);
                } else if let Some(mut o) = self.objects.get(&dependent).cloned() {
                    if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"] != uid);
                    }
                    self.store(dependent, o, "MODIFIED");
                }
            }
        }
        // A deleted pod's log streams end.
        if key.0 == "v1/pods" {
            for ((ns, pod, _), log) in &mut self.logs {
                if *ns == key.1 && *pod == key.2 {
                    log.followers.clear();
                }
            }
        }
        // A namespace takes everything in it along (as the namespace
        // controller does, here at once).
        if key.0 == "v1/namespaces" {
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|(_, ns, _)| *ns == key.2)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k);
            }
        }
        // Garbage-collect a workload's pods.
        if key.0.ends_with("/deployments") || key.0.ends_with("/statefulsets") {
            let selector = obj["spec"]["selector"]["matchLabels"].clone();
            if let Value::Object(selector) = selector
                && !selector.is_empty()
            {
                let pods: Vec<Key> = self
                    .objects
                    .iter()
                    .filter(|((r, ns, _), pod)| {
                        r == "v1/pods"
                            && *ns == key.1
                            && selector
                                .iter()
                                .all(|(k, v)| &pod["metadata"]["labels"][k] == v)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for pod in pods {
                    self.remove(&pod);
                }
            }
        }
        Some(obj)
    }

    fn notify(&mut self, rv: u64, key: &Key, type_: &'static str, obj: &Value) {
        self.history.push(Change {
            rv,
            resource: key.0.clone(),
            namespace: key.1.clone(),
            type_,
            object: obj.clone(),
        });
        let line = Bytes::from(format!("{}\n", json!({ "type": type_, "object": obj })));
        self.watches.retain(|w| {
            if w.filter.matches(&key.0, &key.1, obj) {
                w.tx.send(line.clone()).is_ok()
            } else {
                !w.tx.is_closed()
            }
        });
    }

    /// The simulated workload controller: sets `status` on Deployments and
    /// StatefulSets; returns pods to create for failing behaviours.
    fn simulate(&self, key: &Key, obj: &mut Value) -> Vec<Value> {
        let is_deployment = key.0 == "apps/v1/deployments";
        let is_stateful_set = key.0 == "apps/v1/statefulsets";
        if !(is_deployment || is_stateful_set) {
            return Vec::new();
        }
        let behavior = self
            .behaviors
            .get(&key.2)
            .copied()
            .unwrap_or(self.default_behavior);
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
        let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
        let revision = format!("{}-{generation}", key.2);
        let mut status = json!({ "observedGeneration": generation, "replicas": replicas });
        let mut pods = Vec::new();
        match behavior {
            Behavior::Ready => {
                for field in ["updatedReplicas", "readyReplicas", "availableReplicas"] {
                    status[field] = json!(replicas);
                }
                if is_stateful_set {
                    status["currentReplicas"] = json!(replicas);
                    status["currentRevision"] = json!(revision);
                    status["updateRevision"] = json!(revision);
                } else {
                    status["conditions"] = json!([
                        { "type": "Available", "status": "True", "reason": "MinimumReplicasAvailable" },
                        { "type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" },
                    ]);
                }
            }
            Behavior::ImagePullBackOff | Behavior::CrashLoop => {
                status["updatedReplicas"] = json!(replicas);
                status["unavailableReplicas"] = json!(replicas);
                if is_stateful_set {
                    status["updateRevision"] = json!(revision);
                    status["currentRevision"] = obj["status"]["currentRevision"].clone();
                }
                let (reason, message) = if behavior == Behavior::CrashLoop {
                    (
                        "CrashLoopBackOff",
                        "back-off 40s restarting failed container=app".to_owned(),
                    )
                } else {
                    (
                        "ImagePullBackOff",
                        format!(
                            "Back-off pulling image \"{}\"",
                            obj["spec"]["template"]["spec"]["containers"][0]["image"]
                                .as_str()
                                .unwrap_or_default()
                        ),
                    )
                };
                if replicas > 0 {
                    pods.push(self.failing_pod(key, obj, generation, reason, &message));
                }
            }
            Behavior::Hang => {
                status["updatedReplicas"] = json!(0);
            }
        }
        obj["status"] = status;
        pods
    }

    fn failing_pod(
        &self,
        key: &Key,
        workload: &Value,
        generation: i64,
        reason: &str,
        message: &str,
    ) -> Value {
        let template = &workload["spec"]["template"];
        let image = template["spec"]["containers"][0]["image"].clone();
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": format!("{}-{generation}-0", key.2),
                "namespace": key.1,
                "labels": template["metadata"]["labels"],
            },
            "spec": template["spec"],
            "status": {
                "phase": "Pending",
                "containerStatuses": [{
                    "name": "app",
                    "image": image,
                    "imageID": "",
                    "ready": false,
                    "restartCount": if reason == "CrashLoopBackOff" { 3 } else { 0 },
                    "state": { "waiting": { "reason": reason, "message": message } },
                }],
            },
        })
    }

    fn list(&self, target: &Target, query: &BTreeMap<String, String>) -> Response<FakeBody> {
        let filter = filter_of(target, query);
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((r, ns, _), o)| filter.matches(r, ns, o))
            .map(|(_, o)| o.clone())
            .collect();
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": target.group_version,
                "kind": format!("{}List", target.kind()),
                "metadata": { "resourceVersion": self.rv.to_string() },
                "items": items,
            }),
        )
    }

    fn watch(&mut self, target: &Target, query: &BTreeMap<String, String>) -> Response<FakeBody> {
        let filter = filter_of(target, query);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let line = |type_: &str, obj: &Value| {
            Bytes::from(format!("{}\n", json!({ "type": type_, "object": obj })))
        };
        let since = query
            .get("resourceVersion")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let initial = query.get("sendInitialEvents").map(String::as_str) == Some("true");
        if since == 0 || initial {
            // "Any" resource version: start with the current state.
            for ((r, ns, _), o) in &self.objects {
                if filter.matches(r, ns, o) {
                    let _ = tx.send(line("ADDED", o));
                }
            }
            if initial {
                let bookmark = json!({
                    "kind": target.kind(),
                    "apiVersion": target.group_version,
                    "metadata": {
                        "resourceVersion": self.rv.to_string(),
                        "annotations": { "k8s.io/initial-events-end": "true" },
                    },
                });
                let _ = tx.send(line("BOOKMARK", &bookmark));
            }
        } else {
            for change in self.history.iter().filter(|c| c.rv > since) {
                if filter.matches(&change.resource, &change.namespace, &change.object) {
                    let _ = tx.send(line(change.type_, &change.object));
                }
            }
        }
        self.watches.push(Watch { filter, tx });
        streaming_response(rx, "application/json")
    }

    /// A pod's log, as the kubelet serves it through the API server.
    fn pod_log(
        &mut self,
        target: &Target,
        name: &str,
        query: &BTreeMap<String, String>,
    ) -> Response<FakeBody> {
        let Some(pod) = self.objects.get(&key_of(target, name)) else {
            return not_found(target, name);
        };
        let names = |list: &str| -> Vec<String> {
            pod["spec"][list]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        };
        let (containers, init) = (names("containers"), names("initContainers"));
        let bad = |message: String| status_body(StatusCode::BAD_REQUEST, "BadRequest", message);
        // As the API server: the default is the only (non-init) container.
        let container = match (query.get("container"), containers.as_slice()) {
            (Some(c), _) => c.clone(),
            (None, [only]) => only.clone(),
            (None, _) => {
                return bad(format!(
                    "a container name must be specified for pod {name}, choose one of: {containers:?}"
                ));
            }
        };
        if !containers.contains(&container) && !init.contains(&container) {
            return bad(format!("container {container} is not valid for pod {name}"));
        }
        let flag = |k: &str| matches!(query.get(k).map(String::as_str), Some("true" | "1"));
        let (follow, previous, timestamps) = (flag("follow"), flag("previous"), flag("timestamps"));
        let log = self
            .logs
            .entry((target.namespace(), name.to_owned(), container.clone()))
            .or_default();
        if previous && log.previous.is_empty() {
            return bad(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ));
        }
        let since = query
            .get("sinceSeconds")
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(chrono::TimeDelta::try_seconds)
            .map(|d| chrono::Utc::now() - d);
        let lines = if previous { &log.previous } else { &log.lines };
        let mut selected: Vec<&LogEntry> = lines
            .iter()
            .filter(|e| since.is_none_or(|t| e.time >= t))
            .collect();
        if let Some(tail) = query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
            selected.drain(..selected.len().saturating_sub(tail));
        }
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        for entry in selected {
            let _ = tx.send(entry.render(timestamps));
        }
        // Without follow the sender drops here and the body ends.
        if follow && !previous && !log.finished {
            log.followers.push(Follower { tx, timestamps });
        }
        streaming_response(rx, "text/plain")
    }

    fn get_one(&self, target: &Target, name: &str) -> Response<FakeBody> {
        match self.objects.get(&key_of(target, name)) {
            Some(obj) if target.subresource.as_deref() == Some("scale") => {
                json_response(StatusCode::OK, &scale_view(obj))
            }
            Some(obj) => json_response(StatusCode::OK, obj),
            None => not_found(target, name),
        }
    }

    fn create(&mut self, target: &Target, mut body: Value) -> Response<FakeBody> {
        let Some(name) = body["metadata"]["name"].as_str().map(str::to_owned) else {
            return status_body(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name: Required value",
            );
        };
        let key = key_of(target, &name);
        if self.objects.contains_key(&key) {
            return status_body(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", target.resource),
            );
        }
        body["apiVersion"] = json!(target.group_version);
        body["kind"] = json!(target.kind());
        let stored = self.store(key, body, "ADDED");
        json_response(StatusCode::CREATED, &stored)
    }

    fn replace(&mut self, target: &Target, name: &str, mut body: Value) -> Response<FakeBody> {
        let key = key_of(target, name);
        let Some(old) = self.objects.get(&key) else {
            return not_found(target, name);
        };
        if body.get("status").is_none() {
            body["status"] = old["status"].clone();
        }
        let stored = self.store(key, body, "MODIFIED");
        json_response(StatusCode::OK, &stored)
    }

    fn apply(
        &mut self,
        target: &Target,
        name: &str,
        applied: Value,
        manager: &String,
    ) -> Response<FakeBody> {
        let key = key_of(target, name);
        let mut obj = match self.objects.get(&key) {
            None => {
                let mut obj = applied;
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
                obj
            }
            Some(old) => {
                let mut obj = old.clone();
                let Value::Object(fields) = &applied else {
                    return status_body(
                        StatusCode::BAD_REQUEST,
                        "BadRequest",
                        "apply body is not an object",
                    );
                };
                for (k, v) in fields {
                    match k.as_str() {
                        "metadata" => {
                            for field in ["labels", "annotations", "ownerReferences"] {
                                match v.get(field) {
                                    Some(value) => obj["metadata"][field] = value.clone(),
                                    None => {
                                        if let Some(m) = obj["metadata"].as_object_mut() {
                                            m.remove(field);
                                        }
                                    }
                                }
                            }
                        }
                        "status" => {}
                        _ => obj[k] = v.clone(),
                    }
                }
                // Approximate field ownership: pod-template annotations the
                // applier does not set belong to another manager (restart).
                if let Value::Object(kept) = &old["spec"]["template"]["metadata"]["annotations"] {
                    for (k, v) in kept {
                        let slot = &mut obj["spec"]["template"]["metadata"]["annotations"][k];
                        if slot.is_null() {
                            *slot = v.clone();
                        }
                    }
                }
                if obj["spec"].is_object()
                    && obj["spec"].get("replicas").is_none()
                    && !old["spec"]["replicas"].is_null()
                {
                    obj["spec"]["replicas"] = old["spec"]["replicas"].clone();
                }
                obj
            }
        };
        obj["apiVersion"] = json!(target.group_version);
        obj["kind"] = json!(target.kind());
        set_manager(&mut obj, Some(manager), "Apply");
        let created = !self.objects.contains_key(&key);
        let stored = self.store(key, obj, "ADDED");
        json_response(
            if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &stored,
        )
    }

    fn merge(
        &mut self,
        target: &Target,
        name: &str,
        patch: &Value,
        manager: Option<&String>,
    ) -> Response<FakeBody> {
        let key = key_of(target, name);
        let Some(old) = self.objects.get(&key) else {
            return not_found(target, name);
        };
        let mut obj = old.clone();
        let scale = target.subresource.as_deref() == Some("scale");
        if scale {
            let mut view = scale_view(&obj);
            merge_patch(&mut view, patch);
            obj["spec"]["replicas"] = view["spec"]["replicas"].clone();
        } else {
            merge_patch(&mut obj, patch);
        }
        set_manager(&mut obj, manager, "Update");
        let stored = self.store(key, obj, "MODIFIED");
        json_response(
            StatusCode::OK,
            &if scale { scale_view(&stored) } else { stored },
        )
    }

    fn delete_one(
        &mut self,
        target: &Target,
        name: &str,
        options: Option<&Value>,
        query: &BTreeMap<String, String>,
    ) -> Response<FakeBody> {
        let key = key_of(target, name);
        let options = options.cloned().unwrap_or(Value::Null);
        if let (Some(want), Some(existing)) = (
            options["preconditions"]["uid"].as_str(),
            self.objects.get(&key),
        ) && existing["metadata"]["uid"] != want
        {
            return status_body(
                StatusCode::CONFLICT,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {}",
                    existing["metadata"]["uid"].as_str().unwrap_or_default()
                ),
            );
        }
        let propagation = options["propagationPolicy"]
            .as_str()
            .or(query.get("propagationPolicy").map(String::as_str));
        // batch/v1 Jobs orphan their pods unless the request says otherwise.
        let cascade = match propagation {
            Some("Orphan") => false,
            Some(_) => true,
            None => target.resource != "jobs",
        };
        let Some(mut obj) = self.remove_with(&key, cascade) else {
            return not_found(target, name);
        };
        if target.resource == "namespaces" && target.namespace.is_none() {
            // Cascade (a real cluster finalises this asynchronously).
            let inside: Vec<Key> = self
                .objects
                .keys()
                .filter(|k| k.1 == name)
                .cloned()
                .collect();
            for k in inside {
                self.remove(&k);
            }
            obj["status"] = json!({ "phase": "Terminating" });
        }
        json_response(StatusCode::OK, &obj)
    }

    fn delete_collection(
        &mut self,
        target: &Target,
        query: &BTreeMap<String, String>,
    ) -> Response<FakeBody> {
        let filter = filter_of(target, query);
        let keys: Vec<Key> = self
            .objects
            .iter()
            .filter(|((r, ns, _), o)| filter.matches(r, ns, o))
            .map(|(k, _)| k.clone())
            .collect();
        let items: Vec<Value> = keys.iter().filter_map(|k| self.remove(k)).collect();
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": target.group_version,
                "kind": format!("{}List", target.kind()),
                "metadata": { "resourceVersion": self.rv.to_string() },
                "items": items,
            }),
        )
    }
}

/// A chunked body fed by `rx`, ending when every sender is gone.
fn streaming_response(
    rx: mpsc::UnboundedReceiver<Bytes>,
    content_type: &'static str,
) -> Response<FakeBody> {
    let frames =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .flat_map(|chunk| BodyStream::new(Full::new(chunk)));
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn filter_of(target: &Target, query: &BTreeMap<String, String>) -> Filter {
    Filter {
        resource: target.key_resource(),
        namespace: target.namespace.clone(),
        labels: Requirement::parse_all(query.get("labelSelector")),
        fields: Requirement::parse_all(query.get("fieldSelector")),
    }
}

/// The fake as a `tower::Service` for `kube::Client::new`.
#[derive(Clone, Debug)]
pub struct FakeService {
    cluster: FakeCluster,
}

impl tower::Service<Request<kube::client::Body>> for FakeService {
    type Response = Response<FakeBody>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<kube::client::Body>) -> Self::Future {
        let cluster = self.cluster.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok(cluster.handle(&parts.method, &parts.uri, content_type, &bytes))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn paths() {
        let t = Target::parse("/api/v1/namespaces/shop").unwrap();
        assert_eq!(
            (t.resource.as_str(), t.namespace, t.name.as_deref()),
            ("namespaces", None, Some("shop"))
        );
        let t = Target::parse("/apis/apps/v1/namespaces/shop/deployments/web/scale").unwrap();
        assert_eq!(t.key_resource(), "apps/v1/deployments");
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("scale"));
        let t = Target::parse("/api/v1/namespaces/shop/pods").unwrap();
        assert_eq!((t.key_resource().as_str(), t.name), ("v1/pods", None));
        assert!(Target::parse("/version").is_none());
    }

    #[test]
    fn selectors_and_query() {
        let q = parse_query(Some(
            "labelSelector=a%3Db%2Cc%21%3Dd%2Ce&fieldSelector=metadata.name%3Dweb",
        ));
        let filter = Filter {
            resource: "v1/pods".into(),
            namespace: None,
            labels: Requirement::parse_all(q.get("labelSelector")),
            fields: Requirement::parse_all(q.get("fieldSelector")),
        };
        let obj = |labels: Value| json!({ "metadata": { "name": "web", "labels": labels } });
        assert!(filter.matches("v1/pods", "x", &obj(json!({ "a": "b", "e": "" }))));
        assert!(!filter.matches("v1/pods", "x", &obj(json!({ "a": "b", "c": "d", "e": "" }))));
        assert!(!filter.matches("v1/pods", "x", &obj(json!({ "a": "b" }))));
        assert!(!filter.matches("v1/secrets", "x", &obj(json!({ "a": "b", "e": "" }))));
    }

    #[test]
    fn json_merge_patch() {
        let mut v = json!({ "a": { "b": 1, "c": 2 }, "d": [1] });
        merge_patch(&mut v, &json!({ "a": { "b": null, "x": 3 }, "d": [2] }));
        assert_eq!(v, json!({ "a": { "c": 2, "x": 3 }, "d": [2] }));
    }
}
