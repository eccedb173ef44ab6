//! `StreamLogs` and `GetServiceEvents`: a service's pod logs and
//! Kubernetes events, authorised like reading the service.
//!
//! The log stream runs in one task per call; every Kubernetes stream lives
//! inside it, and it ends (closing them) as soon as the client goes away.

use std::sync::Arc;

use ferry_db::entities::{volume_mounts, volumes};
use ferry_db::sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _};
use ferry_k8s::cluster::Cluster;
use ferry_k8s::logs::{LogQuery, PodLogLine, ServiceEvent};
use ferry_proto::ferry::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status};

use super::services::ServiceApi;
use crate::authz::{Action, Caller};
use crate::wire::{parse_id, ts};
use crate::{Error, Result};

/// Lines of each container when the request says 0.
pub const DEFAULT_TAIL_LINES: u32 = 100;
/// The most lines of each container one request may ask for.
pub const MAX_TAIL_LINES: u32 = 10_000;
/// Events when the request says 0.
pub const DEFAULT_EVENTS: u32 = 50;
/// The most events one request may ask for.
pub const MAX_EVENTS: u32 = 500;

/// The server side of one StreamLogs call.
pub type LogStream = ReceiverStream<Result<pb::LogLine, Status>>;

impl ServiceApi {
    pub(super) async fn logs(&self, request: Request<pb::StreamLogsRequest>) -> Result<LogStream> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (_, _, project) = caller.service(db, Action::ServiceRead, id).await?;
        let query = log_query(req)?;
        let cluster = self.cluster()?;
        let namespace = project.namespace;
        // Only ever a pod of this service, in its project's namespace.
        if let Some(pod) = &query.pod
            && !cluster
                .service_pods(&namespace, id)
                .await?
                .iter()
                .any(|p| p == pod)
        {
            return Err(Error::NotFound("pod not found".into()));
        }
        let (tx, rx) = mpsc::channel(256);
        let span = tracing::info_span!("stream_logs", service_id = %id, follow = query.follow);
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let sent = cluster
                    .stream_logs(&namespace, id, &query, &tx, |l| Ok(line_to_pb(l)))
                    .await;
                if let Err(err) = sent {
                    let _ = tx.send(Err(Status::from(Error::from(err)))).await;
                }
            },
            span,
        ));
        Ok(ReceiverStream::new(rx))
    }

    pub(super) async fn events(
        &self,
        request: Request<pb::GetServiceEventsRequest>,
    ) -> Result<pb::GetServiceEventsResponse> {
        let caller = Caller::of(&self.0.identity, &request).await?;
        let req = request.get_ref();
        let id = parse_id("serviceId", &req.service_id)?;
        let db = &self.0.identity.db;
        let (_, service, project) = caller.service(db, Action::ServiceRead, id).await?;
        let limit = bounded("limit", req.limit, DEFAULT_EVENTS, MAX_EVENTS)?;
        let cluster = self.cluster()?;
        let claims: Vec<String> = volume_mounts::Entity::find()
            .filter(volume_mounts::Column::ServiceId.eq(id))
            .find_also_related(volumes::Entity)
            .all(db)
            .await?
            .into_iter()
            .filter_map(|(_, v)| v.map(|v| ferry_k8s::render::claim_name(&v.name)))
            .collect();
        let events = cluster
            .service_events(
                &project.namespace,
                id,
                &service.name,
                &claims,
                limit as usize,
            )
            .await?;
        Ok(pb::GetServiceEventsResponse {
            events: events.into_iter().map(event_to_pb).collect(),
        })
    }

    /// The cluster, or `FailedPrecondition` in plan-only mode.
    fn cluster(&self) -> Result<Arc<Cluster>> {
        self.0.deployer.cluster.clone().ok_or_else(|| {
            Error::FailedPrecondition(
                "no Kubernetes cluster is configured (plan-only mode): there are no pods to read"
                    .into(),
            )
        })
    }
}

/// A count field: 0 means `default`, above `max` is refused naming it.
fn bounded(field: &str, value: u32, default: u32, max: u32) -> Result<u32> {
    match value {
        0 => Ok(default),
        n if n <= max => Ok(n),
        _ => Err(Error::InvalidArgument(format!(
            "{field}: at most {max} (0 means {default})"
        ))),
    }
}

fn log_query(req: &pb::StreamLogsRequest) -> Result<LogQuery> {
    let tail = bounded(
        "tailLines",
        req.tail_lines,
        DEFAULT_TAIL_LINES,
        MAX_TAIL_LINES,
    )?;
    if req.since_seconds < 0 {
        return Err(Error::InvalidArgument(
            "sinceSeconds: must not be negative (0 means no limit)".into(),
        ));
    }
    for (field, value) in [("pod", &req.pod), ("container", &req.container)] {
        if !value.is_empty() && !is_dns_name(value) {
            return Err(Error::InvalidArgument(format!(
                "{field}: not a Kubernetes object name"
            )));
        }
    }
    Ok(LogQuery {
        follow: req.follow,
        since_seconds: (req.since_seconds > 0).then_some(req.since_seconds),
        tail_lines: Some(i64::from(tail)),
        previous: req.previous,
        container: req.container.clone(),
        pod: (!req.pod.is_empty()).then(|| req.pod.clone()),
    })
}

/// A DNS-1123 subdomain, the shape of pod and container names.
fn is_dns_name(s: &str) -> bool {
    s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn line_to_pb(l: PodLogLine) -> pb::LogLine {
    pb::LogLine {
        pod: l.pod,
        container: l.container,
        line: l.line,
        time: l.time.map(ts),
    }
}

fn event_to_pb(e: ServiceEvent) -> pb::ServiceEvent {
    pb::ServiceEvent {
        r#type: e.type_,
        reason: e.reason,
        message: e.message,
        object: e.object,
        count: e.count,
        first_seen: e.first_seen.map(ts),
        last_seen: e.last_seen.map(ts),
        summary: e.summary,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn tail_lines_default_and_bound() {
        let req = |tail_lines| pb::StreamLogsRequest {
            tail_lines,
            ..Default::default()
        };
        assert_eq!(log_query(&req(0)).unwrap().tail_lines, Some(100));
        assert_eq!(log_query(&req(10_000)).unwrap().tail_lines, Some(10_000));
        let err = log_query(&req(10_001)).unwrap_err().to_string();
        assert!(err.starts_with("tailLines:"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(is_dns_name("web-7d9f-abcde"));
        for bad in ["", "-a", "a/b", "../x", "A", "a b"] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
