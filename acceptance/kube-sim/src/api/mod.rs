//! Request routing and the resource handlers: get, list, watch, create, update, patch, delete,
//! deletecollection, and the `status`, `log`, `token`, `portforward`, `exec`, `proxy` subresources.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::auth::{Attributes, Identity};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::resources::{self, ResourceInfo};
use crate::store::ResKey;
use crate::{discovery, watch};

mod admission;
mod delete;
mod exec;
mod read;
mod reviews;
mod stream;
mod write;

use admission::*;
use delete::*;
pub use read::selectors;
use read::*;
use reviews::*;
use write::*;

/// A parsed request.
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: HashMap<String, String>,
    /// The query string as sent (repeated parameters such as exec's `command`).
    pub raw_query: String,
    pub content_type: String,
    pub user_agent: String,
    pub body: Bytes,
    /// A websocket upgrade request (streaming subresources).
    pub websocket: Option<crate::wsstream::Handshake>,
}

impl Request {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query
            .get(k)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Every value of a repeated query parameter, in order (`command=a&command=b`).
    pub fn q_all(&self, k: &str) -> Vec<String> {
        self.raw_query
            .split('&')
            .filter_map(|p| {
                let (key, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(key) == k).then(|| percent_decode(v))
            })
            .collect()
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
    if t.info.plural == "pods" && t.info.group.is_empty() {
        match t.sub.as_str() {
            "portforward" => return stream::portforward(cluster, req, t, who).await,
            "exec" => return exec::exec(cluster, req, t, who).await,
            "proxy" => return stream::proxy(cluster, req, t),
            _ => {}
        }
    }
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
