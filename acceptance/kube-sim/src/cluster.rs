//! One simulated cluster: its store, credentials, PKI, settings, faults and counters.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::control::{ChaosSetting, ChaosState, Counters, Fault};
use crate::error::{ApiError, ApiResult};
use crate::resources::{self, ResourceInfo};
use crate::store::{ResKey, Store, Written};
use crate::tls::ClusterPki;
use crate::{object, ssa};

/// One simulated controller's switch and delay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ControllerSetting {
    pub enabled: bool,
    /// Delay before the controller acts on a change.
    pub delay_ms: u64,
}

impl Default for ControllerSetting {
    fn default() -> Self {
        ControllerSetting {
            enabled: true,
            delay_ms: 0,
        }
    }
}

/// How LoadBalancer Services get their address.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// `status.loadBalancer.ingress[0].ip` (from 203.0.113.0/24, unique per process).
    #[default]
    Ip,
    /// `status.loadBalancer.ingress[0].hostname` (`<svc>-<ns>.<cluster>.lb.kube-sim.invalid`).
    Hostname,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct LoadBalancerSetting {
    pub enabled: bool,
    pub delay_ms: u64,
    pub mode: LbMode,
}

/// The simulated istiod (see `crate::istiod`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct IstiodSetting {
    /// Time a reachable remote cluster takes to finish its initial sync (counted from when
    /// istiod first saw the remote secret's content); 0 syncs at once.
    pub remote_sync_delay_ms: u64,
}

/// Per-cluster controller settings (also changeable at runtime through `POST /_sim/settings`,
/// which takes a partial document of this shape).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// Deployments become Available with ready replicas.
    pub deployments: ControllerSetting,
    /// Jobs run their pod and complete or fail; includes the istioctl installer simulation.
    pub jobs: ControllerSetting,
    pub loadbalancer: LoadBalancerSetting,
    /// `kubernetes.io/service-account-token` Secrets get token, ca.crt and namespace.
    pub tokens: ControllerSetting,
    /// Interval of watch BOOKMARK events (when the client allows them).
    pub bookmark_interval_ms: u64,
    pub istiod: IstiodSetting,
    /// Seeded random faults on a share of API requests (off by default).
    pub chaos: ChaosSetting,
    /// Kubernetes' `TranslateStreamingWebsocketRequests` feature gate (on by default since
    /// 1.30): exec websockets offering `v5.channel.k8s.io` are served by the API server's
    /// translator. Off, they go to the kubelet, which negotiates v4.
    pub translate_streaming_websocket_requests: bool,
    /// The API server offers HTTP/2 as well as HTTP/1.1 in TLS ALPN (kube-apiserver serves
    /// both, as any Go HTTPS server). Off: HTTP/1.1 only, as behind a front that speaks only
    /// 1.1; a client asking for HTTP/2 alone then fails the handshake (no common protocol).
    /// Taken by connections accepted after the change.
    pub http2: bool,
    /// What opening a connection costs on a real network, which `latency_ms` faults (charged
    /// per request) leave out: the TCP handshake's round trip and the TLS handshake's (one more
    /// with TLS 1.3, two with 1.2) before the first request can be sent. The server holds a new
    /// connection this long before it reads the client's hello, so the handshake ends no
    /// sooner; requests over a connection already open are not held. Taken by connections
    /// accepted after the change. 0 (the default): none.
    pub connect_latency_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            deployments: ControllerSetting::default(),
            jobs: ControllerSetting::default(),
            loadbalancer: LoadBalancerSetting {
                enabled: true,
                delay_ms: 0,
                mode: LbMode::Ip,
            },
            tokens: ControllerSetting::default(),
            bookmark_interval_ms: 2000,
            istiod: IstiodSetting::default(),
            chaos: ChaosSetting::default(),
            translate_streaming_websocket_requests: true,
            http2: true,
            connect_latency_ms: 0,
        }
    }
}

pub struct Cluster {
    pub name: String,
    pub store: Store,
    pub auth: Auth,
    pub pki: ClusterPki,
    pub settings: RwLock<Settings>,
    pub faults: Mutex<Vec<Fault>>,
    /// Requests stopped by `hold` fault rules until released.
    pub holds: crate::control::Holds,
    pub counters: Mutex<Counters>,
    /// The chaos mode's request numbering and injected-fault counts.
    pub chaos: Mutex<ChaosState>,
    /// Pod logs by (namespace, pod name).
    pub logs: Mutex<HashMap<(String, String), String>>,
    pub addr: OnceLock<SocketAddr>,
    /// Poked when settings change (controllers resync).
    pub settings_changed: tokio::sync::Notify,
    /// Delayed controller actions not yet run (dedup keys).
    pub pending: Mutex<std::collections::HashSet<String>>,
    /// What the simulated istiods remember (secret first-seen times, completed syncs).
    pub istiod: Mutex<crate::istiod::State>,
    /// Workload certificates and round-robin positions of the simulated data plane.
    pub dataplane: Mutex<crate::dataplane::State>,
    /// The network of the `Sim` this cluster belongs to: which server aliases it can reach.
    pub network: u64,
    pub shutdown: CancellationToken,
}

