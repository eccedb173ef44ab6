//! The dedicated builds namespace: where build Jobs run, fenced off from
//! the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::render::{check_label, dns_ports, ip_block, labels, to_value};
use crate::validate;

/// Name of the builds namespace's default-deny ingress NetworkPolicy.
pub const DENY_INGRESS_POLICY: &str = "ferry-builds-deny-ingress";
/// Name of the builds namespace's egress NetworkPolicy.
pub const EGRESS_POLICY: &str = "ferry-builds-egress";

/// Cloud metadata endpoints (AWS, GCP, Azure, ...; AWS's IPv6 one): a
/// build must never read the node's cloud credentials.
pub const METADATA_CIDRS: [&str; 2] = ["169.254.169.254/32", "fd00:ec2::254/128"];

/// What builds may not reach: the cluster's own networks. Builds fetch
/// sources, base images and packages from the internet and push to the
/// registry; nothing inside the cluster is theirs to talk to.
///
/// Traffic to a Service's ClusterIP is usually translated to a pod address
/// before policies apply, so `pod_cidrs` is the rule that counts;
/// `service_cidrs` covers CNIs that match before translation. A registry
/// inside the cluster must therefore be reached through an address outside
/// these ranges (its ingress), or these ranges narrowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    pub pod_cidrs: Vec<String>,
    pub service_cidrs: Vec<String>,
    pub node_cidrs: Vec<String>,
    /// The Kubernetes API server's addresses (an IP, or a CIDR).
    pub api_server: Vec<String>,
}

/// The typed objects of the builds namespace, in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildsNamespace {
    pub namespace: Namespace,
    /// No ingress at all: nothing talks to a build.
    pub deny_ingress: NetworkPolicy,
    /// DNS to kube-dns, and the internet minus the cluster and metadata.
    pub egress: NetworkPolicy,
}

impl BuildsNamespace {
    pub fn name(&self) -> &str {
        self.namespace.metadata.name.as_deref().unwrap_or_default()
    }

    /// Every object as JSON, in apply order.
    pub fn values(&self) -> Vec<Value> {
        vec![
            to_value(&self.namespace),
            to_value(&self.deny_ingress),
            to_value(&self.egress),
        ]
    }
}

fn builds_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_owned(), labels::FERRY.to_owned()),
        (labels::COMPONENT.to_owned(), "builds".to_owned()),
    ])
}

/// Renders the builds namespace.
///
/// Its Pod Security admission level is **`privileged`**: rootless BuildKit
/// needs `seccompProfile: Unconfined` and `appArmorProfile: Unconfined`
/// (and privilege escalation for `newuidmap`), which `baseline` forbids.
/// The exception is confined to this namespace, which holds nothing but
/// build Jobs Ferry renders (no service account token, non-root, only the
/// build container unconfined); `warn` and `audit` stay at `baseline`, so
/// anything else that lands here is still reported.
pub fn builds_namespace(name: &str, egress: &EgressPolicy) -> Result<BuildsNamespace> {
    check_label("name", name)?;
    let (v4, v6) = denied_cidrs(egress)?;
    let mut namespace_labels = builds_labels();
    namespace_labels.extend([
        (
            "pod-security.kubernetes.io/enforce".to_owned(),
            "privileged".to_owned(),
        ),
        (
            "pod-security.kubernetes.io/warn".to_owned(),
            "baseline".to_owned(),
        ),
        (
            "pod-security.kubernetes.io/audit".to_owned(),
            "baseline".to_owned(),
        ),
    ]);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(namespace_labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let meta = |policy: &str| ObjectMeta {
        name: Some(policy.to_owned()),
        namespace: Some(name.to_owned()),
        labels: Some(builds_labels()),
        ..ObjectMeta::default()
    };
    let deny_ingress = NetworkPolicy {
        metadata: meta(DENY_INGRESS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: None,
            egress: None,
        }),
    };
    let kube_dns = NetworkPolicyPeer {
        namespace_selector: Some(match_labels(labels::NAMESPACE_NAME, "kube-system")),
        pod_selector: Some(match_labels("k8s-app", "kube-dns")),
        ip_block: None,
    };
    let egress = NetworkPolicy {
        metadata: meta(EGRESS_POLICY),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Egress".into()]),
            ingress: None,
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![kube_dns]),
                    ports: Some(dns_ports()),
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![ip_block("0.0.0.0/0", &v4), ip_block("::/0", &v6)]),
                    ports: None,
                },
            ]),
        }),
    };
    Ok(BuildsNamespace {
        namespace,
        deny_ingress,
        egress,
    })
}

fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
        match_expressions: None,
    }
}

/// The `except` lists of the IPv4 and IPv6 internet blocks: every
/// configured range, the API server as a host route, and the metadata
/// endpoints. Sorted and deduplicated, so the render is stable.
fn denied_cidrs(egress: &EgressPolicy) -> Result<(Vec<String>, Vec<String>)> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let lists = [
        ("egress.podCidrs", &egress.pod_cidrs),
        ("egress.serviceCidrs", &egress.service_cidrs),
        ("egress.nodeCidrs", &egress.node_cidrs),
        ("egress.apiServer", &egress.api_server),
    ];
    for (field, list) in lists {
        for (i, entry) in list.iter().enumerate() {
            let cidr = host_route(entry);
            match validate::cidr_is_v6(&cidr) {
                // An `except` must be a strict subset of 0.0.0.0/0 or ::/0.
                Some(_) if cidr.ends_with("/0") => {
                    return Err(Error::invalid(
                        format!("{field}[{i}]"),
                        "a /0 range would deny the whole internet; name the cluster's ranges",
                    ));
                }
                Some(true) => v6.push(cidr),
                Some(false) => v4.push(cidr),
                None => {
                    return Err(Error::invalid(
                        format!("{field}[{i}]"),
                        format!("{entry:?} is not an IP address or a CIDR like 10.0.0.0/8"),
                    ));
                }
            }
        }
    }
    for cidr in METADATA_CIDRS {
        match validate::cidr_is_v6(cidr) {
            Some(true) => v6.push(cidr.to_owned()),
            _ => v4.push(cidr.to_owned()),
        }
    }
    for list in [&mut v4, &mut v6] {
        list.sort();
        list.dedup();
    }
    Ok((v4, v6))
}

/// `10.0.0.1` → `10.0.0.1/32`, `fd00::1` → `fd00::1/128`; CIDRs unchanged.
fn host_route(entry: &str) -> String {
    match entry.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_ipv6() => format!("{entry}/128"),
        Ok(_) => format!("{entry}/32"),
        Err(_) => entry.to_owned(),
    }
}
