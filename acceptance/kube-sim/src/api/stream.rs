//! Pod connect subresources: `pods/portforward` over the websocket channel protocol (as the
//! kubelet's websocket port-forward serves it through the API server) and `pods/proxy`.
//! Behind a pod port there is only what kube-sim simulates (istiod, see [`crate::istiod`]);
//! any other port refuses the connection.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Request, Target};
use crate::auth::{Attributes, Identity};
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::wsstream::{self, ChannelConn, Received};
use crate::{istiod, object};

/// The `create` check every websocket upgrade to a pod subresource (`pods/portforward`,
/// `pods/exec`) gets on top of the GET's `get`: Kubernetes 1.35's
/// AuthorizePodWebsocketUpgradeCreatePermission (on by default), which the SPDY POST always
/// had to pass.
pub fn authorize_upgrade(
    cluster: &Cluster,
    who: &Identity,
    t: &Target,
    subresource: &str,
) -> ApiResult<()> {
    cluster.auth.authorize(
        who,
        &Attributes {
            verb: "create",
            group: "",
            resource: subresource,
            namespace: &t.ns,
            name: &t.name,
            non_resource: false,
        },
        &cluster.store,
    )
}

/// The API server streams to a pod only through the kubelet of its node: a pod the scheduler
/// has not placed is refused.
pub fn require_host(pod: &Value, name: &str) -> ApiResult<()> {
    if pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    Ok(())
}

fn pods_key() -> crate::store::ResKey {
    crate::store::ResKey::new("", "pods")
}

