//! Garbage collection by ownerReferences, namespace lifecycle (default ServiceAccount and root CA
//! ConfigMap on creation, content removal on termination).

use std::sync::Arc;

use serde_json::{json, Value};

use super::key;
use crate::cluster::Cluster;
use crate::object;
use crate::store::{Event, EventKind, Preconditions};

fn owned_by(obj: &Value, uid: &str) -> bool {
    object::meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// Objects whose ownerReferences name `uid`: in `ns` when the owner is namespaced, anywhere
/// otherwise.
fn dependents(cluster: &Cluster, uid: &str, ns: &str) -> Vec<(crate::store::ResKey, Arc<Value>)> {
    let all = if ns.is_empty() {
        cluster.store.dump()
    } else {
        cluster.store.namespaced_objects(ns)
    };
    all.into_iter().filter(|(_, o)| owned_by(o, uid)).collect()
}

/// Orphan propagation: drop the owner reference from dependents.
pub fn orphan_dependents(cluster: &Cluster, uid: &str) {
    if uid.is_empty() {
        return;
    }
    for (k, o) in dependents(cluster, uid, "") {
        cluster.update_internal(&k, object::namespace(&o), object::name(&o), |v| {
            if let Some(refs) = v
                .get_mut("metadata")
                .and_then(|m| m.get_mut("ownerReferences"))
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                if refs.is_empty() {
                    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("ownerReferences");
                    }
                }
            }
        });
    }
}

/// Background/foreground propagation: delete (recursively) every object owned by `uid`.
/// Dependents with finalizers only get their deletionTimestamp.
pub fn delete_dependents(cluster: &Cluster, uid: &str, ns: &str) {
    if uid.is_empty() {
        return;
    }
    for (k, o) in dependents(cluster, uid, ns) {
        let dep_ns = object::namespace(&o).to_string();
        if let Ok(w) = cluster.store.delete(
            &k,
            &dep_ns,
            object::name(&o),
            &Preconditions::default(),
            false,
        ) {
            if w.deleted {
                delete_dependents(cluster, object::uid(&w.obj), &dep_ns);
            }
        }
    }
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    let ns = object::namespace(&ev.obj).to_string();
    match ev.kind {
        EventKind::Deleted => {
            delete_dependents(cluster, object::uid(&ev.obj), &ns);
            if !ns.is_empty() {
                finalize_namespace(cluster, &ns);
            }
        }
        EventKind::Added if ev.res == key("", "namespaces") => {
            init_namespace(cluster, object::name(&ev.obj))
        }
        EventKind::Modified if ev.res == key("", "namespaces") && object::is_deleting(&ev.obj) => {
            terminate_namespace(cluster, object::name(&ev.obj));
        }
        _ => {}
    }
}

pub fn resync(cluster: &Arc<Cluster>) {
    for ns in cluster.store.list(&key("", "namespaces"), None).0 {
        let name = object::name(&ns);
        if object::is_deleting(&ns) {
            terminate_namespace(cluster, name);
        } else {
            init_namespace(cluster, name);
        }
    }
}

fn init_namespace(cluster: &Cluster, ns: &str) {
    if cluster
        .store
        .get(&key("", "serviceaccounts"), ns, "default")
        .is_none()
    {
        let _ = cluster.create_internal(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": ns}
        }));
    }
    if cluster
        .store
        .get(&key("", "configmaps"), ns, "kube-root-ca.crt")
        .is_none()
    {
        let _ = cluster.create_internal(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kube-root-ca.crt", "namespace": ns},
            "data": {"ca.crt": cluster.pki.ca_pem}
        }));
    }
}

fn terminate_namespace(cluster: &Cluster, ns: &str) {
    for (k, o) in cluster.store.namespaced_objects(ns) {
        let _ = cluster
            .store
            .delete(&k, ns, object::name(&o), &Preconditions::default(), false);
    }
    finalize_namespace(cluster, ns);
}

/// Remove a terminating namespace once it is empty.
fn finalize_namespace(cluster: &Cluster, ns: &str) {
    let nskey = key("", "namespaces");
    let Some(n) = cluster.store.get(&nskey, "", ns) else {
        return;
    };
    if !object::is_deleting(&n) || !cluster.store.namespaced_objects(ns).is_empty() {
        return;
    }
    let _ = cluster
        .store
        .delete(&nskey, "", ns, &Preconditions::default(), false);
}
