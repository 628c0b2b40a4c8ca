//! The istioctl installer simulation: a Job running `<hub>/istioctl:<tag> install -f <file>`
//! creates what `istioctl install` would, labelled with istioctl's owner labels, from the
//! IstioOperator in the ConfigMap mounted into the Job's pod.

use serde_json::{json, Map, Value};

use super::key;
use crate::cluster::Cluster;
use crate::object;

/// A detected `istioctl install -f FILE` invocation.
pub struct Invocation {
    pub image: String,
    pub file: String,
    /// Container (its volumeMounts resolve the file).
    pub container: Value,
}

/// The Job's installer invocation, if it is one.
pub fn detect(job: &Value) -> Option<Invocation> {
    let containers = job.pointer("/spec/template/spec/containers")?.as_array()?;
    for c in containers {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let last = image.rsplit('/').next().unwrap_or("");
        if !last.starts_with("istioctl:") && last != "istioctl" {
            continue;
        }
        let mut args: Vec<String> = Vec::new();
        for field in ["command", "args"] {
            for a in c.get(field).and_then(Value::as_array).into_iter().flatten() {
                if let Some(s) = a.as_str() {
                    args.push(s.to_string());
                }
            }
        }
        if args.first().is_some_and(|a| a.ends_with("istioctl")) {
            args.remove(0);
        }
        if args.first().map(String::as_str) != Some("install") {
            continue;
        }
        let mut file = String::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if a == "-f" || a == "--filename" {
                file = args.get(i + 1).cloned().unwrap_or_default();
                i += 1;
            } else if let Some(f) = a
                .strip_prefix("--filename=")
                .or_else(|| a.strip_prefix("-f="))
            {
                file = f.to_string();
            }
            i += 1;
        }
        return Some(Invocation {
            image: image.to_string(),
            file,
            container: c.clone(),
        });
    }
    None
}

/// Read the IstioOperator file through the pod's volume mounts.
fn read_iop(cluster: &Cluster, job: &Value, inv: &Invocation) -> Result<Value, String> {
    let ns = object::namespace(job);
    let not_found = || format!("Error: open {}: no such file or directory\n", inv.file);
    if inv.file.is_empty() || inv.file == "-" {
        return Err("Error: kube-sim: the installer needs `-f <file>` naming a file in a mounted ConfigMap\n".into());
    }
    let mounts = inv
        .container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let volumes = job
        .pointer("/spec/template/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in mounts {
        let mount_path = m
            .get("mountPath")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim_end_matches('/');
        let Some(rel) = inv.file.strip_prefix(&format!("{mount_path}/")) else {
            continue;
        };
        let rel = match m.get("subPath").and_then(Value::as_str) {
            Some(sub) if !sub.is_empty() => format!("{sub}/{rel}"),
            _ => rel.to_string(),
        };
        let vol_name = m.get("name").and_then(Value::as_str).unwrap_or("");
        let Some(vol) = volumes
            .iter()
            .find(|v| v.get("name").and_then(Value::as_str) == Some(vol_name))
        else {
            continue;
        };
        let Some(cm_ref) = vol.get("configMap") else {
            return Err(format!(
                "Error: kube-sim: volume {vol_name} holding {} is not a configMap volume\n",
                inv.file
            ));
        };
        let cm_name = cm_ref.get("name").and_then(Value::as_str).unwrap_or("");
        // items: [{key, path}] remaps keys to file names.
        let key_name = match cm_ref.get("items").and_then(Value::as_array) {
            Some(items) => items
                .iter()
                .find(|i| i.get("path").and_then(Value::as_str) == Some(rel.as_str()))
                .and_then(|i| i.get("key").and_then(Value::as_str))
                .map(str::to_string)
                .ok_or_else(not_found)?,
            None => rel.clone(),
        };
        let cm = cluster
            .store
            .get(&key("", "configmaps"), ns, cm_name)
            .ok_or_else(|| {
                format!("Error: kube-sim: pod could not start: configmap \"{cm_name}\" not found\n")
            })?;
        let text = cm
            .pointer("/data")
            .and_then(|d| d.get(&key_name))
            .and_then(Value::as_str)
            .ok_or_else(not_found)?;
        let iop: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            format!(
                "Error: could not parse IstioOperator in {}: {e}\n",
                inv.file
            )
        })?;
        if iop.get("kind").and_then(Value::as_str) != Some("IstioOperator") {
            return Err(format!(
                "Error: {} is not an IstioOperator (kind {:?})\n",
                inv.file,
                iop.get("kind")
            ));
        }
        return Ok(iop);
    }
    Err(not_found())
}

