//! kube-sim API semantics through kube-rs: CRUD, errors, selectors, patches, server-side apply,
//! watch, status subresource, finalizers, namespaces, CRDs, discovery, auth.

mod common;

use std::collections::BTreeMap;

use common::{client, client_with_token, sim, status, within};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::WatchStreamExt;
use kube::ResourceExt;
use serde_json::json;

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "demo", "name": name}},
        "data": data.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn crud_errors_and_selectors() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    let a = api
        .create(&PostParams::default(), &cm("a", &[("k", "1")]))
        .await
        .unwrap();
    assert!(a.metadata.uid.is_some());
    assert!(a.metadata.creation_timestamp.is_some());
    assert!(a.metadata.resource_version.is_some());
    api.create(&PostParams::default(), &cm("b", &[("k", "2")]))
        .await
        .unwrap();

    let dup = status(
        api.create(&PostParams::default(), &cm("a", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.details.unwrap().name, "a");

    let missing = status(api.get("nope").await.unwrap_err());
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"nope\" not found");

    // Label and field selectors.
    let by_label = api
        .list(&ListParams::default().labels("app=demo,name in (b, c)"))
        .await
        .unwrap();
    let names: Vec<String> = by_label.items.iter().map(|o| o.name_any()).collect();
    assert_eq!(names, vec!["b"]);
    let by_field = api
        .list(&ListParams::default().fields("metadata.name!=a"))
        .await
        .unwrap();
    assert!(by_field.items.iter().all(|o| o.name_any() != "a"));
    // Pagination.
    let page = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(page.items.len(), 1);
    let cont = page.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(10).continue_token(&cont))
        .await
        .unwrap();
    assert!(!rest.items.is_empty());
    assert!(rest
        .items
        .iter()
        .all(|o| o.name_any() != page.items[0].name_any()));

    // Optimistic concurrency.
    let mut stale = a.clone();
    let mut fresh = a.clone();
    fresh.data = Some(BTreeMap::from([("k".into(), "updated".into())]));
    let updated = api
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        a.metadata.resource_version
    );
    stale.data = Some(BTreeMap::from([("k".into(), "stale".into())]));
    let conflict = status(
        api.replace("a", &PostParams::default(), &stale)
            .await
            .unwrap_err(),
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));

    // generateName.
    let mut gen = cm("", &[]);
    gen.metadata.name = None;
    gen.metadata.generate_name = Some("gen-".into());
    let g = api.create(&PostParams::default(), &gen).await.unwrap();
    assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9);

    // Invalid names and missing namespaces.
    let bad = status(
        api.create(&PostParams::default(), &cm("Bad_Name", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
    let other: Api<ConfigMap> = Api::namespaced(c.clone(), "absent");
    let nons = status(
        other
            .create(&PostParams::default(), &cm("x", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(nons.code, 404);
    assert!(nons.message.contains("namespaces \"absent\" not found"));

    api.delete("a", &DeleteParams::default()).await.unwrap();
    assert_eq!(status(api.get("a").await.unwrap_err()).code, 404);
    let gone = status(api.delete("a", &DeleteParams::default()).await.unwrap_err());
    assert_eq!(gone.code, 404);
}

#[tokio::test]
async fn patches_json_merge_strategic() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}
    }))
    .unwrap();
    let created = deps.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // Strategic merge: containers merge by name.
    let p = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}})),
        )
        .await
        .unwrap();
    let cs = p
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .clone();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[1].image.as_deref(), Some("b:2"));
    assert_eq!(p.metadata.generation, Some(2));

    // Merge patch: maps merge.
    let p = deps
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}, "spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(p.labels().get("x").map(String::as_str), Some("1"));
    assert_eq!(p.spec.as_ref().unwrap().replicas, Some(3));

    // JSON patch, including a failing test op → 422.
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]))
            .unwrap();
    let p = deps
        .patch("web", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(p.spec.as_ref().unwrap().replicas, Some(5));
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 1}]))
            .unwrap();
    let err = status(
        deps.patch("web", &PatchParams::default(), &Patch::<()>::Json(jp))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    // Merge patch carrying a stale resourceVersion conflicts.
    let err = status(
        deps.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
}

#[tokio::test]
async fn server_side_apply_managers_conflicts_force() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let applied = api
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(cm("ssa", &[("shared", "1"), ("alpha", "a")])),
        )
        .await
        .unwrap();
    let managers: Vec<_> = applied
        .managed_fields()
        .iter()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert_eq!(
        managers,
        vec![(Some("alpha".to_string()), Some("Apply".to_string()))]
    );

    // Re-applying the same config is a no-op (resourceVersion unchanged).
    let again = api
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(cm("ssa", &[("shared", "1"), ("alpha", "a")])),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        applied.metadata.resource_version
    );

    // Another manager changing an owned field conflicts...
    let err = status(
        api.patch(
            "ssa",
            &PatchParams::apply("beta"),
            &Patch::Apply(cm("ssa", &[("shared", "2")])),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("conflict with \"alpha\""),
        "{}",
        err.message
    );
    assert!(err.message.contains(".data.shared"), "{}", err.message);
    // ...unless forced, which moves ownership.
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(cm("ssa", &[("shared", "2")])),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["shared"], "2");
    // alpha stops applying its key: it is removed; shared stays (owned by beta).
    let after = api
        .patch(
            "ssa",
            &PatchParams::apply("alpha").force(),
            &Patch::Apply(cm("ssa", &[])),
        )
        .await
        .unwrap();
    let data = after.data.unwrap();
    assert_eq!(data.get("shared").map(String::as_str), Some("2"));
    assert!(!data.contains_key("alpha"));

    // Status is ignored when applying the main resource.
    let deps: Api<Deployment> = Api::namespaced(c, "default");
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        "status": {"replicas": 99}});
    let created = deps
        .patch("d", &PatchParams::apply("mgr"), &Patch::Apply(&d))
        .await
        .unwrap();
    assert_ne!(created.status.and_then(|s| s.replicas), Some(99));
}

