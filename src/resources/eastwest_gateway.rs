//! `mesh_eastwest_gateway`: a cluster's east-west gateway (the provider's own objects, not an
//! IstioOperator), the Gateway CRs exposing services and istiod through it, and its load
//! balancer address for remote clusters to use.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::istio::eastwest::{self, Gateway, GatewaySpec, VirtualService};
use crate::istio::{self as istio_names};
use crate::kube::wait::wait_for;
use crate::kube::{connect, labels, Cluster, Deadline, KubeError};
use crate::plugin::resource::{timeout, timeouts_block, validate_timeouts};
use crate::plugin::{
    Applied, Attribute, AttributePath, Block, Change, Ctx, Diagnostics, Failure, Plan, Resource,
    Schema, Value,
};
use crate::resources::kubernetes;

pub struct EastWestGateway;

const DESCRIPTION: &str = "The east-west gateway of one cluster: the gateway that carries cross-network traffic (multi-network meshes) and, optionally, exposes istiod to remote clusters (primary-remote). It is what the seeds' `gen-eastwest-gateway.sh`, `expose-services.yaml` and `expose-istiod.yaml` steps install, as the provider's own objects rather than an IstioOperator:

- ServiceAccount, Role and RoleBinding (read secrets, for SDS) named `name`;
- a Deployment relying on Istio's gateway injection (`inject.istio.io/templates: gateway`, container `istio-proxy` with `image: auto`, `ISTIO_META_REQUESTED_NETWORK_VIEW=<network>`, labels `app: <name>`, `istio: <name without \"istio-\">`, `topology.istio.io/network`, `istio.io/rev` when `revision` is set, hardened security context), and a PodDisruptionBudget when `replicas` > 1;
- a Service of `service_type` labelled `topology.istio.io/network` (that makes istiod use it as the network's gateway) with ports `status-port` 15021, `tls` 15443, `tls-istiod` 15012, `tls-webhook` 15017;
- with `expose_services`, Gateway `cross-network-gateway` (15443, `AUTO_PASSTHROUGH`, `*.local`); with `expose_istiod`, Gateway `istiod-gateway` and VirtualService `istiod-vs` (15012 and 15017 passed through to istiod). Gateways with another `name` get these names suffixed with `-<name without \"istio-\">`.

Istio's CRDs and its sidecar injector must exist before this resource is created: make it depend on the resource that installs istiod (`depends_on`).

With `wait_for_address` (and a `LoadBalancer` Service), apply waits on a watch until the load balancer has an address and exports it as `address`, so a remote cluster's `control_plane { remote_pilot_address = mesh_eastwest_gateway.primary.address }` works in one plan. If no address arrives within the timeout, the apply fails naming the Service and the usual causes; the objects are kept, and the next apply adopts them and resumes waiting (the load balancer being provisioned is not released).

Drift is repaired: objects deleted or edited out of band show in `objects` in the next plan and are put back by apply; a changed load balancer address updates `address`; if every object is gone, the resource is planned for creation again. Destroy deletes the Gateway CRs, the Deployment, then the Service — waiting until it is gone, so the cloud load balancer is released before, for instance, its network is destroyed — then the RBAC and the ServiceAccount.";

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
const READ_TIMEOUT: Duration = Duration::from_secs(5 * 60);

const SERVICE_TYPES: [&str; 3] = ["LoadBalancer", "NodePort", "ClusterIP"];

/// `objects` values.
const IN_SYNC: &str = "in-sync";
const MISSING: &str = "missing";
const MODIFIED: &str = "modified";

// ---------------------------------------------------------------------------------------------
// Schema

fn schema() -> Schema {
    Schema::new(
        0,
        Block::new(DESCRIPTION)
            .attr(Attribute::string("network", "The network this cluster is on (`topology.istio.io/network`, the same value as the cluster's `mesh_cluster.network`). The gateway serves traffic into this network.").required())
            .attr(Attribute::string("namespace", "Namespace of the gateway, normally istiod's.").default("istio-system").force_new())
            .attr(Attribute::string("name", "Name of the gateway's Deployment, Service, ServiceAccount and RBAC: a DNS-1035 label. The pods are labelled `app: <name>` and `istio: <name without \"istio-\">`.").default(eastwest::DEFAULT_NAME).force_new())
            .attr(Attribute::string("revision", "Istio revision whose injector fills in the gateway's proxy (`istio.io/rev` pod label); also routes `expose_istiod` to `istiod-<revision>`. Omit for the default revision.").optional())
            .attr(Attribute::bool("expose_services", "Expose the cluster's services to other networks: Gateway `cross-network-gateway` (port 15443, TLS `AUTO_PASSTHROUGH`, hosts `*.local`). Needed in multi-network meshes.").default(true))
            .attr(Attribute::bool("expose_istiod", "Expose istiod to remote clusters: Gateway `istiod-gateway` and VirtualService `istiod-vs` (ports 15012 and 15017 passed through to istiod). Needed on a primary whose remotes are on another network.").default(false))
            .attr(Attribute::string("istiod_namespace", "Namespace of the istiod that `expose_istiod` routes to (`istiod[-<revision>].<istiod_namespace>.svc.cluster.local`). Omit it when the gateway runs in istiod's namespace (the usual setup); set it when the gateway has a namespace of its own, otherwise the VirtualService routes to a Service that does not exist and remote clusters lose their control plane. Apply warns when `expose_istiod` is set and no istiod Service is found there.").optional())
            .attr(Attribute::string("service_type", "Type of the gateway Service: `\"LoadBalancer\"`, `\"NodePort\"` or `\"ClusterIP\"`.").default("LoadBalancer"))
            .attr(Attribute::string_map("service_annotations", "Annotations of the gateway Service, e.g. `service.beta.kubernetes.io/aws-load-balancer-type = \"nlb\"`.").optional())
            .attr(Attribute::number("replicas", "Number of gateway pods (at least 1). With more than one, a PodDisruptionBudget keeps one available.").default(1))
            .attr(Attribute::bool("wait_for_address", "Wait until the `LoadBalancer` Service has an address (IP or hostname) and export it as `address`. Ignored for other service types.").default(true))
            .attr(Attribute::string("id", "`<namespace>/<name>`.").computed().stable())
            .attr(Attribute::string("service_name", "Name of the gateway Service.").computed().stable())
            .attr(Attribute::string("address", "The gateway's address: the first IP or hostname of the load balancer (`status.loadBalancer.ingress`), else the first of the Service's `externalIPs`; null when it has none. Use it as a remote cluster's `remote_pilot_address`.").computed().stable())
            .attr(Attribute::string_list("addresses", "All load-balancer addresses of the gateway Service (IPs or hostnames).").computed().stable())
            .attr(Attribute::string_map("objects", "The objects this resource manages, as `<Kind>/<name>`, each `\"in-sync\"` after apply. A refresh that finds one deleted or edited out of band marks it `\"missing\"` or `\"modified\"`, and the next apply puts it back.").computed().stable())
            .attr(kubernetes::connection_attribute())
            .block(kubernetes::block())
            .block(timeouts_block(&[("create", "15m"), ("update", "15m"), ("delete", "15m")])),
    )
}

// ---------------------------------------------------------------------------------------------
// Validate

/// Whether `s` is a DNS-1035 label (Service names): starts with a letter.
fn is_dns1035_label(s: &str) -> bool {
    istio_names::is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Annotation keys: `[prefix/]name`, prefix a DNS subdomain, name ≤ 63 of `[A-Za-z0-9-_.]`
/// starting and ending alphanumeric.
fn is_annotation_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty() && p.len() <= 253 && p.split('.').all(istio_names::is_dns1123_label)
    });
    name_ok && prefix_ok
}

