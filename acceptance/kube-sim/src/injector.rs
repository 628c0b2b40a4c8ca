//! Istio's sidecar injector, as the API server's mutating admission reaches it on pod CREATE:
//!
//! 1. The API server calls every webhook of every MutatingWebhookConfiguration (in name order)
//!    whose rules cover `CREATE pods` and whose `namespaceSelector` / `objectSelector` select
//!    the pod's namespace labels and the pod's labels. Only webhooks served on an `/inject` path
//!    (Istio's injector) are simulated; the first such call injects, later ones find the
//!    `sidecar.istio.io/status` annotation and leave the pod alone, as istiod does.
//! 2. istiod's `injectRequired` (`pkg/kube/inject/inject.go`): no injection for `hostNetwork`
//!    pods, in `kube-system`/`kube-public`, or when the `sidecar.istio.io/inject` label (or,
//!    without the label, annotation) is `"false"`; with policy `disabled` only an explicit
//!    `"true"` injects.
//! 3. The `sidecar` template of `injection-template.yaml` (1.30), reduced to what clients
//!    observe: `istio-init` plus `istio-proxy` either as a native sidecar (an init container with
//!    `restartPolicy: Always`) or as the last container, the `sidecar.istio.io/status`,
//!    `istio.io/rev` and `kubectl.kubernetes.io/default-container` annotations and the
//!    `security.istio.io/tlsMode` / canonical-service labels. Native sidecars follow
//!    `ENABLE_NATIVE_SIDECARS` of the injecting istiod (default `auto`: on when every node's
//!    kubelet is 1.33 or newer), overridden by the pod's `sidecar.istio.io/nativeSidecar`.
//!
//! Values come from the injector ConfigMap `istio-sidecar-injector[-<rev>]` next to the
//! webhook's service (hub, tag, network, cluster name, mesh ID, revision); the path
//! `/inject/cluster/<c>/net/<n>` overrides cluster and network as istiod's `parseInjectEnvs`
//! does. Without the ConfigMap (a remote cluster's webhook served elsewhere) the proxy image is
//! `auto`.
//!
//! Not simulated: the webhook's availability (the API server would refuse the pod with
//! failurePolicy `Fail` while istiod is down), templates other than `sidecar` and `gateway`,
//! the many per-pod proxy annotations.

use serde_json::{json, Map, Value};

use crate::cluster::Cluster;
use crate::object;
use crate::selectors::selector_object_matches;
use crate::store::ResKey;

pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
pub const PROXY_CONTAINER: &str = "istio-proxy";
pub const INIT_CONTAINER: &str = "istio-init";
const IGNORED_NAMESPACES: [&str; 2] = ["kube-system", "kube-public"];
const VOLUMES: [&str; 9] = [
    "workload-socket",
    "credential-socket",
    "workload-certs",
    "istio-envoy",
    "istio-data",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
    "istio-ca-crl",
];

/// The injector webhook the API server would call for this pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub service_namespace: String,
    pub service_name: String,
    pub path: String,
}

fn covers_pod_create(webhook: &Value) -> bool {
    webhook
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            let has = |field: &str, want: &str| {
                r.get(field).and_then(Value::as_array).is_some_and(|xs| {
                    xs.iter()
                        .filter_map(Value::as_str)
                        .any(|x| x == want || x == "*")
                })
            };
            has("operations", "CREATE")
                && has("apiGroups", "")
                && has("apiVersions", "v1")
                && has("resources", "pods")
        })
}

/// The first injector webhook (path `/inject...`) whose rules and selectors select the pod.
pub fn webhook_call(
    cluster: &Cluster,
    ns_labels: Option<&Map<String, Value>>,
    pod: &Value,
) -> Option<Call> {
    let mut mwcs = cluster
        .store
        .list(
            &ResKey::new(
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
            ),
            None,
        )
        .0;
    mwcs.sort_by(|a, b| object::name(a).cmp(object::name(b)));
    for mwc in &mwcs {
        for wh in mwc
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(svc) = wh.pointer("/clientConfig/service") else {
                continue;
            };
            let path = svc.get("path").and_then(Value::as_str).unwrap_or("");
            if !path.starts_with("/inject") || !covers_pod_create(wh) {
                continue;
            }
            if selector_object_matches(wh.get("namespaceSelector"), ns_labels)
                && selector_object_matches(wh.get("objectSelector"), object::labels(pod))
            {
                return Some(Call {
                    service_namespace: svc
                        .get("namespace")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    service_name: svc
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    path: path.to_string(),
                });
            }
        }
    }
    None
}

