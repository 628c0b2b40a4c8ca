//! The Istio multicluster guide's "Verify the installation" on kube-sim: HelloWorld v1 in c1,
//! v2 in c2, a curl pod in c1, `kubectl exec ... curl helloworld.sample:5000/hello` through
//! kube-rs. Injection, workload certificates (istiod's plug-in CA from `cacerts`), remote
//! sync and the data-plane rules all take part.

mod common;

use std::time::{Duration, Instant};

use common::{client, sim};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, AttachParams, ListParams, PostParams};
use kube::core::DynamicObject;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

const WAIT: Duration = Duration::from_secs(20);

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap()
}

/// A root and, per cluster, an intermediate under it: the `cacerts` files.
struct Pki {
    root_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, name);
        let k = rcgen::KeyPair::generate().unwrap();
        let root_pem = p.self_signed(&k).unwrap().pem();
        Pki {
            root_pem,
            issuer: rcgen::Issuer::new(p, k),
        }
    }

    /// (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)
    fn cacerts(&self, cluster: &str) -> [String; 4] {
        let mut p = rcgen::CertificateParams::default();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, format!("Istio {cluster}"));
        let k = rcgen::KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &self.issuer).unwrap();
        [
            c.pem(),
            k.serialize_pem(),
            format!("{}{}", c.pem(), self.root_pem),
            self.root_pem.clone(),
        ]
    }
}

/// istio-system (network n1) with `cacerts`, istiod (as the chart makes it) and the injector
/// objects of the unrevisioned control plane; `sample` with injection on, the HelloWorld Service.
async fn control_plane(c: &kube::Client, id: &str, cacerts: &[String; 4]) {
    let nss: Api<Namespace> = Api::all(c.clone());
    create(&nss, json!({"metadata": {"name": "istio-system", "labels": {"topology.istio.io/network": "n1"}}})).await;
    create(
        &nss,
        json!({"metadata": {"name": "sample", "labels": {"istio-injection": "enabled"}}}),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "istio-system");
    create(&secrets, json!({"metadata": {"name": "cacerts"}, "stringData": {
        "ca-cert.pem": cacerts[0], "ca-key.pem": cacerts[1], "cert-chain.pem": cacerts[2], "root-cert.pem": cacerts[3]}})).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "istio-system");
    create(&deps, json!({"metadata": {"name": "istiod"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod"}},
            "template": {"metadata": {"labels": {"app": "istiod", "istio.io/rev": "default", "sidecar.istio.io/inject": "false"}},
                "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.30.3",
                    "args": ["discovery", "--monitoringAddr=:15014"],
                    "env": [{"name": "CLUSTER_ID", "value": id}]}]}}}})).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "istio-system");
    create(&cms, json!({"metadata": {"name": "istio-sidecar-injector"},
        "data": {"values": json!({"global": {"hub": "docker.io/istio", "tag": "1.30.3", "network": "n1",
            "multiCluster": {"clusterName": id}}, "revision": ""}).to_string(), "config": "policy: enabled\n"}})).await;
    let ar = kube::core::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "MutatingWebhookConfiguration".into(),
        plural: "mutatingwebhookconfigurations".into(),
    };
    let mwcs: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": "istio-sidecar-injector"},
        "webhooks": [{"name": "namespace.sidecar-injector.istio.io",
            "clientConfig": {"service": {"name": "istiod", "namespace": "istio-system", "path": "/inject", "port": 443}},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "namespaceSelector": {"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]},
            "objectSelector": {"matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]}}]})).unwrap();
    mwcs.create(&PostParams::default(), &obj).await.unwrap();
    ready(c, "istio-system", "app=istiod").await;
    let svcs: Api<Service> = Api::namespaced(c.clone(), "sample");
    create(
        &svcs,
        json!({"metadata": {"name": "helloworld", "labels": {"app": "helloworld"}},
        "spec": {"selector": {"app": "helloworld"}, "ports": [{"name": "http", "port": 5000}]}}),
    )
    .await;
}

async fn ready(c: &kube::Client, ns: &str, selector: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let deadline = Instant::now() + WAIT;
    loop {
        let l = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        if let Some(p) = l.items.iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        }) {
            return p.name_any();
        }
        assert!(Instant::now() < deadline, "no Ready pod for {selector}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// HelloWorld `version` as in `samples/helloworld/helloworld.yaml`.
async fn helloworld(c: &kube::Client, version: &str) -> String {
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "sample");
    create(&deps, json!({"metadata": {"name": format!("helloworld-{version}"), "labels": {"app": "helloworld", "version": version}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "helloworld", "version": version}},
            "template": {"metadata": {"labels": {"app": "helloworld", "version": version}},
                "spec": {"containers": [{"name": "helloworld",
                    "image": format!("registry.istio.io/release/examples-helloworld-{version}:1.0"),
                    "ports": [{"containerPort": 5000}]}]}}}})).await;
    ready(c, "sample", &format!("app=helloworld,version={version}")).await
}

async fn curl_pod(c: &kube::Client) -> String {
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "sample");
    create(&deps, json!({"metadata": {"name": "curl"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "curl"}},
            "template": {"metadata": {"labels": {"app": "curl"}},
                "spec": {"containers": [{"name": "curl", "image": "docker.io/curlimages/curl:8.16.0",
                    "command": ["/bin/sleep", "infinity"]}]}}}})).await;
    ready(c, "sample", "app=curl").await
}