fn validate_config(config: &Value, diags: &mut Diagnostics) {
    let at = |n: &str| AttributePath::attrs(&[n]);
    if let Some(n) = config.get("network").as_str() {
        if n.trim().is_empty() {
            diags.error_at(at("network"), "Empty network", "network must name the cluster's network (topology.istio.io/network), e.g. \"network1\".");
        }
    }
    if let Some(name) = config.get("name").as_str() {
        if !is_dns1035_label(name) {
            diags.error_at(at("name"), "Invalid name", format!("{name:?} is not a DNS-1035 label: lower-case letters, digits and '-', starting with a letter, ending with a letter or digit, at most 63 characters."));
        }
    }
    if let Some(ns) = config.get("namespace").as_str() {
        if !istio_names::is_dns1123_label(ns) {
            diags.error_at(
                at("namespace"),
                "Invalid namespace",
                format!("{ns:?} is not a valid namespace name (a DNS-1123 label)."),
            );
        }
    }
    if let Some(ns) = config.get("istiod_namespace").as_str() {
        if !istio_names::is_dns1123_label(ns) {
            diags.error_at(
                at("istiod_namespace"),
                "Invalid istiod_namespace",
                format!("{ns:?} is not a valid namespace name (a DNS-1123 label)."),
            );
        }
    }
    if let Some(rev) = config.get("revision").as_str() {
        if !istio_names::is_dns1123_label(rev) {
            diags.error_at(
                at("revision"),
                "Invalid revision",
                format!("{rev:?} is not a valid Istio revision (a DNS-1123 label such as \"1-30\" or \"canary\")."),
            );
        }
    }
    let service_type = config.get("service_type");
    if let Some(t) = service_type.as_str() {
        if !SERVICE_TYPES.contains(&t) {
            diags.error_at(
                at("service_type"),
                "Invalid service_type",
                format!("{t:?} is not one of \"LoadBalancer\", \"NodePort\", \"ClusterIP\"."),
            );
        }
    }
    let replicas = config.get("replicas");
    if let Some(n) = replicas.as_i64() {
        if !(1..=i64::from(i32::MAX)).contains(&n) {
            diags.error_at(
                at("replicas"),
                "Invalid replicas",
                format!("replicas must be at least 1, got {n}."),
            );
        }
    } else if let Value::Number(_) = replicas {
        diags.error_at(
            at("replicas"),
            "Invalid replicas",
            "replicas must be a whole number.",
        );
    }
    if let Some(map) = config.get("service_annotations").as_map() {
        for (k, v) in map {
            let mut path = at("service_annotations");
            path.push_key(k);
            if !is_annotation_key(k) {
                diags.error_at(path.clone(), "Invalid annotation key", format!("{k:?} is not a valid annotation key ([prefix/]name; the name at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)."));
            }
            if v.is_null() {
                diags.error_at(
                    path,
                    "Invalid annotation value",
                    "Annotation values must be strings, not null.",
                );
            }
        }
    }
    if config.get("expose_istiod").as_bool() == Some(true)
        && service_type.as_str() == Some("ClusterIP")
    {
        diags.warning_at(at("expose_istiod"), "istiod exposed on a ClusterIP Service", "With service_type = \"ClusterIP\" the gateway is not reachable from other clusters, so remote clusters cannot reach istiod through it. Use \"LoadBalancer\" (or \"NodePort\" with a reachable node address).");
    }
    kubernetes::validate_choice(config, &AttributePath::root(), diags);
    validate_timeouts(config, diags);
}

