//! HTTP requests to a pod's port through the API server's port-forward (`pods/portforward`,
//! websocket), what `kubectl port-forward` and `istioctl` do to reach endpoints that answer
//! only local callers. No local port is bound: the forwarded stream carries one HTTP/1.1
//! request and its response.

use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::client::Cluster;
use super::error::KubeError;
use super::retry::{bounded, retry, Deadline};

/// Largest response body read; debug endpoints answer a few KiB.
const MAX_BODY: usize = 8 << 20;

/// A response read through a port-forward.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` on `port` of pod `namespace/pod`, through a port-forward opened for this one
/// request. Errors name the cluster, the pod and the port; a 403 from the API server names
/// the permission port-forwarding needs.
pub async fn get(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    port: u16,
    path: &str,
    deadline: &Deadline,
) -> Result<Response, KubeError> {
    let action = format!("reading {path} from pod {namespace}/{pod} port {port} (port-forward)");
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
        exchange(forwarder, port, path)
            .await
            .map_err(|e| e.into_kube(cluster, &action))
    };
    bounded(&cluster.name, &action, deadline, request).await
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

async fn exchange(
    mut forwarder: kube::api::Portforwarder,
    port: u16,
    path: &str,
) -> Result<Response, Failed> {
    let stream = forwarder
        .take_stream(port)
        .ok_or_else(|| Failed("no stream for the port".into()))?;
    let pod_error = forwarder
        .take_error(port)
        .ok_or_else(|| Failed("no error channel for the port".into()))?;

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failed(format!("HTTP handshake: {e}")))?;
    let driver = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| Failed(e.to_string()))?;

    // The pod side reports failures (nothing listening on the port) on its error channel
    // while the HTTP side waits forever: whichever answers first decides.
    let response = async {
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
    let result = tokio::select! {
        r = response => r,
        Some(message) = pod_error => Err(Failed(message)),
    };
    driver.abort();
    forwarder.abort();
    result
}
