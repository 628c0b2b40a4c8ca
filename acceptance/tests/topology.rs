//! The examples as users run them: every seed topology applies from zero on kube-sim clusters,
//! re-plans empty and destroys leaving nothing; the `topology` module grows and shrinks by
//! editing its map.

use mesh_acceptance::sim::Clusters;
use mesh_acceptance::{enabled, Workspace};

/// Applies `example` against kube-sim clusters `cluster1` and `cluster2`, then checks the
/// re-plan is empty and destroy leaves nothing of ours.
fn seed_example(example: &str) {
    let ws = Workspace::new(example);
    let sim = Clusters::start(&["cluster1", "cluster2"], &ws.dir);
    ws.copy_example(example);
    ws.write_file(
        "terraform.tfvars",
        &format!(
            "kubeconfig_path = \"{}\"\nkey_algorithm   = \"ECDSA\"\n",
            sim.kubeconfig.display()
        ),
    );
    let applied = ws.apply();
    assert!(applied.contains("Apply complete!"), "{applied}");
    ws.assert_empty_plan();
    let versions = ws.output("control_plane_versions");
    assert_eq!(versions["cluster1"], "1.30.3", "{versions}");
    assert_eq!(versions["cluster2"], "1.30.3", "{versions}");
    // cluster1 always reads cluster2's API server.
    assert!(
        sim.find(
            "cluster1",
            "Secret",
            "istio-system",
            "istio-remote-secret-cluster2"
        )
        .is_some(),
        "no remote secret for cluster2 in cluster1"
    );
    ws.destroy();
    for c in ["cluster1", "cluster2"] {
        assert_eq!(
            sim.ours(c),
            Vec::<String>::new(),
            "{example}: {c} not clean"
        );
        assert!(
            sim.find(c, "Namespace", "", "istio-system").is_none(),
            "{example}: {c} namespace left"
        );
    }
}

#[test]
fn multi_primary() {
    if enabled("multi_primary") {
        seed_example("multi-primary");
    }
}

#[test]
fn multi_primary_multi_network() {
    if enabled("multi_primary_multi_network") {
        seed_example("multi-primary-multi-network");
    }
}

#[test]
fn primary_remote() {
    if enabled("primary_remote") {
        seed_example("primary-remote");
    }
}

#[test]
fn primary_remote_multi_network() {
    if enabled("primary_remote_multi_network") {
        seed_example("primary-remote-multi-network");
    }
}

fn tfvars(kubeconfig: &str, clusters: &[(&str, &str)]) -> String {
    let entries: String = clusters
        .iter()
        .map(|(name, net)| {
            format!("  \"{name}\" = {{ context = \"{name}\", network = \"{net}\" }}\n")
        })
        .collect();
    format!("kubeconfig_path = \"{kubeconfig}\"\nkey_algorithm   = \"ECDSA\"\nclusters = {{\n{entries}}}\n")
}

fn remote_secrets_in(sim: &Clusters, cluster: &str) -> Vec<String> {
    let mut names: Vec<String> = sim
        .dump(cluster)
        .iter()
        .filter(|o| {
            o["kind"] == "Secret" && o["metadata"]["labels"]["istio/multiCluster"] == "true"
        })
        .map(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn topology_grows_and_shrinks_by_editing_the_map() {
    if !enabled("topology_grows_and_shrinks_by_editing_the_map") {
        return;
    }
    let ws = Workspace::new("topology");
    let names = [
        "cluster-east-1",
        "cluster-east-2",
        "cluster-west-1",
        "cluster-west-2",
    ];
    let sim = Clusters::start(&names, &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.copy_example("topology");
    let three = [
        ("cluster-east-1", "network-east"),
        ("cluster-east-2", "network-east"),
        ("cluster-west-1", "network-west"),
    ];
    ws.write_file("terraform.tfvars", &tfvars(&kc, &three));

    // Planning the whole mesh contacts no cluster.
    for n in names {
        sim.reset_requests(n);
    }
    let plan = ws.ok(&["plan", "-no-color"]);
    // 1 root CA + 3 clusters + 3 gateways + 3·2 remote secrets.
    assert!(
        plan.contains("Plan: 13 to add, 0 to change, 0 to destroy"),
        "{plan}"
    );
    for n in names {
        assert_eq!(sim.requests(n), 0, "plan sent requests to {n}");
    }
    ws.apply();
    ws.assert_empty_plan();
    assert_eq!(
        remote_secrets_in(&sim, "cluster-east-1"),
        [
            "istio-remote-secret-cluster-east-2",
            "istio-remote-secret-cluster-west-1"
        ]
    );
    let built = ws.output("clusters");
    assert_eq!(built["cluster-west-1"]["network"], "network-west");
    assert!(
        built["cluster-east-2"]["gateway_address"].is_string(),
        "{built}"
    );

    // A fourth cluster: exactly its own cluster and gateway, and 2·3 secrets.
    let four = [
        three[0],
        three[1],
        three[2],
        ("cluster-west-2", "network-west"),
    ];
    ws.write_file("terraform.tfvars", &tfvars(&kc, &four));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 8 to add, 0 to change, 0 to destroy"),
        "{plan}"
    );
    ws.apply();
    ws.assert_empty_plan();
    assert_eq!(remote_secrets_in(&sim, "cluster-west-2").len(), 3);
    assert!(remote_secrets_in(&sim, "cluster-east-1")
        .contains(&"istio-remote-secret-cluster-west-2".to_string()));

    // Removing a cluster deletes its secrets everywhere and uninstalls it.
    let without_east2 = [four[0], four[2], four[3]];
    ws.write_file("terraform.tfvars", &tfvars(&kc, &without_east2));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 0 to change, 8 to destroy"),
        "{plan}"
    );
    ws.apply();
    ws.assert_empty_plan();
    for n in ["cluster-east-1", "cluster-west-1", "cluster-west-2"] {
        assert!(
            !remote_secrets_in(&sim, n).contains(&"istio-remote-secret-cluster-east-2".to_string()),
            "{n}"
        );
    }
    assert_eq!(sim.ours("cluster-east-2"), Vec::<String>::new());
    assert!(sim
        .find("cluster-east-2", "Deployment", "istio-system", "istiod")
        .is_none());

    ws.destroy();
    for n in names {
        assert_eq!(sim.ours(n), Vec::<String>::new(), "{n} not clean");
    }
}
