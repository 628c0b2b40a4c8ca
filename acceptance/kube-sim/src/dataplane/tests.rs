//! The data-plane rules, one test each, on clusters built directly in their stores.

use std::sync::Arc;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::mtls::tests::plug_in;
use super::*;
use crate::cluster::Settings;
use crate::istiod::ca::Signer;

const NS: &str = "sample";

fn cluster(name: &str) -> Arc<Cluster> {
    Cluster::new(name, Settings::default(), 0, CancellationToken::new()).unwrap()
}

fn put(c: &Cluster, group: &str, resource: &str, obj: Value) -> Arc<Value> {
    let ns = object::namespace(&obj).to_string();
    let name = object::name(&obj).to_string();
    c.store
        .write(&ResKey::new(group, resource), &ns, &name, false, |_| {
            Ok(obj)
        })
        .unwrap()
        .obj
}

/// A cluster on `network` with the HelloWorld Service and the given trust bundle published.
fn mesh_cluster(name: &str, network: &str, bundle: &str) -> Arc<Cluster> {
    let c = cluster(name);
    put(
        &c,
        "",
        "namespaces",
        json!({"metadata": {"name": "istio-system", "labels": {NETWORK_LABEL: network}}}),
    );
    put(&c, "", "namespaces", json!({"metadata": {"name": NS}}));
    put(
        &c,
        "",
        "services",
        json!({"metadata": {"name": "helloworld", "namespace": NS},
        "spec": {"selector": {"app": "helloworld"}, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}}),
    );
    put(
        &c,
        "",
        "configmaps",
        json!({"metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"},
        "data": {"root-cert.pem": bundle}}),
    );
    c
}

fn set_bundle(c: &Cluster, bundle: &str) {
    put(
        c,
        "",
        "configmaps",
        json!({"metadata": {"name": "istio-ca-root-cert", "namespace": "istio-system"},
        "data": {"root-cert.pem": bundle}}),
    );
}

/// A Running, Ready pod; with a sidecar when `signer` is given (its certificate issued now).
fn pod(c: &Cluster, name: &str, labels: Value, image: &str, signer: Option<&Signer>) -> Arc<Value> {
    let mut p = json!({"metadata": {"name": name, "namespace": NS, "uid": format!("{}-{name}", c.name), "labels": labels},
        "spec": {"containers": [{"name": "app", "image": image}]},
        "status": {"phase": "Running", "podIP": "10.244.0.9",
            "conditions": [{"type": "Ready", "status": "True"}]}});
    if signer.is_some() {
        p["metadata"]["annotations"] =
            json!({injector::STATUS_ANNOTATION: "{\"revision\":\"default\"}"});
        p["metadata"]["labels"]["security.istio.io/tlsMode"] = json!("istio");
        p["spec"]["initContainers"] =
            json!([{"name": "istio-init"}, {"name": "istio-proxy", "restartPolicy": "Always"}]);
    }
    let p = put(c, "", "pods", p);
    if let Some(s) = signer {
        let cert = mtls::issue(s, "spiffe://cluster.local/ns/sample/sa/default").unwrap();
        c.dataplane
            .lock()
            .unwrap()
            .certs
            .insert(object::uid(&p).to_string(), cert);
    }
    p
}

fn hello(c: &Cluster, name: &str, version: &str, signer: Option<&Signer>) -> Arc<Value> {
    pod(
        c,
        name,
        json!({"app": "helloworld"}),
        &format!("docker.io/istio/examples-helloworld-{version}:1.0"),
        signer,
    )
}

fn view(clusters: &[&Arc<Cluster>]) -> MeshView {
    let mut gateways = Vec::new();
    for c in clusters {
        gateways.extend(networkz::gateways_in(&c.store, &c.name));
    }
    MeshView {
        system_ns: "istio-system".into(),
        clusters: clusters
            .iter()
            .map(|c| (c.name.clone(), (*c).clone()))
            .collect(),
        gateways: networkz::sorted(gateways),
    }
}

