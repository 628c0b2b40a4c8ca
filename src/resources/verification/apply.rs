//! The check as the seed runs it: deploy HelloWorld and a client in every cluster
//! (`deploy_workloads`), wait until they are Ready with their sidecars (`wait_for_workloads`),
//! call HelloWorld from every client (`probe::reachability`), explain what failed
//! (`diagnose`), and clean up (`remove_workloads`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, ListParams};

use super::{diagnose, probe, ClusterConfig, Config};
use crate::istio::verification::{self as hello, Workloads};
use crate::kube::wait::wait_for;
use crate::kube::{connect, created_by, labels, mark_created, Cluster, Deadline, KubeError};
use crate::plugin::{Ctx, Diagnostics, Failure};

/// How long cleanup keeps trying a cluster after a failed check, or one that destroy cannot
/// reach, before it warns and moves on.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(60);

/// One cluster of the check, connected, with its client pod once it is Ready.
pub(super) struct Site {
    pub config: ClusterConfig,
    pub cluster: Cluster,
    pub client_pod: String,
}

fn kube_failure(summary: &str, err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    d.error(summary, err.to_string());
    d.into()
}

/// Runs the whole check; the workloads are removed afterwards (failed or not) unless kept.
pub(super) async fn check(
    ctx: &Ctx,
    config: &Config,
    timeout: Duration,
) -> Result<BTreeMap<String, BTreeSet<String>>, Failure> {
    let deadline = Deadline::new(timeout, ctx.cancel.clone());
    let started = std::time::Instant::now();
    let result = run(config, &deadline).await;
    tracing::info!(
        clusters = config.clusters.len(),
        ok = result.is_ok(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "verification ran"
    );
    if !config.keep_workloads {
        // A failed check leaves nothing behind either: the next apply runs it afresh.
        let cleanup = Deadline::new(CLEANUP_PATIENCE, ctx.cancel.clone());
        if let Err(e) = remove_workloads(config, &config.clusters, &cleanup).await {
            match &result {
                Ok(_) => {
                    return Err(kube_failure(
                        "The check passed, but its workloads could not be removed",
                        e,
                    ))
                }
                Err(_) => ctx.warn(
                    None,
                    "The check's workloads could not all be removed",
                    &format!("{e}. Destroying the resource, or the next apply, removes them."),
                ),
            }
        }
    }
    result
}

async fn run(
    config: &Config,
    deadline: &Deadline,
) -> Result<BTreeMap<String, BTreeSet<String>>, Failure> {
    let sites = deploy_and_wait(config, deadline).await?;
    let outcome = probe::reachability(config, &sites, deadline).await;
    let missing = outcome.missing(config);
    if missing.is_empty() {
        return Ok(outcome.seen);
    }
    let diagnosis = diagnose::explain(config, &sites, &outcome, &missing, deadline).await;
    let mut d = Diagnostics::new();
    d.error(
        format!(
            "The mesh does not carry traffic between every pair of clusters ({} of {} pairs failed)",
            missing.len(),
            config.clusters.len() * config.clusters.len()
        ),
        diagnosis,
    );
    Err(d.into())
}

/// Every cluster connected, its workloads applied, then all of them waited for in parallel.
async fn deploy_and_wait(config: &Config, deadline: &Deadline) -> Result<Vec<Site>, Failure> {
    let deploys = config.clusters.iter().map(|c| async move {
        let cluster = connect(&c.connection)
            .await
            .map_err(|e| kube_failure(&format!("Cannot connect to cluster {}", c.name), e))?;
        deploy_workloads(config, c, &cluster, deadline)
            .await
            .map_err(|e| {
                kube_failure(
                    &format!("Cannot deploy the check's workloads in cluster {}", c.name),
                    e,
                )
            })?;
        let client_pod = wait_for_workloads(config, c, &cluster, deadline).await?;
        Ok::<_, Failure>(Site {
            config: c.clone(),
            cluster,
            client_pod,
        })
    });
    let mut sites = Vec::new();
    let mut diags = Diagnostics::new();
    for r in futures::future::join_all(deploys).await {
        match r {
            Ok(site) => sites.push(site),
            Err(f) => diags.extend(f.diags),
        }
    }
    if diags.has_errors() {
        return Err(diags.into());
    }
    Ok(sites)
}

fn workloads<'a>(config: &'a Config, c: &'a ClusterConfig) -> Workloads<'a> {
    Workloads {
        namespace: &config.namespace,
        version: &c.name,
        revision: c.revision.as_deref(),
        images: &config.images,
        labels: labels(&config.instance()),
    }
}

/// The namespace labelled for injection (created when missing, after any deletion in
/// progress), Service `helloworld`, `helloworld-<name>` and the curl client.
async fn deploy_workloads(
    config: &Config,
    c: &ClusterConfig,
    cluster: &Cluster,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let w = workloads(config, c);
    let instance = config.instance();
    let mut ns = w.namespace();
    let existing = cluster
        .namespace_settled(&config.namespace, deadline)
        .await?;
    if existing
        .as_ref()
        .is_none_or(|n| created_by(&n.metadata, &instance))
    {
        mark_created(&mut ns.metadata, &instance);
    }
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    cluster.apply(&namespaces, &ns, deadline).await?;
    let client = cluster.client.clone();
    let ns = config.namespace.as_str();
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client, ns);
    cluster.apply(&services, &w.service(), deadline).await?;
    cluster
        .apply(&accounts, &w.client_service_account(), deadline)
        .await?;
    cluster
        .apply(&deployments, &w.helloworld(), deadline)
        .await?;
    cluster.apply(&deployments, &w.client(), deadline).await?;
    Ok(())
}

