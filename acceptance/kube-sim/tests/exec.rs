//! `pods/exec` through kube-rs (`Api::<Pod>::exec`, websocket v5 and, with the translator
//! switched off, v4) and Istio's sidecar injection at pod admission.

mod common;

use std::future::Future;
use std::time::{Duration, Instant};

use common::{client, client_with_token, sim, status};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, ListParams, PostParams};
use kube::core::DynamicObject;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap()
}

async fn namespace(c: &kube::Client, name: &str, labels: Value) {
    let nss: Api<Namespace> = Api::all(c.clone());
    create(&nss, json!({"metadata": {"name": name, "labels": labels}})).await;
}

fn deployment(name: &str, labels: Value, image: &str) -> Value {
    json!({"metadata": {"name": name},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels.clone()},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": name, "image": image, "command": ["/bin/sleep", "infinity"]}]}}}})
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Deploy one replica and return its Ready pod.
async fn deploy(c: &kube::Client, ns: &str, d: Value) -> Pod {
    let deps: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let name = d["metadata"]["name"].as_str().unwrap().to_string();
    create(&deps, d).await;
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    eventually("a Ready pod", || {
        let (pods, name) = (pods.clone(), name.clone());
        async move {
            let l = pods.list(&ListParams::default()).await.ok()?;
            l.items
                .into_iter()
                .find(|p| p.name_any().starts_with(&name) && is_ready(p))
        }
    })
    .await
}

/// Run a command: (stdout, stderr, status).
async fn exec(
    c: &kube::Client,
    ns: &str,
    pod: &str,
    cmd: &[&str],
    stdin: Option<&[u8]>,
) -> (String, String, Status) {
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let ap = AttachParams::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true);
    let mut p = pods.exec(pod, cmd.to_vec(), &ap).await.expect("exec");
    if let Some(input) = stdin {
        let mut w = p.stdin().unwrap();
        w.write_all(input).await.unwrap();
        // The end of stdin (v5 sends CLOSE for channel 0).
        w.shutdown().await.unwrap();
    }
    let mut out = p.stdout().unwrap();
    let mut err = p.stderr().unwrap();
    let status = p.take_status().unwrap();
    let (mut o, mut e) = (String::new(), String::new());
    let (_, _, st) = tokio::join!(
        out.read_to_string(&mut o),
        err.read_to_string(&mut e),
        status
    );
    (o, e, st.expect("a status on the error channel"))
}

fn exit_code(s: &Status) -> Option<String> {
    s.details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))?
        .message
        .clone()
}

