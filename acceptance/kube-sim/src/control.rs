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

/// Seeded random faults on a share of all API requests of one cluster (chaos testing). Part of
/// [`Settings`] (`chaos`), so it is set per cluster through `POST /_sim/settings`,
/// `POST /_sim/chaos`, `Options` or the CLI's `--chaos-share`/`--chaos-seed`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChaosSetting {
    /// Share (0..=1) of API requests that get a fault; 0 switches chaos off.
    pub share: f64,
    /// With the cluster's name, fixes which requests (by their number since this setting took
    /// effect) get which fault.
    pub seed: u64,
}

impl ChaosSetting {
    /// The setting's problem, naming the attribute, if it is out of range.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.share) {
            return Err(format!(
                "chaos.share must be between 0 and 1 (a share of requests), got {}",
                self.share
            ));
        }
        Ok(())
    }
}

/// One injected fault. The error kinds are those kube-apiserver itself sends under overload or
/// failure: a `Status` 500 (`InternalError`) or 503 (`ServiceUnavailable`, no Retry-After, as
/// `NewServiceUnavailable` builds it), a `Status` 429 `TooManyRequests` with
/// `details.retryAfterSeconds` (which the server copies into `Retry-After`), the plain-text 429
/// of the max-in-flight and priority-and-fairness filters (`Retry-After` header only), a reset
/// connection (no response), or added latency before a normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChaosFault {
    InternalError,
    Unavailable,
    TooManyRequests,
    TooManyRequestsPlain,
    Reset,
    Latency(u64),
}

/// The Retry-After (seconds) of injected 429s: what kube-apiserver's filters send.
pub const CHAOS_RETRY_AFTER_S: u64 = 1;
/// Injected latency is drawn uniformly from this range (ms).
pub const CHAOS_LATENCY_MS: std::ops::RangeInclusive<u64> = 50..=300;

impl ChaosFault {
    /// How the request pipeline applies this fault.
    pub fn action(self) -> FaultAction {
        let mut a = FaultAction::default();
        match self {
            ChaosFault::InternalError => a.status = Some(500),
            ChaosFault::Unavailable => a.status = Some(503),
            ChaosFault::TooManyRequests => {
                a.status = Some(429);
                a.retry_after_s = Some(CHAOS_RETRY_AFTER_S);
            }
            ChaosFault::TooManyRequestsPlain => {
                a.status = Some(429);
                a.retry_after_s = Some(CHAOS_RETRY_AFTER_S);
                a.plain_text = true;
            }
            ChaosFault::Reset => a.drop = true,
            ChaosFault::Latency(ms) => a.latency_ms = ms,
        }
        a
    }
}

/// splitmix64's output function: a well-mixed 64-bit value for each input.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a of the cluster name, so clusters sharing a seed still draw different sequences.
fn name_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The fault (if any) for request number `n` of cluster `cluster` under `setting`: a pure
/// function of the three, so a seed replays the same faults on the same request sequence.
pub fn chaos_pick(setting: &ChaosSetting, cluster: &str, n: u64) -> Option<ChaosFault> {
    if setting.share <= 0.0 {
        return None;
    }
    let base = splitmix64(setting.seed ^ name_key(cluster)).wrapping_add(n.wrapping_mul(3));
    // Top 53 bits as a uniform float in [0, 1).
    let roll = (splitmix64(base) >> 11) as f64 / (1u64 << 53) as f64;
    if roll >= setting.share {
        return None;
    }
    let draw = splitmix64(base.wrapping_add(1));
    Some(match draw % 6 {
        0 => ChaosFault::InternalError,
        1 => ChaosFault::Unavailable,
        2 => ChaosFault::TooManyRequests,
        3 => ChaosFault::TooManyRequestsPlain,
        4 => ChaosFault::Reset,
        _ => {
            let span = CHAOS_LATENCY_MS.end() - CHAOS_LATENCY_MS.start() + 1;
            let ms = CHAOS_LATENCY_MS.start() + splitmix64(base.wrapping_add(2)) % span;
            ChaosFault::Latency(ms)
        }
    })
}

/// Faults injected so far, by kind (cumulative until `POST /_sim/chaos/reset`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ChaosCounts {
    /// API requests seen while chaos was on.
    pub requests: u64,
    pub internal_error: u64,
    pub unavailable: u64,
    pub too_many_requests: u64,
    pub too_many_requests_plain: u64,
    pub reset: u64,
    pub latency: u64,
}

impl ChaosCounts {
    /// All injected faults, latency included.
    pub fn total(&self) -> u64 {
        self.internal_error
            + self.unavailable
            + self.too_many_requests
            + self.too_many_requests_plain
            + self.reset
            + self.latency
    }

