//! Namespace lifecycle as Kubernetes' NamespaceLifecycle admission answers it, and the names
//! the simulated istioctl installer gives objects, as Istio 1.30.3's charts do.

mod common;

use common::{client, sim, status, within};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

fn configmap(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

/// A namespace holding a ConfigMap with a finalizer, then deleted: it stays Terminating until
/// the finalizer is released.
async fn terminating_namespace(c: &kube::Client, ns: &str) -> Namespace {
    let nss: Api<Namespace> = Api::all(c.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
    let mut held = configmap("held");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    nss.delete(ns, &DeleteParams::default()).await.unwrap();
    nss.get(ns).await.unwrap()
}

#[tokio::test]
async fn create_in_a_terminating_namespace_is_the_lifecycle_403() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let ns = terminating_namespace(&c, "going").await;
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // POST: NewForbidden(resource, name, ...) plus the NamespaceTerminating cause.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "going");
    let s = status(
        cms.create(&PostParams::default(), &configmap("late"))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 403);
    assert_eq!(s.reason, "Forbidden");
    assert_eq!(s.status, Some(kube::core::response::StatusSummary::Failure));
    assert_eq!(
        s.message,
        r#"configmaps "late" is forbidden: unable to create new content in namespace going because it is being terminated"#
    );
    let d = s.details.expect("details");
    assert_eq!(
        (d.name.as_str(), d.group.as_str(), d.kind.as_str()),
        ("late", "", "configmaps")
    );
    assert_eq!(d.causes.len(), 1);
    assert_eq!(d.causes[0].reason, "NamespaceTerminating");
    assert_eq!(d.causes[0].message, "namespace going is being terminated");
    assert_eq!(d.causes[0].field, "metadata.namespace");

    // A server-side apply that would create is a create too; the group is in the resource.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "going");
    let s = status(
        deps.patch(
            "web",
            &PatchParams::apply("test").force(),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        r#"deployments.apps "web" is forbidden: unable to create new content in namespace going because it is being terminated"#
    );
    let d = s.details.expect("details");
    assert_eq!((d.group.as_str(), d.kind.as_str()), ("apps", "deployments"));
    assert_eq!(d.causes[0].reason, "NamespaceTerminating");

    // generateName: the name is not known at admission, so the message has none.
    let mut generated = configmap("");
    generated.metadata.name = None;
    generated.metadata.generate_name = Some("gen-".into());
    let s = status(
        cms.create(&PostParams::default(), &generated)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        s.message,
        "configmaps is forbidden: unable to create new content in namespace going because it is being terminated"
    );

    // Updating what is there is still allowed (only creates are refused)...
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    // ...and once the finalizer is released the namespace goes, and can be created anew.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let nss: Api<Namespace> = Api::all(c.clone());
    within(
        "namespace gone",
        await_condition(
            nss.clone(),
            "going",
            conditions::is_deleted(&ns.metadata.uid.clone().unwrap()),
        ),
    )
    .await
    .unwrap();
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "going"}})).unwrap(),
    )
    .await
    .unwrap();
    cms.create(&PostParams::default(), &configmap("late"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_namespace_is_a_404_about_the_namespace() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "absent");
    let s = status(
        cms.create(&PostParams::default(), &configmap("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 404);
    assert_eq!(s.message, r#"namespaces "absent" not found"#);
    let d = s.details.expect("details");
    assert_eq!((d.kind.as_str(), d.name.as_str()), ("namespaces", "absent"));
}

/// Runs the simulated `istioctl install -f` on `iop` (YAML) from namespace `default`.
async fn install(c: &kube::Client, name: &str, iop: &str) {
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": name}, "data": {"iop.yaml": iop}}))
            .unwrap(),
    )
    .await
    .unwrap();
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "istioctl", "image": "docker.io/istio/istioctl:1.30.3",
                "args": ["install", "-f", "/iop/iop.yaml", "-y"],
                "volumeMounts": [{"name": "iop", "mountPath": "/iop"}]}],
            "volumes": [{"name": "iop", "configMap": {"name": name}}]}}}
    }))
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(c.clone(), "default");
    jobs.create(&PostParams::default(), &job).await.unwrap();
    let complete = |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref())
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
    };
    within("installer complete", await_condition(jobs, name, complete))
        .await
        .unwrap();
}

#[tokio::test]
async fn injector_webhook_outside_istio_system_carries_the_namespace() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    install(
        &c,
        "remote",
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  name: mesh-c1\n  namespace: mesh-ns\nspec:\n  profile: remote\n  namespace: mesh-ns\n  values:\n    global:\n      istioNamespace: mesh-ns\n      remotePilotAddress: 203.0.113.7\n",
    )
    .await;
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    assert!(mwcs
        .get_opt("istio-sidecar-injector-mesh-ns")
        .await
        .unwrap()
        .is_some());
    assert!(mwcs
        .get_opt("istio-sidecar-injector")
        .await
        .unwrap()
        .is_none());
    install(
        &c,
        "remote-rev",
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  name: mesh-c1-canary\n  namespace: mesh-ns\nspec:\n  profile: remote\n  namespace: mesh-ns\n  revision: canary\n  values:\n    global:\n      istioNamespace: mesh-ns\n      remotePilotAddress: 203.0.113.7\n",
    )
    .await;
    assert!(mwcs
        .get_opt("istio-sidecar-injector-canary-mesh-ns")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn revision_default_is_a_revision_named_default() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    install(
        &c,
        "rev-default",
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  name: mesh-c1\n  namespace: istio-system\nspec:\n  revision: default\n",
    )
    .await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "istio-system");
    assert!(deps.get_opt("istiod-default").await.unwrap().is_some());
    assert!(deps.get_opt("istiod").await.unwrap().is_none());
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(c.clone());
    assert!(mwcs
        .get_opt("istio-sidecar-injector-default")
        .await
        .unwrap()
        .is_some());
}
