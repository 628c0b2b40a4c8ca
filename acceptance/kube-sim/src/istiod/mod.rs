//! A simulated istiod behind the ports of a Running, Ready istiod pod (label `app=istiod`, a
//! container named `discovery`, as Istio's charts make it): the monitoring port 15014 and the
//! HTTP port 8080 serve `/debug/clusterz` and `/debug/networkz` computed from the cluster's own
//! state; 8080 also serves `/ready`. Debug endpoints answer local callers only (a port-forward
//! arrives on the pod's loopback); anything else — the API server's pod proxy — gets 401, as
//! istiod's `allowAuthenticatedOrLocalhost` answers a caller with no Istio identity.

pub mod ca;
pub mod networkz;
pub mod remotes;

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::cluster::Cluster;
use crate::object;
use remotes::RemoteKey;

pub const MONITORING_PORT: u16 = 15014;
pub const HTTP_PORT: u16 = 8080;
const DEFAULT_CLUSTER_ID: &str = "Kubernetes";
const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(30);

/// Per-cluster memory of the simulated istiods.
#[derive(Default)]
pub struct State {
    /// Content hash and the time each remote-secret entry's current content appeared.
    pub seen: HashMap<RemoteKey, (u64, OffsetDateTime)>,
    /// Per istiod pod uid: remotes whose initial sync completed, by content hash.
    pub synced: HashMap<String, HashMap<RemoteKey, u64>>,
    /// istiod pods whose gateway list was ever non-empty (Go encodes the never-set nil slice as
    /// `null`, a later empty one as `[]`).
    pub had_gateways: HashSet<String>,
    /// Per istiod pod uid: the CA it runs and the root bundle it serves.
    pub ca: HashMap<String, ca::CaMode>,
    /// istiod pods that refused the last `cacerts` change.
    pub rejected: HashSet<String>,
}

/// What the simulation reads from an istiod pod.
#[derive(Debug, Clone)]
pub struct Istiod {
    pub namespace: String,
    pub uid: String,
    pub cluster_id: String,
    pub remote_timeout: Duration,
    /// False when `--registries` leaves out Kubernetes: no multicluster controller.
    pub multicluster: bool,
    pub started: OffsetDateTime,
    /// `ISTIO_MULTIROOT_MESH=true`: a root bundle may grow or shrink.
    pub multiroot: bool,
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container
        .get("env")
        .and_then(Value::as_array)?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")
        .and_then(Value::as_str)
}

fn registries_include_kubernetes(args: &[&str]) -> bool {
    let mut value = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--registries=") {
            value = Some(v.to_string());
        } else if *a == "--registries" {
            value = Some(args.get(i + 1).copied().unwrap_or("").to_string());
        }
    }
    value.is_none_or(|v| v.split(',').any(|r| r.trim() == "Kubernetes"))
}

/// The istiod a pod runs, if it is one.
pub fn identify(pod: &Value) -> Option<Istiod> {
    let app = object::labels(pod)
        .and_then(|l| l.get("app"))
        .and_then(Value::as_str);
    if app != Some("istiod") {
        return None;
    }
    let container = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("discovery"))?;
    let args: Vec<&str> = container
        .get("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let started = pod
        .pointer("/status/startTime")
        .and_then(Value::as_str)
        .or_else(|| object::meta_str(pod, "creationTimestamp"))
        .and_then(|s| OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    Some(Istiod {
        namespace: object::namespace(pod).to_string(),
        uid: object::uid(pod).to_string(),
        cluster_id: env_of(container, "CLUSTER_ID")
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_CLUSTER_ID)
            .to_string(),
        remote_timeout: env_of(container, "PILOT_REMOTE_CLUSTER_TIMEOUT")
            .and_then(remotes::parse_go_duration)
            .unwrap_or(DEFAULT_REMOTE_TIMEOUT),
        multicluster: registries_include_kubernetes(&args),
        started,
        multiroot: env_of(container, "ISTIO_MULTIROOT_MESH") == Some("true"),
    })
}

pub fn running_and_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("ContainersReady")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

/// The istiod listening on `port` of this pod, if one does (its container must be running).
pub fn listening(pod: &Value, port: u16) -> Option<Istiod> {
    if port != MONITORING_PORT && port != HTTP_PORT {
        return None;
    }
    if !running_and_ready(pod) {
        return None;
    }
    identify(pod)
}

