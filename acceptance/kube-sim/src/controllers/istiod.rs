//! Background side of the simulated istiod: remember when remote-secret content appears, and
//! let each istiod pod complete its initial syncs when they become possible, as the real one
//! does without being asked (see [`crate::istiod`]).

use std::sync::Arc;

use serde_json::Value;

use super::{key, schedule};
use crate::cluster::Cluster;
use crate::istiod;
use crate::object;
use crate::store::{Event, EventKind};

fn is_istiod_pod(pod: &Value) -> bool {
    istiod::identify(pod).is_some()
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    let secret = ev.res == key("", "secrets");
    if secret && object::name(&ev.obj) == istiod::ca::CACERTS {
        let ns = object::namespace(&ev.obj).to_string();
        istiod::ca::on_cacerts_change(cluster, &istiod::ca::istiods_in(cluster, &ns));
        return;
    }
    if ev.res == key("", "pods") {
        if let Some(i) = istiod::identify(&ev.obj) {
            if ev.kind == EventKind::Deleted {
                let mut st = cluster.istiod.lock().unwrap_or_else(|e| e.into_inner());
                st.ca.remove(&i.uid);
                st.rejected.remove(&i.uid);
            } else {
                istiod::ca::on_start(cluster, &i);
            }
        }
    }
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
    for p in cluster.store.list(&key("", "pods"), None).0 {
        if let Some(i) = istiod::identify(&p) {
            istiod::ca::on_start(cluster, &i);
        }
    }
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
