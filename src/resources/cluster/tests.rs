//! Unit tests: schema, validation, renewal and rotation decisions.

use super::*;
use crate::plugin::schema::lint;

fn errors(config: &Value) -> Vec<String> {
    let mut d = Diagnostics::new();
    validate_config(config, &mut d);
    d.0.iter()
        .map(|x| x.path.as_ref().map(|p| p.to_string()).unwrap_or_default())
        .collect()
}

fn base() -> Vec<(&'static str, Value)> {
    vec![
        ("cluster_name", Value::from("east-1")),
        ("mesh_id", Value::from("mesh1")),
        ("network", Value::from("net1")),
        ("namespace", Value::from("istio-system")),
    ]
}

fn mesh_root() -> Value {
    let root = pki::generate_root(&CaSpec {
        key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
        ..CaSpec::istio_root()
    })
    .unwrap();
    Value::object([
        ("cert_pem", Value::from(root.cert_pem.as_str())),
        (
            "private_key_pem",
            Value::from(root.private_key_pem.as_str()),
        ),
    ])
}

#[test]
fn renewal_is_due_within_the_window_only() {
    let in_days =
        |d: i64| pki::format_rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(d));
    let days = |d: u64| Duration::from_secs(d * 86400);
    assert!(due_for_renewal(&in_days(10), days(30)).is_some());
    assert!(due_for_renewal(&in_days(40), days(30)).is_none());
    assert!(due_for_renewal("not a time", days(30)).is_none());
    assert_eq!(renew_before(&Value::Null), days(30));
}

#[test]
fn the_renewal_window_alone_is_no_trust_change() {
    let state = |window: &str, hours: i64| {
        Value::object([(
            "intermediate",
            Value::object([
                ("renew_before", Value::from(window)),
                ("validity_period_hours", Value::from(hours)),
            ]),
        )])
    };
    assert!(!trust_inputs_changed(
        &state("720h", 100),
        &state("24h", 100)
    ));
    assert!(trust_inputs_changed(
        &state("720h", 100),
        &state("720h", 200)
    ));
}

#[test]
fn renew_before_must_be_a_duration_shorter_than_the_validity() {
    let root = mesh_root();
    let with = |window: &str| {
        let mut fields = base();
        fields.push(("root_ca", root.clone()));
        fields.push((
            "intermediate",
            Value::object([
                ("validity_period_hours", Value::from(48)),
                ("renew_before", Value::from(window)),
            ]),
        ));
        errors(&Value::object(fields))
    };
    assert_eq!(with("24h"), Vec::<String>::new());
    assert_eq!(with("48h"), ["intermediate.renew_before"]);
    assert_eq!(with("soon"), ["intermediate.renew_before"]);
}

#[test]
fn schema_is_documented_and_secrets_are_sensitive() {
    let s = schema();
    assert_eq!(lint(&s.block, ""), Vec::<String>::new());
    assert!(
        s.block
            .nested("root_ca")
            .unwrap()
            .block
            .attribute("private_key_pem")
            .unwrap()
            .sensitive
    );
    assert!(
        s.block
            .nested("ca")
            .unwrap()
            .block
            .attribute("private_key_pem")
            .unwrap()
            .sensitive
    );
    assert!(!s.block.nested("kubernetes").unwrap().force_new);
}

#[test]
fn names_and_conflicts_are_checked_on_their_attribute() {
    let mut c = base();
    c[0].1 = Value::from("East_1");
    c[2].1 = Value::from(" ");
    c.push(("root_ca", Value::object([("cert_pem", Value::Unknown)])));
    c.push(("ca", Value::object([("cert_pem", Value::Unknown)])));
    assert_eq!(errors(&Value::object(c)), ["cluster_name", "network", "ca"]);
}

