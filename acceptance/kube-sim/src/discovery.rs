//! Discovery documents: `/version`, `/api`, `/apis`, group and group-version resource lists.

use serde_json::{json, Value};

use crate::resources::{self, ResourceInfo};
use crate::store::Store;

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn api_group_list(store: &Store) -> Value {
    let groups: Vec<Value> = resources::groups(store)
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub fn api_group(store: &Store, group: &str) -> Option<Value> {
    resources::groups(store)
        .iter()
        .find(|(g, _)| g == group)
        .map(|(g, vs)| {
            let mut d = group_doc(g, vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

fn resource_doc(r: &ResourceInfo) -> Vec<Value> {
    let mut out = vec![json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": r.verbs(),
        "shortNames": r.short_names,
        "categories": r.categories,
    })];
    if r.status {
        out.push(json!({
            "name": format!("{}/status", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    for sub in &r.subresources {
        let (kind, group, version, verbs): (&str, Option<&str>, Option<&str>, Vec<&str>) =
            match sub.as_str() {
                "log" => ("Pod", None, None, vec!["get"]),
                "portforward" => ("PodPortForwardOptions", None, None, vec!["create", "get"]),
                "exec" => ("PodExecOptions", None, None, vec!["create", "get"]),
                "proxy" => (
                    "PodProxyOptions",
                    None,
                    None,
                    vec!["create", "delete", "get", "patch", "update"],
                ),
                "token" => (
                    "TokenRequest",
                    Some("authentication.k8s.io"),
                    Some("v1"),
                    vec!["create"],
                ),
                "scale" => (
                    "Scale",
                    Some("autoscaling"),
                    Some("v1"),
                    vec!["get", "patch", "update"],
                ),
                "finalize" => ("Namespace", None, None, vec!["update"]),
                _ => continue,
            };
        let mut d = json!({
            "name": format!("{}/{}", r.plural, sub),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let Some(g) = group {
            d["group"] = json!(g);
        }
        if let Some(v) = version {
            d["version"] = json!(v);
        }
        out.push(d);
    }
    out
}

/// `APIResourceList` for a group/version, None when nothing is served there.
pub fn resource_list(store: &Store, group: &str, version: &str) -> Option<Value> {
    let rs = resources::resources_in(store, group, version);
    if rs.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let resources: Vec<Value> = rs.iter().flat_map(resource_doc).collect();
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per served group/version.
pub fn openapi_root(store: &Store) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in resources::groups(store) {
        for v in vs {
            let p = gv_path(&g, &v);
            paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kube-sim-{}", store.current_rv())}));
        }
    }
    json!({ "paths": paths })
}

/// `/openapi/v3/<gv>`: a minimal OpenAPI document. Schemas are open (no client-side
/// validation); each resource's PATCH operation declares `fieldValidation` so clients (kubectl)
/// rely on server-side validation.
pub fn openapi_gv(store: &Store, gv: &str) -> Option<Value> {
    let (group, version) = match gv.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    let rs = resources::resources_in(store, &group, &version);
    if rs.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for r in rs.iter().filter(|r| !r.create_only) {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = if r.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}/{{name}}",
                gv_path(&group, &version),
                r.plural
            )
        } else {
            format!("/{}/{}/{{name}}", gv_path(&group, &version), r.plural)
        };
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}
        ]);
        let schema_name = format!(
            "{}.{}.{}",
            if group.is_empty() {
                "io.k8s.api.core"
            } else {
                group.as_str()
            },
            version,
            r.kind
        );
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", r.kind), "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk, "parameters": params,
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema_name}")}}}}}})
        };
        paths.insert(base, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        schemas.insert(
            schema_name,
            json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": [gvk]}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-sim)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas}
    }))
}
