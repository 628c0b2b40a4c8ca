//! Request bodies, name validation, namespace lifecycle checks and the defaults the real API
//! server fills in.

use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::object::{self};
use crate::resources::{self, ResourceInfo};
use crate::store::ResKey;

pub(super) fn parse_obj(req: &Request) -> ApiResult<Value> {
    let v = if req.content_type.contains("protobuf") {
        crate::proto::decode_body(&req.body).map_err(|msg| {
            let mut e = ApiError::unsupported_media_type(&req.content_type);
            e.message = msg;
            e
        })?
    } else if req.content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(&req.content_type));
    } else {
        object::parse_body(&req.body).map_err(ApiError::bad_request)?
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("request body must be an object"));
    }
    Ok(v)
}

pub(super) fn validate_name(info: &ResourceInfo, name: &str) -> ApiResult<()> {
    let err = |msg: &str| {
        Err(ApiError::invalid(
            &info.group,
            &info.kind,
            name,
            format!("metadata.name: Invalid value: \"{name}\": {msg}"),
        ))
    };
    if name.is_empty() {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            "",
            "metadata.name: Required value: name or generateName is required",
        ));
    }
    if info.group == "rbac.authorization.k8s.io" {
        if name.contains('/') || name.contains('%') || name == "." || name == ".." {
            return err("may not contain '/' or '%'");
        }
        return Ok(());
    }
    let label = info.plural == "namespaces";
    let max = if label { 63 } else { 253 };
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (c == '.' && !label));
    let ends_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.len() > max
        || !ok_chars
        || !ends_ok(name.chars().next())
        || !ends_ok(name.chars().last())
    {
        return err(if label {
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"
        } else {
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        });
    }
    Ok(())
}

/// Namespaced creates need a live namespace (the NamespaceLifecycle admission plugin): a
/// missing one is a 404 about the namespace; one being deleted refuses new content with a 403
/// Forbidden whose single cause is `NamespaceTerminating`. `name` is the object's name (empty
/// for generateName, which the real server has not resolved yet at admission).
pub(super) fn check_namespace(
    cluster: &Cluster,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
) -> ApiResult<()> {
    if !info.namespaced {
        return Ok(());
    }
    match cluster.store.get(&ResKey::new("", "namespaces"), "", ns) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if is_terminating(&n) => Err(namespace_terminating(info, ns, name)),
        Some(_) => Ok(()),
    }
}

