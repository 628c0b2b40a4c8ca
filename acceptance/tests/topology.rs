//! The examples as users run them: every seed topology applies from zero on kube-sim clusters,
//! re-plans empty and destroys leaving nothing; the `topology` module grows and shrinks by
//! editing its map.

use mesh_acceptance::sim::{secret_data, Clusters};
use mesh_acceptance::{enabled, provider_dir, terraform_binary, Workspace};

/// What a seed example builds beyond both clusters' control planes and the remote secrets.
struct Seed {
    example: &'static str,
    /// Clusters with an east-west gateway exposing services to other networks.
    cross_network: &'static [&'static str],
    /// cluster2 is a remote of cluster1, which exposes istiod on its gateway.
    primary_remote: bool,
}

/// The label istioctl (and kube-sim's installer) puts on everything an install creates.
const OWNING_RESOURCE: &str = "install.operator.istio.io/owning-resource";

/// Where the gateway's load balancer is reached: its first ingress IP or hostname.
fn lb_address(svc: &serde_json::Value) -> Option<String> {
    let ingress = &svc["status"]["loadBalancer"]["ingress"][0];
    ingress["ip"]
        .as_str()
        .or_else(|| ingress["hostname"].as_str())
        .map(str::to_string)
}

/// The address the remote's `istiod` Service leads to, as istioctl's remote profile writes
/// it from `values.global.remotePilotAddress`: an ExternalName for a hostname, a selector-less
/// Service with an EndpointSlice for an IP.
fn remote_pilot_address(sim: &Clusters, cluster: &str) -> Option<String> {
    let svc = sim.find(cluster, "Service", "istio-system", "istiod")?;
    if let Some(name) = svc["spec"]["externalName"].as_str() {
        return Some(name.to_string());
    }
    let slice = sim.find(cluster, "EndpointSlice", "istio-system", "istiod-remote")?;
    slice["endpoints"][0]["addresses"][0]
        .as_str()
        .map(str::to_string)
}

/// The `server` of the kubeconfig held in `cluster`'s remote secret for `remote` (the
/// kubeconfig holds a token: only the server is extracted, nothing is printed).
fn secret_server(sim: &Clusters, cluster: &str, remote: &str) -> Option<String> {
    let secret = sim.find(
        cluster,
        "Secret",
        "istio-system",
        &format!("istio-remote-secret-{remote}"),
    )?;
    let kubeconfig = secret_data(&secret, remote)?;
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_matches('"').to_string())
}

/// Objects of `cluster` carrying the installer's owner label, CRDs aside (they stay, as
/// `istioctl uninstall` leaves them: other revisions may use them).
fn installed(sim: &Clusters, cluster: &str) -> Vec<String> {
    sim.dump(cluster)
        .iter()
        .filter(|o| {
            !o["metadata"]["labels"][OWNING_RESOURCE].is_null()
                && o["kind"] != "CustomResourceDefinition"
        })
        .map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"]))
        .collect()
}

