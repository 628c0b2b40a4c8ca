//! Workload pods, websocket port-forward and the simulated istiod, driven by kube-rs (`ws`
//! feature) as an independent client: port-forward to istiod's 15014 and HTTP over the stream.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{client, client_with_token, sim, status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "istio-system";

/// Poll `check` until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const WAIT: Duration = Duration::from_secs(15);

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap()
}

/// An istiod Deployment shaped like Istio's chart makes it.
fn istiod(cluster_id: &str, timeout: Option<&str>) -> Value {
    let mut env = vec![json!({"name": "CLUSTER_ID", "value": cluster_id})];
    if let Some(t) = timeout {
        env.push(json!({"name": "PILOT_REMOTE_CLUSTER_TIMEOUT", "value": t}));
    }
    json!({
        "metadata": {"name": "istiod", "namespace": NS, "labels": {"app": "istiod"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "istiod"}},
            "template": {"metadata": {"labels": {"app": "istiod", "istio": "pilot"}},
                "spec": {"serviceAccountName": "istiod", "containers": [{"name": "discovery",
                    "image": "docker.io/istio/pilot:1.30.3",
                    "args": ["discovery", "--monitoringAddr=:15014"],
                    "ports": [{"containerPort": 8080}, {"containerPort": 15010}, {"containerPort": 15017}],
                    "env": env}]}}}
    })
}

/// Install istiod in `istio-system` and return its Ready pod's name.
async fn install_istiod(c: &kube::Client, cluster_id: &str, timeout: Option<&str>) -> String {
    let nss: Api<Namespace> = Api::all(c.clone());
    create(&nss, json!({"metadata": {"name": NS}})).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), NS);
    create(&deps, istiod(cluster_id, timeout)).await;
    ready_pod(c, "app=istiod").await
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn ready_pod(c: &kube::Client, selector: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    eventually("a Ready pod", WAIT, || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels(selector))
                .await
                .ok()?;
            l.items.into_iter().find(is_ready).map(|p| p.name_any())
        }
    })
    .await
}

/// GET `path` over a port-forward to `port` of the pod: (status code, body).
async fn forward_get(c: &kube::Client, pod: &str, port: u16, path: &str) -> (u16, String) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), NS);
    let mut pf = pods.portforward(pod, &[port]).await.expect("port-forward");
    let mut s = pf.take_stream(port).expect("stream");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .unwrap();
    drop(s);
    // The server closes the websocket once istiod closed the connection (as the kubelet does);
    // kube-rs then tries to send its own close and reports SendAfterClosing, so the join result
    // says nothing about the exchange.
    let _ = pf.join().await;
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

async fn clusterz(c: &kube::Client, pod: &str) -> Vec<Value> {
    let (code, body) = forward_get(c, pod, 15014, "/debug/clusterz").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn status_of<'a>(list: &'a [Value], id: &str) -> Option<&'a str> {
    list.iter()
        .find(|e| e["id"] == id)
        .and_then(|e| e["syncStatus"].as_str())
}

/// A kubeconfig for `server` with the given CA and token.
fn kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: remote\nclusters:\n- name: remote\n  cluster:\n    server: {server}\n    certificate-authority-data: {b64}\ncontexts:\n- name: remote\n  context:\n    cluster: remote\n    user: remote\nusers:\n- name: remote\n  user:\n    token: {token}\n"
    )
}

async fn put_remote_secret(c: &kube::Client, name: &str, id: &str, kubeconfig: &str) {
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let s = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NS, "labels": {"istio/multiCluster": "true"}},
        "stringData": {id: kubeconfig}});
    secrets
        .patch(name, &PatchParams::apply("test").force(), &Patch::Apply(&s))
        .await
        .unwrap();
}

/// A service account in `cluster` allowed to list/watch what istiod's informers read; returns a
/// token for it.
async fn reader_token(c: &kube::Client) -> String {
    reader_token_without(c, "").await
}

