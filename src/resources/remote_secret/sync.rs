//! Waiting until the target's istiod reads the remote (`wait_for_sync`), the diagnosis when it
//! does not, and `sync_status` on refresh.

use super::*;

// ---------------------------------------------------------------------------------------------
// Waiting for istiod to read the remote

/// The remote side of a written secret, for the sync wait and its diagnosis.
pub(super) struct Remote<'a> {
    pub cluster: &'a Cluster,
    pub cluster_name: &'a str,
    pub server: &'a str,
    pub token: &'a rs::Token,
}

/// How often istiod is asked again while the remote is not synced yet.
const SYNC_POLL: Duration = Duration::from_millis(500);

/// Waits until every Ready istiod in the target's `namespace` reports the remote `synced`
/// (`Ok(Some(Synced))`). No istiod at all: a warning and `Ok(None)`, never a hang. Not synced
/// by the deadline: an error naming every replica's last status and the likely cause.
/// `listed`: istiod's pods when already listed (while the secret was written), for the first
/// check; later checks list them again.
pub(super) async fn wait_for_sync(
    ctx: &Ctx,
    target: &Cluster,
    namespace: &str,
    remote: &Remote<'_>,
    mut listed: Option<Vec<istiod::IstiodPod>>,
    deadline: &Deadline,
) -> Result<Option<istiod::Sync>, Failure> {
    // Leave time for the diagnosis (a TokenReview in the remote) after the wait.
    let total = deadline.until.saturating_duration_since(deadline.started);
    let wait = Deadline {
        started: deadline.started,
        until: deadline.until - (total / 10).min(Duration::from_secs(10)),
        cancel: deadline.cancel.clone(),
    };
    let started = Instant::now();
    let mut last: Vec<istiod::PodView> = Vec::new();
    let mut polls = 0u32;
    loop {
        let views = match listed.take() {
            Some(pods) => Ok(istiod::ask(target, namespace, pods, &wait).await),
            None => istiod::views(target, namespace, None, &wait).await,
        };
        let views = match views {
            Ok(v) => v,
            Err(KubeError::Timeout { .. }) => break,
            Err(e) => return Err(kube_failure(e)),
        };
        if views.is_empty() {
            ctx.warn(Some(at(&["wait_for_sync"])), "No istiod in the target cluster: not waiting for sync", &format!("cluster {}: no istiod pod (label app=istiod) runs in namespace {namespace:?}, so nothing reads the secret yet and the provider did not wait for istiod to sync cluster {:?}. This is expected when the control plane is installed outside Terraform or later; check afterwards with the mesh_status data source or `istioctl remote-clusters`.", target.name, remote.cluster_name));
            return Ok(None);
        }
        let ready: Vec<&istiod::PodView> = views.iter().filter(|v| v.pod.ready).collect();
        let synced = !ready.is_empty()
            && ready
                .iter()
                .all(|v| v.status_of(remote.cluster_name) == Some(istiod::Sync::Synced));
        polls += 1;
        // A replica that could not be asked this time (e.g. the read ran into the deadline)
        // keeps the status it last reported: that is what the diagnosis needs.
        last = views
            .into_iter()
            .map(
                |v| match (&v.clusters, last.iter().find(|o| o.pod.name == v.pod.name)) {
                    (Err(_), Some(old)) if old.clusters.is_ok() => old.clone(),
                    _ => v,
                },
            )
            .collect();
        if synced {
            crate::timing::wait(
                "istiod_sync",
                remote.cluster_name,
                started.elapsed(),
                Some(polls),
            );
            tracing::info!(
                cluster = %target.name,
                remote = remote.cluster_name,
                waited_ms = started.elapsed().as_millis() as u64,
                polls,
                "istiod reports the remote cluster synced"
            );
            return Ok(Some(istiod::Sync::Synced));
        }
        // No new poll that could not finish before the deadline.
        if wait.remaining() < SYNC_POLL * 2 {
            break;
        }
        let pause = SYNC_POLL;
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = deadline.cancel.cancelled() => {
                return Err(kube_failure(KubeError::Cancelled {
                    cluster: target.name.clone(),
                    action: format!("waiting for istiod to sync remote cluster {:?}", remote.cluster_name),
                }));
            }
        }
    }
    Err(not_synced(
        target,
        namespace,
        remote,
        &last,
        started.elapsed(),
        deadline,
    )
    .await)
}