// ---------------------------------------------------------------------------------------------
// From Terraform values to the gateway's objects

fn instance(namespace: &str, name: &str) -> String {
    let full = format!("eastwest.{namespace}.{name}");
    if full.len() <= 63 {
        return full;
    }
    // Label values are at most 63 characters: keep a readable prefix and a digest.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, full.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}-{hex}", full[..46].trim_end_matches(['.', '-']))
}

/// The gateway a resource value describes; `None` when something it needs is unknown. With
/// `lenient`, values that do not change which objects exist (network, type...) may be unknown.
fn spec_from(v: &Value, lenient: bool) -> Option<GatewaySpec> {
    let text = |k: &str, default: &str| -> Option<String> {
        match v.get(k) {
            Value::String(s) => Some(s.clone()),
            Value::Unknown if lenient => Some(default.to_string()),
            Value::Null => Some(default.to_string()),
            _ => None,
        }
    };
    let flag = |k: &str, default: bool| match v.get(k) {
        Value::Bool(b) => Some(*b),
        Value::Null => Some(default),
        _ => None,
    };
    let name = text("name", eastwest::DEFAULT_NAME)?;
    let namespace = text("namespace", "istio-system")?;
    if v.get("name").is_unknown() || v.get("namespace").is_unknown() {
        return None;
    }
    let replicas = match v.get("replicas") {
        Value::Null => 1,
        r => i32::try_from(r.as_i64()?).ok()?,
    };
    let annotations = match v.get("service_annotations") {
        Value::Map(m) => m
            .iter()
            .map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect::<Option<BTreeMap<_, _>>>(),
        Value::Unknown if !lenient => None,
        _ => Some(BTreeMap::new()),
    };
    let revision = match v.get("revision") {
        Value::String(s) => Some(s.clone()),
        Value::Unknown if !lenient => return None,
        _ => None,
    };
    let istiod_namespace = match v.get("istiod_namespace") {
        Value::String(s) => Some(s.clone()),
        Value::Unknown if !lenient => return None,
        _ => None,
    };
    Some(GatewaySpec {
        labels: labels(&instance(&namespace, &name)),
        network: text("network", "")?,
        revision,
        replicas,
        service_type: text("service_type", "LoadBalancer")?,
        service_annotations: annotations.or(if lenient { Some(BTreeMap::new()) } else { None })?,
        expose_services: flag("expose_services", true)?,
        expose_istiod: flag("expose_istiod", false)?,
        istiod_namespace,
        name,
        namespace,
    })
}

/// One object of the gateway, typed. (At most nine exist per operation, briefly: their size
/// does not matter.)
#[allow(clippy::large_enum_variant)]
enum Obj {
    ServiceAccount(ServiceAccount),
    Role(Role),
    RoleBinding(RoleBinding),
    Service(Service),
    Deployment(Deployment),
    Pdb(PodDisruptionBudget),
    Gateway(Gateway),
    VirtualService(VirtualService),
}

macro_rules! each {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Obj::ServiceAccount($o) => $body,
            Obj::Role($o) => $body,
            Obj::RoleBinding($o) => $body,
            Obj::Service($o) => $body,
            Obj::Deployment($o) => $body,
            Obj::Pdb($o) => $body,
            Obj::Gateway($o) => $body,
            Obj::VirtualService($o) => $body,
        }
    };
}

/// Every object of the gateway, in apply order.
fn objects(s: &GatewaySpec) -> Vec<Obj> {
    let mut v = vec![
        Obj::ServiceAccount(eastwest::service_account(s)),
        Obj::Role(eastwest::role(s)),
        Obj::RoleBinding(eastwest::role_binding(s)),
        Obj::Service(eastwest::service(s)),
        Obj::Deployment(eastwest::deployment(s)),
    ];
    if let Some(pdb) = eastwest::pod_disruption_budget(s) {
        v.push(Obj::Pdb(pdb));
    }
    if s.expose_services {
        v.push(Obj::Gateway(eastwest::cross_network_gateway(s)));
    }
    if s.expose_istiod {
        v.push(Obj::Gateway(eastwest::istiod_gateway(s)));
        v.push(Obj::VirtualService(eastwest::istiod_virtual_service(s)));
    }
    v
}

trait Object:
    kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + Serialize
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

fn api<K: Object>(cluster: &Cluster, obj: &K) -> Api<K> {
    Api::namespaced(
        cluster.client.clone(),
        obj.meta().namespace.as_deref().unwrap_or_default(),
    )
}

