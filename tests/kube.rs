//! The cluster-access layer (`terraform_provider_mesh::kube`) against kube-sim: server-side
//! apply and adoption, reads and deletes (finalizers), the retry policy under injected faults,
//! authentication/authorization/TLS/unreachable errors, credential probes over HTTP/2 (and
//! HTTP/1.1), watch-based waits with deadline and cancellation, the client cache with an exec
//! credential plugin, and kubeconfig selection.
//!
//! Every test starts its own kube-sim (its own ports and CAs), so the process-global client cache
//! never shares a client between tests. No fixed sleeps: everything waits on a condition, bounded.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions, Condition};
use kube_sim::{Allow, ClusterHandle, Fault, Options, RestrictedUser, Sim};
use serde_json::json;
use terraform_provider_mesh::kube::wait::wait_for;
use terraform_provider_mesh::kube::{
    connect, labels, Cluster, Connection, Deadline, Exec, KubeError, FIELD_MANAGER,
};
use tokio_util::sync::CancellationToken;

/// Bound for anything that should finish quickly: a hang fails the test instead of the suite.
const BOUND: Duration = Duration::from_secs(15);

async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

async fn sim(clusters: &[&str]) -> Sim {
    sim_with(clusters, kube_sim::Settings::default()).await
}

async fn sim_with(clusters: &[&str], settings: kube_sim::Settings) -> Sim {
    Sim::start(Options {
        clusters: clusters.iter().map(|c| c.to_string()).collect(),
        settings,
        ..Default::default()
    })
    .await
    .expect("start kube-sim")
}

/// Inline settings for a sim cluster: host, CA and admin token.
fn inline(c: &ClusterHandle) -> Connection {
    Connection {
        host: Some(c.url.clone()),
        cluster_ca_certificate: Some(c.ca_pem.clone()),
        token: Some(c.admin_token.clone()),
        ..Default::default()
    }
}

fn deadline(timeout: Duration) -> Deadline {
    Deadline::new(timeout, CancellationToken::new())
}

async fn cluster_for(c: &ClusterHandle) -> Cluster {
    connect(&inline(c)).await.expect("connect")
}

fn configmaps(cluster: &Cluster) -> Api<ConfigMap> {
    Api::namespaced(cluster.client.clone(), "default")
}

fn configmap(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(name.to_string());
    cm.metadata.namespace = Some("default".to_string());
    cm.metadata.labels = Some(labels("test.kube"));
    cm.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    cm
}

