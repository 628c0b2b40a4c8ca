use super::*;
use crate::pki::{generate_root, issue_intermediate, parse_certs_pem, CaSpec};

fn images() -> Images {
    Images::resolve(None, None, None)
}

fn workloads(images: &Images) -> Workloads<'_> {
    Workloads {
        namespace: "sample",
        version: "east",
        revision: None,
        images,
        labels: map(&[("app.kubernetes.io/managed-by", "terraform-provider-mesh")]),
    }
}

#[test]
fn images_come_from_the_samples_a_hub_or_the_user() {
    assert_eq!(images().helloworld, DEFAULT_HELLOWORLD_IMAGE);
    let mirrored = Images::resolve(Some("registry.local/mirror/"), None, Some("my/curl:1"));
    assert_eq!(
        mirrored.helloworld,
        "registry.local/mirror/examples-helloworld-v1:1.0"
    );
    assert_eq!(mirrored.curl, "my/curl:1");
}

#[test]
fn injection_follows_the_revision() {
    assert_eq!(
        injection_label(None),
        ("istio-injection".into(), "enabled".into())
    );
    assert_eq!(
        injection_label(Some("default")),
        ("istio-injection".into(), "enabled".into())
    );
    assert_eq!(
        injection_label(Some("canary")),
        ("istio.io/rev".into(), "canary".into())
    );
    assert_eq!(
        injector_webhook(Some("canary")),
        "istio-sidecar-injector-canary"
    );
    assert_eq!(injector_webhook(None), "istio-sidecar-injector");
}

#[test]
fn helloworld_answers_with_the_cluster_name() {
    let imgs = images();
    let w = workloads(&imgs);
    let d = w.helloworld();
    assert_eq!(d.metadata.name.as_deref(), Some("helloworld-east"));
    let spec = d.spec.unwrap();
    let c = &spec.template.spec.unwrap().containers[0];
    let env = c.env.as_ref().unwrap();
    assert_eq!(env[0].name, "SERVICE_VERSION");
    assert_eq!(env[0].value.as_deref(), Some("east"));
    assert_eq!(spec.selector.match_labels.unwrap()["version"], "east");
    let ns = w.namespace();
    assert_eq!(ns.metadata.labels.unwrap()["istio-injection"], "enabled");
    let svc = w.service().spec.unwrap();
    assert_eq!(svc.selector.unwrap()["app"], "helloworld");
    assert_eq!(svc.ports.unwrap()[0].port, 5000);
}

#[test]
fn hello_answers_parse() {
    assert_eq!(
        parse_hello("Hello version: east, instance: helloworld-east-5d8f\n"),
        Some("east")
    );
    assert_eq!(parse_hello("no healthy upstream"), None);
    assert_eq!(parse_hello("Hello version: , instance: x"), None);
    assert_eq!(
        request_command("sample").last().map(String::as_str),
        Some("http://helloworld.sample:5000/hello")
    );
}

fn ca_chain(root: &crate::pki::IssuedCa, name: &str) -> Vec<Certificate> {
    let signer = root.signer().unwrap();
    let inter =
        issue_intermediate(&signer, &CaSpec::istio_intermediate(name, "istio-system")).unwrap();
    parse_certs_pem(&format!("{}{}", inter.cert_pem, root.cert_pem)).unwrap()
}

fn facts(name: &str, network: &str) -> ClusterFacts {
    ClusterFacts {
        name: name.into(),
        network: Some(network.into()),
        remotes: Some(BTreeMap::new()),
        eastwest: Some(Vec::new()),
        ..Default::default()
    }
}

#[test]
fn a_missing_or_unsynced_remote_is_named() {
    let a = facts("a", "n1");
    let b = facts("b", "n1");
    let all = [a.clone(), b.clone()];
    let c = causes(&a, &b, &all);
    assert_eq!(c.len(), 1, "{c:?}");
    assert!(c[0].contains("no remote secret for b in a"), "{c:?}");
    let mut a2 = a.clone();
    a2.remotes = Some(BTreeMap::from([("b".to_string(), Sync::Timeout)]));
    let c = causes(&a2, &b, &all);
    assert!(
        c[0].contains("has not synced cluster b: it is timeout"),
        "{c:?}"
    );
    let mut a3 = a;
    a3.remotes = Some(BTreeMap::from([("b".to_string(), Sync::Synced)]));
    assert!(causes(&a3, &b, &all).is_empty());
}

