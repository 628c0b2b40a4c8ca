//! The east-west gateway as the provider's own objects (facts §4.2, §4.4, §4.5): what Istio's
//! `gateway` Helm chart renders with `networkGateway=<network>`, plus the `expose-services` and
//! `expose-istiod` Gateway/VirtualService CRs. Pure functions: a `GatewaySpec` in, typed objects
//! out.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    Sysctl,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::NETWORK_LABEL;

/// The gateway's default name (the seeds' `istio-eastwestgateway`).
pub const DEFAULT_NAME: &str = "istio-eastwestgateway";
/// Name of the Gateway exposing services (`expose-services.yaml`).
pub const CROSS_NETWORK_GATEWAY: &str = "cross-network-gateway";
/// Names of the Gateway and VirtualService exposing istiod (`expose-istiod.yaml`).
pub const ISTIOD_GATEWAY: &str = "istiod-gateway";
pub const ISTIOD_VIRTUAL_SERVICE: &str = "istiod-vs";
/// Pod label selecting the istiod revision that injects the gateway.
pub const REV_LABEL: &str = "istio.io/rev";

/// The Service ports of a network gateway (`networkGatewayPorts`): name, port.
pub const PORTS: [(&str, i32); 4] = [
    ("status-port", 15021),
    ("tls", 15443),
    ("tls-istiod", 15012),
    ("tls-webhook", 15017),
];

/// What one east-west gateway consists of.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewaySpec {
    pub name: String,
    pub namespace: String,
    pub network: String,
    pub revision: Option<String>,
    pub replicas: i32,
    /// `LoadBalancer`, `NodePort` or `ClusterIP`.
    pub service_type: String,
    pub service_annotations: BTreeMap<String, String>,
    pub expose_services: bool,
    pub expose_istiod: bool,
    /// Namespace of the istiod that `expose_istiod` routes to; `None`: the gateway's own.
    pub istiod_namespace: Option<String>,
    /// The provider's labels (managed-by, instance), put on every object.
    pub labels: BTreeMap<String, String>,
}

// ---------------------------------------------------------------------------------------------
// Istio's networking CRs as typed objects, so the generic cluster operations serve them.

