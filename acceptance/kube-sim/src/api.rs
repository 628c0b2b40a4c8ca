//! Request routing and the resource handlers: get, list, watch, create, update, patch, delete,
//! deletecollection, and the `status`, `log`, `token` subresources.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::auth::{Attributes, Identity};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::object::{self, meta_mut};
use crate::resources::{self, ResourceInfo};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{Preconditions, ResKey, Write};
use crate::{discovery, patch, ssa, watch};

/// A parsed request.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
}

impl Request {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }

    fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }

    /// fieldManager query, else derived from the User-Agent like the real server.
    fn manager(&self) -> String {
        if let Some(m) = self.q("fieldManager") {
            return m.to_string();
        }
        let ua = self.user_agent.split('/').next().unwrap_or("").trim();
        if ua.is_empty() {
            "unknown".into()
        } else {
            ua.to_string()
        }
    }
}

pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a request addresses.
pub enum Route {
    /// Discovery, version, health, openapi.
    NonResource,
    Resource(Box<Target>),
}

pub struct Target {
    pub info: ResourceInfo,
    pub ns: String,
    pub name: String,
    pub sub: String,
    pub verb: &'static str,
}

impl Target {
    /// `pods/log`, `secrets`.
    pub fn resource_label(&self) -> String {
        if self.sub.is_empty() {
            self.info.plural.clone()
        } else {
            format!("{}/{}", self.info.plural, self.sub)
        }
    }

    fn key(&self) -> ResKey {
        self.info.key()
    }
}

fn not_served() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

pub fn route(cluster: &Cluster, req: &Request) -> ApiResult<Route> {
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (g, v, rest),
        _ => return Ok(Route::NonResource),
    };
    let (ns, res, name, sub) = match rest {
        ["namespaces", ns, res, more @ ..]
            if !(group.is_empty()
                && (*res == "status" || *res == "finalize")
                && more.is_empty()) =>
        {
            (
                ns.to_string(),
                *res,
                more.first().copied().unwrap_or(""),
                more.get(1).copied().unwrap_or(""),
            )
        }
        [res, more @ ..] => (
            String::new(),
            *res,
            more.first().copied().unwrap_or(""),
            more.get(1).copied().unwrap_or(""),
        ),
        [] => return Err(not_served()),
    };
    let info = resources::resolve(&cluster.store, group, version, res).ok_or_else(not_served)?;
    if !info.namespaced && !ns.is_empty() {
        return Err(not_served());
    }
    if info.namespaced && ns.is_empty() && !name.is_empty() {
        return Err(not_served());
    }
    let sub_served = sub.is_empty()
        || (sub == "status" && info.status)
        || info.subresources.iter().any(|s| s == sub);
    if !sub_served {
        return Err(not_served());
    }
    let verb = match (req.method.as_str(), name.is_empty()) {
        ("GET", true) if req.flag("watch") => "watch",
        ("GET", true) => "list",
        ("GET", false) => "get",
        ("POST", _) => "create",
        ("PUT", false) => "update",
        ("PATCH", false) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({} {})",
                req.method, req.path
            )))
        }
    };
    if info.create_only && verb != "create" {
        return Err(ApiError::method_not_allowed("only create is allowed"));
    }
    Ok(Route::Resource(Box::new(Target {
        info,
        ns,
        name: name.to_string(),
        sub: sub.to_string(),
        verb,
    })))
}

pub fn attributes<'a>(t: &'a Target, resource_label: &'a str) -> Attributes<'a> {
    Attributes {
        verb: t.verb,
        group: &t.info.group,
        resource: resource_label,
        namespace: &t.ns,
        name: &t.name,
        non_resource: false,
    }
}

/// Non-resource GETs: discovery, version, health.
pub fn non_resource(cluster: &Cluster, req: &Request) -> Resp {
    if req.method != "GET" {
        return http::error(&ApiError::method_not_allowed("only GET is allowed here"));
    }
    let segs: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let addr = cluster
        .addr
        .get()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let found = match segs.as_slice() {
        ["version"] => Some(discovery::version()),
        ["api"] => Some(discovery::api_versions(&addr)),
        ["apis"] => Some(discovery::api_group_list(&cluster.store)),
        ["api", "v1"] => discovery::resource_list(&cluster.store, "", "v1"),
        ["apis", g] => discovery::api_group(&cluster.store, g),
        ["apis", g, v] => discovery::resource_list(&cluster.store, g, v),
        ["healthz"] | ["livez"] | ["readyz"] => return http::text(200, "ok".into()),
        ["openapi", "v3"] => Some(discovery::openapi_root(&cluster.store)),
        ["openapi", "v3", rest @ ..] => discovery::openapi_gv(&cluster.store, &rest.join("/")),
        _ => None,
    };
    match found {
        Some(v) => http::json(200, &v),
        None => http::error(&not_served()),
    }
}