/// Applies the seed example against kube-sim clusters `cluster1` and `cluster2`, checks what
/// it built, that the re-plan is empty and that destroy leaves nothing of ours nor of the
/// installer's.
fn seed_example(seed: Seed) {
    let example = seed.example;
    let ws = Workspace::new(example);
    let sim = Clusters::start(&["cluster1", "cluster2"], &ws.dir);
    ws.copy_example(example);
    // On kind the remote secrets need the API server's in-network address; here it only has to
    // reach the secret, so a kind-style address proves `remote_servers` is wired.
    let cluster2_server = "https://cluster2-control-plane:6443";
    // Inside the simulated clusters that address reaches cluster2, so cluster1's istiod syncs.
    sim.add_server_alias("cluster2", cluster2_server);
    ws.write_file(
        "terraform.tfvars",
        &format!(
            "kubeconfig_path = \"{}\"\nkey_algorithm   = \"ECDSA\"\nremote_servers  = {{ cluster2 = \"{cluster2_server}\" }}\n",
            sim.kubeconfig.display()
        ),
    );
    let applied = ws.apply();
    assert!(applied.contains("Apply complete!"), "{applied}");
    ws.assert_empty_plan();
    let versions = ws.output("control_plane_versions");
    assert_eq!(versions["cluster1"], "1.30.3", "{versions}");
    assert_eq!(versions["cluster2"], "1.30.3", "{versions}");
    // cluster1 always reads cluster2's API server, at the address given.
    assert_eq!(
        secret_server(&sim, "cluster1", "cluster2").as_deref(),
        Some(cluster2_server),
        "{example}: cluster1's remote secret for cluster2"
    );
    for c in ["cluster1", "cluster2"] {
        let gateway = seed.cross_network.contains(&c) || (seed.primary_remote && c == "cluster1");
        for kind in ["Deployment", "Service"] {
            assert_eq!(
                sim.find(c, kind, "istio-system", "istio-eastwestgateway")
                    .is_some(),
                gateway,
                "{example}: {kind} istio-eastwestgateway in {c}"
            );
        }
        let cross = sim.find(c, "Gateway", "istio-system", "cross-network-gateway");
        assert_eq!(
            cross.is_some(),
            seed.cross_network.contains(&c),
            "{example}: cross-network Gateway in {c}"
        );
        if let Some(gw) = cross {
            assert_eq!(gw["apiVersion"], "networking.istio.io/v1", "{gw}");
            assert_eq!(gw["spec"]["servers"][0]["port"]["number"], 15443, "{gw}");
        }
    }
    if seed.primary_remote {
        assert!(
            sim.find("cluster1", "Gateway", "istio-system", "istiod-gateway")
                .is_some(),
            "{example}: istiod not exposed on cluster1's gateway"
        );
        let svc = sim
            .find(
                "cluster1",
                "Service",
                "istio-system",
                "istio-eastwestgateway",
            )
            .expect("primary gateway Service");
        let address = lb_address(&svc).expect("primary gateway has a load balancer address");
        assert_eq!(
            remote_pilot_address(&sim, "cluster2"),
            Some(address),
            "{example}: cluster2's istiod should lead to cluster1's gateway"
        );
        assert!(
            sim.find("cluster2", "Deployment", "istio-system", "istiod")
                .is_none(),
            "{example}: a remote runs no istiod"
        );
    }
    for c in ["cluster1", "cluster2"] {
        assert!(
            !installed(&sim, c).is_empty(),
            "{example}: the installer labelled nothing in {c}"
        );
    }
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
        assert_eq!(
            installed(&sim, c),
            Vec::<String>::new(),
            "{example}: installer objects left in {c}"
        );
    }
}

#[test]
fn multi_primary() {
    if enabled("multi_primary") {
        seed_example(Seed {
            example: "multi-primary",
            cross_network: &[],
            primary_remote: false,
        });
    }
}

#[test]
fn multi_primary_multi_network() {
    if enabled("multi_primary_multi_network") {
        seed_example(Seed {
            example: "multi-primary-multi-network",
            cross_network: &["cluster1", "cluster2"],
            primary_remote: false,
        });
    }
}

#[test]
fn primary_remote() {
    if enabled("primary_remote") {
        seed_example(Seed {
            example: "primary-remote",
            cross_network: &[],
            primary_remote: true,
        });
    }
}

