//! The control endpoint (`/_sim/...`): faults, request counters, object dumps, settings — and
//! [`Control`], a small HTTPS client for it.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::auth::RestrictedUser;
use crate::cluster::{Cluster, Settings};
use crate::object;

/// A fault rule. `path` is a glob over the request path (`*` matches any run of characters
/// including `/`, `?` one character); `verb` (get, list, watch, create, update, patch, delete,
/// deletecollection) narrows it. The rule applies `latency_ms` first, then answers with `status`
/// (plus `Retry-After: retry_after_s`) or drops the connection (`drop`). The status comes as a
/// `Status` JSON body (with `details.retryAfterSeconds`), or with `plain_text` as kube-apiserver's
/// own overload filters (max-in-flight, priority and fairness) answer: a `text/plain` body and the
/// `Retry-After` header only. With `hold` a matching request waits (after any latency) until
/// `POST /_sim/holds/release` or until its connection closes, then is served normally: a test
/// can stop a client at an exact request and count the waiting ones (`GET /_sim/holds`). With
/// `count` it applies to the next N matching requests only; without, until cleared.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Fault {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_text: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<bool>,
}

/// What the matching fault rules do to one request.
#[derive(Debug, Default, PartialEq)]
pub struct FaultAction {
    pub latency_ms: u64,
    pub status: Option<u16>,
    pub retry_after_s: Option<u64>,
    pub plain_text: bool,
    pub drop: bool,
    /// Wait for a release before answering (see [`Holds`]).
    pub hold: bool,
}

/// Glob match: `*` any run of characters, `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Evaluate (and consume counted) fault rules for a request. Latencies of all matching rules add
/// up; the first matching rule with a status or drop decides the outcome.
pub fn faults_for(cluster: &Cluster, path: &str, verb: &str) -> FaultAction {
    let mut faults = cluster.faults.lock().unwrap_or_else(|e| e.into_inner());
    let mut action = FaultAction::default();
    let mut decided = false;
    for f in faults.iter_mut() {
        if !glob_match(&f.path, path) || f.verb.as_deref().is_some_and(|v| v != verb) {
            continue;
        }
        if f.count == Some(0) {
            continue;
        }
        let mut used = false;
        if let Some(l) = f.latency_ms {
            action.latency_ms += l;
            used = true;
        }
        if f.hold == Some(true) {
            action.hold = true;
            used = true;
        }
        if !decided && (f.status.is_some() || f.drop == Some(true)) {
            action.status = f.status;
            action.retry_after_s = f.retry_after_s;
            action.plain_text = f.plain_text == Some(true);
            action.drop = f.drop == Some(true);
            decided = true;
            used = true;
        }
        if used {
            if let Some(c) = f.count.as_mut() {
                *c = c.saturating_sub(1);
            }
        }
    }
    faults.retain(|f| f.count != Some(0));
    action
}

/// Request counters of one cluster.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub total: u64,
    pub by_verb_resource: BTreeMap<(String, String), u64>,
    pub non_resource: BTreeMap<String, u64>,
}

impl Counters {
    pub fn count(&mut self, verb: &str, resource: Option<&str>, path: &str) {
        self.total += 1;
        match resource {
            Some(r) => {
                *self
                    .by_verb_resource
                    .entry((verb.to_string(), r.to_string()))
                    .or_insert(0) += 1
            }
            None => *self.non_resource.entry(path.to_string()).or_insert(0) += 1,
        }
    }

    pub fn to_json(&self) -> Value {
        let counts: Vec<Value> = self
            .by_verb_resource
            .iter()
            .map(|((v, r), n)| json!({"verb": v, "resource": r, "count": n}))
            .collect();
        let by_key: BTreeMap<String, u64> = self
            .by_verb_resource
            .iter()
            .map(|((v, r), n)| (format!("{v} {r}"), *n))
            .collect();
        json!({
            "total": self.total,
            "counts": counts,
            "by_key": by_key,
            "non_resource": self.non_resource,
        })
    }
}

