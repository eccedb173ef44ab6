//! metrics.k8s.io (metrics-server): current CPU and memory of Ferry's pods.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::status::status_selector;
use crate::validate::{cpu_millicores, memory_bytes};

/// Path of the cluster-wide PodMetrics list.
const PODS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/pods";

/// One pod's usage as metrics-server last sampled it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetrics {
    pub namespace: String,
    pub name: String,
    pub timestamp: Option<DateTime<Utc>>,
    pub containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerUsage {
    pub name: String,
    pub cpu_millicores: i64,
    pub memory_bytes: i64,
}

#[derive(Deserialize)]
struct List {
    #[serde(default)]
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    metadata: Meta,
    timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: String,
}

#[derive(Deserialize)]
struct Container {
    name: String,
    #[serde(default)]
    usage: Usage,
}

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    cpu: String,
    #[serde(default)]
    memory: String,
}

impl Cluster {
    /// Usage of every Ferry-labelled pod, or `None` when the cluster does
    /// not serve metrics.k8s.io (no metrics-server). Needs list on
    /// `pods.metrics.k8s.io` cluster-wide.
    pub async fn pod_metrics(&self) -> Result<Option<Vec<PodMetrics>>> {
        let selector = status_selector();
        let selector = selector
            .replace('/', "%2F")
            .replace('=', "%3D")
            .replace(',', "%2C");
        let request = http::Request::get(format!("{PODS_PATH}?labelSelector={selector}"))
            .body(Vec::new())
            .map_err(|e| Error::Encoding(e.to_string()))?;
        let list: List = match self.client().request(request).await {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 503 => {
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        };
        Ok(Some(
            list.items
                .into_iter()
                .map(|item| PodMetrics {
                    namespace: item.metadata.namespace,
                    name: item.metadata.name,
                    timestamp: item.timestamp,
                    containers: item
                        .containers
                        .into_iter()
                        .map(|c| ContainerUsage {
                            name: c.name,
                            cpu_millicores: cpu_millicores(&c.usage.cpu).unwrap_or(0),
                            memory_bytes: memory_bytes(&c.usage.memory).unwrap_or(0),
                        })
                        .collect(),
                })
                .collect(),
        ))
    }
}