fn key_of<K: Object>(obj: &K) -> String {
    format!(
        "{}/{}",
        K::kind(&()),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

fn to_json<K: Serialize>(obj: &K) -> serde_json::Value {
    serde_json::to_value(obj).unwrap_or_default()
}

async fn apply_one<K: Object>(
    cluster: &Cluster,
    obj: &K,
    deadline: &Deadline,
) -> Result<serde_json::Value, KubeError> {
    let live = cluster.apply(&api(cluster, obj), obj, deadline).await;
    match live {
        Ok(l) => Ok(to_json(&l)),
        // No such kind: Istio's CRDs are not installed (yet).
        // (A 404 about the namespace is not about the kind: it keeps its own message.)
        Err(KubeError::Api {
            cluster,
            action,
            code: 404,
            reason,
            message,
            details,
        }) if K::group(&()) == "networking.istio.io" && details.kind != "namespaces" => Err(KubeError::Api {
            cluster,
            action,
            code: 404,
            reason,
            details,
            message: format!("{message} — Istio's CRDs (networking.istio.io) are not installed in this cluster: install Istio's control plane first and make this resource depend on it"),
        }),
        Err(e) => Err(e),
    }
}

async fn get_one<K: Object>(
    cluster: &Cluster,
    obj: &K,
    deadline: &Deadline,
) -> Result<Option<serde_json::Value>, KubeError> {
    let name = obj.meta().name.clone().unwrap_or_default();
    match cluster.get_opt(&api(cluster, obj), &name, deadline).await {
        Ok(o) => Ok(o.map(|o| to_json(&o))),
        // The kind itself is gone (CRDs removed): so is the object.
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

async fn delete_one<K: Object>(
    cluster: &Cluster,
    obj: &K,
    wait_gone: bool,
    deadline: &Deadline,
) -> Result<bool, KubeError> {
    let name = obj.meta().name.clone().unwrap_or_default();
    match cluster
        .delete(&api(cluster, obj), &name, wait_gone, deadline)
        .await
    {
        Err(e) if e.is_not_found() => Ok(false),
        other => other,
    }
}

impl Obj {
    /// `<Kind>/<name>`, the key in `objects`.
    fn key(&self) -> String {
        each!(self, o => key_of(o))
    }

    fn json(&self) -> serde_json::Value {
        each!(self, o => to_json(o))
    }

    async fn apply(
        &self,
        cluster: &Cluster,
        deadline: &Deadline,
    ) -> Result<serde_json::Value, KubeError> {
        each!(self, o => apply_one(cluster, o, deadline).await)
    }

    async fn live(
        &self,
        cluster: &Cluster,
        deadline: &Deadline,
    ) -> Result<Option<serde_json::Value>, KubeError> {
        each!(self, o => get_one(cluster, o, deadline).await)
    }

    async fn delete(
        &self,
        cluster: &Cluster,
        wait_gone: bool,
        deadline: &Deadline,
    ) -> Result<bool, KubeError> {
        each!(self, o => delete_one(cluster, o, wait_gone, deadline).await)
    }

    fn is_service(&self) -> bool {
        matches!(self, Obj::Service(_))
    }
}

/// The `objects` map with every key of `objs` in sync.
fn in_sync(objs: &[Obj]) -> Value {
    Value::Map(
        objs.iter()
            .map(|o| (o.key(), Value::from(IN_SYNC)))
            .collect(),
    )
}

fn set_addresses(state: &mut Value, addrs: &[String]) {
    state.set("address", addrs.first().cloned().into());
    state.set(
        "addresses",
        Value::List(addrs.iter().cloned().map(Value::from).collect()),
    );
}

// ---------------------------------------------------------------------------------------------
// Apply

fn kube_failure(err: KubeError) -> Failure {
    let mut d = Diagnostics::new();
    d.error(err.to_string(), "");
    d.into()
}

fn wants_address(s: &GatewaySpec, v: &Value) -> bool {
    s.service_type == "LoadBalancer" && v.get("wait_for_address").as_bool() != Some(false)
}

fn address_timeout(cluster: &Cluster, s: &GatewaySpec, op: &str, err: KubeError) -> Diagnostics {
    let mut d = Diagnostics::new();
    let svc = format!("Service {}/{}", s.namespace, s.name);
    let next = if op == "create" {
        "the next apply adopts them and waits for the address again"
    } else {
        "the next apply waits for the address again"
    };
    match err {
        KubeError::Timeout { waited, .. } => d.error(
            format!("No load balancer address for the east-west gateway {svc}"),
            format!(
                "cluster {}: {svc} (type LoadBalancer) has no status.loadBalancer.ingress after {:.0?}. Usual causes: the cluster has no load-balancer controller (kind, minikube, bare metal: install MetalLB or cloud-provider-kind, or use service_type = \"NodePort\"); a cloud quota or subnet limit on load balancers; annotations the cloud controller rejects. See `kubectl -n {} describe service {}` for the controller's events. The objects are kept; {next}. Raise timeouts.{op} to wait longer, or set wait_for_address = false.",
                cluster.name, waited, s.namespace, s.name
            ),
        ),
        other => d.error(other.to_string(), ""),
    }
    d
}

/// `expose_istiod` routes to `istiod[-<rev>].<istiod namespace>`: say so when no such Service
/// exists, which is what a gateway outside istiod's namespace without `istiod_namespace` looks
/// like. A warning, not an error: istiod may be installed after the gateway by other means.
async fn warn_when_istiod_is_elsewhere(
    ctx: &Ctx,
    cluster: &Cluster,
    spec: &GatewaySpec,
    deadline: &Deadline,
) {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), spec.istiod_namespace());
    let svc = spec.istiod_service();
    if let Ok(None) = cluster.get_opt(&api, &svc, deadline).await {
        ctx.warn(
            Some(AttributePath::attrs(&["istiod_namespace"])),
            "expose_istiod routes to a Service that does not exist",
            &format!("cluster {}: VirtualService {}/{} routes istiod's ports to {}, but there is no Service {}/{svc}. Remote clusters reach no control plane through this gateway until it exists. If istiod runs in another namespace than the gateway, set istiod_namespace to it; if it runs a revision, set revision.", cluster.name, spec.namespace, spec.istiod_virtual_service_name(), spec.istiod_host(), spec.istiod_namespace()),
        );
    }
}

/// Creates or updates the gateway. `prior` is None on create.
async fn converge(
    ctx: &Ctx,
    prior: Option<&Value>,
    planned: &Value,
    config: &Value,
    op: &str,
) -> Result<Applied, Failure> {
    let Some(spec) = spec_from(planned, false) else {
        let mut d = Diagnostics::new();
        d.error(
            "Gateway settings are not known",
            "All of the gateway's settings must be known at apply time.",
        );
        return Err(d.into());
    };
    let deadline = Deadline::new(timeout(config, op, DEFAULT_TIMEOUT), ctx.cancel.clone());
    let conn = kubernetes::connection_of(config).map_err(kube_failure)?;
    let cluster = connect(&conn).await.map_err(kube_failure)?;
    let want = objects(&spec);

    // On update, apply only what changed or what refresh found missing or modified; remove
    // what is no longer wanted (exposure switched off, PDB no longer needed).
    let (old, statuses) = match prior {
        Some(p) => (
            spec_from(p, false).map(|s| objects(&s)).unwrap_or_default(),
            p.get("objects").as_map().cloned().unwrap_or_default(),
        ),
        None => (Vec::new(), BTreeMap::new()),
    };
    let old_json: BTreeMap<String, serde_json::Value> =
        old.iter().map(|o| (o.key(), o.json())).collect();
    let to_apply: Vec<&Obj> = want
        .iter()
        .filter(|o| {
            prior.is_none()
                || statuses.get(&o.key()).and_then(Value::as_str) != Some(IN_SYNC)
                || old_json.get(&o.key()) != Some(&o.json())
        })
        .collect();
    let wanted: Vec<String> = want.iter().map(Obj::key).collect();
    let stale: Vec<&Obj> = old.iter().filter(|o| !wanted.contains(&o.key())).collect();

    let mut results = join_all(to_apply.iter().map(|o| o.apply(&cluster, &deadline))).await;
    if results
        .iter()
        .any(|r| r.as_ref().is_err_and(KubeError::is_namespace_terminating))
    {
        // The namespace is being deleted (a re-apply right after a destroy): wait that out.
        // The gateway does not own its namespace, so it applies again only if whoever does
        // (mesh_cluster) has created it anew by then.
        match cluster.namespace_settled(&spec.namespace, &deadline).await {
            Ok(Some(_)) => {
                results = join_all(to_apply.iter().map(|o| o.apply(&cluster, &deadline))).await;
            }
            Ok(None) => {
                let mut d = Diagnostics::new();
                d.error(
                    format!("cluster {}: namespace {} was deleted", cluster.name, spec.namespace),
                    format!("The gateway's namespace {} was being deleted when this apply started, and is gone now. mesh_eastwest_gateway does not create its namespace: apply again once it exists (mesh_cluster creates istiod's namespace; make this resource depend on it).", spec.namespace),
                );
                return Err(d.into());
            }
            Err(KubeError::Timeout { waited, .. }) => {
                let mut d = Diagnostics::new();
                d.error(
                    format!("cluster {}: namespace {} is still being deleted", cluster.name, spec.namespace),
                    format!("Namespace {} has been Terminating for at least {waited:.0?}: nothing can be created in it until it is gone. Something holds it: see `kubectl get namespace {} -o yaml` and the finalizers of the objects left in it. Apply again once it is gone and recreated.", spec.namespace, spec.namespace),
                );
                return Err(d.into());
            }
            Err(e) => return Err(kube_failure(e)),
        }
    }
    let mut state = planned.clone();
    state.set(
        "id",
        Value::from(format!("{}/{}", spec.namespace, spec.name)),
    );
    state.set("service_name", Value::from(spec.name.clone()));
    let mut status: BTreeMap<String, Value> = want
        .iter()
        .map(|o| {
            let prior_status = statuses.get(&o.key()).cloned();
            (
                o.key(),
                prior_status.unwrap_or_else(|| Value::from(MISSING)),
            )
        })
        .collect();
    let mut diags = Diagnostics::new();
    let mut live_service: Option<Service> = None;
    for (o, r) in to_apply.iter().zip(results) {
        match r {
            Ok(live) => {
                status.insert(o.key(), Value::from(IN_SYNC));
                if o.is_service() {
                    live_service = serde_json::from_value(live).ok();
                }
            }
            Err(e) => {
                // Not what the configuration says: the next plan must apply it again, even
                // with -refresh=false.
                if status.get(&o.key()).and_then(Value::as_str) == Some(IN_SYNC) {
                    status.insert(o.key(), Value::from(MODIFIED));
                }
                diags.error(e.to_string(), "")
            }
        }
    }
    let partial = |mut state: Value, status: BTreeMap<String, Value>| {
        if state.get("address").is_unknown() {
            set_addresses(&mut state, &[]);
        }
        state.set("objects", Value::Map(status));
        Applied::new(state)
    };
    if diags.has_errors() {
        return Err(Failure {
            diags,
            partial: Some(partial(state, status)),
        });
    }
    let removed = join_all(stale.iter().map(|o| o.delete(&cluster, false, &deadline))).await;
    for r in removed {
        if let Err(e) = r {
            diags.error(e.to_string(), "");
        }
    }
    if diags.has_errors() {
        return Err(Failure {
            diags,
            partial: Some(partial(state, status)),
        });
    }

    if spec.expose_istiod {
        warn_when_istiod_is_elsewhere(ctx, &cluster, &spec, &deadline).await;
    }

    if planned.get("address").is_unknown() {
        let svc_api: Api<Service> = Api::namespaced(cluster.client.clone(), &spec.namespace);
        let svc = match live_service {
            Some(s) => Some(s),
            None => cluster
                .get_opt(&svc_api, &spec.name, &deadline)
                .await
                .map_err(kube_failure)?,
        };
        let mut addrs = svc
            .as_ref()
            .map(eastwest::service_addresses)
            .unwrap_or_default();
        if addrs.is_empty() && wants_address(&spec, planned) {
            let what = format!(
                "a load balancer address for Service {}/{}",
                spec.namespace, spec.name
            );
            let has_address =
                |s: Option<&Service>| s.is_some_and(|s| !eastwest::service_addresses(s).is_empty());
            match wait_for(&cluster, svc_api, &spec.name, &what, has_address, &deadline).await {
                Ok(s) => {
                    addrs = s
                        .as_ref()
                        .map(eastwest::service_addresses)
                        .unwrap_or_default();
                    tracing::info!(
                        cluster = %cluster.name,
                        waited_ms = deadline.elapsed().as_millis() as u64,
                        "east-west gateway address assigned"
                    );
                }
                Err(e) => {
                    // A failed create that returned state would be tainted, and the next apply
                    // would replace the gateway — releasing the load balancer it is waiting
                    // for. Without state, the next apply adopts the objects (server-side apply)
                    // and resumes waiting. An update keeps its state and resumes in place.
                    let keep = (op != "create").then(|| partial(state, status));
                    return Err(Failure {
                        diags: address_timeout(&cluster, &spec, op, e),
                        partial: keep,
                    });
                }
            }
        }
        set_addresses(&mut state, &addrs);
    }
    state.set("objects", Value::Map(status));
    Ok(Applied::new(state))
}

async fn remove(ctx: &Ctx, prior: &Value) -> Result<(), KubeError> {
    let Some(spec) = spec_from(prior, true) else {
        return Ok(());
    };
    let deadline = Deadline::new(
        timeout(prior, "delete", DEFAULT_TIMEOUT),
        ctx.cancel.clone(),
    );
    let cluster = connect(&kubernetes::connection_of(prior)?).await?;
    let all = objects(&spec);
    // Gateway CRs first, then the workload, then the Service (waited until gone, so the load
    // balancer is released), then RBAC and the ServiceAccount.
    let stages: [fn(&Obj) -> bool; 4] = [
        |o| matches!(o, Obj::Gateway(_) | Obj::VirtualService(_)),
        |o| matches!(o, Obj::Deployment(_) | Obj::Pdb(_)),
        |o| o.is_service(),
        |o| {
            matches!(
                o,
                Obj::Role(_) | Obj::RoleBinding(_) | Obj::ServiceAccount(_)
            )
        },
    ];
    for stage in stages {
        let batch: Vec<&Obj> = all.iter().filter(|o| stage(o)).collect();
        let results = join_all(
            batch
                .iter()
                .map(|o| o.delete(&cluster, o.is_service(), &deadline)),
        )
        .await;
        for r in results {
            r?;
        }
    }
    Ok(())
}

async fn observe(ctx: &Ctx, state: &Value) -> Result<Option<Applied>, KubeError> {
    let Some(spec) = spec_from(state, true) else {
        return Ok(Some(Applied::new(state.clone())));
    };
    let deadline = Deadline::new(READ_TIMEOUT, ctx.cancel.clone());
    let cluster = connect(&kubernetes::connection_of(state)?).await?;
    let all = objects(&spec);
    let lives = join_all(all.iter().map(|o| o.live(&cluster, &deadline))).await;
    let mut status = BTreeMap::new();
    let mut any = false;
    let mut addrs = Vec::new();
    for (o, live) in all.iter().zip(lives) {
        let s = match live? {
            None => MISSING,
            Some(l) => {
                any = true;
                if o.is_service() {
                    if let Ok(svc) = serde_json::from_value::<Service>(l.clone()) {
                        addrs = eastwest::service_addresses(&svc);
                    }
                }
                if eastwest::is_subset(&o.json(), &l) {
                    IN_SYNC
                } else {
                    MODIFIED
                }
            }
        };
        status.insert(o.key(), Value::from(s));
    }
    if !any {
        return Ok(None);
    }
    let mut state = state.clone();
    set_addresses(&mut state, &addrs);
    state.set("objects", Value::Map(status));
    Ok(Some(Applied::new(state)))
}

// ---------------------------------------------------------------------------------------------
// Plan

fn plan_computed(plan: &mut Plan<'_>) {
    let create = plan.is_create();
    let prior = plan.prior;
    let planned = &mut plan.planned;
    if let (Some(ns), Some(name)) = (
        planned.get("namespace").as_str().map(str::to_string),
        planned.get("name").as_str().map(str::to_string),
    ) {
        planned.set("id", Value::from(format!("{ns}/{name}")));
        planned.set("service_name", Value::from(name));
    }
    let spec = spec_from(planned, true);
    planned.set(
        "objects",
        spec.as_ref()
            .map(|s| in_sync(&objects(s)))
            .unwrap_or(Value::Unknown),
    );
    if create {
        planned.set("address", Value::Unknown);
        planned.set("addresses", Value::Unknown);
        return;
    }
    // A Service re-created (refresh found it gone) gets a new load balancer; one merely
    // edited keeps its address (an edited type shows as a null address after refresh).
    let service_missing = spec.as_ref().is_none_or(|s| {
        prior
            .get("objects")
            .get(&format!("Service/{}", s.name))
            .as_str()
            .is_none_or(|v| v == MISSING)
    });
    let type_changed = planned.get("service_type") != prior.get("service_type");
    let waits = planned.get("service_type").as_str() == Some("LoadBalancer")
        && planned.get("wait_for_address").as_bool() != Some(false);
    let missing_address = prior.get("address").is_null() && waits;
    if type_changed || service_missing || missing_address {
        planned.set("address", Value::Unknown);
        planned.set("addresses", Value::Unknown);
    } else {
        planned.set("address", prior.get("address").clone());
        planned.set("addresses", prior.get("addresses").clone());
    }
}

// ---------------------------------------------------------------------------------------------
// The resource

#[tonic::async_trait]
impl Resource for EastWestGateway {
    fn type_name(&self) -> &'static str {
        "mesh_eastwest_gateway"
    }

    fn schema(&self) -> Schema {
        schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diagnostics) {
        validate_config(config, diags);
    }

    fn modify_plan(&self, plan: &mut Plan<'_>) {
        plan_computed(plan);
    }

    async fn create(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        converge(ctx, None, change.planned, change.config, "create").await
    }

    async fn update(&self, ctx: &Ctx, change: Change<'_>) -> Result<Applied, Failure> {
        converge(
            ctx,
            Some(change.prior),
            change.planned,
            change.config,
            "update",
        )
        .await
    }

    async fn delete(&self, ctx: &Ctx, prior: &Value, _private: &[u8]) -> Result<(), Failure> {
        remove(ctx, prior).await.map_err(kube_failure)
    }

    async fn read(
        &self,
        ctx: &Ctx,
        state: &Value,
        _private: &[u8],
    ) -> Result<Option<Applied>, Failure> {
        observe(ctx, state).await.map_err(kube_failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::schema::lint;
    use crate::plugin::Schema;

    fn errors(config: &Value) -> Vec<(String, bool)> {
        let mut d = Diagnostics::new();
        validate_config(config, &mut d);
        d.0.iter()
            .map(|x| {
                (
                    x.path.as_ref().map(|p| p.to_string()).unwrap_or_default(),
                    x.severity == crate::plugin::diag::Severity::Error,
                )
            })
            .collect()
    }

    fn base() -> Vec<(&'static str, Value)> {
        vec![
            ("network", Value::from("net1")),
            ("namespace", Value::from("istio-system")),
            ("name", Value::from("istio-eastwestgateway")),
            ("service_type", Value::from("LoadBalancer")),
            ("replicas", Value::from(1)),
            ("expose_services", Value::from(true)),
            ("expose_istiod", Value::from(false)),
        ]
    }

    fn with(changes: &[(&'static str, Value)]) -> Value {
        let mut c: BTreeMap<&str, Value> = base().into_iter().collect();
        for (k, v) in changes {
            c.insert(k, v.clone());
        }
        Value::object(c)
    }

    #[test]
    fn schema_is_documented_with_the_contracts_defaults() {
        let s: Schema = schema();
        assert_eq!(lint(&s.block, ""), Vec::<String>::new());
        let default = |n: &str| s.block.attribute(n).unwrap().default.clone();
        assert_eq!(default("namespace"), Some(Value::from("istio-system")));
        assert_eq!(default("name"), Some(Value::from("istio-eastwestgateway")));
        assert_eq!(default("expose_services"), Some(Value::from(true)));
        assert_eq!(default("expose_istiod"), Some(Value::from(false)));
        assert_eq!(default("service_type"), Some(Value::from("LoadBalancer")));
        assert_eq!(default("replicas"), Some(Value::from(1)));
        assert_eq!(default("wait_for_address"), Some(Value::from(true)));
        for n in ["namespace", "name"] {
            assert!(s.block.attribute(n).unwrap().force_new, "{n}");
        }
        for n in [
            "network",
            "revision",
            "service_type",
            "expose_istiod",
            "replicas",
        ] {
            assert!(!s.block.attribute(n).unwrap().force_new, "{n}");
        }
        assert!(!s.block.nested("kubernetes").unwrap().force_new);
    }

    #[test]
    fn valid_config_has_no_diagnostics() {
        assert!(errors(&with(&[])).is_empty());
        // Unknown values (from resources created in the same apply) are not judged.
        assert!(errors(&with(&[
            ("network", Value::Unknown),
            ("name", Value::Unknown),
            ("replicas", Value::Unknown),
        ]))
        .is_empty());
    }

    #[test]
    fn bad_input_is_reported_on_its_attribute() {
        let e = errors(&with(&[
            ("network", Value::from("")),
            ("service_type", Value::from("Ingress")),
            ("replicas", Value::from(0)),
            ("name", Value::from("East_West")),
            ("namespace", Value::from("Istio")),
            ("revision", Value::from("1.30")),
            (
                "service_annotations",
                Value::object([("bad key!", Value::from("x")), ("ok", Value::Null)]),
            ),
        ]));
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "network",
                "name",
                "namespace",
                "revision",
                "service_type",
                "replicas",
                r#"service_annotations["bad key!"]"#,
                r#"service_annotations["ok"]"#,
            ]
        );
        assert!(e.iter().all(|(_, err)| *err));
        assert_eq!(
            errors(&with(&[("name", Value::from("1gateway"))])),
            [("name".to_string(), true)]
        );
    }

    #[test]
    fn istiod_on_cluster_ip_is_a_warning() {
        let e = errors(&with(&[
            ("expose_istiod", Value::from(true)),
            ("service_type", Value::from("ClusterIP")),
        ]));
        assert_eq!(e, [("expose_istiod".to_string(), false)]);
    }

    #[test]
    fn annotation_keys() {
        for ok in [
            "service.beta.kubernetes.io/aws-load-balancer-type",
            "a",
            "cloud.google.com/load-balancer-type",
        ] {
            assert!(is_annotation_key(ok), "{ok}");
        }
        for bad in ["", "/a", "a/", "A_B/c", "-a", &"x".repeat(64)] {
            assert!(!is_annotation_key(bad), "{bad}");
        }
    }

    #[test]
    fn instance_labels_fit_63_characters() {
        assert_eq!(
            instance("istio-system", "istio-eastwestgateway"),
            "eastwest.istio-system.istio-eastwestgateway"
        );
        let long = instance(&"n".repeat(63), &"g".repeat(63));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, instance(&"n".repeat(63), &"h".repeat(63)));
    }

    #[test]
    fn objects_follow_exposure_and_replicas() {
        let keys = |v: &Value| -> Vec<String> {
            objects(&spec_from(v, false).unwrap())
                .iter()
                .map(Obj::key)
                .collect()
        };
        assert_eq!(
            keys(&with(&[])),
            [
                "ServiceAccount/istio-eastwestgateway",
                "Role/istio-eastwestgateway",
                "RoleBinding/istio-eastwestgateway",
                "Service/istio-eastwestgateway",
                "Deployment/istio-eastwestgateway",
                "Gateway/cross-network-gateway",
            ]
        );
        let all = keys(&with(&[
            ("expose_istiod", Value::from(true)),
            ("replicas", Value::from(2)),
        ]));
        assert!(all.contains(&"PodDisruptionBudget/istio-eastwestgateway".to_string()));
        assert!(all.contains(&"Gateway/istiod-gateway".to_string()));
        assert!(all.contains(&"VirtualService/istiod-vs".to_string()));
        let none = keys(&with(&[("expose_services", Value::from(false))]));
        assert!(!none.iter().any(|k| k.starts_with("Gateway/")));
    }

    fn plan_of(prior: &Value, config: &Value) -> Value {
        let s = schema();
        let mut plan = Plan::new(&s, prior, config.clone(), config, &[]);
        plan_computed(&mut plan);
        plan.planned
    }

    #[test]
    fn plan_knows_names_and_objects_and_keeps_the_address() {
        let config = with(&[("wait_for_address", Value::from(true))]);
        let created = plan_of(&Value::Null, &config);
        assert_eq!(
            created.get("id").as_str(),
            Some("istio-system/istio-eastwestgateway")
        );
        assert_eq!(
            created.get("service_name").as_str(),
            Some("istio-eastwestgateway")
        );
        assert!(created.get("address").is_unknown());
        assert_eq!(
            created
                .get("objects")
                .get("Gateway/cross-network-gateway")
                .as_str(),
            Some(IN_SYNC)
        );

        let mut prior = created.clone();
        prior.set("address", Value::from("203.0.113.1"));
        prior.set("addresses", Value::List(vec![Value::from("203.0.113.1")]));
        // Toggling istiod exposure keeps the address and adds just those objects.
        let mut toggled = prior.clone();
        toggled.set("expose_istiod", Value::from(true));
        let p = plan_of(&prior, &toggled);
        assert_eq!(p.get("address").as_str(), Some("203.0.113.1"));
        assert_eq!(
            p.get("objects").get("VirtualService/istiod-vs").as_str(),
            Some(IN_SYNC)
        );
        // A new service type means a new address.
        let mut retyped = prior.clone();
        retyped.set("service_type", Value::from("NodePort"));
        assert!(plan_of(&prior, &retyped).get("address").is_unknown());
        // Refresh found the Service gone: the address will change.
        let mut drifted = prior.clone();
        drifted.set(
            "objects",
            Value::object([("Service/istio-eastwestgateway", Value::from(MISSING))]),
        );
        let p = plan_of(&drifted, &prior);
        assert!(p.get("address").is_unknown());
        assert_eq!(p.get("objects"), prior.get("objects"));
        // Merely edited: re-applied, same load balancer, same address.
        drifted.set(
            "objects",
            Value::object([("Service/istio-eastwestgateway", Value::from(MODIFIED))]),
        );
        assert_eq!(
            plan_of(&drifted, &prior).get("address").as_str(),
            Some("203.0.113.1")
        );
    }
}
