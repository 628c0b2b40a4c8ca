//! What istiod itself says about the mesh, read the way `istioctl remote-clusters` reads it: a
//! port-forward to each istiod pod's monitoring port and its debug endpoints there. Each
//! replica runs its own informers, so each is asked.
//!
//! Istio 1.30 answers these endpoints only to callers on localhost (or with an Istio identity
//! from istiod's namespace): through the API server's pod proxy they answer 401, through a
//! port-forward the caller is local.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde::Deserialize;

use crate::kube::{pod, portforward, Cluster, Deadline, KubeError};

/// istiod's monitoring port, where the debug endpoints are served.
pub const MONITORING_PORT: u16 = 15014;
/// Label istiod's pods carry (Istio's charts).
const APP_SELECTOR: &str = "app=istiod";
const REVISION_LABEL: &str = "istio.io/rev";

/// One istiod pod.
#[derive(Clone, Debug, PartialEq)]
pub struct IstiodPod {
    pub name: String,
    pub ready: bool,
    /// The image tag of its `discovery` container (the Istio version).
    pub version: String,
    /// Its `istio.io/rev` label (`default` for the default revision).
    pub revision: String,
    /// `EXTERNAL_ISTIOD=true`: it also serves remote clusters (their injection, their CA
    /// roots, leader election there).
    pub serves_remotes: bool,
}

/// One entry of `/debug/clusterz` (`pkg/cluster/debug.go`): a cluster istiod reads.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct RemoteCluster {
    pub id: String,
    #[serde(rename = "secretName", default)]
    pub secret_name: String,
    #[serde(rename = "syncStatus", default)]
    pub sync_status: String,
}

/// One entry of `/debug/networkz`: a cross-network gateway istiod routes through. Go field
/// names, no JSON tags.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct NetworkGateway {
    #[serde(rename = "Network", default)]
    pub network: String,
    #[serde(rename = "Cluster", default)]
    pub cluster: String,
    #[serde(rename = "Addr", default)]
    pub addr: String,
    #[serde(rename = "Port", default)]
    pub port: u32,
}

/// How synced a remote cluster is, worst last: the order in which replicas are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sync {
    Synced,
    Syncing,
    Timeout,
    Closed,
    /// istiod does not list the cluster at all (the secret is not (yet) read, or its
    /// data key names another cluster).
    NotSeen,
}

impl Sync {
    pub fn parse(status: &str) -> Sync {
        match status {
            "synced" => Sync::Synced,
            "syncing" => Sync::Syncing,
            "timeout" => Sync::Timeout,
            "closed" => Sync::Closed,
            _ => Sync::NotSeen,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sync::Synced => "synced",
            Sync::Syncing => "syncing",
            Sync::Timeout => "timeout",
            Sync::Closed => "closed",
            Sync::NotSeen => "not_seen",
        }
    }

    /// What the status means for the person reading an error.
    pub fn meaning(self) -> &'static str {
        match self {
            Sync::Synced => "istiod reads the remote API server",
            Sync::Syncing => "istiod has not completed its first read of the remote API server yet: it cannot reach it or authenticate to it, or it is still listing",
            Sync::Timeout => "istiod gave up waiting for its first read of the remote API server (PILOT_REMOTE_CLUSTER_TIMEOUT): it cannot reach the server or its credentials are rejected; it keeps retrying",
            Sync::Closed => "istiod stopped reading the remote (the secret was removed or replaced)",
            Sync::NotSeen => "istiod does not list this cluster: the secret is not read yet, lacks the label istio/multiCluster=true, is in another namespace than istiod, or its data key is another cluster ID",
        }
    }
}

/// What one istiod pod reports.
#[derive(Clone, Debug)]
pub struct PodView {
    pub pod: IstiodPod,
    /// The clusters it reads, the config cluster first; `Err` when it could not be asked.
    pub clusters: Result<Vec<RemoteCluster>, String>,
}

impl PodView {
    /// The status this pod reports for `cluster_id`.
    pub fn status_of(&self, cluster_id: &str) -> Option<Sync> {
        let clusters = self.clusters.as_ref().ok()?;
        Some(
            clusters
                .iter()
                .find(|c| c.id == cluster_id)
                .map_or(Sync::NotSeen, |c| Sync::parse(&c.sync_status)),
        )
    }
}

fn image_tag(image: &str) -> String {
    // `hub/pilot:1.30.3`, possibly with a registry port or a digest.
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split_once(':')
        .map(|(_, tag)| tag.to_string())
        .unwrap_or_default()
}

fn describe_pod(p: &Pod) -> IstiodPod {
    let spec = p.spec.as_ref();
    let container = spec.and_then(|s| {
        s.containers
            .iter()
            .find(|c| c.name == "discovery")
            .or(s.containers.first())
    });
    IstiodPod {
        name: p.metadata.name.clone().unwrap_or_default(),
        ready: pod::is_ready(p),
        version: container
            .and_then(|c| c.image.as_deref())
            .map(image_tag)
            .unwrap_or_default(),
        revision: p
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVISION_LABEL))
            .cloned()
            .unwrap_or_else(|| "default".into()),
        serves_remotes: container
            .and_then(|c| c.env.as_ref())
            .and_then(|env| env.iter().find(|e| e.name == "EXTERNAL_ISTIOD"))
            .and_then(|e| e.value.as_deref())
            == Some("true"),
    }
}

