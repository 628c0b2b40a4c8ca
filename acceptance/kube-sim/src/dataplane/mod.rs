//! The data plane as a client in a pod sees it: an HTTP request to `<svc>.<ns>:<port>` from a
//! pod of cluster A, decided from Kubernetes' and Istio's documented rules.
//!
//! * **DNS**: cluster A's DNS answers for Services of cluster A only (Istio's DNS proxying is off
//!   by default), so the Service must exist in A (the reason Istio's multicluster guide deploys
//!   the Service in every cluster). Short names follow the pod's search path
//!   (`<ns>.svc.cluster.local`, `svc.cluster.local`, `cluster.local`).
//! * **Without a sidecar** (kube-proxy): the Ready pods of A's Service, plaintext; none →
//!   connection refused.
//! * **With a sidecar** (Envoy, configured by the cluster's istiod of the pod's revision): the
//!   endpoints of the same-named Service in A and in every remote A's istiod has `synced`, each
//!   selected by *that* cluster's Service. An endpoint's network is its pod's
//!   `topology.istio.io/network` label, else the label of the system namespace (istiod's) in its
//!   cluster. An endpoint on another network is reached through that network's gateway, which
//!   istiod knows as in `/debug/networkz` (a Service labelled `topology.istio.io/network` with
//!   an address and the gateway port); without one it is dropped, and so is one without a
//!   sidecar (the gateway passes mTLS through by SNI). The gateway forwards only if a
//!   `networking.istio.io` Gateway selecting its pods has an `AUTO_PASSTHROUGH` TLS server on
//!   that port for the host (`*.local` in Istio's `expose-services.yaml`); otherwise the
//!   connection is refused. Endpoints are tried in round-robin order per client pod (sorted by
//!   cluster and pod name), with Istio's default retry policy: two retries on connection
//!   failures, to other hosts when there are any.
//! * **mTLS** (both sides have a sidecar): see [`mtls`]; a failed handshake is a connection
//!   failure with the TLS error as transport failure reason.
//! * **Answers**: the application's (see [`apps`]); Envoy's local replies are 503
//!   `no healthy upstream` and `upstream connect error or disconnect/reset before headers. ...`.
//!
//! Not modelled: PeerAuthentication (PERMISSIVE is assumed), DestinationRules, locality load
//! balancing, outlier detection, timeouts, meshNetworks, ambient/HBONE, retries beyond the
//! default policy, the gateway balancing across its own cluster's endpoints (a cross-network
//! pick is one remote pod).

pub mod apps;
pub mod mtls;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::cluster::Cluster;
use crate::injector;
use crate::istiod::networkz::{self, NetworkGateway, NETWORK_LABEL};
use crate::istiod::{self, Istiod};
use crate::object;
use crate::selectors::map_selector_matches;
use crate::store::{Event, EventKind, ResKey};
use apps::Reply;

/// Per-cluster data-plane memory.
#[derive(Default)]
pub struct State {
    /// Workload certificates by pod uid, issued when the pod started.
    pub certs: HashMap<String, mtls::WorkloadCert>,
    /// Round-robin position per (client pod uid, destination).
    pub next: HashMap<(String, String), usize>,
}

/// What a client's request ends with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The host name does not resolve.
    Unresolved,
    /// Nothing accepted the TCP connection.
    Refused,
    /// An HTTP response (from the application or the client's Envoy).
    Http(Reply),
}

const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
const REFUSED: (&str, &str) = (
    "remote connection failure",
    "delayed connect error: Connection refused",
);
/// Istio's default retry policy: 2 retries (3 tries) on connect failures.
const TRIES: usize = 3;

fn envoy_503(body: String) -> Reply {
    Reply { status: 503, body }
}