#[tokio::test]
async fn watch_streams_events_and_resumes() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let api: Api<ConfigMap> = Api::namespaced(c, "default");
    let start = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let wp = WatchParams::default().labels("app=demo").timeout(20);
    let mut stream = api.watch(&wp, &start).await.unwrap().boxed();
    api.create(&PostParams::default(), &cm("w", &[("k", "1")]))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    // Leaving the selector looks like a deletion to this watch.
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut first_rv = String::new();
    while seen.len() < 3 {
        match within("watch events", stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(o) => {
                first_rv = o.resource_version().unwrap();
                seen.push("ADDED")
            }
            WatchEvent::Modified(o) => {
                assert_eq!(o.data.unwrap()["k"], "2");
                seen.push("MODIFIED")
            }
            WatchEvent::Deleted(_) => seen.push("DELETED"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec!["ADDED", "MODIFIED", "DELETED"]);

    // Resume from the first event's resourceVersion: the later events replay.
    let mut resumed = api.watch(&wp, &first_rv).await.unwrap().boxed();
    match within("resumed watch", resumed.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        WatchEvent::Modified(_) => {}
        other => panic!("expected MODIFIED on resume, got {other:?}"),
    }

    // Bookmarks arrive when asked for.
    let mut bm = api
        .watch(&WatchParams::default().timeout(20), "0")
        .await
        .unwrap()
        .boxed();
    let bookmark_rv = within("bookmark", async {
        while let Some(ev) = bm.try_next().await.unwrap() {
            if let WatchEvent::Bookmark(b) = ev {
                return b.metadata.resource_version;
            }
        }
        String::new()
    })
    .await;
    assert!(!bookmark_rv.is_empty());

    // kube-runtime's watcher (list + watch) sees a new object.
    let cfgs = api.clone();
    let found = tokio::spawn(async move {
        kube::runtime::watcher(
            cfgs,
            kube::runtime::watcher::Config::default().fields("metadata.name=late"),
        )
        .applied_objects()
        .boxed()
        .try_next()
        .await
        .unwrap()
        .map(|o| o.name_any())
    });
    api.create(&PostParams::default(), &cm("late", &[]))
        .await
        .unwrap();
    assert_eq!(
        within("watcher", found).await.unwrap().as_deref(),
        Some("late")
    );

    // Streaming lists (sendInitialEvents + initial-events-end bookmark) see existing objects.
    let streamed = within(
        "streaming list",
        kube::runtime::watcher(
            api.clone(),
            kube::runtime::watcher::Config::default()
                .fields("metadata.name=late")
                .streaming_lists(),
        )
        .applied_objects()
        .boxed()
        .try_next(),
    )
    .await
    .unwrap()
    .map(|o| o.name_any());
    assert_eq!(streamed.as_deref(), Some("late"));
}

#[tokio::test]
async fn dry_run_delete_collection_scale_and_access_reviews() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let dry = api
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm("dry", &[]),
        )
        .await
        .unwrap();
    assert_eq!(dry.name_any(), "dry");
    assert!(api.get_opt("dry").await.unwrap().is_none());

    for n in ["x1", "x2", "y1"] {
        let mut o = cm(n, &[]);
        o.labels_mut().insert("group".into(), n[..1].to_string());
        api.create(&PostParams::default(), &o).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("group=x"),
    )
    .await
    .unwrap();
    let left: Vec<String> = api
        .list(&ListParams::default().labels("group"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.name_any())
        .collect();
    assert_eq!(left, vec!["y1"]);

    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "s"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "s"}},
            "template": {"metadata": {"labels": {"a": "s"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))
    .unwrap();
    deps.create(&PostParams::default(), &d).await.unwrap();
    let scale = deps
        .patch_scale(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(4));
    assert_eq!(deps.get("s").await.unwrap().spec.unwrap().replicas, Some(4));

    // SelfSubjectAccessReview answers with the caller's permissions.
    c1_restricted_review(&sim).await;
}