/// istiod's pods in `namespace`, of `revision` when given (`None`: every revision), sorted
/// by name.
pub async fn pods(
    cluster: &Cluster,
    namespace: &str,
    revision: Option<&str>,
    deadline: &Deadline,
) -> Result<Vec<IstiodPod>, KubeError> {
    let api: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let selector = match revision {
        Some(rev) => format!("{APP_SELECTOR},{REVISION_LABEL}={rev}"),
        None => APP_SELECTOR.to_string(),
    };
    let mut pods: Vec<IstiodPod> = cluster
        .list(&api, &ListParams::default().labels(&selector), deadline)
        .await?
        .iter()
        .map(describe_pod)
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pods)
}

/// GETs a debug endpoint of one istiod pod and decodes its JSON.
async fn debug_get<T: serde::de::DeserializeOwned + Default>(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    path: &str,
    deadline: &Deadline,
) -> Result<T, KubeError> {
    let resp = portforward::get(cluster, namespace, pod, MONITORING_PORT, path, deadline).await?;
    let fail = |message: String| KubeError::Unreachable {
        cluster: cluster.name.clone(),
        action: format!("reading {path} from istiod pod {namespace}/{pod}"),
        message,
    };
    match resp.status {
        200 => {}
        400 => {
            return Err(fail(format!(
                "istiod answered 400 ({}): multicluster discovery is off in this istiod",
                String::from_utf8_lossy(&resp.body).trim()
            )))
        }
        401 | 403 => {
            return Err(fail(format!(
                "istiod refused the request ({}): its debug endpoints answer only local callers, which a port-forward is; something between (a sidecar, a proxy) changed the caller",
                resp.status
            )))
        }
        code => return Err(fail(format!("istiod answered HTTP {code}"))),
    }
    // Go encodes a nil slice as `null`.
    let parsed: Option<T> = serde_json::from_slice(&resp.body)
        .map_err(|e| fail(format!("the answer is not the JSON istiod serves: {e}")))?;
    Ok(parsed.unwrap_or_default())
}

/// `/debug/clusterz` of one istiod pod.
pub async fn clusterz(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    deadline: &Deadline,
) -> Result<Vec<RemoteCluster>, KubeError> {
    debug_get(cluster, namespace, pod, "/debug/clusterz", deadline).await
}

/// `/debug/networkz` of one istiod pod.
pub async fn networkz(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    deadline: &Deadline,
) -> Result<Vec<NetworkGateway>, KubeError> {
    debug_get(cluster, namespace, pod, "/debug/networkz", deadline).await
}

/// How long one istiod replica gets to answer one read.
const PER_POD_READ: std::time::Duration = std::time::Duration::from_secs(8);

/// Asks every Ready istiod pod (of `revision`, or all) for the clusters it reads, in
/// parallel. Pods that are not Ready are listed with an error, not asked.
pub async fn views(
    cluster: &Cluster,
    namespace: &str,
    revision: Option<&str>,
    deadline: &Deadline,
) -> Result<Vec<PodView>, KubeError> {
    let pods = pods(cluster, namespace, revision, deadline).await?;
    Ok(ask(cluster, namespace, pods, deadline).await)
}

/// Asks each of `pods` that is Ready for the clusters it reads, in parallel; the others are
/// listed with an error, not asked.
pub async fn ask(
    cluster: &Cluster,
    namespace: &str,
    pods: Vec<IstiodPod>,
    deadline: &Deadline,
) -> Vec<PodView> {
    // One replica that does not answer (replaced since it was listed, overloaded) must not
    // hold up the others, nor a caller that polls.
    let per_pod = &deadline.capped(PER_POD_READ);
    let asks = pods.into_iter().map(|pod| async move {
        let clusters = if pod.ready {
            clusterz(cluster, namespace, &pod.name, per_pod)
                .await
                .map_err(|e| e.to_string())
        } else {
            Err("not Ready".to_string())
        };
        PodView { pod, clusters }
    });
    futures::future::join_all(asks).await
}

/// [`views`] shared between callers asking about the same istiod within `max_age`: a refresh
/// of many remote secrets in one target asks each istiod pod once, not once per secret.
pub async fn views_shared(
    cluster: &Cluster,
    namespace: &str,
    max_age: std::time::Duration,
    deadline: &Deadline,
) -> Result<Vec<PodView>, String> {
    type Entry = (std::time::Instant, Result<Vec<PodView>, String>);
    type Cell = std::sync::Arc<tokio::sync::OnceCell<Entry>>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<BTreeMap<(String, String), Cell>>> =
        std::sync::OnceLock::new();
    let key = (cluster.name.clone(), namespace.to_string());
    let cell = {
        let mut map = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let fresh = map
            .get(&key)
            .and_then(|c| c.get())
            .is_some_and(|(at, _)| at.elapsed() <= max_age);
        if !fresh && map.get(&key).is_some_and(|c| c.initialized()) {
            map.remove(&key);
        }
        map.entry(key).or_default().clone()
    };
    let (_, result) = cell
        .get_or_init(|| async {
            let r = views(cluster, namespace, None, deadline)
                .await
                .map_err(|e| e.to_string());
            (std::time::Instant::now(), r)
        })
        .await;
    result.clone()
}

