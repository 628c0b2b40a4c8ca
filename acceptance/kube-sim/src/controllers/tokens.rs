//! The service-account token controller: populates `kubernetes.io/service-account-token` Secrets
//! with `token`, `ca.crt` and `namespace`, and removes them when their ServiceAccount goes.

use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use super::{key, schedule};
use crate::cluster::Cluster;
use crate::object;
use crate::store::{Event, EventKind, Preconditions};

const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME: &str = "kubernetes.io/service-account.name";

fn is_unpopulated_token_secret(s: &Value) -> bool {
    s.get("type").and_then(Value::as_str) == Some(TOKEN_TYPE)
        && object::annotation(s, SA_NAME).is_some()
        && s.pointer("/data/token").is_none()
        && !object::is_deleting(s)
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    let settings = cluster.settings().tokens;
    if !settings.enabled {
        return;
    }
    if ev.res == key("", "secrets")
        && ev.kind != EventKind::Deleted
        && is_unpopulated_token_secret(&ev.obj)
    {
        queue(
            cluster,
            object::namespace(&ev.obj),
            object::name(&ev.obj),
            settings.delay_ms,
        );
    }
    if ev.res == key("", "serviceaccounts") {
        let ns = object::namespace(&ev.obj).to_string();
        let sa = object::name(&ev.obj).to_string();
        let secrets = cluster.store.list(&key("", "secrets"), Some(&ns)).0;
        for s in secrets
            .iter()
            .filter(|s| object::annotation(s, SA_NAME) == Some(sa.as_str()))
        {
            match ev.kind {
                EventKind::Deleted if s.get("type").and_then(Value::as_str) == Some(TOKEN_TYPE) => {
                    let _ = cluster.store.delete(
                        &key("", "secrets"),
                        &ns,
                        object::name(s),
                        &Preconditions::default(),
                        false,
                    );
                }
                EventKind::Added if is_unpopulated_token_secret(s) => {
                    queue(cluster, &ns, object::name(s), settings.delay_ms);
                }
                _ => {}
            }
        }
    }
}

pub fn resync(cluster: &Arc<Cluster>) {
    let settings = cluster.settings().tokens;
    if !settings.enabled {
        return;
    }
    for s in cluster.store.list(&key("", "secrets"), None).0 {
        if is_unpopulated_token_secret(&s) {
            queue(
                cluster,
                object::namespace(&s),
                object::name(&s),
                settings.delay_ms,
            );
        }
    }
}

fn queue(cluster: &Arc<Cluster>, ns: &str, name: &str, delay_ms: u64) {
    let (ns, name) = (ns.to_string(), name.to_string());
    schedule(cluster, format!("token/{ns}/{name}"), delay_ms, move |c| {
        populate(c, &ns, &name)
    });
}

fn populate(cluster: &Arc<Cluster>, ns: &str, name: &str) {
    let Some(secret) = cluster.store.get(&key("", "secrets"), ns, name) else {
        return;
    };
    if !is_unpopulated_token_secret(&secret) {
        return;
    }
    let sa_name = object::annotation(&secret, SA_NAME)
        .unwrap_or("")
        .to_string();
    let Some(sa) = cluster.store.get(&key("", "serviceaccounts"), ns, &sa_name) else {
        return; // populated when the ServiceAccount appears
    };
    let sa_uid = object::uid(&sa).to_string();
    let token = crate::auth::mint_jwt(
        ns,
        &sa_name,
        &sa_uid,
        None,
        &json!(["https://kubernetes.default.svc.cluster.local"]),
    );
    let b64 = |s: &str| json!(base64::engine::general_purpose::STANDARD.encode(s));
    cluster
        .auth
        .register_secret_token(&token, ns, &sa_name, name);
    let ca = cluster.pki.ca_pem.clone();
    cluster.update_internal(&key("", "secrets"), ns, name, |s| {
        let data = object::ensure_object(s, &["data"]);
        data.insert("token".into(), b64(&token));
        data.insert("ca.crt".into(), b64(&ca));
        data.insert("namespace".into(), b64(ns));
        object::ensure_object(s, &["metadata", "annotations"])
            .insert("kubernetes.io/service-account.uid".into(), json!(sa_uid));
    });
}
