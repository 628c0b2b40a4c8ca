//! The seed's "Verify the installation" as data: Istio's HelloWorld sample (one Deployment per
//! cluster, answering with its version) behind Service `helloworld`, and the curl sample as the
//! client in each cluster; reading HelloWorld's answer; and, when a client never hears from a
//! cluster, the likely cause from what the clusters show (remote secrets and their sync,
//! networks and east-west gateways, the CA each cluster signs with and the roots it trusts).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, Namespace, Pod, PodSpec, PodTemplateSpec,
    ResourceRequirements, Service, ServiceAccount, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::istiod::Sync;
use crate::pki::Certificate;

/// The Service every cluster gets, so that its name resolves everywhere (the seed's reason for
/// deploying it to every cluster), and the port HelloWorld listens on.
pub const SERVICE: &str = "helloworld";
pub const PORT: u16 = 5000;
/// The client Deployment, its ServiceAccount and its container.
pub const CLIENT: &str = "curl";
/// The sidecar container Istio's injector adds.
pub const SIDECAR: &str = "istio-proxy";
/// HelloWorld's environment variable for the version it answers with.
const VERSION_ENV: &str = "SERVICE_VERSION";

/// Istio's samples: HelloWorld (samples/helloworld) and curl (samples/curl).
pub const DEFAULT_HELLOWORLD_IMAGE: &str = "docker.io/istio/examples-helloworld-v1:1.0";
pub const DEFAULT_CURL_IMAGE: &str = "docker.io/curlimages/curl:8.16.0";

/// The images the workloads run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub helloworld: String,
    pub curl: String,
}

impl Images {
    /// Explicit images win; otherwise the samples' images, from `hub` when given (a mirror
    /// holding them under their last path segment, as `hub` works for Istio's own images).
    pub fn resolve(hub: Option<&str>, helloworld: Option<&str>, curl: Option<&str>) -> Self {
        let from_hub = |default: &str| match hub {
            Some(h) => {
                let last = default.rsplit('/').next().unwrap_or(default);
                format!("{}/{last}", h.trim_end_matches('/'))
            }
            None => default.to_string(),
        };
        Self {
            helloworld: helloworld
                .map_or_else(|| from_hub(DEFAULT_HELLOWORLD_IMAGE), str::to_string),
            curl: curl.map_or_else(|| from_hub(DEFAULT_CURL_IMAGE), str::to_string),
        }
    }
}

/// The namespace label that turns on injection: `istio.io/rev=<rev>` for a revisioned control
/// plane, else `istio-injection=enabled` (the default revision's injector).
pub fn injection_label(revision: Option<&str>) -> (String, String) {
    match revision.filter(|r| !r.is_empty() && *r != "default") {
        Some(rev) => ("istio.io/rev".into(), rev.into()),
        None => ("istio-injection".into(), "enabled".into()),
    }
}

/// The MutatingWebhookConfiguration of the injector serving `revision`.
pub fn injector_webhook(revision: Option<&str>) -> String {
    match revision.filter(|r| !r.is_empty() && *r != "default") {
        Some(rev) => format!("istio-sidecar-injector-{rev}"),
        None => "istio-sidecar-injector".into(),
    }
}

