//! Shared helpers for kube-sim's own tests.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_sim::{Options, Sim};

pub async fn sim(clusters: &[&str]) -> Sim {
    sim_with(clusters, kube_sim::Settings::default()).await
}

pub async fn sim_with(clusters: &[&str], settings: kube_sim::Settings) -> Sim {
    Sim::start(Options {
        clusters: clusters.iter().map(|s| s.to_string()).collect(),
        settings,
        ..Default::default()
    })
    .await
    .expect("start kube-sim")
}

/// A kube-rs client for a kubeconfig context of the simulator.
pub async fn client(sim: &Sim, context: &str) -> kube::Client {
    client_from_yaml(&sim.kubeconfig_yaml(), context).await
}

/// A kube-rs client for the context, with the cluster's admin token replaced by `token`.
pub async fn client_with_token(sim: &Sim, context: &str, token: &str) -> kube::Client {
    let yaml = sim
        .kubeconfig_yaml()
        .replace(&sim.cluster(context).admin_token, token);
    client_from_yaml(&yaml, context).await
}

pub async fn client_from_yaml(yaml: &str, context: &str) -> kube::Client {
    let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let cfg = kube::Config::from_custom_kubeconfig(
        kc,
        &KubeConfigOptions {
            context: Some(context.to_string()),
            ..Default::default()
        },
    )
    .await
    .expect("kube config");
    kube::Client::try_from(cfg).expect("kube client")
}

/// Bound a future (watch-based waits) so a broken simulator fails the test instead of hanging.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The `Status` of a failed kube-rs call.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