#[test]
fn primary_remote_multi_network() {
    if enabled("primary_remote_multi_network") {
        seed_example(Seed {
            example: "primary-remote-multi-network",
            cross_network: &["cluster1", "cluster2"],
            primary_remote: true,
        });
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
    // Every istiod has synced both other clusters and routes to the other network's gateway.
    for (name, others, other_network) in [
        (
            "cluster-east-1",
            ["cluster-east-2", "cluster-west-1"],
            "network-west",
        ),
        (
            "cluster-east-2",
            ["cluster-east-1", "cluster-west-1"],
            "network-west",
        ),
        (
            "cluster-west-1",
            ["cluster-east-1", "cluster-east-2"],
            "network-east",
        ),
    ] {
        let c = &built[name];
        assert_eq!(c["healthy"], true, "{name}: {c}");
        for o in others {
            assert_eq!(c["remote_sync"][o], "synced", "{name}: {c}");
        }
        let gateways = c["istiod_gateways"].to_string();
        assert!(
            gateways.contains(&format!("{other_network}=")),
            "{name}: {c}"
        );
    }
    // On clients with check blocks (>= 1.5), a check over each cluster's mesh_status passes.
    if ws.terraform_version() >= (1, 5, 0) {
        let checks: String = three
            .iter()
            .map(|(name, _)| {
                let id = name.replace('-', "_");
                format!(
                    r#"
check "{id}" {{
  data "mesh_status" "{id}" {{
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{name}"
    }}
  }}
  assert {{
    condition     = data.mesh_status.{id}.healthy && length(data.mesh_status.{id}.remote_clusters) == 2
    error_message = "{name}: ${{join(" | ", data.mesh_status.{id}.problems)}}"
  }}
}}
"#
                )
            })
            .collect();
        let path = ws.write_file("checks.tf", &checks);
        let plan = ws.ok(&["plan", "-no-color"]);
        assert!(!plan.contains("Check block assertion failed"), "{plan}");
        assert!(
            plan.contains("Plan: 0 to add, 0 to change, 0 to destroy"),
            "{plan}"
        );
        // Checks plan a read each time (exit code 2): out of the empty-plan checks below.
        std::fs::remove_file(path).expect("remove checks.tf");
    }

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