#[tokio::test]
async fn exec_runs_simulated_programs_over_v5_and_v4() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    namespace(&c, "tools", json!({})).await;
    let pod = deploy(
        &c,
        "tools",
        deployment(
            "curl",
            json!({"app": "curl"}),
            "docker.io/curlimages/curl:8.16.0",
        ),
    )
    .await;
    let pod = pod.name_any();

    let (o, e, s) = exec(&c, "tools", &pod, &["echo", "hello", "world"], None).await;
    assert_eq!((o.as_str(), e.as_str()), ("hello world\n", ""));
    assert_eq!(s.status.as_deref(), Some("Success"));

    let (_, _, s) = exec(&c, "tools", &pod, &["/bin/true"], None).await;
    assert_eq!(s.status.as_deref(), Some("Success"));

    // A non-zero exit through the API server's v5 translator.
    let (_, _, s) = exec(&c, "tools", &pod, &["sh", "-c", "exit 3"], None).await;
    assert_eq!(s.status.as_deref(), Some("Failure"));
    assert_eq!(s.reason.as_deref(), Some("NonZeroExitCode"));
    assert_eq!(exit_code(&s).as_deref(), Some("3"));
    assert_eq!(
        s.message.as_deref(),
        Some("command terminated with non-zero exit code: command terminated with exit code 3")
    );
    let (_, _, s) = exec(&c, "tools", &pod, &["false"], None).await;
    assert_eq!(exit_code(&s).as_deref(), Some("1"));

    // A shell reports a missing command; exec without a shell gets the runtime's error.
    let (_, e, s) = exec(&c, "tools", &pod, &["sh", "-c", "wget -q x"], None).await;
    assert_eq!(e, "sh: wget: not found\n");
    assert_eq!(exit_code(&s).as_deref(), Some("127"));
    let (_, _, s) = exec(&c, "tools", &pod, &["wget"], None).await;
    assert_eq!(
        (s.reason.as_deref(), s.code),
        (Some("InternalError"), Some(500))
    );
    assert!(s
        .message
        .unwrap()
        .ends_with("exec: \"wget\": executable file not found in $PATH: unknown"));

    // stdin ends with v5's CLOSE signal.
    let (o, _, s) = exec(&c, "tools", &pod, &["cat"], Some(b"piped\n")).await;
    assert_eq!(o, "piped\n");
    assert_eq!(s.status.as_deref(), Some("Success"));

    // A bounded sleep really sleeps; an unbounded one is refused.
    let t = Instant::now();
    let (_, _, s) = exec(&c, "tools", &pod, &["sleep", "0.3"], None).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(s.status.as_deref(), Some("Success"));
    let (_, e, s) = exec(&c, "tools", &pod, &["sleep", "infinity"], None).await;
    assert_eq!(exit_code(&s).as_deref(), Some("1"));
    assert!(e.contains("invalid number"), "{e}");

    // Without the translator the kubelet answers with v4: containerd's exit message.
    sim.cluster("c1")
        .control()
        .settings(&json!({"translate_streaming_websocket_requests": false}))
        .await
        .unwrap();
    let (o, _, s) = exec(&c, "tools", &pod, &["echo", "v4"], None).await;
    assert_eq!(o, "v4\n");
    assert_eq!(s.status.as_deref(), Some("Success"));
    let (_, _, s) = exec(&c, "tools", &pod, &["sh", "-c", "exit 4"], None).await;
    assert_eq!(exit_code(&s).as_deref(), Some("4"));
    assert_eq!(
        s.message.as_deref(),
        Some("command terminated with non-zero exit code: error executing command [sh -c exit 4], exit code 4")
    );
}

#[tokio::test]
async fn exec_is_refused_like_the_api_server_and_kubelet_refuse_it() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    namespace(&c, "tools", json!({})).await;
    let pod = deploy(
        &c,
        "tools",
        deployment("curl", json!({"app": "curl"}), "curlimages/curl"),
    )
    .await
    .name_any();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "tools");
    let ap = AttachParams::default();

    let err = pods.exec("missing", vec!["true"], &ap).await.err().unwrap();
    assert!(format!("{err:?}").contains("404"), "{err:?}");
    let err = pods
        .exec(
            &pod,
            vec!["true"],
            &AttachParams::default().container("nope"),
        )
        .await
        .err()
        .unwrap();
    assert!(format!("{err:?}").contains("400"), "{err:?}");
    let req = http::Request::get(format!(
        "/api/v1/namespaces/tools/pods/{pod}/exec?command=true&container=nope&stdout=true"
    ))
    .body(Vec::new())
    .unwrap();
    let st = status(c.request_text(req).await.unwrap_err());
    assert_eq!(
        (st.code, st.message.as_str()),
        (
            400,
            format!("container nope is not valid for pod {pod}").as_str()
        )
    );

    // A bare pod nobody scheduled.
    create(&pods, json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).await;
    let req =
        http::Request::get("/api/v1/namespaces/tools/pods/bare/exec?command=true&stdout=true")
            .body(Vec::new())
            .unwrap();
    let st = status(c.request_text(req).await.unwrap_err());
    assert_eq!(
        (st.code, st.message.as_str()),
        (400, "pod bare does not have a host assigned")
    );

    // A container that is not running: the kubelet cannot find it (through the translator the
    // refusal arrives as the status).
    let failing = deployment("crashing", json!({"app": "crashing"}), "i");
    let mut failing = failing;
    failing["metadata"]["annotations"] = json!({"kube-sim.mesh.dev/fail": "boom"});
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "tools");
    create(&deps, failing).await;
    let crashing = eventually("the crashing pod", || {
        let pods = pods.clone();
        async move {
            let l = pods
                .list(&ListParams::default().labels("app=crashing"))
                .await
                .ok()?;
            l.items.into_iter().next().map(|p| p.name_any())
        }
    })
    .await;
    let (_, _, s) = exec(&c, "tools", &crashing, &["true"], None).await;
    assert_eq!(s.reason.as_deref(), Some("InternalError"));
    assert_eq!(
        s.message.as_deref(),
        Some("Internal error occurred: unable to upgrade connection: container not found (\"crashing\")")
    );

    // RBAC: get and create on pods/exec.
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "tools");
    create(&sas, json!({"metadata": {"name": "runner"}})).await;
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}})).unwrap();
    let token = sas
        .create_token_request("runner", &PostParams::default(), &tr)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let roles: Api<Role> = Api::namespaced(c.clone(), "tools");
    create(
        &roles,
        json!({"metadata": {"name": "exec-get"}, "rules": [
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get"]}]}),
    )
    .await;
    let rbs: Api<RoleBinding> = Api::namespaced(c.clone(), "tools");
    create(
        &rbs,
        json!({"metadata": {"name": "runner"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec-get"},
        "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": "tools"}]}),
    )
    .await;
    let limited = client_with_token(&sim, "c1", &token).await;
    let lp: Api<Pod> = Api::namespaced(limited.clone(), "tools");
    let err = lp.exec(&pod, vec!["true"], &ap).await.err().unwrap();
    assert!(format!("{err:?}").contains("403"), "{err:?}");
    roles
        .replace("exec-get", &PostParams::default(), &serde_json::from_value(json!({
            "metadata": {"name": "exec-get"},
            "rules": [{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["get", "create"]}]})).unwrap())
        .await
        .unwrap();
    let (o, _, _) = exec(&limited, "tools", &pod, &["echo", "ok"], None).await;
    assert_eq!(o, "ok\n");

    // Discovery lists the subresource.
    let req = http::Request::get("/api/v1").body(Vec::new()).unwrap();
    let v: Value = serde_json::from_str(&c.request_text(req).await.unwrap()).unwrap();
    assert!(v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "pods/exec"));
}

