//! kube-sim clusters for a scenario, driven from blocking test code: the clusters run on their
//! own runtime while the test runs Terraform, kubectl and openssl as processes.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Running loopback clusters and the kubeconfig that reaches them (one context per cluster).
pub struct Clusters {
    runtime: tokio::runtime::Runtime,
    sim: kube_sim::Sim,
    pub kubeconfig: PathBuf,
}

/// The label every object the provider creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "terraform-provider-mesh");

impl Clusters {
    /// Starts `names` and writes their kubeconfig into `dir`.
    pub fn start(names: &[&str], dir: &Path) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let sim = runtime
            .block_on(kube_sim::Sim::start(kube_sim::Options {
                clusters: names.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            }))
            .expect("start kube-sim");
        let kubeconfig = dir.join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).expect("write kubeconfig");
        Self {
            runtime,
            sim,
            kubeconfig,
        }
    }

    /// Every object stored in `cluster`.
    pub fn dump(&self, cluster: &str) -> Vec<Value> {
        let control = self.sim.cluster(cluster).control();
        self.runtime.block_on(control.dump()).expect("dump")
    }

    /// The objects in `cluster` that carry the provider's managed-by label.
    pub fn ours(&self, cluster: &str) -> Vec<String> {
        self.dump(cluster)
            .iter()
            .filter(|o| o["metadata"]["labels"][MANAGED_BY.0] == MANAGED_BY.1)
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// One object by kind, namespace ("" for cluster-scoped) and name.
    pub fn find(&self, cluster: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        self.dump(cluster).into_iter().find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str().unwrap_or("") == namespace
        })
    }

    /// Total API requests `cluster` has served since the last reset.
    pub fn requests(&self, cluster: &str) -> u64 {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.counters())
            .expect("counters")
            .total
    }

    pub fn reset_requests(&self, cluster: &str) {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.reset_counters())
            .expect("reset counters");
    }

    /// Merges a partial kube-sim `Settings` document into `cluster`'s controller settings,
    /// e.g. `{"loadbalancer": {"enabled": false}}` (switching a controller back on resyncs).
    pub fn settings(&self, cluster: &str, patch: Value) {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.settings(&patch))
            .expect("settings");
    }

    /// Makes `url` reach `cluster` for the simulated istiods (as a kind node's in-network
    /// address would inside the clusters); nothing listens there for anyone else.
    pub fn add_server_alias(&self, cluster: &str, url: &str) {
        self.sim.cluster(cluster).add_server_alias(url);
    }

    /// API request counts of `cluster` since the last reset, per verb and resource.
    pub fn counters(&self, cluster: &str) -> kube_sim::CounterSnapshot {
        let control = self.sim.cluster(cluster).control();
        self.runtime.block_on(control.counters()).expect("counters")
    }

    /// Waits (checking every 20 ms) until `cond` holds for `cluster`'s objects; panics after
    /// `timeout` naming `what`.
    pub fn wait_until(
        &self,
        cluster: &str,
        what: &str,
        timeout: std::time::Duration,
        cond: impl Fn(&[Value]) -> bool,
    ) {
        let until = std::time::Instant::now() + timeout;
        while !cond(&self.dump(cluster)) {
            assert!(
                std::time::Instant::now() < until,
                "timed out after {timeout:?} waiting for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The API server URL of `cluster`.
    pub fn url(&self, cluster: &str) -> String {
        self.sim.cluster(cluster).url.clone()
    }

    /// The CA certificate (PEM) of `cluster`.
    pub fn ca_pem(&self, cluster: &str) -> String {
        self.sim.cluster(cluster).ca_pem.clone()
    }

    /// Requests `cluster` has served since the last reset, by verb and resource
    /// (`"get secrets=2 patch secrets=1 ..."`), for reports.
    pub fn request_breakdown(&self, cluster: &str) -> String {
        let control = self.sim.cluster(cluster).control();
        let c = self.runtime.block_on(control.counters()).expect("counters");
        let mut parts: Vec<String> = c
            .counts
            .iter()
            .map(|((verb, res), n)| format!("{verb} {res}={n}"))
            .collect();
        parts.extend(c.non_resource.iter().map(|(p, n)| format!("{p}={n}")));
        parts.join(", ")
    }

    /// Injects a fault into `cluster` (see kube-sim's control API).
    pub fn add_fault(&self, cluster: &str, fault: &kube_sim::Fault) {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.add_fault(fault))
            .expect("add fault");
    }

    /// Holds every `verb` request to `path` (a glob) in `cluster` until [`Clusters::release`].
    pub fn hold(&self, cluster: &str, verb: &str, path: &str) {
        self.add_fault(
            cluster,
            &kube_sim::Fault {
                path: path.into(),
                verb: Some(verb.into()),
                hold: Some(true),
                ..Default::default()
            },
        );
    }

    /// Waits (checking every 20 ms) until `cluster` holds at least one request; panics after
    /// `timeout` naming `what`.
    pub fn wait_held(&self, cluster: &str, what: &str, timeout: std::time::Duration) {
        let control = self.sim.cluster(cluster).control();
        let until = std::time::Instant::now() + timeout;
        while self.runtime.block_on(control.holds()).expect("holds").0 == 0 {
            assert!(
                std::time::Instant::now() < until,
                "timed out after {timeout:?} waiting for a held request: {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Removes `cluster`'s hold rules and lets its held requests go.
    pub fn release(&self, cluster: &str) {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.release_holds())
            .expect("release holds");
    }

    pub fn clear_faults(&self, cluster: &str) {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.clear_faults())
            .expect("clear faults");
    }

    /// Gives `share` (0..=1) of `cluster`'s API requests a seeded random fault (kube-sim's
    /// chaos mode); share 0 switches it off. Request numbering starts over at each call.
    pub fn set_chaos(&self, cluster: &str, share: f64, seed: u64) {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.set_chaos(&kube_sim::ChaosSetting { share, seed }))
            .expect("set chaos");
    }

    /// Faults kube-sim's chaos mode injected into `cluster`, by kind.
    pub fn chaos_counts(&self, cluster: &str) -> kube_sim::ChaosCounts {
        let control = self.sim.cluster(cluster).control();
        self.runtime
            .block_on(control.chaos_counts())
            .expect("chaos counts")
    }

    /// Runs kubectl against `cluster`'s context; panics unless it succeeds.
    pub fn kubectl(&self, cluster: &str, args: &[&str]) -> String {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--context", cluster])
            .args(args)
            .output()
            .expect("kubectl is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Clusters {
    fn drop(&mut self) {
        self.sim.shutdown();
    }
}

/// A `data` value of a Secret object, decoded.
pub fn secret_data(secret: &Value, key: &str) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str()?)
        .ok()?;
    String::from_utf8(raw).ok()
}