/// The Service a host name resolves to in the client's cluster: (name, namespace).
pub fn resolve(cluster: &Cluster, client_ns: &str, host: &str) -> Option<(String, String)> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let services = ResKey::new("", "services");
    if host.parse::<std::net::IpAddr>().is_ok() {
        return cluster
            .store
            .list(&services, None)
            .0
            .iter()
            .find(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str) == Some(host.as_str()))
            .map(|s| {
                (
                    object::name(s).to_string(),
                    object::namespace(s).to_string(),
                )
            });
    }
    let labels: Vec<&str> = host.split('.').collect();
    let (name, ns) = match labels.as_slice() {
        [name] => (*name, client_ns),
        [name, ns] | [name, ns, "svc"] | [name, ns, "svc", "cluster", "local"] => (*name, *ns),
        _ => return None,
    };
    let svc = cluster.store.get(&services, ns, name)?;
    (svc.pointer("/spec/type").and_then(Value::as_str) != Some("ExternalName"))
        .then(|| (name.to_string(), ns.to_string()))
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && !object::is_deleting(pod)
        && pod
            .pointer("/status/podIP")
            .and_then(Value::as_str)
            .is_some()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

/// The container port a Service port's `targetPort` names on this pod.
fn target_port(svc_port: &Value, pod: &Value) -> Option<u16> {
    match svc_port.get("targetPort").or_else(|| svc_port.get("port")) {
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(name)) => name.parse::<u16>().ok().or_else(|| {
            pod.pointer("/spec/containers")
                .and_then(Value::as_array)?
                .iter()
                .flat_map(|c| {
                    c.get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                })
                .find(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str()))
                .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
                .and_then(|p| u16::try_from(p).ok())
        }),
        _ => None,
    }
}

/// One endpoint of the destination.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub cluster: String,
    pub pod: Arc<Value>,
    pub port: u16,
    pub network: String,
    pub sidecar: bool,
    /// The gateway it is reached through (another network).
    pub gateway: Option<NetworkGateway>,
}

/// The network of a cluster: the `topology.istio.io/network` label of its system namespace.
pub fn cluster_network(cluster: &Cluster, system_ns: &str) -> String {
    cluster
        .store
        .get(&ResKey::new("", "namespaces"), "", system_ns)
        .and_then(|n| {
            object::labels(&n)
                .and_then(|l| l.get(NETWORK_LABEL))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default()
}

fn pod_network(pod: &Value, cluster_net: &str) -> String {
    object::labels(pod)
        .and_then(|l| l.get(NETWORK_LABEL))
        .and_then(Value::as_str)
        .unwrap_or(cluster_net)
        .to_string()
}

/// Ready endpoints of Service `ns/name` in one cluster (selected by that cluster's Service),
/// for the Service port `port`.
pub fn endpoints_in(
    cluster: &Cluster,
    name: &str,
    ns: &str,
    port: u16,
    system_ns: &str,
) -> Vec<Endpoint> {
    let Some(svc) = cluster.store.get(&ResKey::new("", "services"), ns, name) else {
        return Vec::new();
    };
    let Some(svc_port) = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
        })
        .cloned()
    else {
        return Vec::new();
    };
    let net = cluster_network(cluster, system_ns);
    let mut out: Vec<Endpoint> = cluster
        .store
        .list(&ResKey::new("", "pods"), Some(ns))
        .0
        .into_iter()
        .filter(|p| {
            pod_ready(p) && map_selector_matches(svc.pointer("/spec/selector"), object::labels(p))
        })
        .filter_map(|p| {
            Some(Endpoint {
                cluster: cluster.name.clone(),
                port: target_port(&svc_port, &p)?,
                network: pod_network(&p, &net),
                sidecar: injector::has_sidecar(&p),
                gateway: None,
                pod: p,
            })
        })
        .collect();
    out.sort_by(|a, b| object::name(&a.pod).cmp(object::name(&b.pod)));
    out
}

/// What the client's Envoy knows: the clusters its istiod reads (itself first, then synced
/// remotes) and the network gateways.
pub struct MeshView {
    pub system_ns: String,
    pub clusters: Vec<(String, Arc<Cluster>)>,
    pub gateways: Vec<NetworkGateway>,
}

