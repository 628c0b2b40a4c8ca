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
fn key_of(kubeconfig: &kube::config::Kubeconfig) -> Result<Key, serde_json::Error> {
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

/// How the API server named in a kubeconfig answers its credentials.
#[derive(Clone)]
pub enum Probe {
    /// Authenticated and allowed to list namespaces: the same server and credentials, for
    /// further questions.
    Accepted(Prober),
    /// The server answered this HTTP status (401: credentials rejected; 403: not allowed).
    Refused(u16),
    /// The server could not be reached from here, or the kubeconfig cannot be used.
    Unreachable(String),
}

/// A kubeconfig's server and credentials. A bearer token (what remote secrets hold) travels
/// in each request's header over a client shared by every kubeconfig naming the same server
/// the same way, so probing the N − 1 tokens minted in one cluster reuses its connections
/// instead of a TLS handshake each. Other credentials get a client of their own.
#[derive(Clone)]
pub struct Prober {
    client: kube::Client,
    bearer: Option<http::HeaderValue>,
}

impl Prober {
    /// Lists objects of kind `K` (in `namespace`, or cluster-wide) with these credentials.
    pub async fn list<K>(
        &self,
        namespace: Option<&str>,
        params: &kube::api::ListParams,
    ) -> Result<kube::core::ObjectList<K>, kube::Error>
    where
        K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
    {
        let mut request = kube::core::Request::new(K::url_path(&(), namespace))
            .list(params)
            .map_err(kube::Error::BuildRequest)?;
        if let Some(bearer) = &self.bearer {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, bearer.clone());
        }
        self.client.request(request).await
    }
}

/// The client for a kubeconfig whose only credential was taken out (`bearer`): one per
/// distinct remainder (server, CA, TLS settings) in this process.
async fn shared_client(kubeconfig: kube::config::Kubeconfig) -> Result<kube::Client, String> {
    static CLIENTS: OnceLock<Mutex<HashMap<Key, kube::Client>>> = OnceLock::new();
    let key = key_of(&kubeconfig).map_err(|e| e.to_string())?;
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(c) = clients.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(c.clone());
    }
    let client = client_of(kubeconfig).await?;
    let mut map = clients.lock().unwrap_or_else(|e| e.into_inner());
    Ok(map.entry(key).or_insert(client).clone())
}

async fn client_of(kubeconfig: kube::config::Kubeconfig) -> Result<kube::Client, String> {
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| format!("the kubeconfig cannot be used: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))
}

/// Splits off the bearer token when it is the kubeconfig's one credential (one user, nothing
/// else set): the kubeconfig left names the server only.
fn take_bearer(kubeconfig: &mut kube::config::Kubeconfig) -> Option<http::HeaderValue> {
    use secrecy::ExposeSecret;
    let [named] = kubeconfig.auth_infos.as_mut_slice() else {
        return None;
    };
    let user = named.auth_info.as_mut()?;
    let token = user.token.take()?;
    let alone =
        serde_json::to_value(&*user).is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()));
    let header = http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()));
    match (alone, header) {
        (true, Ok(mut header)) => {
            header.set_sensitive(true);
            Some(header)
        }
        _ => {
            user.token = Some(token);
            None
        }
    }
}

/// Presents a kubeconfig's credentials (a bearer token, as in a remote secret; credential
/// plugins are refused, as istiod refuses them) to its server: one `list namespaces`. The
/// credentials are someone else's: never those of a cached cluster client.
pub async fn probe_kubeconfig(yaml: &str, timeout: std::time::Duration) -> Probe {
    let mut kubeconfig = match kube::config::Kubeconfig::from_yaml(yaml) {
        Ok(k) => k,
        Err(e) => return Probe::Unreachable(format!("the kubeconfig does not parse: {e}")),
    };
    if kubeconfig
        .auth_infos
        .iter()
        .any(|a| a.auth_info.as_ref().is_some_and(|u| u.exec.is_some()))
    {
        return Probe::Unreachable("the kubeconfig uses a credential plugin".into());
    }
    let bearer = take_bearer(&mut kubeconfig);
    let client = match &bearer {
        Some(_) => shared_client(kubeconfig).await,
        None => client_of(kubeconfig).await,
    };
    let prober = match client {
        Ok(client) => Prober { client, bearer },
        Err(why) => return Probe::Unreachable(why),
    };
    let params = kube::api::ListParams::default().limit(1);
    let list = prober.list::<k8s_openapi::api::core::v1::Namespace>(None, &params);
    match tokio::time::timeout(timeout, list).await {
        Ok(Ok(_)) => Probe::Accepted(prober),
        Ok(Err(kube::Error::Api(status))) => Probe::Refused(status.code),
        Ok(Err(e)) => Probe::Unreachable(super::error::error_chain(&e)),
        Err(_) => Probe::Unreachable(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(users: &str) -> kube::config::Kubeconfig {
        kube::config::Kubeconfig::from_yaml(&format!(
            "apiVersion: v1
kind: Config
clusters:
- name: c2
  cluster: {{server: https://203.0.113.2:6443, certificate-authority-data: Q0E=}}
contexts:
- name: c2
  context: {{cluster: c2, user: c2}}
current-context: c2
users:
{users}"
        ))
        .expect("kubeconfig")
    }

    #[test]
    fn a_lone_bearer_token_moves_to_the_request_header() {
        let mut kc = kubeconfig("- name: c2\n  user: {token: abc.def}\n");
        let header = take_bearer(&mut kc).expect("the token is the only credential");
        assert_eq!(header.to_str().unwrap(), "Bearer abc.def");
        assert!(header.is_sensitive(), "kept out of debug output");
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_none(), "the shared client must not carry it");

        // Two tokens for the same server leave the same kubeconfig: one shared client.
        let mut other = kubeconfig("- name: c2\n  user: {token: ghi.jkl}\n");
        take_bearer(&mut other).expect("token");
        assert_eq!(
            serde_json::to_vec(&kc).unwrap(),
            serde_json::to_vec(&other).unwrap()
        );
    }

    #[test]
    fn other_credentials_keep_their_own_client() {
        // A token next to a client certificate: both must be presented, as configured.
        let mut kc = kubeconfig(
            "- name: c2\n  user: {token: abc.def, client-certificate-data: Q0VSVA==, client-key-data: S0VZ}\n",
        );
        assert!(take_bearer(&mut kc).is_none());
        let user = kc.auth_infos[0].auth_info.as_ref().unwrap();
        assert!(user.token.is_some(), "left in place");

        // Which user a context picks is not guessed at: two users, no sharing.
        let mut two = kubeconfig(
            "- name: c2\n  user: {token: abc.def}\n- name: c3\n  user: {token: ghi.jkl}\n",
        );
        assert!(take_bearer(&mut two).is_none());

        // No credential at all: nothing to move.
        let mut none = kubeconfig("- name: c2\n  user: {}\n");
        assert!(take_bearer(&mut none).is_none());
    }
}
