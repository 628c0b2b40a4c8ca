//! Workload pods: what the ReplicaSet, StatefulSet and DaemonSet controllers plus the kubelet
//! make of a workload, reduced to the Pod objects clients observe. Pods are owned by their
//! workload (no ReplicaSet objects in between), carry the template's labels, annotations and
//! spec, are Running on the cluster's one node with an IP, and are Ready unless the workload
//! carries the failure annotation. A template change replaces them; replicas scale them; garbage
//! collection removes them with the workload.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{key, schedule, FAIL_ANNOTATION};
use crate::cluster::Cluster;
use crate::object;
use crate::store::{Event, EventKind, Preconditions, ResKey};

/// Label carrying the template hash (`pod-template-hash` for Deployments as the ReplicaSet
/// controller sets it, `controller-revision-hash` for StatefulSets and DaemonSets).
fn hash_label(res: &ResKey) -> &'static str {
    if res.resource == "deployments" {
        "pod-template-hash"
    } else {
        "controller-revision-hash"
    }
}

fn kind_of(res: &ResKey) -> &'static str {
    match res.resource.as_str() {
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        _ => "DaemonSet",
    }
}

fn res_of_kind(kind: &str) -> Option<ResKey> {
    match kind {
        "Deployment" => Some(key("apps", "deployments")),
        "StatefulSet" => Some(key("apps", "statefulsets")),
        "DaemonSet" => Some(key("apps", "daemonsets")),
        _ => None,
    }
}

/// FNV-1a (32 bit) of the template, encoded with Kubernetes' "safe" alphabet (no vowels, no
/// look-alike digits) as `rand.SafeEncodeString` does with the decimal hash.
pub fn template_hash(template: &Value) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c9dc5;
    for b in template.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// Pod IPs from 10.244.0.0/16, unique within the process.
fn next_pod_ip() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % (250 * 250);
    format!("10.244.{}.{}", n / 250, n % 250 + 2)
}

/// Why the workload's pods are not Ready (the failure annotation on it or its template).
pub fn failure(obj: &Value) -> Option<String> {
    object::annotation(obj, FAIL_ANNOTATION)
        .or_else(|| {
            obj.pointer("/spec/template/metadata/annotations")
                .and_then(|a| a.get(FAIL_ANNOTATION))
                .and_then(Value::as_str)
        })
        .map(str::to_string)
}

fn desired_replicas(res: &ResKey, obj: &Value) -> usize {
    if res.resource == "daemonsets" {
        return 1; // one node
    }
    obj.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize
}