/// istiod's `injectRequired`.
pub fn inject_required(pod: &Value, namespace: &str, policy_enabled: bool) -> bool {
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true) {
        return false;
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return false;
    }
    let label = object::labels(pod)
        .and_then(|l| l.get(INJECT_LABEL))
        .and_then(Value::as_str);
    let choice = label.or_else(|| object::annotation(pod, INJECT_LABEL));
    match choice {
        Some("true") => true,
        Some("false") => false,
        _ => policy_enabled,
    }
}

/// `/inject/cluster/<c>/net/<n>` → overrides (istiod's `parseInjectEnvs`).
pub fn path_overrides(path: &str) -> (Option<String>, Option<String>) {
    let parts: Vec<&str> = path
        .trim_start_matches("/inject")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (mut cluster, mut net) = (None, None);
    for kv in parts.chunks(2) {
        if let [k, v] = kv {
            match *k {
                "cluster" => cluster = Some(v.to_string()),
                "net" => net = Some(v.to_string()),
                _ => {}
            }
        }
    }
    (cluster, net)
}

/// What the injecting istiod knows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InjectorValues {
    pub proxy_image: String,
    pub revision: String,
    pub cluster_id: String,
    pub network: String,
    pub mesh_id: String,
    pub policy_enabled: bool,
    pub native: Option<bool>,
    pub ca_addr: String,
}

fn kubelet_minor(node: &Value) -> Option<u32> {
    let v = node.pointer("/status/nodeInfo/kubeletVersion")?.as_str()?;
    v.trim_start_matches('v').split('.').nth(1)?.parse().ok()
}

