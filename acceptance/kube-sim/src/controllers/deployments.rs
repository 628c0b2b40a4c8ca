//! Workload readiness: Deployments (and StatefulSets, DaemonSets) report their replicas ready and
//! become Available — unless they carry the failure annotation. Their pods: [`super::pods`].

use std::sync::Arc;

use serde_json::{json, Value};

use super::pods::{self, failure};
use super::{key, schedule};
use crate::cluster::Cluster;
use crate::object;
use crate::store::{Event, EventKind, ResKey};

fn kinds() -> [ResKey; 3] {
    [
        key("apps", "deployments"),
        key("apps", "statefulsets"),
        key("apps", "daemonsets"),
    ]
}

/// The status the workload should have now.
fn desired_status(res: &ResKey, obj: &Value, prev: Option<&Value>) -> Value {
    let generation = object::meta(obj)
        .get("generation")
        .cloned()
        .unwrap_or(json!(1));
    let replicas = obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let fail = failure(obj);
    let ready = if fail.is_some() { 0 } else { replicas };
    let now = object::now_rfc3339();
    let cond = |ty: &str, ok: bool, reason: &str, msg: &str| {
        // Keep transition times stable when nothing changed.
        let same = prev
            .and_then(|p| p.get("conditions"))
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
            })
            .filter(|c| {
                c.get("status").and_then(Value::as_str) == Some(if ok { "True" } else { "False" })
            })
            .filter(|c| c.get("reason").and_then(Value::as_str) == Some(reason))
            .cloned();
        same.unwrap_or_else(|| {
            json!({"type": ty, "status": if ok { "True" } else { "False" }, "reason": reason, "message": msg,
                "lastUpdateTime": now, "lastTransitionTime": now})
        })
    };
    match res.resource.as_str() {
        "deployments" => {
            let name = object::name(obj);
            let conditions = match &fail {
                None => vec![
                    cond(
                        "Available",
                        true,
                        "MinimumReplicasAvailable",
                        "Deployment has minimum availability.",
                    ),
                    cond(
                        "Progressing",
                        true,
                        "NewReplicaSetAvailable",
                        &format!("ReplicaSet \"{name}\" has successfully progressed."),
                    ),
                ],
                Some(why) => vec![
                    cond(
                        "Available",
                        false,
                        "MinimumReplicasUnavailable",
                        &format!("Deployment does not have minimum availability: {why}"),
                    ),
                    cond(
                        "Progressing",
                        false,
                        "ProgressDeadlineExceeded",
                        &format!("ReplicaSet \"{name}\" has timed out progressing: {why}"),
                    ),
                ],
            };
            let mut s = json!({
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
                "conditions": conditions,
            });
            if ready < replicas {
                s["unavailableReplicas"] = json!(replicas - ready);
            }
            s
        }
        "statefulsets" => json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": ready,
            "currentReplicas": replicas, "updatedReplicas": replicas, "availableReplicas": ready,
        }),
        _ => json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
            "numberReady": if fail.is_some() { 0 } else { 1 }, "numberAvailable": if fail.is_some() { 0 } else { 1 },
            "updatedNumberScheduled": 1, "numberMisscheduled": 0,
        }),
    }
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    if ev.kind == EventKind::Deleted || !kinds().contains(&ev.res) {
        return;
    }
    check(cluster, &ev.res, &ev.obj);
}

pub fn resync(cluster: &Arc<Cluster>) {
    for k in kinds() {
        for o in cluster.store.list(&k, None).0 {
            check(cluster, &k, &o);
        }
    }
}

fn check(cluster: &Arc<Cluster>, res: &ResKey, obj: &Value) {
    let settings = cluster.settings().deployments;
    if !settings.enabled || object::is_deleting(obj) {
        return;
    }
    pods::check(cluster, res, obj);
    let prev = obj.get("status");
    if prev == Some(&desired_status(res, obj, prev)) {
        return;
    }
    let (res, ns, name) = (
        res.clone(),
        object::namespace(obj).to_string(),
        object::name(obj).to_string(),
    );
    schedule(
        cluster,
        format!("{}/{ns}/{name}", res.resource),
        settings.delay_ms,
        move |c| {
            c.update_internal(&res, &ns, &name, |o| {
                let status = desired_status(&res, o, o.get("status"));
                o["status"] = status;
            });
        },
    );
}