/// The injector objects of an unrevisioned istioctl install, written as the chart writes them.
async fn injector_objects(c: &kube::Client, revision: &str) {
    let nss: Api<Namespace> = Api::all(c.clone());
    if nss.get_opt("istio-system").await.unwrap().is_none() {
        namespace(
            c,
            "istio-system",
            json!({"topology.istio.io/network": "n1"}),
        )
        .await;
    }
    let suffix = if revision.is_empty() {
        String::new()
    } else {
        format!("-{revision}")
    };
    let rev = if revision.is_empty() {
        "default"
    } else {
        revision
    };
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "istio-system");
    create(&cms, json!({"metadata": {"name": format!("istio-sidecar-injector{suffix}")},
        "data": {"values": json!({"global": {"hub": "docker.io/istio", "tag": "1.30.3", "network": "n1",
            "meshID": "mesh1", "multiCluster": {"clusterName": "c1"}}, "revision": revision}).to_string(),
            "config": "policy: enabled\n"}})).await;
    let not_disabled =
        json!({"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]});
    let wh = |name: &str, ns_sel: Value, obj_sel: Value| {
        json!({"name": name,
        "clientConfig": {"service": {"name": format!("istiod{suffix}"), "namespace": "istio-system", "path": "/inject", "port": 443}},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail",
        "namespaceSelector": ns_sel, "objectSelector": obj_sel})
    };
    let mut webhooks = vec![wh(
        "rev.namespace.sidecar-injector.istio.io",
        json!({"matchExpressions": [{"key": "istio.io/rev", "operator": "In", "values": [rev]},
            {"key": "istio-injection", "operator": "DoesNotExist"}]}),
        json!({"matchExpressions": [not_disabled.clone()]}),
    )];
    if revision.is_empty() {
        webhooks.push(wh("namespace.sidecar-injector.istio.io",
            json!({"matchExpressions": [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}]}),
            json!({"matchExpressions": [not_disabled]})));
    }
    let ar = kube::core::ApiResource {
        group: "admissionregistration.k8s.io".into(),
        version: "v1".into(),
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "MutatingWebhookConfiguration".into(),
        plural: "mutatingwebhookconfigurations".into(),
    };
    let mwcs: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration", "metadata": {"name": format!("istio-sidecar-injector{suffix}")},
        "webhooks": webhooks})).unwrap();
    mwcs.create(&PostParams::default(), &obj).await.unwrap();
}