/// Read the injector's values for a call.
pub fn values_for(cluster: &Cluster, call: &Call) -> InjectorValues {
    let suffix = call.service_name.strip_prefix("istiod").unwrap_or("");
    let cm = cluster.store.get(
        &ResKey::new("", "configmaps"),
        &call.service_namespace,
        &format!("istio-sidecar-injector{suffix}"),
    );
    let values: Value = cm
        .as_ref()
        .and_then(|c| c.pointer("/data/values"))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(json!({}));
    let config = cm
        .as_ref()
        .and_then(|c| c.pointer("/data/config"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let policy_enabled = !config.lines().any(|l| l.trim() == "policy: disabled");
    let s = |p: &str| {
        values
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let proxy_image = match (s("/global/hub"), s("/global/tag")) {
        (Some(h), Some(t)) => format!("{h}/proxyv2:{t}"),
        _ => "auto".to_string(),
    };
    let (o_cluster, o_net) = path_overrides(&call.path);
    // ENABLE_NATIVE_SIDECARS of the istiod behind the service (the Deployment of that name).
    let native_env = cluster
        .store
        .get(
            &ResKey::new("apps", "deployments"),
            &call.service_namespace,
            &call.service_name,
        )
        .and_then(|d| {
            d.pointer("/spec/template/spec/containers/0/env")
                .and_then(Value::as_array)
                .and_then(|env| {
                    env.iter()
                        .find(|e| {
                            e.get("name").and_then(Value::as_str) == Some("ENABLE_NATIVE_SIDECARS")
                        })
                        .and_then(|e| e.get("value").and_then(Value::as_str))
                        .map(str::to_string)
                })
        });
    let native = match native_env.as_deref() {
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some("auto") | None => None,
        Some(_) => Some(false), // istiod warns and disables
    };
    InjectorValues {
        proxy_image,
        revision: s("/revision").unwrap_or_else(|| "default".into()),
        cluster_id: o_cluster
            .or_else(|| s("/global/multiCluster/clusterName"))
            .unwrap_or_else(|| "Kubernetes".into()),
        network: o_net.or_else(|| s("/global/network")).unwrap_or_default(),
        mesh_id: s("/global/meshID").unwrap_or_else(|| "cluster.local".into()),
        policy_enabled,
        native,
        ca_addr: format!("{}.{}.svc:15012", call.service_name, call.service_namespace),
    }
}

/// `auto`: native sidecars when every node's kubelet is 1.33 or newer.
fn nodes_support_native(cluster: &Cluster) -> bool {
    let nodes = cluster.store.list(&ResKey::new("", "nodes"), None).0;
    !nodes.is_empty()
        && nodes
            .iter()
            .all(|n| kubelet_minor(n).is_some_and(|m| m >= 33))
}

/// Mutate a pod being created as the injector would; true when it injected.
pub fn admit(cluster: &Cluster, pod: &mut Value) -> bool {
    if object::annotation(pod, STATUS_ANNOTATION).is_some() {
        return false;
    }
    let ns = object::namespace(pod).to_string();
    let ns_obj = cluster.store.get(&ResKey::new("", "namespaces"), "", &ns);
    let Some(call) = webhook_call(cluster, ns_obj.as_deref().and_then(object::labels), pod) else {
        return false;
    };
    let v = values_for(cluster, &call);
    if !inject_required(pod, &ns, v.policy_enabled) {
        return false;
    }
    let native = match object::annotation(pod, "sidecar.istio.io/nativeSidecar") {
        Some("false") => false,
        Some(_) => true,
        None => v.native.unwrap_or_else(|| nodes_support_native(cluster)),
    };
    mutate(pod, &v, native);
    true
}

fn proxy_container(v: &InjectorValues, pod: &Value, native: bool) -> Value {
    let env = |k: &str, val: &str| json!({"name": k, "value": val});
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": v.proxy_image,
        "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local",
            "--proxyLogLevel=warning", "--proxyComponentLogLevel=misc:error", "--log_output_level=default:info"],
        "ports": [{"containerPort": 15090, "protocol": "TCP", "name": "http-envoy-prom"}],
        "env": [
            env("PILOT_CERT_PROVIDER", "istiod"),
            env("CA_ADDR", &v.ca_addr),
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
            json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}),
            env("ISTIO_META_CLUSTER_ID", &v.cluster_id),
            env("ISTIO_META_NETWORK", &v.network),
            env("ISTIO_META_MESH_ID", &v.mesh_id),
            env("TRUST_DOMAIN", "cluster.local"),
            env("ISTIO_META_WORKLOAD_NAME", &workload_name(pod)),
        ],
        "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021},
            "initialDelaySeconds": 0, "periodSeconds": 15, "timeoutSeconds": 3, "failureThreshold": 4},
        "securityContext": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true,
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false},
        "volumeMounts": VOLUMES.iter().map(|n| json!({"name": n, "mountPath": format!("/var/run/istio/{n}")})).collect::<Vec<_>>(),
    });
    if native {
        c["restartPolicy"] = json!("Always");
        c["startupProbe"] = json!({"httpGet": {"path": "/healthz/ready", "port": 15021},
            "initialDelaySeconds": 0, "periodSeconds": 1, "timeoutSeconds": 3, "failureThreshold": 600});
    }
    c
}

fn init_container(v: &InjectorValues) -> Value {
    json!({
        "name": INIT_CONTAINER,
        "image": v.proxy_image,
        "args": ["istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
            "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"],
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": false, "privileged": false},
    })
}

/// The Deployment-ish name the template calls `.DeploymentMeta.Name`: the controller owner's
/// name (minus the pod-template-hash a ReplicaSet would add), else the pod's own name.
fn workload_name(pod: &Value) -> String {
    object::meta(pod)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .and_then(|o| o.first())
        .and_then(|o| o.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            object::meta_str(pod, "generateName")
                .map(|g| g.trim_end_matches('-').to_string())
                .unwrap_or_else(|| object::name(pod).to_string())
        })
}