    fn record(&mut self, fault: ChaosFault) {
        let slot = match fault {
            ChaosFault::InternalError => &mut self.internal_error,
            ChaosFault::Unavailable => &mut self.unavailable,
            ChaosFault::TooManyRequests => &mut self.too_many_requests,
            ChaosFault::TooManyRequestsPlain => &mut self.too_many_requests_plain,
            ChaosFault::Reset => &mut self.reset,
            ChaosFault::Latency(_) => &mut self.latency,
        };
        *slot += 1;
    }
}

/// Per-cluster chaos bookkeeping: the setting the request numbers count from, and counts.
#[derive(Debug, Default)]
pub struct ChaosState {
    active: ChaosSetting,
    next: u64,
    pub counts: ChaosCounts,
}

/// Chaos for one API request: when the cluster's `chaos` setting picks a fault for this
/// request's number, it is merged into `action` (unless a fault rule already decided the
/// outcome: explicit rules win; latency adds up).
pub fn chaos_for(cluster: &Cluster, action: &mut FaultAction) {
    let setting = cluster.settings().chaos;
    let mut state = cluster.chaos.lock().unwrap_or_else(|e| e.into_inner());
    if state.active != setting {
        // A new setting numbers requests from 0 again: the same seed replays the same faults.
        state.active = setting.clone();
        state.next = 0;
    }
    if setting.share <= 0.0 {
        return;
    }
    let n = state.next;
    state.next += 1;
    state.counts.requests += 1;
    let Some(fault) = chaos_pick(&setting, &cluster.name, n) else {
        return;
    };
    let decided = action.status.is_some() || action.drop;
    if decided && !matches!(fault, ChaosFault::Latency(_)) {
        return;
    }
    state.counts.record(fault);
    let add = fault.action();
    action.latency_ms += add.latency_ms;
    if !decided {
        action.status = add.status;
        action.retry_after_s = add.retry_after_s;
        action.plain_text = add.plain_text;
        action.drop = add.drop;
    }
}

/// Sets the chaos setting and numbers requests from 0 again, even when it is unchanged, so
/// posting a seed twice replays the same faults.
fn set_chaos(cluster: &Cluster, setting: ChaosSetting) {
    let mut state = cluster.chaos.lock().unwrap_or_else(|e| e.into_inner());
    cluster
        .settings
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .chaos = setting.clone();
    state.active = setting;
    state.next = 0;
}

fn chaos_json(cluster: &Cluster) -> Value {
    let counts = cluster
        .chaos
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .counts
        .clone();
    json!({
        "setting": cluster.settings().chaos,
        "injected": counts,
        "total": counts.total(),
    })
}

/// Request counters of one cluster.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub total: u64,
    pub by_verb_resource: BTreeMap<(String, String), u64>,
    pub non_resource: BTreeMap<String, u64>,
    /// TLS connections that carried API requests (counted at their first one; the control
    /// endpoint's own are not), and how many of them spoke HTTP/2.
    pub connections: u64,
    pub connections_http2: u64,
}

