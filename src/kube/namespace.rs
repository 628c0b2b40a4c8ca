//! Namespaces that are being deleted. A namespace in phase `Terminating` refuses every new
//! object (403, cause `NamespaceTerminating`) until the namespace controller has emptied it
//! and it is gone; only then can it be created again. Re-applying right after a destroy
//! meets exactly that, so creating steps wait it out instead of failing.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;

use super::client::Cluster;
use super::error::KubeError;
use super::retry::Deadline;
use super::wait::wait_for;

/// Whether the namespace is being deleted (phase `Terminating`, or a deletion timestamp the
/// controller has not turned into a phase yet).
pub fn is_terminating(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating")
}

impl Cluster {
    /// The namespace as it stands once it is no longer being deleted: `None` when it is absent
    /// (possibly after waiting for a deletion to finish), else the live, active namespace.
    /// Waits on a watch, bounded by `deadline` and cancelled by StopProvider; says at INFO
    /// that it waits and why, then every few seconds while it does.
    pub async fn namespace_settled(
        &self,
        name: &str,
        deadline: &Deadline,
    ) -> Result<Option<Namespace>, KubeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let seen = self.get_opt(&api, name, deadline).await?;
        match seen {
            Some(ns) if is_terminating(&ns) => {
                tracing::info!(
                    cluster = %self.name,
                    namespace = name,
                    "namespace {name} is being deleted (Terminating): waiting until its deletion finishes before creating it again"
                );
                let what = format!("namespace {name} to finish terminating (it is being deleted; nothing can be created in it until it is gone)");
                let settled = wait_for(
                    self,
                    api,
                    name,
                    &what,
                    |n: Option<&Namespace>| n.is_none_or(|n| !is_terminating(n)),
                    deadline,
                )
                .await?;
                tracing::info!(
                    cluster = %self.name,
                    namespace = name,
                    waited_ms = deadline.elapsed().as_millis() as u64,
                    "namespace {name} finished terminating"
                );
                Ok(settled)
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn terminating_is_the_phase_or_a_deletion_timestamp() {
        let mut ns = Namespace::default();
        assert!(!is_terminating(&ns));
        ns.status = Some(NamespaceStatus {
            phase: Some("Active".into()),
            ..Default::default()
        });
        assert!(!is_terminating(&ns));
        ns.status.as_mut().unwrap().phase = Some("Terminating".into());
        assert!(is_terminating(&ns));
        ns.status = None;
        ns.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(is_terminating(&ns));
    }
}
