//! `pods/exec` over websockets, as a client sees it through the API server:
//!
//! * A request offering `v5.channel.k8s.io` is answered by the API server's stream translator
//!   (`TranslateStreamingWebsocketRequests`, on by default since Kubernetes 1.30), which speaks
//!   v5 only and relays the container runtime's outcome: exit codes arrive as
//!   `command terminated with non-zero exit code: command terminated with exit code N` (the
//!   translator re-wraps what client-go's v4 decoder made of the kubelet's status), other
//!   failures as an `InternalError` status.
//! * Any other offer is proxied to the kubelet's streaming server (containerd's
//!   `k8s.io/kubelet/pkg/cri/streaming`), which speaks the legacy, v1 and v4 protocols; its
//!   exit-code message carries containerd's `error executing command [argv], exit code N`.
//!
//! Either way the first frame is an empty one on the lowest writable channel, then stdout and
//! stderr, then the status on channel 3. Containers run nothing: the command runs one of the
//! simulated programs ([`crate::programs`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};

use super::stream::{authorize_upgrade, require_host};
use super::{Request, Target};
use crate::auth::Identity;
use crate::cluster::Cluster;
use crate::error::{ApiError, ApiResult};
use crate::http::{self, Resp};
use crate::programs::{self, Exit, Output};
use crate::wsstream::{self, ChannelConn, Protocol, Received};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;

/// How long the server waits for the client to close after the status (the translator waits
/// up to 15 minutes; clients close as soon as they read the status).
const FINISH_PATIENCE: Duration = Duration::from_secs(5);

/// Which server answers the websocket, and so how the status reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answerer {
    /// The API server's v5 stream translator.
    Translator,
    /// The kubelet / container runtime streaming server, v4 (JSON status).
    KubeletV4,
    /// The kubelet with a pre-v4 protocol: the error channel carries the message as text, and
    /// nothing on success.
    KubeletV1,
}

/// The streams the client asked for (`PodExecOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Streams {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

fn truthy(req: &Request, k: &str) -> bool {
    matches!(req.q(k), Some("true") | Some("1"))
}

/// `validateContainer` of the pod registry: the container named, or the only one.
pub fn choose_container(pod: &Value, requested: Option<&str>) -> Result<String, String> {
    let names = |field: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{field}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let pod_name = crate::object::name(pod);
    let containers = names("containers");
    match requested {
        Some(c) => {
            let all = [
                containers.clone(),
                names("initContainers"),
                names("ephemeralContainers"),
            ]
            .concat();
            if all.iter().any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(format!("container {c} is not valid for pod {pod_name}"))
            }
        }
        None => match containers.len() {
            1 => Ok(containers[0].clone()),
            0 => Err(format!(
                "a container name must be specified for pod {pod_name}"
            )),
            _ => {
                let all = [
                    containers,
                    names("initContainers"),
                    names("ephemeralContainers"),
                ]
                .concat();
                Err(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    all.join(" ")
                ))
            }
        },
    }
}

/// Whether the kubelet finds the container running (it looks among running containers only).
pub fn container_running(pod: &Value, container: &str) -> bool {
    if pod.pointer("/status/phase").and_then(Value::as_str) != Some("Running") {
        return false;
    }
    ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .any(|s| {
            s.get("name").and_then(Value::as_str) == Some(container)
                && s.pointer("/state/running").is_some()
        })
}