fn container_names(p: &Pod, init: bool) -> Vec<String> {
    let spec = p.spec.as_ref().unwrap();
    let cs = if init {
        spec.init_containers.clone().unwrap_or_default()
    } else {
        spec.containers.clone()
    };
    cs.into_iter().map(|c| c.name).collect()
}

#[tokio::test]
async fn pods_are_injected_when_a_webhook_selects_them() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    namespace(&c, "sample", json!({"istio-injection": "enabled"})).await;
    namespace(&c, "canary-ns", json!({"istio.io/rev": "canary"})).await;
    namespace(&c, "plain", json!({})).await;

    // Before any webhook exists: not injected.
    let early = deploy(
        &c,
        "sample",
        deployment("early", json!({"app": "early"}), "curlimages/curl"),
    )
    .await;
    assert_eq!(container_names(&early, false), vec!["early"]);
    assert!(early.annotations().get("sidecar.istio.io/status").is_none());

    injector_objects(&c, "").await;
    let hw = deploy(
        &c,
        "sample",
        deployment(
            "helloworld-v1",
            json!({"app": "helloworld", "version": "v1"}),
            "docker.io/istio/examples-helloworld-v1:1.0",
        ),
    )
    .await;
    // Kubernetes 1.33 nodes: the native-sidecar form.
    assert_eq!(
        container_names(&hw, true),
        vec!["istio-init", "istio-proxy"]
    );
    assert_eq!(container_names(&hw, false), vec!["helloworld-v1"]);
    let proxy = &hw.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[1];
    assert_eq!(
        proxy.image.as_deref(),
        Some("docker.io/istio/proxyv2:1.30.3")
    );
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    let status: Value = serde_json::from_str(&hw.annotations()["sidecar.istio.io/status"]).unwrap();
    assert_eq!(status["revision"], "default");
    assert_eq!(hw.labels()["security.istio.io/tlsMode"], "istio");
    assert_eq!(hw.labels()["service.istio.io/canonical-revision"], "v1");
    // Ready covers the sidecar: its status is running and ready.
    let st = hw.status.as_ref().unwrap();
    let init = st.init_container_statuses.as_ref().unwrap();
    assert!(init[0].state.as_ref().unwrap().terminated.is_some());
    assert!(init[1].ready && init[1].state.as_ref().unwrap().running.is_some());
    assert!(is_ready(&hw));

    // Opting out, another revision's namespace, an unlabelled namespace: not injected.
    let mut out = deployment(
        "optout",
        json!({"app": "optout", "sidecar.istio.io/inject": "false"}),
        "i",
    );
    out["spec"]["selector"] = json!({"matchLabels": {"app": "optout"}});
    let optout = deploy(&c, "sample", out).await;
    assert!(container_names(&optout, true).is_empty());
    let other = deploy(&c, "canary-ns", deployment("x", json!({"app": "x"}), "i")).await;
    assert!(container_names(&other, true).is_empty());
    let plain = deploy(&c, "plain", deployment("y", json!({"app": "y"}), "i")).await;
    assert!(container_names(&plain, true).is_empty());
    // The pod created before the webhook keeps what it had.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "sample");
    assert_eq!(
        container_names(&pods.get(&early.name_any()).await.unwrap(), false),
        vec!["early"]
    );

    // The canary revision's webhook injects in its namespace; a pod created through the API
    // is injected at admission too.
    injector_objects(&c, "canary").await;
    let api_pods: Api<Pod> = Api::namespaced(c.clone(), "canary-ns");
    let p = create(
        &api_pods,
        json!({"metadata": {"name": "direct"},
        "spec": {"containers": [{"name": "app", "image": "i"}]}}),
    )
    .await;
    assert_eq!(container_names(&p, true), vec!["istio-init", "istio-proxy"]);
    let status: Value = serde_json::from_str(&p.annotations()["sidecar.istio.io/status"]).unwrap();
    assert_eq!(status["revision"], "canary");
}
