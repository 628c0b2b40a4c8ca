//! The Job controller plus a kubelet stand-in: a Job gets one pod, which "runs" for the
//! configured delay and then succeeds or fails. Failure comes from the failure annotation (on the
//! Job or its pod template) or from the istioctl installer simulation.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{installer, key, schedule, FAIL_ANNOTATION};
use crate::cluster::Cluster;
use crate::object;
use crate::store::{Event, EventKind};

fn finished(job: &Value) -> bool {
    job.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                matches!(
                    c.get("type").and_then(Value::as_str),
                    Some("Complete") | Some("Failed")
                ) && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn started(job: &Value) -> bool {
    job.pointer("/status/startTime").is_some()
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    if ev.res != key("batch", "jobs") || ev.kind == EventKind::Deleted {
        return;
    }
    check(cluster, &ev.obj);
}

pub fn resync(cluster: &Arc<Cluster>) {
    for j in cluster.store.list(&key("batch", "jobs"), None).0 {
        check(cluster, &j);
    }
}

fn check(cluster: &Arc<Cluster>, job: &Value) {
    let settings = cluster.settings().jobs;
    if !settings.enabled || finished(job) || object::is_deleting(job) {
        return;
    }
    if job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let (ns, name) = (
        object::namespace(job).to_string(),
        object::name(job).to_string(),
    );
    if !started(job) {
        start(cluster, job);
    }
    // The uid keeps a Job recreated under the same name (an installer re-run after a timeout)
    // from being taken for the deleted one still waiting out its delay.
    let uid = object::uid(job).to_string();
    schedule(
        cluster,
        format!("job/{ns}/{name}/{uid}"),
        settings.delay_ms.max(1),
        move |c| finish(c, &ns, &name, &uid),
    );
}

/// Create the pod and mark the Job active.
fn start(cluster: &Arc<Cluster>, job: &Value) {
    let (ns, name, uid) = (object::namespace(job), object::name(job), object::uid(job));
    let template = job.pointer("/spec/template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in [
        ("job-name", name),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("batch.kubernetes.io/controller-uid", uid),
    ] {
        labels.insert(k.into(), json!(v));
    }
    let pod_name = format!("{name}-{}", object::random_suffix(5));
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name, "namespace": ns, "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
        "status": {"phase": "Running", "startTime": object::now_rfc3339(), "podIP": "10.244.0.10",
            "hostIP": "127.0.0.1"}
    });
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert(
            "nodeName".into(),
            json!(format!("{}-control-plane", cluster.name)),
        );
    }
    let _ = cluster.create_internal(pod);
    cluster.update_internal(&key("batch", "jobs"), ns, name, |j| {
        j["status"] = json!({"startTime": object::now_rfc3339(), "active": 1, "ready": 1, "terminating": 0});
    });
}

fn job_pod(cluster: &Cluster, ns: &str, job_uid: &str) -> Option<Arc<Value>> {
    cluster
        .store
        .list(&key("", "pods"), Some(ns))
        .0
        .into_iter()
        .find(|p| {
            object::labels(p)
                .and_then(|l| l.get("controller-uid"))
                .and_then(Value::as_str)
                == Some(job_uid)
        })
}

/// Decide the outcome, write the pod log and the final pod and Job status.
fn finish(cluster: &Arc<Cluster>, ns: &str, name: &str, uid: &str) {
    let Some(job) = cluster.store.get(&key("batch", "jobs"), ns, name) else {
        return;
    };
    if object::uid(&job) != uid {
        return;
    }
    if finished(&job) || !started(&job) || object::is_deleting(&job) {
        return;
    }
    let pod = job_pod(cluster, ns, object::uid(&job));
    let fail = object::annotation(&job, FAIL_ANNOTATION)
        .or_else(|| {
            job.pointer("/spec/template/metadata/annotations")
                .and_then(|a| a.get(FAIL_ANNOTATION))
                .and_then(Value::as_str)
        })
        .map(str::to_string);
    let outcome: Result<String, String> = match fail {
        Some(reason) => Err(format!(
            "Error: {reason}\nkube-sim: job {ns}/{name} failed because of annotation {FAIL_ANNOTATION}: {reason}\n"
        )),
        None => match installer::detect(&job) {
            Some(inv) => installer::run(cluster, &job, &inv),
            None => Ok(format!("kube-sim: job {ns}/{name} completed\n")),
        },
    };
    let now = object::now_rfc3339();
    let ok = outcome.is_ok();
    let log = match &outcome {
        Ok(l) | Err(l) => l.clone(),
    };
    if let Some(pod) = &pod {
        let pod_name = object::name(pod).to_string();
        cluster.set_log(ns, &pod_name, log.clone());
        let containers: Vec<Value> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        json!({"name": c.get("name"), "image": c.get("image"), "ready": false, "restartCount": 0,
                            "state": {"terminated": {"exitCode": if ok { 0 } else { 1 },
                                "reason": if ok { "Completed" } else { "Error" },
                                "message": if ok { Value::Null } else { json!(log.lines().next().unwrap_or("")) },
                                "startedAt": pod.pointer("/status/startTime"), "finishedAt": now}}})
                    })
                    .collect()
            })
            .unwrap_or_default();
        cluster.update_internal(&key("", "pods"), ns, &pod_name, |p| {
            p["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
            p["status"]["containerStatuses"] = json!(containers);
            p["status"]["conditions"] =
                json!([{"type": "Ready", "status": "False", "reason": "PodCompleted"}]);
        });
    }
    cluster.update_internal(&key("batch", "jobs"), ns, name, |j| {
        let start = j.pointer("/status/startTime").cloned().unwrap_or(json!(now));
        j["status"] = if ok {
            json!({"startTime": start, "completionTime": now, "succeeded": 1, "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}]})
        } else {
            json!({"startTime": start, "failed": 1, "ready": 0, "terminating": 0,
                "uncountedTerminatedPods": {},
                "conditions": [
                    {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                    {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}]})
        };
    });
}