/// The istiod serving a revision in this cluster (Running and Ready; the revision's, else any).
pub fn istiod_for(cluster: &Cluster, revision: &str) -> Option<Istiod> {
    let mut pods: Vec<Arc<Value>> = cluster
        .store
        .list(&ResKey::new("", "pods"), None)
        .0
        .into_iter()
        .filter(|p| istiod::running_and_ready(p) && istiod::identify(p).is_some())
        .collect();
    pods.sort_by(|a, b| object::name(a).cmp(object::name(b)));
    let rev_of = |p: &Value| {
        object::labels(p)
            .and_then(|l| l.get("istio.io/rev"))
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string()
    };
    pods.iter()
        .find(|p| rev_of(p) == revision)
        .or_else(|| pods.first())
        .and_then(|p| istiod::identify(p))
}

/// The mesh as the client pod's sidecar sees it.
pub fn mesh_view(cluster: &Arc<Cluster>, client: &Value) -> MeshView {
    let rev = injector::injected_revision(client).unwrap_or_else(|| "default".into());
    let Some(istiod) = istiod_for(cluster, &rev) else {
        // No istiod: nothing beyond the local cluster is known.
        return MeshView {
            system_ns: "istio-system".into(),
            clusters: vec![(cluster.name.clone(), cluster.clone())],
            gateways: Vec::new(),
        };
    };
    let mut clusters = vec![(istiod.cluster_id.clone(), cluster.clone())];
    let mut gateways = networkz::gateways_in(&cluster.store, &istiod.cluster_id);
    if istiod.multicluster {
        for (id, remote) in istiod::list_remote_clusters(cluster, &istiod).1 {
            gateways.extend(networkz::gateways_in(&remote.store, &id));
            clusters.push((id, remote));
        }
    }
    MeshView {
        system_ns: istiod.namespace,
        clusters,
        gateways: networkz::sorted(gateways),
    }
}

/// The endpoints a sidecar client on `client_network` may pick for `ns/name:port`.
pub fn candidates(
    view: &MeshView,
    client_network: &str,
    name: &str,
    ns: &str,
    port: u16,
) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for (_, c) in &view.clusters {
        for mut ep in endpoints_in(c, name, ns, port, &view.system_ns) {
            if ep.network != client_network {
                // Only through the network's gateway, and only with mTLS (SNI passthrough).
                let gw = view
                    .gateways
                    .iter()
                    .find(|g| g.Network == ep.network && g.Port != 0);
                match gw {
                    Some(g) if ep.sidecar => ep.gateway = Some(g.clone()),
                    _ => continue,
                }
            }
            out.push(ep);
        }
    }
    out.sort_by(|a, b| {
        (a.cluster.as_str(), object::name(&a.pod)).cmp(&(b.cluster.as_str(), object::name(&b.pod)))
    });
    out
}

fn host_matches(pattern: &str, fqdn: &str) -> bool {
    let pattern = pattern.rsplit_once('/').map_or(pattern, |(_, h)| h);
    match pattern.strip_prefix('*') {
        Some(suffix) => fqdn.ends_with(suffix),
        None => pattern == fqdn,
    }
}

/// Whether the gateway forwards TLS for `fqdn` on its port: an `AUTO_PASSTHROUGH` server of a
/// `networking.istio.io` Gateway selecting a Ready pod behind the gateway Service.
pub fn gateway_forwards(view: &MeshView, gw: &NetworkGateway, fqdn: &str) -> bool {
    let Some((_, cluster)) = view.clusters.iter().find(|(id, _)| *id == gw.Cluster) else {
        return false;
    };
    let services = cluster.store.list(&ResKey::new("", "services"), None).0;
    let Some(svc) = services.iter().find(|s| {
        networkz::gateways_of_service(s, &gw.Cluster)
            .iter()
            .any(|g| g.Addr == gw.Addr && g.Port == gw.Port)
    }) else {
        return false;
    };
    let pods: Vec<Arc<Value>> = cluster
        .store
        .list(&ResKey::new("", "pods"), Some(object::namespace(svc)))
        .0
        .into_iter()
        .filter(|p| {
            pod_ready(p) && map_selector_matches(svc.pointer("/spec/selector"), object::labels(p))
        })
        .collect();
    let gateways = cluster
        .store
        .list(&ResKey::new("networking.istio.io", "gateways"), None)
        .0;
    gateways.iter().any(|g| {
        let selector = g.pointer("/spec/selector");
        let selects = pods
            .iter()
            .any(|p| match selector.and_then(Value::as_object) {
                Some(m) if !m.is_empty() => map_selector_matches(selector, object::labels(p)),
                _ => true,
            });
        selects
            && g.pointer("/spec/servers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|s| {
                    s.pointer("/port/number").and_then(Value::as_u64) == Some(u64::from(gw.Port))
                        && s.pointer("/tls/mode").and_then(Value::as_str)
                            == Some("AUTO_PASSTHROUGH")
                        && s.get("hosts")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .any(|h| host_matches(h, fqdn))
                })
    })
}