#[test]
fn root_ca_must_parse_and_match() {
    let root = pki::generate_root(&CaSpec {
        key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
        ..CaSpec::istio_root()
    })
    .unwrap();
    let other = pki::generate_root(&CaSpec {
        key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
        ..CaSpec::istio_root()
    })
    .unwrap();
    let with_root = |cert: &str, key: &str| {
        let mut c = base();
        c.push((
            "root_ca",
            Value::object([
                ("cert_pem", Value::from(cert)),
                ("private_key_pem", Value::from(key)),
            ]),
        ));
        errors(&Value::object(c))
    };
    assert!(with_root(&root.cert_pem, &root.private_key_pem).is_empty());
    assert_eq!(
        with_root("garbage", &root.private_key_pem),
        ["root_ca.cert_pem"]
    );
    assert_eq!(
        with_root(&root.cert_pem, &other.private_key_pem),
        ["root_ca.private_key_pem"]
    );
    // Unknown root (created in the same apply): nothing to check yet.
    let mut c = base();
    c.push((
        "root_ca",
        Value::object([
            ("cert_pem", Value::Unknown),
            ("private_key_pem", Value::Unknown),
        ]),
    ));
    assert!(errors(&Value::object(c)).is_empty());
}

/// `base()` plus a `control_plane` block with `fields` (version 1.30.3 unless given).
fn with_control_plane(fields: &[(&'static str, Value)]) -> Vec<String> {
    let mut cp: Vec<(&str, Value)> = vec![("version", Value::from("1.30.3"))];
    for (k, v) in fields {
        cp.retain(|(n, _)| n != k);
        cp.push((*k, v.clone()));
    }
    let mut c = base();
    c.push(("control_plane", Value::object(cp)));
    errors(&Value::object(c))
}

#[test]
fn empty_mesh_id_is_refused_on_its_attribute() {
    let mut c = base();
    c[1].1 = Value::from("");
    assert_eq!(errors(&Value::object(c)), ["mesh_id"]);
}

#[test]
fn a_remote_needs_the_pilot_address_and_the_primary() {
    let remote = ("role", Value::from("remote"));
    let pilot = ("remote_pilot_address", Value::from("10.0.0.9"));
    let primary = ("primary_cluster_name", Value::from("east-0"));
    assert!(with_control_plane(&[remote.clone(), pilot.clone(), primary.clone()]).is_empty());
    assert_eq!(
        with_control_plane(&[remote.clone(), primary.clone()]),
        ["control_plane.remote_pilot_address"]
    );
    assert_eq!(
        with_control_plane(&[remote.clone(), pilot.clone()]),
        ["control_plane.primary_cluster_name"]
    );
    assert_eq!(
        with_control_plane(&[remote]),
        [
            "control_plane.remote_pilot_address",
            "control_plane.primary_cluster_name"
        ]
    );
    // Known only at apply (a gateway's address): nothing to refuse yet.
    assert!(with_control_plane(&[
        ("role", Value::from("remote")),
        ("remote_pilot_address", Value::Unknown),
        primary
    ])
    .is_empty());
    // A primary needs neither.
    assert!(with_control_plane(&[]).is_empty());
}

#[test]
fn values_and_mesh_config_must_be_json_objects() {
    for attr in ["values", "mesh_config"] {
        let path = format!("control_plane.{attr}");
        assert!(with_control_plane(&[(attr, Value::from(r#"{"a": {"b": 1}}"#))]).is_empty());
        for bad in [r#"["a"]"#, "42", r#""text""#, "{not json", ""] {
            assert_eq!(
                with_control_plane(&[(attr, Value::from(bad))]),
                [path.as_str()],
                "{attr} = {bad:?}"
            );
        }
    }
    let mut d = Diagnostics::new();
    let mut c = base();
    c.push((
        "control_plane",
        Value::object([
            ("version", Value::from("1.30.3")),
            ("values", Value::from("[1]")),
            ("mesh_config", Value::from("{oops")),
        ]),
    ));
    validate_config(&Value::object(c), &mut d);
    let summaries: Vec<&str> = d.0.iter().map(|x| x.summary.as_str()).collect();
    assert_eq!(summaries, ["Not a JSON object", "Invalid JSON"]);
}

#[test]
fn version_must_be_a_version() {
    for ok in ["1.30.3", "1.30", "1.31.0-beta.1", "1.30.3-distroless"] {
        assert!(
            with_control_plane(&[("version", Value::from(ok))]).is_empty(),
            "{ok}"
        );
    }
    for bad in [
        "latest",
        "v1.30.3",
        "1",
        "1.30.",
        "1..3",
        "1.30.3.4",
        "",
        "1.30.3-a b",
    ] {
        assert_eq!(
            with_control_plane(&[("version", Value::from(bad))]),
            ["control_plane.version"],
            "{bad:?}"
        );
    }
}

#[test]
fn hub_must_be_an_image_repository() {
    for ok in [
        "docker.io/istio",
        "gcr.io/istio-release",
        "mirror.corp:5000/istio",
        "localhost:5000/mirror/istio_images",
    ] {
        assert!(
            with_control_plane(&[("hub", Value::from(ok))]).is_empty(),
            "{ok}"
        );
    }
    for bad in [
        "docker.io/istio:1.30.3",
        "docker.io/istio/pilot@sha256:0123abcd",
        "docker.io/istio/",
        "",
        "docker.io/ist io",
    ] {
        assert_eq!(
            with_control_plane(&[("hub", Value::from(bad))]),
            ["control_plane.hub"],
            "{bad:?}"
        );
    }
}

#[test]
fn revision_must_be_a_dns_label() {
    assert!(with_control_plane(&[("revision", Value::from("canary-1-31"))]).is_empty());
    let long = "r".repeat(64);
    for bad in [
        "Canary",
        "1.31",
        "canary_1",
        "-canary",
        long.as_str(),
        "default",
    ] {
        assert_eq!(
            with_control_plane(&[("revision", Value::from(bad))]),
            ["control_plane.revision"],
            "{bad:?}"
        );
    }
}

fn p256(spec: CaSpec) -> CaSpec {
    CaSpec {
        key_algorithm: KeyAlgorithm::Ecdsa(pki::EcdsaCurve::P256),
        ..spec
    }
}

fn with_root(cert: &str, key: Value) -> Vec<String> {
    let mut c = base();
    c.push((
        "root_ca",
        Value::object([("cert_pem", Value::from(cert)), ("private_key_pem", key)]),
    ));
    errors(&Value::object(c))
}

#[test]
fn root_ca_must_be_a_valid_ca() {
    // A leaf certificate is not a CA: refused even while the key is unknown.
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["leaf.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let leaf_key = Value::from(key.serialize_pem());
    assert_eq!(with_root(&leaf.pem(), leaf_key), ["root_ca.cert_pem"]);
    assert_eq!(with_root(&leaf.pem(), Value::Unknown), ["root_ca.cert_pem"]);

    // An expired root, with its key known or not.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki::generate_root_at(
        &p256(CaSpec {
            validity_hours: 24,
            ..CaSpec::istio_root()
        }),
        now - time::Duration::days(3),
    )
    .unwrap();
    let mut d = Diagnostics::new();
    let mut c = base();
    c.push((
        "root_ca",
        Value::object([
            ("cert_pem", Value::from(expired.cert_pem.clone())),
            (
                "private_key_pem",
                Value::from(expired.private_key_pem.clone()),
            ),
        ]),
    ));
    validate_config(&Value::object(c), &mut d);
    assert_eq!(d.0.len(), 1);
    assert_eq!(
        d.0[0].path.as_ref().map(|p| p.to_string()).as_deref(),
        Some("root_ca.cert_pem")
    );
    assert!(d.0[0].detail.contains("expired at"), "{}", d.0[0].detail);
    assert_eq!(
        with_root(&expired.cert_pem, Value::Unknown),
        ["root_ca.cert_pem"]
    );
}

#[test]
fn own_ca_chain_must_end_at_the_root() {
    let root_a = pki::generate_root(&p256(CaSpec::istio_root())).unwrap();
    let root_b = pki::generate_root(&p256(CaSpec {
        common_name: "Other Root".into(),
        ..CaSpec::istio_root()
    }))
    .unwrap();
    let inter = pki::issue_intermediate(
        &root_a.signer().unwrap(),
        &p256(CaSpec::istio_intermediate("east-1", "istio-system")),
    )
    .unwrap();
    let with_ca = |chain: &str, root: &str| {
        let mut c = base();
        c.push((
            "ca",
            Value::object([
                ("cert_pem", Value::from(inter.cert_pem.clone())),
                (
                    "private_key_pem",
                    Value::from(inter.private_key_pem.clone()),
                ),
                ("cert_chain_pem", Value::from(chain)),
                ("root_cert_pem", Value::from(root)),
            ]),
        ));
        errors(&Value::object(c))
    };
    let chain = pki::concat_pem(&[&inter.cert_pem, &root_a.cert_pem]);
    assert!(with_ca(&chain, &root_a.cert_pem).is_empty());
    // Signed by A, but the mesh root given is B.
    assert_eq!(with_ca(&chain, &root_b.cert_pem), ["ca.root_cert_pem"]);
    // The chain claims B above the intermediate.
    let wrong = pki::concat_pem(&[&inter.cert_pem, &root_b.cert_pem]);
    assert_eq!(with_ca(&wrong, &root_b.cert_pem), ["ca.cert_chain_pem"]);
}

#[test]
fn the_root_key_is_given_in_exactly_one_of_stored_and_write_only() {
    let root = pki::generate_root(&p256(CaSpec::istio_root())).unwrap();
    let other = pki::generate_root(&p256(CaSpec::istio_root())).unwrap();
    let s = schema();
    let block = &s.block.nested("root_ca").unwrap().block;
    let wo = block.attribute(ROOT_KEY_WO).unwrap();
    assert!(wo.write_only && wo.sensitive && !wo.is_computed());
    assert_eq!(wo.stored_alternative.as_deref(), Some("private_key_pem"));
    let version = block.attribute(ROOT_KEY_WO_VERSION).unwrap();
    assert!(!version.write_only && !version.sensitive);
    assert!(!block.attribute("private_key_pem").unwrap().write_only);

    let with = |fields: &[(&str, Value)]| {
        let mut c = base();
        let mut r = vec![("cert_pem", Value::from(root.cert_pem.as_str()))];
        r.extend(fields.iter().cloned());
        c.push(("root_ca", Value::object(r)));
        errors(&Value::object(c))
    };
    let key = Value::from(root.private_key_pem.as_str());
    assert!(with(&[("private_key_pem", key.clone())]).is_empty());
    assert!(with(&[(ROOT_KEY_WO, key.clone())]).is_empty());
    assert!(with(&[
        (ROOT_KEY_WO, key.clone()),
        (ROOT_KEY_WO_VERSION, Value::from(2))
    ])
    .is_empty());
    assert!(with(&[(ROOT_KEY_WO, Value::Unknown)]).is_empty());
    assert_eq!(with(&[]), ["root_ca"]);
    assert_eq!(
        with(&[
            ("private_key_pem", key.clone()),
            (ROOT_KEY_WO, Value::Unknown)
        ]),
        ["root_ca.private_key_pem_wo"]
    );
    assert_eq!(
        with(&[
            ("private_key_pem", key.clone()),
            (ROOT_KEY_WO_VERSION, Value::from(1))
        ]),
        ["root_ca.private_key_pem_wo_version"]
    );
    // A key that does not match is reported where it was given, without its value.
    let wrong = Value::from(other.private_key_pem.as_str());
    let mut d = Diagnostics::new();
    let mut c = base();
    c.push((
        "root_ca",
        Value::object([
            ("cert_pem", Value::from(root.cert_pem.as_str())),
            (ROOT_KEY_WO, wrong),
        ]),
    ));
    validate_config(&Value::object(c), &mut d);
    assert_eq!(d.0.len(), 1, "{d:?}");
    assert_eq!(
        d.0[0].path.as_ref().unwrap().to_string(),
        "root_ca.private_key_pem_wo"
    );
    let body = other.private_key_pem.lines().nth(1).unwrap();
    assert!(!d.0[0].detail.contains(body) && !d.0[0].summary.contains(body));

    // The block itself unknown (a dynamic block): nothing to check yet.
    let mut c = base();
    c.push(("root_ca", Value::Unknown));
    assert!(errors(&Value::object(c)).is_empty());

    // At apply the write-only key (in the configuration) is what signs.
    let mut c = base();
    c.push((
        "root_ca",
        Value::object([
            ("cert_pem", Value::from(root.cert_pem.as_str())),
            (ROOT_KEY_WO, key),
        ]),
    ));
    let mut d = Diagnostics::new();
    assert!(matches!(
        trust_from(&Value::object(c), &mut d),
        Some(Trust::Root { .. })
    ));
    assert!(d.0.is_empty(), "{d:?}");
}

#[test]
fn how_the_root_key_is_given_is_no_trust_change() {
    let root = pki::generate_root(&p256(CaSpec::istio_root())).unwrap();
    let other = pki::generate_root(&p256(CaSpec::istio_root())).unwrap();
    let state = |cert: &str, fields: &[(&str, Value)]| {
        let mut r = vec![
            ("cert_pem", Value::from(cert)),
            ("private_key_pem", Value::Null),
            (ROOT_KEY_WO, Value::Null),
            (ROOT_KEY_WO_VERSION, Value::Null),
        ];
        r.extend(fields.iter().cloned());
        Value::object([("root_ca", Value::object(r))])
    };
    let stored = state(
        &root.cert_pem,
        &[(
            "private_key_pem",
            Value::from(root.private_key_pem.as_str()),
        )],
    );
    // Switching to the write-only key (null in plan and state), or bumping its version: the
    // same root, the same intermediate.
    let write_only = state(&root.cert_pem, &[(ROOT_KEY_WO_VERSION, Value::from(1))]);
    let bumped = state(&root.cert_pem, &[(ROOT_KEY_WO_VERSION, Value::from(2))]);
    assert!(!trust_inputs_changed(&stored, &write_only));
    assert!(!trust_inputs_changed(&write_only, &bumped));
    // A new root is.
    assert!(trust_inputs_changed(
        &write_only,
        &state(&other.cert_pem, &[(ROOT_KEY_WO_VERSION, Value::from(1))])
    ));
}

#[test]
fn the_connection_output_is_the_block_as_one_value_and_unknown_with_it() {
    let s = schema();
    assert!(s.block.attribute(kubernetes::CONNECTION).unwrap().sensitive);
    let plan_of = |kube: Value| {
        let mut config = Value::object(base());
        config.set("kubernetes", kube);
        let mut plan = Plan::new(&s, &Value::Null, config.clone(), &config, &[]);
        MeshCluster.modify_plan(&mut plan);
        plan.planned.get(kubernetes::CONNECTION).clone()
    };
    let known = plan_of(Value::object([
        ("config_path", Value::from("/kc")),
        ("config_context", Value::from("east")),
    ]));
    assert_eq!(
        known.as_str(),
        Some(r#"{"config_context":"east","config_path":"/kc"}"#)
    );
    // What a consumer given this string connects to is what the block says.
    let consumer = Value::object([(kubernetes::CONNECTION, known)]);
    let conn = kubernetes::connection_of(&consumer).unwrap();
    assert_eq!(conn.config_context.as_deref(), Some("east"));
    assert_eq!(conn.config_path.as_deref(), Some("/kc"));
    // A cluster created in the same apply: unknown until then.
    assert!(plan_of(Value::object([("host", Value::Unknown)])).is_unknown());
}

#[test]
fn private_state_leaves_out_the_intermediate_the_state_beside_it_holds() {
    let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let state = Value::object([("ca_cert_pem", Value::from(cert))]);
    let issued = Private {
        namespace_created: true,
        cacerts_digest: Some("d1".into()),
        issued_cert_pem: Some(cert.into()),
        operator_name: Some("installed-state".into()),
        ..Default::default()
    };
    // The usual case: the certificate is not written twice, and reads back the same.
    let bytes = issued.store(&state);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(!text.contains("issued_cert_pem"), "{text}");
    assert!(!text.contains("MIIB"), "{text}");
    assert_eq!(Private::load(&bytes, &state), issued);

    // Refresh found cacerts gone and emptied the attribute: the intermediate to keep is only
    // in private state, so it is written out, and read back although the state is null.
    let emptied = Value::object([("ca_cert_pem", Value::Null)]);
    let bytes = issued.store(&emptied);
    assert!(String::from_utf8(bytes.clone()).unwrap().contains("MIIB"));
    assert_eq!(Private::load(&bytes, &emptied), issued);

    // Own CA: the state has a certificate, no intermediate was issued. The None is written,
    // or it would read back as the state's certificate (and the trust mode would flip).
    let own = Private {
        cacerts_digest: Some("d2".into()),
        issued_cert_pem: None,
        ..Default::default()
    };
    let bytes = own.store(&state);
    assert!(String::from_utf8(bytes.clone())
        .unwrap()
        .contains("\"issued_cert_pem\":null"));
    assert_eq!(Private::load(&bytes, &state), own);

    // Written before the mirroring (the field always present) reads as before, with any state.
    let legacy = serde_json::to_vec(&serde_json::json!({
        "namespace_created": true, "cacerts_digest": "d1", "issued_cert_pem": "other",
        "operator_name": null, "operator_digest": null, "remove_crds": false,
    }))
    .unwrap();
    let read = Private::load(&legacy, &state);
    assert_eq!(read.issued_cert_pem.as_deref(), Some("other"));
    assert!(read.namespace_created);
    // No private state (import, a provider killed mid-apply): nothing known, nothing mirrored.
    assert_eq!(Private::load(&[], &state), Private::default());
}

#[test]
fn connection_set_instead_of_the_block_is_taken_as_given_and_checked() {
    let s = schema();
    let attr = s.block.attribute(kubernetes::CONNECTION).unwrap();
    assert!(
        attr.mode == crate::plugin::schema::Mode::OptionalComputed
            && attr.sensitive
            && !attr.force_new
    );
    let given = r#"{"config_context":"east","config_path":"/kc"}"#;
    let mut config = Value::object(base());
    config.set(kubernetes::CONNECTION, Value::from(given));
    assert_eq!(errors(&config), Vec::<String>::new());
    let mut plan = Plan::new(&s, &Value::Null, config.clone(), &config, &[]);
    MeshCluster.modify_plan(&mut plan);
    // The configured string is the plan (Terraform requires it), not a re-encoding of it.
    assert_eq!(
        plan.planned.get(kubernetes::CONNECTION).as_str(),
        Some(given)
    );
    let conn = kubernetes::connection_of(&config).unwrap();
    assert_eq!(conn.config_context.as_deref(), Some("east"));

    // Unknown (a cluster created in the same plan): left unknown, not encoded from the block.
    config.set(kubernetes::CONNECTION, Value::Unknown);
    let mut plan = Plan::new(&s, &Value::Null, config.clone(), &config, &[]);
    MeshCluster.modify_plan(&mut plan);
    assert!(plan.planned.get(kubernetes::CONNECTION).is_unknown());

    // One or the other, and a bad string is refused on the attribute.
    let mut both = Value::object(base());
    both.set(kubernetes::CONNECTION, Value::from(given));
    both.set(
        "kubernetes",
        Value::object([("config_context", Value::from("east"))]),
    );
    assert_eq!(errors(&both), vec!["connection".to_string()]);
    let mut bad = Value::object(base());
    bad.set(
        kubernetes::CONNECTION,
        Value::from(r#"{"config_context": 3}"#),
    );
    assert_eq!(errors(&bad), vec!["connection".to_string()]);
}