/// Handle `/_sim/...` (already authenticated). Returns (status, JSON body).
pub fn handle(cluster: &Arc<Cluster>, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
    let parse = || object::parse_body(body).map_err(|e| (400, json!({"error": e})));
    let res: Result<Value, (u16, Value)> = (|| match (method, path) {
        ("GET", "/_sim/dump") => Ok(cluster.dump()),
        ("GET", "/_sim/counters") => Ok(cluster
            .counters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_json()),
        ("POST", "/_sim/counters/reset") => {
            *cluster.counters.lock().unwrap_or_else(|e| e.into_inner()) = Counters::default();
            Ok(json!({"ok": true}))
        }
        ("GET", "/_sim/faults") => {
            Ok(json!({"faults": *cluster.faults.lock().unwrap_or_else(|e| e.into_inner())}))
        }
        ("POST", "/_sim/faults") => {
            let v = parse()?;
            let rules: Vec<Fault> = if v.is_array() {
                serde_json::from_value(v)
            } else {
                serde_json::from_value(v).map(|f| vec![f])
            }
            .map_err(|e| (400, json!({"error": format!("bad fault: {e}")})))?;
            cluster
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(rules);
            Ok(json!({"ok": true}))
        }
        ("DELETE", "/_sim/faults") => {
            cluster
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            Ok(json!({"ok": true}))
        }
        ("GET", "/_sim/holds") => Ok(cluster.holds.counts()),
        ("POST", "/_sim/holds/release") => {
            // Later requests pass: the hold rules go with the release.
            cluster
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|f| f.hold != Some(true));
            let released = cluster.holds.release();
            Ok(json!({"released": released}))
        }
        ("GET", "/_sim/settings") => Ok(settings_json(cluster)),
        ("POST", "/_sim/settings") => {
            let mut patch = parse()?;
            if let Some(users) = patch
                .as_object_mut()
                .and_then(|m| m.remove("restricted_users"))
            {
                let users: Vec<RestrictedUser> = serde_json::from_value(users)
                    .map_err(|e| (400, json!({"error": format!("bad restricted_users: {e}")})))?;
                for u in users {
                    cluster.auth.add_restricted(u);
                }
            }
            {
                let mut s = cluster.settings.write().unwrap_or_else(|e| e.into_inner());
                let mut cur = serde_json::to_value(&*s).unwrap_or(Value::Null);
                crate::patch::merge_patch(&mut cur, &patch);
                *s = serde_json::from_value::<Settings>(cur)
                    .map_err(|e| (400, json!({"error": format!("bad settings: {e}")})))?;
            }
            cluster.settings_changed.notify_one();
            Ok(settings_json(cluster))
        }
        ("GET", "/_sim/stats") => Ok(json!({
            "objects": cluster.store.count(),
            "resourceVersion": cluster.store.current_rv(),
            "by_resource": cluster.counts_by_resource(),
        })),
        _ => Err((
            404,
            json!({"error": format!("no control endpoint {method} {path}")}),
        )),
    })();
    match res {
        Ok(v) => (200, v),
        Err(e) => e,
    }
}

/// Requests stopped by `hold` rules. Each held request subscribes to a release generation
/// and waits for the next one; dropping the request (its connection closed) stops waiting.
pub struct Holds {
    release: tokio::sync::watch::Sender<u64>,
    /// Held now, and held since the cluster started.
    waiting: std::sync::atomic::AtomicU64,
    total: std::sync::atomic::AtomicU64,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            release: tokio::sync::watch::Sender::new(0),
            waiting: Default::default(),
            total: Default::default(),
        }
    }
}

/// Counts one held request for as long as it waits (however the wait ends).
struct Waiting<'a>(&'a Holds);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Holds {
    /// Waits until the next release.
    pub async fn wait(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        let mut released = self.release.subscribe();
        self.waiting.fetch_add(1, SeqCst);
        self.total.fetch_add(1, SeqCst);
        let _counted = Waiting(self);
        // The sender lives as long as the cluster: `changed` only ends by a release.
        let _ = released.changed().await;
    }

    /// Lets every held request go; returns how many were waiting.
    pub fn release(&self) -> u64 {
        let n = self.waiting.load(std::sync::atomic::Ordering::SeqCst);
        self.release.send_modify(|g| *g += 1);
        n
    }

    /// `{"waiting": N, "total": M}`.
    pub fn counts(&self) -> Value {
        use std::sync::atomic::Ordering::SeqCst;
        json!({"waiting": self.waiting.load(SeqCst), "total": self.total.load(SeqCst)})
    }
}

fn settings_json(cluster: &Cluster) -> Value {
    let mut v = serde_json::to_value(cluster.settings()).unwrap_or(Value::Null);
    v["restricted_users"] =
        serde_json::to_value(cluster.auth.restricted_users()).unwrap_or(Value::Null);
    v
}