fn present(info: &ResourceInfo, obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    o
}

/// Dispatch a resource request (already authenticated and authorized).
pub async fn handle(
    cluster: &Arc<Cluster>,
    req: &Request,
    t: &Target,
    who: &Identity,
) -> ApiResult<Resp> {
    match t.verb {
        "get" => get(cluster, req, t),
        "list" => list(cluster, req, t),
        "watch" => watch::serve(cluster.clone(), req, t).await,
        "create" => create(cluster, req, t, who),
        "update" => update(cluster, req, t),
        "patch" => patch_(cluster, req, t),
        "delete" => delete(cluster, req, t),
        "deletecollection" => delete_collection(cluster, req, t),
        _ => Err(not_served()),
    }
}

fn get(cluster: &Cluster, req: &Request, t: &Target) -> ApiResult<Resp> {
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

fn scale_of(info: &ResourceInfo, obj: &Value) -> Value {
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": object::name(obj), "namespace": object::namespace(obj),
            "uid": object::uid(obj), "resourceVersion": object::resource_version(obj),
            "creationTimestamp": object::meta(obj).get("creationTimestamp")},
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": info.kind.clone()},
    })
}

/// Continue tokens encode the last (namespace, name) returned.
fn encode_continue(ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([ns, name]).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(String, String)> {
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

fn list(cluster: &Cluster, req: &Request, t: &Target) -> ApiResult<Resp> {
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

fn check_content_type(req: &Request) -> ApiResult<()> {
    if req.content_type.contains("protobuf") || req.content_type.contains("cbor") {
        return Err(ApiError::unsupported_media_type(&req.content_type));
    }
    Ok(())
}

fn parse_obj(req: &Request) -> ApiResult<Value> {
    check_content_type(req)?;
    let v = object::parse_body(&req.body).map_err(ApiError::bad_request)?;
    if !v.is_object() {
        return Err(ApiError::bad_request("request body must be an object"));
    }
    Ok(v)
}

fn validate_name(info: &ResourceInfo, name: &str) -> ApiResult<()> {
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

/// Namespaced creates need a live namespace.
fn check_namespace(cluster: &Cluster, info: &ResourceInfo, ns: &str) -> ApiResult<()> {
    if !info.namespaced {
        return Ok(());
    }
    match cluster.store.get(&ResKey::new("", "namespaces"), "", ns) {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if object::is_deleting(&n) => Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
            crate::error::qualified(&info.group, &info.plural),
            "",
            ns
        ))
        .with_details(json!({"kind": info.plural, "group": info.group,
            "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))),
        Some(_) => Ok(()),
    }
}

/// Defaults the real API server would fill in on create.
fn admit_create(cluster: &Cluster, info: &ResourceInfo, obj: &mut Value) {
    let name = object::name(obj).to_string();
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
        }
        ("", "secrets") => admit_secret(obj),
        ("apps", "deployments") | ("apps", "statefulsets") | ("apps", "replicasets") => {
            object::ensure_object(obj, &["spec"])
                .entry("replicas")
                .or_insert(json!(1));
        }
        ("batch", "jobs") => {
            let spec = object::ensure_object(obj, &["spec"]);
            spec.entry("backoffLimit").or_insert(json!(6));
            spec.entry("completions").or_insert(json!(1));
            spec.entry("parallelism").or_insert(json!(1));
        }
        ("apiextensions.k8s.io", "customresourcedefinitions") => resources::establish_crd(obj),
        _ => {}
    }
    let _ = cluster;
}

fn admit_secret(obj: &mut Value) {
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
fn admit_update(info: &ResourceInfo, old: &Value, new: &mut Value) {
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

fn create(cluster: &Arc<Cluster>, req: &Request, t: &Target, who: &Identity) -> ApiResult<Resp> {
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
    check_namespace(cluster, &t.info, &t.ns)?;
    let generate = object::meta_str(&obj, "generateName").map(str::to_string);
    let fixed = object::name(&obj).to_string();
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
                Ok(Write::Put(o))
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

fn update(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
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
            Ok(Write::Put(new))
        })?;
    if t.sub == "scale" {
        return Ok(http::json(200, &scale_of(&t.info, &w.obj)));
    }
    Ok(http::json(200, &present(&t.info, &w.obj)))
}

fn patch_(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
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
            check_namespace(cluster, &t.info, &t.ns)?;
        }
        cluster
            .store
            .write(&key, &t.ns, &t.name, req.dry_run(), |cur| match cur {
                None => {
                    let mut o = ssa::apply(None, &applied, manager, force, &av)?;
                    admit_create(cluster, &t.info, &mut o);
                    Ok(Write::Put(o))
                }
                Some(cur) => {
                    let mut o = ssa::apply(Some(cur), &applied, manager, force, &av)?;
                    admit_update(&t.info, cur, &mut o);
                    Ok(Write::Put(o))
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
                Ok(Write::Put(new))
            })?
    };
    let code = if w.created { 201 } else { 200 };
    Ok(http::json(code, &present(&t.info, &w.obj)))
}

/// Propagation policy from query or DeleteOptions body; jobs default to Orphan like batch/v1.
fn propagation(req: &Request, t: &Target, opts: &Value) -> String {
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

fn delete_one(
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

fn delete_opts(req: &Request) -> Value {
    if req.body.is_empty() {
        return json!({});
    }
    object::parse_body(&req.body).unwrap_or(json!({}))
}

fn delete(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
    let opts = delete_opts(req);
    let obj = delete_one(cluster, req, t, &t.name, &opts)?;
    Ok(http::json(200, &present(&t.info, &obj)))
}

fn delete_collection(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
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

fn token_request(cluster: &Cluster, t: &Target, body: Value) -> ApiResult<Resp> {
    let sa = cluster
        .store
        .get(&ResKey::new("", "serviceaccounts"), &t.ns, &t.name)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", &t.name))?;
    let secs = body
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600)
        .max(600);
    let audiences = body
        .pointer("/spec/audiences")
        .filter(|a| a.as_array().is_some_and(|a| !a.is_empty()))
        .cloned()
        .unwrap_or(json!(["https://kubernetes.default.svc.cluster.local"]));
    let exp = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    let token = crate::auth::mint_jwt(
        &t.ns,
        &t.name,
        object::uid(&sa),
        Some(exp.unix_timestamp()),
        &audiences,
    );
    cluster
        .auth
        .register_bound_token(&token, &t.ns, &t.name, exp);
    let mut spec = body.get("spec").cloned().unwrap_or(json!({}));
    spec["audiences"] = audiences;
    spec["expirationSeconds"] = json!(secs);
    Ok(http::json(
        201,
        &json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": t.name, "namespace": t.ns, "creationTimestamp": null},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": object::rfc3339(exp)}
        }),
    ))
}

fn review(cluster: &Cluster, t: &Target, who: &Identity, mut body: Value) -> ApiResult<Resp> {
    match t.info.plural.as_str() {
        "selfsubjectaccessreviews" | "subjectaccessreviews" => {
            let ra = body
                .pointer("/spec/resourceAttributes")
                .cloned()
                .unwrap_or(json!({}));
            let s = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let resource = if s("subresource").is_empty() {
                s("resource")
            } else {
                format!("{}/{}", s("resource"), s("subresource"))
            };
            let (verb, group, ns, name) = (s("verb"), s("group"), s("namespace"), s("name"));
            let attrs = Attributes {
                verb: &verb,
                group: &group,
                resource: &resource,
                namespace: &ns,
                name: &name,
                non_resource: body.pointer("/spec/nonResourceAttributes").is_some(),
            };
            let allowed = cluster.auth.authorize(who, &attrs, &cluster.store).is_ok();
            body["status"] = json!({"allowed": allowed});
        }
        "tokenreviews" => {
            let token = body
                .pointer("/spec/token")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match cluster
                .auth
                .authenticate(Some(&token), None, &cluster.store)
            {
                Ok(id) => {
                    body["status"] =
                        json!({"authenticated": true, "user": {"username": id.user_name()}})
                }
                Err(_) => body["status"] = json!({"authenticated": false}),
            }
        }
        _ => return Err(not_served()),
    }
    body["apiVersion"] = json!(t.info.api_version());
    body["kind"] = json!(t.info.kind);
    Ok(http::json(201, &body))
}
