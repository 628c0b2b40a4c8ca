//! Remote clusters as istiod's multicluster secret controller sees them
//! (`pkg/kube/multicluster` in Istio): one entry per data key of each secret labelled
//! `istio/multiCluster=true` in istiod's namespace, the key being the cluster ID and the value a
//! kubeconfig; the entry's sync status follows `Cluster.SyncStatus()`.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::Attributes;
use crate::cluster::Cluster;
use crate::registry;
use crate::store::ResKey;

pub const MULTICLUSTER_LABEL: &str = "istio/multiCluster";

pub const SYNCED: &str = "synced";
pub const SYNCING: &str = "syncing";
pub const TIMEOUT: &str = "timeout";

/// (secret `namespace/name`, cluster ID): how istiod keys a remote.
pub type RemoteKey = (String, String);

/// One remote from a secret's data.
pub struct RemoteEntry {
    pub key: RemoteKey,
    pub kubeconfig: Vec<u8>,
    /// Content hash (istiod compares the kubeconfig's sha256 to skip identical updates).
    pub hash: u64,
}

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub fn is_remote_secret(secret: &Value) -> bool {
    crate::object::labels(secret)
        .and_then(|l| l.get(MULTICLUSTER_LABEL))
        .and_then(Value::as_str)
        == Some("true")
}

