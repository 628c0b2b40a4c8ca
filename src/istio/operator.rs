//! The control plane as Istio's own installer sees it: the IstioOperator for one cluster, the
//! in-cluster installer (a Job running `istioctl install -f` under a temporary cluster-admin
//! ServiceAccount, the IstioOperator mounted from a ConfigMap), what a running control plane
//! shows (its version, the installer pod's state), and the owner-label selection that removes
//! the install again.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, Pod, PodSecurityContext, PodSpec, PodTemplateSpec,
    SecurityContext, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};

/// Primary (runs istiod) or remote (uses a primary's istiod through its east-west gateway).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Remote,
}

/// What the user asks of the control plane of one cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlPlane {
    pub version: String,
    pub hub: String,
    pub role: Role,
    /// A primary that also serves remote clusters.
    pub external_istiod: bool,
    pub remote_pilot_address: Option<String>,
    pub primary_cluster_name: Option<String>,
    pub revision: Option<String>,
    /// User values (a JSON object), deep-merged under `spec.values`.
    pub values: Value,
    /// User mesh config (a JSON object), `spec.meshConfig`.
    pub mesh_config: Value,
}

/// The cluster's identity in the mesh.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity<'a> {
    pub cluster_name: &'a str,
    pub mesh_id: &'a str,
    pub network: &'a str,
    pub namespace: &'a str,
}

/// `metadata.name` of the IstioOperator: distinct per cluster and revision, so that istioctl's
/// prune and uninstall never reach objects of another install (e.g. an east-west gateway).
pub fn operator_name(cluster_name: &str, revision: Option<&str>) -> String {
    match revision {
        Some(r) if !r.is_empty() => format!("mesh-{cluster_name}-{r}"),
        _ => format!("mesh-{cluster_name}"),
    }
}

/// The revision name Istio reserves for the unrevisioned control plane. `--revision default`
/// is dropped by istioctl's flag handling, but `spec.revision: default` in an IstioOperator
/// becomes `values.revision=default`, and the charts then name everything after it
/// (`istiod-default`, `istio-sidecar-injector-default`): it cannot mean "no revision".
pub const RESERVED_REVISION: &str = "default";

/// `-<revision>` as the charts append it to object names (`istiod-<rev>`): any non-empty
/// revision, `default` included.
pub fn revision_suffix(revision: Option<&str>) -> String {
    revision
        .filter(|r| !r.is_empty())
        .map(|r| format!("-{r}"))
        .unwrap_or_default()
}

/// Name of the sidecar injector's MutatingWebhookConfiguration, as istio-discovery's
/// `mutatingwebhook.yaml` names it: `istio-sidecar-injector[-<rev>]`, with `-<namespace>`
/// appended when the control plane is not in `istio-system` (webhook configurations are
/// cluster-scoped, so two installs in different namespaces must not collide).
pub fn injector_webhook_name(namespace: &str, revision: Option<&str>) -> String {
    let base = format!("istio-sidecar-injector{}", revision_suffix(revision));
    if namespace == "istio-system" {
        base
    } else {
        format!("{base}-{namespace}")
    }
}

/// Merges `overlay` into `base`: objects key by key, anything else replaced.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                deep_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn pointer_set(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for key in path {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = cur
            .as_object_mut()
            .expect("just made an object")
            .entry(key.to_string())
            .or_insert(Value::Null);
    }
    *cur = value;
}

/// istiod's env switch for multi-root trust bundles (a root bundle may grow or shrink).
pub const MULTIROOT_ENV: &str = "ISTIO_MULTIROOT_MESH";
/// Proxy metadata that lets proxies take trust-bundle changes over xDS.
pub const XDS_AGENT_METADATA: &str = "PROXY_CONFIG_XDS_AGENT";

