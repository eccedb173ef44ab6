//! Scenario fixture (kube-rs controller-rs `fixtures.rs` style): a scripted
//! API server on `tower_test::mock::pair` that checks every request of an
//! apply, in order, and answers it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SECRET_VALUE, db_spec};
use ferry_k8s::{Cluster, Error, WorkloadKindRef, render};
use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and how to answer it.
struct Step {
    path: &'static str,
    kind: &'static str,
    status: StatusCode,
    /// Merged into the echoed body (server-set fields).
    server_fields: Value,
    /// A label-selected list (the prune after an apply), answered empty.
    list: bool,
    /// The metadata of an object that already exists (the ownership GET
    /// before the apply answers it); `None`: 404.
    existing: Option<Value>,
}

impl Step {
    fn ok(path: &'static str, kind: &'static str) -> Step {
        Step {
            path,
            kind,
            status: StatusCode::OK,
            server_fields: json!({}),
            list: false,
            existing: None,
        }
    }

    fn list(path: &'static str, kind: &'static str) -> Step {
        Step {
            list: true,
            ..Step::ok(path, kind)
        }
    }
}

fn query(req: &Request<Body>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Serves `steps` in order, asserting each request is the expected
/// server-side apply; returns the bodies it received.
async fn run_scenario(mut handle: Handle, steps: Vec<Step>) -> Vec<Value> {
    let mut bodies = Vec::new();
    for step in steps {
        let (request, send) = handle.next_request().await.expect("service not called");
        if step.list {
            assert_eq!(request.method(), Method::GET);
            assert_eq!(request.uri().path(), step.path);
            let q = query(&request);
            assert!(
                q.iter()
                    .any(|(k, v)| k == "labelSelector" && v.contains("service-id")),
                "{q:?}"
            );
            let list = json!({
                "apiVersion": "v1", "kind": format!("{}List", step.kind),
                "metadata": { "resourceVersion": "1" }, "items": [],
            });
            send.send_response(
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&list).unwrap()))
                    .unwrap(),
            );
            continue;
        }
        // The ownership check: a metadata-only GET of the same object.
        assert_eq!(request.method(), Method::GET, "{}", step.path);
        assert_eq!(request.uri().path(), step.path);
        let accept = request
            .headers()
            .get(http::header::ACCEPT)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(accept.contains("as=PartialObjectMetadata"), "{accept}");
        let (status, answer) = match &step.existing {
            None => (
                StatusCode::NOT_FOUND,
                json!({
                    "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "not found",
                }),
            ),
            Some(meta) => (
                StatusCode::OK,
                json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": meta,
                }),
            ),
        };
        let owned = step
            .existing
            .as_ref()
            .is_none_or(|m| m["labels"]["app.kubernetes.io/managed-by"] == "ferry");
        send.send_response(
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        if !owned {
            // Refused before any change: no PATCH follows.
            break;
        }
        let (request, send) = handle.next_request().await.expect("no apply after the GET");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), step.path);
        let q = query(&request);
        assert!(
            q.contains(&("fieldManager".into(), "ferry".into())),
            "{q:?}"
        );
        assert!(q.contains(&("force".into(), "true".into())), "{q:?}");
        assert_eq!(
            request.headers().get(http::header::CONTENT_TYPE).unwrap(),
            "application/apply-patch+yaml"
        );
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let mut body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["kind"], step.kind);
        bodies.push(body.clone());
        let response = if step.status.is_success() {
            body["metadata"]["generation"] = json!(1);
            body["metadata"]["resourceVersion"] = json!("42");
            if let (Value::Object(b), Value::Object(extra)) = (&mut body, step.server_fields) {
                for (k, v) in extra {
                    if k == "metadata" {
                        for (mk, mv) in v.as_object().unwrap() {
                            b["metadata"][mk] = mv.clone();
                        }
                    } else {
                        b.insert(k, v);
                    }
                }
            }
            body
        } else {
            json!({
                "apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                "reason": "Forbidden", "code": step.status.as_u16(),
                "message": "statefulsets.apps is forbidden",
            })
        };
        send.send_response(
            Response::builder()
                .status(step.status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&response).unwrap()))
                .unwrap(),
        );
    }
    bodies
}