/// The least synced status of each remote cluster across the views that answered, with the
/// secret that configures it. The config cluster (first entry, no secret) is left out.
pub fn least_synced(views: &[PodView]) -> BTreeMap<String, (String, Sync)> {
    let answered: Vec<&Vec<RemoteCluster>> = views
        .iter()
        .filter_map(|v| v.clusters.as_ref().ok())
        .collect();
    let mut out: BTreeMap<String, (String, Sync)> = BTreeMap::new();
    for clusters in &answered {
        for c in clusters.iter().filter(|c| !c.secret_name.is_empty()) {
            out.entry(c.id.clone())
                .or_insert_with(|| (c.secret_name.clone(), Sync::Synced));
        }
    }
    for (id, (_, worst)) in out.iter_mut() {
        for clusters in &answered {
            let s = clusters
                .iter()
                .find(|c| &c.id == id)
                .map_or(Sync::NotSeen, |c| Sync::parse(&c.sync_status));
            *worst = (*worst).max(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clusterz_and_networkz_decode_as_istiod_writes_them() {
        let clusterz = r#"[{"id":"east","secretName":"","syncStatus":"synced"},
            {"id":"west","secretName":"istio-system/istio-remote-secret-west","syncStatus":"timeout"}]"#;
        let got: Vec<RemoteCluster> = serde_json::from_str(clusterz).unwrap();
        assert_eq!(got[1].id, "west");
        assert_eq!(Sync::parse(&got[1].sync_status), Sync::Timeout);
        assert_eq!(got[0].secret_name, "");

        let networkz = r#"[{"Network":"net2","Cluster":"c3","Addr":"203.0.113.7","Port":15443,"HBONEPort":15008,"ServiceAccount":{"Namespace":"istio-system","Name":"istio-eastwestgateway"}}]"#;
        let gws: Vec<NetworkGateway> = serde_json::from_str(networkz).unwrap();
        assert_eq!(
            gws[0],
            NetworkGateway {
                network: "net2".into(),
                cluster: "c3".into(),
                addr: "203.0.113.7".into(),
                port: 15443
            }
        );
        // Go's nil slice.
        let none: Option<Vec<NetworkGateway>> = serde_json::from_str("null").unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn unknown_statuses_are_not_taken_for_synced() {
        assert_eq!(Sync::parse("synced"), Sync::Synced);
        assert_eq!(Sync::parse("Synced"), Sync::NotSeen);
        assert_eq!(Sync::parse(""), Sync::NotSeen);
        assert!(Sync::Synced < Sync::Syncing && Sync::Timeout < Sync::NotSeen);
    }

    fn view(name: &str, clusters: &[(&str, &str)]) -> PodView {
        PodView {
            pod: IstiodPod {
                name: name.into(),
                ready: true,
                version: "1.30.3".into(),
                revision: "default".into(),
                serves_remotes: false,
            },
            clusters: Ok(std::iter::once(("self", ""))
                .chain(clusters.iter().copied())
                .map(|(id, status)| RemoteCluster {
                    id: id.into(),
                    secret_name: if id == "self" {
                        String::new()
                    } else {
                        format!("istio-system/istio-remote-secret-{id}")
                    },
                    sync_status: if id == "self" { "synced" } else { status }.into(),
                })
                .collect()),
        }
    }

    #[test]
    fn the_least_synced_replica_decides() {
        let a = view("istiod-a", &[("c2", "synced"), ("c3", "synced")]);
        let b = view("istiod-b", &[("c2", "syncing")]);
        let mut down = view("istiod-c", &[]);
        down.clusters = Err("not Ready".into());
        let got = least_synced(&[a, b, down]);
        assert_eq!(got["c2"].1, Sync::Syncing);
        // Replica b does not list c3 at all.
        assert_eq!(got["c3"].1, Sync::NotSeen);
        assert_eq!(got["c2"].0, "istio-system/istio-remote-secret-c2");
        assert!(
            !got.contains_key("self"),
            "the config cluster is not a remote"
        );
    }

    #[test]
    fn versions_come_from_the_image_tag() {
        assert_eq!(image_tag("docker.io/istio/pilot:1.30.3"), "1.30.3");
        assert_eq!(
            image_tag("registry:5000/istio/pilot:1.30.3-distroless"),
            "1.30.3-distroless"
        );
        assert_eq!(image_tag("registry:5000/istio/pilot"), "");
        assert_eq!(image_tag("istio/pilot:1.30.3@sha256:abc"), "1.30.3");
    }
}
