//! Reads: get (and the log and scale subresources) and list.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::object::{self};
use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};

pub(super) fn get(cluster: &Cluster, req: &Request, t: &Target) -> ApiResult<Resp> {
    let obj = cluster
        .store
        .get(&t.key(), &t.ns, &t.name)
        .ok_or_else(|| ApiError::not_found(&t.info.group, &t.info.plural, &t.name))?;
    match t.sub.as_str() {
        "log" => {
            let mut log = cluster.log(&t.ns, &t.name).unwrap_or_default();
            if let Some(n) = req.q("tailLines").and_then(|n| n.parse::<usize>().ok()) {
                let lines: Vec<&str> = log.lines().collect();
                let start = lines.len().saturating_sub(n);
                log = lines[start..].iter().map(|l| format!("{l}\n")).collect();
            }
            if let Some(n) = req.q("limitBytes").and_then(|n| n.parse::<usize>().ok()) {
                log.truncate(n);
            }
            Ok(http::text(200, log))
        }
        "scale" => Ok(http::json(200, &scale_of(&t.info, &obj))),
        _ => Ok(http::json(200, &present(&t.info, &obj))),
    }
}

pub(super) fn scale_of(_info: &ResourceInfo, obj: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": object::name(obj), "namespace": object::namespace(obj),
            "uid": object::uid(obj), "resourceVersion": object::resource_version(obj),
            "creationTimestamp": object::meta(obj).get("creationTimestamp")},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector_string(obj)},
    })
}

/// `spec.selector.matchLabels` as a label selector string (Scale status).
pub(super) fn selector_string(obj: &Value) -> String {
    obj.pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Continue tokens encode the last (namespace, name) returned.
pub(super) fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([ns, name]).to_string())
}

pub(super) fn decode_continue(token: &str) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request("invalid continue token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v[0].as_str().ok_or_else(bad)?.to_string(),
        v[1].as_str().ok_or_else(bad)?.to_string(),
    ))
}

pub fn selectors(req: &Request) -> ApiResult<(LabelSelector, FieldSelector)> {
    Ok((
        LabelSelector::parse(req.q("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(req.q("fieldSelector").unwrap_or(""))?,
    ))
}

pub(super) fn list(cluster: &Cluster, req: &Request, t: &Target) -> ApiResult<Resp> {
    let (labels, fields) = selectors(req)?;
    let ns = (!t.ns.is_empty()).then_some(t.ns.as_str());
    let (items, rv) = cluster.store.list(&t.key(), ns);
    let after = req.q("continue").map(decode_continue).transpose()?;
    let limit = req
        .q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let mut out: Vec<&Arc<Value>> = Vec::new();
    let mut remaining = 0usize;
    for obj in items.iter() {
        if let Some((ans, aname)) = &after {
            if (object::namespace(obj), object::name(obj)) <= (ans.as_str(), aname.as_str()) {
                continue;
            }
        }
        if !labels.matches(obj) || !fields.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            remaining += 1;
            continue;
        }
        out.push(obj);
    }
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if remaining > 0 {
        if let Some(last) = out.last() {
            meta["continue"] = json!(encode_continue(object::namespace(last), object::name(last)));
            meta["remainingItemCount"] = json!(remaining);
        }
    }
    // Serialize items straight from the store (no deep copies) unless their stored
    // apiVersion/kind differ from the requested version.
    let av = t.info.api_version();
    let mut body = serde_json::to_vec(&json!({
        "apiVersion": av,
        "kind": format!("{}List", t.info.kind),
        "metadata": meta,
    }))
    .unwrap_or_default();
    body.pop(); // closing brace
    body.extend_from_slice(b",\"items\":[");
    for (i, obj) in out.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let same = obj.get("apiVersion").and_then(Value::as_str) == Some(av.as_str())
            && obj.get("kind").and_then(Value::as_str) == Some(t.info.kind.as_str());
        let written = if same {
            serde_json::to_writer(&mut body, obj.as_ref())
        } else {
            serde_json::to_writer(&mut body, &present(&t.info, obj))
        };
        written.map_err(|e| ApiError::internal(e.to_string()))?;
    }
    body.extend_from_slice(b"]}");
    Ok(http::json_bytes(200, body))
}
