//! Background side of the simulated istiod: remember when remote-secret content appears, and
//! let each istiod pod complete its initial syncs when they become possible, as the real one
//! does without being asked (see [`crate::istiod`]).

use std::sync::Arc;

use serde_json::Value;

use super::{key, schedule};
use crate::cluster::Cluster;
use crate::istiod;
use crate::store::{Event, EventKind};

fn is_istiod_pod(pod: &Value) -> bool {
    istiod::identify(pod).is_some()
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    let secret = ev.res == key("", "secrets");
    if secret {
        let was_remote = ev
            .old
            .as_deref()
            .is_some_and(istiod::remotes::is_remote_secret);
        if !was_remote && !istiod::remotes::is_remote_secret(&ev.obj) {
            return;
        }
        istiod::note_secret(cluster, &ev.obj, ev.kind == EventKind::Deleted);
    } else if ev.res != key("", "pods") || ev.kind == EventKind::Deleted || !is_istiod_pod(&ev.obj)
    {
        return;
    }
    evaluate_later(cluster);
}

pub fn resync(cluster: &Arc<Cluster>) {
    for s in cluster.store.list(&key("", "secrets"), None).0 {
        if istiod::remotes::is_remote_secret(&s) {
            istiod::note_secret(cluster, &s, false);
        }
    }
    evaluate_later(cluster);
}

/// Once the configured sync time has passed, record the syncs that completed.
fn evaluate_later(cluster: &Arc<Cluster>) {
    let delay = cluster.settings().istiod.remote_sync_delay_ms;
    schedule(cluster, "istiod/evaluate".into(), delay + 1, |c| {
        istiod::evaluate_all(c)
    });
}