/// What the IstioOperator asks for.
struct Plan {
    owner: Option<String>,
    owner_ns: Option<String>,
    revision: String,
    ns: String,
    hub: String,
    tag: String,
    remote: bool,
    mesh_id: Option<String>,
    cluster_name: String,
    network: Option<String>,
    external_istiod: bool,
    remote_pilot_address: Option<String>,
    injection_path: String,
    pilot_enabled: bool,
    pilot_env: Map<String, Value>,
    mesh_config: Value,
    gateways: Vec<(String, Value)>,
}

fn s(v: &Value, p: &str) -> Option<String> {
    v.pointer(p).and_then(|x| match x {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn plan(iop: &Value, image: &str) -> Plan {
    let (image_hub, image_tag) = match image.rsplit_once(':') {
        Some((h, t)) if !t.contains('/') => (
            h.rsplit_once('/')
                .map(|x| x.0)
                .unwrap_or("docker.io/istio")
                .to_string(),
            t.to_string(),
        ),
        _ => ("docker.io/istio".to_string(), "latest".to_string()),
    };
    let spec = iop.get("spec").cloned().unwrap_or(json!({}));
    let profile = s(&spec, "/profile").unwrap_or_else(|| "default".into());
    let remote = profile == "remote"
        || spec
            .pointer("/values/istiodRemote/enabled")
            .and_then(Value::as_bool)
            == Some(true);
    let cluster_name =
        s(&spec, "/values/global/multiCluster/clusterName").unwrap_or_else(|| "Kubernetes".into());
    let network = s(&spec, "/values/global/network");
    let mut gateways = Vec::new();
    let explicit = spec
        .pointer("/components/ingressGateways")
        .and_then(Value::as_array)
        .cloned();
    match explicit {
        Some(list) => {
            for g in list {
                if g.get("enabled").and_then(Value::as_bool) == Some(true) {
                    let name = s(&g, "/name").unwrap_or_else(|| "istio-ingressgateway".into());
                    gateways.push((name, g));
                }
            }
        }
        None if profile == "default" => gateways.push(("istio-ingressgateway".into(), json!({}))),
        None => {}
    }
    Plan {
        owner: s(iop, "/metadata/name"),
        owner_ns: s(iop, "/metadata/namespace"),
        revision: s(&spec, "/revision")
            .or_else(|| s(&spec, "/values/revision"))
            .unwrap_or_default(),
        ns: s(&spec, "/namespace")
            .or_else(|| s(&spec, "/values/global/istioNamespace"))
            .unwrap_or_else(|| "istio-system".into()),
        hub: s(&spec, "/hub")
            .or_else(|| s(&spec, "/values/global/hub"))
            .unwrap_or(image_hub),
        tag: s(&spec, "/tag")
            .or_else(|| s(&spec, "/values/global/tag"))
            .unwrap_or(image_tag),
        remote,
        mesh_id: s(&spec, "/values/global/meshID"),
        cluster_name,
        network,
        external_istiod: spec
            .pointer("/values/global/externalIstiod")
            .and_then(Value::as_bool)
            == Some(true),
        remote_pilot_address: s(&spec, "/values/global/remotePilotAddress"),
        injection_path: s(&spec, "/values/istiodRemote/injectionPath")
            .unwrap_or_else(|| "/inject".into()),
        pilot_enabled: spec
            .pointer("/components/pilot/enabled")
            .and_then(Value::as_bool)
            != Some(false),
        pilot_env: spec
            .pointer("/values/pilot/env")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        mesh_config: spec.get("meshConfig").cloned().unwrap_or(json!({})),
        gateways,
    }
}

impl Plan {
    /// `-<revision>` as the charts append it (`if not (eq .Values.revision "")`): any
    /// non-empty revision, `default` included (`spec.revision: default` → `istiod-default`).
    fn rev_suffix(&self) -> String {
        if self.revision.is_empty() {
            String::new()
        } else {
            format!("-{}", self.revision)
        }
    }

    /// The injector webhook's name (`mutatingwebhook.yaml`): the namespace is appended
    /// outside `istio-system`.
    fn injector_webhook(&self) -> String {
        let base = format!("istio-sidecar-injector{}", self.rev_suffix());
        if self.ns == "istio-system" {
            base
        } else {
            format!("{base}-{}", self.ns)
        }
    }

    fn labels(&self, component: &str, extra: Value) -> Value {
        let mut l = json!({
            "operator.istio.io/managed": "Reconcile",
            "operator.istio.io/version": self.tag,
            "istio.io/rev": if self.revision.is_empty() { "default" } else { self.revision.as_str() },
            "operator.istio.io/component": component,
        });
        if let Some(o) = &self.owner {
            l["install.operator.istio.io/owning-resource"] = json!(o);
        }
        if let Some(o) = &self.owner_ns {
            l["install.operator.istio.io/owning-resource-namespace"] = json!(o);
        }
        crate::patch::merge_patch(&mut l, &extra);
        l
    }
}

const ISTIO_CRDS: &[(&str, &str, &str, &[&str])] = &[
    (
        "networking.istio.io",
        "Gateway",
        "gateways",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "VirtualService",
        "virtualservices",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "DestinationRule",
        "destinationrules",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "ServiceEntry",
        "serviceentries",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "Sidecar",
        "sidecars",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "WorkloadEntry",
        "workloadentries",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "WorkloadGroup",
        "workloadgroups",
        &["v1", "v1beta1", "v1alpha3"],
    ),
    (
        "networking.istio.io",
        "EnvoyFilter",
        "envoyfilters",
        &["v1alpha3"],
    ),
    (
        "networking.istio.io",
        "ProxyConfig",
        "proxyconfigs",
        &["v1beta1"],
    ),
    (
        "security.istio.io",
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
        &["v1", "v1beta1"],
    ),
    (
        "security.istio.io",
        "RequestAuthentication",
        "requestauthentications",
        &["v1", "v1beta1"],
    ),
    (
        "telemetry.istio.io",
        "Telemetry",
        "telemetries",
        &["v1", "v1alpha1"],
    ),
    (
        "extensions.istio.io",
        "WasmPlugin",
        "wasmplugins",
        &["v1alpha1"],
    ),
];

fn crd(p: &Plan, group: &str, kind: &str, plural: &str, versions: &[&str]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({"name": v, "served": true, "storage": i == 0,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}})
        })
        .collect();
    let singular = kind.to_lowercase();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}"),
            "labels": p.labels("Base", json!({"app": "istio-pilot", "chart": "istio", "heritage": "Tiller", "release": "istio"}))},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"kind": kind, "listKind": format!("{kind}List"), "plural": plural, "singular": singular,
                "categories": ["istio-io", format!("{}-istio-io", group.split('.').next().unwrap_or(""))]},
            "versions": vs}
    })
}