impl Cluster {
    pub fn new(
        name: &str,
        settings: Settings,
        network: u64,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let pki = ClusterPki::generate(name)?;
        let auth = Auth::new(
            format!("admin-{}", object::random_hex(24)),
            format!("control-{}", object::random_hex(24)),
            pki.client_cert_der.clone(),
        );
        let c = Arc::new(Cluster {
            name: name.to_string(),
            store: Store::new(),
            auth,
            pki,
            settings: RwLock::new(settings),
            faults: Mutex::new(Vec::new()),
            holds: Default::default(),
            counters: Mutex::new(Counters::default()),
            chaos: Mutex::new(ChaosState::default()),
            logs: Mutex::new(HashMap::new()),
            addr: OnceLock::new(),
            settings_changed: tokio::sync::Notify::new(),
            pending: Mutex::new(std::collections::HashSet::new()),
            istiod: Mutex::new(crate::istiod::State::default()),
            dataplane: Mutex::new(crate::dataplane::State::default()),
            network,
            shutdown,
        });
        c.bootstrap();
        Ok(c)
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn url(&self) -> String {
        match self.addr.get() {
            Some(a) => format!("https://{a}"),
            None => String::new(),
        }
    }

    /// Objects a fresh cluster has: system namespaces, cluster-admin, a node, the default
    /// ServiceAccounts and the `kubernetes` Service.
    fn bootstrap(&self) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let _ = self.create_internal(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}
            }));
            let _ = self.create_internal(json!({
                "apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "default", "namespace": ns}
            }));
            let _ = self.create_internal(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "namespace": ns},
                "data": {"ca.crt": self.pki.ca_pem}
            }));
        }
        let _ = self.create_internal(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}]
        }));
        let _ = self.create_internal(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "view", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]
        }));
        let _ = self.create_internal(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": format!("{}-control-plane", self.name), "labels": {
                "kubernetes.io/hostname": format!("{}-control-plane", self.name),
                "node-role.kubernetes.io/control-plane": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "kubeProxyVersion": "v1.33.0",
                    "containerRuntimeVersion": "containerd://2.1.0", "operatingSystem": "linux", "architecture": "amd64"}}
        }));
        let _ = self.create_internal(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]}
        }));
    }

    /// Resolve apiVersion + kind to a served resource.
    pub fn info_for(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        resources::resources_in(&self.store, group, version)
            .into_iter()
            .find(|r| r.kind == kind && !r.create_only)
    }

    /// Create an object as the system would (no admission, no auth). Errors if it exists.
    pub fn create_internal(&self, obj: Value) -> ApiResult<Written> {
        let info = self.info_of(&obj)?;
        let ns = if info.namespaced {
            object::namespace(&obj).to_string()
        } else {
            String::new()
        };
        let name = object::name(&obj).to_string();
        let key = info.key();
        self.store.write(&key, &ns, &name, false, |cur| {
            if cur.is_some() {
                return Err(ApiError::already_exists(&key.group, &key.resource, &name));
            }
            Ok(obj)
        })
    }

    /// Server-side apply as `manager` with force (used by the installer simulation).
    pub fn apply_internal(&self, obj: Value, manager: &str) -> ApiResult<Written> {
        let info = self.info_of(&obj)?;
        let ns = if info.namespaced {
            object::namespace(&obj).to_string()
        } else {
            String::new()
        };
        let name = object::name(&obj).to_string();
        let av = info.api_version();
        let crd = info.key() == resources::crd_key();
        self.store.write(&info.key(), &ns, &name, false, |cur| {
            let mut o = ssa::apply(cur.map(|c| c.as_ref()), &obj, manager, true, &av)?;
            if crd && cur.is_none() {
                resources::establish_crd(&mut o);
            }
            Ok(o)
        })
    }

    fn info_of(&self, obj: &Value) -> ApiResult<ResourceInfo> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        self.info_for(av, kind)
            .ok_or_else(|| ApiError::bad_request(format!("no resource for {av} {kind}")))
    }

    /// Mutate an existing object in place (controllers' status writes). Missing objects are ignored.
    pub fn update_internal<F>(&self, key: &ResKey, ns: &str, name: &str, f: F) -> Option<Arc<Value>>
    where
        F: FnOnce(&mut Value),
    {
        self.store
            .write(key, ns, name, false, |cur| match cur {
                None => Err(ApiError::not_found(&key.group, &key.resource, name)),
                Some(c) => {
                    let mut v = (**c).clone();
                    f(&mut v);
                    Ok(v)
                }
            })
            .ok()
            .map(|w| w.obj)
    }

    pub fn set_log(&self, ns: &str, pod: &str, log: String) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((ns.to_string(), pod.to_string()), log);
    }

    pub fn log(&self, ns: &str, pod: &str) -> Option<String> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(ns.to_string(), pod.to_string()))
            .cloned()
    }

    /// All objects, for `/_sim/dump`.
    pub fn dump(&self) -> Value {
        let objects: Vec<Value> = self
            .store
            .dump()
            .into_iter()
            .map(|(key, obj)| {
                let mut o = (*obj).clone();
                if o.get("kind").is_none() {
                    if let Some(info) = resources::by_key(&self.store, &key) {
                        o["kind"] = json!(info.kind);
                        o["apiVersion"] = json!(info.api_version());
                    }
                }
                o
            })
            .collect();
        json!({ "objects": objects })
    }

    pub fn counts_by_resource(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (k, _) in self.store.dump() {
            *out.entry(crate::error::qualified(&k.group, &k.resource))
                .or_insert(0) += 1;
        }
        out
    }
}