/// Remember when remote-secret content appeared (called for every secret event).
pub fn note_secret(cluster: &Cluster, secret: &Value, deleted: bool) {
    let entries = if deleted || !remotes::is_remote_secret(secret) {
        Vec::new()
    } else {
        remotes::entries_of(secret)
    };
    let secret_key = format!("{}/{}", object::namespace(secret), object::name(secret));
    let now = OffsetDateTime::now_utc();
    let mut st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
    // istiod builds a new Cluster (initialSync false) for every added or changed entry, and
    // drops the old one with the entry: what was synced before counts for nothing.
    let mut restarted: Vec<RemoteKey> = st
        .seen
        .keys()
        .filter(|k| k.0 == secret_key && !entries.iter().any(|e| &e.key == *k))
        .cloned()
        .collect();
    st.seen
        .retain(|k, _| k.0 != secret_key || entries.iter().any(|e| &e.key == k));
    for e in entries {
        let fresh = st.seen.get(&e.key).is_none_or(|(h, _)| *h != e.hash);
        if fresh {
            restarted.push(e.key.clone());
            st.seen.insert(e.key, (e.hash, now));
        }
    }
    for latches in st.synced.values_mut() {
        for k in &restarted {
            latches.remove(k);
        }
    }
}

/// One `/debug/clusterz` entry (`cluster.DebugInfo`).
#[derive(serde::Serialize, Debug, Clone, PartialEq)]
pub struct DebugInfo {
    pub id: String,
    #[serde(rename = "secretName")]
    pub secret_name: String,
    #[serde(rename = "syncStatus")]
    pub sync_status: String,
}

/// `ListRemoteClusters()`: the config cluster, then each registered remote with its status.
/// Also returns the sibling clusters of the synced remotes (for network gateways). Completed
/// syncs are remembered per istiod pod.
pub fn list_remote_clusters(
    cluster: &Cluster,
    istiod: &Istiod,
) -> (Vec<DebugInfo>, Vec<(String, Arc<Cluster>)>) {
    let mut out = vec![DebugInfo {
        id: istiod.cluster_id.clone(),
        secret_name: String::new(),
        sync_status: remotes::SYNCED.into(),
    }];
    let mut synced_remotes = Vec::new();
    let delay = Duration::from_millis(cluster.settings().istiod.remote_sync_delay_ms);
    let now = OffsetDateTime::now_utc();
    for (entry, target) in remotes::remotes(cluster, &istiod.namespace, &istiod.cluster_id) {
        let (seen_at, latched) = {
            let mut st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
            let seen = match st.seen.get(&entry.key) {
                Some((h, t)) if *h == entry.hash => *t,
                _ => {
                    st.seen.insert(entry.key.clone(), (entry.hash, now));
                    now
                }
            };
            let latched =
                st.synced.get(&istiod.uid).and_then(|m| m.get(&entry.key)) == Some(&entry.hash);
            (seen.max(istiod.started), latched)
        };
        let access = remotes::check_access(cluster, &target, &istiod.namespace);
        let status = remotes::sync_status(remotes::SyncInput {
            since_seen: remotes::since(now, seen_at),
            access_ok: access.is_ok(),
            latched,
            timeout: istiod.remote_timeout,
            sync_delay: delay,
        });
        if status == remotes::SYNCED {
            if !latched {
                cluster
                    .istiod
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .synced
                    .entry(istiod.uid.clone())
                    .or_default()
                    .insert(entry.key.clone(), entry.hash);
            }
            if let Ok(remote) = access {
                synced_remotes.push((entry.key.1.clone(), remote));
            }
        }
        out.push(DebugInfo {
            id: entry.key.1.clone(),
            secret_name: entry.key.0.clone(),
            sync_status: status.into(),
        });
    }
    (out, synced_remotes)
}

