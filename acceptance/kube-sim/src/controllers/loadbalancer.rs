//! The cloud load-balancer controller: LoadBalancer Services get an ingress IP or hostname.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::{key, schedule};
use crate::cluster::{Cluster, LbMode};
use crate::object;
use crate::store::{Event, EventKind};

/// Addresses are unique per process (documentation ranges, never routed).
static NEXT_IP: AtomicU32 = AtomicU32::new(0);

fn next_ip() -> String {
    let n = NEXT_IP.fetch_add(1, Ordering::Relaxed);
    let (net, host) = match n / 254 {
        0 => ("203.0.113", n % 254 + 1),
        1 => ("198.51.100", n % 254 + 1),
        k => return format!("192.0.2.{}", (k * 254 + n % 254) % 254 + 1),
    };
    format!("{net}.{host}")
}

fn is_lb(s: &Value) -> bool {
    s.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
}

fn has_ingress(s: &Value) -> bool {
    s.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
}

pub fn on_event(cluster: &Arc<Cluster>, ev: &Event) {
    if ev.res != key("", "services") || ev.kind == EventKind::Deleted {
        return;
    }
    check(cluster, &ev.obj);
}

pub fn resync(cluster: &Arc<Cluster>) {
    for s in cluster.store.list(&key("", "services"), None).0 {
        check(cluster, &s);
    }
}

/// The service controller's finalizer: a LoadBalancer Service is only removed once its cloud
/// load balancer was released.
pub const CLEANUP_FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";

fn has_finalizer(s: &Value) -> bool {
    object::finalizers(s).iter().any(|f| f == CLEANUP_FINALIZER)
}

fn check(cluster: &Arc<Cluster>, svc: &Value) {
    let settings = cluster.settings().loadbalancer;
    let (ns, name) = (
        object::namespace(svc).to_string(),
        object::name(svc).to_string(),
    );
    if !settings.enabled {
        return;
    }
    if has_finalizer(svc) && (object::is_deleting(svc) || !is_lb(svc)) {
        // Release the load balancer (after the delay), then let the Service go.
        schedule(
            cluster,
            format!("lb-release/{ns}/{name}"),
            settings.delay_ms,
            move |c| release(c, &ns, &name),
        );
        return;
    }
    if !is_lb(svc) && has_ingress(svc) {
        cluster.update_internal(&key("", "services"), &ns, &name, |s| {
            s["status"] = json!({"loadBalancer": {}})
        });
        return;
    }
    if !is_lb(svc) || has_ingress(svc) || object::is_deleting(svc) {
        return;
    }
    schedule(
        cluster,
        format!("lb/{ns}/{name}"),
        settings.delay_ms,
        move |c| assign(c, &ns, &name),
    );
}

fn assign(cluster: &Arc<Cluster>, ns: &str, name: &str) {
    let Some(svc) = cluster.store.get(&key("", "services"), ns, name) else {
        return;
    };
    if !is_lb(&svc) || has_ingress(&svc) || object::is_deleting(&svc) {
        return;
    }
    let ingress = match cluster.settings().loadbalancer.mode {
        LbMode::Ip => json!({"ip": next_ip(), "ipMode": "VIP"}),
        LbMode::Hostname => {
            json!({"hostname": format!("{name}-{ns}.{}.lb.kube-sim.invalid", cluster.name)})
        }
    };
    cluster.update_internal(&key("", "services"), ns, name, |s| {
        s["status"] = json!({"loadBalancer": {"ingress": [ingress]}});
        if !has_finalizer(s) {
            let m = object::meta_mut(s);
            let list = m.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(a) = list.as_array_mut() {
                a.push(json!(CLEANUP_FINALIZER));
            }
        }
    });
}

fn release(cluster: &Arc<Cluster>, ns: &str, name: &str) {
    cluster.update_internal(&key("", "services"), ns, name, |s| {
        if let Some(a) = s
            .get_mut("metadata")
            .and_then(|m| m.get_mut("finalizers"))
            .and_then(Value::as_array_mut)
        {
            a.retain(|f| f.as_str() != Some(CLEANUP_FINALIZER));
        }
        s["status"] = json!({"loadBalancer": {}});
    });
}
