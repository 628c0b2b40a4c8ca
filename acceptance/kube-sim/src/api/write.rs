//! Writes: create, update (incl. status/finalize/scale) and patch (JSON, merge, strategic,
//! server-side apply).

use std::sync::Arc;

use serde_json::{json, Value};

use super::*;
use crate::auth::Identity;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::object::{self, meta_mut};
use crate::{patch, ssa};

pub(super) fn create(
    cluster: &Arc<Cluster>,
    req: &Request,
    t: &Target,
    who: &Identity,
) -> ApiResult<Resp> {
    let mut obj = parse_obj(req)?;
    if t.info.create_only {
        return review(cluster, t, who, obj);
    }
    if t.sub == "token" {
        return token_request(cluster, t, obj);
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str) {
        if kind != t.info.kind {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}) or kind {kind} is not {}",
                obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                t.info.api_version(),
                t.info.kind
            )));
        }
    }
    let body_ns = object::namespace(&obj).to_string();
    if t.info.namespaced && !body_ns.is_empty() && body_ns != t.ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let generate = object::meta_str(&obj, "generateName").map(str::to_string);
    let fixed = object::name(&obj).to_string();
    check_namespace(cluster, &t.info, &t.ns, &fixed)?;
    obj["apiVersion"] = json!(t.info.api_version());
    obj["kind"] = json!(t.info.kind);
    let manager = req.manager();
    for _attempt in 0..8 {
        let name = match (&generate, fixed.is_empty()) {
            (Some(prefix), true) => format!("{prefix}{}", object::random_suffix(5)),
            _ => fixed.clone(),
        };
        validate_name(&t.info, &name)?;
        let mut o = obj.clone();
        meta_mut(&mut o).insert("name".into(), json!(name));
        if t.info.namespaced {
            meta_mut(&mut o).insert("namespace".into(), json!(t.ns));
        }
        admit_create(cluster, &t.info, &mut o);
        ssa::track_update(None, &mut o, &manager, &t.info.api_version(), None);
        let key = t.key();
        let res = cluster
            .store
            .write(&key, &t.ns, &name, req.dry_run(), |cur| {
                if cur.is_some() {
                    return Err(ApiError::already_exists(&key.group, &key.resource, &name));
                }
                Ok(o)
            });
        match res {
            Ok(w) => return Ok(http::json(201, &present(&t.info, &w.obj))),
            Err(e) if e.reason == "AlreadyExists" && generate.is_some() && fixed.is_empty() => {
                continue
            }
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::new(
        500,
        "ServerTimeout",
        "could not generate a unique name",
    ))
}