fn available(d: Option<&Deployment>) -> bool {
    let Some(d) = d else { return false };
    let status = d.status.as_ref();
    let observed = status.and_then(|s| s.observed_generation).unwrap_or(0);
    observed >= d.metadata.generation.unwrap_or(0)
        && status.and_then(|s| s.updated_replicas).unwrap_or(0) >= 1
        && status.and_then(|s| s.available_replicas).unwrap_or(0) >= 1
}

/// Waits for both Deployments, then checks their pods got a sidecar. Returns the client pod.
async fn wait_for_workloads(
    config: &Config,
    c: &ClusterConfig,
    cluster: &Cluster,
    deadline: &Deadline,
) -> Result<String, Failure> {
    let w = workloads(config, c);
    let ns = config.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    for (name, selector) in [
        (w.helloworld_name(), w.helloworld_selector()),
        (hello::CLIENT.to_string(), w.client_selector()),
    ] {
        let what = format!("Deployment {ns}/{name} to be available");
        let waited = wait_for(
            cluster,
            deployments.clone(),
            &name,
            &what,
            available,
            deadline,
        )
        .await;
        if let Err(e) = waited {
            let why = pod_problems(cluster, &pods, &selector, deadline).await;
            let mut d = Diagnostics::new();
            d.error(
                format!("The check's Deployment {ns}/{name} in cluster {} did not become available", c.name),
                format!("{e}{why}\n\nThe images must be pullable from the cluster (see hub, helloworld_image and curl_image), and the namespace must allow pods."),
            );
            return Err(d.into());
        }
    }
    let mut client_pod = None;
    for (selector, role) in [
        (w.helloworld_selector(), "HelloWorld"),
        (w.client_selector(), "client"),
    ] {
        let listed = cluster
            .list(&pods, &ListParams::default().labels(&selector), deadline)
            .await
            .map_err(|e| kube_failure("Cannot list the check's pods", e))?;
        let pod = newest_ready(&listed).ok_or_else(|| {
            let mut d = Diagnostics::new();
            d.error(
                format!("No Ready {role} pod in cluster {}", c.name),
                format!("Its Deployment is available but no pod with labels {selector} in namespace {ns} is Ready; it may have been replaced since."),
            );
            Failure::from(d)
        })?;
        if !hello::has_sidecar(pod) {
            let hint = injection_hint(config, c, cluster, deadline).await;
            let mut d = Diagnostics::new();
            d.error(
                format!("The {role} pod in cluster {} has no sidecar", c.name),
                format!(
                    "Pod {ns}/{} has no {} container, so Istio's injector did not run for it. {hint}",
                    pod.metadata.name.as_deref().unwrap_or("?"),
                    hello::SIDECAR
                ),
            );
            return Err(d.into());
        }
        if role == "client" {
            client_pod = pod.metadata.name.clone();
        }
    }
    Ok(client_pod.unwrap_or_default())
}

