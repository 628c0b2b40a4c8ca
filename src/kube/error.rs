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
        /// What the Status's `details` say (the kind it is about, its causes); boxed to keep
        /// the error small.
        details: Box<ApiDetails>,
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

/// The parts of a Status's `details` the provider acts on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiDetails {
    /// `details.kind`: the resource the answer is about (`namespaces` when a 404 is the
    /// namespace of the object, not the object's kind).
    pub kind: String,
    /// `details.name`.
    pub name: String,
    /// The `reason` of each of `details.causes` (e.g. `NamespaceTerminating`).
    pub causes: Vec<String>,
}

/// Cause type of the 403 the NamespaceLifecycle admission gives a create in a namespace that
/// is being deleted (`k8s.io/api/core/v1.NamespaceTerminatingCause`).
pub const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

impl ApiDetails {
    fn of(status: &kube::core::Status) -> Self {
        let Some(d) = status.details.as_ref() else {
            return Self::default();
        };
        Self {
            kind: d.kind.clone(),
            name: d.name.clone(),
            causes: d.causes.iter().map(|c| c.reason.clone()).collect(),
        }
    }
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

    /// A create refused because its namespace is being deleted (403, cause
    /// `NamespaceTerminating`).
    pub fn is_namespace_terminating(&self) -> bool {
        matches!(self, KubeError::Api { code: 403, details, .. }
            if details.causes.iter().any(|c| c == NAMESPACE_TERMINATING_CAUSE))
    }

    /// A 404 about the object's namespace rather than the object (or its kind): the
    /// namespace does not exist.
    pub fn is_namespace_missing(&self) -> bool {
        matches!(self, KubeError::Api { code: 404, details, .. } if details.kind == "namespaces")
    }

    /// Builds the user-facing error for `err` from `action` on `cluster`.
    pub fn from_kube(cluster: &str, action: &str, err: &kube::Error, tried: Duration) -> Self {
        match err {
            kube::Error::Api(status) => {
                let details = ApiDetails::of(status);
                let hint = advice(status.code, &status.message, &details);
                KubeError::Api {
                    cluster: cluster.to_string(),
                    action: action.to_string(),
                    code: status.code,
                    reason: status.reason.clone(),
                    message: format!("{} ({}){hint}", status.message, status.code),
                    details: Box::new(details),
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

/// What to do about an API error status, appended to its message. Only what the status
/// itself shows: a 403 is missing RBAC only when the authorizer says so (`User ... cannot
/// <verb> resource ...`); admission also answers 403 (a namespace being deleted, quotas,
/// Pod Security) and each of those needs something else.
fn advice(code: u16, message: &str, details: &ApiDetails) -> String {
    let is_rbac_denial = message.contains(" cannot ") && message.contains("resource \"");
    match code {
        401 => " — the API server rejected the credentials: check token, client certificate or the exec plugin's output".into(),
        403 if details.causes.iter().any(|c| c == NAMESPACE_TERMINATING_CAUSE) => {
            " — the namespace is being deleted (phase Terminating), so nothing can be created in it: wait until its deletion finishes (`kubectl get namespace`; if it stays Terminating, something holds it: see the finalizers on the namespace and on what is left in it), then apply again".into()
        }
        403 if is_rbac_denial => " — the credentials lack this permission: grant the verb and resource named above to the user (RBAC)".into(),
        403 => " — the API server refused the request for the reason given above (an admission policy, quota or namespace rule), not for missing RBAC permissions".into(),
        _ => String::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{StatusCause, StatusDetails};
    use kube::core::Status;

    fn api_error(code: u16, message: &str, kind: &str, causes: &[&str]) -> KubeError {
        let status = Status::failure(message, "Forbidden")
            .with_code(code)
            .with_details(StatusDetails {
                name: "x".into(),
                group: String::new(),
                kind: kind.into(),
                uid: String::new(),
                causes: causes
                    .iter()
                    .map(|c| StatusCause {
                        reason: c.to_string(),
                        message: String::new(),
                        field: String::new(),
                    })
                    .collect(),
                retry_after_seconds: 0,
            });
        KubeError::from_kube(
            "context \"c1\"",
            "applying ConfigMap x",
            &kube::Error::Api(status.boxed()),
            Duration::ZERO,
        )
    }

    #[test]
    fn a_namespace_being_deleted_is_not_missing_rbac() {
        let e = api_error(
            403,
            r#"configmaps "x" is forbidden: unable to create new content in namespace istio-system because it is being terminated"#,
            "configmaps",
            &[NAMESPACE_TERMINATING_CAUSE],
        );
        assert!(e.is_namespace_terminating());
        let msg = e.to_string();
        assert!(msg.contains("is being deleted"), "{msg}");
        assert!(msg.contains("apply again"), "{msg}");
        assert!(!msg.contains("RBAC"), "{msg}");
    }

    #[test]
    fn only_an_authorizer_denial_gets_the_rbac_advice() {
        let rbac = api_error(
            403,
            r#"configmaps "x" is forbidden: User "reader" cannot patch resource "configmaps" in API group "" in the namespace "ns""#,
            "configmaps",
            &[],
        );
        assert!(rbac.to_string().contains("RBAC"), "{rbac}");
        assert!(!rbac.is_namespace_terminating());
        let quota = api_error(
            403,
            r#"pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10"#,
            "pods",
            &[],
        );
        let msg = quota.to_string();
        assert!(!msg.contains("grant"), "{msg}");
        assert!(msg.contains("not for missing RBAC"), "{msg}");
        let unauthorized = api_error(401, "Unauthorized", "", &[]);
        assert!(unauthorized.to_string().contains("credentials"));
    }

    #[test]
    fn a_404_about_the_namespace_is_told_apart() {
        let ns = api_error(404, r#"namespaces "x" not found"#, "namespaces", &[]);
        assert!(ns.is_namespace_missing() && ns.is_not_found());
        let obj = api_error(404, r#"configmaps "x" not found"#, "configmaps", &[]);
        assert!(!obj.is_namespace_missing() && obj.is_not_found());
    }
}
