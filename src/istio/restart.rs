//! Restarting istiod so that it reads `cacerts` again. istiod watches the mounted `cacerts`
//! files only when it started with them; a control plane switched from its self-signed CA
//! to a plug-in CA (or between plug-in CAs) needs new pods. Done as `kubectl rollout
//! restart` does it: a pod template annotation with the time, then the rollout waited for.

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::operator::revision_suffix;
use crate::kube::retry::retry;
use crate::kube::wait::wait_for;
use crate::kube::{Cluster, Deadline, KubeError};

/// The pod template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Name of the istiod Deployment of a revision.
pub fn istiod_name(revision: Option<&str>) -> String {
    format!("istiod{}", revision_suffix(revision))
}

/// Whether the istiod Deployment exists (its pods may then have started without `cacerts`).
pub async fn istiod_exists(
    cluster: &Cluster,
    namespace: &str,
    revision: Option<&str>,
    deadline: &Deadline,
) -> Result<bool, KubeError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    Ok(cluster
        .get_opt(&api, &istiod_name(revision), deadline)
        .await?
        .is_some())
}

/// Restarts the istiod Deployment and waits until its rollout is complete. `now` is the
/// annotation value (RFC 3339).
pub async fn restart_istiod(
    cluster: &Cluster,
    namespace: &str,
    revision: Option<&str>,
    now: &str,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let name = istiod_name(revision);
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}});
    let action = format!("restarting Deployment {namespace}/{name}");
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    let patched = retry(&cluster.name, &action, deadline, || {
        api.patch(&name, &params, &patch)
    })
    .await?;
    let generation = patched.metadata.generation.unwrap_or(0);
    let what = format!("the restart of Deployment {namespace}/{name} to complete");
    wait_for(
        cluster,
        api,
        &name,
        &what,
        move |d: Option<&Deployment>| rollout_complete(d, generation),
        deadline,
    )
    .await?;
    Ok(())
}

/// `kubectl rollout status` semantics: the controller has seen `generation`, every replica
/// runs the new template, no old replica is left and all new ones are available.
pub fn rollout_complete(d: Option<&Deployment>, generation: i64) -> bool {
    let Some(d) = d else { return false };
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    status.observed_generation.unwrap_or(0) >= generation
        && updated >= wanted
        && status.replicas.unwrap_or(0) <= updated
        && status.available_replicas.unwrap_or(0) >= updated
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn deployment(observed: i64, replicas: i32, updated: i32, available: i32) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(observed),
                replicas: Some(replicas),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn rollout_is_complete_only_when_every_replica_is_new_and_available() {
        assert!(rollout_complete(Some(&deployment(3, 2, 2, 2)), 3));
        // The controller has not seen the restart yet.
        assert!(!rollout_complete(Some(&deployment(2, 2, 2, 2)), 3));
        // One old pod still running, one new one not yet available.
        assert!(!rollout_complete(Some(&deployment(3, 3, 2, 2)), 3));
        assert!(!rollout_complete(Some(&deployment(3, 2, 2, 1)), 3));
        assert!(!rollout_complete(Some(&deployment(3, 2, 1, 2)), 3));
        assert!(!rollout_complete(None, 1));
        assert_eq!(istiod_name(None), "istiod");
        assert_eq!(istiod_name(Some("canary")), "istiod-canary");
    }
}
