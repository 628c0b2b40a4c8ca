//! kube-sim: loopback Kubernetes API servers (one per simulated cluster) with simulated
//! controllers and a fault-injection control endpoint, for tests and the demo.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let sim = kube_sim::Sim::start(kube_sim::Options {
//!     clusters: vec!["c1".into(), "c2".into()],
//!     ..Default::default()
//! })
//! .await?;
//! sim.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! let c1 = sim.cluster("c1");
//! c1.control().set_global_latency(20).await?;
//! # Ok(()) }
//! ```

mod api;
mod auth;
mod cluster;
mod control;
mod controllers;
mod dataplane;
mod discovery;
mod error;
mod http;
mod injector;
mod istiod;
mod object;
mod patch;
mod programs;
mod proto;
mod registry;
mod resources;
mod selectors;
mod server;
mod ssa;
mod store;
mod tls;
mod watch;
mod wsstream;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Result};
use base64::Engine;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub use auth::{Allow, RestrictedUser};
pub use cluster::{ControllerSetting, IstiodSetting, LbMode, LoadBalancerSetting, Settings};
pub use control::{
    chaos_pick, ChaosCounts, ChaosFault, ChaosSetting, Control, CounterSnapshot, Fault,
};
pub use controllers::FAIL_ANNOTATION;

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Cluster names (DNS-1123 labels); each gets its own server, CA and credentials.
    pub clusters: Vec<String>,
    /// Controller settings for every cluster.
    pub settings: Settings,
    /// Per-cluster overrides of `settings`.
    pub cluster_settings: BTreeMap<String, Settings>,
}

/// One running cluster, as a client sees it.
pub struct ClusterHandle {
    pub name: String,
    /// `https://127.0.0.1:<port>`
    pub url: String,
    /// The cluster CA (PEM); also `ca.crt` in token secrets.
    pub ca_pem: String,
    /// Bearer token with full access to the API (not to `/_sim`).
    pub admin_token: String,
    /// Bearer token for `/_sim` (not valid on the API).
    pub control_token: String,
    /// Admin client certificate and key (PEM), used by the `<name>-cert` kubeconfig context.
    pub client_cert_pem: String,
    pub client_key_pem: String,
    inner: Arc<cluster::Cluster>,
}

impl ClusterHandle {
    /// HTTPS client for this cluster's control endpoint.
    pub fn control(&self) -> Control {
        Control::new(&self.url, &self.ca_pem, &self.control_token).expect("control client")
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.inner.store.count()
    }

    /// Change controller settings in-process (same as `POST /_sim/settings`).
    pub fn set_settings(&self, settings: Settings) {
        *self
            .inner
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner()) = settings;
        self.inner.settings_changed.notify_one();
    }

    pub fn settings(&self) -> Settings {
        self.inner.settings()
    }

    /// Another server URL that reaches this cluster when a simulated istiod resolves a remote
    /// secret's kubeconfig (e.g. the in-network address a kind cluster would have). Only the
    /// simulated istiod uses it; nothing listens there.
    pub fn add_server_alias(&self, url: &str) {
        registry::register_as(url, &self.inner);
    }
}

/// A set of running clusters.
pub struct Sim {
    clusters: Vec<ClusterHandle>,
    shutdown: CancellationToken,
}

fn valid_cluster_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

impl Sim {
    /// Start one HTTPS API server per cluster on 127.0.0.1 (random ports) with its controllers.
    pub async fn start(options: Options) -> Result<Sim> {
        if options.clusters.is_empty() {
            bail!("kube-sim: no clusters requested");
        }
        let shutdown = CancellationToken::new();
        let network = registry::new_network();
        let mut clusters = Vec::new();
        for (i, name) in options.clusters.iter().enumerate() {
            if !valid_cluster_name(name) {
                bail!("kube-sim: cluster name {name:?} is not a DNS-1123 label");
            }
            if options.clusters[..i].contains(name) {
                bail!("kube-sim: cluster {name:?} given twice");
            }
            let settings = options
                .cluster_settings
                .get(name)
                .cloned()
                .unwrap_or_else(|| options.settings.clone());
            let c = cluster::Cluster::new(name, settings, network, shutdown.child_token())?;
            server::start(c.clone()).await?;
            registry::register(&c);
            controllers::spawn(c.clone());
            clusters.push(ClusterHandle {
                name: name.clone(),
                url: c.url(),
                ca_pem: c.pki.ca_pem.clone(),
                admin_token: c.auth.admin_token.clone(),
                control_token: c.auth.control_token.clone(),
                client_cert_pem: c.pki.client_cert_pem.clone(),
                client_key_pem: c.pki.client_key_pem.clone(),
                inner: c,
            });
        }
        Ok(Sim { clusters, shutdown })
    }

    pub fn clusters(&self) -> &[ClusterHandle] {
        &self.clusters
    }

    /// The named cluster. Panics on an unknown name (tests).
    pub fn cluster(&self, name: &str) -> &ClusterHandle {
        self.clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("kube-sim: no cluster named {name:?}"))
    }

    /// Kubeconfig with, per cluster, a context/cluster/user named after it (bearer token) and a
    /// `<name>-cert` context/user (client certificate). current-context = first cluster.
    pub fn kubeconfig_yaml(&self) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut clusters = Vec::new();
        let mut users = Vec::new();
        let mut contexts = Vec::new();
        for c in &self.clusters {
            clusters.push(json!({"name": c.name, "cluster": {"server": c.url, "certificate-authority-data": b64(&c.ca_pem)}}));
            users.push(json!({"name": c.name, "user": {"token": c.admin_token}}));
            users.push(json!({"name": format!("{}-cert", c.name), "user": {
                "client-certificate-data": b64(&c.client_cert_pem), "client-key-data": b64(&c.client_key_pem)}}));
            contexts.push(json!({"name": c.name, "context": {"cluster": c.name, "user": c.name}}));
            contexts.push(json!({"name": format!("{}-cert", c.name), "context": {"cluster": c.name, "user": format!("{}-cert", c.name)}}));
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": clusters,
            "users": users,
            "contexts": contexts,
            "current-context": self.clusters.first().map(|c| c.name.clone()).unwrap_or_default(),
        });
        serde_yaml_ng::to_string(&doc).expect("kubeconfig yaml")
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        write_private(path, self.kubeconfig_yaml().as_bytes())
    }

    /// JSON for scripts: per cluster url, ca_pem, admin_token, control_token.
    pub fn info_json(&self) -> Value {
        let clusters: serde_json::Map<String, Value> = self
            .clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    json!({"url": c.url, "ca_pem": c.ca_pem, "admin_token": c.admin_token,
                        "control_token": c.control_token}),
                )
            })
            .collect();
        json!({"clusters": clusters})
    }

    pub fn write_info(&self, path: &Path) -> Result<()> {
        write_private(
            path,
            serde_json::to_string_pretty(&self.info_json())?.as_bytes(),
        )
    }

    /// Stop all servers, watches and controllers.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    Ok(())
}
