//! One client per distinct connection per provider process. A 30-cluster apply runs each
//! exec credential plugin once per cluster: kube-rs keeps the plugin's token inside the client
//! and refreshes it only when it expires, so reusing the client is what makes that true.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::OnceCell;

use super::connection::{Connection, Exec, Resolved};
use super::error::KubeError;
use super::exec;
use super::retry_after::RetryAfterLayer;

/// A connected cluster: the client and the name used in messages.
#[derive(Clone)]
pub struct Cluster {
    pub client: kube::Client,
    /// "context \"east\"" or "host https://...": the connection's context (named, else the
    /// kubeconfig's current one) or host.
    pub name: String,
    /// A digest of the resolved connection settings: what tells two clusters apart where the
    /// name may not (two kubeconfigs with a context of the same name).
    pub id: Key,
}

pub type Key = [u8; 32];

fn cache() -> &'static Mutex<HashMap<Key, Arc<OnceCell<Cluster>>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<OnceCell<Cluster>>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The cache key of kubeconfig settings: a SHA-256 of their JSON, made through a Value, whose
/// maps are sorted, while ExecConfig.env holds HashMaps (random order).
pub(super) fn key_of(kubeconfig: &kube::config::Kubeconfig) -> Result<Key, serde_json::Error> {
    let serialized = serde_json::to_vec(&serde_json::to_value(kubeconfig)?)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &serialized);
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    Ok(key)
}

/// The cached client for `conn`, creating it on first use. The cache key is a hash of the
/// *resolved* settings (kubeconfig content included), so editing a kubeconfig between runs of
/// a long-lived provider (debug mode) is noticed, and two spellings of one connection share.
pub async fn connect(conn: &Connection) -> Result<Cluster, KubeError> {
    let Resolved { kubeconfig, name } = conn.resolve_named()?;
    let key = key_of(&kubeconfig).map_err(|e| KubeError::Config {
        cluster: name.clone(),
        message: format!("cannot serialize the connection settings: {e}"),
    })?;

    let cell = {
        let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
        map.entry(key).or_default().clone()
    };
    cell.get_or_try_init(|| build(conn, kubeconfig, name, key))
        .await
        .cloned()
}

/// Builds the client, running an exec credential plugin ourselves (once; again only when its
/// token nears expiry) instead of letting kube-rs run it per client component.
async fn build(
    conn: &Connection,
    mut kubeconfig: kube::config::Kubeconfig,
    name: String,
    id: Key,
) -> Result<Cluster, KubeError> {
    let fail = |message: String| KubeError::Config {
        cluster: name.clone(),
        message,
    };
    let user = kubeconfig
        .auth_infos
        .first_mut()
        .and_then(|a| a.auth_info.as_mut());
    let mut layer = None;
    if let Some(user) = user {
        if let Some(e) = user.exec.take() {
            let exec = Exec {
                api_version: e.api_version.unwrap_or_default(),
                command: e.command.unwrap_or_default(),
                args: e.args.unwrap_or_default(),
                env: e
                    .env
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|m| Some((m.get("name")?.clone(), m.get("value")?.clone())))
                    .collect(),
            };
            let run_exec = exec.clone();
            let credential = tokio::task::spawn_blocking(move || exec::run(&run_exec))
                .await
                .map_err(|e| fail(format!("exec plugin task failed: {e}")))?
                .map_err(fail)?;
            match credential {
                exec::Credential::Token { token, expires } => {
                    layer = Some(exec::ExecAuthLayer(Arc::new(exec::TokenSource::new(
                        exec, token, expires,
                    ))));
                }
                exec::Credential::Certificate { cert_pem, key_pem } => {
                    use base64::Engine;
                    let b64 =
                        |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
                    user.client_certificate_data = Some(b64(&cert_pem));
                    user.client_key_data = Some(b64(&key_pem).into());
                }
            }
        }
    }
    let config = conn.config(kubeconfig, &name).await?;
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| {
        fail(format!(
            "cannot build a client: {}",
            super::error::error_chain(&e)
        ))
    })?;
    // Innermost, on the raw response: Retry-After must be read before kube-rs drops headers.
    let builder = builder.with_layer(&RetryAfterLayer);
    let client = match layer {
        Some(l) => builder.with_layer(&l).build(),
        None => builder.build(),
    };
    tracing::debug!(cluster = %name, "new cluster client");
    Ok(Cluster { client, name, id })
}
