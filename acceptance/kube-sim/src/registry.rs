//! Process-wide directory of running clusters by URL, so one cluster's simulated istiod can
//! reach a sibling the way a real istiod dials the `server` of a remote secret's kubeconfig.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::cluster::Cluster;

fn clusters() -> &'static Mutex<HashMap<String, Weak<Cluster>>> {
    static MAP: OnceLock<Mutex<HashMap<String, Weak<Cluster>>>> = OnceLock::new();
    MAP.get_or_init(Default::default)
}

/// `https://127.0.0.1:1234/` and `https://localhost:1234` name the same server.
pub fn normalize(url: &str) -> String {
    let u = url.trim().trim_end_matches('/').to_ascii_lowercase();
    u.replacen("://localhost:", "://127.0.0.1:", 1)
}

pub fn register(cluster: &Arc<Cluster>) {
    register_as(&cluster.url(), cluster);
}

/// Make `url` (e.g. a kind-style in-network address such as `https://c2-control-plane:6443`)
/// reach `cluster` too.
pub fn register_as(url: &str, cluster: &Arc<Cluster>) {
    let mut m = clusters().lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|_, w| w.strong_count() > 0);
    m.insert(normalize(url), Arc::downgrade(cluster));
}

/// The running cluster serving `url`, if any (stopped clusters do not answer).
pub fn resolve(url: &str) -> Option<Arc<Cluster>> {
    let m = clusters().lock().unwrap_or_else(|e| e.into_inner());
    m.get(&normalize(url))
        .and_then(Weak::upgrade)
        .filter(|c| !c.shutdown.is_cancelled())
}

#[cfg(test)]
mod tests {
    use super::normalize;

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