/// The error when istiod did not sync the remote: every replica's last word, what it means,
/// and the cause the provider can see from here.
async fn not_synced(
    target: &Cluster,
    namespace: &str,
    remote: &Remote<'_>,
    views: &[istiod::PodView],
    waited: Duration,
    deadline: &Deadline,
) -> Failure {
    let mut lines = Vec::new();
    let mut statuses = Vec::new();
    for v in views {
        match (&v.clusters, v.status_of(remote.cluster_name)) {
            (_, Some(s)) => {
                statuses.push(s);
                lines.push(format!(
                    "  - {}: {} — {}",
                    v.pod.name,
                    s.as_str(),
                    s.meaning()
                ));
            }
            (Err(e), _) => lines.push(format!("  - {}: not asked ({e})", v.pod.name)),
            (Ok(_), None) => {}
        }
    }
    if lines.is_empty() {
        lines.push("  - no istiod pod answered".into());
    }
    let mut causes = Vec::new();
    if rs::is_loopback_server(remote.server) {
        causes.push(format!("The server {} is a loopback address: inside the target cluster it is istiod's own pod, not the remote API server. Set remote.server to an address the target's pods can reach (for kind: https://<control-plane node IP>:6443).", remote.server));
    } else if rs::is_private_server(remote.server) {
        causes.push(format!("The server {} is a private address: the target's pods reach it only if the two clusters share a network (peering, VPN) and firewalls allow it.", remote.server));
    }
    // The reader token, presented to the remote API server from here.
    let check = Deadline::new(
        deadline.remaining().max(Duration::from_secs(5)),
        deadline.cancel.clone(),
    );
    match token_authenticates(remote.cluster, remote.token, &check).await {
        Ok(Some(false)) => causes.push("The remote API server rejects the reader token (TokenReview says it does not authenticate): it was revoked or its ServiceAccount deleted. Change token_rotation, or set verify_token = true so refresh mints a new one.".to_string()),
        Ok(Some(true)) if statuses.iter().any(|s| *s != istiod::Sync::Synced && *s != istiod::Sync::NotSeen) => causes.push(format!("The reader token authenticates when the provider presents it to cluster {}, so the target most likely cannot reach {} (DNS, firewall, private endpoint) or does not trust its certificate (CA, remote.tls_server_name).", remote.cluster.name, remote.server)),
        Ok(_) => {}
        Err(e) => causes.push(format!("The reader token could not be checked against the remote: {e}")),
    }
    if statuses.contains(&istiod::Sync::NotSeen) {
        causes.push(format!("istiod does not list cluster {:?} at all: check that the secret is in istiod's namespace ({namespace}) and that remote.cluster_name equals the remote's clusterName (istiod's CLUSTER_ID there).", remote.cluster_name));
    }
    error(
        "istiod did not sync the remote cluster",
        format!(
            "cluster {}: after {:.0}s, istiod in namespace {namespace} does not report remote cluster {:?} (secret {}, server {}) as synced. Last status per istiod pod:\n{}\n\n{}\n\nThe secret is written; the next apply waits again. Set wait_for_sync = false to apply without waiting.",
            target.name,
            waited.as_secs_f64(),
            remote.cluster_name,
            rs::secret_name(remote.cluster_name),
            remote.server,
            lines.join("\n"),
            if causes.is_empty() { "No cause is visible from where Terraform runs: look at istiod's log in the target (kubectl logs deploy/istiod) for the remote cluster.".to_string() } else { causes.join("\n") },
        ),
    )
}

/// How long one answer of istiod serves the refresh of other remote secrets in its cluster.
const SYNC_VIEW_MAX_AGE: Duration = Duration::from_secs(2);

/// The remote's sync status as the target's istiod reports it now (null: no istiod). When
/// istiod cannot be asked, a warning, and the status reads `unknown`.
pub(super) async fn observe_sync(
    ctx: &Ctx,
    target: &Cluster,
    namespace: &str,
    cluster_name: &str,
    deadline: &Deadline,
) -> Value {
    let patience = remote_patience(deadline);
    match istiod::views_shared(target, namespace, SYNC_VIEW_MAX_AGE, &patience).await {
        Ok(views) if views.is_empty() => Value::Null,
        Ok(views) => {
            let statuses: Vec<istiod::Sync> = views
                .iter()
                .filter(|v| v.pod.ready)
                .filter_map(|v| v.status_of(cluster_name))
                .collect();
            match statuses.iter().max() {
                Some(worst) => Value::from(worst.as_str()),
                None => {
                    ctx.warn(
                        Some(at(&["sync_status"])),
                        "istiod could not be asked",
                        &format!(
                            "cluster {}: no Ready istiod pod in namespace {namespace} answered: {}",
                            target.name,
                            views
                                .iter()
                                .map(|v| format!(
                                    "{}: {}",
                                    v.pod.name,
                                    v.clusters.as_ref().err().map_or("answered", String::as_str)
                                ))
                                .collect::<Vec<_>>()
                                .join("; ")
                        ),
                    );
                    Value::from("unknown")
                }
            }
        }
        Err(e) => {
            ctx.warn(
                Some(at(&["sync_status"])),
                "istiod could not be asked",
                &format!(
                    "The sync status of remote cluster {cluster_name:?} was not refreshed: {e}"
                ),
            );
            Value::from("unknown")
        }
    }
}