/// `GET .../pods/{name}/exec?command=...&container=...&stdout=true` with a websocket upgrade.
pub async fn exec(
    cluster: &Arc<Cluster>,
    req: &Request,
    t: &Target,
    who: &Identity,
) -> ApiResult<Resp> {
    authorize_upgrade(cluster, who, t, "pods/exec")?;
    let pod = cluster
        .store
        .get(&crate::store::ResKey::new("", "pods"), &t.ns, &t.name)
        .ok_or_else(|| ApiError::not_found("", "pods", &t.name))?;
    let container = choose_container(&pod, req.q("container")).map_err(ApiError::bad_request)?;
    require_host(&pod, &t.name)?;
    let Some(hs) = req.websocket.as_ref() else {
        return Err(ApiError::bad_request(
            "Upgrade request required: kube-sim serves exec over websockets (v5.channel.k8s.io, v4.channel.k8s.io) only, not SPDY",
        ));
    };
    let streams = Streams {
        stdin: truthy(req, "stdin"),
        stdout: truthy(req, "stdout"),
        stderr: truthy(req, "stderr"),
        tty: truthy(req, "tty"),
    };
    let command = req.q_all("command");
    let translated = cluster.settings().translate_streaming_websocket_requests
        && hs.offered.iter().any(|p| p == wsstream::V5_BINARY);
    let (protocol, answerer) = if translated {
        (wsstream::EXEC_TRANSLATOR_PROTOCOLS[0], Answerer::Translator)
    } else {
        let Some(p) = wsstream::negotiate(&hs.offered, wsstream::EXEC_KUBELET_PROTOCOLS) else {
            return Ok(http::plain_error(
                400,
                &format!(
                    "websocket server finished before becoming ready: requested protocol(s) are not supported: {:?}",
                    hs.offered
                ),
                None,
            ));
        };
        let a = if p.name == wsstream::V4_BINARY || p.name == wsstream::V4_BASE64 {
            Answerer::KubeletV4
        } else {
            Answerer::KubeletV1
        };
        (p, a)
    };
    // What the kubelet refuses before it upgrades: through the translator the refusal arrives as
    // a status after the upgrade, otherwise as the kubelet's plain HTTP answer.
    let refusal = if !streams.stdin && !streams.stdout && !streams.stderr {
        Some((
            400,
            "you must specify at least 1 of stdin, stdout, stderr".to_string(),
        ))
    } else if !container_running(&pod, &container) {
        Some((500, format!("container not found (\"{container}\")")))
    } else {
        None
    };
    if let (Some((code, msg)), false) = (&refusal, translated) {
        return Ok(http::plain_error(*code, msg, None));
    }
    let (resp, conn) = hs
        .accept(protocol)
        .ok_or_else(|| ApiError::internal("websocket upgrade already taken"))?;
    let ctx = programs::Context {
        cluster: cluster.clone(),
        pod,
    };
    let shutdown = cluster.shutdown.clone();
    tokio::spawn(async move {
        let Some(mut conn) = conn.await else {
            return;
        };
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = session(&mut conn, protocol, answerer, streams, ctx, command, refusal) => {}
        }
        conn.finish(FINISH_PATIENCE).await;
    });
    Ok(resp)
}

/// One exec session on an upgraded connection.
async fn session(
    conn: &mut ChannelConn,
    _protocol: Protocol,
    answerer: Answerer,
    streams: Streams,
    ctx: programs::Context,
    command: Vec<String>,
    refusal: Option<(u16, String)>,
) {
    // An empty frame on the lowest writable channel tells the client the streams are ready.
    let first = if streams.stdout {
        STDOUT
    } else if streams.stderr {
        STDERR
    } else {
        ERROR
    };
    if !conn.send(first, &[]).await {
        return;
    }
    if let Some((_, msg)) = refusal {
        let inner = format!("unable to upgrade connection: {msg}");
        let _ = conn
            .send(ERROR, &status_bytes(&internal_error(&inner), answerer))
            .await;
        return;
    }
    let stdin = if streams.stdin && programs::reads_stdin(&command) {
        match read_stdin(conn).await {
            Some(b) => b,
            None => return, // the client went away
        }
    } else {
        Bytes::new()
    };
    let out = tokio::select! {
        o = programs::run(&ctx, &command, &stdin) => o,
        // A client that closes the connection ends the session (the process would get EOF
        // and SIGHUP); anything else it sends meanwhile is not read by the program.
        _ = wait_closed(conn) => return,
    };
    if streams.stdout && !out.stdout.is_empty() && !conn.send(STDOUT, &out.stdout).await {
        return;
    }
    if streams.stderr && !out.stderr.is_empty() && !conn.send(STDERR, &out.stderr).await {
        return;
    }
    let status = exit_status(&out, &command, answerer);
    let bytes = status_bytes(&status, answerer);
    if !bytes.is_empty() {
        let _ = conn.send(ERROR, &bytes).await;
    }
}

/// Stdin until the client signals its end (v5 CLOSE on channel 0). `None` when the client
/// closes the whole connection (v4 clients can only end stdin that way).
async fn read_stdin(conn: &mut ChannelConn) -> Option<Bytes> {
    let mut buf = Vec::new();
    loop {
        match conn.recv().await {
            Received::Closed => return None,
            Received::Data(STDIN, d) => buf.extend_from_slice(&d),
            Received::Data(wsstream::CLOSE_CHANNEL, d) if d.first() == Some(&STDIN) => {
                return Some(Bytes::from(buf))
            }
            Received::Data(..) => {}
        }
    }
}

async fn wait_closed(conn: &mut ChannelConn) {
    while let Received::Data(..) = conn.recv().await {}
}

/// `apierrors.NewInternalError(err)`.
pub fn internal_error(err: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": format!("Internal error occurred: {err}"),
        "reason": "InternalError", "details": {"causes": [{"message": err}]}, "code": 500})
}

/// A 64-hex exec id, as containerd names exec processes.
fn exec_id() -> String {
    crate::object::random_hex(32)
}

