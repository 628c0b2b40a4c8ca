//! Running Istio's installer inside the cluster and undoing it: the operations behind
//! `mesh_cluster.control_plane`. No local istioctl is needed, so an apply runs the same on a
//! laptop, in CI and in Terraform Cloud.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, LogParams};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::operator::{
    injector_webhook_name, istiod_image, pod_status, revision_suffix, version_of, ControlPlane,
    Installer, KindRef, Role, CRD_KIND, UNINSTALL_KINDS,
};
use crate::kube::retry::retry;
use crate::kube::wait::wait_for;
use crate::kube::{Cluster, Deadline, KubeError};

/// How much of the installer's log goes into an error.
const LOG_TAIL_LINES: i64 = 40;

/// Why an install did not complete.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The installer Job failed; `detail` holds its status and log tail.
    #[error("cluster {cluster}: the Istio installer (Job {namespace}/{job}) failed")]
    InstallerFailed {
        cluster: String,
        namespace: String,
        job: String,
        detail: String,
    },
    /// The wait for the installer Job ran out of time; `detail` holds what the installer
    /// showed until then (Job and pod status, log tail), to tell a slow install from a stuck
    /// pod (image not pullable, unschedulable).
    #[error("{timeout}")]
    InstallerTimedOut { timeout: KubeError, detail: String },
}

impl InstallError {
    /// The diagnostic's detail text: the installer's status and log, when there is one.
    pub fn detail(&self) -> &str {
        match self {
            InstallError::InstallerFailed { detail, .. }
            | InstallError::InstallerTimedOut { detail, .. } => detail,
            InstallError::Kube(_) => "",
        }
    }
}