fn reader_rules(remote: bool) -> Value {
    let mut rules = vec![
        json!({"apiGroups": ["config.istio.io", "security.istio.io", "networking.istio.io", "authentication.istio.io", "rbac.istio.io", "telemetry.istio.io", "extensions.istio.io"], "resources": ["*"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": [""], "resources": ["endpoints", "pods", "services", "nodes", "replicationcontrollers", "namespaces", "secrets", "configmaps"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["networking.istio.io"], "resources": ["workloadentries"], "verbs": ["get", "watch", "list"]}),
        json!({"apiGroups": ["networking.x-k8s.io", "gateway.networking.k8s.io"], "resources": ["gateways"], "verbs": ["get", "watch", "list"]}),
        json!({"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceexports"], "verbs": ["get", "list", "watch", "create", "delete"]}),
        json!({"apiGroups": ["multicluster.x-k8s.io"], "resources": ["serviceimports"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["get", "list", "watch"]}),
        json!({"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}),
        json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}),
    ];
    if remote {
        rules.push(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "get", "list", "watch", "update"]}));
        rules.push(json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update", "patch"]}));
        rules.push(json!({"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update"]}));
    }
    Value::Array(rules)
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// Every object istioctl would apply for this plan, in apply order.
fn manifests(p: &Plan, ca_pem: &str) -> Vec<Value> {
    let ns = p.ns.as_str();
    let rs = p.rev_suffix();
    let istiod = format!("istiod{rs}");
    let mut out = Vec::new();
    // Base.
    for (g, k, pl, vs) in ISTIO_CRDS {
        out.push(crd(p, g, k, pl, vs));
    }
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "istio-reader-service-account", "namespace": ns,
            "labels": p.labels("Base", json!({"app": "istio-reader", "app.kubernetes.io/name": "istio-reader", "release": "istio"}))}}));
    if rs.is_empty() {
        out.push(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "istiod-default-validator", "labels": p.labels("Base", json!({"app": "istiod", "istio": "istiod"}))},
            "webhooks": [{"name": "validation.istio.io", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore",
                "clientConfig": {"service": {"name": istiod, "namespace": ns, "path": "/validate"}},
                "rules": [{"apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}]}]}));
    }
    if !p.pilot_enabled {
        return out;
    }
    // Pilot.
    let reader = format!("istio-reader-clusterrole{rs}-{ns}");
    let pl = |extra: Value| p.labels("Pilot", extra);
    out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": reader, "labels": pl(json!({"app": "istio-reader", "release": "istio"}))},
        "rules": reader_rules(p.remote)}));
    out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": reader, "labels": pl(json!({"app": "istio-reader", "release": "istio"}))},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reader},
        "subjects": [{"kind": "ServiceAccount", "name": "istio-reader-service-account", "namespace": ns}]}));
    let mut injector_values = json!({"global": {"meshID": p.mesh_id, "network": p.network.clone().unwrap_or_default(),
        "multiCluster": {"clusterName": p.cluster_name}, "istioNamespace": ns, "hub": p.hub, "tag": p.tag},
        "revision": p.revision});
    if p.remote {
        injector_values["istiodRemote"] =
            json!({"enabled": true, "injectionPath": p.injection_path});
        let mut svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "istio": "pilot"}))},
            "spec": {"ports": [{"name": "tcp-istiod", "port": 15012, "protocol": "TCP"}, {"name": "tcp-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"}]}});
        match &p.remote_pilot_address {
            Some(addr) if !is_ip(addr) => {
                svc["spec"] = json!({"type": "ExternalName", "externalName": addr});
            }
            Some(addr) => {
                svc["spec"]["clusterIP"] = json!("None");
                out.push(svc.clone());
                out.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{istiod}-remote"), "namespace": ns,
                        "labels": pl(json!({"kubernetes.io/service-name": istiod, "endpointslice.kubernetes.io/managed-by": "istio.io"}))},
                    "addressType": if addr.contains(':') { "IPv6" } else { "IPv4" },
                    "endpoints": [{"addresses": [addr]}],
                    "ports": [{"name": "tcp-istiod", "port": 15012, "protocol": "TCP"}, {"name": "tcp-webhook", "port": 15017, "protocol": "TCP"}]}));
                svc = Value::Null;
            }
            None => {}
        }
        if !svc.is_null() {
            out.push(svc);
        }
    } else {
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "release": "istio"}))}}));
        let cr = format!("istiod-clusterrole{rs}-{ns}");
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": cr, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update", "patch"]},
                {"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests", "certificatesigningrequests/approval", "certificatesigningrequests/status"], "verbs": ["update", "create", "get", "delete", "watch"]},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]}]}));
        out.push(
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": cr, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cr},
            "subjects": [{"kind": "ServiceAccount", "name": istiod, "namespace": ns}]}),
        );
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["create", "get", "watch", "list", "update", "delete"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "update", "patch", "create"]}]}));
        out.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": istiod},
            "subjects": [{"kind": "ServiceAccount", "name": istiod, "namespace": ns}]}));
        // Mesh config (ConfigMap `istio[-rev]`, key `mesh`).
        let mut mesh = json!({"defaultConfig": {"discoveryAddress": format!("{istiod}.{ns}.svc:15012"), "proxyMetadata": {}},
            "enablePrometheusMerge": true, "rootNamespace": ns, "trustDomain": "cluster.local"});
        if let Some(m) = &p.mesh_id {
            mesh["defaultConfig"]["meshId"] = json!(m);
        }
        crate::patch::merge_patch(&mut mesh, &p.mesh_config);
        out.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("istio{rs}"), "namespace": ns, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "data": {"mesh": serde_yaml_ng::to_string(&mesh).unwrap_or_default(), "meshNetworks": "networks: {}\n"}}));
        out.push(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("istio-sidecar-injector{rs}"), "namespace": ns, "labels": pl(json!({"app": "sidecar-injector", "release": "istio"}))},
            "data": {"values": serde_json::to_string_pretty(&injector_values).unwrap_or_default(),
                "config": "defaultTemplates: [sidecar]\npolicy: enabled\n"}}));
        let mut env = vec![
            json!({"name": "REVISION", "value": if p.revision.is_empty() { "default" } else { p.revision.as_str() }}),
            json!({"name": "PILOT_CERT_PROVIDER", "value": "istiod"}),
            json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}),
            json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}),
            json!({"name": "KUBECONFIG", "value": "/var/run/secrets/remote/config"}),
            json!({"name": "CLUSTER_ID", "value": p.cluster_name}),
        ];
        if p.external_istiod {
            env.push(json!({"name": "EXTERNAL_ISTIOD", "value": "true"}));
        }
        for (k, v) in &p.pilot_env {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            env.retain(|e| e.get("name").and_then(Value::as_str) != Some(k.as_str()));
            env.push(json!({"name": k, "value": v}));
        }
        let sel = json!({"app": "istiod", "istio.io/rev": if p.revision.is_empty() { "default" } else { p.revision.as_str() }});
        out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "istio": "pilot", "release": "istio"}))},
            "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "istiod", "istio": "pilot", "istio.io/rev": sel["istio.io/rev"], "sidecar.istio.io/inject": "false"},
                        "annotations": {"prometheus.io/port": "15014", "prometheus.io/scrape": "true", "sidecar.istio.io/inject": "false"}},
                    "spec": {"serviceAccountName": istiod,
                        "containers": [{"name": "discovery", "image": format!("{}/pilot:{}", p.hub, p.tag),
                            "args": ["discovery", "--monitoringAddr=:15014", "--log_output_level=default:info", "--domain", "cluster.local", "--keepaliveMaxServerConnectionAge", "30m"],
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}, {"containerPort": 15010, "protocol": "TCP"}, {"containerPort": 15017, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
                            "env": env,
                            "volumeMounts": [{"name": "cacerts", "mountPath": "/etc/cacerts", "readOnly": true},
                                {"name": "istio-kubeconfig", "mountPath": "/var/run/secrets/remote", "readOnly": true}]}],
                        "volumes": [{"name": "cacerts", "secret": {"secretName": "cacerts", "optional": true}},
                            {"name": "istio-kubeconfig", "secret": {"secretName": "istio-kubeconfig", "optional": true}}]}}}}));
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "istio": "pilot", "release": "istio"}))},
            "spec": {"selector": sel, "ports": [
                {"name": "grpc-xds", "port": 15010, "protocol": "TCP"},
                {"name": "https-dns", "port": 15012, "protocol": "TCP"},
                {"name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"},
                {"name": "http-monitoring", "port": 15014, "protocol": "TCP"}]}}));
        out.push(json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "spec": {"minReplicas": 1, "maxReplicas": 5, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": istiod},
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}));
        out.push(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": istiod, "namespace": ns, "labels": pl(json!({"app": "istiod", "release": "istio"}))},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": sel}}}));
        out.push(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": format!("istio-validator{rs}-{ns}"), "labels": pl(json!({"app": "istiod", "istio": "istiod"}))},
            "webhooks": [{"name": "rev.validation.istio.io", "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Ignore",
                "clientConfig": {"service": {"name": istiod, "namespace": ns, "path": "/validate"}},
                "rules": [{"apiGroups": ["security.istio.io", "networking.istio.io", "telemetry.istio.io", "extensions.istio.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"]}]}]}));
    }
    // Injector webhook (primary: istiod service /inject; remote: injectionPath on the remote service).
    let path = if p.remote {
        p.injection_path.clone()
    } else {
        "/inject".to_string()
    };
    let ca_b64 = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(ca_pem)
    };
    let webhook = |name: &str, namespace_selector: Value, object_selector: Value| {
        json!({"name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail", "reinvocationPolicy": "Never",
            "clientConfig": {"service": {"name": istiod, "namespace": ns, "path": path, "port": 443}, "caBundle": ca_b64},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
            "namespaceSelector": namespace_selector, "objectSelector": object_selector})
    };
    // The selectors of `mutatingwebhook.yaml`: the revision's namespace and object webhooks, and
    // for the unrevisioned control plane also the legacy `istio-injection` / object-label ones.
    let rev = if p.revision.is_empty() {
        "default"
    } else {
        p.revision.as_str()
    };
    let expr = |key: &str, op: &str, values: &[&str]| {
        if values.is_empty() {
            json!({"key": key, "operator": op})
        } else {
            json!({"key": key, "operator": op, "values": values})
        }
    };
    let not_disabled = expr("sidecar.istio.io/inject", "NotIn", &["false"]);
    let mut webhooks = vec![
        webhook(
            "rev.namespace.sidecar-injector.istio.io",
            json!({"matchExpressions": [expr("istio.io/rev", "In", &[rev]), expr("istio-injection", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [not_disabled.clone()]}),
        ),
        webhook(
            "rev.object.sidecar-injector.istio.io",
            json!({"matchExpressions": [expr("istio.io/rev", "DoesNotExist", &[]), expr("istio-injection", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [not_disabled.clone(), expr("istio.io/rev", "In", &[rev])]}),
        ),
    ];
    if p.revision.is_empty() {
        webhooks.push(webhook(
            "namespace.sidecar-injector.istio.io",
            json!({"matchExpressions": [expr("istio-injection", "In", &["enabled"])]}),
            json!({"matchExpressions": [not_disabled]}),
        ));
        webhooks.push(webhook("object.sidecar-injector.istio.io",
            json!({"matchExpressions": [expr("istio-injection", "DoesNotExist", &[]), expr("istio.io/rev", "DoesNotExist", &[])]}),
            json!({"matchExpressions": [expr("sidecar.istio.io/inject", "In", &["true"]), expr("istio.io/rev", "DoesNotExist", &[])]})));
    }
    out.push(json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": p.injector_webhook(), "labels": pl(json!({"app": "sidecar-injector", "release": "istio"}))},
        "webhooks": webhooks}));
    // Ingress gateways.
    for (name, g) in &p.gateways {
        let gl = |extra: Value| p.labels("IngressGateways", extra);
        let mut sel = json!({"app": "istio-ingressgateway", "istio": "ingressgateway"});
        if let Some(l) = g.get("label").and_then(Value::as_object) {
            for (k, v) in l {
                sel[k] = v.clone();
            }
        }
        let gns = s(g, "/namespace").unwrap_or_else(|| ns.to_string());
        out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": format!("{name}-service-account"), "namespace": gns, "labels": gl(sel.clone())}}));
        out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": gns, "labels": gl(sel.clone())},
            "spec": {"replicas": 1, "selector": {"matchLabels": sel},
                "template": {"metadata": {"labels": sel, "annotations": {"inject.istio.io/templates": "gateway", "sidecar.istio.io/inject": "true"}},
                    "spec": {"serviceAccountName": format!("{name}-service-account"),
                        "containers": [{"name": "istio-proxy", "image": "auto"}]}}}}));
        let ports = g.pointer("/k8s/service/ports").cloned().unwrap_or(
            json!([{"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
                {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]),
        );
        out.push(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": gns, "labels": gl(sel.clone())},
            "spec": {"type": "LoadBalancer", "selector": sel, "ports": ports}}));
    }
    out
}

