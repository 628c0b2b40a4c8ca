//! One client per distinct connection per provider process. A 30-cluster apply runs each
//! exec credential plugin once per cluster: kube-rs keeps the plugin's token inside the client
//! and refreshes it only when it expires, so reusing the client is what makes that true.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::OnceCell;

use super::connection::Connection;
use super::error::KubeError;

/// A connected cluster: the client and the name used in messages.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    /// "context \"east\"" or "host https://..." (from the connection settings).
    pub name: String,
}

type Key = [u8; 32];

fn cache() -> &'static Mutex<HashMap<Key, Arc<OnceCell<Cluster>>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<OnceCell<Cluster>>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The cached client for `conn`, creating it on first use. The cache key is a hash of the
/// *resolved* settings (kubeconfig content included), so editing a kubeconfig between runs of
/// a long-lived provider (debug mode) is noticed, and two spellings of one connection share.
pub async fn connect(conn: &Connection) -> Result<Cluster, KubeError> {
    let kubeconfig = conn.resolve()?;
    let serialized = serde_json::to_vec(&kubeconfig).map_err(|e| KubeError::Config {
        cluster: conn.describe(),
        message: format!("cannot serialize the connection settings: {e}"),
    })?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &serialized);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());

    let cell = {
        let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    };
    cell.get_or_try_init(|| async {
        let config = conn.config(kubeconfig).await?;
        let client = kube::Client::try_from(config).map_err(|e| KubeError::Config {
            cluster: conn.describe(),
            message: format!("cannot build a client: {}", super::error::error_chain(&e)),
        })?;
        tracing::debug!(cluster = %conn.describe(), "new cluster client");
        Ok(Cluster {
            client,
            name: conn.describe(),
        })
    })
    .await
    .cloned()
}

/// Number of distinct cached clients (for tests and benchmarks).
pub fn cached_clients() -> usize {
    cache().lock().map(|m| m.len()).unwrap_or(0)
}
