//! Simulated controllers: Deployments, Jobs (plain, failing, the istioctl installer), garbage
//! collection, LoadBalancer Services, runtime settings.

mod common;

use std::time::Instant;

use common::{client, sim, within};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions, Condition};
use kube::ResourceExt;
use serde_json::json;

fn deployment(name: &str, annotations: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))
    .unwrap()
}

fn lb_service(name: &str) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"name": "tls", "port": 15443}]}
    }))
    .unwrap()
}

fn job(name: &str, template_annotations: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"annotations": template_annotations},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox", "args": ["true"]}]}}}
    }))
    .unwrap()
}

fn has_ingress(svc: Option<&Service>) -> bool {
    svc.and_then(|s| s.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .is_some_and(|i| !i.is_empty())
}

fn job_condition(ty: &'static str) -> impl Condition<Job> {
    move |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == ty && c.status == "True"))
    }
}

async fn job_pod(pods: &Api<Pod>, job: &str) -> Pod {
    let list = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1, "one pod for job {job}");
    list.items.into_iter().next().unwrap()
}

#[tokio::test]
async fn deployments_become_available_and_controllers_switch() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    deps.create(&PostParams::default(), &deployment("web", json!({})))
        .await
        .unwrap();
    let web = within(
        "web available",
        await_condition(deps.clone(), "web", conditions::is_deployment_completed()),
    )
    .await
    .unwrap()
    .unwrap();
    let st = web.status.unwrap();
    assert_eq!(st.ready_replicas, Some(2));
    assert!(st
        .conditions
        .unwrap()
        .iter()
        .any(|c| c.type_ == "Available" && c.status == "True"));

    // The failure annotation keeps a Deployment unavailable.
    deps.create(
        &PostParams::default(),
        &deployment(
            "broken",
            json!({"kube-sim.mesh.dev/fail": "image pull backoff"}),
        ),
    )
    .await
    .unwrap();
    let broken = within(
        "broken observed",
        await_condition(deps.clone(), "broken", |d: Option<&Deployment>| {
            d.and_then(|d| d.status.as_ref()).is_some()
        }),
    )
    .await
    .unwrap()
    .unwrap();
    let cond = broken.status.unwrap().conditions.unwrap();
    let available = cond.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "False");
    assert!(available
        .message
        .as_deref()
        .unwrap()
        .contains("image pull backoff"));

    // Switch the deployment controller off, then on again.
    let control = sim.cluster("c1").control();
    control
        .settings(&json!({"deployments": {"enabled": false}}))
        .await
        .unwrap();
    deps.create(&PostParams::default(), &deployment("paused", json!({})))
        .await
        .unwrap();
    // Sync point: the controller loop handles events in order, so once the LB Service created
    // after the Deployment has its address, the Deployment's event was seen (and skipped).
    let svcs: Api<Service> = Api::namespaced(c.clone(), "default");
    svcs.create(&PostParams::default(), &lb_service("sync"))
        .await
        .unwrap();
    within("sync", await_condition(svcs.clone(), "sync", has_ingress))
        .await
        .unwrap();
    assert!(deps.get("paused").await.unwrap().status.is_none());
    control
        .settings(&json!({"deployments": {"enabled": true, "delay_ms": 50}}))
        .await
        .unwrap();
    within(
        "paused becomes available after re-enabling",
        await_condition(
            deps.clone(),
            "paused",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn load_balancers_get_addresses_with_delay_and_hostnames() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let svcs: Api<Service> = Api::namespaced(c, "default");
    let control = sim.cluster("c1").control();
    control
        .settings(&json!({"loadbalancer": {"delay_ms": 300}}))
        .await
        .unwrap();
    let t0 = Instant::now();
    let created = svcs
        .create(&PostParams::default(), &lb_service("eastwest"))
        .await
        .unwrap();
    assert!(!has_ingress(Some(&created)));
    assert!(created.spec.as_ref().unwrap().cluster_ip.is_some());
    let svc = within(
        "LB ip",
        await_condition(svcs.clone(), "eastwest", has_ingress),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(t0.elapsed().as_millis() >= 300, "delay honoured");
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    let ip = ingress[0].ip.clone().expect("an IP");
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok());

    control
        .settings(&json!({"loadbalancer": {"delay_ms": 0, "mode": "hostname"}}))
        .await
        .unwrap();
    svcs.create(&PostParams::default(), &lb_service("elb"))
        .await
        .unwrap();
    let svc = within(
        "LB hostname",
        await_condition(svcs.clone(), "elb", has_ingress),
    )
    .await
    .unwrap()
    .unwrap();
    let host = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0]
        .hostname
        .clone()
        .unwrap();
    assert_eq!(host, "elb-default.c1.lb.kube-sim.invalid");

    // Deleting a LoadBalancer Service waits for the load balancer's release (finalizer).
    let held = svcs.get("eastwest").await.unwrap();
    assert!(held
        .finalizers()
        .iter()
        .any(|f| f == "service.kubernetes.io/load-balancer-cleanup"));
    control
        .settings(&json!({"loadbalancer": {"delay_ms": 200}}))
        .await
        .unwrap();
    svcs.delete("eastwest", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = svcs.get("eastwest").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    within(
        "LB released",
        await_condition(
            svcs.clone(),
            "eastwest",
            conditions::is_deleted(&held.uid().unwrap()),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn jobs_complete_fail_and_collect_pods() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(c.clone(), "default");

    jobs.create(&PostParams::default(), &job("ok", json!({})))
        .await
        .unwrap();
    within(
        "job complete",
        await_condition(jobs.clone(), "ok", job_condition("Complete")),
    )
    .await
    .unwrap();
    let pod = job_pod(&pods, "ok").await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    let owner = &pod.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "ok"));
    // The Job's selector (set at admission) selects its pod.
    let ok = jobs.get("ok").await.unwrap();
    let uid = ok.metadata.uid.clone().unwrap();
    let selector = ok.spec.unwrap().selector.unwrap().match_labels.unwrap();
    assert_eq!(selector["batch.kubernetes.io/controller-uid"], uid);
    assert_eq!(pod.labels()["batch.kubernetes.io/controller-uid"], uid);

    // Background deletion collects the pod.
    jobs.delete(
        "ok",
        &DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    within(
        "pod collected",
        await_condition(
            pods.clone(),
            &pod.name_any(),
            conditions::is_deleted(&pod.uid().unwrap()),
        ),
    )
    .await
    .unwrap();

    // Failure annotation on the pod template: Failed condition, reason in the pod log.
    jobs.create(
        &PostParams::default(),
        &job(
            "bad",
            json!({"kube-sim.mesh.dev/fail": "could not reach the registry"}),
        ),
    )
    .await
    .unwrap();
    let failed = within(
        "job failed",
        await_condition(jobs.clone(), "bad", job_condition("Failed")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(failed.status.unwrap().failed, Some(1));
    let pod = job_pod(&pods, "bad").await;
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let log = pods
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .unwrap();
    assert!(log.contains("could not reach the registry"), "{log}");

    // batch/v1 default propagation orphans the pod.
    jobs.delete("bad", &DeleteParams::default()).await.unwrap();
    let orphan = pods.get(&pod.name_any()).await.unwrap();
    assert!(orphan.owner_references().is_empty());
}

const IOP: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: mesh-c1
  namespace: istio-system
spec:
  profile: minimal
  hub: docker.io/istio
  meshConfig:
    accessLogFile: /dev/stdout
  values:
    global:
      meshID: mesh1
      multiCluster:
        clusterName: c1
      network: network1
      externalIstiod: true
    pilot:
      env:
        PILOT_SKIP_VALIDATE_TRUST_DOMAIN: "true"
"#;

fn installer_job(name: &str, configmap: &str) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "istio-system"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "serviceAccountName": "istio-installer", "restartPolicy": "Never",
            "containers": [{"name": "istioctl", "image": "docker.io/istio/istioctl:1.30.3",
                "args": ["install", "-f", "/iop/iop.yaml", "-y"],
                "volumeMounts": [{"name": "iop", "mountPath": "/iop", "readOnly": true}]}],
            "volumes": [{"name": "iop", "configMap": {"name": configmap}}]}}}
    }))
    .unwrap()
}

