//! The resource types a cluster serves: built-in kinds and CRD-served kinds.

use serde_json::Value;

use crate::store::{ResKey, Store};

/// One served resource type at one version.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    /// Has a `status` subresource (status is ignored on main-resource writes).
    pub status: bool,
    /// Extra subresources besides status (`log`, `token`, `scale`).
    pub subresources: Vec<String>,
    /// Only `create` is served (reviews).
    pub create_only: bool,
    pub categories: Vec<String>,
}

impl ResourceInfo {
    pub fn key(&self) -> ResKey {
        ResKey::new(&self.group, &self.plural)
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

/// (group, versions (preferred first), kind, plural, namespaced, status, subresources, short names)
type Builtin = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    bool,
    bool,
    &'static [&'static str],
    &'static [&'static str],
);

const BUILTINS: &[Builtin] = &[
    (
        "",
        &["v1"],
        "Namespace",
        "namespaces",
        false,
        true,
        &["finalize"],
        &["ns"],
    ),
    (
        "",
        &["v1"],
        "Pod",
        "pods",
        true,
        true,
        &["log", "exec", "portforward", "proxy"],
        &["po"],
    ),
    (
        "",
        &["v1"],
        "Service",
        "services",
        true,
        true,
        &[],
        &["svc"],
    ),
    (
        "",
        &["v1"],
        "ConfigMap",
        "configmaps",
        true,
        false,
        &[],
        &["cm"],
    ),
    ("", &["v1"], "Secret", "secrets", true, false, &[], &[]),
    (
        "",
        &["v1"],
        "ServiceAccount",
        "serviceaccounts",
        true,
        false,
        &["token"],
        &["sa"],
    ),
    (
        "",
        &["v1"],
        "Endpoints",
        "endpoints",
        true,
        false,
        &[],
        &["ep"],
    ),
    ("", &["v1"], "Event", "events", true, false, &[], &["ev"]),
    ("", &["v1"], "Node", "nodes", false, true, &[], &["no"]),
    (
        "",
        &["v1"],
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        true,
        &[],
        &["pvc"],
    ),
    (
        "",
        &["v1"],
        "PersistentVolume",
        "persistentvolumes",
        false,
        true,
        &[],
        &["pv"],
    ),
    (
        "",
        &["v1"],
        "ResourceQuota",
        "resourcequotas",
        true,
        true,
        &[],
        &["quota"],
    ),
    (
        "",
        &["v1"],
        "LimitRange",
        "limitranges",
        true,
        false,
        &[],
        &["limits"],
    ),
    (
        "",
        &["v1"],
        "ReplicationController",
        "replicationcontrollers",
        true,
        true,
        &[],
        &["rc"],
    ),
    (
        "apps",
        &["v1"],
        "Deployment",
        "deployments",
        true,
        true,
        &["scale"],
        &["deploy"],
    ),
    (
        "apps",
        &["v1"],
        "ReplicaSet",
        "replicasets",
        true,
        true,
        &["scale"],
        &["rs"],
    ),
    (
        "apps",
        &["v1"],
        "StatefulSet",
        "statefulsets",
        true,
        true,
        &["scale"],
        &["sts"],
    ),
    (
        "apps",
        &["v1"],
        "DaemonSet",
        "daemonsets",
        true,
        true,
        &[],
        &["ds"],
    ),
    (
        "apps",
        &["v1"],
        "ControllerRevision",
        "controllerrevisions",
        true,
        false,
        &[],
        &[],
    ),
    ("batch", &["v1"], "Job", "jobs", true, true, &[], &[]),
    (
        "batch",
        &["v1"],
        "CronJob",
        "cronjobs",
        true,
        true,
        &[],
        &["cj"],
    ),
    (
        "rbac.authorization.k8s.io",
        &["v1"],
        "Role",
        "roles",
        true,
        false,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        &["v1"],
        "RoleBinding",
        "rolebindings",
        true,
        false,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        &["v1"],
        "ClusterRole",
        "clusterroles",
        false,
        false,
        &[],
        &[],
    ),
    (
        "rbac.authorization.k8s.io",
        &["v1"],
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        false,
        &[],
        &[],
    ),
    (
        "policy",
        &["v1"],
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        true,
        &[],
        &["pdb"],
    ),
    (
        "autoscaling",
        &["v2", "v1"],
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        true,
        &[],
        &["hpa"],
    ),
    (
        "admissionregistration.k8s.io",
        &["v1"],
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        false,
        &[],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        &["v1"],
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        false,
        &[],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        &["v1"],
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        false,
        true,
        &[],
        &[],
    ),
    (
        "admissionregistration.k8s.io",
        &["v1"],
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        false,
        false,
        &[],
        &[],
    ),
    (
        "apiextensions.k8s.io",
        &["v1"],
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        true,
        &[],
        &["crd", "crds"],
    ),
    (
        "networking.k8s.io",
        &["v1"],
        "NetworkPolicy",
        "networkpolicies",
        true,
        false,
        &[],
        &["netpol"],
    ),
    (
        "networking.k8s.io",
        &["v1"],
        "Ingress",
        "ingresses",
        true,
        true,
        &[],
        &["ing"],
    ),
    (
        "discovery.k8s.io",
        &["v1"],
        "EndpointSlice",
        "endpointslices",
        true,
        false,
        &[],
        &[],
    ),
    (
        "coordination.k8s.io",
        &["v1"],
        "Lease",
        "leases",
        true,
        false,
        &[],
        &[],
    ),
    (
        "storage.k8s.io",
        &["v1"],
        "StorageClass",
        "storageclasses",
        false,
        false,
        &[],
        &["sc"],
    ),
];

/// Create-only review resources (group, version, kind, plural, namespaced).
const REVIEWS: &[(&str, &str, &str, &str, bool)] = &[
    (
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
    ),
];

