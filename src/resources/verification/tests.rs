//! Unit tests: schema, validation, decoding and planning.

use super::*;
use crate::plugin::schema::lint;

fn cluster(name: &str) -> Value {
    Value::object([
        ("name", Value::from(name)),
        ("istio_namespace", Value::from("istio-system")),
        (
            "kubernetes",
            Value::object([
                ("config_path", Value::from("/kc")),
                ("config_context", Value::from(name)),
            ]),
        ),
    ])
}

fn config(names: &[&str]) -> Value {
    Value::object([
        ("namespace", Value::from("sample")),
        ("requests", Value::from(10)),
        ("keep_workloads", Value::from(false)),
        (
            "cluster",
            Value::List(names.iter().map(|n| cluster(n)).collect()),
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

fn plan_of(prior: &Value, config: &Value) -> Value {
    let s = schema();
    let mut plan = Plan::new(&s, prior, config.clone(), config, &[]);
    plan_verification(&mut plan);
    plan.planned
}

#[test]
fn schema_is_documented() {
    let s = schema();
    assert_eq!(lint(&s.block, ""), Vec::<String>::new());
    let c = s.block.nested("cluster").unwrap();
    assert_eq!(c.min_items, 1);
    assert!(c.block.nested("kubernetes").is_some());
    assert!(
        !s.block.attributes.iter().any(|a| a.force_new),
        "every change runs in place"
    );
}

#[test]
fn bad_input_names_the_attribute() {
    assert!(error_paths(&config(&["east", "west"])).is_empty());
    let mut dup = config(&["east", "east"]);
    assert_eq!(error_paths(&dup), vec!["cluster[1].name"]);
    dup.set("namespace", Value::from("kube-system"));
    assert!(error_paths(&dup).contains(&"namespace".to_string()));
    let mut bad = config(&["East"]);
    bad.set("requests", Value::from(0));
    bad.set("hub", Value::from("my hub"));
    let mut paths = error_paths(&bad);
    paths.sort();
    assert_eq!(paths, vec!["cluster[0].name", "hub", "requests"]);
}

#[test]
fn config_decodes_once_with_defaults() {
    let mut v = config(&["east", "west"]);
    v.set("hub", Value::from("mirror.local/istio"));
    let c = Config::decode(&v).unwrap_or_else(|_| panic!("decodes"));
    assert_eq!(c.clusters.len(), 2);
    assert_eq!(c.clusters[1].name, "west");
    assert_eq!(c.requests, 10);
    assert_eq!(
        c.images.helloworld,
        "mirror.local/istio/examples-helloworld-v1:1.0"
    );
    assert_eq!(c.instance(), "verification.sample");
}

#[test]
fn a_change_reruns_the_check_and_timeouts_alone_do_not() {
    let cfg = config(&["east", "west"]);
    let created = plan_of(&Value::Null, &cfg);
    assert!(created.get("reachability").is_unknown());
    assert_eq!(created.get("id").as_str(), Some("sample/east,west"));

    let mut prior = created.clone();
    prior.set(
        "reachability",
        Value::Map(BTreeMap::from([(
            "east".to_string(),
            Value::List(vec![Value::from("east"), Value::from("west")]),
        )])),
    );
    let same = plan_of(&prior, &cfg);
    assert_eq!(same.get("reachability"), prior.get("reachability"));

    let mut timeouts = cfg.clone();
    timeouts.set("timeouts", Value::object([("create", Value::from("9m"))]));
    let t = plan_of(&prior, &timeouts);
    assert!(!t.get("reachability").is_unknown());

    let mut triggered = cfg.clone();
    triggered.set(
        "triggers",
        Value::Map(BTreeMap::from([("secrets".to_string(), Value::from("v2"))])),
    );
    assert!(plan_of(&prior, &triggered).get("reachability").is_unknown());
    assert!(plan_of(&prior, &config(&["east"]))
        .get("reachability")
        .is_unknown());
}

#[test]
fn state_records_what_each_client_saw() {
    let seen = BTreeMap::from([(
        "east".to_string(),
        BTreeSet::from(["west".to_string(), "east".to_string()]),
    )]);
    let s = state_with(&config(&["east"]), &seen);
    assert_eq!(
        s.get("reachability").get("east"),
        &Value::List(vec![Value::from("east"), Value::from("west")])
    );
}
