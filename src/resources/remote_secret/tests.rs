//! Unit tests: schema, validation and planning.

use super::*;
use crate::plugin::schema::lint;

fn kube(ctx: &str) -> Value {
    Value::object([
        ("config_path", Value::from("/kc")),
        ("config_context", Value::from(ctx)),
    ])
}

fn config(name: &str, target: Value, remote: Value) -> Value {
    Value::object([
        ("namespace", Value::from("istio-system")),
        ("kubernetes", target),
        (
            "remote",
            Value::object([
                ("cluster_name", Value::from(name)),
                ("service_account", Value::from(rs::DEFAULT_SERVICE_ACCOUNT)),
                ("service_account_namespace", Value::from("istio-system")),
                ("create_service_account", Value::from(false)),
                ("kubernetes", remote),
            ]),
        ),
    ])
}

fn error_paths(config: &Value) -> Vec<String> {
    let mut d = Diagnostics::new();
    validate_config(config, &mut d);
    d.0.iter()
        .map(|x| x.path.as_ref().map(|p| p.to_string()).unwrap_or_default())
        .collect()
}

#[test]
fn schema_is_documented_and_nothing_secret_is_stored() {
    let s = schema();
    assert_eq!(lint(&s.block, ""), Vec::<String>::new());
    let remote = s.block.nested("remote").unwrap();
    assert_eq!((remote.min_items, remote.max_items), (1, 1));
    assert!(
        remote
            .block
            .nested("kubernetes")
            .unwrap()
            .block
            .attribute("token")
            .unwrap()
            .sensitive
    );
    assert!(remote.block.attribute("cluster_name").unwrap().force_new);
    // No attribute holds the kubeconfig or the token.
    for a in &s.block.attributes {
        assert!(
            !["kubeconfig", "token"].contains(&a.name.as_str()),
            "{}",
            a.name
        );
    }
}

#[test]
fn cluster_name_and_server_are_checked_on_their_path() {
    let mut c = config("West_1", kube("c1"), kube("c2"));
    let mut remote = c.get("remote").clone();
    remote.set("server", Value::from("10.0.0.1:6443"));
    c.set("remote", remote);
    assert_eq!(error_paths(&c), ["remote.cluster_name", "remote.server"]);
    assert!(error_paths(&config("west-1", kube("c1"), kube("c2"))).is_empty());
}

#[test]
fn same_cluster_is_an_error_when_known() {
    assert_eq!(
        error_paths(&config("west", kube("c1"), kube("c1"))),
        ["remote.kubernetes"]
    );
    let host = |h: &str| Value::object([("host", Value::from(h))]);
    assert_eq!(
        error_paths(&config(
            "west",
            host("https://a:6443/"),
            host("https://a:6443")
        )),
        ["remote.kubernetes"]
    );
    assert!(error_paths(&config(
        "west",
        host("https://a:6443"),
        host("https://b:6443")
    ))
    .is_empty());
    // Unknown (created in the same apply): checked at apply time instead.
    let unknown = Value::object([("host", Value::Unknown)]);
    assert!(error_paths(&config("west", unknown, host("https://a:6443"))).is_empty());
}

fn planned(prior: &Value, config: &Value, private: &Private) -> (Value, Vec<String>) {
    let s = schema();
    let bytes = private.store(prior);
    let mut proposed = config.clone();
    for k in [
        "id",
        "secret_name",
        "token_secret_name",
        "server",
        "kubeconfig_sha256",
        "sync_status",
    ] {
        proposed.set(k, prior.get(k).clone());
    }
    let mut plan = Plan::new(&s, prior, proposed, config, &bytes);
    plan_remote_secret(&mut plan);
    let warnings = plan.diags.0.iter().map(|d| d.summary.clone()).collect();
    (plan.planned, warnings)
}

/// The configuration of secret "west" (target c1, remote c2) with its defaults, as planned.
fn planned_config() -> Value {
    let mut cfg = config("west", kube("c1"), kube("c2"));
    cfg.set("token_rotation", Value::Null);
    cfg.set("verify_token", Value::from(false));
    cfg.set("wait_for_sync", Value::from(true));
    cfg
}

/// The state and private state after `cfg` was applied: token `tok`, kubeconfig digest `aaa`.
fn applied(cfg: &Value, server: &str) -> (Value, Private) {
    let mut prior = cfg.clone();
    prior.set("id", Value::from("istio-system/istio-remote-secret-west"));
    prior.set("secret_name", Value::from("istio-remote-secret-west"));
    prior.set("token_secret_name", Value::from("tok"));
    prior.set("server", Value::from(server));
    prior.set("kubeconfig_sha256", Value::from("aaa"));
    prior.set("sync_status", Value::from("synced"));
    let private = Private {
        desired_sha256: Some("aaa".into()),
        ..Default::default()
    };
    (prior, private)
}