/// `ports=15014,8080` (also repeated `ports=`), each 1..=65535, as the kubelet parses them.
pub fn parse_ports(raw: Option<&str>) -> Result<Vec<u16>, String> {
    let raw = raw.ok_or("query parameter \"port\" is required")?;
    let mut out = Vec::new();
    for p in raw.split(',') {
        let n: u16 = p
            .trim()
            .parse()
            .map_err(|e| format!("unable to parse {p:?} as a port: {e}"))?;
        if n < 1 {
            return Err(format!("port {p:?} must be > 0"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The sandbox id the container runtime names the pod by (stable per pod).
fn sandbox_id(pod: &Value) -> String {
    let hex: String = object::uid(pod).chars().filter(|c| *c != '-').collect();
    format!("{hex}{hex}").chars().take(64).collect()
}

/// What the kubelet writes on a port's error channel when nothing listens there (containerd's
/// wording).
pub fn refused_message(pod: &Value, port: u16) -> String {
    let sandbox = sandbox_id(pod);
    format!(
        "error forwarding port {port} to pod {sandbox}, uid : failed to execute portforward in network namespace \"/var/run/netns/cni-{}\": failed to connect to localhost:{port} inside namespace \"{sandbox}\", IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 [::1]:{port}: connect: connection refused ",
        object::uid(pod)
    )
}

/// `GET .../pods/{name}/portforward?ports=...` with a websocket upgrade.
pub async fn portforward(
    cluster: &Arc<Cluster>,
    req: &Request,
    t: &Target,
    who: &Identity,
) -> ApiResult<Resp> {
    authorize_upgrade(cluster, who, t, "pods/portforward")?;
    let Some(hs) = req.websocket.as_ref() else {
        return Err(ApiError::bad_request(
            "Upgrade request required: kube-sim serves port-forward over websockets (v4.channel.k8s.io) only, not SPDY",
        ));
    };
    let pod = cluster
        .store
        .get(&pods_key(), &t.ns, &t.name)
        .ok_or_else(|| ApiError::not_found("", "pods", &t.name))?;
    let ports = parse_ports(req.q("ports")).map_err(ApiError::bad_request)?;
    require_host(&pod, &t.name)?;
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        // The kubelet only forwards to pods with a running sandbox.
        return Ok(http::plain_error(
            500,
            &format!("pod not found (\"{}_{}\")", t.name, t.ns),
            None,
        ));
    }
    let Some(protocol) = wsstream::negotiate(&hs.offered, wsstream::PORT_FORWARD_PROTOCOLS) else {
        return Ok(http::plain_error(
            403,
            &format!(
                "requested protocol(s) are not supported: {:?}; supports {:?}",
                hs.offered,
                wsstream::PORT_FORWARD_PROTOCOLS
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
            ),
            None,
        ));
    };
    let (resp, conn) = hs
        .accept(protocol)
        .ok_or_else(|| ApiError::internal("websocket upgrade already taken"))?;
    let cluster = cluster.clone();
    tokio::spawn(async move {
        if let Some(conn) = conn.await {
            forward(cluster, pod, ports, conn).await;
        }
    });
    Ok(resp)
}

/// Bytes read from a port's listener, or its end (`None`).
type Outgoing = (u8, Option<Bytes>);

async fn pump(
    mut from: tokio::io::ReadHalf<tokio::io::DuplexStream>,
    ch: u8,
    tx: mpsc::Sender<Outgoing>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send((ch, Some(Bytes::copy_from_slice(&buf[..n]))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = tx.send((ch, None)).await;
}

/// Run the forwarded ports: data channel 2i and error channel 2i+1 for port i, each opened with
/// the port number (u16, little endian); a port nothing listens on gets the kubelet's error
/// message. The socket closes when every port is done or the client closes it.
async fn forward(cluster: Arc<Cluster>, pod: Arc<Value>, ports: Vec<u16>, mut conn: ChannelConn) {
    for (i, p) in ports.iter().enumerate() {
        let ch = (2 * i) as u8;
        if !conn.send(ch, &p.to_le_bytes()).await || !conn.send(ch + 1, &p.to_le_bytes()).await {
            return;
        }
    }
    let (tx, mut rx) = mpsc::channel::<Outgoing>(32);
    let mut writers = Vec::with_capacity(ports.len());
    let mut open = 0usize;
    for (i, p) in ports.iter().enumerate() {
        match istiod::listening(&pod, *p) {
            Some(d) => {
                let (client, server) = tokio::io::duplex(64 * 1024);
                tokio::spawn(istiod::serve_connection(cluster.clone(), d, *p, server));
                let (r, w) = tokio::io::split(client);
                tokio::spawn(pump(r, (2 * i) as u8, tx.clone()));
                writers.push(Some(w));
                open += 1;
            }
            None => {
                let _ = conn
                    .send((2 * i + 1) as u8, refused_message(&pod, *p).as_bytes())
                    .await;
                writers.push(None);
            }
        }
    }
    drop(tx);
    while open > 0 {
        tokio::select! {
            _ = cluster.shutdown.cancelled() => break,
            r = conn.recv() => match r {
                Received::Closed => break,
                Received::Data(ch, data) => {
                    // Clients write only on data channels (even numbers).
                    if ch % 2 == 0 {
                        if let Some(Some(w)) = writers.get_mut(usize::from(ch / 2)) {
                            let _ = w.write_all(&data).await;
                        }
                    }
                }
            },
            o = rx.recv() => match o {
                Some((ch, Some(data))) => {
                    if !conn.send(ch, &data).await {
                        break;
                    }
                }
                Some((ch, None)) => {
                    writers[usize::from(ch / 2)] = None;
                    open -= 1;
                }
                None => break,
            },
        }
    }
    conn.close().await;
}

/// `scheme:name:port`, `name:port` or `name` (`utilnet.SplitSchemeNamePort`).
fn split_name_port(id: &str) -> (&str, Option<&str>) {
    let parts: Vec<&str> = id.split(':').collect();
    match parts.as_slice() {
        [name] => (*name, None),
        [name, port] => (*name, Some(*port).filter(|p| !p.is_empty())),
        [_, name, port] => (*name, Some(*port).filter(|p| !p.is_empty())),
        _ => (id, None),
    }
}

/// `.../pods/{name[:port]}/proxy/...`: the API server dials the pod IP (the port given, else the
/// first container port) from outside the pod.
pub fn proxy(cluster: &Arc<Cluster>, req: &Request, t: &Target) -> ApiResult<Resp> {
    let (name, port) = split_name_port(&t.name);
    let pod = cluster
        .store
        .get(&pods_key(), &t.ns, name)
        .ok_or_else(|| ApiError::not_found("", "pods", name))?;
    let port: u16 = match port {
        Some(p) => p
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid port {p:?}")))?,
        None => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find_map(|c| c.pointer("/ports/0/containerPort").and_then(Value::as_u64))
            })
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(80),
    };
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    let marker = format!("/{}/proxy", t.name);
    let rest = req
        .path
        .split_once(&marker)
        .map(|(_, r)| r)
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    match istiod::listening(&pod, port) {
        Some(d) => {
            let a = istiod::answer(cluster, &d, port, rest, false);
            Ok(hyper::Response::builder()
                .status(a.status)
                .header("content-type", a.content_type)
                .body(http::full(a.body))
                .expect("proxy response"))
        }
        None => Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!(
                "error trying to reach service: dial tcp {ip}:{port}: connect: connection refused"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_like_the_kubelet() {
        assert_eq!(parse_ports(Some("15014,8080")), Ok(vec![15014, 8080]));
        assert!(parse_ports(None).unwrap_err().contains("required"));
        assert!(parse_ports(Some("0")).is_err());
        assert!(parse_ports(Some("70000")).is_err());
    }

    #[test]
    fn proxy_names_split() {
        assert_eq!(
            split_name_port("istiod-x:15014"),
            ("istiod-x", Some("15014"))
        );
        assert_eq!(
            split_name_port("https:istiod-x:15014"),
            ("istiod-x", Some("15014"))
        );
        assert_eq!(split_name_port("istiod-x"), ("istiod-x", None));
    }
}