impl Counters {
    pub fn count_connection(&mut self, http2: bool) {
        self.connections += 1;
        self.connections_http2 += u64::from(http2);
    }

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
            "connections": self.connections,
            "connections_http2": self.connections_http2,
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
                let next = serde_json::from_value::<Settings>(cur)
                    .map_err(|e| (400, json!({"error": format!("bad settings: {e}")})))?;
                next.chaos
                    .validate()
                    .map_err(|e| (400, json!({"error": format!("bad settings: {e}")})))?;
                *s = next;
            }
            cluster.settings_changed.notify_one();
            Ok(settings_json(cluster))
        }
        ("GET", "/_sim/chaos") => Ok(chaos_json(cluster)),
        ("POST", "/_sim/chaos") => {
            let setting: ChaosSetting = serde_json::from_value(parse()?)
                .map_err(|e| (400, json!({"error": format!("bad chaos setting: {e}")})))?;
            setting.validate().map_err(|e| (400, json!({"error": e})))?;
            set_chaos(cluster, setting);
            Ok(chaos_json(cluster))
        }
        ("DELETE", "/_sim/chaos") => {
            set_chaos(cluster, ChaosSetting::default());
            Ok(chaos_json(cluster))
        }
        ("POST", "/_sim/chaos/reset") => {
            cluster
                .chaos
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counts = ChaosCounts::default();
            Ok(chaos_json(cluster))
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
    /// TLS connections that carried API requests since the last reset, and of them HTTP/2.
    pub connections: u64,
    pub connections_http2: u64,
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
            connections: v["connections"].as_u64().unwrap_or(0),
            connections_http2: v["connections_http2"].as_u64().unwrap_or(0),
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

    /// Switch seeded random faults on (or off, with share 0) for this cluster.
    pub async fn set_chaos(&self, setting: &ChaosSetting) -> Result<()> {
        self.request("POST", "/_sim/chaos", Some(&serde_json::to_value(setting)?))
            .await
            .map(|_| ())
    }

    /// Faults injected by the chaos mode since the last reset, by kind.
    pub async fn chaos_counts(&self) -> Result<ChaosCounts> {
        let v = self.request("GET", "/_sim/chaos", None).await?;
        Ok(serde_json::from_value(v["injected"].clone())?)
    }

    pub async fn reset_chaos_counts(&self) -> Result<()> {
        self.request("POST", "/_sim/chaos/reset", None)
            .await
            .map(|_| ())
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

    fn chaos(share: f64, seed: u64) -> ChaosSetting {
        ChaosSetting { share, seed }
    }

    fn picks(setting: &ChaosSetting, cluster: &str, n: u64) -> Vec<Option<ChaosFault>> {
        (0..n).map(|i| chaos_pick(setting, cluster, i)).collect()
    }

    #[test]
    fn chaos_is_deterministic_per_seed_and_cluster() {
        let a = picks(&chaos(0.2, 7), "c1", 2_000);
        assert_eq!(a, picks(&chaos(0.2, 7), "c1", 2_000));
        assert_ne!(a, picks(&chaos(0.2, 8), "c1", 2_000), "another seed");
        assert_ne!(a, picks(&chaos(0.2, 7), "c2", 2_000), "another cluster");
    }

    #[test]
    fn chaos_off_and_full() {
        assert!(picks(&chaos(0.0, 1), "c1", 1_000)
            .iter()
            .all(Option::is_none));
        assert!(picks(&chaos(1.0, 1), "c1", 1_000)
            .iter()
            .all(Option::is_some));
        assert!(chaos(1.5, 0)
            .validate()
            .unwrap_err()
            .contains("chaos.share"));
        assert!(chaos(-0.1, 0).validate().is_err());
        assert!(chaos(0.05, 0).validate().is_ok());
    }

    #[test]
    fn chaos_hits_its_share_with_every_kind_about_equally() {
        let n = 60_000u64;
        for share in [0.05, 0.2] {
            let mut counts = ChaosCounts::default();
            for f in picks(&chaos(share, 42), "cluster-east-1", n)
                .into_iter()
                .flatten()
            {
                if let ChaosFault::Latency(ms) = f {
                    assert!(CHAOS_LATENCY_MS.contains(&ms), "{ms}");
                }
                counts.record(f);
            }
            let hit = counts.total() as f64 / n as f64;
            assert!(
                (hit - share).abs() < share * 0.1,
                "share {share}: hit {hit}"
            );
            let each = counts.total() as f64 / 6.0;
            for (kind, c) in [
                ("internal_error", counts.internal_error),
                ("unavailable", counts.unavailable),
                ("too_many_requests", counts.too_many_requests),
                ("too_many_requests_plain", counts.too_many_requests_plain),
                ("reset", counts.reset),
                ("latency", counts.latency),
            ] {
                assert!(
                    (c as f64 - each).abs() < each * 0.15,
                    "share {share}: {kind} {c}, expected about {each}"
                );
            }
        }
    }

    #[test]
    fn chaos_latency_spans_its_range() {
        let ms: Vec<u64> = picks(&chaos(1.0, 3), "c1", 20_000)
            .into_iter()
            .filter_map(|f| match f {
                Some(ChaosFault::Latency(ms)) => Some(ms),
                _ => None,
            })
            .collect();
        assert!(
            ms.iter().any(|&m| m < 80) && ms.iter().any(|&m| m > 270),
            "{ms:?}"
        );
    }

    #[test]
    fn chaos_faults_map_to_apiserver_answers() {
        let a = ChaosFault::TooManyRequestsPlain.action();
        assert_eq!(
            (a.status, a.retry_after_s, a.plain_text),
            (Some(429), Some(1), true)
        );
        let a = ChaosFault::TooManyRequests.action();
        assert_eq!(
            (a.status, a.retry_after_s, a.plain_text),
            (Some(429), Some(1), false)
        );
        assert_eq!(ChaosFault::Unavailable.action().retry_after_s, None);
        assert!(ChaosFault::Reset.action().drop);
        assert_eq!(ChaosFault::Latency(120).action().latency_ms, 120);
    }
}