/// The entries of one remote secret (data values are base64 in the stored object).
pub fn entries_of(secret: &Value) -> Vec<RemoteEntry> {
    let ns = crate::object::namespace(secret);
    let name = crate::object::name(secret);
    let Some(data) = secret.get("data").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out: Vec<RemoteEntry> = data
        .iter()
        .filter_map(|(id, v)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()?;
            Some(RemoteEntry {
                key: (format!("{ns}/{name}"), id.clone()),
                hash: fnv64(&raw),
                kubeconfig: raw,
            })
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The remotes istiod in `ns` registers, as `addRemoteConfig` does: entries naming the config
/// cluster are ignored, a cluster ID already registered by another secret is ignored, and a
/// kubeconfig istiod refuses to build a client from is not registered at all.
pub fn remotes(cluster: &Cluster, ns: &str, config_cluster: &str) -> Vec<(RemoteEntry, Target)> {
    let secrets = cluster.store.list(&ResKey::new("", "secrets"), Some(ns)).0;
    let mut out: Vec<(RemoteEntry, Target)> = Vec::new();
    for s in secrets.iter().filter(|s| is_remote_secret(s)) {
        for e in entries_of(s) {
            if e.key.1 == config_cluster || out.iter().any(|(o, _)| o.key.1 == e.key.1) {
                continue;
            }
            if let Ok(t) = parsed_kubeconfig(&e.kubeconfig) {
                out.push((e, t));
            }
        }
    }
    out
}

/// [`parse_kubeconfig`], remembered by content: every clusterz request and every background
/// evaluation reads every remote secret again, and the same few kubeconfigs would be parsed from
/// YAML each time (kube-sim's own cost, on the cores the benchmarks measure the provider on).
fn parsed_kubeconfig(bytes: &[u8]) -> Result<Target, String> {
    type Parsed = HashMap<Vec<u8>, Result<Target, String>>;
    static PARSED: OnceLock<Mutex<Parsed>> = OnceLock::new();
    let cache = PARSED.get_or_init(Default::default);
    if let Some(hit) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(bytes) {
        return hit.clone();
    }
    let parsed = parse_kubeconfig(bytes);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(bytes.to_vec(), parsed.clone());
    parsed
}

/// What istiod's client would use from a remote's kubeconfig.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Target {
    pub server: String,
    pub ca_pem: Option<String>,
    pub insecure: bool,
    pub token: Option<String>,
    pub client_cert_der: Option<Vec<u8>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KubeconfigDoc {
    #[serde(rename = "current-context")]
    current_context: String,
    clusters: Vec<Named>,
    users: Vec<Named>,
    contexts: Vec<Named>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Named {
    name: String,
    cluster: Option<Value>,
    user: Option<Value>,
    context: Option<Value>,
}

fn field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Load and validate a kubeconfig the way istiod's `NewUntrustedRestConfig` does: it must load,
/// its current context must resolve to a cluster with a server, and file references, exec and
/// auth-provider plugins are refused (the kubeconfig comes from an untrusted secret).
pub fn parse_kubeconfig(bytes: &[u8]) -> Result<Target, String> {
    if bytes.is_empty() {
        return Err("kubeconfig is empty".into());
    }
    let doc: KubeconfigDoc = serde_yaml_ng::from_slice(bytes)
        .map_err(|e| format!("kubeconfig cannot be loaded: {e}"))?;
    let find = |list: &[Named], name: &str| {
        list.iter()
            .find(|n| n.name == name)
            .map(|n| n.cluster.clone().or(n.user.clone()).or(n.context.clone()))
    };
    let ctx = find(&doc.contexts, &doc.current_context)
        .flatten()
        .ok_or("kubeconfig is not valid: current-context does not name a context")?;
    let cluster_name = field(&ctx, "cluster").unwrap_or("");
    let cluster = find(&doc.clusters, cluster_name)
        .flatten()
        .ok_or("kubeconfig is not valid: context names no known cluster")?;
    let user = match field(&ctx, "user") {
        Some(u) => find(&doc.users, u)
            .flatten()
            .ok_or("kubeconfig is not valid: context names no known user")?,
        None => Value::Null,
    };
    let server = field(&cluster, "server").ok_or("kubeconfig is not valid: no server")?;
    for (obj, k) in [
        (&cluster, "certificate-authority"),
        (&user, "tokenFile"),
        (&user, "client-certificate"),
        (&user, "client-key"),
        (&user, "exec"),
        (&user, "auth-provider"),
    ] {
        if obj.get(k).is_some_and(|v| !v.is_null()) {
            return Err(format!("kubeconfig is not allowed: {k} is not permitted"));
        }
    }
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let client_cert_der = field(&user, "client-certificate-data")
        .and_then(b64)
        .and_then(|pem| pem_to_der(&pem));
    Ok(Target {
        server: server.to_string(),
        ca_pem: field(&cluster, "certificate-authority-data").and_then(b64),
        insecure: cluster
            .get("insecure-skip-tls-verify")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        token: field(&user, "token").map(str::to_string),
        client_cert_der,
    })
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// What istiod's remote informers list and watch, cluster-wide, before the cluster counts as
/// synced: `Cluster.Run` waits for `Client.RunAndWait`, i.e. every informer started on the
/// remote client — the kube service registry's (namespaces, services, endpointslices, pods,
/// nodes), the credentials controller's secrets, and the CRD watcher
/// (`PILOT_ENABLE_CROSS_CLUSTER_WORKLOAD_ENTRY`, on by default).
pub const INFORMER_RESOURCES: &[(&str, &str)] = &[
    ("", "namespaces"),
    ("", "services"),
    ("discovery.k8s.io", "endpointslices"),
    ("", "pods"),
    ("", "nodes"),
    ("", "secrets"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
];

/// Informers istiod starts in its own (system) namespace of the remote: the mesh config
/// ConfigMap `istio[-<rev>]` (`kubemesh.NewConfigMapSource`).
pub const NAMESPACED_INFORMER_RESOURCES: &[(&str, &str)] = &[("", "configmaps")];

/// Can istiod's informers sync against this remote? `Ok(cluster)` with the sibling cluster, or
/// why not (unknown server, TLS, authentication, authorization).
pub fn check_access(
    from: &Cluster,
    t: &Target,
    system_namespace: &str,
) -> Result<std::sync::Arc<Cluster>, String> {
    let remote = registry::resolve(from.network, &t.server)
        .ok_or_else(|| format!("dial {}: no kube-sim cluster serves it", t.server))?;
    if !t.insecure {
        let same = t
            .ca_pem
            .as_deref()
            .is_some_and(|ca| ca.trim() == remote.pki.ca_pem.trim());
        if !same {
            return Err("x509: certificate signed by unknown authority".into());
        }
    }
    let who = remote
        .auth
        .authenticate(
            t.token.as_deref(),
            t.client_cert_der.as_deref(),
            &remote.store,
        )
        .map_err(|e| e.message)?;
    let scoped = INFORMER_RESOURCES.iter().map(|r| (r, "")).chain(
        NAMESPACED_INFORMER_RESOURCES
            .iter()
            .map(|r| (r, system_namespace)),
    );
    for ((group, resource), namespace) in scoped {
        for verb in ["list", "watch"] {
            let attrs = Attributes {
                verb,
                group,
                resource,
                namespace,
                name: "",
                non_resource: false,
            };
            remote
                .auth
                .authorize(&who, &attrs, &remote.store)
                .map_err(|e| e.message)?;
        }
    }
    Ok(remote)
}

/// What istiod knows about one remote when asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncInput {
    /// Time since istiod first saw this secret content (or started, if later).
    pub since_seen: Duration,
    /// The informers can list and watch the remote.
    pub access_ok: bool,
    /// This istiod already synced this content (`initialSync` never goes back to false).
    pub latched: bool,
    /// `PILOT_REMOTE_CLUSTER_TIMEOUT`; zero disables the timeout.
    pub timeout: Duration,
    /// kube-sim's artificial initial-sync time.
    pub sync_delay: Duration,
}

/// `Cluster.SyncStatus()`: synced once the initial sync completed (even after a timeout),
/// timeout when the timer fired first, syncing before that.
pub fn sync_status(i: SyncInput) -> &'static str {
    if i.latched || (i.access_ok && i.since_seen >= i.sync_delay) {
        return SYNCED;
    }
    if !i.timeout.is_zero() && i.since_seen >= i.timeout {
        return TIMEOUT;
    }
    SYNCING
}

/// Go's `time.ParseDuration` for the forms an env value takes (`30s`, `1m30s`, `500ms`, `0`).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Elapsed wall time since `t` (zero if `t` is in the future).
pub fn since(now: OffsetDateTime, t: OffsetDateTime) -> Duration {
    let d = now - t;
    if d.is_negative() {
        Duration::ZERO
    } else {
        d.unsigned_abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(since_s: u64, ok: bool, latched: bool) -> SyncInput {
        SyncInput {
            since_seen: Duration::from_secs(since_s),
            access_ok: ok,
            latched,
            timeout: Duration::from_secs(30),
            sync_delay: Duration::ZERO,
        }
    }

    #[test]
    fn status_follows_istio_cluster_sync_status() {
        assert_eq!(sync_status(input(0, true, false)), SYNCED);
        assert_eq!(sync_status(input(5, false, false)), SYNCING);
        assert_eq!(sync_status(input(30, false, false)), TIMEOUT);
        // A late sync after the timeout still reports synced (initialSync wins).
        assert_eq!(sync_status(input(60, true, false)), SYNCED);
        // Latched: revoked access does not undo a completed sync.
        assert_eq!(sync_status(input(60, false, true)), SYNCED);
        // Timeout 0 disables the timer.
        let mut i = input(3600, false, false);
        i.timeout = Duration::ZERO;
        assert_eq!(sync_status(i), SYNCING);
        // The artificial delay holds a reachable remote in syncing.
        let mut i = input(1, true, false);
        i.sync_delay = Duration::from_secs(2);
        assert_eq!(sync_status(i), SYNCING);
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("30"), None);
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn kubeconfigs_are_loaded_like_untrusted_rest_configs() {
        let kc = |user: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c2\nclusters:\n- name: c2\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority-data: {}\ncontexts:\n- name: c2\n  context: {{cluster: c2, user: c2}}\nusers:\n- name: c2\n  user: {user}\n",
                base64::engine::general_purpose::STANDARD.encode("CA")
            )
        };
        let t = parse_kubeconfig(kc("{token: abc}").as_bytes()).unwrap();
        assert_eq!(t.server, "https://127.0.0.1:1");
        assert_eq!(t.ca_pem.as_deref(), Some("CA"));
        assert_eq!(t.token.as_deref(), Some("abc"));
        let e = parse_kubeconfig(kc("{tokenFile: /var/run/token}").as_bytes()).unwrap_err();
        assert!(e.contains("tokenFile"), "{e}");
        assert!(parse_kubeconfig(kc("{exec: {command: aws}}").as_bytes()).is_err());
        assert!(parse_kubeconfig(b"current-context: nope\n").is_err());
        assert!(parse_kubeconfig(b"").is_err());
    }

    #[test]
    fn remembered_kubeconfigs_answer_for_their_content() {
        let kc = |user: &str| {
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: m\nclusters:\n- name: m\n  cluster: {{server: https://127.0.0.1:2, insecure-skip-tls-verify: true}}\ncontexts:\n- name: m\n  context: {{cluster: m, user: m}}\nusers:\n- name: m\n  user: {user}\n"
            )
        };
        let first = kc("{token: remembered-one}");
        for _ in 0..2 {
            let t = parsed_kubeconfig(first.as_bytes()).unwrap();
            assert_eq!(t.token.as_deref(), Some("remembered-one"));
            assert!(t.insecure);
        }
        // A rotated token is new content: it is read, not the remembered answer.
        let rotated = parsed_kubeconfig(kc("{token: remembered-two}").as_bytes()).unwrap();
        assert_eq!(rotated.token.as_deref(), Some("remembered-two"));
        // A refusal is remembered as a refusal, with istiod's reason.
        for _ in 0..2 {
            let e = parsed_kubeconfig(kc("{exec: {command: aws}}").as_bytes()).unwrap_err();
            assert_eq!(
                e,
                parse_kubeconfig(kc("{exec: {command: aws}}").as_bytes()).unwrap_err()
            );
        }
    }
}