/// The `topology` module with every cluster's connection unknown at plan time, as when the
/// clusters are created in the same apply: a stand-in resource (`mesh_root_ca.gate`, only
/// this provider is available on Terraform 1.0.3) gates each value. cluster-east-1 comes by
/// kubeconfig context, cluster-east-2 by host and an exec credential plugin (as EKS with
/// `aws eks get-token`), cluster-west-1 by host and client certificate, with a `server`
/// override for the secrets that read it. The credentials are read from the kube-sim
/// kubeconfig by Terraform and by the plugin, so they never appear in the test's files or
/// output.
#[test]
fn topology_with_connections_unknown_at_plan_time() {
    if !enabled("topology_with_connections_unknown_at_plan_time") {
        return;
    }
    let ws = Workspace::new("topology-unknown");
    let names = ["cluster-east-1", "cluster-east-2", "cluster-west-1"];
    let sim = Clusters::start(&names, &ws.dir);
    ws.copy_example("topology");
    // The plugin prints the kubeconfig user's token as an ExecCredential.
    let plugin = ws.write_file(
        "get-token.sh",
        r#"token=$(kubectl config view --raw --kubeconfig "$KC" -o "jsonpath={.users[?(@.name==\"$KC_USER\")].user.token}")
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s"}}\n' "$token"
"#,
    );
    let west_server = "https://cluster-west-1-control-plane:6443";
    sim.add_server_alias("cluster-west-1", west_server);
    ws.config(&format!(
        r#"
provider "mesh" {{}}

# Stands in for the resources that create the clusters: known only after apply.
resource "mesh_root_ca" "gate" {{
  key_algorithm = "ECDSA"
}}

locals {{
  known_later = mesh_root_ca.gate.id != ""
  kubeconfig  = yamldecode(file("{kc}"))
  servers     = {{ for c in local.kubeconfig.clusters : c.name => c.cluster }}
  users       = {{ for u in local.kubeconfig.users : u.name => u.user }}
}}

module "mesh" {{
  source = "./modules/mesh"

  mesh_id                    = "mesh1"
  root_ca_key_algorithm      = "ECDSA"
  intermediate_key_algorithm = "ECDSA"
  clusters = {{
    "cluster-east-1" = {{
      network         = "network-east"
      kubeconfig_path = "{kc}"
      context         = local.known_later ? "cluster-east-1" : ""
    }}
    "cluster-east-2" = {{
      network = "network-east"
      connection = {{
        host                   = local.known_later ? local.servers["cluster-east-2"].server : ""
        cluster_ca_certificate = base64decode(local.servers["cluster-east-2"]["certificate-authority-data"])
        exec = {{
          api_version = "client.authentication.k8s.io/v1"
          command     = "sh"
          args        = [local.known_later ? "{plugin}" : ""]
          env         = {{ KC = "{kc}", KC_USER = "cluster-east-2" }}
        }}
      }}
    }}
    "cluster-west-1" = {{
      network = "network-west"
      server  = local.known_later ? "{west_server}" : ""
      connection = {{
        host                   = local.known_later ? local.servers["cluster-west-1"].server : ""
        cluster_ca_certificate = base64decode(local.servers["cluster-west-1"]["certificate-authority-data"])
        client_certificate     = base64decode(local.users["cluster-west-1-cert"]["client-certificate-data"])
        client_key             = local.known_later ? base64decode(local.users["cluster-west-1-cert"]["client-key-data"]) : ""
      }}
    }}
  }}
}}

output "clusters" {{
  value = module.mesh.clusters
}}
"#,
        kc = sim.kubeconfig.display(),
        plugin = plugin.display(),
    ));
    ws.ok(&["get", "-no-color"]);

    for n in names {
        sim.reset_requests(n);
    }
    let plan = ws.ok(&["plan", "-no-color"]);
    // The gate + 1 root CA + 3 clusters + 3 gateways + 3·2 remote secrets.
    assert!(
        plan.contains("Plan: 14 to add, 0 to change, 0 to destroy"),
        "{plan}"
    );
    for n in names {
        assert_eq!(
            sim.requests(n),
            0,
            "plan sent requests to {n}: {}",
            sim.request_breakdown(n)
        );
    }

    ws.apply();
    ws.assert_empty_plan();
    let built = ws.output("clusters");
    for n in names {
        assert_eq!(built[n]["control_plane_version"], "1.30.3", "{built}");
        assert!(built[n]["gateway_address"].is_string(), "{built}");
        assert_eq!(built[n]["remote_secrets"].as_array().map(Vec::len), Some(2));
    }
    // Each cluster was reached through its own connection: its istiod and gateway are there.
    for n in names {
        assert!(sim
            .find(n, "Deployment", "istio-system", "istiod")
            .is_some());
        assert!(sim
            .find(n, "Deployment", "istio-system", "istio-eastwestgateway")
            .is_some());
    }
    // The secrets reading cluster-west-1 use its `server`; the others their connection's host.
    for target in ["cluster-east-1", "cluster-east-2"] {
        assert_eq!(
            secret_server(&sim, target, "cluster-west-1").as_deref(),
            Some(west_server),
            "{target}'s secret for cluster-west-1"
        );
    }
    assert_eq!(
        secret_server(&sim, "cluster-west-1", "cluster-east-2"),
        Some(sim.url("cluster-east-2")),
        "cluster-west-1's secret for cluster-east-2"
    );

    ws.destroy();
    for n in names {
        assert_eq!(sim.ours(n), Vec::<String>::new(), "{n} not clean");
        assert_eq!(installed(&sim, n), Vec::<String>::new(), "{n}");
    }
}

/// Runs `scripts/demo.sh` (what `make demo` runs) with the test's Terraform and provider,
/// in `dir`, with `env` added; returns its output, panicking unless it succeeds.
fn run_demo(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .env("TF_ACC_TERRAFORM_PATH", terraform_binary())
        .env("MESH_PROVIDER_DIR", provider_dir())
        .env("DEMO_DIR", dir)
        .env_remove("CONTEXTS")
        .env_remove("KUBECONFIG")
        .env_remove("TF_CLI_CONFIG_FILE")
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run scripts/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The demo's table row for `cluster` (cluster, network, istiod, gateway, secrets...), split on
/// whitespace.
fn demo_row<'a>(out: &'a str, cluster: &str) -> Vec<&'a str> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|w| w.first() == Some(&cluster) && w.len() >= 5)
        .unwrap_or_else(|| panic!("no table row for {cluster}:\n{out}"))
}