/// The most recently created Ready pod (a rollout may leave an older one terminating).
fn newest_ready(pods: &[Pod]) -> Option<&Pod> {
    pods.iter()
        .filter(|p| crate::kube::pod::is_ready(p))
        .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// Why pods of `selector` are not Ready, as their container statuses say (image pulls,
/// crashes), for the error of a Deployment that never became available.
async fn pod_problems(
    cluster: &Cluster,
    pods: &Api<Pod>,
    selector: &str,
    deadline: &Deadline,
) -> String {
    let short = deadline.capped(Duration::from_secs(5));
    let Ok(listed) = cluster
        .list(pods, &ListParams::default().labels(selector), &short)
        .await
    else {
        return String::new();
    };
    if listed.is_empty() {
        return format!("\nNo pod with labels {selector} exists (admission may have refused it: check the ReplicaSet's events).");
    }
    let mut out = String::new();
    for p in &listed {
        let name = p.metadata.name.as_deref().unwrap_or("?");
        let statuses = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for cs in statuses.into_iter().flatten() {
            let waiting = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            if let Some(w) = waiting {
                out.push_str(&format!(
                    "\nPod {name}, container {}: waiting, {}{}",
                    cs.name,
                    w.reason.as_deref().unwrap_or("no reason given"),
                    w.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
            }
        }
        if out.is_empty() {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("unknown");
            out.push_str(&format!("\nPod {name} is in phase {phase}."));
        }
    }
    out
}

/// What to check when a pod has no sidecar: the namespace label and the injector's webhook.
async fn injection_hint(
    config: &Config,
    c: &ClusterConfig,
    cluster: &Cluster,
    deadline: &Deadline,
) -> String {
    let (key, value) = hello::injection_label(c.revision.as_deref());
    let webhook = hello::injector_webhook(c.revision.as_deref());
    let short = deadline.capped(Duration::from_secs(5));
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(cluster.client.clone());
    let exists = cluster.get_opt(&webhooks, &webhook, &short).await;
    let which = match &c.revision {
        Some(r) => format!("revision {r:?}"),
        None => "the default revision".to_string(),
    };
    match exists {
        Ok(None) => format!("The namespace {} is labelled {key}={value}, but the injector webhook of {which} (MutatingWebhookConfiguration {webhook}) does not exist: is the control plane of {which} installed in this cluster? (cluster.revision selects the revision.)", config.namespace),
        Ok(Some(_)) => format!("The namespace {} is labelled {key}={value} and the injector webhook {webhook} exists, so the injector may have failed or been unreachable when the pod was created (check istiod's logs), or the pod opts out (sidecar.istio.io/inject=false).", config.namespace),
        Err(_) => format!("Check that the namespace {} is labelled {key}={value} and that MutatingWebhookConfiguration {webhook} exists.", config.namespace),
    }
}

/// Removes the check's workloads from `clusters`: the namespace when the check created it,
/// else the objects it applied there. Every cluster is tried; the first error is returned.
pub(super) async fn remove_workloads(
    config: &Config,
    clusters: &[ClusterConfig],
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let removals = clusters.iter().map(|c| async move {
        let cluster = connect(&c.connection).await?;
        remove_from(config, c, &cluster, deadline).await
    });
    futures::future::join_all(removals)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, KubeError>>()
        .map(|_| ())
}

async fn remove_from(
    config: &Config,
    c: &ClusterConfig,
    cluster: &Cluster,
    deadline: &Deadline,
) -> Result<(), KubeError> {
    let w = workloads(config, c);
    let ns = config.namespace.as_str();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let Some(live) = cluster.get_opt(&namespaces, ns, deadline).await? else {
        return Ok(());
    };
    if created_by(&live.metadata, &config.instance()) {
        cluster.delete(&namespaces, ns, false, deadline).await?;
        return Ok(());
    }
    let client = cluster.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let accounts: Api<ServiceAccount> = Api::namespaced(client, ns);
    cluster
        .delete(&deployments, &w.helloworld_name(), false, deadline)
        .await?;
    cluster
        .delete(&deployments, hello::CLIENT, false, deadline)
        .await?;
    cluster
        .delete(&accounts, hello::CLIENT, false, deadline)
        .await?;
    // The Service is shared by every cluster's HelloWorld in this namespace; it is ours.
    cluster
        .delete(&services, hello::SERVICE, false, deadline)
        .await?;
    // Give back the labels we set: an apply that owns nothing releases them (a label someone
    // else set too, such as their own injection label, stays).
    let bare = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(ns.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    cluster.apply(&namespaces, &bare, deadline).await?;
    Ok(())
}

/// On update: clusters no longer listed lose their workloads (kept ones included).
pub(super) async fn remove_dropped(
    ctx: &Ctx,
    prior: &Config,
    planned: &Config,
    timeout: Duration,
) -> Result<(), Failure> {
    let dropped: Vec<ClusterConfig> = prior
        .clusters
        .iter()
        .filter(|p| !planned.clusters.iter().any(|c| c.name == p.name))
        .cloned()
        .collect();
    let moved_namespace = prior.namespace != planned.namespace;
    let stale: Vec<ClusterConfig> = if moved_namespace || prior.keep_workloads {
        prior.clusters.clone()
    } else {
        dropped
    };
    if stale.is_empty() {
        return Ok(());
    }
    let deadline = Deadline::new(timeout, ctx.cancel.clone()).capped(CLEANUP_PATIENCE);
    if let Err(e) = remove_workloads(prior, &stale, &deadline).await {
        ctx.warn(
            None,
            "Workloads of the previous check could not all be removed",
            &e.to_string(),
        );
    }
    Ok(())
}

/// Destroy: whatever is left in every cluster. An unreachable cluster is a warning.
pub(super) async fn remove_all(
    ctx: &Ctx,
    config: &Config,
    timeout: Duration,
) -> Result<(), Failure> {
    let deadline = Deadline::new(timeout, ctx.cancel.clone());
    for c in &config.clusters {
        let patience = deadline.capped(CLEANUP_PATIENCE);
        let result = async {
            let cluster = connect(&c.connection).await?;
            remove_from(config, c, &cluster, &patience).await
        }
        .await;
        match result {
            Ok(()) => {}
            Err(e @ (KubeError::Unreachable { .. } | KubeError::Timeout { .. })) => ctx.warn(
                None,
                &format!("Cluster {} could not be cleaned up", c.name),
                &format!("{e}. The check's workloads may remain in namespace {}; they carry the label {}={}.", config.namespace, crate::kube::INSTANCE_LABEL, config.instance()),
            ),
            Err(e) => return Err(kube_failure(&format!("Cannot remove the check's workloads from cluster {}", c.name), e)),
        }
    }
    Ok(())
}
