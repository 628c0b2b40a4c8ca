//! Network gateways as istiod's kube registry derives them from Services
//! (`pilot/pkg/serviceregistry/kube/controller/network.go`): a Service labelled
//! `topology.istio.io/network` is a gateway of that network on each of its external addresses,
//! port 15443 (or the `networking.istio.io/gatewayPort` label) if the Service has it, HBONE port
//! 15008 if it has that; neither port means no gateway.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::Value;

use crate::store::{ResKey, Store};

pub const NETWORK_LABEL: &str = "topology.istio.io/network";
pub const GATEWAY_PORT_LABEL: &str = "networking.istio.io/gatewayPort";
const DEFAULT_GATEWAY_PORT: u32 = 15443;
const DEFAULT_HBONE_PORT: u32 = 15008;

/// `types.NamespacedName` as Go encodes it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
#[allow(non_snake_case)]
pub struct NamespacedName {
    pub Namespace: String,
    pub Name: String,
}

/// `model.NetworkGateway`: Go field names, no JSON tags.
#[derive(Serialize, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[allow(non_snake_case)]
pub struct NetworkGateway {
    pub Network: String,
    pub Cluster: String,
    pub Addr: String,
    pub Port: u32,
    pub HBONEPort: u32,
    pub ServiceAccount: NamespacedName,
}

fn labels(svc: &Value) -> Option<&serde_json::Map<String, Value>> {
    crate::object::labels(svc)
}

/// The addresses istiod reads as the Service's cluster-external ones: load balancer ingress
/// (IP, else hostname) and `spec.externalIPs`.
fn external_addresses(svc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer") {
        for ing in svc
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ip = ing
                .get("ip")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let host = ing
                .get("hostname")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            if let Some(a) = ip.or(host) {
                out.push(a.to_string());
            }
        }
    }
    for ip in svc
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push(ip.to_string());
    }
    out
}

/// The gateways one Service makes, in cluster `cluster_id`. Hostname addresses are left out:
/// istiod resolves them through DNS, and kube-sim's load balancer hostnames
/// (`*.lb.kube-sim.invalid`) never resolve.
pub fn gateways_of_service(svc: &Value, cluster_id: &str) -> Vec<NetworkGateway> {
    let Some(network) = labels(svc)
        .and_then(|l| l.get(NETWORK_LABEL))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return Vec::new();
    };
    let gw_port = labels(svc)
        .and_then(|l| l.get(GATEWAY_PORT_LABEL))
        .and_then(Value::as_str)
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or(DEFAULT_GATEWAY_PORT);
    let has_port = |p: u32| {
        svc.pointer("/spec/ports")
            .and_then(Value::as_array)
            .is_some_and(|ps| {
                ps.iter()
                    .any(|x| x.get("port").and_then(Value::as_u64) == Some(u64::from(p)))
            })
    };
    let (mtls, hbone) = (has_port(gw_port), has_port(DEFAULT_HBONE_PORT));
    if !mtls && !hbone {
        return Vec::new();
    }
    external_addresses(svc)
        .into_iter()
        .filter(|a| a.parse::<IpAddr>().is_ok())
        .map(|addr| NetworkGateway {
            Network: network.to_string(),
            Cluster: cluster_id.to_string(),
            Addr: addr,
            Port: if mtls { gw_port } else { 0 },
            HBONEPort: if hbone { DEFAULT_HBONE_PORT } else { 0 },
            ServiceAccount: NamespacedName::default(),
        })
        .collect()
}

/// All gateways of one cluster's Services.
pub fn gateways_in(store: &Store, cluster_id: &str) -> Vec<NetworkGateway> {
    store
        .list(&ResKey::new("", "services"), None)
        .0
        .iter()
        .flat_map(|s| gateways_of_service(s, cluster_id))
        .collect()
}

/// De-duplicated and sorted by address, then port (`model.SortGateways`).
pub fn sorted(mut gws: Vec<NetworkGateway>) -> Vec<NetworkGateway> {
    gws.sort_by(|a, b| {
        (a.Addr.as_str(), a.Port)
            .cmp(&(b.Addr.as_str(), b.Port))
            .then(a.cmp(b))
    });
    gws.dedup();
    gws
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(labels: Value, ports: &[u64], ingress: Value) -> Value {
        let ports: Vec<Value> = ports.iter().map(|p| json!({"port": p})).collect();
        json!({"metadata": {"name": "eastwest", "namespace": "istio-system", "labels": labels},
            "spec": {"type": "LoadBalancer", "ports": ports},
            "status": {"loadBalancer": {"ingress": ingress}}})
    }

    #[test]
    fn labelled_services_with_an_address_are_gateways() {
        let s = svc(
            json!({NETWORK_LABEL: "net1"}),
            &[15021, 15443],
            json!([{"ip": "203.0.113.7"}]),
        );
        let g = gateways_of_service(&s, "c1");
        assert_eq!(g.len(), 1);
        assert_eq!(
            serde_json::to_value(&g[0]).unwrap(),
            json!({"Network": "net1", "Cluster": "c1", "Addr": "203.0.113.7", "Port": 15443,
                "HBONEPort": 0, "ServiceAccount": {"Namespace": "", "Name": ""}})
        );
        // Custom port label, and HBONE.
        let s = svc(
            json!({NETWORK_LABEL: "net1", GATEWAY_PORT_LABEL: "16443"}),
            &[16443, 15008],
            json!([{"ip": "203.0.113.7"}]),
        );
        let g = gateways_of_service(&s, "c1");
        assert_eq!((g[0].Port, g[0].HBONEPort), (16443, 15008));
    }

    #[test]
    fn no_label_no_port_or_no_address_means_no_gateway() {
        let ing = json!([{"ip": "203.0.113.7"}]);
        assert!(gateways_of_service(&svc(json!({}), &[15443], ing.clone()), "c").is_empty());
        assert!(gateways_of_service(&svc(json!({NETWORK_LABEL: "n"}), &[80], ing), "c").is_empty());
        assert!(
            gateways_of_service(&svc(json!({NETWORK_LABEL: "n"}), &[15443], json!([])), "c")
                .is_empty()
        );
        let host = json!([{"hostname": "eastwest-istio-system.c.lb.kube-sim.invalid"}]);
        assert!(
            gateways_of_service(&svc(json!({NETWORK_LABEL: "n"}), &[15443], host), "c").is_empty()
        );
    }
}