/// The IstioOperator for this cluster, and the multicluster keys the user's `values` tried to
/// set (ours win on those; the caller warns).
pub fn istio_operator(id: &Identity<'_>, cp: &ControlPlane) -> (Value, Vec<String>) {
    let mut ours: Vec<(Vec<&str>, Value)> = vec![
        (vec!["global", "meshID"], json!(id.mesh_id)),
        (
            vec!["global", "multiCluster", "clusterName"],
            json!(id.cluster_name),
        ),
        (vec!["global", "network"], json!(id.network)),
    ];
    if id.namespace != "istio-system" {
        ours.push((vec!["global", "istioNamespace"], json!(id.namespace)));
    }
    match cp.role {
        Role::Primary if cp.external_istiod => {
            ours.push((vec!["global", "externalIstiod"], json!(true)));
        }
        Role::Primary => {}
        Role::Remote => {
            if let Some(a) = &cp.remote_pilot_address {
                ours.push((vec!["global", "remotePilotAddress"], json!(a)));
            }
            ours.push((
                vec!["istiodRemote", "injectionPath"],
                json!(format!(
                    "/inject/cluster/{}/net/{}",
                    id.cluster_name, id.network
                )),
            ));
        }
    }
    // Staged root rotation needs istiod to accept a root bundle that grows or shrinks
    // (`ISTIO_MULTIROOT_MESH`) and proxies to take new roots over xDS without a restart
    // (`PROXY_CONFIG_XDS_AGENT`): on from the first install, so a rotation never needs a
    // reinstall. The user's values and mesh config may still turn them off.
    let mut values = json!({"pilot": {"env": {MULTIROOT_ENV: "true"}}});
    if cp.values.is_object() {
        deep_merge(&mut values, &cp.values);
    }
    let mut overridden = Vec::new();
    for (path, value) in ours {
        let user = path.iter().try_fold(&values, |v, k| v.get(*k));
        if user.is_some_and(|u| *u != value) {
            overridden.push(path.join("."));
        }
        pointer_set(&mut values, &path, value);
    }
    let mut spec = json!({
        "profile": if cp.role == Role::Remote { "remote" } else { "default" },
        "hub": cp.hub,
        "tag": cp.version,
        "values": values,
    });
    if id.namespace != "istio-system" {
        spec["namespace"] = json!(id.namespace);
    }
    if let Some(r) = cp.revision.as_deref().filter(|r| !r.is_empty()) {
        spec["revision"] = json!(r);
    }
    let mut mesh_config = json!({"defaultConfig": {"proxyMetadata": {XDS_AGENT_METADATA: "true"}}});
    if cp.mesh_config.is_object() {
        deep_merge(&mut mesh_config, &cp.mesh_config);
    }
    spec["meshConfig"] = mesh_config;
    let iop = json!({
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "metadata": {
            "name": operator_name(id.cluster_name, cp.revision.as_deref()),
            "namespace": id.namespace,
        },
        "spec": spec,
    });
    (iop, overridden)
}