/// Run the installer: Ok(pod log) after creating the objects, Err(pod log) on failure.
pub fn run(cluster: &Cluster, job: &Value, inv: &Invocation) -> Result<String, String> {
    let iop = read_iop(cluster, job, inv)?;
    let p = plan(&iop, &inv.image);
    let nskey = key("", "namespaces");
    if cluster.store.get(&nskey, "", &p.ns).is_none() {
        let mut labels = json!({});
        if let Some(n) = &p.network {
            labels["topology.istio.io/network"] = json!(n);
        }
        let _ = cluster.create_internal(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": p.ns, "labels": labels}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}));
    } else if cluster
        .store
        .get(&nskey, "", &p.ns)
        .is_some_and(|n| object::is_deleting(&n))
    {
        return Err(format!(
            "Error: failed to install manifests: namespace {} is being terminated\n",
            p.ns
        ));
    }
    let objects = manifests(&p, &cluster.pki.ca_pem);
    let count = objects.len();
    for obj in objects {
        if let Err(e) = cluster.apply_internal(obj, "istio-operator") {
            return Err(format!("Error: failed to install manifests: {e}\n"));
        }
    }
    let mut log = String::new();
    log.push_str("✔ Istio core installed ⛵️\n");
    if p.pilot_enabled {
        log.push_str("✔ Istiod installed 🧠\n");
    }
    if !p.gateways.is_empty() {
        log.push_str("✔ Ingress gateways installed 🛬\n");
    }
    log.push_str("✔ Installation complete\n");
    log.push_str(&format!(
        "kube-sim: applied {count} objects for IstioOperator {} (revision {}, cluster {}, mesh {}, network {})\n",
        p.owner.as_deref().unwrap_or("<unnamed>"),
        if p.revision.is_empty() { "default" } else { &p.revision },
        p.cluster_name,
        p.mesh_id.as_deref().unwrap_or(""),
        p.network.as_deref().unwrap_or("")
    ));
    Ok(log)
}