/// [`reader_token`] with the core resource `missing` left out of the reader's rules.
async fn reader_token_without(c: &kube::Client, missing: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "default");
    create(&sas, json!({"metadata": {"name": "istio-reader"}})).await;
    let core: Vec<&str> = [
        "namespaces",
        "services",
        "pods",
        "nodes",
        "secrets",
        "configmaps",
    ]
    .into_iter()
    .filter(|r| *r != missing)
    .collect();
    let crs: Api<ClusterRole> = Api::all(c.clone());
    create(&crs, json!({"metadata": {"name": "istio-reader"}, "rules": [
        {"apiGroups": [""], "resources": core, "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]}))
    .await;
    let crbs: Api<ClusterRoleBinding> = Api::all(c.clone());
    create(&crbs, json!({"metadata": {"name": "istio-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "istio-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "istio-reader", "namespace": "default"}]}))
    .await;
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    sas.create_token_request("istio-reader", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

#[tokio::test]
async fn workload_pods_are_created_ready_replaced_scaled_and_collected() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");
    let d = create(
        &deps,
        json!({"metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"a": "1"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    let web_pods = || {
        let pods = pods.clone();
        async move {
            pods.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items
        }
    };
    let first = eventually("two Ready pods", WAIT, || async {
        let ps = web_pods().await;
        (ps.len() == 2 && ps.iter().all(is_ready)).then_some(ps)
    })
    .await;
    let p = &first[0];
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("Deployment", d.uid().unwrap().as_str())
    );
    assert_eq!(p.annotations().get("a").map(String::as_str), Some("1"));
    let hash = p.labels().get("pod-template-hash").cloned().unwrap();
    assert!(
        p.name_any().starts_with(&format!("web-{hash}-")),
        "{}",
        p.name_any()
    );
    let st = p.status.as_ref().unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert!(st
        .pod_ip
        .as_deref()
        .is_some_and(|ip| ip.starts_with("10.244.")));
    assert_ne!(
        first[0].status.as_ref().unwrap().pod_ip,
        first[1].status.as_ref().unwrap().pod_ip
    );
    assert!(st.container_statuses.as_ref().unwrap()[0].ready);

    // A template change replaces the pods; replicas scale them.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 3,
        "template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}})),
    )
    .await
    .unwrap();
    eventually("three new pods", WAIT, || async {
        let ps = web_pods().await;
        (ps.len() == 3
            && ps.iter().all(|p| {
                p.labels().get("v").is_some_and(|v| v == "2")
                    && p.labels().get("pod-template-hash") != Some(&hash)
            }))
        .then_some(())
    })
    .await;

    // The failure annotation leaves the pods Running but not Ready.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations":
        {kube_sim::FAIL_ANNOTATION: "image pull backoff"}}})),
    )
    .await
    .unwrap();
    eventually("pods not Ready", WAIT, || async {
        let ps = web_pods().await;
        (ps.len() == 3 && ps.iter().all(|p| !is_ready(p))).then_some(())
    })
    .await;

    // A deleted pod is replaced; deleting the Deployment collects its pods.
    let victim = web_pods().await[0].name_any();
    pods.delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually("replacement pod", WAIT, || async {
        let ps = web_pods().await;
        (ps.len() == 3 && ps.iter().all(|p| p.name_any() != victim)).then_some(())
    })
    .await;
    deps.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("pods collected", WAIT, || async {
        web_pods().await.is_empty().then_some(())
    })
    .await;

    // Switched off, the controller makes no pods; switched back on, it catches up. The
    // load balancer answering proves the controller loop has seen the Deployment.
    let mut s = sim.cluster("c1").settings();
    s.deployments.enabled = false;
    sim.cluster("c1").set_settings(s.clone());
    create(
        &deps,
        json!({"metadata": {"name": "later"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "later"}},
            "template": {"metadata": {"labels": {"app": "later"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}),
    )
    .await;
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    create(
        &svcs,
        json!({"metadata": {"name": "probe"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
    )
    .await;
    eventually("probe address", WAIT, || async {
        svcs.get("probe")
            .await
            .ok()?
            .status?
            .load_balancer?
            .ingress
            .map(|_| ())
    })
    .await;
    let later = || async {
        pods.list(&ListParams::default().labels("app=later"))
            .await
            .unwrap()
            .items
    };
    assert!(later().await.is_empty());
    s.deployments.enabled = true;
    sim.cluster("c1").set_settings(s);
    eventually("pod after switching on", WAIT, || async {
        let ps = later().await;
        (ps.len() == 1 && is_ready(&ps[0])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn clusterz_over_portforward_tracks_remote_sync_like_istiod() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = client(&sim, "c1").await;
    let c2 = client(&sim, "c2").await;
    let pod = install_istiod(&c1, "c1", Some("3s")).await;
    let before = sim.cluster("c1").control().counters().await.unwrap();

    // Only the config cluster at first.
    let list = clusterz(&c1, &pod).await;
    assert_eq!(
        list,
        vec![json!({"id": "c1", "secretName": "", "syncStatus": "synced"})]
    );

    // A remote whose token c2 accepts and whose RBAC lets the informers list/watch: synced.
    let remote = sim.cluster("c2");
    let token = reader_token(&c2).await;
    put_remote_secret(
        &c1,
        "istio-remote-secret-c2",
        "c2",
        &kubeconfig(&remote.url, &remote.ca_pem, &token),
    )
    .await;
    let list = clusterz(&c1, &pod).await;
    assert_eq!(
        list[1],
        json!({"id": "c2", "secretName": "istio-system/istio-remote-secret-c2", "syncStatus": "synced"})
    );

    // Revoking the token afterwards does not undo the completed sync (Istio latches initialSync).
    let sas: Api<ServiceAccount> = Api::namespaced(c2.clone(), "default");
    sas.delete("istio-reader", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("synced"));

    // New content with a rejected token restarts the remote: syncing, then timeout.
    put_remote_secret(
        &c1,
        "istio-remote-secret-c2",
        "c2",
        &kubeconfig(&remote.url, &remote.ca_pem, "not-a-token"),
    )
    .await;
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("syncing"));
    // An unknown server never syncs either.
    put_remote_secret(
        &c1,
        "istio-remote-secret-c9",
        "c9",
        &kubeconfig("https://127.0.0.1:9", &remote.ca_pem, &remote.admin_token),
    )
    .await;
    let list = eventually("both remotes time out", WAIT, || async {
        let l = clusterz(&c1, &pod).await;
        (status_of(&l, "c2") == Some("timeout") && status_of(&l, "c9") == Some("timeout"))
            .then_some(l)
    })
    .await;
    assert_eq!(list.len(), 3, "{list:?}");

    // A server alias (a kind-style in-network address) reaches c2 too.
    remote.add_server_alias("https://c2-control-plane:6443");
    put_remote_secret(
        &c1,
        "istio-remote-secret-c9",
        "c9",
        &kubeconfig(
            "https://c2-control-plane:6443",
            &remote.ca_pem,
            &remote.admin_token,
        ),
    )
    .await;
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c9"), Some("synced"));

    // The port-forwards were counted as kube-sim counts any request.
    let after = sim.cluster("c1").control().counters().await.unwrap();
    assert!(after.get("get", "pods/portforward") >= before.get("get", "pods/portforward") + 4);
}

#[tokio::test]
async fn sync_delay_setting_holds_a_reachable_remote_in_syncing() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = client(&sim, "c1").await;
    let pod = install_istiod(&c1, "c1", None).await;
    let mut s = sim.cluster("c1").settings();
    s.istiod.remote_sync_delay_ms = 2500;
    sim.cluster("c1").set_settings(s);
    let remote = sim.cluster("c2");
    let started = Instant::now();
    put_remote_secret(
        &c1,
        "istio-remote-secret-c2",
        "c2",
        &kubeconfig(&remote.url, &remote.ca_pem, &remote.admin_token),
    )
    .await;
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("syncing"));
    eventually("c2 synced", WAIT, || async {
        (status_of(&clusterz(&c1, &pod).await, "c2") == Some("synced")).then_some(())
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(2500));
}

fn gateway_service(name: &str, network: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": NS, "labels": {"topology.istio.io/network": network}},
        "spec": {"type": "LoadBalancer", "selector": {"istio": "eastwestgateway"},
            "ports": [{"name": "status-port", "port": 15021}, {"name": "tls", "port": 15443}]}})
}

async fn lb_ip(c: &kube::Client, name: &str) -> String {
    let svcs: Api<Service> = Api::namespaced(c.clone(), NS);
    eventually("load balancer address", WAIT, || async {
        svcs.get(name)
            .await
            .ok()?
            .status?
            .load_balancer?
            .ingress?
            .first()?
            .ip
            .clone()
    })
    .await
}

#[tokio::test]
async fn networkz_lists_gateways_of_this_cluster_and_synced_remotes() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = client(&sim, "c1").await;
    let c2 = client(&sim, "c2").await;
    let pod = install_istiod(&c1, "c1", None).await;
    let (code, body) = forward_get(&c1, &pod, 15014, "/debug/networkz").await;
    assert_eq!((code, body.as_str()), (200, "null"));

    let svcs1: Api<Service> = Api::namespaced(c1.clone(), NS);
    create(&svcs1, gateway_service("istio-eastwestgateway", "net1")).await;
    let ip1 = lb_ip(&c1, "istio-eastwestgateway").await;
    let nss2: Api<Namespace> = Api::all(c2.clone());
    create(&nss2, json!({"metadata": {"name": NS}})).await;
    let svcs2: Api<Service> = Api::namespaced(c2.clone(), NS);
    create(&svcs2, gateway_service("istio-eastwestgateway", "net2")).await;
    let ip2 = lb_ip(&c2, "istio-eastwestgateway").await;

    let (_, body) = forward_get(&c1, &pod, 15014, "/debug/networkz").await;
    let gws: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        gws,
        vec![
            json!({"Network": "net1", "Cluster": "c1", "Addr": ip1, "Port": 15443,
        "HBONEPort": 0, "ServiceAccount": {"Namespace": "", "Name": ""}})
        ]
    );

    // Once c2 is a synced remote, its gateway shows too.
    let remote = sim.cluster("c2");
    put_remote_secret(
        &c1,
        "istio-remote-secret-c2",
        "c2",
        &kubeconfig(&remote.url, &remote.ca_pem, &remote.admin_token),
    )
    .await;
    let (_, body) = forward_get(&c1, &pod, 15014, "/debug/networkz").await;
    let gws: Vec<Value> = serde_json::from_str(&body).unwrap();
    let seen: Vec<(&str, &str)> = gws
        .iter()
        .map(|g| (g["Cluster"].as_str().unwrap(), g["Addr"].as_str().unwrap()))
        .collect();
    assert!(
        seen.contains(&("c1", ip1.as_str())) && seen.contains(&("c2", ip2.as_str())),
        "{gws:?}"
    );

    // The HTTP port answers /ready; unknown paths are 404.
    assert_eq!(forward_get(&c1, &pod, 8080, "/ready").await.0, 200);
    assert_eq!(forward_get(&c1, &pod, 15014, "/nothing").await.0, 404);
}

#[tokio::test]
async fn pod_proxy_is_refused_by_istiod_and_portforward_is_guarded() {
    let sim = sim(&["c1"]).await;
    let c1 = client(&sim, "c1").await;
    let pod = install_istiod(&c1, "c1", None).await;

    // Through the API server's pod proxy istiod sees a non-local caller: 401.
    for path in [
        format!("/api/v1/namespaces/{NS}/pods/{pod}:15014/proxy/debug/clusterz"),
        format!("/api/v1/namespaces/{NS}/pods/{pod}/proxy/debug/networkz"),
    ] {
        let req = http::Request::get(path.as_str()).body(Vec::new()).unwrap();
        let err = c1.request_text(req).await.unwrap_err();
        assert_eq!(status(err).code, 401, "{path}");
    }

    // RBAC: the websocket GET needs get, and (Kubernetes 1.35+) create on pods/portforward.
    let sas: Api<ServiceAccount> = Api::namespaced(c1.clone(), NS);
    create(&sas, json!({"metadata": {"name": "debugger"}})).await;
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = sas
        .create_token_request("debugger", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let roles: Api<Role> = Api::namespaced(c1.clone(), NS);
    create(
        &roles,
        json!({"metadata": {"name": "pf-get"}, "rules": [
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get"]}]}),
    )
    .await;
    let rbs: Api<RoleBinding> = Api::namespaced(c1.clone(), NS);
    create(
        &rbs,
        json!({"metadata": {"name": "pf-get"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pf-get"},
        "subjects": [{"kind": "ServiceAccount", "name": "debugger", "namespace": NS}]}),
    )
    .await;
    let as_sa = client_with_token(&sim, "c1", &token).await;
    let sa_pods: Api<Pod> = Api::namespaced(as_sa.clone(), NS);
    let err = sa_pods
        .portforward(&pod, &[15014])
        .await
        .err()
        .expect("refused");
    assert!(format!("{err:?}").contains("403"), "{err:?}");
    let req = http::Request::get(format!(
        "/api/v1/namespaces/{NS}/pods/{pod}/portforward?ports=15014"
    ))
    .body(Vec::new())
    .unwrap();
    let st = status(as_sa.request_text(req).await.unwrap_err());
    assert_eq!(st.code, 403);
    assert!(
        st.message
            .contains("cannot create resource \"pods/portforward\"")
            && st
                .message
                .contains("system:serviceaccount:istio-system:debugger"),
        "{}",
        st.message
    );
    roles
        .patch(
            "pf-get",
            &PatchParams::default(),
            &Patch::Merge(json!({"rules": [
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        forward_get(&as_sa, &pod, 15014, "/debug/clusterz").await.0,
        200
    );

    // A missing pod is 404; a port nothing listens on gets the kubelet's error message.
    let pods: Api<Pod> = Api::namespaced(c1.clone(), NS);
    let err = pods
        .portforward("no-such-pod", &[15014])
        .await
        .err()
        .expect("no pod");
    assert!(format!("{err:?}").contains("404"), "{err:?}");
    let mut pf = pods.portforward(&pod, &[15010]).await.unwrap();
    let msg = tokio::time::timeout(WAIT, pf.take_error(15010).unwrap())
        .await
        .unwrap()
        .expect("error message");
    assert!(
        msg.contains("error forwarding port 15010") && msg.contains("connection refused"),
        "{msg}"
    );
}

#[tokio::test]
async fn the_installer_made_istiod_answers_with_its_cluster_name() {
    let sim = sim(&["c1"]).await;
    let c1 = client(&sim, "c1").await;
    let nss: Api<Namespace> = Api::all(c1.clone());
    create(&nss, json!({"metadata": {"name": NS}})).await;
    let iop = "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  profile: minimal\n  values:\n    global:\n      meshID: mesh1\n      multiCluster:\n        clusterName: east-1\n      network: net1\n";
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c1.clone(), NS);
    create(
        &cms,
        json!({"metadata": {"name": "iop"}, "data": {"iop.yaml": iop}}),
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(c1.clone(), NS);
    create(&sas, json!({"metadata": {"name": "istio-installer"}})).await;
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(c1.clone(), NS);
    create(
        &jobs,
        json!({"metadata": {"name": "install"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "serviceAccountName": "istio-installer", "restartPolicy": "Never",
            "containers": [{"name": "istioctl", "image": "docker.io/istio/istioctl:1.30.3",
                "args": ["install", "-f", "/iop/iop.yaml", "-y"],
                "volumeMounts": [{"name": "iop", "mountPath": "/iop", "readOnly": true}]}],
            "volumes": [{"name": "iop", "configMap": {"name": "iop"}}]}}}}),
    )
    .await;
    let pod = ready_pod(&c1, "app=istiod").await;
    let list = clusterz(&c1, &pod).await;
    assert_eq!(
        list,
        vec![json!({"id": "east-1", "secretName": "", "syncStatus": "synced"})]
    );
}

/// istiod waits for every informer on the remote client, the credentials controller's secrets
/// among them: a reader that may not list secrets never syncs.
#[tokio::test]
async fn a_reader_without_secrets_access_never_syncs() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = client(&sim, "c1").await;
    let c2 = client(&sim, "c2").await;
    let pod = install_istiod(&c1, "c1", Some("1s")).await;
    let remote = sim.cluster("c2");
    let token = reader_token_without(&c2, "secrets").await;
    put_remote_secret(
        &c1,
        "istio-remote-secret-c2",
        "c2",
        &kubeconfig(&remote.url, &remote.ca_pem, &token),
    )
    .await;
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("syncing"));
    eventually("the remote times out", WAIT, || async {
        (status_of(&clusterz(&c1, &pod).await, "c2") == Some("timeout")).then_some(())
    })
    .await;
}

/// A deleted and recreated secret is a new remote for istiod: the earlier sync does not carry
/// over, so a token revoked in between shows.
#[tokio::test]
async fn a_recreated_secret_syncs_again_from_scratch() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = client(&sim, "c1").await;
    let c2 = client(&sim, "c2").await;
    let pod = install_istiod(&c1, "c1", Some("30s")).await;
    let remote = sim.cluster("c2");
    let kc = kubeconfig(&remote.url, &remote.ca_pem, &reader_token(&c2).await);
    put_remote_secret(&c1, "istio-remote-secret-c2", "c2", &kc).await;
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("synced"));

    let sas: Api<ServiceAccount> = Api::namespaced(c2.clone(), "default");
    sas.delete("istio-reader", &DeleteParams::default())
        .await
        .unwrap();
    // Still latched while the secret stays.
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("synced"));
    let secrets: Api<Secret> = Api::namespaced(c1.clone(), NS);
    secrets
        .delete("istio-remote-secret-c2", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), None);
    // The same content again: the revoked token cannot sync.
    put_remote_secret(&c1, "istio-remote-secret-c2", "c2", &kc).await;
    assert_eq!(status_of(&clusterz(&c1, &pod).await, "c2"), Some("syncing"));
}

/// A self-signed CA certificate (PEM), as a stand-in root.
fn a_root(name: &str) -> String {
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem()
}

async fn put_cacerts(c: &kube::Client, roots: &str) {
    let secrets: Api<Secret> = Api::namespaced(c.clone(), NS);
    let s = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cacerts", "namespace": NS},
        "stringData": {"ca-cert.pem": roots, "ca-key.pem": "key", "cert-chain.pem": roots, "root-cert.pem": roots}});
    secrets
        .patch(
            "cacerts",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&s),
        )
        .await
        .unwrap();
}