pub(super) fn update(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
    let mut obj = parse_obj(req)?;
    let body_name = object::name(&obj).to_string();
    if !body_name.is_empty() && body_name != t.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    obj["apiVersion"] = json!(t.info.api_version());
    obj["kind"] = json!(t.info.kind);
    let key = t.key();
    let manager = req.manager();
    let w = cluster
        .store
        .write(&key, &t.ns, &t.name, req.dry_run(), |cur| {
            let cur = cur.ok_or_else(|| ApiError::not_found(&key.group, &key.resource, &t.name))?;
            if let Some(rv) = object::resource_version(&obj) {
                if Some(rv) != object::resource_version(cur) {
                    return Err(ApiError::conflict(&key.group, &key.resource, &t.name));
                }
            }
            let mut new = match t.sub.as_str() {
                "status" => {
                    let mut c = (**cur).clone();
                    c["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
                    c
                }
                "finalize" => {
                    let mut c = (**cur).clone();
                    c["spec"]["finalizers"] = obj
                        .pointer("/spec/finalizers")
                        .cloned()
                        .unwrap_or(json!([]));
                    c
                }
                "scale" => {
                    let mut c = (**cur).clone();
                    c["spec"]["replicas"] =
                        obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
                    c
                }
                _ => {
                    let mut n = obj.clone();
                    if t.info.status {
                        n["status"] = cur.get("status").cloned().unwrap_or(Value::Null);
                    }
                    admit_update(&t.info, cur, &mut n);
                    n
                }
            };
            let sub = (!t.sub.is_empty()).then_some(t.sub.as_str());
            ssa::track_update(Some(cur), &mut new, &manager, &t.info.api_version(), sub);
            Ok(new)
        })?;
    if t.sub == "scale" {
        return Ok(http::json(200, &scale_of(&t.info, &w.obj)));
    }
    Ok(http::json(200, &present(&t.info, &w.obj)))
}

pub(super) fn patch_(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
    let ct = req
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let key = t.key();
    let manager = req.manager();
    let av = t.info.api_version();
    let sub = (!t.sub.is_empty()).then_some(t.sub.as_str());
    let body = object::parse_body(&req.body).map_err(ApiError::bad_request)?;
    let w = if ct == "application/apply-patch+yaml" {
        let Some(manager) = req.q("fieldManager") else {
            return Err(ApiError::bad_request(
                "PATCH requests with apply content type require a field manager",
            ));
        };
        let force = req.flag("force");
        let mut applied = body;
        if !applied.is_object() {
            return Err(ApiError::bad_request("apply patch must be an object"));
        }
        let name = object::name(&applied);
        if !name.is_empty() && name != t.name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                t.name
            )));
        }
        if let Some(m) = applied.as_object_mut() {
            m.insert("apiVersion".into(), json!(av));
            m.insert("kind".into(), json!(t.info.kind));
            match t.sub.as_str() {
                "status" => m.retain(|k, _| {
                    matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status")
                }),
                _ if t.info.status => {
                    m.remove("status");
                }
                _ => {}
            }
        }
        meta_mut(&mut applied).insert("name".into(), json!(t.name));
        if t.info.namespaced {
            meta_mut(&mut applied).insert("namespace".into(), json!(t.ns));
        }
        let exists = cluster.store.get(&key, &t.ns, &t.name).is_some();
        if !exists {
            if !t.sub.is_empty() {
                return Err(ApiError::not_found(&key.group, &key.resource, &t.name));
            }
            validate_name(&t.info, &t.name)?;
            check_namespace(cluster, &t.info, &t.ns, &t.name)?;
        }
        cluster
            .store
            .write(&key, &t.ns, &t.name, req.dry_run(), |cur| match cur {
                None => {
                    let mut o = ssa::apply(None, &applied, manager, force, &av)?;
                    admit_create(cluster, &t.info, &mut o);
                    Ok(o)
                }
                Some(cur) => {
                    let mut o = ssa::apply(Some(cur), &applied, manager, force, &av)?;
                    admit_update(&t.info, cur, &mut o);
                    Ok(o)
                }
            })?
    } else {
        cluster
            .store
            .write(&key, &t.ns, &t.name, req.dry_run(), |cur| {
                let cur =
                    cur.ok_or_else(|| ApiError::not_found(&key.group, &key.resource, &t.name))?;
                let mut patched = (**cur).clone();
                match ct.as_str() {
                    "application/json-patch+json" => patch::json_patch(&mut patched, &body)?,
                    "application/merge-patch+json" => patch::merge_patch(&mut patched, &body),
                    "application/strategic-merge-patch+json" => {
                        patch::strategic_merge(&mut patched, &body)
                    }
                    other => return Err(ApiError::unsupported_media_type(other)),
                }
                if object::resource_version(&patched) != object::resource_version(cur) {
                    return Err(ApiError::conflict(&key.group, &key.resource, &t.name));
                }
                let mut new = match t.sub.as_str() {
                    "status" => {
                        let mut c = (**cur).clone();
                        c["status"] = patched.get("status").cloned().unwrap_or(Value::Null);
                        c
                    }
                    "scale" => {
                        let mut c = (**cur).clone();
                        c["spec"]["replicas"] = patched
                            .pointer("/spec/replicas")
                            .cloned()
                            .unwrap_or(json!(1));
                        c
                    }
                    _ => {
                        if t.info.status {
                            patched["status"] = cur.get("status").cloned().unwrap_or(Value::Null);
                        }
                        admit_update(&t.info, cur, &mut patched);
                        patched
                    }
                };
                ssa::track_update(Some(cur), &mut new, &manager, &av, sub);
                Ok(new)
            })?
    };
    if t.sub == "scale" {
        return Ok(http::json(200, &scale_of(&t.info, &w.obj)));
    }
    let code = if w.created { 201 } else { 200 };
    Ok(http::json(code, &present(&t.info, &w.obj)))
}