/// The trust bundle sidecars of a cluster/revision use now: what their istiod serves, else the
/// last one it published.
pub fn trust_bundle(cluster: &Cluster, revision: &str) -> String {
    if let Some(i) = istiod_for(cluster, revision) {
        if let Some(mode) = cluster
            .istiod
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .ca
            .get(&i.uid)
        {
            return mode.roots().to_string();
        }
    }
    let mut cms = cluster.store.list(&ResKey::new("", "configmaps"), None).0;
    cms.retain(|c| object::name(c) == istiod::ca::ROOT_CONFIGMAP);
    cms.sort_by(|a, b| object::namespace(a).cmp(object::namespace(b)));
    cms.first()
        .and_then(|c| c.pointer("/data/root-cert.pem"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn revision_of(pod: &Value) -> String {
    injector::injected_revision(pod).unwrap_or_else(|| "default".into())
}

fn cert_of(cluster: &Cluster, pod: &Value) -> Option<mtls::WorkloadCert> {
    cluster
        .dataplane
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .certs
        .get(object::uid(pod))
        .cloned()
}

/// What the server side does with a request that reached the pod: the inbound sidecar (if any)
/// passes it to the application; `Err` when nothing accepts the client's connection.
fn serve(ep: &Endpoint, path: &str) -> Result<Reply, (&'static str, &'static str)> {
    match (apps::answer(&ep.pod, ep.port, path), ep.sidecar) {
        (Some(r), _) => Ok(r),
        // The inbound Envoy accepted the connection but cannot reach the application.
        (None, true) => Ok(envoy_503(format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {}, transport failure reason: {}",
            REFUSED.0, REFUSED.1
        ))),
        (None, false) => Err(REFUSED),
    }
}

fn next_index(cluster: &Cluster, key: (String, String), n: usize) -> usize {
    let mut st = cluster.dataplane.lock().unwrap_or_else(|e| e.into_inner());
    let c = st.next.entry(key).or_insert(0);
    let i = *c % n;
    *c = c.wrapping_add(1);
    i
}

/// `GET http://host:port/path` from `client` (a pod of `cluster`).
pub fn http_get(
    cluster: &Arc<Cluster>,
    client: &Value,
    host: &str,
    port: u16,
    path: &str,
) -> Outcome {
    let Some((name, ns)) = resolve(cluster, object::namespace(client), host) else {
        return Outcome::Unresolved;
    };
    let fqdn = format!("{name}.{ns}.svc.cluster.local");
    let key = (object::uid(client).to_string(), format!("{fqdn}:{port}"));
    if !injector::has_sidecar(client) {
        let eps = endpoints_in(cluster, &name, &ns, port, "istio-system");
        if eps.is_empty() {
            return Outcome::Refused;
        }
        let ep = &eps[next_index(cluster, key, eps.len())];
        return match serve(ep, path) {
            Ok(r) => Outcome::Http(r),
            Err(_) => Outcome::Refused,
        };
    }
    let view = mesh_view(cluster, client);
    through_sidecar(cluster, client, &view, &name, &ns, port, path)
}

/// The request as the client's Envoy routes it, given what its istiod told it (`view`).
pub fn through_sidecar(
    cluster: &Cluster,
    client: &Value,
    view: &MeshView,
    name: &str,
    ns: &str,
    port: u16,
    path: &str,
) -> Outcome {
    let fqdn = format!("{name}.{ns}.svc.cluster.local");
    let key = (object::uid(client).to_string(), format!("{fqdn}:{port}"));
    let client_net = pod_network(client, &cluster_network(cluster, &view.system_ns));
    let eps = candidates(view, &client_net, name, ns, port);
    if eps.is_empty() {
        return Outcome::Http(envoy_503(NO_HEALTHY_UPSTREAM.into()));
    }
    let client_cert = cert_of(cluster, client);
    let client_bundle = trust_bundle(cluster, &revision_of(client));
    let mut tried: Vec<usize> = Vec::new();
    let mut last = REFUSED;
    for _ in 0..TRIES {
        let mut i = next_index(cluster, key.clone(), eps.len());
        // Envoy's previous_hosts retry predicate: another host while there is one.
        while tried.contains(&i) && tried.len() < eps.len() {
            i = next_index(cluster, key.clone(), eps.len());
        }
        tried.push(i);
        match attempt(
            view,
            &eps[i],
            client_cert.as_ref(),
            &client_bundle,
            &fqdn,
            path,
        ) {
            Ok(r) => return Outcome::Http(r),
            Err(why) => last = why,
        }
    }
    Outcome::Http(envoy_503(format!(
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {}, transport failure reason: {}",
        last.0, last.1
    )))
}

/// One try of the client's Envoy against one endpoint.
fn attempt(
    view: &MeshView,
    ep: &Endpoint,
    client_cert: Option<&mtls::WorkloadCert>,
    client_bundle: &str,
    fqdn: &str,
    path: &str,
) -> Result<Reply, (&'static str, &'static str)> {
    if let Some(gw) = &ep.gateway {
        if !gateway_forwards(view, gw, fqdn) {
            return Err(REFUSED);
        }
    }
    if ep.sidecar {
        let server_cluster = view
            .clusters
            .iter()
            .find(|(_, c)| c.name == ep.cluster)
            .map(|(_, c)| c);
        let (server_cert, server_bundle) = match server_cluster {
            Some(c) => (cert_of(c, &ep.pod), trust_bundle(c, &revision_of(&ep.pod))),
            None => (None, String::new()),
        };
        if let Some(tfr) = mtls::handshake(
            client_cert,
            client_bundle,
            server_cert.as_ref(),
            &server_bundle,
        ) {
            return Err(("connection failure", tfr));
        }
    }
    serve(ep, path)
}

/// Issue the workload certificate of a sidecar pod that started, if it has none yet and its
/// istiod can sign (pilot-agent keeps asking until istiod answers).
pub fn issue_for(cluster: &Cluster, pod: &Value) {
    if !injector::has_sidecar(pod)
        || pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running")
    {
        return;
    }
    let uid = object::uid(pod).to_string();
    if cluster
        .dataplane
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .certs
        .contains_key(&uid)
    {
        return;
    }
    let Some(i) = istiod_for(cluster, &revision_of(pod)) else {
        return;
    };
    let Some(signer) = cluster
        .istiod
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ca
        .get(&i.uid)
        .map(|m| m.signer().clone())
    else {
        return;
    };
    let sa = pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let spiffe = format!(
        "spiffe://cluster.local/ns/{}/sa/{sa}",
        object::namespace(pod)
    );
    if let Some(cert) = mtls::issue(&signer, &spiffe) {
        cluster
            .dataplane
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .certs
            .entry(uid)
            .or_insert(cert);
    }
}

/// Sidecars waiting for a certificate get one (an istiod's CA became available).
pub fn issue_missing(cluster: &Cluster) {
    for p in cluster.store.list(&ResKey::new("", "pods"), None).0 {
        issue_for(cluster, &p);
    }
}

/// Controller hook: certificates follow pods.
pub fn on_event(cluster: &Cluster, ev: &Event) {
    if ev.res != ResKey::new("", "pods") {
        return;
    }
    if ev.kind == EventKind::Deleted {
        let mut st = cluster.dataplane.lock().unwrap_or_else(|e| e.into_inner());
        let uid = object::uid(&ev.obj).to_string();
        st.certs.remove(&uid);
        st.next.retain(|(u, _), _| *u != uid);
        return;
    }
    if istiod::identify(&ev.obj).is_some() {
        issue_missing(cluster);
    } else {
        issue_for(cluster, &ev.obj);
    }
}

#[cfg(test)]
mod tests;