fn owned_by(pod: &Value, uid: &str) -> bool {
    object::meta(pod)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|rs| {
            rs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// The status a running pod of this spec has: Ready (or not, with the failure reason).
pub fn running_status(spec: &Value, pod_ip: &str, started: &str, fail: Option<&str>) -> Value {
    let ready = fail.is_none();
    let tf = |b: bool| if b { "True" } else { "False" };
    let containers: Vec<Value> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let state = match fail {
                        None => json!({"running": {"startedAt": started}}),
                        Some(why) => json!({"waiting": {"reason": "CrashLoopBackOff", "message": why}}),
                    };
                    json!({"name": c.get("name"), "image": c.get("image"),
                        "imageID": "", "containerID": format!("containerd://{}", object::random_hex(32)),
                        "ready": ready, "started": ready, "restartCount": if ready { 0 } else { 3 },
                        "state": state})
                })
                .collect()
        })
        .unwrap_or_default();
    // Init containers ran to completion; restartable ones (native sidecars) keep running and
    // count for readiness like the app containers.
    let init_containers: Vec<Value> = spec
        .get("initContainers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let sidecar = c.get("restartPolicy").and_then(Value::as_str) == Some("Always");
                    let (state, ok) = match (sidecar, fail) {
                        (false, _) => (
                            json!({"terminated": {"exitCode": 0, "reason": "Completed",
                                "startedAt": started, "finishedAt": started}}),
                            false,
                        ),
                        (true, None) => (json!({"running": {"startedAt": started}}), true),
                        (true, Some(why)) => (
                            json!({"waiting": {"reason": "CrashLoopBackOff", "message": why}}),
                            false,
                        ),
                    };
                    json!({"name": c.get("name"), "image": c.get("image"), "imageID": "",
                        "containerID": format!("containerd://{}", object::random_hex(32)),
                        "ready": ok, "started": ok, "restartCount": 0, "state": state})
                })
                .collect()
        })
        .unwrap_or_default();
    let mut conditions = vec![
        json!({"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": started}),
        json!({"type": "Initialized", "status": "True", "lastTransitionTime": started}),
    ];
    for ty in ["Ready", "ContainersReady"] {
        let mut c = json!({"type": ty, "status": tf(ready), "lastTransitionTime": started});
        if let Some(why) = fail {
            c["reason"] = json!("ContainersNotReady");
            c["message"] = json!(format!("containers with unready status: {why}"));
        }
        conditions.push(c);
    }
    conditions
        .push(json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": started}));
    let mut status = json!({
        "phase": "Running",
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "qosClass": "BestEffort",
        "containerStatuses": containers,
    });
    if !init_containers.is_empty() {
        status["initContainerStatuses"] = json!(init_containers);
    }
    status
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// A new pod of the workload, as the controller and kubelet would leave it.
fn new_pod(cluster: &Cluster, res: &ResKey, owner: &Value, name: &str, hash: &str) -> Value {
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let mut labels: Map<String, Value> = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(hash_label(res).into(), json!(hash));
    if res.resource == "statefulsets" {
        labels.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if let Some(s) = spec.as_object_mut() {
        s.insert(
            "nodeName".into(),
            json!(format!("{}-control-plane", cluster.name)),
        );
        // Defaults the API server's admission and defaulting would fill in.
        let sa = s
            .get("serviceAccountName")
            .cloned()
            .unwrap_or(json!("default"));
        s.insert("serviceAccountName".into(), sa.clone());
        s.entry("serviceAccount").or_insert(sa);
        s.entry("restartPolicy").or_insert(json!("Always"));
        s.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
        s.entry("schedulerName")
            .or_insert(json!("default-scheduler"));
        s.entry("terminationGracePeriodSeconds")
            .or_insert(json!(30));
    }
    let ns = object::namespace(owner);
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind_of(res),
                "name": object::name(owner), "uid": object::uid(owner),
                "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": spec,
    });
    // The controller creates the pod through the API server: mutating admission (Istio's
    // injector) applies.
    crate::injector::admit(cluster, &mut pod);
    let started = object::now_rfc3339();
    let fail = failure(owner);
    pod["status"] = running_status(&pod["spec"], &next_pod_ip(), &started, fail.as_deref());
    pod
}

fn pod_name(res: &ResKey, owner: &str, hash: &str, ordinal: usize) -> String {
    match res.resource.as_str() {
        "deployments" => format!("{owner}-{hash}-{}", object::random_suffix(5)),
        "statefulsets" => format!("{owner}-{ordinal}"),
        _ => format!("{owner}-{}", object::random_suffix(5)),
    }
}

/// What to change so the workload's pods match it.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to delete (stale template or surplus).
    pub delete: Vec<String>,
    /// How many new pods to create.
    pub create: usize,
    /// Current pods whose readiness must flip.
    pub set_ready: Vec<(String, bool)>,
}