macro_rules! istio_networking_kind {
    ($ty:ident, $kind:literal, $plural:literal) => {
        #[doc = concat!("`networking.istio.io/v1` ", $kind, " (spec kept as JSON).")]
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
        pub struct $ty {
            #[serde(rename = "apiVersion", default)]
            pub api_version: String,
            #[serde(default)]
            pub kind: String,
            #[serde(default)]
            pub metadata: ObjectMeta,
            #[serde(default)]
            pub spec: serde_json::Value,
        }

        impl $ty {
            pub fn new(metadata: ObjectMeta, spec: serde_json::Value) -> Self {
                Self {
                    api_version: <Self as k8s_openapi::Resource>::API_VERSION.into(),
                    kind: $kind.into(),
                    metadata,
                    spec,
                }
            }
        }

        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = "networking.istio.io/v1";
            const GROUP: &'static str = "networking.istio.io";
            const KIND: &'static str = $kind;
            const VERSION: &'static str = "v1";
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = k8s_openapi::NamespaceResourceScope;
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = concat!($kind, "List");
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;
            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

istio_networking_kind!(Gateway, "Gateway", "gateways");
istio_networking_kind!(VirtualService, "VirtualService", "virtualservices");

// ---------------------------------------------------------------------------------------------
// Names and labels

impl GatewaySpec {
    /// `istio: <name without "istio-">`, as the Helm chart derives it: `eastwestgateway` for the
    /// default name, which is what the expose-* Gateways select.
    pub fn istio_label(&self) -> &str {
        self.name.strip_prefix("istio-").unwrap_or(&self.name)
    }

    /// Pod selector labels: `app: <name>`, `istio: <name without istio->`.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app".to_string(), self.name.clone()),
            ("istio".to_string(), self.istio_label().to_string()),
        ])
    }

    /// Istio's fixed CR names for the default gateway; a suffix for any other, so two
    /// gateways in one namespace do not fight over them.
    fn cr_name(&self, base: &str) -> String {
        if self.name == DEFAULT_NAME {
            base.to_string()
        } else {
            format!("{base}-{}", self.istio_label())
        }
    }

    pub fn cross_network_gateway_name(&self) -> String {
        self.cr_name(CROSS_NETWORK_GATEWAY)
    }

    pub fn istiod_gateway_name(&self) -> String {
        self.cr_name(ISTIOD_GATEWAY)
    }

    pub fn istiod_virtual_service_name(&self) -> String {
        self.cr_name(ISTIOD_VIRTUAL_SERVICE)
    }

    /// Name of the istiod Service `expose_istiod` routes to: `istiod-<rev>` when revisioned.
    /// The gateway's `default` revision label selects the unrevisioned injector, whose
    /// Service is plain `istiod`.
    pub fn istiod_service(&self) -> String {
        match self.revision.as_deref() {
            Some(r) if !r.is_empty() && r != "default" => format!("istiod-{r}"),
            _ => "istiod".to_string(),
        }
    }

    /// Where istiod runs: `istiod_namespace`, else the gateway's namespace. Routing to the
    /// gateway's namespace when istiod is elsewhere would point at nothing.
    pub fn istiod_namespace(&self) -> &str {
        self.istiod_namespace.as_deref().unwrap_or(&self.namespace)
    }

    /// The istiod Service the VirtualService routes to, fully qualified.
    pub fn istiod_host(&self) -> String {
        format!(
            "{}.{}.svc.cluster.local",
            self.istiod_service(),
            self.istiod_namespace()
        )
    }

    fn meta(&self, name: &str, extra: &BTreeMap<String, String>) -> ObjectMeta {
        let mut labels = self.labels.clone();
        labels.extend(extra.clone());
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        }
    }

    /// Labels of the gateway's workload objects: selector labels and the network.
    fn workload_labels(&self) -> BTreeMap<String, String> {
        let mut l = self.selector();
        l.insert(NETWORK_LABEL.into(), self.network.clone());
        l
    }
}

// ---------------------------------------------------------------------------------------------
// Objects

pub fn service_account(s: &GatewaySpec) -> ServiceAccount {
    ServiceAccount {
        metadata: s.meta(&s.name, &s.selector()),
        ..Default::default()
    }
}

/// Role allowing the gateway to read secrets (SDS credentials).
pub fn role(s: &GatewaySpec) -> Role {
    Role {
        metadata: s.meta(&s.name, &s.selector()),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["get".into(), "watch".into(), "list".into()],
            ..Default::default()
        }]),
    }
}

