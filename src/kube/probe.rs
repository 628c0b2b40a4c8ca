//! Presenting someone else's credentials to an API server: the reader tokens of remote secrets,
//! which `mesh_status` checks against the servers they name. A bearer token travels in each
//! request's header over a client shared by every kubeconfig naming the same server the same
//! way, and that client speaks HTTP/2, as client-go does: the N − 1 tokens minted for one
//! server in an N-cluster mesh are all checked over one connection, instead of a TLS handshake
//! each. A server (or a front) that does not speak HTTP/2 is asked over HTTP/1.1 instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::client::{key_of, Key};

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

/// A kubeconfig's server and credentials.
#[derive(Clone)]
pub struct Prober {
    server: Arc<Server>,
    bearer: Option<http::HeaderValue>,
}

/// The clients for one server as a kubeconfig without its bearer token names it (server, CA,
/// TLS settings).
struct Server {
    /// HTTP/2 alone (ALPN `h2`): concurrent first requests wait for one connection instead of
    /// racing to open one each, which they do when the protocol is only learnt from the
    /// handshake. None where it cannot be asked for up front (a proxy, plain HTTP, other
    /// credentials than a bearer token).
    http2: Option<kube::Client>,
    /// kube-rs's own client (HTTP/1.1).
    http1: kube::Client,
    /// A request over HTTP/2 failed where HTTP/1.1 then got an answer: this server is asked
    /// over HTTP/1.1 from now on.
    http1_only: AtomicBool,
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
        let request = || {
            let mut request = kube::core::Request::new(K::url_path(&(), namespace))
                .list(params)
                .map_err(kube::Error::BuildRequest)?;
            if let Some(bearer) = &self.bearer {
                request
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, bearer.clone());
            }
            Ok::<_, kube::Error>(request)
        };
        let server = &self.server;
        let Some(http2) = server
            .http2
            .as_ref()
            .filter(|_| !server.http1_only.load(Ordering::Relaxed))
        else {
            return server.http1.request(request()?).await;
        };
        match http2.request(request()?).await {
            // No answer over HTTP/2 (no common protocol in the handshake, or an HTTP/1.1 server
            // reading the HTTP/2 preface): HTTP/1.1 decides.
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) => {
                let answer = server.http1.request(request()?).await;
                if matches!(answer, Ok(_) | Err(kube::Error::Api(_))) {
                    tracing::debug!(
                        "the API server answers over HTTP/1.1, not over HTTP/2 ({}): asked over HTTP/1.1 from now on",
                        super::error::error_chain(&e)
                    );
                    server.http1_only.store(true, Ordering::Relaxed);
                }
                answer
            }
            answer => answer,
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
    let server = match &bearer {
        Some(_) => shared_server(kubeconfig).await,
        None => server_of(kubeconfig, false).await.map(Arc::new),
    };
    let prober = match server {
        Ok(server) => Prober { server, bearer },
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

/// The clients for a kubeconfig whose only credential was taken out (`bearer`): one per
/// distinct remainder (server, CA, TLS settings) in this process.
async fn shared_server(kubeconfig: kube::config::Kubeconfig) -> Result<Arc<Server>, String> {
    static SERVERS: OnceLock<Mutex<HashMap<Key, Arc<Server>>>> = OnceLock::new();
    let key = key_of(&kubeconfig).map_err(|e| e.to_string())?;
    let servers = SERVERS.get_or_init(Default::default);
    if let Some(s) = servers.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(s.clone());
    }
    let server = Arc::new(server_of(kubeconfig, true).await?);
    let mut map = servers.lock().unwrap_or_else(|e| e.into_inner());
    Ok(map.entry(key).or_insert(server).clone())
}

/// The clients for a kubeconfig; with `http2`, an HTTP/2 one too where it can be asked for.
async fn server_of(kubeconfig: kube::config::Kubeconfig, http2: bool) -> Result<Server, String> {
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| format!("the kubeconfig cannot be used: {e}"))?;
    let http2 = if http2 { http2_client(&config)? } else { None };
    let http1 =
        kube::Client::try_from(config).map_err(|e| format!("cannot build a client: {e}"))?;
    Ok(Server {
        http2,
        http1,
        http1_only: AtomicBool::new(false),
    })
}

/// An HTTP/2-only client for `config`'s server: its CA, server name and headers, as kube-rs
/// sets them up for HTTP/1.1. None for a proxy or plain HTTP, which keep to HTTP/1.1.
fn http2_client(config: &kube::Config) -> Result<Option<kube::Client>, String> {
    use kube::client::ConfigExt;
    if config.proxy_url.is_some() || config.cluster_url.scheme_str() != Some("https") {
        return Ok(None);
    }
    // What kube-rs does before its own TLS setup: the process-wide crypto provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let tls = config
        .rustls_client_config()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let mut https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    if let Some(name) = &config.tls_server_name {
        let fixed = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("tls-server-name {name:?}: {e}"))?;
        https = https.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(fixed));
    }
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_connect_timeout(config.connect_timeout);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build::<_, kube::client::Body>(https.enable_http2().wrap_connector(tcp));
    let headers = config
        .extra_headers_layer()
        .map_err(|e| format!("cannot set up the request headers: {e}"))?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .layer(headers)
        .service(client);
    Ok(Some(kube::Client::new(
        service,
        config.default_namespace.clone(),
    )))
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