#[tokio::test]
async fn installer_job_creates_what_istioctl_would() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "istio-system"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "istio-system");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "iop-c1"}, "data": {"iop.yaml": IOP}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "istio-system");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "istio-installer"}})).unwrap(),
    )
    .await
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(c.clone(), "istio-system");
    jobs.create(
        &PostParams::default(),
        &installer_job("install-c1", "iop-c1"),
    )
    .await
    .unwrap();
    within(
        "installer complete",
        await_condition(jobs.clone(), "install-c1", job_condition("Complete")),
    )
    .await
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.clone(), "istio-system");
    let pod = job_pod(&pods, "install-c1").await;
    let log = pods
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .unwrap();
    assert!(log.contains("Installation complete"), "{log}");

    // istiod: Deployment (becomes Available) and Service, with istioctl's owner labels.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "istio-system");
    let istiod = within(
        "istiod available",
        await_condition(
            deps.clone(),
            "istiod",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let labels = istiod.labels();
    for (k, v) in [
        ("operator.istio.io/managed", "Reconcile"),
        ("operator.istio.io/version", "1.30.3"),
        ("install.operator.istio.io/owning-resource", "mesh-c1"),
        (
            "install.operator.istio.io/owning-resource-namespace",
            "istio-system",
        ),
        ("istio.io/rev", "default"),
        ("operator.istio.io/component", "Pilot"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let container = &istiod.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("docker.io/istio/pilot:1.30.3")
    );
    let env: std::collections::BTreeMap<String, String> = container
        .env
        .clone()
        .unwrap()
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect();
    assert_eq!(env["CLUSTER_ID"], "c1");
    assert_eq!(env["EXTERNAL_ISTIOD"], "true");
    assert_eq!(env["PILOT_SKIP_VALIDATE_TRUST_DOMAIN"], "true");
    let svcs: Api<Service> = Api::namespaced(c.clone(), "istio-system");
    let svc = svcs.get("istiod").await.unwrap();
    let ports: Vec<i32> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![15010, 15012, 443, 15014]);

    // Mesh config and injector values carry meshID / clusterName / network.
    let mesh = cms.get("istio").await.unwrap().data.unwrap();
    assert!(mesh["mesh"].contains("meshId: mesh1"), "{}", mesh["mesh"]);
    assert!(mesh["mesh"].contains("accessLogFile: /dev/stdout"));
    let values = &cms
        .get("istio-sidecar-injector")
        .await
        .unwrap()
        .data
        .unwrap()["values"];
    let values: serde_json::Value = serde_json::from_str(values).unwrap();
    assert_eq!(values["global"]["network"], "network1");
    assert_eq!(values["global"]["multiCluster"]["clusterName"], "c1");

    // Reader service account and RBAC, CRDs, injector webhook.
    let reader = sas.get("istio-reader-service-account").await.unwrap();
    assert_eq!(
        reader
            .labels()
            .get("operator.istio.io/component")
            .map(String::as_str),
        Some("Base")
    );
    let crs: Api<ClusterRole> = Api::all(c.clone());
    let cr = crs
        .get("istio-reader-clusterrole-istio-system")
        .await
        .unwrap();
    assert!(cr.rules.unwrap().iter().any(|r| r
        .resources
        .as_ref()
        .is_some_and(|rs| rs.contains(&"secrets".to_string()))));
    let crbs: Api<ClusterRoleBinding> = Api::all(c.clone());
    let crb = crbs
        .get("istio-reader-clusterrole-istio-system")
        .await
        .unwrap();
    assert_eq!(
        crb.subjects.unwrap()[0].name,
        "istio-reader-service-account"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    within(
        "gateway CRD established",
        await_condition(
            crds.clone(),
            "gateways.networking.istio.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap();
    crds.get("virtualservices.networking.istio.io")
        .await
        .unwrap();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    mwcs.get("istio-sidecar-injector").await.unwrap();

    // The uninstall selector (facts §3.3) finds the Pilot objects but not Base.
    let selector = "install.operator.istio.io/owning-resource=mesh-c1,operator.istio.io/component in (Pilot,IngressGateways,EgressGateways,Cni,Ztunnel)";
    let pilot_deps = Api::<Deployment>::all(c.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    assert_eq!(pilot_deps.items.len(), 1);
    let pilot_sas = Api::<ServiceAccount>::all(c.clone())
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap();
    assert_eq!(
        pilot_sas
            .items
            .iter()
            .map(|s| s.name_any())
            .collect::<Vec<_>>(),
        vec!["istiod"]
    );

    // An installer whose ConfigMap is missing fails, and says why.
    jobs.create(
        &PostParams::default(),
        &installer_job("install-missing", "nope"),
    )
    .await
    .unwrap();
    within(
        "installer failed",
        await_condition(jobs.clone(), "install-missing", job_condition("Failed")),
    )
    .await
    .unwrap();
    let pod = job_pod(&pods, "install-missing").await;
    let log = pods
        .logs(&pod.name_any(), &LogParams::default())
        .await
        .unwrap();
    assert!(log.contains("configmap \"nope\" not found"), "{log}");
}

#[tokio::test]
async fn per_cluster_settings_from_options() {
    let mut hostname = kube_sim::Settings::default();
    hostname.loadbalancer.mode = kube_sim::LbMode::Hostname;
    let sim = kube_sim::Sim::start(kube_sim::Options {
        clusters: vec!["ip".into(), "elb".into()],
        cluster_settings: [("elb".to_string(), hostname)].into_iter().collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    for (cluster, want_hostname) in [("ip", false), ("elb", true)] {
        let svcs: Api<Service> = Api::namespaced(client(&sim, cluster).await, "default");
        svcs.create(&PostParams::default(), &lb_service("gw"))
            .await
            .unwrap();
        let svc = within(
            "LB address",
            await_condition(svcs.clone(), "gw", has_ingress),
        )
        .await
        .unwrap()
        .unwrap();
        let ingress = &svc.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0];
        assert_eq!(ingress.hostname.is_some(), want_hostname, "{cluster}");
        assert_eq!(ingress.ip.is_some(), !want_hostname, "{cluster}");
    }
    assert_eq!(
        sim.cluster("elb").settings().loadbalancer.mode,
        kube_sim::LbMode::Hostname
    );
}

const REMOTE_IOP: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: remote-c2
spec:
  profile: remote
  revision: canary
  values:
    global:
      meshID: mesh1
      multiCluster:
        clusterName: c2
      network: network2
      remotePilotAddress: 203.0.113.7
    istiodRemote:
      injectionPath: /inject/cluster/c2/net/network2
"#;

#[tokio::test]
async fn installer_remote_profile_with_revision() {
    let sim = sim(&["c2"]).await;
    let c = client(&sim, "c2").await;
    // The installer runs from another namespace; it creates istio-system with the network label.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "iop"}, "data": {"remote.yaml": REMOTE_IOP}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let mut job = installer_job("install-remote", "iop");
    job.metadata.namespace = Some("default".into());
    let mut value = serde_json::to_value(&job).unwrap();
    value["spec"]["template"]["spec"]["serviceAccountName"] = json!("default");
    value["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["istioctl"]);
    value["spec"]["template"]["spec"]["containers"][0]["args"] = json!([
        "install",
        "--filename=/config/iop.yaml",
        "--skip-confirmation"
    ]);
    value["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "iop", "mountPath": "/config"}]);
    value["spec"]["template"]["spec"]["volumes"] = json!([{"name": "iop", "configMap": {"name": "iop", "items": [{"key": "remote.yaml", "path": "iop.yaml"}]}}]);
    let job: Job = serde_json::from_value(value).unwrap();
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    jobs.create(&PostParams::default(), &job).await.unwrap();
    within(
        "remote installer complete",
        await_condition(jobs.clone(), "install-remote", job_condition("Complete")),
    )
    .await
    .unwrap();

    let ns = Api::<Namespace>::all(c.clone())
        .get("istio-system")
        .await
        .unwrap();
    assert_eq!(
        ns.labels()
            .get("topology.istio.io/network")
            .map(String::as_str),
        Some("network2")
    );
    // No istiod Deployment on a remote; a headless Service + EndpointSlice to the remote pilot.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "istio-system");
    assert!(deps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    let svc = Api::<Service>::namespaced(c.clone(), "istio-system")
        .get("istiod-canary")
        .await
        .unwrap();
    assert_eq!(svc.labels()["istio.io/rev"], "canary");
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("None"));
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(c.clone(), "istio-system");
    let slice = slices.get("istiod-canary-remote").await.unwrap();
    assert_eq!(
        slice.endpoints[0].addresses,
        vec!["203.0.113.7".to_string()]
    );
    let mwc = Api::<MutatingWebhookConfiguration>::all(c.clone())
        .get("istio-sidecar-injector-canary")
        .await
        .unwrap();
    let path = mwc.webhooks.unwrap()[0]
        .client_config
        .service
        .as_ref()
        .unwrap()
        .path
        .clone();
    assert_eq!(path.as_deref(), Some("/inject/cluster/c2/net/network2"));
    let cr = Api::<ClusterRole>::all(c.clone())
        .get("istio-reader-clusterrole-canary-istio-system")
        .await
        .unwrap();
    assert!(cr.rules.unwrap().iter().any(|r| r
        .resources
        .as_ref()
        .is_some_and(|rs| rs.contains(&"mutatingwebhookconfigurations".to_string()))));
}