pub fn role_binding(s: &GatewaySpec) -> RoleBinding {
    RoleBinding {
        metadata: s.meta(&s.name, &s.selector()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: s.name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: s.name.clone(),
            namespace: Some(s.namespace.clone()),
            ..Default::default()
        }]),
    }
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The gateway Deployment: Istio's gateway injection fills in the proxy (`image: auto`).
pub fn deployment(s: &GatewaySpec) -> Deployment {
    let mut pod_labels = s.workload_labels();
    pod_labels.insert("sidecar.istio.io/inject".into(), "true".into());
    pod_labels.insert("istio.io/dataplane-mode".into(), "none".into());
    if let Some(rev) = &s.revision {
        pod_labels.insert(REV_LABEL.into(), rev.clone());
    }
    let annotations = strings(&[
        ("inject.istio.io/templates", "gateway"),
        ("sidecar.istio.io/inject", "true"),
        ("prometheus.io/port", "15020"),
        ("prometheus.io/scrape", "true"),
        ("prometheus.io/path", "/stats/prometheus"),
    ]);
    let quantities = |cpu: &str, mem: &str| {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ])
    };
    let container = Container {
        name: "istio-proxy".into(),
        image: Some("auto".into()),
        env: Some(vec![EnvVar {
            name: "ISTIO_META_REQUESTED_NETWORK_VIEW".into(),
            value: Some(s.network.clone()),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("http-envoy-prom".into()),
            container_port: 15090,
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        // Canonical quantity spellings, so the API server stores exactly these.
        resources: Some(ResourceRequirements {
            requests: Some(quantities("100m", "128Mi")),
            limits: Some(quantities("2", "1Gi")),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Deployment {
        metadata: s.meta(&s.name, &s.workload_labels()),
        spec: Some(DeploymentSpec {
            replicas: Some(s.replicas),
            selector: LabelSelector {
                match_labels: Some(s.selector()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(s.name.clone()),
                    security_context: Some(PodSecurityContext {
                        sysctls: Some(vec![Sysctl {
                            name: "net.ipv4.ip_unprivileged_port_start".into(),
                            value: "0".into(),
                        }]),
                        ..Default::default()
                    }),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The gateway Service: labelled with the network (that is what makes istiod treat it as the
/// network's gateway), the four network-gateway ports.
pub fn service(s: &GatewaySpec) -> Service {
    let mut meta = s.meta(&s.name, &s.workload_labels());
    if !s.service_annotations.is_empty() {
        meta.annotations = Some(s.service_annotations.clone());
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(s.service_type.clone()),
            selector: Some(s.selector()),
            ports: Some(
                PORTS
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some(name.to_string()),
                        port: *port,
                        target_port: Some(IntOrString::Int(*port)),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A PodDisruptionBudget keeping one gateway pod up, when there is more than one.
pub fn pod_disruption_budget(s: &GatewaySpec) -> Option<PodDisruptionBudget> {
    (s.replicas > 1).then(|| PodDisruptionBudget {
        metadata: s.meta(&s.name, &s.selector()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(s.selector()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// `expose-services.yaml`: every `*.local` service through 15443, mTLS passed through.
pub fn cross_network_gateway(s: &GatewaySpec) -> Gateway {
    Gateway::new(
        s.meta(&s.cross_network_gateway_name(), &BTreeMap::new()),
        json!({
            "selector": {"istio": s.istio_label()},
            "servers": [{
                "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"},
                "hosts": ["*.local"],
            }],
        }),
    )
}

/// `expose-istiod.yaml`: istiod's XDS (15012) and webhook (15017) ports, passed through.
pub fn istiod_gateway(s: &GatewaySpec) -> Gateway {
    let server = |number: i32, name: &str| {
        json!({
            "port": {"name": name, "number": number, "protocol": "tls"},
            "tls": {"mode": "PASSTHROUGH"},
            "hosts": ["*"],
        })
    };
    Gateway::new(
        s.meta(&s.istiod_gateway_name(), &BTreeMap::new()),
        json!({
            "selector": {"istio": s.istio_label()},
            "servers": [server(15012, "tls-istiod"), server(15017, "tls-istiodwebhook")],
        }),
    )
}

/// `expose-istiod.yaml`: routes 15012 → istiod:15012 and 15017 → istiod:443.
pub fn istiod_virtual_service(s: &GatewaySpec) -> VirtualService {
    let host = s.istiod_host();
    let route = |port: i32, to: i32| {
        json!({
            "match": [{"port": port, "sniHosts": ["*"]}],
            "route": [{"destination": {"host": host, "port": {"number": to}}}],
        })
    };
    VirtualService::new(
        s.meta(&s.istiod_virtual_service_name(), &BTreeMap::new()),
        json!({
            "hosts": ["*"],
            "gateways": [s.istiod_gateway_name()],
            "tls": [route(15012, 15012), route(15017, 443)],
        }),
    )
}

/// The first address of a Service's load balancer (IP or hostname), then all of them;
/// `spec.externalIPs` when there is no load-balancer ingress (istiod accepts both).
pub fn service_addresses(svc: &Service) -> Vec<String> {
    let ingress = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|list| {
            list.iter()
                .filter_map(|i| {
                    i.ip.clone()
                        .filter(|s| !s.is_empty())
                        .or_else(|| i.hostname.clone().filter(|s| !s.is_empty()))
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if !ingress.is_empty() {
        return ingress;
    }
    svc.spec
        .as_ref()
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default()
}

/// Whether every field of `want` is in `live` with the same value: extra fields in `live`
/// (server defaults, status, other managers' labels) do not count as drift. Empty maps and
/// lists in `want` match absent ones (the API server drops them).
pub fn is_subset(want: &serde_json::Value, live: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (want, live) {
        (J::Object(w), J::Object(l)) => w.iter().all(|(k, wv)| match l.get(k) {
            Some(lv) => is_subset(wv, lv),
            None => is_empty(wv),
        }),
        (J::Object(w), J::Null) => w.values().all(is_empty),
        (J::Array(w), J::Array(l)) => {
            w.len() == l.len() && w.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (J::Array(w), J::Null) => w.is_empty(),
        (J::Number(a), J::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn is_empty(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.values().all(is_empty),
        serde_json::Value::Array(a) => a.is_empty(),
        serde_json::Value::Null => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value as J;

    fn spec() -> GatewaySpec {
        GatewaySpec {
            name: DEFAULT_NAME.into(),
            namespace: "istio-system".into(),
            network: "network1".into(),
            revision: None,
            replicas: 1,
            service_type: "LoadBalancer".into(),
            service_annotations: BTreeMap::new(),
            expose_services: true,
            expose_istiod: false,
            istiod_namespace: None,
            labels: strings(&[("app.kubernetes.io/managed-by", "terraform-provider-mesh")]),
        }
    }

    fn js<T: Serialize>(o: &T) -> J {
        serde_json::to_value(o).unwrap()
    }

    #[test]
    fn names_and_selector_labels_follow_the_helm_chart() {
        let s = spec();
        assert_eq!(s.istio_label(), "eastwestgateway");
        assert_eq!(s.cross_network_gateway_name(), "cross-network-gateway");
        assert_eq!(s.istiod_gateway_name(), "istiod-gateway");
        assert_eq!(s.istiod_virtual_service_name(), "istiod-vs");
        let other = GatewaySpec {
            name: "istio-eastwestgateway-b".into(),
            ..spec()
        };
        assert_eq!(other.istio_label(), "eastwestgateway-b");
        assert_eq!(
            other.cross_network_gateway_name(),
            "cross-network-gateway-eastwestgateway-b"
        );
    }

    #[test]
    fn service_account_and_rbac_read_secrets() {
        let s = spec();
        let sa = js(&service_account(&s));
        assert_eq!(sa["metadata"]["name"], "istio-eastwestgateway");
        assert_eq!(sa["metadata"]["namespace"], "istio-system");
        assert_eq!(
            sa["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "terraform-provider-mesh"
        );
        let r = js(&role(&s));
        assert_eq!(
            r["rules"],
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch", "list"]}])
        );
        let b = js(&role_binding(&s));
        assert_eq!(
            b["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "istio-eastwestgateway"})
        );
        assert_eq!(
            b["subjects"],
            json!([{"kind": "ServiceAccount", "name": "istio-eastwestgateway", "namespace": "istio-system"}])
        );
    }

    #[test]
    fn deployment_relies_on_gateway_injection() {
        let s = spec();
        let d = js(&deployment(&s));
        assert_eq!(d["apiVersion"], "apps/v1");
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            json!({"app": "istio-eastwestgateway", "istio": "eastwestgateway"})
        );
        let t = &d["spec"]["template"];
        assert_eq!(
            t["metadata"]["labels"],
            json!({
                "app": "istio-eastwestgateway",
                "istio": "eastwestgateway",
                "topology.istio.io/network": "network1",
                "sidecar.istio.io/inject": "true",
                "istio.io/dataplane-mode": "none",
            })
        );
        assert_eq!(
            t["metadata"]["annotations"]["inject.istio.io/templates"],
            "gateway"
        );
        assert_eq!(
            t["metadata"]["annotations"]["sidecar.istio.io/inject"],
            "true"
        );
        assert_eq!(t["metadata"]["annotations"]["prometheus.io/port"], "15020");
        let pod = &t["spec"];
        assert_eq!(pod["serviceAccountName"], "istio-eastwestgateway");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        assert_eq!(
            pod["securityContext"]["sysctls"],
            json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
        );
        let c = &pod["containers"][0];
        assert_eq!(c["name"], "istio-proxy");
        assert_eq!(c["image"], "auto");
        assert_eq!(
            c["env"],
            json!([{"name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": "network1"}])
        );
        assert_eq!(
            c["ports"],
            json!([{"name": "http-envoy-prom", "containerPort": 15090, "protocol": "TCP"}])
        );
        assert_eq!(
            c["securityContext"],
            json!({
                "allowPrivilegeEscalation": false,
                "privileged": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "capabilities": {"drop": ["ALL"]},
            })
        );
        assert_eq!(
            c["resources"],
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}})
        );
        assert!(t["metadata"]["labels"].get(REV_LABEL).is_none());

        let rev = js(&deployment(&GatewaySpec {
            revision: Some("1-30".into()),
            replicas: 3,
            ..spec()
        }));
        assert_eq!(
            rev["spec"]["template"]["metadata"]["labels"][REV_LABEL],
            "1-30"
        );
        assert_eq!(rev["spec"]["replicas"], 3);
    }

    #[test]
    fn service_is_the_networks_gateway() {
        let mut s = spec();
        let svc = js(&service(&s));
        assert_eq!(
            svc["metadata"]["labels"]["topology.istio.io/network"],
            "network1"
        );
        assert!(svc["metadata"].get("annotations").is_none());
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        assert_eq!(
            svc["spec"]["selector"],
            json!({"app": "istio-eastwestgateway", "istio": "eastwestgateway"})
        );
        let ports: Vec<(String, i64, i64)> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["protocol"], "TCP");
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["port"].as_i64().unwrap(),
                    p["targetPort"].as_i64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("status-port".into(), 15021, 15021),
                ("tls".into(), 15443, 15443),
                ("tls-istiod".into(), 15012, 15012),
                ("tls-webhook".into(), 15017, 15017)
            ]
        );
        s.service_type = "NodePort".into();
        s.service_annotations =
            strings(&[("service.beta.kubernetes.io/aws-load-balancer-type", "nlb")]);
        let svc = js(&service(&s));
        assert_eq!(svc["spec"]["type"], "NodePort");
        assert_eq!(
            svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-type"],
            "nlb"
        );
    }

    #[test]
    fn pdb_only_with_more_than_one_replica() {
        assert!(pod_disruption_budget(&spec()).is_none());
        let pdb = js(&pod_disruption_budget(&GatewaySpec {
            replicas: 2,
            ..spec()
        })
        .unwrap());
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        assert_eq!(
            pdb["spec"]["selector"]["matchLabels"]["istio"],
            "eastwestgateway"
        );
    }

    #[test]
    fn expose_services_gateway_matches_the_sample() {
        let g = js(&cross_network_gateway(&spec()));
        assert_eq!(g["apiVersion"], "networking.istio.io/v1");
        assert_eq!(g["kind"], "Gateway");
        assert_eq!(g["metadata"]["name"], "cross-network-gateway");
        assert_eq!(g["metadata"]["namespace"], "istio-system");
        assert_eq!(
            g["spec"],
            json!({
                "selector": {"istio": "eastwestgateway"},
                "servers": [{
                    "port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                    "tls": {"mode": "AUTO_PASSTHROUGH"},
                    "hosts": ["*.local"],
                }],
            })
        );
    }

    #[test]
    fn expose_istiod_objects_match_the_sample() {
        let g = js(&istiod_gateway(&spec()));
        assert_eq!(g["metadata"]["name"], "istiod-gateway");
        assert_eq!(g["spec"]["selector"], json!({"istio": "eastwestgateway"}));
        let servers = g["spec"]["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 2);
        for (srv, (num, name)) in servers
            .iter()
            .zip([(15012, "tls-istiod"), (15017, "tls-istiodwebhook")])
        {
            assert_eq!(
                srv["port"],
                json!({"name": name, "number": num, "protocol": "tls"})
            );
            assert_eq!(srv["tls"], json!({"mode": "PASSTHROUGH"}));
            assert_eq!(srv["hosts"], json!(["*"]));
        }
        let vs = js(&istiod_virtual_service(&spec()));
        assert_eq!(vs["kind"], "VirtualService");
        assert_eq!(vs["metadata"]["name"], "istiod-vs");
        assert_eq!(vs["spec"]["hosts"], json!(["*"]));
        assert_eq!(vs["spec"]["gateways"], json!(["istiod-gateway"]));
        let tls = vs["spec"]["tls"].as_array().unwrap();
        assert_eq!(tls[0]["match"], json!([{"port": 15012, "sniHosts": ["*"]}]));
        assert_eq!(
            tls[0]["route"],
            json!([{"destination": {"host": "istiod.istio-system.svc.cluster.local", "port": {"number": 15012}}}])
        );
        assert_eq!(tls[1]["match"], json!([{"port": 15017, "sniHosts": ["*"]}]));
        assert_eq!(tls[1]["route"][0]["destination"]["port"]["number"], 443);
        let rev = GatewaySpec {
            revision: Some("canary".into()),
            ..spec()
        };
        assert_eq!(
            rev.istiod_host(),
            "istiod-canary.istio-system.svc.cluster.local"
        );
        // A gateway outside istiod's namespace routes to istiod's namespace, not its own.
        let apart = GatewaySpec {
            namespace: "istio-gateways".into(),
            istiod_namespace: Some("istio-system".into()),
            ..spec()
        };
        let vs = js(&istiod_virtual_service(&apart));
        assert_eq!(vs["metadata"]["namespace"], "istio-gateways");
        assert_eq!(
            vs["spec"]["tls"][1]["route"][0]["destination"]["host"],
            "istiod.istio-system.svc.cluster.local"
        );
        let default_rev = GatewaySpec {
            revision: Some("default".into()),
            ..spec()
        };
        assert_eq!(
            default_rev.istiod_host(),
            "istiod.istio-system.svc.cluster.local"
        );
    }

    #[test]
    fn addresses_prefer_ingress_then_external_ips() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"externalIPs": ["10.0.0.9"]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "a.elb"}, {"ip": "1.2.3.4"}]}},
        }))
        .unwrap();
        assert_eq!(service_addresses(&svc), ["a.elb", "1.2.3.4"]);
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"externalIPs": ["10.0.0.9"]},
            "status": {"loadBalancer": {}},
        }))
        .unwrap();
        assert_eq!(service_addresses(&svc), ["10.0.0.9"]);
    }

    #[test]
    fn subset_ignores_defaults_but_not_edits() {
        let want = js(&service(&spec()));
        let mut live = want.clone();
        live["spec"]["ports"][0]["nodePort"] = json!(31000);
        live["spec"]["clusterIP"] = json!("10.96.0.10");
        live["metadata"]["labels"]["other"] = json!("x");
        assert!(is_subset(&want, &live));
        live["metadata"]["labels"]["topology.istio.io/network"] = json!("wrong");
        assert!(!is_subset(&want, &live));
        assert!(is_subset(&json!({"a": {}, "b": []}), &json!({})));
        assert!(!is_subset(&json!({"a": [1]}), &json!({"a": [1, 2]})));
    }

    #[test]
    fn istio_crs_are_typed_resources() {
        use kube::Resource;
        assert_eq!(Gateway::kind(&()), "Gateway");
        assert_eq!(Gateway::plural(&()), "gateways");
        assert_eq!(VirtualService::api_version(&()), "networking.istio.io/v1");
        let g: Gateway = serde_json::from_value(js(&cross_network_gateway(&spec()))).unwrap();
        assert_eq!(g, cross_network_gateway(&spec()));
    }
}