/// Compare the workload's current pods (name, template hash, Ready) with what it wants.
pub fn plan(pods: &[(String, String, bool)], hash: &str, replicas: usize, ready: bool) -> Plan {
    let mut p = Plan::default();
    let mut current: Vec<&(String, String, bool)> = Vec::new();
    for pod in pods {
        if pod.1 == hash {
            current.push(pod);
        } else {
            p.delete.push(pod.0.clone());
        }
    }
    // Surplus: drop the last ones (highest StatefulSet ordinals sort last).
    current.sort_by(|a, b| (a.0.len(), &a.0).cmp(&(b.0.len(), &b.0)));
    while current.len() > replicas {
        if let Some(extra) = current.pop() {
            p.delete.push(extra.0.clone());
        }
    }
    p.create = replicas - current.len();
    p.set_ready = current
        .iter()
        .filter(|c| c.2 != ready)
        .map(|c| (c.0.clone(), ready))
        .collect();
    p
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    // A deleted pod of a live workload is replaced, as its controller would.
    if ev.kind != EventKind::Deleted || ev.res != key("", "pods") {
        return;
    }
    let Some(owner) = object::meta(&ev.obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .and_then(|rs| rs.first())
    else {
        return;
    };
    let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = owner.get("name").and_then(Value::as_str).unwrap_or("");
    if let Some(res) = res_of_kind(kind) {
        if let Some(w) = cluster.store.get(&res, object::namespace(&ev.obj), name) {
            check(cluster, &res, &w);
        }
    }
}

/// Schedule reconciliation of one workload's pods (after the deployments controller delay).
pub fn check(cluster: &Arc<Cluster>, res: &ResKey, obj: &Value) {
    let settings = cluster.settings().deployments;
    if !settings.enabled || object::is_deleting(obj) {
        return;
    }
    let (res, ns, name) = (
        res.clone(),
        object::namespace(obj).to_string(),
        object::name(obj).to_string(),
    );
    schedule(
        cluster,
        format!("pods/{}/{ns}/{name}", res.resource),
        settings.delay_ms,
        move |c| reconcile(c, &res, &ns, &name),
    );
}

fn reconcile(cluster: &Arc<Cluster>, res: &ResKey, ns: &str, name: &str) {
    let Some(owner) = cluster.store.get(res, ns, name) else {
        return;
    };
    if object::is_deleting(&owner) || !cluster.settings().deployments.enabled {
        return;
    }
    let pods_key = key("", "pods");
    let template = owner
        .pointer("/spec/template")
        .cloned()
        .unwrap_or(json!({}));
    let hash = template_hash(&template);
    let label = hash_label(res);
    let owned: Vec<Arc<Value>> = cluster
        .store
        .list(&pods_key, Some(ns))
        .0
        .into_iter()
        .filter(|p| owned_by(p, object::uid(&owner)))
        .collect();
    let summary: Vec<(String, String, bool)> = owned
        .iter()
        .map(|p| {
            let h = object::labels(p)
                .and_then(|l| l.get(label))
                .and_then(Value::as_str)
                .unwrap_or("");
            (object::name(p).to_string(), h.to_string(), pod_ready(p))
        })
        .collect();
    let fail = failure(&owner);
    let p = plan(
        &summary,
        &hash,
        desired_replicas(res, &owner),
        fail.is_none(),
    );
    for victim in &p.delete {
        let _ = cluster
            .store
            .delete(&pods_key, ns, victim, &Preconditions::default(), false);
    }
    let taken: Vec<String> = summary
        .iter()
        .filter(|s| !p.delete.contains(&s.0))
        .map(|s| s.0.clone())
        .collect();
    let mut ordinal = 0;
    for _ in 0..p.create {
        let mut pod_n = pod_name(res, name, &hash, ordinal);
        while taken.contains(&pod_n) {
            ordinal += 1;
            pod_n = pod_name(res, name, &hash, ordinal);
        }
        ordinal += 1;
        let _ = cluster.create_internal(new_pod(cluster, res, &owner, &pod_n, &hash));
    }
    for (pod, _) in &p.set_ready {
        cluster.update_internal(&pods_key, ns, pod, |v| {
            let spec = v.get("spec").cloned().unwrap_or(json!({}));
            let ip = v
                .pointer("/status/podIP")
                .and_then(Value::as_str)
                .unwrap_or("10.244.0.1")
                .to_string();
            let started = v
                .pointer("/status/startTime")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            v["status"] = running_status(&spec, &ip, &started, fail.as_deref());
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(n: &str, h: &str, r: bool) -> (String, String, bool) {
        (n.into(), h.into(), r)
    }

    #[test]
    fn plan_creates_replaces_scales_and_flips_readiness() {
        assert_eq!(
            plan(&[], "h1", 2, true),
            Plan {
                create: 2,
                ..Plan::default()
            }
        );
        let p = plan(&[pod("a", "h0", true), pod("b", "h1", true)], "h1", 1, true);
        assert_eq!(p.delete, vec!["a".to_string()]);
        assert_eq!(p.create, 0);
        let p = plan(
            &[
                pod("s-0", "h", true),
                pod("s-1", "h", true),
                pod("s-10", "h", true),
            ],
            "h",
            1,
            true,
        );
        assert_eq!(p.delete, vec!["s-10".to_string(), "s-1".to_string()]);
        let p = plan(&[pod("a", "h", true)], "h", 1, false);
        assert_eq!(p.set_ready, vec![("a".to_string(), false)]);
    }

    #[test]
    fn template_hash_is_stable_and_safe() {
        let a = template_hash(&json!({"spec": {"containers": [{"name": "x"}]}}));
        let b = template_hash(&json!({"spec": {"containers": [{"name": "y"}]}}));
        assert_eq!(
            a,
            template_hash(&json!({"spec": {"containers": [{"name": "x"}]}}))
        );
        assert_ne!(a, b);
        assert!(a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn failing_pod_is_running_but_not_ready() {
        let spec = json!({"containers": [{"name": "c", "image": "i"}]});
        let s = running_status(&spec, "10.244.0.2", "t", Some("boom"));
        assert_eq!(s["phase"], "Running");
        assert!(!pod_ready(&json!({"status": s})));
        assert_eq!(s["containerStatuses"][0]["ready"], false);
        let s = running_status(&spec, "10.244.0.2", "t", None);
        assert!(pod_ready(&json!({"status": s})));
    }
}
