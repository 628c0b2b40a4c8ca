//! Running a command in a pod's container through the API server (`pods/exec` over a
//! websocket), what `kubectl exec` does. The command's stdout, stderr and exit code come back;
//! nothing is written to its stdin.

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use kube::Api;
use tokio::io::AsyncReadExt;

use super::client::Cluster;
use super::error::KubeError;
use super::retry::{bounded, retry, Deadline};

/// Largest stdout or stderr kept; the commands we run print a line or two.
const MAX_OUTPUT: u64 = 1 << 20;

/// What a command printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when the API server reported a failure that is not an exit code
    /// (the container is gone, the executable does not exist), described in `stderr`.
    pub exit_code: Option<i32>,
}

/// Runs `command` in `container` of pod `namespace/pod`. Errors name the cluster and the pod;
/// a 403 names the permission exec needs. A command that runs and fails is an `Output` with
/// its exit code, not an error.
pub async fn run(
    cluster: &Cluster,
    namespace: &str,
    pod: &str,
    container: &str,
    command: &[&str],
    deadline: &Deadline,
) -> Result<Output, KubeError> {
    let action = format!(
        "running `{}` in container {container} of pod {namespace}/{pod} (exec)",
        command.join(" ")
    );
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let argv: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    let session = async {
        // Opening the session is an API request like any other: transient refusals retry.
        let process = retry(&cluster.name, &action, deadline, || {
            pods.exec(pod, argv.clone(), &params)
        })
        .await
        .map_err(with_permission_hint)?;
        Ok::<_, KubeError>(collect(process).await)
    };
    bounded(&cluster.name, &action, deadline, session).await
}

/// The API server refused to open the session: a 403 names what exec needs.
fn with_permission_hint(mut err: KubeError) -> KubeError {
    if let KubeError::Api {
        code: 403, message, ..
    } = &mut err
    {
        // A websocket upgrade is a GET; the authorizer checks `create` (and, since
        // Kubernetes 1.35, `get` too) on the subresource.
        message.push_str(". Running a command in a pod needs the verbs `create` and `get` on resource `pods/exec` in that namespace");
    }
    err
}

async fn read_all(stream: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut out = Vec::new();
    if let Some(s) = stream {
        // A broken stream ends the output; the status says how the command ended.
        let _ = s.take(MAX_OUTPUT).read_to_end(&mut out).await;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn collect(mut process: kube::api::AttachedProcess) -> Output {
    let status = process.take_status();
    let (stdout, stderr) = tokio::join!(read_all(process.stdout()), read_all(process.stderr()));
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    let _ = process.join().await;
    let (exit_code, extra) = exit_code(status.as_ref());
    let stderr = match extra {
        Some(m) if stderr.is_empty() => m,
        Some(m) => format!("{stderr}\n{m}"),
        None => stderr,
    };
    Output {
        stdout,
        stderr,
        exit_code,
    }
}

/// The exit code in the status the API server sends on the error channel: `Success` is 0;
/// `NonZeroExitCode` carries it as the cause `ExitCode`. Any other failure has no exit code
/// and its message is returned.
fn exit_code(
    status: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>,
) -> (Option<i32>, Option<String>) {
    let Some(status) = status else {
        return (None, Some("the exec session ended without a status".into()));
    };
    if status.status.as_deref() == Some("Success") {
        return (Some(0), None);
    }
    let code = status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
        })
        .and_then(|c| c.message.as_deref())
        .and_then(|m| m.trim().parse::<i32>().ok());
    match code {
        Some(c) if status.reason.as_deref() == Some("NonZeroExitCode") => (Some(c), None),
        _ => (None, status.message.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

    fn failure(reason: &str, causes: Vec<(&str, &str)>, message: &str) -> Status {
        Status {
            status: Some("Failure".into()),
            reason: Some(reason.into()),
            message: Some(message.into()),
            details: Some(StatusDetails {
                causes: Some(
                    causes
                        .into_iter()
                        .map(|(r, m)| StatusCause {
                            reason: Some(r.into()),
                            message: Some(m.into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_come_from_the_status() {
        let ok = Status {
            status: Some("Success".into()),
            ..Default::default()
        };
        assert_eq!(exit_code(Some(&ok)), (Some(0), None));
        let nonzero = failure(
            "NonZeroExitCode",
            vec![("ExitCode", "6")],
            "command terminated with non-zero exit code: error executing command [curl], exit code 6",
        );
        assert_eq!(exit_code(Some(&nonzero)), (Some(6), None));
        let internal = failure(
            "InternalError",
            vec![],
            "executable file not found in $PATH",
        );
        assert_eq!(
            exit_code(Some(&internal)),
            (None, Some("executable file not found in $PATH".into()))
        );
        assert_eq!(exit_code(None).0, None);
    }
}