fn job_finished(job: Option<&Job>) -> bool {
    job.and_then(|j| j.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// One line on where the Job stands, for a diagnostic.
fn job_status(job: &Job) -> String {
    if let Some(failed) = job_failed(job) {
        return failed;
    }
    let s = job.status.clone().unwrap_or_default();
    format!(
        "not finished (active {}, succeeded {}, failed {})",
        s.active.unwrap_or(0),
        s.succeeded.unwrap_or(0),
        s.failed.unwrap_or(0)
    )
}

fn job_failed(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
}

/// Runs the installer for `iop` and waits for the control plane to be ready. The installer's
/// Job, ConfigMap, ServiceAccount and ClusterRoleBinding are removed afterwards, whatever the
/// outcome.
pub async fn install(
    cluster: &Cluster,
    installer: &Installer,
    iop: &Value,
    cp: &ControlPlane,
    labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
    deadline: &Deadline,
) -> Result<(), InstallError> {
    let outcome = run_installer(
        cluster,
        installer,
        iop,
        cp,
        labels,
        pod_annotations,
        deadline,
    )
    .await;
    // Cleanup gets its own short budget and is not cancelled by StopProvider: leaving a
    // cluster-admin binding behind is worse than a few more seconds. It runs while the
    // control plane the installer wrote comes up.
    let cleanup = Deadline::new(Duration::from_secs(120), CancellationToken::new());
    let ready = async {
        match outcome {
            Ok(()) => wait_ready(cluster, installer, cp, deadline).await,
            Err(e) => Err(e),
        }
    };
    let (removed, ready) = tokio::join!(remove_installer(cluster, installer, &cleanup), ready);
    if let Err(e) = removed {
        tracing::warn!(cluster = %cluster.name, "could not remove the installer objects: {e}");
        ready?;
        return Err(e.into());
    }
    ready
}

async fn run_installer(
    cluster: &Cluster,
    installer: &Installer,
    iop: &Value,
    cp: &ControlPlane,
    labels: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
    deadline: &Deadline,
) -> Result<(), InstallError> {
    let client = &cluster.client;
    let ns = installer.namespace.as_str();
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    // A Job left by an interrupted earlier run would never start again: start afresh. The
    // Job's inputs are written meanwhile: none of the four depends on another.
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let (config_map, service_account, binding) = (
        installer.config_map(iop, labels),
        installer.service_account(labels),
        installer.binding(labels),
    );
    let (old_job, config_map, service_account, binding) = tokio::join!(
        cluster.delete(&jobs, &installer.name, true, deadline),
        cluster.apply(&config_maps, &config_map, deadline),
        cluster.apply(&service_accounts, &service_account, deadline),
        cluster.apply(&bindings, &binding, deadline),
    );
    old_job?;
    config_map?;
    service_account?;
    binding?;
    let readiness = deadline.remaining().as_secs().clamp(60, 1800);
    let job = installer.job(cp, readiness, labels, pod_annotations);
    cluster.apply(&jobs, &job, deadline).await?;
    tracing::info!(cluster = %cluster.name, job = %installer.name, "Istio installer started");

    let what = format!("the Istio installer Job {ns}/{}", installer.name);
    let done = match wait_for(
        cluster,
        jobs.clone(),
        &installer.name,
        &what,
        |j: Option<&Job>| job_finished(j),
        deadline,
    )
    .await
    {
        Ok(done) => done,
        Err(timeout @ KubeError::Timeout { .. }) => {
            // The operation's deadline has passed: look around on a short budget of its own.
            let look = Deadline::new(Duration::from_secs(15), deadline.cancel.clone());
            let job = cluster
                .get_opt(&jobs, &installer.name, &look)
                .await
                .ok()
                .flatten();
            let detail = diagnose(cluster, installer, job.as_ref(), &look).await;
            return Err(InstallError::InstallerTimedOut { timeout, detail });
        }
        Err(e) => return Err(e.into()),
    };
    let Some(job) = done else {
        return Err(KubeError::Api {
            cluster: cluster.name.clone(),
            action: format!("waiting for {what}"),
            code: 404,
            reason: "NotFound".into(),
            message: "the installer Job disappeared while running".into(),
            details: Default::default(),
        }
        .into());
    };
    if job_failed(&job).is_some() {
        return Err(InstallError::InstallerFailed {
            cluster: cluster.name.clone(),
            namespace: ns.into(),
            job: installer.name.clone(),
            detail: diagnose(cluster, installer, Some(&job), deadline).await,
        });
    }
    tracing::info!(cluster = %cluster.name, "Istio installer completed");
    Ok(())
}

/// What the installer shows: the Job's status, its pod's, and the tail of its log.
async fn diagnose(
    cluster: &Cluster,
    installer: &Installer,
    job: Option<&Job>,
    deadline: &Deadline,
) -> String {
    let job = job.map_or_else(|| "(the Job is gone)".into(), job_status);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &installer.namespace);
    let selector = format!("job-name={}", installer.name);
    let params = ListParams::default().labels(&selector);
    let listed = retry(&cluster.name, "listing installer pods", deadline, || {
        pods.list(&params)
    })
    .await;
    let Some(pod) = listed.ok().and_then(|l| l.items.into_iter().next()) else {
        return format!("Job status: {job}\nPod status: (no installer pod found)");
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let params = LogParams {
        tail_lines: Some(LOG_TAIL_LINES),
        ..Default::default()
    };
    // Bounded like every other call: a diagnosis must not outlast the operation's budget.
    let log = match tokio::time::timeout(deadline.remaining(), pods.logs(&name, &params)).await {
        Ok(Ok(log)) if !log.trim().is_empty() => log,
        Ok(Ok(_)) => "(the installer printed nothing)".into(),
        Ok(Err(e)) => format!("(log unavailable: {e})"),
        Err(_) => "(log unavailable: timed out)".into(),
    };
    format!(
        "Job status: {job}\nPod status: {}\n\nLast lines of the installer's log:\n{log}",
        pod_status(&pod)
    )
}

/// Deletes the installer's Job, ClusterRoleBinding, ServiceAccount and ConfigMap, all at once;
/// already gone is success. Each is attempted whatever happens to the others; the first
/// error is returned.
pub async fn remove_installer(
    cluster: &Cluster,
    installer: &Installer,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let client = &cluster.client;
    let ns = installer.namespace.as_str();
    let jobs = Api::<Job>::namespaced(client.clone(), ns);
    let bindings = Api::<ClusterRoleBinding>::all(client.clone());
    let service_accounts = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let (job, binding, service_account, config_map) = tokio::join!(
        cluster.delete(&jobs, &installer.name, false, deadline),
        cluster.delete(&bindings, &installer.binding, false, deadline),
        cluster.delete(&service_accounts, &installer.name, false, deadline),
        cluster.delete(&config_maps, &installer.name, false, deadline),
    );
    job.and(binding).and(service_account).and(config_map)?;
    Ok(())
}

fn deployment_available(d: Option<&Deployment>) -> bool {
    d.and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

fn rev_suffix(cp: &ControlPlane) -> String {
    revision_suffix(cp.revision.as_deref())
}

/// Waits until the control plane serves: istiod Available on a primary, the injector webhook
/// present on a remote (whose istiod runs elsewhere).
async fn wait_ready(
    cluster: &Cluster,
    installer: &Installer,
    cp: &ControlPlane,
    deadline: &Deadline,
) -> Result<(), InstallError> {
    let suffix = rev_suffix(cp);
    match cp.role {
        Role::Primary => {
            let name = format!("istiod{suffix}");
            let api: Api<Deployment> =
                Api::namespaced(cluster.client.clone(), &installer.namespace);
            let what = format!("Deployment {}/{name} to be Available", installer.namespace);
            wait_for(
                cluster,
                api,
                &name,
                &what,
                |d: Option<&Deployment>| deployment_available(d),
                deadline,
            )
            .await?;
        }
        Role::Remote => {
            let name = injector_webhook_name(&installer.namespace, cp.revision.as_deref());
            let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client.clone());
            let what = format!("MutatingWebhookConfiguration {name}");
            wait_for(
                cluster,
                api,
                &name,
                &what,
                |o: Option<&MutatingWebhookConfiguration>| o.is_some(),
                deadline,
            )
            .await?;
        }
    }
    Ok(())
}

/// The Istio version running, observed on istiod (on a remote, the injector webhook, whose
/// istiod runs elsewhere); `None` when the control plane is missing. See [`version_of`].
pub async fn observed_version(
    cluster: &Cluster,
    namespace: &str,
    cp: &ControlPlane,
    deadline: &Deadline,
) -> Result<Option<String>, KubeError> {
    let suffix = rev_suffix(cp);
    let seen = match cp.role {
        Role::Primary => {
            let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), namespace);
            cluster
                .get_opt(&api, &format!("istiod{suffix}"), deadline)
                .await?
                .map(|d| {
                    let image = istiod_image(&d);
                    (d.metadata.labels.unwrap_or_default(), image)
                })
        }
        Role::Remote => {
            let api: Api<MutatingWebhookConfiguration> = Api::all(cluster.client.clone());
            cluster
                .get_opt(
                    &api,
                    &injector_webhook_name(namespace, cp.revision.as_deref()),
                    deadline,
                )
                .await?
                .map(|d| (d.metadata.labels.unwrap_or_default(), None))
        }
    };
    Ok(seen.map(|(labels, image)| version_of(&labels, image.as_deref(), &cp.version)))
}