fn data(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

/// A path glob for one default-namespace ConfigMap.
fn cm_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/configmaps/{name}")
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mesh-kube-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn in_dump(dump: &[serde_json::Value], kind: &str, name: &str) -> bool {
    dump.iter()
        .any(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

// ---------------------------------------------------------------------------------------------
// 1. Server-side apply

#[tokio::test]
async fn apply_creates_is_idempotent_in_one_request_and_adopts() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);
    let dl = deadline(BOUND);

    // Created, in one request.
    let want = configmap("ssa", &[("a", "1"), ("b", "2")]);
    control.reset_counters().await.unwrap();
    let created = cluster.apply(&api, &want, &dl).await.unwrap();
    let counters = control.counters().await.unwrap();
    assert_eq!(
        (counters.get("patch", "configmaps"), counters.total),
        (1, 1),
        "{counters:?}"
    );
    assert_eq!(data(&created), data(&want));
    assert!(created.metadata.uid.is_some());
    assert_eq!(created.metadata.labels, Some(labels("test.kube")));
    let live = api.get("ssa").await.unwrap();
    assert_eq!(live.metadata.uid, created.metadata.uid);

    // Applying again: nothing changes, and it costs exactly one request (one PATCH).
    control.reset_counters().await.unwrap();
    let again = cluster.apply(&api, &want, &dl).await.unwrap();
    let counters = control.counters().await.unwrap();
    assert_eq!(
        again.metadata.resource_version, created.metadata.resource_version,
        "a no-op apply does not write"
    );
    assert_eq!(data(&again), data(&want));
    assert_eq!(counters.get("patch", "configmaps"), 1, "{counters:?}");
    assert_eq!(counters.total, 1, "requests per SSA apply: {counters:?}");
    println!(
        "requests per SSA apply (unchanged object): {}",
        counters.total
    );

    // An object created by another field manager is adopted: force takes over the conflicting
    // field, our fields are set, the other manager's extra field stays theirs.
    let mut theirs = configmap("adopted", &[("a", "theirs"), ("keep", "x")]);
    theirs.metadata.labels = None;
    api.create(
        &PostParams {
            field_manager: Some("kubectl-create".into()),
            ..Default::default()
        },
        &theirs,
    )
    .await
    .unwrap();
    let ours = configmap("adopted", &[("a", "ours"), ("b", "2")]);
    let adopted = cluster.apply(&api, &ours, &dl).await.unwrap();
    let d = data(&adopted);
    assert_eq!(d.get("a").map(String::as_str), Some("ours"));
    assert_eq!(d.get("b").map(String::as_str), Some("2"));
    assert_eq!(
        d.get("keep").map(String::as_str),
        Some("x"),
        "the other manager's field stays"
    );
    assert_eq!(adopted.metadata.labels, Some(labels("test.kube")));

    let live = api.get("adopted").await.unwrap();
    let managers = live.metadata.managed_fields.clone().unwrap_or_default();
    let mine = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .unwrap_or_else(|| panic!("no {FIELD_MANAGER} entry in {managers:#?}"));
    assert_eq!(FIELD_MANAGER, "terraform-provider-mesh");
    assert_eq!(mine.operation.as_deref(), Some("Apply"));
    let fields = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry| {
        m.fields_v1
            .as_ref()
            .map(|f| f.0.clone())
            .unwrap_or_default()
    };
    let owns = |f: &serde_json::Value, path: &str| f.pointer(path).is_some();
    let mine = fields(mine);
    assert!(
        owns(&mine, "/f:data/f:a") && owns(&mine, "/f:data/f:b"),
        "{mine}"
    );
    assert!(
        owns(
            &mine,
            "/f:metadata/f:labels/f:app.kubernetes.io~1managed-by"
        ),
        "{mine}"
    );
    assert!(!owns(&mine, "/f:data/f:keep"), "{mine}");
    // The creator keeps what it still owns (`keep`) but lost `a` to the forced apply.
    let other = managers
        .iter()
        .find(|m| m.manager.as_deref() == Some("kubectl-create"))
        .unwrap_or_else(|| panic!("no kubectl-create entry in {managers:#?}"));
    let other = fields(other);
    assert!(
        owns(&other, "/f:data/f:keep") && !owns(&other, "/f:data/f:a"),
        "{other}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Reads and deletes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_opt_missing_delete_missing_and_delete_waits_for_finalizers() {
    let sim = sim(&["c1"]).await;
    let cluster = cluster_for(sim.cluster("c1")).await;
    let api = configmaps(&cluster);
    let dl = deadline(BOUND);

    assert!(cluster
        .get_opt(&api, "missing", &dl)
        .await
        .unwrap()
        .is_none());
    assert!(!cluster.delete(&api, "missing", false, &dl).await.unwrap());
    assert!(!cluster.delete(&api, "missing", true, &dl).await.unwrap());

    // Existing, no finalizer: deleted, gone at once.
    cluster
        .apply(&api, &configmap("plain", &[("a", "1")]), &dl)
        .await
        .unwrap();
    assert!(cluster.get_opt(&api, "plain", &dl).await.unwrap().is_some());
    assert!(cluster.delete(&api, "plain", true, &dl).await.unwrap());
    assert!(cluster.get_opt(&api, "plain", &dl).await.unwrap().is_none());

    // With a finalizer: delete(wait_gone) returns only after another party removed it.
    let mut held = configmap("held", &[("a", "1")]);
    held.metadata.finalizers = Some(vec!["mesh.tfmesh.dev/test-hold".into()]);
    cluster.apply(&api, &held, &dl).await.unwrap();

    let delete_returned = Arc::new(AtomicBool::new(false));
    let finalizer_removed = Arc::new(AtomicBool::new(false));
    let remover = {
        let api = api.clone();
        let (delete_returned, finalizer_removed) =
            (delete_returned.clone(), finalizer_removed.clone());
        tokio::spawn(async move {
            // Wait (on a watch) until the delete has marked the object.
            let terminating =
                |o: Option<&ConfigMap>| o.is_some_and(|o| o.metadata.deletion_timestamp.is_some());
            within(
                BOUND,
                "deletionTimestamp",
                await_condition(api.clone(), "held", terminating),
            )
            .await
            .unwrap();
            assert!(
                !delete_returned.load(Ordering::SeqCst),
                "delete(wait_gone) returned while the finalizer was still there"
            );
            finalizer_removed.store(true, Ordering::SeqCst);
            api.patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
        })
    };
    let existed = within(
        BOUND,
        "delete(wait_gone)",
        cluster.delete(&api, "held", true, &dl),
    )
    .await
    .unwrap();
    delete_returned.store(true, Ordering::SeqCst);
    assert!(existed);
    assert!(
        finalizer_removed.load(Ordering::SeqCst),
        "returned before the finalizer was removed"
    );
    remover.await.unwrap();
    assert!(
        api.get_opt("held").await.unwrap().is_none(),
        "gone once delete returned"
    );
}

/// The Gateway CRD as Istio ships it (schema-less for the test), and its `ApiResource`.
async fn gateway_kind(cluster: &Cluster, dl: &Deadline) -> ApiResource {
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gateways.networking.istio.io"},
        "spec": {"group": "networking.istio.io", "scope": "Namespaced",
            "names": {"kind": "Gateway", "plural": "gateways", "singular": "gateway", "listKind": "GatewayList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client.clone());
    cluster.apply(&crds, &crd, dl).await.unwrap();
    wait_for(
        cluster,
        crds,
        "gateways.networking.istio.io",
        "the Gateway CRD to be established",
        |o: Option<&CustomResourceDefinition>| conditions::is_crd_established().matches_object(o),
        dl,
    )
    .await
    .unwrap();
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "Gateway"),
        "gateways",
    )
}

/// A Gateway as a DynamicObject without TypeMeta: the helper fills in apiVersion and kind.
fn gateway(name: &str, mode: &str) -> DynamicObject {
    let mut gw = DynamicObject {
        types: None,
        metadata: Default::default(),
        data: json!({"spec": {"selector": {"istio": "eastwestgateway"},
            "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": mode}, "hosts": ["*.local"]}]}}),
    };
    gw.metadata.name = Some(name.into());
    gw.metadata.namespace = Some("default".into());
    gw.metadata.labels = Some(labels("test.dynamic"));
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_objects_apply_read_list_and_delete() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let dl = deadline(BOUND);
    let ar = gateway_kind(&cluster, &dl).await;
    let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), "default", &ar);

    // Created in one request, then a no-op apply in one request that writes nothing.
    let want = gateway("cross-network-gateway", "AUTO_PASSTHROUGH");
    control.reset_counters().await.unwrap();
    let created = cluster.apply_dynamic(&api, &ar, &want, &dl).await.unwrap();
    let counters = control.counters().await.unwrap();
    assert_eq!(
        (counters.get("patch", "gateways"), counters.total),
        (1, 1),
        "{counters:?}"
    );
    let types = created.types.clone().expect("the live object has TypeMeta");
    assert_eq!(
        (types.api_version.as_str(), types.kind.as_str()),
        ("networking.istio.io/v1", "Gateway")
    );
    assert_eq!(
        created.data["spec"]["servers"][0]["tls"]["mode"],
        "AUTO_PASSTHROUGH"
    );
    assert_eq!(created.metadata.labels, Some(labels("test.dynamic")));
    let managers = created.metadata.managed_fields.clone().unwrap_or_default();
    assert!(
        managers
            .iter()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")),
        "{managers:#?}"
    );
    control.reset_counters().await.unwrap();
    let again = cluster.apply_dynamic(&api, &ar, &want, &dl).await.unwrap();
    let counters = control.counters().await.unwrap();
    assert_eq!(
        counters.total, 1,
        "requests per dynamic SSA apply: {counters:?}"
    );
    println!(
        "requests per dynamic SSA apply (unchanged object): {}",
        counters.total
    );
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );

    // Someone else's edit of our field is taken back (force).
    api.patch(
        "cross-network-gateway",
        &PatchParams::apply("kubectl-edit").force(),
        &Patch::Apply(
            json!({"apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "spec": {"servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "ISTIO_MUTUAL"}, "hosts": ["*.local"]}]}}),
        ),
    )
    .await
    .unwrap();
    let back = cluster.apply_dynamic(&api, &ar, &want, &dl).await.unwrap();
    assert_eq!(
        back.data["spec"]["servers"][0]["tls"]["mode"],
        "AUTO_PASSTHROUGH"
    );

    // Reads and lists.
    assert!(cluster
        .get_opt_dynamic(&api, &ar, "missing", &dl)
        .await
        .unwrap()
        .is_none());
    let live = cluster
        .get_opt_dynamic(&api, &ar, "cross-network-gateway", &dl)
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(live.metadata.uid, created.metadata.uid);
    let all: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &ar);
    let selector = ListParams::default().labels("mesh.tfmesh.dev/instance=test.dynamic");
    let listed = cluster
        .list_dynamic(&all, &ar, &selector, &dl)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    // A kind the cluster does not serve (no CRD) lists as empty rather than failing.
    let vs = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    let unserved: Api<DynamicObject> = Api::all_with(cluster.client.clone(), &vs);
    assert!(cluster
        .list_dynamic(&unserved, &vs, &selector, &dl)
        .await
        .unwrap()
        .is_empty());

    // Deleting a missing object is success, in one request (404 is not retried).
    control.reset_counters().await.unwrap();
    assert!(!cluster
        .delete_dynamic(&api, &ar, "missing", true, &dl)
        .await
        .unwrap());
    assert_eq!(control.counters().await.unwrap().total, 1);

    // With a finalizer: delete(wait_gone) returns only after another party removed it.
    let mut held = gateway("held", "AUTO_PASSTHROUGH");
    held.metadata.finalizers = Some(vec!["mesh.tfmesh.dev/test-hold".into()]);
    cluster.apply_dynamic(&api, &ar, &held, &dl).await.unwrap();
    let delete_returned = Arc::new(AtomicBool::new(false));
    let remover = {
        let api = api.clone();
        let delete_returned = delete_returned.clone();
        tokio::spawn(async move {
            let terminating = |o: Option<&DynamicObject>| {
                o.is_some_and(|o| o.metadata.deletion_timestamp.is_some())
            };
            within(
                BOUND,
                "deletionTimestamp",
                await_condition(api.clone(), "held", terminating),
            )
            .await
            .unwrap();
            assert!(
                !delete_returned.load(Ordering::SeqCst),
                "delete_dynamic(wait_gone) returned while the finalizer was still there"
            );
            api.patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
        })
    };
    let existed = within(
        BOUND,
        "delete_dynamic(wait_gone)",
        cluster.delete_dynamic(&api, &ar, "held", true, &dl),
    )
    .await
    .unwrap();
    delete_returned.store(true, Ordering::SeqCst);
    assert!(existed);
    remover.await.unwrap();
    assert!(api.get_opt("held").await.unwrap().is_none());

    // And without waiting, an object without finalizers is gone too.
    assert!(cluster
        .delete_dynamic(&api, &ar, "cross-network-gateway", false, &dl)
        .await
        .unwrap());
    assert!(cluster
        .get_opt_dynamic(&api, &ar, "cross-network-gateway", &dl)
        .await
        .unwrap()
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// 3. Retries

#[tokio::test]
async fn transient_503_is_retried_then_succeeds() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);

    control.reset_counters().await.unwrap();
    control
        .add_fault(&Fault {
            path: cm_path("flaky"),
            verb: Some("patch".into()),
            status: Some(503),
            count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let got = cluster
        .apply(&api, &configmap("flaky", &[("a", "1")]), &deadline(BOUND))
        .await
        .unwrap();
    let took = t0.elapsed();
    assert_eq!(data(&got)["a"], "1");
    let counters = control.counters().await.unwrap();
    assert_eq!(
        counters.get("patch", "configmaps"),
        3,
        "2 failures + 1 success: {counters:?}"
    );
    println!("503 x2 then success: {took:?}");
    // The provider's policy did the retrying (backoffs of 100-200 ms and 200-400 ms), not
    // kube-rs's own retry layer (5 ms, 10 ms, ... and blind to the Deadline).
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

#[tokio::test]
async fn persistent_503_fails_at_the_deadline_naming_cluster_and_action() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);

    control.reset_counters().await.unwrap();
    control
        .add_fault(&Fault {
            path: cm_path("down"),
            status: Some(503),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = within(
        Duration::from_secs(10),
        "apply under a persistent 503 with a 2 s deadline",
        cluster.apply(
            &api,
            &configmap("down", &[("a", "1")]),
            &deadline(Duration::from_secs(2)),
        ),
    )
    .await
    .unwrap_err();
    let took = t0.elapsed();
    let attempts = control.counters().await.unwrap().get("patch", "configmaps");
    let msg = err.to_string();
    println!("persistent 503, 2 s deadline: failed after {took:?}, {attempts} attempts: {msg}");
    assert!(took <= Duration::from_secs(4), "took {took:?}");
    assert!(
        took >= Duration::from_millis(500),
        "gave up without retrying: {took:?}"
    );
    assert!(attempts >= 3, "retried: {attempts} attempts");
    assert!(msg.contains(&format!("cluster host {}", c1.url)), "{msg}");
    assert!(msg.contains("applying ConfigMap down failed"), "{msg}");
    assert!(msg.contains("503"), "{msg}");
    assert!(
        matches!(
            err,
            KubeError::Api { code: 503, .. } | KubeError::Timeout { .. }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);

    control.reset_counters().await.unwrap();
    control
        .add_fault(&Fault {
            path: cm_path("throttled"),
            status: Some(429),
            retry_after_s: Some(1),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    cluster
        .apply(
            &api,
            &configmap("throttled", &[("a", "1")]),
            &deadline(BOUND),
        )
        .await
        .unwrap();
    let took = t0.elapsed();
    println!("429 with Retry-After 1 s, then success: {took:?}");
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After honoured: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(
        control.counters().await.unwrap().get("patch", "configmaps"),
        2
    );
}

/// kube-apiserver's own overload answer (max-in-flight, priority and fairness) is a text/plain
/// 429 whose only hint is the `Retry-After` header; kube-rs keeps no headers, so the provider's
/// client stack carries it into the Status the retry policy reads. Same for a 503.
#[tokio::test]
async fn header_only_retry_after_is_honoured() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);

    for code in [429, 503] {
        let name = format!("overloaded-{code}");
        control.reset_counters().await.unwrap();
        control
            .add_fault(&Fault {
                path: cm_path(&name),
                status: Some(code),
                retry_after_s: Some(1),
                plain_text: Some(true),
                count: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        let t0 = Instant::now();
        let got = within(
            BOUND,
            "apply through a header-only Retry-After",
            cluster.apply(&api, &configmap(&name, &[("a", "1")]), &deadline(BOUND)),
        )
        .await
        .unwrap();
        let took = t0.elapsed();
        println!("{code} text/plain with only Retry-After: 1 header, then success: {took:?}");
        assert_eq!(data(&got)["a"], "1");
        // The backoff alone would have retried after 100-200 ms.
        assert!(
            took >= Duration::from_secs(1),
            "{code}: Retry-After header honoured: {took:?}"
        );
        assert_eq!(
            control.counters().await.unwrap().get("patch", "configmaps"),
            2,
            "{code}: one refusal, one success"
        );
    }

    // A Retry-After beyond the deadline ends the operation at once with the server's words,
    // instead of retrying early against the server's request.
    control
        .add_fault(&Fault {
            path: cm_path("too-long"),
            status: Some(429),
            retry_after_s: Some(30),
            plain_text: Some(true),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = cluster
        .apply(
            &api,
            &configmap("too-long", &[("a", "1")]),
            &deadline(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    let took = t0.elapsed();
    println!("429 text/plain with Retry-After: 30 under a 5 s deadline: failed after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(matches!(err, KubeError::Api { code: 429, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("Too many requests, please try again later."),
        "{msg}"
    );
    assert!(
        cluster
            .get_opt(&api, "too-long", &deadline(BOUND))
            .await
            .unwrap()
            .is_none(),
        "not retried"
    );
}

#[tokio::test]
async fn dropped_connections_are_retried() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);
    let dl = deadline(BOUND);

    control.reset_counters().await.unwrap();
    control
        .add_fault(&Fault {
            path: cm_path("dropped"),
            drop: Some(true),
            count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    let got = cluster
        .apply(&api, &configmap("dropped", &[("a", "1")]), &dl)
        .await
        .unwrap();
    assert_eq!(data(&got)["a"], "1");
    assert_eq!(
        control.counters().await.unwrap().get("patch", "configmaps"),
        3
    );

    // Reads too.
    control
        .add_fault(&Fault {
            path: cm_path("dropped"),
            drop: Some(true),
            count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(cluster
        .get_opt(&api, "dropped", &dl)
        .await
        .unwrap()
        .is_some());
}

/// A single attempt that hangs (server latency far beyond the deadline) must still end at the
/// deadline, and promptly on cancellation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_attempt_is_bounded_by_the_deadline() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);
    c1.control()
        .add_fault(&Fault {
            path: cm_path("slow"),
            latency_ms: Some(6000),
            ..Default::default()
        })
        .await
        .unwrap();
    let t0 = Instant::now();
    let res = within(
        Duration::from_secs(15),
        "get with a 1 s deadline from a server answering after 6 s",
        cluster.get_opt(&api, "slow", &deadline(Duration::from_secs(1))),
    )
    .await;
    let took = t0.elapsed();
    println!("hung attempt, 1 s deadline: returned after {took:?}: {res:?}");
    assert!(res.is_err(), "{res:?}");
    assert!(
        took < Duration::from_secs(2),
        "the deadline bounds a hung attempt: {took:?}"
    );

    // Cancellation (StopProvider) ends a hung attempt at once too.
    let cancel = CancellationToken::new();
    let dl = Deadline::new(Duration::from_secs(30), cancel.clone());
    let control = c1.control();
    control.reset_counters().await.unwrap();
    let canceller = tokio::spawn(async move {
        // Cancel once the slow request is in flight at the server.
        within(BOUND, "the slow request", async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                if control.counters().await.unwrap().get("get", "configmaps") >= 1 {
                    break;
                }
            }
        })
        .await;
        cancel.cancel();
        Instant::now()
    });
    let res = within(
        BOUND,
        "cancelled slow get",
        cluster.get_opt(&api, "slow", &dl),
    )
    .await;
    let lag = Instant::now().saturating_duration_since(canceller.await.unwrap());
    println!("hung attempt, cancelled: returned {lag:?} after the cancel: {res:?}");
    assert!(matches!(res, Err(KubeError::Cancelled { .. })), "{res:?}");
    assert!(lag < Duration::from_secs(1), "{lag:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. Authentication and authorization

#[tokio::test]
async fn wrong_token_is_401_with_a_credentials_hint() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let conn = Connection {
        token: Some("not-the-token".into()),
        ..inline(c1)
    };
    let cluster = connect(&conn).await.unwrap();
    let api = configmaps(&cluster);
    control.reset_counters().await.unwrap();
    let err = cluster
        .apply(&api, &configmap("x", &[("a", "1")]), &deadline(BOUND))
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Api { code: 401, .. }), "{err:?}");
    assert_eq!(err.code(), Some(401));
    let msg = err.to_string();
    assert!(msg.contains("credentials"), "{msg}");
    assert!(
        !msg.contains("not-the-token"),
        "no secrets in messages: {msg}"
    );
    assert_eq!(
        control.counters().await.unwrap().total,
        1,
        "401 is not retried"
    );
}

#[tokio::test]
async fn missing_permission_is_403_with_the_servers_message_and_rbac_hint() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let admin = cluster_for(c1).await;
    admin
        .apply(
            &configmaps(&admin),
            &configmap("readable", &[("a", "1")]),
            &deadline(BOUND),
        )
        .await
        .unwrap();
    control
        .add_restricted_user(&RestrictedUser {
            token: "kube-test-reader-token".into(),
            name: Some("reader".into()),
            allow: vec![Allow {
                verb: "get".into(),
                resource: "configmaps".into(),
            }],
        })
        .await
        .unwrap();
    let reader = connect(&Connection {
        token: Some("kube-test-reader-token".into()),
        ..inline(c1)
    })
    .await
    .unwrap();
    let api = configmaps(&reader);
    let dl = deadline(BOUND);
    // What it may do works...
    assert!(reader
        .get_opt(&api, "readable", &dl)
        .await
        .unwrap()
        .is_some());
    // ...what it may not is a 403 naming user, verb and resource, with the RBAC hint.
    control.reset_counters().await.unwrap();
    let err = reader
        .apply(&api, &configmap("denied", &[("a", "1")]), &dl)
        .await
        .unwrap_err();
    assert!(matches!(err, KubeError::Api { code: 403, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(r#"User "reader" cannot patch resource "configmaps""#),
        "{msg}"
    );
    assert!(msg.contains("RBAC"), "{msg}");
    assert!(msg.contains("applying ConfigMap denied"), "{msg}");
    assert_eq!(
        control.counters().await.unwrap().total,
        1,
        "403 is not retried"
    );
}

/// A reader kubeconfig as a remote secret holds it: server, CA and a bearer token.
fn reader_kubeconfig(c: &ClusterHandle, token: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(&c.ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {n}\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\ncontexts:\n- name: {n}\n  context: {{cluster: {n}, user: {n}}}\ncurrent-context: {n}\nusers:\n- name: {n}\n  user:\n    token: {token}\n",
        n = c.name,
        url = c.url,
    )
}

/// Probes six tokens for `c` at once (admin, wrong, admin, ...): each gets its own answer.
async fn probe_six(c: &ClusterHandle) {
    use terraform_provider_mesh::kube::{probe_kubeconfig, Probe};
    let tokens = [c.admin_token.as_str(), "not-a-token"];
    let kubeconfigs: Vec<String> = (0..6)
        .map(|i| reader_kubeconfig(c, tokens[i % 2]))
        .collect();
    let probes = kubeconfigs.iter().map(|k| probe_kubeconfig(k, BOUND));
    let answers = within(BOUND, "the probes", futures::future::join_all(probes)).await;
    for (i, answer) in answers.iter().enumerate() {
        match (i % 2, answer) {
            (0, Probe::Accepted(_)) | (1, Probe::Refused(401)) => {}
            (_, Probe::Accepted(_)) => panic!("probe {i} accepted"),
            (_, Probe::Refused(code)) => panic!("probe {i} refused with {code}"),
            (_, Probe::Unreachable(why)) => panic!("probe {i} unreachable: {why}"),
        }
    }
}

/// The credential probes of `mesh_status` present many tokens to one server at once: over
/// HTTP/2 they share one connection, as client-go's requests do; a server without HTTP/2
/// (kube-sim's `http2: false`, a front speaking only HTTP/1.1) is asked over HTTP/1.1, with the
/// same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_probes_share_one_http2_connection_or_fall_back_to_http1() {
    let sim = sim(&["c1", "c2"]).await;
    let (c1, c2) = (sim.cluster("c1"), sim.cluster("c2"));
    c2.control()
        .settings(&json!({"http2": false}))
        .await
        .unwrap();
    for c in [c1, c2] {
        c.control().reset_counters().await.unwrap();
    }

    probe_six(c1).await;
    let counters = c1.control().counters().await.unwrap();
    assert_eq!(counters.get("list", "namespaces"), 6);
    assert_eq!(
        (counters.connections, counters.connections_http2),
        (1, 1),
        "six probes, one HTTP/2 connection"
    );

    probe_six(c2).await;
    probe_six(c2).await;
    let counters = c2.control().counters().await.unwrap();
    assert_eq!(counters.get("list", "namespaces"), 12);
    assert!(counters.connections >= 1, "{counters:?}");
    assert_eq!(counters.connections_http2, 0, "{counters:?}");
}

// ---------------------------------------------------------------------------------------------
// 5. TLS and unreachable servers

#[tokio::test]
async fn wrong_ca_names_the_tls_settings() {
    let sim = sim(&["c1", "c2"]).await;
    let (c1, c2) = (sim.cluster("c1"), sim.cluster("c2"));
    let cluster = connect(&Connection {
        cluster_ca_certificate: Some(c2.ca_pem.clone()),
        ..inline(c1)
    })
    .await
    .unwrap();
    let api = configmaps(&cluster);
    let t0 = Instant::now();
    let err = within(
        Duration::from_secs(10),
        "get with the wrong CA",
        cluster.get_opt(&api, "x", &deadline(Duration::from_secs(2))),
    )
    .await
    .unwrap_err();
    let took = t0.elapsed();
    let msg = err.to_string();
    println!("wrong CA: failed after {took:?}: {msg}");
    assert!(matches!(err, KubeError::Unreachable { .. }), "{err:?}");
    assert!(
        msg.contains("cluster_ca_certificate") && msg.contains("tls_server_name"),
        "{msg}"
    );
    assert!(msg.contains(&c1.url), "{msg}");
    assert!(took <= Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn unreachable_host_fails_at_the_deadline_saying_how_long_it_tried() {
    let conn = Connection {
        host: Some("https://127.0.0.1:1".into()),
        token: Some("kube-test-unreachable".into()),
        ..Default::default()
    };
    let cluster = connect(&conn).await.unwrap();
    let api = configmaps(&cluster);
    let t0 = Instant::now();
    let err = within(
        Duration::from_secs(10),
        "get from an unreachable host",
        cluster.get_opt(&api, "x", &deadline(Duration::from_secs(2))),
    )
    .await
    .unwrap_err();
    let took = t0.elapsed();
    let msg = err.to_string();
    println!("unreachable host, 2 s deadline: failed after {took:?}: {msg}");
    assert!(
        matches!(
            err,
            KubeError::Unreachable { .. } | KubeError::Timeout { .. }
        ),
        "{err:?}"
    );
    assert!(msg.contains("https://127.0.0.1:1"), "{msg}");
    assert!(
        msg.contains("tried for") || msg.contains("timed out after"),
        "{msg}"
    );
    assert!(msg.contains("unreachable"), "{msg}");
    assert!(took >= Duration::from_millis(500), "retried: {took:?}");
    assert!(took <= Duration::from_secs(4), "{took:?}");
}

// ---------------------------------------------------------------------------------------------
// 6. Waits

fn available(o: Option<&Deployment>) -> bool {
    o.and_then(|d| d.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Available" && c.status == "True")
        })
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "labels": labels("test.kube")},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]}
            }
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn wait_for_deployment_available_returns_the_object() {
    let mut settings = kube_sim::Settings::default();
    settings.deployments.delay_ms = 300;
    let sim = sim_with(&["c1"], settings).await;
    let cluster = cluster_for(sim.cluster("c1")).await;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    let dl = deadline(BOUND);
    let applied = cluster.apply(&api, &deployment("web"), &dl).await.unwrap();
    assert!(!available(Some(&applied)), "not available yet when applied");
    let t0 = Instant::now();
    let got = wait_for(
        &cluster,
        api.clone(),
        "web",
        "Deployment web to be Available",
        available,
        &dl,
    )
    .await
    .unwrap()
    .expect("the object");
    println!("Deployment Available after {:?}", t0.elapsed());
    assert!(available(Some(&got)));
    assert_eq!(got.metadata.uid, applied.metadata.uid);
    assert_eq!(
        got.status.as_ref().and_then(|s| s.available_replicas),
        Some(2)
    );
}

fn never(o: Option<&ConfigMap>) -> bool {
    o.is_some_and(|cm| data(cm).contains_key("never"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_is_cancelled_promptly() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let api = configmaps(&cluster);
    cluster
        .apply(&api, &configmap("waited", &[("a", "1")]), &deadline(BOUND))
        .await
        .unwrap();
    control.reset_counters().await.unwrap();

    let cancel = CancellationToken::new();
    let dl = Deadline::new(Duration::from_secs(60), cancel.clone());
    let canceller = tokio::spawn(async move {
        // Cancel once the wait is really waiting: its watch request reached the server.
        within(BOUND, "the wait's watch request", async {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                if control.counters().await.unwrap().get("watch", "configmaps") >= 1 {
                    break;
                }
            }
        })
        .await;
        cancel.cancel();
        Instant::now()
    });
    let err = within(
        BOUND,
        "cancelled wait",
        wait_for(
            &cluster,
            api,
            "waited",
            "ConfigMap waited to have key never",
            never,
            &dl,
        ),
    )
    .await
    .unwrap_err();
    let returned = Instant::now();
    let cancelled_at = canceller.await.unwrap();
    let lag = returned.saturating_duration_since(cancelled_at);
    println!("wait returned {lag:?} after the cancel");
    assert!(matches!(err, KubeError::Cancelled { .. }), "{err:?}");
    assert!(lag <= Duration::from_secs(1), "{lag:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("waiting for ConfigMap waited to have key never"),
        "{msg}"
    );
    assert!(msg.contains("asked the provider to stop"), "{msg}");
}

#[tokio::test]
async fn wait_for_times_out_at_the_deadline() {
    let sim = sim(&["c1"]).await;
    let cluster = cluster_for(sim.cluster("c1")).await;
    let api = configmaps(&cluster);
    cluster
        .apply(&api, &configmap("waited", &[("a", "1")]), &deadline(BOUND))
        .await
        .unwrap();
    let t0 = Instant::now();
    let err = within(
        BOUND,
        "wait with a short deadline",
        wait_for(
            &cluster,
            api,
            "waited",
            "ConfigMap waited to have key never",
            never,
            &deadline(Duration::from_millis(700)),
        ),
    )
    .await
    .unwrap_err();
    let took = t0.elapsed();
    match &err {
        KubeError::Timeout { action, waited, .. } => {
            assert_eq!(action, "waiting for ConfigMap waited to have key never");
            assert!(*waited >= Duration::from_millis(600), "{waited:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(err.to_string().contains("timed out after"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 7. Client cache and exec credential plugin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_plugin_runs_only_when_a_connection_is_first_used() {
    const N: usize = 10;
    let names: Vec<String> = (0..N).map(|i| format!("x{i}")).collect();
    let sim = sim(&names.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let dir = TempDir::new("exec");
    let script = dir.path().join("fake-credential-plugin.sh");
    let runs = dir.path().join("runs.log");
    std::fs::write(
        &script,
        r#"#!/bin/bash
set -eu
echo "$KUBE_TEST_CLUSTER" >> "$KUBE_TEST_RUNS"
printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"%s"}}\n' "$KUBE_TEST_TOKEN"
"#,
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conns: Vec<Connection> = sim
        .clusters()
        .iter()
        .map(|c| Connection {
            host: Some(c.url.clone()),
            cluster_ca_certificate: Some(c.ca_pem.clone()),
            exec: Some(Exec {
                api_version: "client.authentication.k8s.io/v1beta1".into(),
                command: script.display().to_string(),
                args: vec![],
                env: BTreeMap::from([
                    ("KUBE_TEST_CLUSTER".to_string(), c.name.clone()),
                    ("KUBE_TEST_RUNS".to_string(), runs.display().to_string()),
                    ("KUBE_TEST_TOKEN".to_string(), c.admin_token.clone()),
                ]),
            }),
            ..Default::default()
        })
        .collect();

    let dl = deadline(BOUND);
    let runs_so_far = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut after_round = Vec::new();
    for round in 0..3 {
        for conn in &conns {
            let cluster = connect(conn).await.unwrap();
            let found = cluster
                .get_opt(&configmaps(&cluster), "kube-root-ca.crt", &dl)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(
                found.is_some(),
                "round {round}: the exec token authenticated"
            );
        }
        after_round.push(runs_so_far().len());
    }
    let lines = runs_so_far();
    println!(
        "exec plugin runs for {N} connections x 3 rounds: {} (after each round: {after_round:?})",
        lines.len()
    );
    // The client cache: rounds 2 and 3 reuse every client, so the plugin never runs again.
    assert_eq!(
        after_round[0], after_round[2],
        "plugin ran again for a cached connection: {lines:?}"
    );
    // Every connection's plugin ran exactly once, in round 1: the provider runs the plugin
    // itself (kube-rs would run it three times per client build).
    for name in &names {
        let n = lines.iter().filter(|l| l.as_str() == name.as_str()).count();
        assert_eq!(n, 1, "{name}: {lines:?}");
    }
    assert_eq!(lines.len(), N);
    // Every cluster saw its three requests with the plugin's token.
    for c in sim.clusters() {
        let counters = c.control().counters().await.unwrap();
        assert_eq!(counters.get("get", "configmaps"), 3, "{}", c.name);
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Kubeconfig selection

#[tokio::test]
async fn kubeconfig_context_selection_and_inline_override() {
    let sim = sim(&["c1", "c2"]).await;
    let (c1, c2) = (sim.cluster("c1"), sim.cluster("c2"));
    let dir = TempDir::new("kubeconfig");
    let path = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&path).unwrap();
    let dl = deadline(BOUND);

    // config_context selects c2.
    let from_file = Connection {
        config_path: Some(path.display().to_string()),
        config_context: Some("c2".into()),
        ..Default::default()
    };
    let cluster = connect(&from_file).await.unwrap();
    assert_eq!(cluster.name, "context \"c2\"");
    cluster
        .apply(
            &configmaps(&cluster),
            &configmap("selected", &[("a", "1")]),
            &dl,
        )
        .await
        .unwrap();
    assert!(in_dump(
        &c2.control().dump().await.unwrap(),
        "ConfigMap",
        "selected"
    ));
    assert!(!in_dump(
        &c1.control().dump().await.unwrap(),
        "ConfigMap",
        "selected"
    ));

    // The current context (c1) when none is named.
    let current = connect(&Connection {
        config_path: Some(path.display().to_string()),
        ..Default::default()
    })
    .await
    .unwrap();
    // Messages name the current context, not "the current kubeconfig context".
    assert_eq!(current.name, "context \"c1\"");
    current
        .apply(
            &configmaps(&current),
            &configmap("current", &[("a", "1")]),
            &dl,
        )
        .await
        .unwrap();
    assert!(in_dump(
        &c1.control().dump().await.unwrap(),
        "ConfigMap",
        "current"
    ));
    assert!(!in_dump(
        &c2.control().dump().await.unwrap(),
        "ConfigMap",
        "current"
    ));

    // Inline host/CA/token override the c2 context's server and user: reaches c1.
    let overridden = Connection {
        host: Some(c1.url.clone()),
        cluster_ca_certificate: Some(c1.ca_pem.clone()),
        token: Some(c1.admin_token.clone()),
        ..from_file.clone()
    };
    let cluster = connect(&overridden).await.unwrap();
    cluster
        .apply(
            &configmaps(&cluster),
            &configmap("overridden", &[("a", "1")]),
            &dl,
        )
        .await
        .unwrap();
    assert!(in_dump(
        &c1.control().dump().await.unwrap(),
        "ConfigMap",
        "overridden"
    ));
    assert!(!in_dump(
        &c2.control().dump().await.unwrap(),
        "ConfigMap",
        "overridden"
    ));

    // An unknown context is a configuration error listing the known ones.
    let err = connect(&Connection {
        config_context: Some("c9".into()),
        ..from_file
    })
    .await
    .err()
    .expect("unknown context fails");
    assert!(matches!(err, KubeError::Config { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("context \"c9\" is not in the kubeconfig"),
        "{err}"
    );
}

/// A plugin token that is about to expire is refreshed by running the plugin again before the
/// request goes out; a fresh one is reused.
#[tokio::test]
async fn exec_tokens_are_refreshed_when_they_near_expiry() {
    let sim = sim(&["exp"]).await;
    let c = sim.cluster("exp");
    let dir = TempDir::new("exec-expiry");
    let script = dir.path().join("expiring-plugin.sh");
    let runs = dir.path().join("runs.log");
    // Tokens "expire" 30 s from now, inside the provider's refresh margin.
    std::fs::write(
        &script,
        r#"#!/bin/bash
set -eu
echo run >> "$KUBE_TEST_RUNS"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}\n' "$KUBE_TEST_TOKEN" "$(date -u -d '+30 seconds' +%Y-%m-%dT%H:%M:%SZ)"
"#,
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let conn = Connection {
        host: Some(c.url.clone()),
        cluster_ca_certificate: Some(c.ca_pem.clone()),
        exec: Some(Exec {
            api_version: "client.authentication.k8s.io/v1".into(),
            command: script.display().to_string(),
            args: vec![],
            env: BTreeMap::from([
                ("KUBE_TEST_RUNS".to_string(), runs.display().to_string()),
                ("KUBE_TEST_TOKEN".to_string(), c.admin_token.clone()),
            ]),
        }),
        ..Default::default()
    };
    let cluster = connect(&conn).await.unwrap();
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "default");
    let dl = deadline(BOUND);
    for _ in 0..2 {
        cluster.get_opt(&api, "none", &dl).await.unwrap();
    }
    let count = std::fs::read_to_string(&runs).unwrap().lines().count();
    // One run to build the client, then one per request: every token is already due.
    assert_eq!(count, 3, "plugin runs");
}

// ---------------------------------------------------------------------------------------------
// Namespaces being deleted

/// Namespace `ns` holding a ConfigMap with a finalizer, then deleted: Terminating until the
/// finalizer is released.
async fn terminating_namespace(cluster: &Cluster, ns: &str) {
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let mut held = configmap("held", &[]);
    held.metadata.namespace = Some(ns.into());
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    nss.delete(ns, &Default::default()).await.unwrap();
}

async fn release(cluster: &Cluster, ns: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn create_in_a_terminating_namespace_says_it_is_being_deleted_not_rbac() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    terminating_namespace(&cluster, "going").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), "going");
    let mut cm = configmap("late", &[("a", "1")]);
    cm.metadata.namespace = Some("going".into());
    control.reset_counters().await.unwrap();
    let err = cluster
        .apply(&api, &cm, &deadline(BOUND))
        .await
        .unwrap_err();
    assert!(err.is_namespace_terminating(), "{err:?}");
    assert_eq!(err.code(), Some(403));
    let msg = err.to_string();
    assert!(msg.contains("is being deleted"), "{msg}");
    assert!(msg.contains("applying ConfigMap late"), "{msg}");
    assert!(!msg.contains("RBAC"), "{msg}");
    assert_eq!(
        control.counters().await.unwrap().total,
        1,
        "a 403 is not retried"
    );
}

#[tokio::test]
async fn namespace_settled_waits_out_a_deletion_within_the_deadline() {
    let sim = sim(&["c1"]).await;
    let cluster = cluster_for(sim.cluster("c1")).await;
    // Absent and active namespaces answer at once.
    let none = cluster
        .namespace_settled("absent", &deadline(BOUND))
        .await
        .unwrap();
    assert!(none.is_none());
    let active = cluster
        .namespace_settled("default", &deadline(BOUND))
        .await
        .unwrap();
    assert!(active.is_some());

    terminating_namespace(&cluster, "going").await;
    // Held: the wait ends at its deadline, saying what it waited for.
    let t0 = Instant::now();
    let err = cluster
        .namespace_settled("going", &deadline(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(t0.elapsed() < BOUND, "{:?}", t0.elapsed());
    assert!(matches!(err, KubeError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("finish terminating"), "{err}");
    // Released while waiting: the wait returns once the namespace is gone.
    let waiter = {
        let cluster = cluster.clone();
        tokio::spawn(async move { cluster.namespace_settled("going", &deadline(BOUND)).await })
    };
    release(&cluster, "going").await;
    let settled = within(BOUND, "the wait for the deletion", waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(settled.is_none(), "the namespace is gone: {settled:?}");
    // And it can be created again.
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cluster.client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": "going"}})).unwrap();
    cluster.apply(&nss, &ns, &deadline(BOUND)).await.unwrap();

    // Cancelled by StopProvider while waiting.
    terminating_namespace(&cluster, "held").await;
    let cancel = CancellationToken::new();
    let dl = Deadline::new(BOUND, cancel.clone());
    cancel.cancel();
    let err = cluster.namespace_settled("held", &dl).await.unwrap_err();
    assert!(matches!(err, KubeError::Cancelled { .. }), "{err:?}");
}

/// A wait whose watch the server refuses for good (here 403: no list/watch permission) fails
/// at once with the RBAC advice, instead of being retried and reported as unreachable.
#[tokio::test]
async fn a_refused_watch_fails_at_once_with_the_advice() {
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    c1.control()
        .add_restricted_user(&RestrictedUser {
            token: "kube-test-getter-token".into(),
            name: Some("getter".into()),
            allow: vec![Allow {
                verb: "get".into(),
                resource: "configmaps".into(),
            }],
        })
        .await
        .unwrap();
    let getter = connect(&Connection {
        token: Some("kube-test-getter-token".into()),
        ..inline(c1)
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    let err = within(
        BOUND,
        "the refused wait",
        wait_for(
            &getter,
            configmaps(&getter),
            "waited",
            "ConfigMap waited",
            never,
            &deadline(Duration::from_secs(60)),
        ),
    )
    .await
    .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert!(matches!(err, KubeError::Api { code: 403, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("waiting for ConfigMap waited"), "{msg}");
    assert!(msg.contains("RBAC"), "{msg}");
}

/// istiod's debug endpoints through port-forwards: the forward opened for one request stays
/// open (istiod's HTTP server keeps connections alive) and serves the next requests to the
/// same pod, concurrent requests included, instead of one forward (TLS, upgrade) each.
#[tokio::test]
async fn port_forwards_to_istiod_are_kept_for_the_next_request() {
    use terraform_provider_mesh::istio::istiod;
    let sim = sim(&["c1"]).await;
    let c1 = sim.cluster("c1");
    let control = c1.control();
    let cluster = cluster_for(c1).await;
    let dl = deadline(BOUND);
    let istiod: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "istiod", "namespace": "default", "labels": labels("test.kube")},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "istiod"}},
            "template": {
                "metadata": {"labels": {"app": "istiod"}},
                "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.30.3",
                    "args": ["discovery", "--monitoringAddr=:15014"],
                    "env": [{"name": "CLUSTER_ID", "value": "c1"}]}]}
            }
        }
    }))
    .unwrap();
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), "default");
    cluster.apply(&api, &istiod, &dl).await.unwrap();
    wait_for(&cluster, api, "istiod", "istiod Available", available, &dl)
        .await
        .unwrap();
    let pods = istiod::pods(&cluster, "default", None, &dl).await.unwrap();
    let pod = &pods[0].name;
    let forwards = || async {
        let counters = control.counters().await.unwrap();
        counters
            .counts
            .iter()
            .filter(|((_, r), _)| r == "pods/portforward")
            .map(|(_, n)| n)
            .sum::<u64>()
    };

    control.reset_counters().await.unwrap();
    for _ in 0..3 {
        let clusters = istiod::clusterz(&cluster, "default", pod, &dl)
            .await
            .unwrap();
        assert_eq!(clusters[0].id, "c1", "the config cluster comes first");
    }
    let gateways = istiod::networkz(&cluster, "default", pod, &dl)
        .await
        .unwrap();
    assert!(gateways.is_empty(), "{gateways:?}");
    assert_eq!(forwards().await, 1, "four reads, one forward");

    // Reads at once each need a stream: a kept one, else a new one, all kept afterwards.
    let reads = (0..3).map(|_| istiod::clusterz(&cluster, "default", pod, &dl));
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.unwrap()[0].id, "c1");
    }
    let after = forwards().await;
    assert!(
        (1..=3).contains(&after),
        "{after} forwards for three concurrent reads"
    );
    let reads = (0..3).map(|_| istiod::clusterz(&cluster, "default", pod, &dl));
    for r in futures::future::join_all(reads).await {
        assert_eq!(r.unwrap()[0].id, "c1");
    }
    assert_eq!(
        forwards().await,
        after,
        "the concurrent reads' forwards were kept"
    );

    // A port nothing listens on: the kubelet's refusal on the error channel is the error,
    // and that forward is not kept.
    use terraform_provider_mesh::kube::portforward;
    control.reset_counters().await.unwrap();
    for _ in 0..2 {
        let err = portforward::get(&cluster, "default", pod, 15010, "/debug/x", &dl)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("connection refused"), "{err}");
        assert!(
            err.contains(&format!("pod default/{pod} port 15010")),
            "{err}"
        );
    }
    assert_eq!(forwards().await, 2, "a refused forward is not reused");
}