/// The status the client reads for a finished program.
pub fn exit_status(out: &Output, command: &[String], answerer: Answerer) -> Value {
    match out.exit {
        Exit::Code(0) => json!({"metadata": {}, "status": "Success"}),
        Exit::Code(rc) => {
            let inner = match answerer {
                // client-go's v4 decoder inside the translator.
                Answerer::Translator => format!("command terminated with exit code {rc}"),
                // containerd's CodeExitError.
                _ => format!(
                    "error executing command [{}], exit code {rc}",
                    command.join(" ")
                ),
            };
            json!({"metadata": {}, "status": "Failure",
                "message": format!("command terminated with non-zero exit code: {inner}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": rc.to_string()}]}})
        }
        Exit::NotFound => {
            let argv0 = command.first().map(String::as_str).unwrap_or("");
            let why = if argv0.contains('/') {
                format!("stat {argv0}: no such file or directory")
            } else {
                "executable file not found in $PATH".to_string()
            };
            let kubelet = format!(
                "error executing command in container: failed to exec in container: failed to start exec \"{}\": OCI runtime exec failed: exec failed: unable to start container process: exec: \"{argv0}\": {why}: unknown",
                exec_id()
            );
            match answerer {
                // The translator's SPDY client turns the kubelet's InternalError status into a
                // plain error, which the translator wraps once more.
                Answerer::Translator => {
                    internal_error(&format!("Internal error occurred: {kubelet}"))
                }
                _ => internal_error(&kubelet),
            }
        }
    }
}

/// The error-channel payload: JSON for v4/v5; for pre-v4 the message text, nothing on success.
pub fn status_bytes(status: &Value, answerer: Answerer) -> Vec<u8> {
    match answerer {
        Answerer::KubeletV1 => {
            if status.get("status").and_then(Value::as_str) == Some("Success") {
                Vec::new()
            } else {
                status
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec()
            }
        }
        _ => serde_json::to_vec(status).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n",
            "containers": [{"name": "app"}, {"name": "istio-proxy"}],
            "initContainers": [{"name": "istio-init"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "app", "state": {"running": {}}},
                {"name": "istio-proxy", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})
    }

    #[test]
    fn containers_are_chosen_as_the_pod_registry_does() {
        let p = pod();
        assert_eq!(choose_container(&p, Some("app")).unwrap(), "app");
        assert_eq!(
            choose_container(&p, Some("nope")).unwrap_err(),
            "container nope is not valid for pod p"
        );
        assert_eq!(
            choose_container(&p, None).unwrap_err(),
            "a container name must be specified for pod p, choose one of: [app istio-proxy istio-init]"
        );
        let single = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        assert_eq!(choose_container(&single, None).unwrap(), "c");
        assert!(container_running(&p, "app"));
        assert!(!container_running(&p, "istio-proxy"));
        assert!(!container_running(&p, "istio-init"));
    }

    #[test]
    fn statuses_read_as_each_answerer_writes_them() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        let ok = Output {
            stdout: vec![],
            stderr: vec![],
            exit: Exit::Code(0),
        };
        assert_eq!(
            exit_status(&ok, &cmd, Answerer::Translator),
            json!({"metadata": {}, "status": "Success"})
        );
        assert!(status_bytes(
            &exit_status(&ok, &cmd, Answerer::KubeletV1),
            Answerer::KubeletV1
        )
        .is_empty());
        let three = Output {
            exit: Exit::Code(3),
            ..ok
        };
        let s = exit_status(&three, &cmd, Answerer::Translator);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"][0],
            json!({"reason": "ExitCode", "message": "3"})
        );
        assert_eq!(
            s["message"],
            "command terminated with non-zero exit code: command terminated with exit code 3"
        );
        let s = exit_status(&three, &cmd, Answerer::KubeletV4);
        assert_eq!(
            s["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
        let missing = Output {
            exit: Exit::NotFound,
            ..three
        };
        let s = exit_status(&missing, &["wget".to_string()], Answerer::KubeletV4);
        assert_eq!(
            (s["code"].as_u64(), s["reason"].as_str()),
            (Some(500), Some("InternalError"))
        );
        let m = s["message"].as_str().unwrap();
        assert!(m.starts_with("Internal error occurred: error executing command in container: failed to exec in container: failed to start exec \""));
        assert!(m.ends_with("exec: \"wget\": executable file not found in $PATH: unknown"));
        let s = exit_status(&missing, &["/bin/x".to_string()], Answerer::Translator);
        let m = s["message"].as_str().unwrap();
        assert!(m.starts_with("Internal error occurred: Internal error occurred: error executing"));
        assert!(m.ends_with("exec: \"/bin/x\": stat /bin/x: no such file or directory: unknown"));
    }
}
