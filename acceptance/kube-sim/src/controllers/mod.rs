//! Simulated controllers: what a real cluster's controller manager, kubelet and cloud provider
//! would do, reduced to what clients observe.

pub mod deployments;
pub mod gc;
pub mod installer;
pub mod istiod;
pub mod jobs;
pub mod loadbalancer;
pub mod pods;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use crate::cluster::Cluster;
use crate::store::{Event, ResKey};

/// Annotation (on a Job, its pod template, or a Deployment) that makes the object fail; the value
/// is the reason, repeated in the pod log and conditions.
pub const FAIL_ANNOTATION: &str = "kube-sim.mesh.dev/fail";

pub fn key(group: &str, resource: &str) -> ResKey {
    ResKey::new(group, resource)
}

/// Start the controller loop of one cluster.
pub fn spawn(cluster: Arc<Cluster>) {
    let mut rx = cluster.store.subscribe_raw();
    tokio::spawn(async move {
        resync(&cluster);
        loop {
            tokio::select! {
                _ = cluster.shutdown.cancelled() => return,
                _ = cluster.settings_changed.notified() => resync(&cluster),
                ev = rx.recv() => match ev {
                    Ok(ev) => on_event(&cluster, &ev),
                    Err(broadcast::error::RecvError::Lagged(_)) => resync(&cluster),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
}

fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    gc::on_event(cluster, ev);
    tokens::on_event(cluster, ev);
    deployments::on_event(cluster, ev);
    pods::on_event(cluster, ev);
    istiod::on_event(cluster, ev);
    crate::dataplane::on_event(cluster, ev);
    jobs::on_event(cluster, ev);
    loadbalancer::on_event(cluster, ev);
}

/// Look at everything again (start, settings change, lagged event stream).
fn resync(cluster: &Arc<Cluster>) {
    gc::resync(cluster);
    tokens::resync(cluster);
    deployments::resync(cluster);
    jobs::resync(cluster);
    loadbalancer::resync(cluster);
    istiod::resync(cluster);
    crate::dataplane::issue_missing(cluster);
}

/// Run `f` after `delay_ms` (inline when 0). A pending action with the same key is not scheduled
/// twice.
pub fn schedule<F>(cluster: &Arc<Cluster>, dedup: String, delay_ms: u64, f: F)
where
    F: FnOnce(&Arc<Cluster>) + Send + 'static,
{
    if delay_ms == 0 {
        f(cluster);
        return;
    }
    {
        let mut pending = cluster.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !pending.insert(dedup.clone()) {
            return;
        }
    }
    let cluster = cluster.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = cluster.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
        }
        cluster
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&dedup);
        f(&cluster);
    });
}