/// Checks the table row: network, Istio version, a gateway address and the other clusters'
/// remote secrets, each with the sync status its istiod reports.
fn assert_demo_row(out: &str, cluster: &str, network: &str, others: &[&str]) {
    let row = demo_row(out, cluster);
    assert_eq!(row.get(1), Some(&network), "{out}");
    assert_eq!(row.get(2), Some(&"1.30.3"), "{out}");
    assert!(
        row.get(3)
            .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok()),
        "gateway address of {cluster}:\n{out}"
    );
    let synced: Vec<String> = others.iter().map(|o| format!("{o} synced")).collect();
    assert_eq!(row[4..].join(" "), synced.join(", "), "{out}");
}

/// `make demo` end to end, as a fresh clone runs it: it starts its own kube-sim, applies the
/// seed's three clusters with the traffic check, prints one row per cluster and the
/// reachability matrix, re-plans empty, destroys, finds nothing
/// left and stops kube-sim; then with CONTEXTS against clusters started here. Its output is
/// short progress lines, no Terraform log.
#[test]
fn make_demo_runs_end_to_end() {
    if !enabled("make_demo_runs_end_to_end") {
        return;
    }
    let ws = Workspace::new("demo");
    let out = run_demo(&ws.dir.join("demo"), &[]);
    assert!(
        !out.contains('\x1b'),
        "colour codes without a terminal:\n{out}"
    );
    assert!(out.lines().count() <= 30, "too long:\n{out}");
    assert!(
        out.lines().all(|l| l.chars().count() <= 100),
        "long lines:\n{out}"
    );
    assert!(out.contains("Resources: 14 added"), "{out}");
    assert_demo_row(
        &out,
        "cluster-east-1",
        "network-east",
        &["cluster-east-2", "cluster-west-1"],
    );
    assert_demo_row(
        &out,
        "cluster-east-2",
        "network-east",
        &["cluster-east-1", "cluster-west-1"],
    );
    assert_demo_row(
        &out,
        "cluster-west-1",
        "network-west",
        &["cluster-east-1", "cluster-east-2"],
    );
    assert!(
        out.contains("every istiod has synced every remote cluster"),
        "{out}"
    );
    // The traffic check: every cluster's client heard all three HelloWorlds.
    for c in ["cluster-east-1", "cluster-east-2", "cluster-west-1"] {
        let row = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|w| w.first() == Some(&c) && w.len() == 4)
            .unwrap_or_else(|| panic!("no reachability row for {c}:\n{out}"));
        assert_eq!(
            row[1..],
            ["cluster-east-1", "cluster-east-2", "cluster-west-1"],
            "{out}"
        );
    }
    assert!(
        out.contains("every client reached every cluster (3 x 3)"),
        "{out}"
    );
    assert!(out.contains("no changes"), "{out}");
    assert!(out.contains("Resources: 14 destroyed"), "{out}");
    assert!(
        out.contains("objects of ours left: cluster-east-1 0, cluster-east-2 0, cluster-west-1 0"),
        "{out}"
    );
    // kube-sim was stopped: its API servers refuse connections.
    let info: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(ws.dir.join("demo/sim.json")).expect("demo's sim.json"),
    )
    .expect("sim.json is JSON");
    for (name, c) in info["clusters"].as_object().expect("clusters") {
        let url = c["url"].as_str().expect("url");
        let addr = url.trim_start_matches("https://");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "{name} still serving at {url}"
        );
    }

    // Against kubeconfig contexts: clusters the demo did not start.
    let names = ["a", "b", "c"];
    let sim = Clusters::start(&names, &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    let out = run_demo(
        &ws.dir.join("demo-contexts"),
        &[("CONTEXTS", "a=net1 b=net1 c=net2"), ("KUBECONFIG", &kc)],
    );
    assert_demo_row(&out, "a", "net1", &["b", "c"]);
    assert_demo_row(&out, "c", "net2", &["a", "b"]);
    assert!(
        out.contains("every client reached every cluster (3 x 3)"),
        "{out}"
    );
    assert!(out.contains("Resources: 14 destroyed"), "{out}");
    for n in names {
        assert!(
            sim.requests(n) > 0,
            "the demo never reached {n}: {}",
            sim.request_breakdown(n)
        );
        assert_eq!(sim.ours(n), Vec::<String>::new(), "{n} not clean");
    }
}