/// What one cluster of the check runs: `version` is the cluster's name, the version its
/// HelloWorld answers with.
#[derive(Clone, Debug)]
pub struct Workloads<'a> {
    pub namespace: &'a str,
    pub version: &'a str,
    pub revision: Option<&'a str>,
    pub images: &'a Images,
    /// The provider's labels (managed-by, instance), on every object.
    pub labels: BTreeMap<String, String>,
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Workloads<'_> {
    fn meta(&self, name: &str, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = self.labels.clone();
        labels.extend(map(extra));
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.into()),
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// The namespace, labelled for injection.
    pub fn namespace(&self) -> Namespace {
        let mut labels = self.labels.clone();
        let (k, v) = injection_label(self.revision);
        labels.insert(k, v);
        Namespace {
            metadata: ObjectMeta {
                name: Some(self.namespace.into()),
                labels: Some(labels),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    pub fn service(&self) -> Service {
        Service {
            metadata: self.meta(SERVICE, &[("app", SERVICE), ("service", SERVICE)]),
            spec: Some(ServiceSpec {
                selector: Some(map(&[("app", SERVICE)])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: PORT.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `helloworld-<cluster>`: HelloWorld answering with the cluster's name as its version.
    pub fn helloworld_name(&self) -> String {
        format!("{SERVICE}-{}", self.version)
    }

    /// Label selector of this cluster's HelloWorld pods.
    pub fn helloworld_selector(&self) -> String {
        format!("app={SERVICE},version={}", self.version)
    }

    pub fn helloworld(&self) -> Deployment {
        let pod_labels = map(&[("app", SERVICE), ("version", self.version)]);
        let container = Container {
            name: SERVICE.into(),
            image: Some(self.images.helloworld.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            env: Some(vec![EnvVar {
                name: VERSION_ENV.into(),
                value: Some(self.version.into()),
                ..Default::default()
            }]),
            ports: Some(vec![ContainerPort {
                container_port: PORT.into(),
                ..Default::default()
            }]),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".into(), Quantity("100m".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        deployment(
            self.meta(
                &self.helloworld_name(),
                &[("app", SERVICE), ("version", self.version)],
            ),
            pod_labels,
            PodSpec {
                containers: vec![container],
                ..Default::default()
            },
        )
    }

    pub fn client_service_account(&self) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(CLIENT, &[]),
            ..Default::default()
        }
    }

    /// Label selector of the client pods.
    pub fn client_selector(&self) -> String {
        format!("app={CLIENT}")
    }

    /// The curl client, idle until a command is run in it.
    pub fn client(&self) -> Deployment {
        let container = Container {
            name: CLIENT.into(),
            image: Some(self.images.curl.clone()),
            image_pull_policy: Some("IfNotPresent".into()),
            command: Some(vec!["/bin/sleep".into(), "infinity".into()]),
            ..Default::default()
        };
        deployment(
            self.meta(CLIENT, &[("app", CLIENT)]),
            map(&[("app", CLIENT)]),
            PodSpec {
                service_account_name: Some(CLIENT.into()),
                termination_grace_period_seconds: Some(0),
                containers: vec![container],
                ..Default::default()
            },
        )
    }
}

fn deployment(meta: ObjectMeta, pod_labels: BTreeMap<String, String>, spec: PodSpec) -> Deployment {
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(pod_labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(spec),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The request each client sends, as the seed does, with a bound on each call.
pub fn request_command(namespace: &str) -> Vec<String> {
    vec![
        "curl".into(),
        "-sS".into(),
        "--max-time".into(),
        "5".into(),
        format!("http://{SERVICE}.{namespace}:{PORT}/hello"),
    ]
}

/// The version in HelloWorld's answer, `Hello version: v1, instance: helloworld-v1-...`.
pub fn parse_hello(body: &str) -> Option<&str> {
    let rest = body.trim_start().strip_prefix("Hello version:")?;
    let version = rest.split(',').next()?.trim();
    (!version.is_empty()).then_some(version)
}

/// Whether Istio's injector gave the pod a sidecar (a container, or a native sidecar init
/// container, named `istio-proxy`).
pub fn has_sidecar(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == SIDECAR)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == SIDECAR)
    })
}

// ---------------------------------------------------------------------------------------------
// Diagnosis

/// Whether a Gateway's spec passes mesh services through on 15443 (`AUTO_PASSTHROUGH`, hosts
/// `*.local` or `*`), for pods the Service with `service_selector` selects: what
/// `mesh_eastwest_gateway expose_services` (Istio's `expose-services.yaml`) configures.
pub fn exposes_services(
    gateway_spec: &serde_json::Value,
    service_selector: &BTreeMap<String, String>,
) -> bool {
    let selects = gateway_spec
        .get("selector")
        .and_then(|s| s.as_object())
        .is_some_and(|sel| {
            !sel.is_empty()
                && sel
                    .iter()
                    .all(|(k, v)| service_selector.get(k).map(String::as_str) == v.as_str())
        });
    let passes = gateway_spec
        .get("servers")
        .and_then(|s| s.as_array())
        .is_some_and(|servers| {
            servers.iter().any(|s| {
                s.pointer("/port/number").and_then(|n| n.as_u64()) == Some(15443)
                    && s.pointer("/tls/mode").and_then(|m| m.as_str()) == Some("AUTO_PASSTHROUGH")
                    && s.get("hosts")
                        .and_then(|h| h.as_array())
                        .is_some_and(|hosts| {
                            hosts
                                .iter()
                                .any(|h| matches!(h.as_str(), Some("*.local" | "*")))
                        })
            })
        });
    selects && passes
}

/// An east-west gateway as a cluster holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EastWest {
    pub network: String,
    /// `namespace/name` of its Service.
    pub service: String,
    pub has_address: bool,
    /// A Gateway selects it with port 15443, AUTO_PASSTHROUGH, hosts `*.local`.
    pub exposes_services: bool,
}

/// What one cluster shows, as far as it could be read. `None`: could not be read (the
/// diagnosis then says nothing about that aspect).
#[derive(Clone, Debug, Default)]
pub struct ClusterFacts {
    /// The cluster's name in the mesh (its istiod's CLUSTER_ID).
    pub name: String,
    pub network: Option<String>,
    /// The remote clusters its istiod reads, with the least synced replica's status.
    pub remotes: Option<BTreeMap<String, Sync>>,
    pub eastwest: Option<Vec<EastWest>>,
    /// The CA istiod signs workload certificates with, then the rest of its chain
    /// (`cacerts`' `cert-chain.pem`; istiod's self-signed root when there is no `cacerts`).
    pub signing_chain: Option<Vec<Certificate>>,
    /// istiod signs with its self-signed root (no `cacerts`).
    pub self_signed: bool,
    /// The roots its proxies trust (`istio-ca-root-cert`, as istiod publishes it).
    pub trust_roots: Option<Vec<Certificate>>,
}

/// Whether `chain` ends in (or is signed by) one of `roots`.
fn anchored(chain: &[Certificate], roots: &[Certificate]) -> bool {
    crate::pki::chain_anchored_in(chain, roots)
}

/// The likely reasons a client in `client` never reached HelloWorld in `server`, from what
/// both clusters (and the other clusters of `all`, for gateways of the server's network)
/// show. Empty when nothing visible explains it.
pub fn causes(client: &ClusterFacts, server: &ClusterFacts, all: &[ClusterFacts]) -> Vec<String> {
    let mut out = Vec::new();
    let (c, s) = (&client.name, &server.name);
    if c != s {
        match client.remotes.as_ref().map(|r| r.get(s)) {
            Some(None) => out.push(format!(
                "istiod in {c} does not read cluster {s}: there is no remote secret for {s} in {c} (mesh_remote_secret with target {c} and remote.cluster_name = \"{s}\")"
            )),
            Some(Some(sync)) if *sync != Sync::Synced => out.push(format!(
                "istiod in {c} has not synced cluster {s}: it is {} ({})",
                sync.as_str(),
                sync.meaning()
            )),
            _ => {}
        }
        if let (Some(cn), Some(sn)) = (&client.network, &server.network) {
            if cn != sn {
                out.extend(gateway_causes(c, s, sn, all));
            }
        }
    }
    out.extend(trust_causes(client, server));
    out
}

/// Why the server's network may not be reachable from another network: its east-west gateway.
fn gateway_causes(client: &str, server: &str, network: &str, all: &[ClusterFacts]) -> Vec<String> {
    let known: Vec<&EastWest> = all
        .iter()
        .filter_map(|f| f.eastwest.as_ref())
        .flatten()
        .filter(|g| g.network == network)
        .collect();
    let read = all
        .iter()
        .filter(|f| f.network.as_deref() == Some(network))
        .any(|f| f.eastwest.is_some());
    if !read {
        return Vec::new();
    }
    let reach = format!(
        "{client} is on another network, so its requests to {server} (network {network}) go through {network}'s east-west gateway"
    );
    if known.is_empty() {
        return vec![format!(
            "{reach}, and no cluster of network {network} has one (a Service labelled topology.istio.io/network={network}; mesh_eastwest_gateway with network = \"{network}\")"
        )];
    }
    if !known.iter().any(|g| g.has_address) {
        return vec![format!(
            "{reach}, but its Service ({}) has no external address yet (LoadBalancer pending)",
            known
                .iter()
                .map(|g| g.service.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )];
    }
    if !known.iter().any(|g| g.has_address && g.exposes_services) {
        return vec![format!(
            "{reach}, but it does not expose the services: no Gateway passes port 15443 through for hosts *.local (mesh_eastwest_gateway expose_services = true)"
        )];
    }
    Vec::new()
}

/// Mutual TLS between the two sides: each one's signing CA must chain to a root the other
/// side trusts.
fn trust_causes(client: &ClusterFacts, server: &ClusterFacts) -> Vec<String> {
    let mut out = Vec::new();
    if client.name == server.name {
        return out;
    }
    for (a, b) in [(client, server), (server, client)] {
        let (Some(chain), Some(roots)) = (&a.signing_chain, &b.trust_roots) else {
            continue;
        };
        if chain.is_empty() || anchored(chain, roots) {
            continue;
        }
        let signer = chain[0].info().subject.clone();
        let how = if a.self_signed {
            format!("{} has no cacerts: istiod signs with its own self-signed root, which no other cluster trusts (give every cluster mesh_cluster root_ca or ca from one mesh root)", a.name)
        } else {
            format!(
                "the CA {} signs with ({signer}) does not chain to a root {} trusts; the clusters' cacerts come from different roots (check mesh_cluster root_ca / ca, and additional_roots_pem during a rotation)",
                a.name, b.name
            )
        };
        out.push(format!(
            "mutual TLS fails between {} and {}: {how}",
            client.name, server.name
        ));
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
