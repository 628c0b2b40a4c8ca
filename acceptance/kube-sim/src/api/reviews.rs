//! Create-only endpoints: TokenRequest, access reviews, token reviews.

use serde_json::{json, Value};

use super::*;
use crate::auth::{Attributes, Identity};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::object::{self};
use crate::store::ResKey;

pub(super) fn token_request(cluster: &Cluster, t: &Target, body: Value) -> ApiResult<Resp> {
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

pub(super) fn review(
    cluster: &Cluster,
    t: &Target,
    who: &Identity,
    mut body: Value,
) -> ApiResult<Resp> {
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