fn dynamic_api(cluster: &Cluster, kind: &KindRef) -> (Api<DynamicObject>, ApiResource) {
    let (group, version, k, plural, _) = *kind;
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, k), plural);
    (Api::all_with(cluster.client.clone(), &ar), ar)
}

/// Removes what the installer created for this IstioOperator (objects carrying its owner
/// labels, Base included: see `operator::owner_selector`); CRDs only when asked, since deleting
/// them deletes every Istio resource in the cluster. Returns how many objects were deleted.
pub async fn uninstall(
    cluster: &Cluster,
    selector: &str,
    remove_crds: bool,
    deadline: &Deadline,
) -> Result<usize, KubeError> {
    let mut kinds: Vec<&KindRef> = UNINSTALL_KINDS.iter().collect();
    if remove_crds {
        kinds.push(&CRD_KIND);
    }
    let mut deleted = 0;
    for kind in kinds {
        let (all, ar) = dynamic_api(cluster, kind);
        // A kind the cluster does not serve lists as empty.
        let params = ListParams::default().labels(selector);
        let listed = cluster.list_dynamic(&all, &ar, &params, deadline).await?;
        for obj in listed {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let api: Api<DynamicObject> = match (&obj.metadata.namespace, kind.4) {
                (Some(ns), true) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
                _ => Api::all_with(cluster.client.clone(), &ar),
            };
            if cluster
                .delete_dynamic(&api, &ar, &name, false, deadline)
                .await?
            {
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}