#[test]
fn another_network_needs_an_exposing_gateway_with_an_address() {
    let mut a = facts("a", "n1");
    a.remotes = Some(BTreeMap::from([("b".to_string(), Sync::Synced)]));
    let mut b = facts("b", "n2");
    let gw = |addr, exposes| EastWest {
        network: "n2".into(),
        service: "istio-system/istio-eastwestgateway".into(),
        has_address: addr,
        exposes_services: exposes,
    };
    let cases = [
        (vec![], "no cluster of network n2 has one"),
        (vec![gw(false, true)], "has no external address"),
        (vec![gw(true, false)], "does not expose the services"),
    ];
    for (gws, want) in cases {
        b.eastwest = Some(gws);
        let all = [a.clone(), b.clone()];
        let c = causes(&a, &b, &all);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].contains(want), "{want}: {c:?}");
    }
    b.eastwest = Some(vec![gw(true, true)]);
    let all = [a.clone(), b.clone()];
    assert!(causes(&a, &b, &all).is_empty());
    // The same network needs no gateway.
    b.network = Some("n1".into());
    b.eastwest = Some(vec![]);
    let all = [a.clone(), b.clone()];
    assert!(causes(&a, &b, &all).is_empty());
}

#[test]
fn different_roots_break_mutual_tls_and_a_shared_bundle_mends_it() {
    let root1 = generate_root(&CaSpec::istio_root()).unwrap();
    let root2 = generate_root(&CaSpec::istio_root()).unwrap();
    let mut a = facts("a", "n1");
    a.remotes = Some(BTreeMap::from([("b".to_string(), Sync::Synced)]));
    a.signing_chain = Some(ca_chain(&root1, "a"));
    a.trust_roots = Some(parse_certs_pem(&root1.cert_pem).unwrap());
    let mut b = facts("b", "n1");
    b.signing_chain = Some(ca_chain(&root1, "b"));
    b.trust_roots = Some(parse_certs_pem(&root1.cert_pem).unwrap());
    let all = [a.clone(), b.clone()];
    assert!(causes(&a, &b, &all).is_empty());

    b.signing_chain = Some(ca_chain(&root2, "b"));
    b.trust_roots = Some(parse_certs_pem(&root2.cert_pem).unwrap());
    let c = causes(&a, &b, &all);
    assert_eq!(c.len(), 2, "both directions fail: {c:?}");
    assert!(
        c.iter()
            .all(|m| m.contains("mutual TLS fails between a and b")),
        "{c:?}"
    );

    // During a rotation both trust {root1, root2}: accepted either way.
    let both = parse_certs_pem(&format!("{}{}", root1.cert_pem, root2.cert_pem)).unwrap();
    a.trust_roots = Some(both.clone());
    b.trust_roots = Some(both);
    assert!(causes(&a, &b, &all).is_empty());

    // A cluster on istiod's self-signed root: nobody else trusts it.
    b.self_signed = true;
    a.trust_roots = Some(parse_certs_pem(&root1.cert_pem).unwrap());
    let c = causes(&a, &b, &all);
    assert!(c.iter().any(|m| m.contains("b has no cacerts")), "{c:?}");
}

#[test]
fn a_gateway_exposes_services_only_with_15443_auto_passthrough_for_local_hosts() {
    let selector = map(&[
        ("istio", "eastwestgateway"),
        ("app", "istio-eastwestgateway"),
    ]);
    let gw = |port: u64, mode: &str, host: &str, sel: &str| {
        serde_json::json!({
            "selector": {"istio": sel},
            "servers": [{"port": {"number": port, "name": "tls", "protocol": "TLS"},
                         "tls": {"mode": mode}, "hosts": [host]}]
        })
    };
    assert!(exposes_services(
        &gw(15443, "AUTO_PASSTHROUGH", "*.local", "eastwestgateway"),
        &selector
    ));
    assert!(!exposes_services(
        &gw(15012, "PASSTHROUGH", "*", "eastwestgateway"),
        &selector
    ));
    assert!(!exposes_services(
        &gw(15443, "ISTIO_MUTUAL", "*.local", "eastwestgateway"),
        &selector
    ));
    assert!(!exposes_services(
        &gw(15443, "AUTO_PASSTHROUGH", "*.local", "ingressgateway"),
        &selector
    ));
}