fn get(c: &Cluster, client: &Value, v: &MeshView) -> Outcome {
    through_sidecar(c, client, v, "helloworld", NS, 5000, "/hello")
}

fn body(o: &Outcome) -> String {
    match o {
        Outcome::Http(r) => r.body.clone(),
        other => format!("{other:?}"),
    }
}

/// An east-west gateway in `c` for `network`: LoadBalancer Service (address `addr` if given),
/// a Ready gateway pod and, if `expose`, the `cross-network-gateway` Gateway.
fn eastwest(c: &Cluster, network: &str, addr: Option<&str>, expose: bool) {
    let ingress = match addr {
        Some(a) => json!([{"ip": a}]),
        None => json!([]),
    };
    put(
        c,
        "",
        "services",
        json!({"metadata": {"name": "istio-eastwestgateway", "namespace": "istio-system",
            "labels": {NETWORK_LABEL: network}},
        "spec": {"type": "LoadBalancer", "selector": {"istio": "eastwestgateway"},
            "ports": [{"name": "status-port", "port": 15021}, {"name": "tls", "port": 15443}]},
        "status": {"loadBalancer": {"ingress": ingress}}}),
    );
    put(
        c,
        "",
        "pods",
        json!({"metadata": {"name": "istio-eastwestgateway-1", "namespace": "istio-system",
            "uid": format!("{}-ewgw", c.name), "labels": {"istio": "eastwestgateway"}},
        "spec": {"containers": [{"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.30.3"}]},
        "status": {"phase": "Running", "podIP": "10.244.0.50", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    if expose {
        put(
            c,
            "networking.istio.io",
            "gateways",
            json!({"metadata": {"name": "cross-network-gateway", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "eastwestgateway"}, "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}]}}),
        );
    }
}

#[test]
fn dns_needs_the_service_in_the_client_cluster() {
    let a = cluster("a");
    put(
        &a,
        "",
        "services",
        json!({"metadata": {"name": "helloworld", "namespace": NS},
        "spec": {"clusterIP": "10.96.1.1", "ports": [{"port": 5000}]}}),
    );
    assert_eq!(
        resolve(&a, "other", "helloworld.sample"),
        Some(("helloworld".into(), NS.into()))
    );
    assert_eq!(
        resolve(&a, NS, "helloworld"),
        Some(("helloworld".into(), NS.into()))
    );
    assert_eq!(
        resolve(&a, "x", "helloworld.sample.svc.cluster.local."),
        Some(("helloworld".into(), NS.into()))
    );
    assert_eq!(
        resolve(&a, "x", "10.96.1.1"),
        Some(("helloworld".into(), NS.into()))
    );
    assert_eq!(
        resolve(&a, "x", "helloworld"),
        None,
        "short names search the client's namespace"
    );
    assert_eq!(resolve(&a, "x", "nope.sample"), None);
    let client = pod(&a, "curl", json!({"app": "curl"}), "curlimages/curl", None);
    let a = Arc::new(a);
    assert_eq!(
        http_get(&a, &client, "nope.sample", 5000, "/"),
        Outcome::Unresolved
    );
}

#[test]
fn without_a_sidecar_only_local_ready_endpoints_answer() {
    let (root, signer) = plug_in("R");
    let a = mesh_cluster("a", "n1", &root);
    let client = pod(&a, "curl", json!({"app": "curl"}), "curlimages/curl", None);
    // No endpoint: kube-proxy rejects the connection.
    assert_eq!(
        http_get(&a, &client, "helloworld.sample", 5000, "/hello"),
        Outcome::Refused
    );
    // A sidecar server accepts plaintext (PERMISSIVE).
    hello(&a, "hw-v1", "v1", Some(&signer));
    assert_eq!(
        body(&http_get(&a, &client, "helloworld.sample", 5000, "/hello")),
        "Hello version: v1, instance: hw-v1\n"
    );
    // A port the Service does not declare.
    assert_eq!(
        http_get(&a, &client, "helloworld.sample", 80, "/"),
        Outcome::Refused
    );
}

#[test]
fn same_cluster_sidecars_reach_each_other() {
    let (root, signer) = plug_in("R");
    let a = mesh_cluster("a", "n1", &root);
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    let v = view(&[&a]);
    assert_eq!(body(&get(&a, &client, &v)), "no healthy upstream");
    hello(&a, "hw-v1", "v1", Some(&signer));
    assert_eq!(
        body(&get(&a, &client, &v)),
        "Hello version: v1, instance: hw-v1\n"
    );
}

#[test]
fn a_remote_istiod_has_not_synced_is_not_reached() {
    let (root, signer) = plug_in("R");
    let (a, b) = (
        mesh_cluster("a", "n1", &root),
        mesh_cluster("b", "n1", &root),
    );
    hello(&b, "hw-v2", "v2", Some(&signer));
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    // istiod's view holds synced remotes only.
    assert_eq!(body(&get(&a, &client, &view(&[&a]))), "no healthy upstream");
    assert_eq!(
        body(&get(&a, &client, &view(&[&a, &b]))),
        "Hello version: v2, instance: hw-v2\n"
    );
}

#[test]
fn a_synced_remote_on_the_same_network_is_reached_directly_and_round_robin_alternates() {
    let (root, signer) = plug_in("R");
    let (a, b) = (
        mesh_cluster("a", "n1", &root),
        mesh_cluster("b", "n1", &root),
    );
    hello(&a, "hw-v1", "v1", Some(&signer));
    hello(&b, "hw-v2", "v2", Some(&signer));
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    let v = view(&[&a, &b]);
    let seen: Vec<String> = (0..4).map(|_| body(&get(&a, &client, &v))).collect();
    assert_eq!(
        seen,
        vec![
            "Hello version: v1, instance: hw-v1\n",
            "Hello version: v2, instance: hw-v2\n",
            "Hello version: v1, instance: hw-v1\n",
            "Hello version: v2, instance: hw-v2\n"
        ]
    );
    // Another client pod has its own position.
    let other = pod(
        &a,
        "curl-2",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    assert_eq!(
        body(&get(&a, &other, &v)),
        "Hello version: v1, instance: hw-v1\n"
    );
}

#[test]
fn another_network_without_a_gateway_is_dropped() {
    let (root, signer) = plug_in("R");
    let (a, b) = (
        mesh_cluster("a", "n1", &root),
        mesh_cluster("b", "n2", &root),
    );
    hello(&b, "hw-v2", "v2", Some(&signer));
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    assert_eq!(
        body(&get(&a, &client, &view(&[&a, &b]))),
        "no healthy upstream"
    );
}

#[test]
fn a_gateway_without_an_address_is_no_gateway() {
    let (root, signer) = plug_in("R");
    let (a, b) = (
        mesh_cluster("a", "n1", &root),
        mesh_cluster("b", "n2", &root),
    );
    hello(&b, "hw-v2", "v2", Some(&signer));
    eastwest(&b, "n2", None, true);
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    assert_eq!(
        body(&get(&a, &client, &view(&[&a, &b]))),
        "no healthy upstream"
    );
}

#[test]
fn another_network_is_reached_through_its_exposing_gateway_with_a_sidecar_only() {
    let (root, signer) = plug_in("R");
    let (a, b) = (
        mesh_cluster("a", "n1", &root),
        mesh_cluster("b", "n2", &root),
    );
    eastwest(&b, "n2", Some("203.0.113.9"), true);
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    // Without a sidecar the server cannot be reached through the gateway.
    hello(&b, "hw-plain", "v2", None);
    assert_eq!(
        body(&get(&a, &client, &view(&[&a, &b]))),
        "no healthy upstream"
    );
    hello(&b, "hw-v2", "v2", Some(&signer));
    assert_eq!(
        body(&get(&a, &client, &view(&[&a, &b]))),
        "Hello version: v2, instance: hw-v2\n"
    );
}

#[test]
fn a_gateway_that_does_not_expose_services_refuses_and_envoy_retries_elsewhere() {
    let (root, signer) = plug_in("R");
    let (a, b) = (
        mesh_cluster("a", "n1", &root),
        mesh_cluster("b", "n2", &root),
    );
    eastwest(&b, "n2", Some("203.0.113.9"), false);
    hello(&b, "hw-v2", "v2", Some(&signer));
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    let v = view(&[&a, &b]);
    assert_eq!(
        body(&get(&a, &client, &v)),
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused"
    );
    // With a local endpoint the retries land there: every answer is local.
    hello(&a, "hw-v1", "v1", Some(&signer));
    for _ in 0..4 {
        assert_eq!(
            body(&get(&a, &client, &v)),
            "Hello version: v1, instance: hw-v1\n"
        );
    }
}

#[test]
fn different_roots_fail_the_handshake() {
    let (root_a, signer_a) = plug_in("A");
    let (root_b, signer_b) = plug_in("B");
    let (a, b) = (
        mesh_cluster("a", "n1", &root_a),
        mesh_cluster("b", "n1", &root_b),
    );
    hello(&b, "hw-v2", "v2", Some(&signer_b));
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer_a),
    );
    let o = get(&a, &client, &view(&[&a, &b]));
    assert_eq!(
        body(&o),
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection failure, transport failure reason: TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end"
    );
    assert!(matches!(o, Outcome::Http(Reply { status: 503, .. })));
}

#[test]
fn a_multi_root_bundle_trusts_both_roots() {
    let (root_a, signer_a) = plug_in("A");
    let (root_b, signer_b) = plug_in("B");
    let both = format!("{root_a}{root_b}");
    let (a, b) = (
        mesh_cluster("a", "n1", &both),
        mesh_cluster("b", "n1", &both),
    );
    hello(&b, "hw-v2", "v2", Some(&signer_b));
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer_a),
    );
    assert_eq!(
        body(&get(&a, &client, &view(&[&a, &b]))),
        "Hello version: v2, instance: hw-v2\n"
    );
    // One side trusting only its own root refuses the other's client certificate.
    set_bundle(&b, &root_b);
    assert!(body(&get(&a, &client, &view(&[&a, &b]))).contains("TLSV1_ALERT_UNKNOWN_CA"));
}

#[test]
fn a_pod_started_before_a_root_change_keeps_its_old_certificate() {
    let (root_a, signer_a) = plug_in("A");
    let (root_b, signer_b) = plug_in("B");
    let (a, b) = (
        mesh_cluster("a", "n1", &root_a),
        mesh_cluster("b", "n1", &root_a),
    );
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer_a),
    );
    // Both clusters move to root B; the server restarts and gets a B certificate, the client
    // keeps its A certificate.
    set_bundle(&a, &root_b);
    set_bundle(&b, &root_b);
    hello(&b, "hw-v2", "v2", Some(&signer_b));
    assert!(body(&get(&a, &client, &view(&[&a, &b]))).contains("TLSV1_ALERT_UNKNOWN_CA"));
    // A restarted client (new certificate from B) succeeds.
    let fresh = pod(
        &a,
        "curl-new",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer_b),
    );
    assert_eq!(
        body(&get(&a, &fresh, &view(&[&a, &b]))),
        "Hello version: v2, instance: hw-v2\n"
    );
}

#[test]
fn a_server_without_a_listener_behind_its_sidecar_is_a_503_from_the_inbound_proxy() {
    let (root, signer) = plug_in("R");
    let a = mesh_cluster("a", "n1", &root);
    pod(
        &a,
        "not-hello",
        json!({"app": "helloworld"}),
        "nginx",
        Some(&signer),
    );
    let client = pod(
        &a,
        "curl",
        json!({"app": "curl"}),
        "curlimages/curl",
        Some(&signer),
    );
    let o = get(&a, &client, &view(&[&a]));
    assert_eq!(
        body(&o),
        "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused"
    );
}