async fn c1_restricted_review(sim: &kube_sim::Sim) {
    sim.cluster("c1")
        .control()
        .add_restricted_user(&kube_sim::RestrictedUser {
            token: "rev".into(),
            name: None,
            allow: vec![kube_sim::Allow {
                verb: "get".into(),
                resource: "pods/log".into(),
            }],
        })
        .await
        .unwrap();
    let reviews: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
        Api::all(client_with_token(sim, "c1", "rev").await);
    let ask = |verb: &str, resource: &str, sub: &str| {
        serde_json::from_value::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>(json!({
            "spec": {"resourceAttributes": {"verb": verb, "resource": resource, "subresource": sub, "namespace": "default"}}
        }))
        .unwrap()
    };
    let allowed = reviews
        .create(&PostParams::default(), &ask("get", "pods", "log"))
        .await
        .unwrap();
    assert!(allowed.status.unwrap().allowed);
    let denied = reviews
        .create(&PostParams::default(), &ask("delete", "pods", ""))
        .await
        .unwrap();
    assert!(!denied.status.unwrap().allowed);
}

#[tokio::test]
async fn status_subresource_finalizers_and_namespace_deletion() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let nss: Api<Namespace> = Api::all(c.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();

    // status subresource: main writes ignore status, /status writes only status.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "team");
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = pods
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    let p = pods
        .patch_status(
            "p",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Running"}, "metadata": {"labels": {"ignored": "x"}}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert!(!p.labels().contains_key("ignored"));

    // A finalizer holds an object after delete.
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "team");
    let mut held = cm("held", &[]);
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let h = cms.get("held").await.unwrap();
    assert!(h.metadata.deletion_timestamp.is_some());

    // Namespace deletion: Terminating until the finalizer is released, then everything is gone.
    nss.delete("team", &DeleteParams::default()).await.unwrap();
    let t = nss.get("team").await.unwrap();
    assert_eq!(t.status.unwrap().phase.as_deref(), Some("Terminating"));
    let refused = status(
        cms.create(&PostParams::default(), &cm("late", &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    within(
        "pod removed with the namespace",
        await_condition(
            pods.clone(),
            "p",
            conditions::is_deleted(&p.metadata.uid.clone().unwrap()),
        ),
    )
    .await
    .unwrap();
    assert!(
        nss.get_opt("team").await.unwrap().is_some(),
        "held by the finalizer"
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    within(
        "namespace gone",
        await_condition(
            nss.clone(),
            "team",
            conditions::is_deleted(&t.metadata.uid.clone().unwrap()),
        ),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn crds_discovery_and_dynamic_istio_objects() {
    let sim = sim(&["c1"]).await;
    let c = client(&sim, "c1").await;
    let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gateways.networking.istio.io"},
        "spec": {"group": "networking.istio.io", "scope": "Namespaced",
            "names": {"kind": "Gateway", "plural": "gateways", "singular": "gateway", "listKind": "GatewayList"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    within(
        "crd established",
        await_condition(
            crds.clone(),
            "gateways.networking.istio.io",
            conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap();

    let discovery = Discovery::new(c.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "networking.istio.io",
            "v1",
            "Gateway",
        ))
        .expect("Gateway discovered");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
    for (g, k) in [
        ("apps", "Deployment"),
        ("batch", "Job"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("policy", "PodDisruptionBudget"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
        ),
    ] {
        assert!(
            discovery
                .resolve_gvk(&GroupVersionKind::gvk(g, "v1", k))
                .is_some(),
            "{g}/{k}"
        );
    }
    assert!(discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "autoscaling",
            "v2",
            "HorizontalPodAutoscaler"
        ))
        .is_some());

    let gws: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ar);
    let gw: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
        "metadata": {"name": "cross-network-gateway"},
        "spec": {"selector": {"istio": "eastwestgateway"},
            "servers": [{"port": {"number": 15443, "name": "tls", "protocol": "TLS"},
                "tls": {"mode": "AUTO_PASSTHROUGH"}, "hosts": ["*.local"]}]}
    }))
    .unwrap();
    gws.patch(
        "cross-network-gateway",
        &PatchParams::apply("test"),
        &Patch::Apply(&gw),
    )
    .await
    .unwrap();
    let got = gws.get("cross-network-gateway").await.unwrap();
    assert_eq!(
        got.data["spec"]["servers"][0]["tls"]["mode"],
        "AUTO_PASSTHROUGH"
    );

    // Unknown kinds 404 until their CRD exists; deleting the CRD removes its objects.
    let vs_ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"),
        "virtualservices",
    );
    let vss: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &vs_ar);
    assert_eq!(
        status(vss.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    crds.delete("gateways.networking.istio.io", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        status(gws.list(&ListParams::default()).await.unwrap_err()).code,
        404
    );
    let dump = sim.cluster("c1").control().dump().await.unwrap();
    assert!(!dump.iter().any(|o| o["kind"] == "Gateway"));
}

#[tokio::test]
async fn auth_tokens_certs_and_restrictions() {
    let sim = sim(&["c1", "c2"]).await;
    let c1 = sim.cluster("c1");
    // Client-certificate context works.
    let nss: Api<Namespace> = Api::all(client(&sim, "c1-cert").await);
    assert!(nss.list(&ListParams::default()).await.unwrap().items.len() >= 4);

    // A wrong token gets 401.
    let bad: Api<Namespace> = Api::all(client_with_token(&sim, "c2", "wrong-token").await);
    let err = status(bad.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"));

    // Restricted user: allowed verbs pass, others get 403 naming verb and resource.
    c1.control()
        .add_restricted_user(&kube_sim::RestrictedUser {
            token: "reader-token".into(),
            name: Some("reader".into()),
            allow: vec![kube_sim::Allow {
                verb: "list".into(),
                resource: "secrets".into(),
            }],
        })
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(
        client_with_token(&sim, "c1", "reader-token").await,
        "default",
    );
    secrets.list(&ListParams::default()).await.unwrap();
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
    let denied = status(
        secrets
            .create(&PostParams::default(), &s)
            .await
            .unwrap_err(),
    );
    assert_eq!(denied.code, 403);
    assert!(
        denied
            .message
            .contains("cannot create resource \"secrets\""),
        "{}",
        denied.message
    );

    // Service-account token secret; RBAC decides what the service account may do.
    let admin = client(&sim, "c1").await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "reader"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let admin_secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    let token_secret: Secret = serde_json::from_value(json!({"metadata": {"name": "reader-token",
        "annotations": {"kubernetes.io/service-account.name": "reader"}},
        "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    admin_secrets
        .create(&PostParams::default(), &token_secret)
        .await
        .unwrap();
    let populated = within(
        "token populated",
        await_condition(
            admin_secrets.clone(),
            "reader-token",
            |s: Option<&Secret>| {
                s.and_then(|s| s.data.as_ref())
                    .is_some_and(|d| d.contains_key("token"))
            },
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let data = populated.data.unwrap();
    assert_eq!(
        String::from_utf8(data["ca.crt"].0.clone()).unwrap(),
        c1.ca_pem
    );
    assert_eq!(data["namespace"].0, b"default");
    let token = String::from_utf8(data["token"].0.clone()).unwrap();

    let sa_pods: Api<Pod> = Api::all(client_with_token(&sim, "c1", &token).await);
    assert_eq!(
        status(sa_pods.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(admin.clone());
    let crb = serde_json::from_value(json!({"metadata": {"name": "reader-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": "default"}]}))
    .unwrap();
    crbs.create(&PostParams::default(), &crb).await.unwrap();
    sa_pods.list(&ListParams::default()).await.unwrap();
    // Deleting the token secret revokes the token.
    admin_secrets
        .delete("reader-token", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        status(sa_pods.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );

    // A token secret created before its ServiceAccount is populated once the account exists.
    let early: Secret = serde_json::from_value(json!({"metadata": {"name": "early-token",
        "annotations": {"kubernetes.io/service-account.name": "late-sa"}},
        "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    admin_secrets
        .create(&PostParams::default(), &early)
        .await
        .unwrap();
    let late: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "late-sa"}})).unwrap();
    sas.create(&PostParams::default(), &late).await.unwrap();
    within(
        "late token populated",
        await_condition(
            admin_secrets.clone(),
            "early-token",
            |s: Option<&Secret>| {
                s.and_then(|s| s.data.as_ref())
                    .is_some_and(|d| d.contains_key("token") && d.contains_key("ca.crt"))
            },
        ),
    )
    .await
    .unwrap();
    // Deleting the ServiceAccount deletes its token secrets.
    sas.delete("late-sa", &DeleteParams::default())
        .await
        .unwrap();
    within(
        "token secret removed with its account",
        await_condition(
            admin_secrets.clone(),
            "early-token",
            |s: Option<&Secret>| s.is_none(),
        ),
    )
    .await
    .unwrap();

    // TokenRequest.
    let tr: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": ["istio-ca"], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let minted = sas
        .create_token_request("reader", &PostParams::default(), &tr)
        .await
        .unwrap();
    let t = minted.status.unwrap().token;
    assert_eq!(t.split('.').count(), 3);
    let via_tr: Api<Pod> = Api::all(client_with_token(&sim, "c1", &t).await);
    via_tr.list(&ListParams::default()).await.unwrap();

    // The control endpoint rejects the API admin token and the API rejects the control token.
    let wrong = kube_sim::Control::new(&c1.url, &c1.ca_pem, &c1.admin_token).unwrap();
    assert_eq!(
        wrong.raw("GET", "/_sim/counters", None).await.unwrap().0,
        401
    );
    let ctl_as_api: Api<Namespace> =
        Api::all(client_with_token(&sim, "c1", &c1.control_token).await);
    assert_eq!(
        status(ctl_as_api.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );
}
