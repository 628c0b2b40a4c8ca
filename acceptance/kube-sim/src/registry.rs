//! Process-wide directory of running clusters by URL, so one cluster's simulated istiod can
//! reach a sibling the way a real istiod dials the `server` of a remote secret's kubeconfig.
//!
//! A cluster's own loopback URL is unique in the process. An alias (a kind-style in-network
//! address such as `https://c2-control-plane:6443`) is not: several `Sim`s (tests running in
//! parallel) may each give it to their own cluster, so aliases resolve only inside the `Sim`
//! (the "network") that registered them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::cluster::Cluster;

/// Key: (network, URL); network 0 holds the clusters' own URLs, reachable from every network.
type Key = (u64, String);

fn clusters() -> &'static Mutex<HashMap<Key, Weak<Cluster>>> {
    static MAP: OnceLock<Mutex<HashMap<Key, Weak<Cluster>>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// A new network id for one `Sim`'s clusters.
pub fn new_network() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn insert(key: Key, cluster: &Arc<Cluster>) {
    let mut m = clusters().lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|_, w| w.strong_count() > 0);
    m.insert(key, Arc::downgrade(cluster));
}

/// `https://127.0.0.1:1234/` and `https://localhost:1234` name the same server.
pub fn normalize(url: &str) -> String {
    let u = url.trim().trim_end_matches('/').to_ascii_lowercase();
    u.replacen("://localhost:", "://127.0.0.1:", 1)
}

pub fn register(cluster: &Arc<Cluster>) {
    insert((0, normalize(&cluster.url())), cluster);
}

/// Make `url` (e.g. a kind-style in-network address such as `https://c2-control-plane:6443`)
/// reach `cluster` too, from the clusters of its own network.
pub fn register_as(url: &str, cluster: &Arc<Cluster>) {
    insert((cluster.network, normalize(url)), cluster);
}

/// The running cluster serving `url` as seen from network `from`, if any (stopped clusters do
/// not answer).
pub fn resolve(from: u64, url: &str) -> Option<Arc<Cluster>> {
    let m = clusters().lock().unwrap_or_else(|e| e.into_inner());
    let url = normalize(url);
    m.get(&(from, url.clone()))
        .or_else(|| m.get(&(0, url)))
        .and_then(Weak::upgrade)
        .filter(|c| !c.shutdown.is_cancelled())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_resolves_only_inside_its_own_network() {
        let cluster = |name: &str, network: u64| {
            Cluster::new(
                name,
                Default::default(),
                network,
                tokio_util::sync::CancellationToken::new(),
            )
            .expect("cluster")
        };
        let (n1, n2) = (new_network(), new_network());
        let (a, b) = (cluster("c2", n1), cluster("c2", n2));
        // Two simulations (parallel tests) give the same kind-style address to their own c2.
        register_as("https://c2-control-plane:6443", &a);
        register_as("https://c2-control-plane:6443/", &b);
        let from = |n: u64| resolve(n, "https://C2-control-plane:6443").map(|c| c.network);
        assert_eq!(from(n1), Some(n1));
        assert_eq!(from(n2), Some(n2));
        assert_eq!(
            from(new_network()),
            None,
            "a third network knows no such server"
        );
    }

    #[test]
    fn urls_normalize() {
        assert_eq!(
            normalize("https://localhost:6443/"),
            normalize("https://127.0.0.1:6443")
        );
        assert_ne!(
            normalize("https://127.0.0.1:6443"),
            normalize("https://127.0.0.1:6444")
        );
    }
}