/// `kubectl exec -c curl <pod> -- curl -sS helloworld.sample:5000/hello`: (stdout, stderr).
async fn curl(c: &kube::Client, pod: &str) -> (String, String) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), "sample");
    let mut p = pods
        .exec(
            pod,
            vec!["curl", "-sS", "helloworld.sample:5000/hello"],
            &AttachParams::default().container("curl"),
        )
        .await
        .unwrap();
    let (mut out, mut err) = (p.stdout().unwrap(), p.stderr().unwrap());
    let (mut o, mut e) = (String::new(), String::new());
    let status = p.take_status().unwrap();
    let (_, _, st) = tokio::join!(
        out.read_to_string(&mut o),
        err.read_to_string(&mut e),
        status
    );
    assert_eq!(st.unwrap().status.as_deref(), Some("Success"), "{e}");
    (o, e)
}

async fn reader_token(c: &kube::Client) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "istio-system");
    create(
        &sas,
        json!({"metadata": {"name": "istio-reader-service-account"}}),
    )
    .await;
    let crs: Api<ClusterRole> = Api::all(c.clone());
    create(
        &crs,
        json!({"metadata": {"name": "istio-reader"}, "rules": [
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "watch"]}]}),
    )
    .await;
    let crbs: Api<ClusterRoleBinding> = Api::all(c.clone());
    create(&crbs, json!({"metadata": {"name": "istio-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "istio-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "istio-reader-service-account", "namespace": "istio-system"}]})).await;
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    sas.create_token_request("istio-reader-service-account", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

#[tokio::test]
async fn the_verification_guide_alternates_between_clusters_once_the_remote_is_synced() {
    let sim = sim(&["c1", "c2"]).await;
    let (c1, c2) = (client(&sim, "c1").await, client(&sim, "c2").await);
    let pki = Pki::new("mesh root");
    control_plane(&c1, "c1", &pki.cacerts("c1")).await;
    control_plane(&c2, "c2", &pki.cacerts("c2")).await;
    let v1 = helloworld(&c1, "v1").await;
    let v2 = helloworld(&c2, "v2").await;
    let curl_pod = curl_pod(&c1).await;

    // The pods were injected (native sidecar) and are Ready with it.
    let pods: Api<Pod> = Api::namespaced(c1.clone(), "sample");
    let p = pods.get(&curl_pod).await.unwrap();
    let inits: Vec<String> = p
        .spec
        .unwrap()
        .init_containers
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(inits, vec!["istio-init", "istio-proxy"]);

    // Before c1's istiod knows c2: only the local version.
    for _ in 0..3 {
        assert_eq!(
            curl(&c1, &curl_pod).await.0,
            format!("Hello version: v1, instance: {v1}\n")
        );
    }

    // The remote secret for c2 in c1 (what `istioctl create-remote-secret` makes).
    let h2 = sim.cluster("c2");
    let token = reader_token(&c2).await;
    use base64::Engine;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c2\nclusters:\n- name: c2\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: c2\n  context:\n    cluster: c2\n    user: c2\nusers:\n- name: c2\n  user:\n    token: {token}\n",
        h2.url,
        base64::engine::general_purpose::STANDARD.encode(&h2.ca_pem)
    );
    let secrets: Api<Secret> = Api::namespaced(c1.clone(), "istio-system");
    create(&secrets, json!({"metadata": {"name": "istio-remote-secret-c2", "labels": {"istio/multiCluster": "true"}},
        "stringData": {"c2": kubeconfig}})).await;

    // Once synced, answers alternate v1 / v2 (round robin per client pod).
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        seen.push(curl(&c1, &curl_pod).await.0);
        if seen.last().is_some_and(|s| s.contains("v2")) {
            break;
        }
        assert!(Instant::now() < deadline, "c2 never answered: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next: Vec<String> = [curl(&c1, &curl_pod).await.0, curl(&c1, &curl_pod).await.0].to_vec();
    assert_eq!(
        next,
        vec![
            format!("Hello version: v1, instance: {v1}\n"),
            format!("Hello version: v2, instance: {v2}\n"),
        ]
    );

    // A name c1's DNS does not know.
    let mut p = pods
        .exec(
            &curl_pod,
            vec!["curl", "-sS", "nope.sample:5000/hello"],
            &AttachParams::default(),
        )
        .await
        .unwrap();
    let mut err = p.stderr().unwrap();
    let mut e = String::new();
    let status = p.take_status().unwrap();
    let (_, st) = tokio::join!(err.read_to_string(&mut e), status);
    assert_eq!(e, "curl: (6) Could not resolve host: nope.sample\n");
    let st = st.unwrap();
    assert_eq!(
        st.details.unwrap().causes.unwrap()[0].message.as_deref(),
        Some("6")
    );
}

#[tokio::test]
async fn clusters_with_their_own_roots_fail_mtls_and_envoy_falls_back_to_the_local_endpoint() {
    let sim = sim(&["c1", "c2"]).await;
    let (c1, c2) = (client(&sim, "c1").await, client(&sim, "c2").await);
    control_plane(&c1, "c1", &Pki::new("root one").cacerts("c1")).await;
    control_plane(&c2, "c2", &Pki::new("root two").cacerts("c2")).await;
    let h2 = sim.cluster("c2");
    let token = reader_token(&c2).await;
    use base64::Engine;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: c2\nclusters:\n- name: c2\n  cluster:\n    server: {}\n    certificate-authority-data: {}\ncontexts:\n- name: c2\n  context:\n    cluster: c2\n    user: c2\nusers:\n- name: c2\n  user:\n    token: {token}\n",
        h2.url,
        base64::engine::general_purpose::STANDARD.encode(&h2.ca_pem)
    );
    let secrets: Api<Secret> = Api::namespaced(c1.clone(), "istio-system");
    create(&secrets, json!({"metadata": {"name": "istio-remote-secret-c2", "labels": {"istio/multiCluster": "true"}},
        "stringData": {"c2": kubeconfig}})).await;
    helloworld(&c2, "v2").await;
    let curl_pod = curl_pod(&c1).await;
    // Only c2 has the service's endpoint: every try fails the handshake.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (o, _) = curl(&c1, &curl_pod).await;
    assert!(o.contains("CERTIFICATE_VERIFY_FAILED"), "{o}");
    // With a local endpoint, the retries land there.
    let v1 = helloworld(&c1, "v1").await;
    for _ in 0..4 {
        assert_eq!(
            curl(&c1, &curl_pod).await.0,
            format!("Hello version: v1, instance: {v1}\n")
        );
    }
}