fn mutate(pod: &mut Value, v: &InjectorValues, native: bool) {
    let gateway = object::annotation(pod, "inject.istio.io/templates") == Some("gateway");
    let app_containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .filter(|n| *n != PROXY_CONTAINER)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let labels_snapshot = object::labels(pod).cloned().unwrap_or_default();
    let label = |k: &str| {
        labels_snapshot
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let canonical_name = label("service.istio.io/canonical-name")
        .or_else(|| label("app.kubernetes.io/name"))
        .or_else(|| label("app"))
        .unwrap_or_else(|| workload_name(pod));
    let canonical_rev = label("service.istio.io/canonical-revision")
        .or_else(|| label("app.kubernetes.io/version"))
        .or_else(|| label("version"))
        .unwrap_or_else(|| "latest".into());
    // A pod that declares its own `istio-proxy` gets the template merged into it (its fields
    // win), as Istio's "customizing injection" documents; the gateway template always does so.
    let own_proxy = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER))
        });
    let in_place = gateway || own_proxy;
    let proxy = proxy_container(v, pod, native && !in_place);
    let spec = object::ensure_object(pod, &["spec"]);
    let mut injected_init: Vec<String> = Vec::new();
    let mut injected: Vec<String> = Vec::new();
    if !gateway {
        let mut inits = vec![init_container(v)];
        injected_init.push(INIT_CONTAINER.into());
        if native && !in_place {
            inits.push(proxy.clone());
            injected_init.push(PROXY_CONTAINER.into());
        }
        let existing = spec
            .get("initContainers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        inits.extend(existing);
        spec.insert("initContainers".into(), Value::Array(inits));
    }
    if in_place || !native {
        let containers = spec.entry("containers").or_insert(json!([]));
        if let Some(cs) = containers.as_array_mut() {
            match cs
                .iter_mut()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER))
            {
                Some(c) => {
                    let mut merged = proxy.clone();
                    if let (Some(m), Some(orig)) = (merged.as_object_mut(), c.as_object()) {
                        for (k, val) in orig {
                            if k != "image" || val.as_str() != Some("auto") {
                                m.insert(k.clone(), val.clone());
                            }
                        }
                    }
                    *c = merged;
                }
                None => cs.push(proxy.clone()),
            }
        }
        injected.push(PROXY_CONTAINER.into());
    }
    let vols = spec.entry("volumes").or_insert(json!([]));
    if let Some(vs) = vols.as_array_mut() {
        for n in VOLUMES {
            vs.push(json!({"name": n, "emptyDir": {}}));
        }
    }
    let status = json!({
        "initContainers": if injected_init.is_empty() { Value::Null } else { json!(injected_init) },
        "containers": if injected.is_empty() { Value::Null } else { json!(injected) },
        "volumes": VOLUMES,
        "imagePullSecrets": Value::Null,
        "revision": v.revision,
    });
    let labels = object::ensure_object(pod, &["metadata", "labels"]);
    labels
        .entry("security.istio.io/tlsMode")
        .or_insert(json!("istio"));
    labels.insert(
        "service.istio.io/canonical-name".into(),
        json!(canonical_name),
    );
    labels.insert(
        "service.istio.io/canonical-revision".into(),
        json!(canonical_rev),
    );
    let annotations = object::ensure_object(pod, &["metadata", "annotations"]);
    annotations.insert("istio.io/rev".into(), json!(v.revision));
    if let Some(first) = app_containers.first() {
        annotations
            .entry("kubectl.kubernetes.io/default-container")
            .or_insert(json!(first));
        annotations
            .entry("kubectl.kubernetes.io/default-logs-container")
            .or_insert(json!(first));
    }
    annotations.insert(STATUS_ANNOTATION.into(), json!(status.to_string()));
}

/// Whether a pod runs an injected sidecar.
pub fn has_sidecar(pod: &Value) -> bool {
    object::annotation(pod, STATUS_ANNOTATION).is_some()
        && ["containers", "initContainers"].iter().any(|f| {
            pod.pointer(&format!("/spec/{f}"))
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.get("name").and_then(Value::as_str) == Some(PROXY_CONTAINER))
                })
        })
}