fn db_steps() -> Vec<Step> {
    vec![
        Step::ok("/api/v1/namespaces/shop", "Namespace"),
        Step::ok(
            "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/ferry-default-deny",
            "NetworkPolicy",
        ),
        Step::ok(
            "/api/v1/namespaces/shop/resourcequotas/ferry-quota",
            "ResourceQuota",
        ),
        Step::ok(
            "/api/v1/namespaces/shop/limitranges/ferry-limits",
            "LimitRange",
        ),
        Step::ok("/api/v1/namespaces/shop/secrets/db-env", "Secret"),
        Step::ok("/api/v1/namespaces/shop/services/db", "Service"),
        Step {
            path: "/apis/apps/v1/namespaces/shop/statefulsets/db",
            kind: "StatefulSet",
            status: StatusCode::OK,
            server_fields: json!({ "metadata": { "generation": 7 } }),
            list: false,
            existing: None,
        },
        // Then the prune: this service's Services and Secrets by label.
        Step::list("/api/v1/namespaces/shop/services", "Service"),
        Step::list("/api/v1/namespaces/shop/secrets", "Secret"),
    ]
}

#[tokio::test]
async fn apply_sends_server_side_apply_for_every_object_in_order() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let cluster = Cluster::new(kube::Client::new(service, "default"));
    let server = tokio::spawn(run_scenario(handle, db_steps()));
    let rendered = render(&db_spec()).unwrap();
    let applied =
        tokio::time::timeout(std::time::Duration::from_secs(10), cluster.apply(&rendered))
            .await
            .expect("apply timed out")
            .unwrap();
    assert_eq!(applied.generation, 7);
    assert_eq!(applied.kind, WorkloadKindRef::StatefulSet);
    assert_eq!(
        (applied.name.as_str(), applied.namespace.as_str()),
        ("db", "shop")
    );
    let bodies = server.await.unwrap();
    // The real secret value goes to the cluster (base64 in `data`).
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_VALUE);
    assert_eq!(bodies[4]["data"]["POSTGRES_PASSWORD"], encoded.as_str());
    assert!(bodies.iter().all(|b| b.get("status").is_none()));
}

#[tokio::test]
async fn apply_surfaces_api_errors() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let cluster = Cluster::new(kube::Client::new(service, "default"));
    let mut steps = db_steps();
    steps[6].status = StatusCode::FORBIDDEN;
    // A failed apply stops there: no prune.
    steps.truncate(7);
    let server = tokio::spawn(run_scenario(handle, steps));
    let err = cluster
        .apply(&render(&db_spec()).unwrap())
        .await
        .unwrap_err();
    server.await.unwrap();
    match err {
        Error::Kube(kube::Error::Api(status)) => assert!(status.is_forbidden()),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn apply_refuses_an_existing_object_without_ferrys_labels() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let cluster = Cluster::new(kube::Client::new(service, "default"));
    let mut steps = db_steps();
    // The env Secret exists, created by someone else.
    steps[4].existing = Some(json!({
        "name": "db-env", "namespace": "shop", "labels": { "team": "payments" },
    }));
    steps.truncate(5);
    let server = tokio::spawn(run_scenario(handle, steps));
    let err = cluster
        .apply(&render(&db_spec()).unwrap())
        .await
        .unwrap_err();
    let bodies = server.await.unwrap();
    assert_eq!(bodies.len(), 4, "nothing applied after the refusal");
    match &err {
        Error::NotOwned { kind, object, .. } => {
            assert_eq!((kind.as_str(), object.as_str()), ("Secret", "shop/db-env"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains("app.kubernetes.io/managed-by"),
        "{err}"
    );
}
