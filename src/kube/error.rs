//! Errors from cluster operations, worded for the person running Terraform: which cluster,
//! what failed, and what to do about it. Never carries credentials.

use std::time::Duration;

use super::connection::Connection;

/// A failed cluster operation.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The connection settings cannot be turned into a client.
    #[error("cluster {cluster}: {message}")]
    Config { cluster: String, message: String },
    /// The API server answered with an error status.
    #[error("cluster {cluster}: {action} failed: {message}")]
    Api {
        cluster: String,
        action: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The API server could not be reached (or TLS failed) for as long as we tried.
    #[error("cluster {cluster}: {action} failed: {message}")]
    Unreachable {
        cluster: String,
        action: String,
        message: String,
    },
    /// The operation's time limit passed.
    #[error("cluster {cluster}: timed out after {waited:?} while {action}")]
    Timeout {
        cluster: String,
        action: String,
        waited: Duration,
    },
    /// Terraform asked the provider to stop.
    #[error("cluster {cluster}: stopped while {action} (Terraform asked the provider to stop)")]
    Cancelled { cluster: String, action: String },
}

impl KubeError {
    pub(crate) fn config(conn: &Connection, message: String) -> Self {
        KubeError::Config {
            cluster: conn.describe(),
            message,
        }
    }

    /// The HTTP status for API errors.
    pub fn code(&self) -> Option<u16> {
        match self {
            KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// Builds the user-facing error for `err` from `action` on `cluster`.
    pub fn from_kube(cluster: &str, action: &str, err: &kube::Error, tried: Duration) -> Self {
        match err {
            kube::Error::Api(status) => {
                let hint = match status.code {
                    401 => " — the API server rejected the credentials: check token, client certificate or the exec plugin's output",
                    403 => " — the credentials lack this permission: grant the verb and resource named above to the user (RBAC)",
                    _ => "",
                };
                KubeError::Api {
                    cluster: cluster.to_string(),
                    action: action.to_string(),
                    code: status.code,
                    reason: status.reason.clone(),
                    message: format!("{} ({}){hint}", status.message, status.code),
                }
            }
            other => {
                let chain = error_chain(other);
                let hint = if is_tls_problem(&chain) {
                    "TLS verification failed: check cluster_ca_certificate (or the kubeconfig's CA) and tls_server_name"
                } else {
                    "the API server is unreachable: check the host, network and proxy_url"
                };
                KubeError::Unreachable {
                    cluster: cluster.to_string(),
                    action: action.to_string(),
                    message: format!(
                        "{hint}; tried for {:.1}s; last error: {chain}",
                        tried.as_secs_f64()
                    ),
                }
            }
        }
    }
}

/// The full cause chain of an error, joined.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

pub(crate) fn is_tls_problem(chain: &str) -> bool {
    let lower = chain.to_ascii_lowercase();
    [
        "certificate",
        "unknownissuer",
        "notvalidforname",
        "tls handshake",
        "invalid peer",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}