/// The revision that injected the pod (`revision` of the status annotation).
pub fn injected_revision(pod: &Value) -> Option<String> {
    let s: Value = serde_json::from_str(object::annotation(pod, STATUS_ANNOTATION)?).ok()?;
    s.get("revision")
        .and_then(Value::as_str)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_required_follows_istiod() {
        let p = |labels: Value, ann: Value| json!({"metadata": {"labels": labels, "annotations": ann}, "spec": {}});
        assert!(inject_required(&p(json!({}), json!({})), "sample", true));
        assert!(!inject_required(&p(json!({}), json!({})), "sample", false));
        assert!(!inject_required(
            &p(json!({INJECT_LABEL: "false"}), json!({})),
            "sample",
            true
        ));
        assert!(!inject_required(
            &p(json!({}), json!({INJECT_LABEL: "false"})),
            "sample",
            true
        ));
        // The label wins over the annotation.
        assert!(inject_required(
            &p(
                json!({INJECT_LABEL: "true"}),
                json!({INJECT_LABEL: "false"})
            ),
            "s",
            false
        ));
        assert!(!inject_required(
            &p(json!({}), json!({})),
            "kube-system",
            true
        ));
        let mut host = p(json!({}), json!({}));
        host["spec"]["hostNetwork"] = json!(true);
        assert!(!inject_required(&host, "sample", true));
    }

    #[test]
    fn remote_injection_paths_override_cluster_and_network() {
        assert_eq!(
            path_overrides("/inject/cluster/c2/net/network2"),
            (Some("c2".into()), Some("network2".into()))
        );
        assert_eq!(path_overrides("/inject"), (None, None));
    }

    fn values() -> InjectorValues {
        InjectorValues {
            proxy_image: "docker.io/istio/proxyv2:1.30.3".into(),
            revision: "default".into(),
            cluster_id: "c1".into(),
            network: "n1".into(),
            mesh_id: "mesh1".into(),
            policy_enabled: true,
            native: None,
            ca_addr: "istiod.istio-system.svc:15012".into(),
        }
    }

    #[test]
    fn native_and_classic_sidecars_are_placed_as_the_template_places_them() {
        let pod = json!({"metadata": {"name": "hw-1", "labels": {"app": "helloworld", "version": "v1"}},
            "spec": {"containers": [{"name": "helloworld", "image": "x"}]}});
        let mut native = pod.clone();
        mutate(&mut native, &values(), true);
        let inits: Vec<&str> = native["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(inits, vec!["istio-init", "istio-proxy"]);
        assert_eq!(
            native["spec"]["initContainers"][1]["restartPolicy"],
            "Always"
        );
        assert_eq!(native["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(has_sidecar(&native));
        assert_eq!(injected_revision(&native).as_deref(), Some("default"));
        assert_eq!(
            native["metadata"]["labels"]["service.istio.io/canonical-name"],
            "helloworld"
        );
        assert_eq!(
            native["metadata"]["labels"]["service.istio.io/canonical-revision"],
            "v1"
        );
        assert_eq!(
            native["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
            "helloworld"
        );
        let mut classic = pod;
        mutate(&mut classic, &values(), false);
        assert_eq!(classic["spec"]["containers"][1]["name"], "istio-proxy");
        assert_eq!(
            classic["spec"]["containers"][1]["image"],
            "docker.io/istio/proxyv2:1.30.3"
        );
        let status: Value = serde_json::from_str(
            classic["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["initContainers"], json!(["istio-init"]));
        assert_eq!(status["containers"], json!(["istio-proxy"]));
    }

    #[test]
    fn the_gateway_template_fills_in_the_proxy_container() {
        let mut gw = json!({"metadata": {"name": "eastwest", "annotations": {"inject.istio.io/templates": "gateway"}},
            "spec": {"containers": [{"name": "istio-proxy", "image": "auto", "ports": [{"containerPort": 15443}]}]}});
        mutate(&mut gw, &values(), true);
        assert_eq!(
            gw["spec"]["containers"][0]["image"],
            "docker.io/istio/proxyv2:1.30.3"
        );
        assert_eq!(
            gw["spec"]["containers"][0]["ports"][0]["containerPort"],
            15443
        );
        assert!(gw["spec"].get("initContainers").is_none());
        // A pod declaring its own istio-proxy gets the template merged into it, once.
        let mut own = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "app", "image": "x"},
            {"name": "istio-proxy", "image": "auto", "args": ["proxy", "sidecar", "--concurrency", "1"]}]}});
        mutate(&mut own, &values(), true);
        let names: Vec<&str> = own["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["app", "istio-proxy"]);
        assert_eq!(
            own["spec"]["containers"][1]["image"],
            "docker.io/istio/proxyv2:1.30.3"
        );
        assert_eq!(own["spec"]["containers"][1]["args"][3], "1");
        assert_eq!(own["spec"]["initContainers"].as_array().unwrap().len(), 1);
    }
}
