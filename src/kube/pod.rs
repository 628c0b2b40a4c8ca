//! Facts about a pod as its status reports them.

use k8s_openapi::api::core::v1::Pod;

/// Running, Ready, and not being deleted: a pod that serves and will keep serving for now.
pub fn is_ready(p: &Pod) -> bool {
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        && p.metadata.deletion_timestamp.is_none()
}