/// The bundle istiod publishes in `istio-ca-root-cert`, once it holds `want` (as a set).
async fn published(c: &kube::Client, want: &[&str]) -> String {
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.clone(), NS);
    let want: std::collections::BTreeSet<String> = want
        .iter()
        .map(|p| p.split_whitespace().collect())
        .collect();
    eventually("istio-ca-root-cert holds the bundle", WAIT, || {
        let cms = cms.clone();
        let want = want.clone();
        async move {
            let cm = cms.get_opt("istio-ca-root-cert").await.ok()??;
            let pem = cm.data?.get("root-cert.pem")?.clone();
            let got: std::collections::BTreeSet<String> = pem
                .split("-----END CERTIFICATE-----")
                .filter_map(|b| b.split("-----BEGIN CERTIFICATE-----").nth(1))
                .map(|b| {
                    format!("-----BEGIN CERTIFICATE-----{b}-----END CERTIFICATE-----")
                        .split_whitespace()
                        .collect()
                })
                .collect();
            (got == want).then_some(pem)
        }
    })
    .await
}

/// istiod's plug-in CA: it follows a `cacerts` whose roots grow or shrink only with
/// ISTIO_MULTIROOT_MESH, never a swap, and an istiod started without `cacerts` ignores it.
#[tokio::test]
async fn istiod_publishes_the_roots_it_accepts_from_cacerts() {
    let sim = sim(&["c1", "c2"]).await;
    let (a, b) = (a_root("A"), a_root("B"));

    // Multi-root on: A → A+B → B, each published; then a swap to C is refused.
    let c1 = client(&sim, "c1").await;
    let nss: Api<Namespace> = Api::all(c1.clone());
    create(&nss, json!({"metadata": {"name": NS}})).await;
    put_cacerts(&c1, &a).await;
    let mut dep = istiod("c1", None);
    dep["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ISTIO_MULTIROOT_MESH", "value": "true"}));
    let deps: Api<Deployment> = Api::namespaced(c1.clone(), NS);
    create(&deps, dep).await;
    ready_pod(&c1, "app=istiod").await;
    published(&c1, &[&a]).await;
    put_cacerts(&c1, &format!("{a}{b}")).await;
    published(&c1, &[&a, &b]).await;
    put_cacerts(&c1, &b).await;
    published(&c1, &[&b]).await;
    let c = a_root("C");
    put_cacerts(&c1, &c).await;
    // A later accepted change shows the swap was skipped, not delayed.
    put_cacerts(&c1, &format!("{b}{a}")).await;
    published(&c1, &[&a, &b]).await;

    // Multi-root off (Istio's default): growing the bundle is refused too.
    let c2 = client(&sim, "c2").await;
    let nss: Api<Namespace> = Api::all(c2.clone());
    create(&nss, json!({"metadata": {"name": NS}})).await;
    put_cacerts(&c2, &a).await;
    let deps: Api<Deployment> = Api::namespaced(c2.clone(), NS);
    create(&deps, istiod("c2", None)).await;
    ready_pod(&c2, "app=istiod").await;
    published(&c2, &[&a]).await;
    put_cacerts(&c2, &format!("{a}{b}")).await;
    put_cacerts(&c2, &a).await;
    published(&c2, &[&a]).await;
}

/// An istiod started without `cacerts` serves its own root and does not watch `cacerts`.
#[tokio::test]
async fn istiod_started_without_cacerts_ignores_it_until_restarted() {
    let sim = sim(&["c1"]).await;
    let c1 = client(&sim, "c1").await;
    install_istiod(&c1, "c1", None).await;
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c1.clone(), NS);
    let own = eventually("istio-ca-root-cert", WAIT, || {
        let cms = cms.clone();
        async move {
            cms.get_opt("istio-ca-root-cert")
                .await
                .ok()??
                .data?
                .get("root-cert.pem")
                .cloned()
        }
    })
    .await;
    let a = a_root("A");
    put_cacerts(&c1, &a).await;
    let still = cms.get("istio-ca-root-cert").await.unwrap();
    assert_eq!(
        still.data.unwrap()["root-cert.pem"],
        own,
        "self-signed istiod took cacerts"
    );
    // A restart (new pod) starts in plug-in mode.
    let pods: Api<Pod> = Api::namespaced(c1.clone(), NS);
    pods.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=istiod"),
    )
    .await
    .unwrap();
    published(&c1, &[&a]).await;
}
