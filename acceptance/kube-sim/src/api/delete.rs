//! Deletes: single objects, collections, propagation policies, namespaces, CRDs.

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::object::{self};
use crate::resources::{self};
use crate::store::{Preconditions, ResKey};

/// Propagation policy from query or DeleteOptions body; jobs default to Orphan like batch/v1.
pub(super) fn propagation(req: &Request, t: &Target, opts: &Value) -> String {
    if let Some(p) = req.q("propagationPolicy") {
        return p.to_string();
    }
    if let Some(p) = opts.get("propagationPolicy").and_then(Value::as_str) {
        return p.to_string();
    }
    if let Some(o) = opts
        .get("orphanDependents")
        .and_then(Value::as_bool)
        .or_else(|| req.q("orphanDependents").map(|v| v == "true"))
    {
        return if o {
            "Orphan".into()
        } else {
            "Background".into()
        };
    }
    if t.info.group == "batch" && t.info.plural == "jobs" {
        "Orphan".into()
    } else {
        "Background".into()
    }
}

pub(super) fn delete_one(
    cluster: &Cluster,
    req: &Request,
    t: &Target,
    name: &str,
    opts: &Value,
) -> ApiResult<Arc<Value>> {
    let key = t.key();
    let dry = req.dry_run()
        || opts
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == "All"));
    if key.group.is_empty() && key.resource == "namespaces" {
        if matches!(name, "default" | "kube-system" | "kube-public") {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
            )));
        }
        return cluster.store.mark_deleting(&key, "", name, dry, |ns| {
            ns["status"] = json!({"phase": "Terminating"});
        });
    }
    let pre = Preconditions {
        uid: opts
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let current = cluster
        .store
        .get(&key, &t.ns, name)
        .ok_or_else(|| ApiError::not_found(&key.group, &key.resource, name))?;
    let policy = propagation(req, t, opts);
    if policy == "Orphan" && !dry {
        crate::controllers::gc::orphan_dependents(cluster, object::uid(&current));
    }
    let removable = object::finalizers(&current).is_empty();
    if policy == "Foreground" && removable && !dry {
        // Dependents go first, then the owner.
        crate::controllers::gc::delete_dependents(cluster, object::uid(&current), &t.ns);
    }
    let w = cluster.store.delete(&key, &t.ns, name, &pre, dry)?;
    if w.deleted && !dry && policy == "Background" {
        // Collected before the response, so clients never see orphans of a deleted owner.
        crate::controllers::gc::delete_dependents(cluster, object::uid(&w.obj), &t.ns);
    }
    if w.deleted && !dry && key == resources::crd_key() {
        let group = resources::crd_group(&w.obj);
        let plural = resources::crd_plural(&w.obj);
        cluster.store.purge_resource(&ResKey::new(&group, &plural));
    }
    Ok(w.obj)
}

pub(super) fn delete_opts(req: &Request) -> Value {
    if req.body.is_empty() {
        return json!({});
    }
    object::parse_body(&req.body).unwrap_or(json!({}))
}

pub(super) fn delete(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
    let opts = delete_opts(req);
    let obj = delete_one(cluster, req, t, &t.name, &opts)?;
    Ok(http::json(200, &present(&t.info, &obj)))
}

pub(super) fn delete_collection(
    cluster: &Arc<Cluster>,
    req: &Request,
    t: &Target,
) -> ApiResult<Resp> {
    let opts = delete_opts(req);
    let (labels, fields) = selectors(req)?;
    let ns = (!t.ns.is_empty()).then_some(t.ns.as_str());
    let (items, _) = cluster.store.list(&t.key(), ns);
    let mut deleted = Vec::new();
    for obj in items
        .iter()
        .filter(|o| labels.matches(o) && fields.matches(o))
    {
        let target = Target {
            info: t.info.clone(),
            ns: object::namespace(obj).to_string(),
            name: object::name(obj).to_string(),
            sub: String::new(),
            verb: "delete",
        };
        match delete_one(cluster, req, &target, &target.name, &opts) {
            Ok(o) => deleted.push(present(&t.info, &o)),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(http::json(
        200,
        &json!({"apiVersion": t.info.api_version(), "kind": format!("{}List", t.info.kind),
            "metadata": {"resourceVersion": cluster.store.current_rv().to_string()}, "items": deleted}),
    ))
}