/// `/debug/networkz`: gateways of this cluster and of the synced remotes.
pub fn network_gateways(cluster: &Cluster, istiod: &Istiod) -> Value {
    let mut gws = networkz::gateways_in(&cluster.store, &istiod.cluster_id);
    if istiod.multicluster {
        let (_, synced) = list_remote_clusters(cluster, istiod);
        for (id, remote) in synced {
            gws.extend(networkz::gateways_in(&remote.store, &id));
        }
    }
    let gws = networkz::sorted(gws);
    let mut st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
    if gws.is_empty() && !st.had_gateways.contains(&istiod.uid) {
        return Value::Null;
    }
    st.had_gateways.insert(istiod.uid.clone());
    serde_json::to_value(gws).unwrap_or(Value::Null)
}

/// Run the status computation for every istiod pod so completed syncs are remembered even if
/// nobody asks (istiod syncs in the background).
pub fn evaluate_all(cluster: &Cluster) {
    let pods = cluster
        .store
        .list(&crate::store::ResKey::new("", "pods"), None)
        .0;
    for p in pods.iter().filter(|p| running_and_ready(p)) {
        if let Some(i) = identify(p) {
            if i.multicluster {
                let _ = list_remote_clusters(cluster, &i);
            }
        }
    }
}

/// An HTTP answer of the simulated istiod.
#[derive(Debug, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Answer {
    fn empty(status: u16) -> Self {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Vec::new(),
        }
    }
}

/// Answer one request on `port`. `local` is true for a caller on the pod's loopback.
pub fn answer(cluster: &Cluster, istiod: &Istiod, port: u16, path: &str, local: bool) -> Answer {
    let path = path.split('?').next().unwrap_or("");
    let json = |v: Value| Answer {
        status: 200,
        content_type: "application/json",
        body: serde_json::to_vec(&v).unwrap_or_default(),
    };
    if port == HTTP_PORT && path == "/ready" {
        return Answer::empty(200);
    }
    // Every debug handler sits behind allowAuthenticatedOrLocalhost.
    if path.starts_with("/debug") && !local {
        return Answer::empty(401);
    }
    match path {
        "/debug/clusterz" if !istiod.multicluster => Answer::empty(400),
        "/debug/clusterz" => json(json!(list_remote_clusters(cluster, istiod).0)),
        "/debug/networkz" => json(network_gateways(cluster, istiod)),
        _ => Answer {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: b"404 page not found\n".to_vec(),
        },
    }
}

/// Serve HTTP/1.1 on one forwarded connection until the client is done.
pub async fn serve_connection(
    cluster: Arc<Cluster>,
    istiod: Istiod,
    port: u16,
    io: tokio::io::DuplexStream,
) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let a = answer(&cluster, &istiod, port, &req.uri().to_string(), true);
        let resp = hyper::Response::builder()
            .status(a.status)
            .header("content-type", a.content_type)
            .body(Full::new(Bytes::from(a.body)))
            .expect("istiod response");
        async move { Ok::<_, Infallible>(resp) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(env: Value, args: Value) -> Value {
        json!({"metadata": {"name": "istiod-1", "namespace": "istio-system", "uid": "u1",
                "labels": {"app": "istiod"}},
            "spec": {"containers": [{"name": "discovery", "args": args, "env": env}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                "conditions": [{"type": "ContainersReady", "status": "True"}]}})
    }

    #[test]
    fn istiod_pods_are_recognised_with_their_settings() {
        let p = pod(
            json!([{"name": "CLUSTER_ID", "value": "c1"},
                {"name": "PILOT_REMOTE_CLUSTER_TIMEOUT", "value": "2s"}]),
            json!(["discovery", "--monitoringAddr=:15014"]),
        );
        let i = listening(&p, MONITORING_PORT).unwrap();
        assert_eq!(i.cluster_id, "c1");
        assert_eq!(i.remote_timeout, Duration::from_secs(2));
        assert!(i.multicluster);
        assert!(listening(&p, 15010).is_none());
        let d = identify(&pod(json!([]), json!(["--registries", "Mock"]))).unwrap();
        assert_eq!(d.cluster_id, DEFAULT_CLUSTER_ID);
        assert_eq!(d.remote_timeout, DEFAULT_REMOTE_TIMEOUT);
        assert!(!d.multicluster);
        let mut not_istiod = p.clone();
        not_istiod["metadata"]["labels"]["app"] = json!("web");
        assert!(identify(&not_istiod).is_none());
        let mut crashing = p;
        crashing["status"]["conditions"][0]["status"] = json!("False");
        assert!(listening(&crashing, MONITORING_PORT).is_none());
    }
}