/// What the lifecycle plugin checks: the phase (the namespace controller sets `Terminating`
/// as soon as a deletion timestamp is set; both are read, in case one lags).
fn is_terminating(ns: &Value) -> bool {
    object::is_deleting(ns)
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

/// The 403 Kubernetes answers a create in a namespace being deleted: `NewForbidden` of the
/// resource and name (`<resource>[.<group>] "<name>" is forbidden: ...`, without the quoted
/// name when it is empty), details naming group, resource and name, plus the cause.
fn namespace_terminating(info: &ResourceInfo, ns: &str, name: &str) -> ApiError {
    let resource = crate::error::qualified(&info.group, &info.plural);
    let subject = if name.is_empty() {
        resource
    } else {
        format!("{resource} \"{name}\"")
    };
    ApiError::forbidden(format!(
        "{subject} is forbidden: unable to create new content in namespace {ns} because it is being terminated"
    ))
    .with_details(json!({"name": name, "group": info.group, "kind": info.plural,
        "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))
}

/// Defaults the real API server would fill in on create.
pub(super) fn admit_create(cluster: &Cluster, info: &ResourceInfo, obj: &mut Value) {
    let name = object::name(obj).to_string();
    // Server-owned metadata is never taken from the client.
    let m = object::meta_mut(obj);
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        m.remove(k);
    }
    if info.status && !matches!(info.plural.as_str(), "namespaces" | "nodes") {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            object::ensure_object(obj, &["metadata", "labels"])
                .insert("kubernetes.io/metadata.name".into(), json!(name));
            object::ensure_object(obj, &["spec"])
                .insert("finalizers".into(), json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        ("", "services") => {
            let spec = object::ensure_object(obj, &["spec"]);
            let ty = spec
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP")
                .to_string();
            spec.insert("type".into(), json!(ty));
            if ty != "ExternalName" {
                let ip = match spec.get("clusterIP").and_then(Value::as_str) {
                    Some(ip) if !ip.is_empty() => ip.to_string(),
                    _ => {
                        let n = object::random_u64();
                        format!("10.96.{}.{}", (n >> 8) % 254 + 1, n % 254 + 1)
                    }
                };
                spec.insert("clusterIP".into(), json!(ip));
                spec.insert("clusterIPs".into(), json!([ip]));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            }
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports.iter_mut() {
                    let port = p.get("port").cloned().unwrap_or(Value::Null);
                    let po = object::ensure_object(p, &[]);
                    po.entry("protocol").or_insert(json!("TCP"));
                    po.entry("targetPort").or_insert(port);
                    if matches!(ty.as_str(), "NodePort" | "LoadBalancer")
                        && !po.contains_key("nodePort")
                    {
                        po.insert(
                            "nodePort".into(),
                            json!(30000 + object::random_u64() % 2767),
                        );
                    }
                }
            }
            obj["status"] = json!({"loadBalancer": {}});
        }
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending"});
            // Mutating admission: Istio's sidecar injector webhook.
            crate::injector::admit(cluster, obj);
        }
        ("", "secrets") => admit_secret(obj),
        ("apps", "deployments") | ("apps", "statefulsets") | ("apps", "replicasets") => {
            object::ensure_object(obj, &["spec"])
                .entry("replicas")
                .or_insert(json!(1));
        }
        ("batch", "jobs") => {
            // Like the Job admission: a server-chosen uid selects the Job's pods.
            let uid = object::new_uid();
            object::meta_mut(obj).insert("uid".into(), json!(uid));
            let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
            let spec = object::ensure_object(obj, &["spec"]);
            spec.entry("backoffLimit").or_insert(json!(6));
            spec.entry("completions").or_insert(json!(1));
            spec.entry("parallelism").or_insert(json!(1));
            if !manual {
                spec.insert(
                    "selector".into(),
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                let labels =
                    object::ensure_object(obj, &["spec", "template", "metadata", "labels"]);
                for (k, v) in [
                    ("batch.kubernetes.io/controller-uid", uid.as_str()),
                    ("batch.kubernetes.io/job-name", name.as_str()),
                    ("controller-uid", uid.as_str()),
                    ("job-name", name.as_str()),
                ] {
                    labels.insert(k.into(), json!(v));
                }
            }
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => resources::establish_crd(obj),
        _ => {}
    }
}

pub(super) fn admit_secret(obj: &mut Value) {
    if let Some(sd) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if let Some(sd) = sd.as_object() {
            let data = object::ensure_object(obj, &["data"]);
            for (k, v) in sd {
                let s = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                data.insert(
                    k.clone(),
                    json!(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
        }
    }
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
}

/// Fields the real server keeps across updates.
pub(super) fn admit_update(info: &ResourceInfo, old: &Value, new: &mut Value) {
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "secrets") => admit_secret(new),
        ("", "services") => {
            for k in ["clusterIP", "clusterIPs"] {
                if new.pointer(&format!("/spec/{k}")).is_none() {
                    if let Some(v) = old.pointer(&format!("/spec/{k}")) {
                        object::ensure_object(new, &["spec"]).insert(k.into(), v.clone());
                    }
                }
            }
        }
        ("", "namespaces") => {
            if let Some(f) = old.pointer("/spec/finalizers") {
                object::ensure_object(new, &["spec"]).insert("finalizers".into(), f.clone());
            }
        }
        _ => {}
    }
}