fn builtin_info(b: &Builtin, version: &str) -> ResourceInfo {
    let (group, _, kind, plural, namespaced, status, subs, shorts) = *b;
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: shorts.iter().map(|s| s.to_string()).collect(),
        status,
        subresources: subs.iter().map(|s| s.to_string()).collect(),
        create_only: false,
        categories: if matches!(
            plural,
            "pods"
                | "services"
                | "deployments"
                | "replicasets"
                | "statefulsets"
                | "daemonsets"
                | "jobs"
                | "cronjobs"
                | "horizontalpodautoscalers"
                | "replicationcontrollers"
        ) {
            vec!["all".into()]
        } else {
            vec![]
        },
    }
}

fn review_info(r: &(&str, &str, &str, &str, bool)) -> ResourceInfo {
    ResourceInfo {
        group: r.0.into(),
        version: r.1.into(),
        kind: r.2.into(),
        plural: r.3.into(),
        singular: r.2.to_lowercase(),
        namespaced: r.4,
        short_names: vec![],
        status: false,
        subresources: vec![],
        create_only: true,
        categories: vec![],
    }
}

/// Every served (group, versions preferred-first) — built-ins then CRD groups.
pub fn groups(store: &Store) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut add = |g: &str, v: &str| {
        if let Some(e) = out.iter_mut().find(|(n, _)| n == g) {
            if !e.1.iter().any(|x| x == v) {
                e.1.push(v.to_string());
            }
        } else {
            out.push((g.to_string(), vec![v.to_string()]));
        }
    };
    for b in BUILTINS {
        for v in b.1 {
            add(b.0, v);
        }
    }
    for r in REVIEWS {
        add(r.0, r.1);
    }
    for crd in crds(store) {
        for v in crd_versions(&crd) {
            add(&crd_group(&crd), &v.0);
        }
    }
    out
}

/// All resources served at group/version.
pub fn resources_in(store: &Store, group: &str, version: &str) -> Vec<ResourceInfo> {
    let mut out = Vec::new();
    for b in BUILTINS
        .iter()
        .filter(|b| b.0 == group && b.1.contains(&version))
    {
        out.push(builtin_info(b, version));
    }
    for r in REVIEWS.iter().filter(|r| r.0 == group && r.1 == version) {
        out.push(review_info(r));
    }
    for crd in crds(store) {
        if crd_group(&crd) != group {
            continue;
        }
        for (v, status) in crd_versions(&crd) {
            if v == version {
                out.push(crd_info(&crd, &v, status));
            }
        }
    }
    out
}

/// Look up one resource by group, version and plural.
pub fn resolve(store: &Store, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
    if let Some(b) = BUILTINS
        .iter()
        .find(|b| b.0 == group && b.3 == plural && b.1.contains(&version))
    {
        return Some(builtin_info(b, version));
    }
    if let Some(r) = REVIEWS
        .iter()
        .find(|r| r.0 == group && r.1 == version && r.3 == plural)
    {
        return Some(review_info(r));
    }
    resources_in(store, group, version)
        .into_iter()
        .find(|r| r.plural == plural)
}

/// Info for any stored resource key (built-in or CRD), at its preferred/storage version.
pub fn by_key(store: &Store, key: &ResKey) -> Option<ResourceInfo> {
    if let Some(b) = BUILTINS
        .iter()
        .find(|b| b.0 == key.group && b.3 == key.resource)
    {
        return Some(builtin_info(b, b.1[0]));
    }
    for crd in crds(store) {
        if crd_group(&crd) == key.group && crd_plural(&crd) == key.resource {
            let versions = crd_versions(&crd);
            let (v, st) = versions.first()?;
            return Some(crd_info(&crd, v, *st));
        }
    }
    None
}

pub fn crd_key() -> ResKey {
    ResKey::new("apiextensions.k8s.io", "customresourcedefinitions")
}

fn crds(store: &Store) -> Vec<std::sync::Arc<Value>> {
    store.list(&crd_key(), None).0
}

pub fn crd_group(crd: &Value) -> String {
    crd.pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

pub fn crd_plural(crd: &Value) -> String {
    crd.pointer("/spec/names/plural")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Served versions (storage version first), each with "has status subresource".
fn crd_versions(crd: &Value) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool, bool)> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
                .filter_map(|v| {
                    let name = v.get("name")?.as_str()?.to_string();
                    let storage = v.get("storage").and_then(Value::as_bool).unwrap_or(false);
                    let status = v.pointer("/subresources/status").is_some();
                    Some((name, storage, status))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(_, storage, _)| !*storage);
    out.into_iter().map(|(n, _, s)| (n, s)).collect()
}

fn crd_info(crd: &Value, version: &str, status: bool) -> ResourceInfo {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(Value::Null);
    let s = |k: &str| {
        names
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let kind = s("kind");
    let singular = if s("singular").is_empty() {
        kind.to_lowercase()
    } else {
        s("singular")
    };
    let list = |k: &str| {
        names
            .get(k)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    ResourceInfo {
        group: crd_group(crd),
        version: version.into(),
        kind,
        plural: s("plural"),
        singular,
        namespaced: crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster"),
        short_names: list("shortNames"),
        status,
        subresources: vec![],
        create_only: false,
        categories: list("categories"),
    }
}

/// What the apiextensions controller reports for an accepted CRD: names accepted, established.
pub fn establish_crd(obj: &mut Value) {
    let names = obj
        .pointer("/spec/names")
        .cloned()
        .unwrap_or(serde_json::json!({}));
    let stored: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let now = crate::object::now_rfc3339();
    obj["status"] = serde_json::json!({
        "acceptedNames": names,
        "storedVersions": stored,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now}
        ]
    });
}