/// SHA-256 of the rendered IstioOperator: whether the installer must run again.
pub fn digest(iop: &Value) -> String {
    let bytes = serde_json::to_vec(iop).unwrap_or_default();
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The installer

/// Where the IstioOperator is mounted in the installer pod.
const MOUNT: &str = "/etc/mesh-installer";
const FILE: &str = "istio-operator.yaml";

/// Names of the installer's temporary objects for one IstioOperator.
#[derive(Clone, Debug, PartialEq)]
pub struct Installer {
    pub namespace: String,
    /// ConfigMap, ServiceAccount and Job name.
    pub name: String,
    /// ClusterRoleBinding name (cluster-scoped, so it carries the namespace too).
    pub binding: String,
}

impl Installer {
    pub fn new(namespace: &str, operator_name: &str) -> Self {
        let name = format!("{operator_name}-installer");
        Self {
            namespace: namespace.into(),
            binding: format!("{name}-{namespace}"),
            name,
        }
    }

    fn meta(&self, name: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        }
    }

    /// The ConfigMap holding the IstioOperator (JSON is valid YAML).
    pub fn config_map(&self, iop: &Value, labels: &BTreeMap<String, String>) -> ConfigMap {
        ConfigMap {
            metadata: self.meta(&self.name, labels),
            data: Some(BTreeMap::from([(
                FILE.to_string(),
                serde_json::to_string_pretty(iop).unwrap_or_default(),
            )])),
            ..Default::default()
        }
    }

    pub fn service_account(&self, labels: &BTreeMap<String, String>) -> ServiceAccount {
        ServiceAccount {
            metadata: self.meta(&self.name, labels),
            ..Default::default()
        }
    }

    /// istioctl creates ClusterRoles and webhooks: Kubernetes' escalation rules make that
    /// cluster-admin in practice. The binding lives only while the installer runs.
    pub fn binding(&self, labels: &BTreeMap<String, String>) -> ClusterRoleBinding {
        ClusterRoleBinding {
            metadata: ObjectMeta {
                name: Some(self.binding.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: "cluster-admin".into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: self.name.clone(),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            }]),
        }
    }

    /// The Job running `<hub>/istioctl:<version> install -f ... -y`.
    pub fn job(
        &self,
        cp: &ControlPlane,
        readiness_timeout_s: u64,
        labels: &BTreeMap<String, String>,
        pod_annotations: &BTreeMap<String, String>,
    ) -> Job {
        let mut args = vec![
            "install".to_string(),
            "-f".into(),
            format!("{MOUNT}/{FILE}"),
            "-y".into(),
            "--readiness-timeout".into(),
            format!("{readiness_timeout_s}s"),
        ];
        if let Some(r) = cp.revision.as_deref().filter(|r| !r.is_empty()) {
            args.extend(["--revision".into(), r.into()]);
        }
        let mut pod_labels = labels.clone();
        pod_labels.insert("app".into(), self.name.clone());
        Job {
            metadata: self.meta(&self.name, labels),
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        // The installer must not get a sidecar from a previous install.
                        annotations: Some({
                            let mut a = pod_annotations.clone();
                            a.entry("sidecar.istio.io/inject".into())
                                .or_insert_with(|| "false".into());
                            a
                        }),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        service_account_name: Some(self.name.clone()),
                        restart_policy: Some("Never".into()),
                        security_context: Some(PodSecurityContext {
                            run_as_non_root: Some(true),
                            run_as_user: Some(1000),
                            ..Default::default()
                        }),
                        containers: vec![Container {
                            name: "istioctl".into(),
                            image: Some(format!("{}/istioctl:{}", cp.hub, cp.version)),
                            args: Some(args),
                            volume_mounts: Some(vec![VolumeMount {
                                name: "istio-operator".into(),
                                mount_path: MOUNT.into(),
                                read_only: Some(true),
                                ..Default::default()
                            }]),
                            security_context: Some(SecurityContext {
                                allow_privilege_escalation: Some(false),
                                read_only_root_filesystem: Some(true),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        volumes: Some(vec![Volume {
                            name: "istio-operator".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: self.name.clone(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a running control plane shows

/// One line on the installer pod: phase, why it is not running, and each container's state,
/// e.g. `pod mesh-c1-installer-x2k4q: Failed, container istioctl exited 1 (Error)`.
pub fn pod_status(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let status = pod.status.clone().unwrap_or_default();
    let mut parts = vec![status.phase.clone().unwrap_or_else(|| "Unknown".into())];
    if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        parts.push(with_message(reason, status.message.as_deref()));
    }
    // Unschedulable and the like: the pod never got to run the installer.
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            let reason = c.reason.as_deref().unwrap_or("not scheduled");
            parts.push(with_message(reason, c.message.as_deref()));
        }
    }
    let containers = status.container_statuses.unwrap_or_default();
    if containers.is_empty() {
        parts.push("no container status yet".into());
    }
    for c in containers {
        let state = c.state.unwrap_or_default();
        let text = if let Some(t) = state.terminated {
            let reason = t.reason.map(|r| format!(" ({r})")).unwrap_or_default();
            format!("exited {}{reason}", t.exit_code)
        } else if let Some(w) = state.waiting {
            let reason = w.reason.as_deref().unwrap_or("waiting");
            format!("waiting: {}", with_message(reason, w.message.as_deref()))
        } else if state.running.is_some() {
            "running".into()
        } else {
            "state unknown".into()
        };
        parts.push(format!("container {} {text}", c.name));
    }
    format!("pod {name}: {}", parts.join(", "))
}

fn with_message(reason: &str, message: Option<&str>) -> String {
    match message.filter(|m| !m.is_empty()) {
        Some(m) => format!("{reason} ({m})"),
        None => reason.to_string(),
    }
}

/// The image of istiod's `discovery` container (else its first).
pub fn istiod_image(d: &Deployment) -> Option<String> {
    let containers = &d.spec.as_ref()?.template.spec.as_ref()?.containers;
    containers
        .iter()
        .find(|c| c.name == "discovery")
        .or_else(|| containers.first())?
        .image
        .clone()
}

/// Whether an istiod Deployment runs with `EXTERNAL_ISTIOD=true` (what
/// `values.global.externalIstiod` renders), i.e. leads for remote clusters. A remote whose
/// primary's istiod lacks it cannot work; a verification that sees both can say so.
pub fn serves_remotes(istiod: &Deployment) -> bool {
    let Some(pod) = istiod.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return false;
    };
    pod.containers
        .iter()
        .filter(|c| c.name == "discovery")
        .flat_map(|c| c.env.iter().flatten())
        .any(|e| e.name == "EXTERNAL_ISTIOD" && e.value.as_deref() == Some("true"))
}

/// The version a control plane object shows: istioctl's `operator.istio.io/version` label;
/// without it (istiod installed or edited by other means) the tag of istiod's image; only
/// when neither tells, the configured version.
pub fn version_of(
    labels: &BTreeMap<String, String>,
    image: Option<&str>,
    configured: &str,
) -> String {
    labels
        .get("operator.istio.io/version")
        .filter(|v| !v.is_empty())
        .cloned()
        .or_else(|| image.and_then(image_version).map(str::to_string))
        .unwrap_or_else(|| configured.to_string())
}

/// The Istio version in an image reference's tag (`docker.io/istio/pilot:1.30.3-distroless`
/// → `1.30.3`); `None` for an untagged, digest-only or non-version (`latest`) reference.
fn image_version(image: &str) -> Option<&str> {
    let last = image.rsplit('/').next()?;
    let named = last.split('@').next()?;
    let (_, tag) = named.rsplit_once(':')?;
    let tag = ["-distroless", "-debug"]
        .iter()
        .find_map(|v| tag.strip_suffix(v))
        .unwrap_or(tag);
    tag.starts_with(|c: char| c.is_ascii_digit()).then_some(tag)
}

// ---------------------------------------------------------------------------------------------
// Uninstall

/// The label selector matching everything `istioctl install -f` created for this IstioOperator
/// (its owner labels; istioctl stamps them on every object it applies). Unlike `istioctl
/// uninstall -f` without `--purge` (facts §3.3), it has no component filter, so Base (the
/// reader ServiceAccount, the base RBAC, the validating webhook) goes too: a destroy leaves
/// nothing of the install. CRDs are only removed when asked ([`CRD_KIND`]).
pub fn owner_selector(operator_name: &str, namespace: &str) -> String {
    format!(
        "install.operator.istio.io/owning-resource={operator_name},install.operator.istio.io/owning-resource-namespace={namespace},operator.istio.io/component"
    )
}

/// One kind uninstall looks at: (group, version, kind, plural, namespaced).
pub type KindRef = (&'static str, &'static str, &'static str, &'static str, bool);

/// The kinds istioctl prunes and uninstalls, in deletion order (workloads first, RBAC and
/// webhooks last). CRDs are separate: removing them deletes every Istio resource.
pub const UNINSTALL_KINDS: &[KindRef] = &[
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
    ),
    ("", "v1", "Service", "services", true),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    ),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    (
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
    ),
];

/// CustomResourceDefinitions, removed only on request.
pub const CRD_KIND: KindRef = (
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    false,
);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
        PodCondition, PodStatus,
    };

    fn id() -> Identity<'static> {
        Identity {
            cluster_name: "east",
            mesh_id: "mesh1",
            network: "net1",
            namespace: "istio-system",
        }
    }

    fn cp(role: Role) -> ControlPlane {
        ControlPlane {
            version: "1.30.3".into(),
            hub: "docker.io/istio".into(),
            role,
            external_istiod: false,
            remote_pilot_address: None,
            primary_cluster_name: None,
            revision: None,
            values: json!({}),
            mesh_config: json!({}),
        }
    }

    #[test]
    fn primary_carries_the_multicluster_values() {
        let mut c = cp(Role::Primary);
        c.external_istiod = true;
        c.values = json!({"pilot": {"env": {"X": "1"}}, "global": {"network": "other", "logging": {"level": "debug"}}});
        let (iop, overridden) = istio_operator(&id(), &c);
        assert_eq!(iop["metadata"]["name"], "mesh-east");
        assert_eq!(iop["spec"]["profile"], "default");
        assert_eq!(iop["spec"]["tag"], "1.30.3");
        let g = &iop["spec"]["values"]["global"];
        assert_eq!(g["meshID"], "mesh1");
        assert_eq!(g["multiCluster"]["clusterName"], "east");
        assert_eq!(g["network"], "net1");
        assert_eq!(g["externalIstiod"], true);
        assert_eq!(g["logging"]["level"], "debug", "user values kept");
        assert_eq!(iop["spec"]["values"]["pilot"]["env"]["X"], "1");
        assert_eq!(overridden, ["global.network"]);
    }

    #[test]
    fn remote_points_at_the_primary() {
        let mut c = cp(Role::Remote);
        c.remote_pilot_address = Some("10.0.0.9".into());
        c.revision = Some("canary".into());
        let (iop, _) = istio_operator(&id(), &c);
        assert_eq!(iop["metadata"]["name"], "mesh-east-canary");
        assert_eq!(iop["spec"]["profile"], "remote");
        assert_eq!(iop["spec"]["revision"], "canary");
        assert_eq!(
            iop["spec"]["values"]["global"]["remotePilotAddress"],
            "10.0.0.9"
        );
        assert_eq!(
            iop["spec"]["values"]["istiodRemote"]["injectionPath"],
            "/inject/cluster/east/net/net1"
        );
    }

    #[test]
    fn installer_job_runs_istioctl_on_the_mounted_operator() {
        let inst = Installer::new("istio-system", "mesh-east");
        let job = inst.job(&cp(Role::Primary), 300, &BTreeMap::new(), &BTreeMap::new());
        let pod = job.spec.unwrap().template;
        let spec = pod.spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.image.as_deref(), Some("docker.io/istio/istioctl:1.30.3"));
        assert_eq!(
            c.args.as_ref().unwrap().join(" "),
            "install -f /etc/mesh-installer/istio-operator.yaml -y --readiness-timeout 300s"
        );
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some("mesh-east-installer")
        );
        assert_eq!(
            spec.volumes.unwrap()[0].config_map.as_ref().unwrap().name,
            "mesh-east-installer"
        );
        assert_eq!(
            pod.metadata.unwrap().annotations.unwrap()["sidecar.istio.io/inject"],
            "false"
        );
        assert_eq!(
            inst.binding(&BTreeMap::new()).role_ref.name,
            "cluster-admin"
        );
    }

    #[test]
    fn injector_webhook_follows_the_chart_naming() {
        assert_eq!(
            injector_webhook_name("istio-system", None),
            "istio-sidecar-injector"
        );
        assert_eq!(
            injector_webhook_name("istio-system", Some("canary")),
            "istio-sidecar-injector-canary"
        );
        assert_eq!(
            injector_webhook_name("mesh-remote", None),
            "istio-sidecar-injector-mesh-remote"
        );
        assert_eq!(
            injector_webhook_name("mesh-remote", Some("canary")),
            "istio-sidecar-injector-canary-mesh-remote"
        );
        // The charts append any non-empty revision, "default" included.
        assert_eq!(revision_suffix(Some("default")), "-default");
        assert_eq!(revision_suffix(Some("")), "");
    }

    #[test]
    fn serves_remotes_reads_external_istiod_on_discovery() {
        let istiod = |env: serde_json::Value| -> Deployment {
            serde_json::from_value(json!({"spec": {"selector": {}, "template": {"spec": {
                "containers": [{"name": "discovery", "env": env}]}}}}))
            .unwrap()
        };
        assert!(serves_remotes(&istiod(json!([
            {"name": "PILOT_CERT_PROVIDER", "value": "istiod"},
            {"name": "EXTERNAL_ISTIOD", "value": "true"}
        ]))));
        assert!(!serves_remotes(&istiod(
            json!([{"name": "EXTERNAL_ISTIOD", "value": "false"}])
        )));
        assert!(!serves_remotes(&istiod(json!([]))));
        assert!(!serves_remotes(&Deployment::default()));
    }

    #[test]
    fn deep_merge_merges_objects_and_replaces_the_rest() {
        let mut a = json!({"a": {"b": 1, "c": [1]}, "d": 1});
        deep_merge(&mut a, &json!({"a": {"c": [2], "e": 3}}));
        assert_eq!(a, json!({"a": {"b": 1, "c": [2], "e": 3}, "d": 1}));
    }

    #[test]
    fn digest_tracks_the_rendered_operator() {
        let (a, _) = istio_operator(&id(), &cp(Role::Primary));
        let mut c = cp(Role::Primary);
        c.version = "1.30.4".into();
        let (b, _) = istio_operator(&id(), &c);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&a.clone()));
    }

    #[test]
    fn version_comes_from_the_label_then_the_image_then_the_configuration() {
        let label = BTreeMap::from([("operator.istio.io/version".to_string(), "1.30.4".into())]);
        let none = BTreeMap::new();
        let image = Some("docker.io/istio/pilot:1.29.1");
        assert_eq!(version_of(&label, image, "1.30.3"), "1.30.4");
        assert_eq!(version_of(&none, image, "1.30.3"), "1.29.1");
        assert_eq!(
            version_of(
                &none,
                Some("mirror.corp:5000/istio/pilot:1.28.0-distroless"),
                "x"
            ),
            "1.28.0"
        );
        assert_eq!(
            version_of(&none, Some("gcr.io/istio/pilot:1.27.2@sha256:abcd"), "x"),
            "1.27.2"
        );
        for unknown in [
            None,
            Some("mirror.corp:5000/istio/pilot"),
            Some("docker.io/istio/pilot@sha256:abcd"),
            Some("docker.io/istio/pilot:latest"),
        ] {
            assert_eq!(
                version_of(&none, unknown, "1.30.3"),
                "1.30.3",
                "{unknown:?}"
            );
        }
    }

    fn pod(status: PodStatus) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("mesh-c1-installer-x2k4q".into()),
                ..Default::default()
            },
            status: Some(status),
            ..Default::default()
        }
    }

    fn container(state: ContainerState) -> ContainerStatus {
        ContainerStatus {
            name: "istioctl".into(),
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn pod_status_names_phase_and_container_state() {
        let failed = pod(PodStatus {
            phase: Some("Failed".into()),
            container_statuses: Some(vec![container(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    reason: Some("Error".into()),
                    ..Default::default()
                }),
                ..Default::default()
            })]),
            ..Default::default()
        });
        assert_eq!(
            pod_status(&failed),
            "pod mesh-c1-installer-x2k4q: Failed, container istioctl exited 1 (Error)"
        );
        let pulling = pod(PodStatus {
            phase: Some("Pending".into()),
            container_statuses: Some(vec![container(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    message: Some("Back-off pulling image \"mirror/istioctl:1.30.3\"".into()),
                }),
                ..Default::default()
            })]),
            ..Default::default()
        });
        assert_eq!(
            pod_status(&pulling),
            "pod mesh-c1-installer-x2k4q: Pending, container istioctl waiting: ImagePullBackOff (Back-off pulling image \"mirror/istioctl:1.30.3\")"
        );
        let unschedulable = pod(PodStatus {
            phase: Some("Pending".into()),
            conditions: Some(vec![PodCondition {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
                message: Some("0/3 nodes are available".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(
            pod_status(&unschedulable),
            "pod mesh-c1-installer-x2k4q: Pending, Unschedulable (0/3 nodes are available), no container status yet"
        );
    }

    #[test]
    fn multi_root_trust_is_on_from_the_first_install_unless_turned_off() {
        let id = Identity {
            mesh_id: "mesh1",
            cluster_name: "c1",
            network: "net1",
            namespace: "istio-system",
        };
        let mut cp = cp(Role::Primary);
        let (iop, _) = istio_operator(&id, &cp);
        assert_eq!(iop["spec"]["values"]["pilot"]["env"][MULTIROOT_ENV], "true");
        assert_eq!(
            iop["spec"]["meshConfig"]["defaultConfig"]["proxyMetadata"][XDS_AGENT_METADATA],
            "true"
        );
        cp.values = json!({"pilot": {"env": {MULTIROOT_ENV: "false", "X": "1"}}});
        cp.mesh_config = json!({"accessLogFile": "/dev/stdout"});
        let (iop, _) = istio_operator(&id, &cp);
        assert_eq!(
            iop["spec"]["values"]["pilot"]["env"][MULTIROOT_ENV],
            "false"
        );
        assert_eq!(iop["spec"]["values"]["pilot"]["env"]["X"], "1");
        assert_eq!(iop["spec"]["meshConfig"]["accessLogFile"], "/dev/stdout");
        assert_eq!(
            iop["spec"]["meshConfig"]["defaultConfig"]["proxyMetadata"][XDS_AGENT_METADATA],
            "true"
        );
    }
}
