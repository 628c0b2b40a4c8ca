//! HTTP requests to a pod's port through the API server's port-forward (`pods/portforward`,
//! websocket), what `kubectl port-forward` and `istioctl` do to reach endpoints that answer
//! only local callers. No local port is bound: the forwarded stream carries HTTP/1.1 requests
//! and their responses, and stays open for the next request to the same pod and port.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use futures::FutureExt;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::client::Cluster;
use super::error::KubeError;
use super::retry::{bounded, retry, Deadline};

/// Largest response body read; debug endpoints answer a few KiB.
const MAX_BODY: usize = 8 << 20;

/// How long a failed request waits for the pod side's error message, which the kubelet sends
/// as the forward fails.
const POD_ERROR_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A response read through a port-forward.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` on `port` of pod `namespace/pod`, through a port-forward. Forwards are kept
/// open for the next request to the same pod and port (see [`Session`]), so the sync checks of
/// every remote secret written to a cluster, and its status reads, share a forward per istiod
/// pod rather than opening one each. Errors name the cluster, the pod and the port; a 403
/// from the API server names the permission port-forwarding needs.
pub async fn get(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    deadline: &Deadline,
) -> Result<Response, KubeError> {
    let action = format!("reading {path} from pod {namespace}/{pod} port {port} (port-forward)");
    let key = (cluster.id, namespace.to_string(), pod.to_string(), port);
    // A kept forward may have been closed since (by the server, the pod replaced): that
    // request fails before any answer, and a fresh forward is opened for it.
    if let Some(mut session) = idle(&key) {
        match bounded(&cluster.name, &action, deadline, async {
            Ok(session.exchange(path).await)
        })
        .await?
        {
            Ok(resp) => {
                keep(key, session);
                return Ok(resp);
            }
            Err(e) => {
                tracing::debug!(cluster = %cluster.name, pod, port, "kept port-forward failed ({}), opening a new one", e.0)
            }
        }
    }
    // Opening the forward is an API request like any other: a transient refusal (5xx, 429
    // with Retry-After, a reset connection) is retried under the one retry policy.
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let ports = [port];
    let forwarder = retry(&cluster.name, &action, deadline, || {
        pods.portforward(pod, &ports)
    })
    .await
    .map_err(with_permission_hint)?;
    let request = async {
        let mut session = Session::start(forwarder, port)
            .await
            .map_err(|e| e.into_kube(cluster, &action))?;
        let resp = session
            .exchange(path)
            .await
            .map_err(|e| e.into_kube(cluster, &action))?;
        Ok((session, resp))
    };
    let (session, resp) = bounded(&cluster.name, &action, deadline, request).await?;
    keep(key, session);
    Ok(resp)
}

/// Which forward: the connection's identity, namespace, pod and port.
type Key = (super::client::Key, String, String, u16);

/// How many idle forwards are kept per pod and port: as many as requests ran at once, up to
/// this.
const MAX_IDLE: usize = 4;

fn sessions() -> &'static Mutex<HashMap<Key, Vec<Session>>> {
    static SESSIONS: OnceLock<Mutex<HashMap<Key, Vec<Session>>>> = OnceLock::new();
    SESSIONS.get_or_init(Default::default)
}

/// An idle kept forward to `key`, taken out of the pool: a caller that is dropped mid-request
/// drops it with it, so no half-read connection goes back.
fn idle(key: &Key) -> Option<Session> {
    let mut map = sessions().lock().unwrap_or_else(|e| e.into_inner());
    let pool = map.get_mut(key)?;
    while let Some(s) = pool.pop() {
        if s.usable() {
            return Some(s);
        }
    }
    None
}

fn keep(key: Key, session: Session) {
    if !session.usable() {
        return;
    }
    let mut map = sessions().lock().unwrap_or_else(|e| e.into_inner());
    let pool = map.entry(key).or_default();
    if pool.len() < MAX_IDLE {
        pool.push(session);
    }
}

/// The API server refused to open the port-forward: a 403 names what it needs.
fn with_permission_hint(mut err: KubeError) -> KubeError {
    if let KubeError::Api {
        code: 403, message, ..
    } = &mut err
    {
        // The authorizer names one verb; a websocket upgrade is checked for both.
        message.push_str(". Port-forwarding needs the verbs `get` and `create` on resource `pods/portforward` in that namespace");
    }
    err
}

/// Why an exchange failed: the forward opened, but the pod side failed (nothing listening,
/// pod gone) or the HTTP exchange broke.
struct Failed(String);

impl Failed {
    fn into_kube(self, cluster: &Cluster, action: &str) -> KubeError {
        KubeError::Unreachable {
            cluster: cluster.name.clone(),
            action: action.to_string(),
            message: format!("the port-forward opened but the request through it failed: {}. Check that the pod is running and listens on that port, and that the cluster allows port-forwarding (some managed clusters and network policies block it)", self.0),
        }
    }
}

/// One forwarded stream to a pod's port carrying HTTP/1.1 requests one after another, kept
/// alive as Go's `net/http` server (istiod's) keeps its connections.
struct Session {
    sender: hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    /// The pod side's error channel: it resolves when the port fails (nothing listening,
    /// pod gone) or the forward ends. Fused: it is polled again on every request.
    pod_error: futures::future::Fuse<futures::future::BoxFuture<'static, Option<String>>>,
    /// The pod side reported an error or closed: not to be used again.
    closed: bool,
    forwarder: kube::api::Portforwarder,
    driver: tokio::task::JoinHandle<Result<(), hyper::Error>>,
}

impl Session {
    async fn start(mut forwarder: kube::api::Portforwarder, port: u16) -> Result<Self, Failed> {
        let stream = forwarder
            .take_stream(port)
            .ok_or_else(|| Failed("no stream for the port".into()))?;
        let pod_error = forwarder
            .take_error(port)
            .ok_or_else(|| Failed("no error channel for the port".into()))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failed(format!("HTTP handshake: {e}")))?;
        Ok(Session {
            sender,
            pod_error: pod_error.boxed().fuse(),
            closed: false,
            forwarder,
            driver: tokio::spawn(conn),
        })
    }

    fn usable(&self) -> bool {
        !self.closed && !self.sender.is_closed() && !self.driver.is_finished()
    }

    async fn exchange(&mut self, path: &str) -> Result<Response, Failed> {
        let request = http::Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| Failed(e.to_string()))?;
        let sender = &mut self.sender;
        // The pod side reports failures (nothing listening on the port) on its error channel
        // while the HTTP side waits forever: whichever answers first decides.
        let response = async {
            sender
                .ready()
                .await
                .map_err(|e| Failed(format!("HTTP connection: {e}")))?;
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| Failed(format!("HTTP request: {e}")))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| Failed(format!("reading the response: {e}")))?
                .to_bytes()
                .to_vec();
            Ok(Response { status, body })
        };
        tokio::pin!(response);
        let first = tokio::select! {
            r = &mut response => Ok(r),
            message = &mut self.pod_error => Err(message),
        };
        let result = match first {
            // The HTTP side failed first (its stream closed): the pod side's word, which
            // follows at once when there is one (nothing listening), says more.
            Ok(Err(failed)) => {
                match tokio::time::timeout(POD_ERROR_GRACE, &mut self.pod_error).await {
                    Ok(Some(message)) => Err(Failed(message)),
                    _ => Err(failed),
                }
            }
            Ok(r) => r,
            Err(Some(message)) => Err(Failed(message)),
            // The forward ended (the server closed it after answering, say): what it
            // delivered before decides, and it is not used again.
            Err(None) => {
                self.closed = true;
                response.await
            }
        };
        if result.is_err() {
            self.closed = true;
        }
        result
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.driver.abort();
        self.forwarder.abort();
    }
}