#[test]
fn plan_mints_rewrites_and_warns_as_needed() {
    let cfg = planned_config();
    // Create: server from the kubeconfig is unknown until apply.
    let (p, w) = planned(&Value::Null, &cfg, &Private::default());
    assert_eq!(
        p.get("secret_name").as_str(),
        Some("istio-remote-secret-west")
    );
    assert_eq!(
        p.get("id").as_str(),
        Some("istio-system/istio-remote-secret-west")
    );
    assert!(p.get("server").is_unknown() && p.get("token_secret_name").is_unknown());
    assert!(w.is_empty());

    let (prior, private) = applied(&cfg, "https://127.0.0.1:1234");
    // No change: nothing unknown, but the loopback warning shows.
    let (p, w) = planned(&prior, &cfg, &private);
    assert_eq!(p, prior);
    assert_eq!(w, ["The remote API server address is a loopback address"]);

    // The target secret drifted: rewrite, same token.
    let drifted = Private {
        desired_sha256: Some("bbb".into()),
        ..Default::default()
    };
    let (p, _) = planned(&prior, &cfg, &drifted);
    assert!(p.get("kubeconfig_sha256").is_unknown());
    assert_eq!(p.get("token_secret_name").as_str(), Some("tok"));

    // Rotation: new token and rewrite.
    let mut rotated = cfg.clone();
    rotated.set("token_rotation", Value::from("2"));
    let (p, _) = planned(&prior, &rotated, &private);
    assert!(p.get("token_secret_name").is_unknown() && p.get("kubeconfig_sha256").is_unknown());

    // Server override: known at plan, rewrite, no warning for a routable address.
    let mut overridden = cfg.clone();
    let mut remote = cfg.get("remote").clone();
    remote.set("server", Value::from("https://10.1.2.3:6443"));
    overridden.set("remote", remote);
    let (p, w) = planned(&prior, &overridden, &private);
    assert_eq!(p.get("server").as_str(), Some("https://10.1.2.3:6443"));
    assert!(p.get("kubeconfig_sha256").is_unknown());
    assert_eq!(p.get("token_secret_name").as_str(), Some("tok"));
    assert!(w.is_empty());

    // Token revoked (refresh cleared the name): mint again.
    let mut revoked = prior.clone();
    revoked.set("token_secret_name", Value::Null);
    let (p, _) = planned(&revoked, &cfg, &private);
    assert!(p.get("token_secret_name").is_unknown());
}

/// The same configuration with both connections given as `connection` strings.
fn with_connections(mut c: Value, target: &str, remote: &str) -> Value {
    c.set("kubernetes", Value::Null);
    c.set(kubernetes::CONNECTION, Value::from(target));
    let mut r = c.get("remote").clone();
    r.set("kubernetes", Value::Null);
    c.set("remote", r);
    c.set(REMOTE_CONNECTION, Value::from(remote));
    c
}

#[test]
fn connections_are_checked_like_blocks() {
    let c1 = r#"{"config_path":"/kc","config_context":"c1"}"#;
    let c2 = r#"{"config_path":"/kc","config_context":"c2"}"#;
    let base = config("west", kube("c1"), kube("c2"));
    assert!(error_paths(&with_connections(base.clone(), c1, c2)).is_empty());
    assert_eq!(
        error_paths(&with_connections(base.clone(), c1, c1)),
        ["remote_connection"]
    );
    // One side a block, the other a string, same cluster: still seen.
    let mut mixed = base.clone();
    let mut r = mixed.get("remote").clone();
    r.set("kubernetes", Value::Null);
    mixed.set("remote", r);
    mixed.set(REMOTE_CONNECTION, Value::from(c1));
    assert_eq!(error_paths(&mixed), ["remote_connection"]);
    assert_eq!(
        error_paths(&with_connections(base, "{", c2)),
        ["connection"]
    );
}

#[test]
fn switching_a_block_to_the_same_connection_string_mints_nothing() {
    let mut cfg = planned_config();
    let mut remote = cfg.get("remote").clone();
    remote.set("server", Value::from("https://10.1.2.3:6443"));
    cfg.set("remote", remote);
    let (prior, private) = applied(&cfg, "https://10.1.2.3:6443");
    let same = with_connections(
        cfg.clone(),
        r#"{"config_path":"/kc","config_context":"c1"}"#,
        r#"{"config_path":"/kc","config_context":"c2"}"#,
    );
    let (p, _) = planned(&prior, &same, &private);
    assert_eq!(p.get("token_secret_name").as_str(), Some("tok"));
    assert_eq!(p.get("kubeconfig_sha256").as_str(), Some("aaa"));
    // Pointed at another context: a new token there.
    let moved = with_connections(
        cfg,
        r#"{"config_path":"/kc","config_context":"c1"}"#,
        r#"{"config_path":"/kc","config_context":"c3"}"#,
    );
    let (p, _) = planned(&prior, &moved, &private);
    assert!(p.get("token_secret_name").is_unknown());
}

#[test]
fn private_state_leaves_out_what_the_state_beside_it_says() {
    let mut state = config("west", kube("c1"), kube("c2"));
    state.set("token_secret_name", Value::from("tok-1"));
    state.set("kubeconfig_sha256", Value::from("aaa"));
    let usual = Private {
        token_namespace: Some("istio-system".into()),
        token_name: Some("tok-1".into()),
        desired_sha256: Some("aaa".into()),
        ..Default::default()
    };
    // Everything mirrored: nothing stored at all, and it reads back the same.
    assert!(usual.store(&state).is_empty());
    assert_eq!(Private::load(&usual.store(&state), &state), usual);

    // What differs from the state is kept, a None included (here the state still names a
    // token the private state no longer holds, and the target drifted).
    let differs = Private {
        token_namespace: Some("other-ns".into()),
        token_name: None,
        desired_sha256: Some("bbb".into()),
        stale_tokens: vec![("istio-system".into(), "tok-0".into())],
        created_service_account: true,
        ..Default::default()
    };
    let bytes = differs.store(&state);
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("\"token_name\":null"), "{text}");
    assert_eq!(Private::load(&bytes, &state), differs);

    // Private state written before (every field spelled out) reads the same whatever the state.
    let legacy = serde_json::to_vec(&usual).unwrap();
    assert_eq!(Private::load(&legacy, &Value::Null), usual);
    // Nothing stored beside an empty state: nothing known.
    assert_eq!(Private::load(&[], &Value::Null), Private::default());
}