/// HTTPS client for one cluster's `/_sim` endpoint.
#[derive(Clone)]
pub struct Control {
    url: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

/// Parsed `GET /_sim/counters`.
#[derive(Debug, Clone, Default)]
pub struct CounterSnapshot {
    pub total: u64,
    pub counts: BTreeMap<(String, String), u64>,
    pub non_resource: BTreeMap<String, u64>,
}

impl CounterSnapshot {
    /// Count for one verb and resource (`"list"`, `"secrets"`), 0 when absent.
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.counts
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Sum over all resources of one verb.
    pub fn verb_total(&self, verb: &str) -> u64 {
        self.counts
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Control {
    pub fn new(url: &str, ca_pem: &str, token: &str) -> Result<Self> {
        Ok(Control {
            url: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            tls: Arc::new(crate::tls::client_config(ca_pem)?),
        })
    }

    /// One request to the control endpoint; returns the JSON body.
    pub async fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, v) = self.raw(method, path, body).await?;
        if status != 200 {
            bail!("{method} {path}: HTTP {status}: {v}");
        }
        Ok(v)
    }

    /// Low-level request returning status and JSON body.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let (status, _, v) = self.raw_response(method, path, body).await?;
        Ok((status, v))
    }

    /// Low-level request returning status, headers (lower-case names) and JSON body. Any path
    /// can be requested (with this client's token), which tests use for raw API calls.
    pub async fn raw_response(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, BTreeMap<String, String>, Value)> {
        let rest = self
            .url
            .strip_prefix("https://")
            .ok_or_else(|| anyhow!("control URL must be https: {}", self.url))?;
        let host = rest.split(':').next().unwrap_or("127.0.0.1").to_string();
        let tcp = tokio::net::TcpStream::connect(rest)
            .await
            .with_context(|| format!("connect {rest}"))?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(crate::tls::server_name(&host)?, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let data = body.map(|b| b.to_string()).unwrap_or_default();
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", rest)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(data)))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}))
        };
        Ok((status, headers, v))
    }

    /// Every object in the cluster.
    pub async fn dump(&self) -> Result<Vec<Value>> {
        let v = self.request("GET", "/_sim/dump", None).await?;
        Ok(v["objects"].as_array().cloned().unwrap_or_default())
    }

    pub async fn counters(&self) -> Result<CounterSnapshot> {
        let v = self.request("GET", "/_sim/counters", None).await?;
        let mut snap = CounterSnapshot {
            total: v["total"].as_u64().unwrap_or(0),
            ..Default::default()
        };
        for c in v["counts"].as_array().into_iter().flatten() {
            snap.counts.insert(
                (
                    c["verb"].as_str().unwrap_or("").to_string(),
                    c["resource"].as_str().unwrap_or("").to_string(),
                ),
                c["count"].as_u64().unwrap_or(0),
            );
        }
        if let Some(m) = v["non_resource"].as_object() {
            for (k, n) in m {
                snap.non_resource.insert(k.clone(), n.as_u64().unwrap_or(0));
            }
        }
        Ok(snap)
    }

    pub async fn reset_counters(&self) -> Result<()> {
        self.request("POST", "/_sim/counters/reset", None)
            .await
            .map(|_| ())
    }

    pub async fn add_fault(&self, fault: &Fault) -> Result<()> {
        self.request("POST", "/_sim/faults", Some(&serde_json::to_value(fault)?))
            .await
            .map(|_| ())
    }

    /// Requests held by `hold` rules: (waiting now, held in total).
    pub async fn holds(&self) -> Result<(u64, u64)> {
        let v = self.request("GET", "/_sim/holds", None).await?;
        Ok((
            v["waiting"].as_u64().unwrap_or(0),
            v["total"].as_u64().unwrap_or(0),
        ))
    }

    /// Removes the hold rules and lets the held requests go; returns how many were waiting.
    pub async fn release_holds(&self) -> Result<u64> {
        let v = self.request("POST", "/_sim/holds/release", None).await?;
        Ok(v["released"].as_u64().unwrap_or(0))
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.request("DELETE", "/_sim/faults", None)
            .await
            .map(|_| ())
    }

    /// Added latency on every API request (RTT simulation); 0 clears all faults.
    pub async fn set_global_latency(&self, ms: u64) -> Result<()> {
        self.clear_faults().await?;
        if ms > 0 {
            self.add_fault(&Fault {
                path: "*".into(),
                latency_ms: Some(ms),
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }

    /// Merge a partial settings document (see [`Settings`]); may carry `restricted_users`.
    pub async fn settings(&self, patch: &Value) -> Result<Value> {
        self.request("POST", "/_sim/settings", Some(patch)).await
    }

    pub async fn add_restricted_user(&self, user: &RestrictedUser) -> Result<()> {
        self.settings(&json!({"restricted_users": [user]}))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "/api/v1/secrets"));
        assert!(glob_match(
            "/api/v1/namespaces/*/secrets*",
            "/api/v1/namespaces/a/secrets/b"
        ));
        assert!(!glob_match("/apis/*", "/api/v1"));
        assert!(glob_match("/api/v?", "/api/v1"));
    }
}
