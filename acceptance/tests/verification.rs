//! Verification, part 2, with real Terraform: `mesh_verification` over the seed's three
//! clusters on two networks. The mesh (workspace `mesh`) and the check (workspace `check`)
//! are separate configurations over the same kube-sim clusters, so each negative case breaks
//! one thing in the mesh with an ordinary apply, then runs the check, which must fail naming
//! the pairs and the cause; the mesh is then repaired and the check passes again.
//!
//! kube-sim decides every request from its data-plane model (Istio's rules: the client's
//! istiod must have synced the server's cluster, another network needs that network's
//! east-west gateway, and mutual TLS needs each side's CA to chain to a root the other
//! trusts), not from anything the provider says.

use mesh_acceptance::hcl;
use mesh_acceptance::sim::Clusters;
use mesh_acceptance::{enabled, Workspace};
use serde_json::json;

const EAST1: &str = "cluster-east-1";
const EAST2: &str = "cluster-east-2";
const WEST1: &str = "cluster-west-1";
const ALL: [&str; 3] = [EAST1, EAST2, WEST1];

fn network(name: &str) -> &'static str {
    if name == WEST1 {
        "network-west"
    } else {
        "network-east"
    }
}

/// What the mesh workspace builds: every cluster with a control plane and a gateway, every
/// remote secret but `skip_secret` ("target/remote"), west's gateway only with
/// `west_gateway`. Intermediates come from root `signer` ("root" or "other"), west's from
/// `west_root` when set; `extra_root` names a root added to every trust bundle (the staged
/// rotation's `additional_roots_pem`).
fn mesh(kc: &str) -> String {
    let mut out = hcl::root_ca();
    out.push_str("resource \"mesh_root_ca\" \"other\" {\n  key_algorithm = \"ECDSA\"\n}\n");
    out.push_str(
        r#"
variable "skip_secret" {
  type    = string
  default = ""
}
variable "west_gateway" {
  type    = bool
  default = true
}
variable "signer" {
  type    = string
  default = "root"
}
variable "west_root" {
  type    = string
  default = ""
}
variable "extra_root" {
  type    = string
  default = ""
}
locals {
  roots = { root = mesh_root_ca.root, other = mesh_root_ca.other }
  extra = var.extra_root == "" ? [] : [local.roots[var.extra_root].cert_pem]
}
"#,
    );
    for name in ALL {
        // West may be forced onto another root in one step (allow_trust_break); istiod then
        // refuses to load it until restarted, which the apply waits for only briefly.
        let (signer, extra) = if name == WEST1 {
            (
                "local.roots[var.west_root == \"\" ? var.signer : var.west_root]",
                "  allow_trust_break = true\n  timeouts {\n    update = \"10s\"\n  }\n",
            )
        } else {
            ("local.roots[var.signer]", "")
        };
        let cluster = hcl::mesh_cluster(
            name,
            network(name),
            kc,
            &format!("  control_plane {{\n    version = \"1.30.3\"\n  }}\n  additional_roots_pem = local.extra\n{extra}"),
        )
        .replace("mesh_root_ca.root.cert_pem", &format!("{signer}.cert_pem"))
        .replace(
            "mesh_root_ca.root.private_key_pem",
            &format!("{signer}.private_key_pem"),
        );
        out.push_str(&cluster);
        let count = if name == WEST1 {
            "count = var.west_gateway ? 1 : 0"
        } else {
            "count = 1"
        };
        let id = name.replace('-', "_");
        out.push_str(&format!(
            r#"
resource "mesh_eastwest_gateway" "{id}" {{
  {count}
  namespace = mesh_cluster.{name}.namespace
  network   = mesh_cluster.{name}.network
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{name}"
  }}
}}
"#
        ));
    }
    for target in ALL {
        for remote in ALL.iter().filter(|r| **r != target) {
            let id = format!("{target}_{remote}").replace('-', "_");
            out.push_str(&format!(
                r#"
resource "mesh_remote_secret" "{id}" {{
  count     = var.skip_secret == "{target}/{remote}" ? 0 : 1
  namespace = mesh_cluster.{target}.namespace
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{target}"
  }}
  remote {{
    cluster_name = mesh_cluster.{remote}.cluster_name
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{remote}"
    }}
  }}
}}
"#
            ));
        }
    }
    out
}

/// The check over the three clusters, failing fast when it fails.
fn check(kc: &str) -> String {
    let clusters: String = ALL
        .iter()
        .map(|name| {
            format!(
                "  cluster {{\n    name = \"{name}\"\n    kubernetes {{\n      config_path    = \"{kc}\"\n      config_context = \"{name}\"\n    }}\n  }}\n"
            )
        })
        .collect();
    format!(
        r#"
variable "run" {{
  type    = string
  default = "1"
}}
resource "mesh_verification" "mesh" {{
  triggers = {{ run = var.run }}
{clusters}
  timeouts {{
    create = "12s"
    update = "12s"
  }}
}}
output "reachability" {{
  value = mesh_verification.mesh.reachability
}}
"#
    )
}

/// Terraform wraps diagnostics to the terminal width: one line, single spaces, to match.
fn unwrapped(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn failed_check(ws: &Workspace, run: &str) -> String {
    let out = ws.run(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        &format!("run={run}"),
    ]);
    let text = unwrapped(&format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(
        !out.status.success(),
        "the check should have failed: {text}"
    );
    text
}

fn mesh_apply(ws: &Workspace, vars: &[&str]) {
    let mut args = vec!["apply", "-auto-approve", "-no-color"];
    for v in vars {
        args.push("-var");
        args.push(v);
    }
    ws.ok(&args);
}

/// Gives west the intermediate of `root` in one step, as a throw-away mesh may: istiod will
/// not load a bundle that is neither a superset nor a subset of its own (the apply says so),
/// so it is restarted, as the error advises, and then the apply goes through.
fn swap_west_root(sim: &Clusters, ws: &Workspace, root: &str) {
    let var = format!("west_root={root}");
    let out = ws.run(&["apply", "-auto-approve", "-no-color", "-var", &var]);
    let text = unwrapped(&String::from_utf8_lossy(&[out.stdout, out.stderr].concat()));
    assert!(
        text.contains("has not loaded the new trust bundle"),
        "{text}"
    );
    sim.kubectl(
        WEST1,
        &[
            "-n",
            "istio-system",
            "rollout",
            "restart",
            "deployment/istiod",
        ],
    );
    mesh_apply(ws, &[&var]);
}

/// The pairs the error names as failing, "client → server".
fn failing_pairs(text: &str) -> Vec<String> {
    let mut pairs: Vec<String> = text
        .split("- ")
        .skip(1)
        .filter_map(|chunk| {
            let head = chunk.split(':').next()?;
            head.contains(" → ").then(|| head.trim().to_string())
        })
        .collect();
    pairs.sort();
    pairs.dedup();
    pairs
}

/// The check's namespace is deleted (the namespace controller then empties it).
fn sample_namespace_gone(sim: &Clusters) {
    for c in ALL {
        sim.wait_until(
            c,
            "the check's namespace to be gone",
            std::time::Duration::from_secs(10),
            |objects| {
                !objects.iter().any(|o| {
                    o["kind"] == "Namespace" && o["metadata"]["name"] == "sample"
                        || o["metadata"]["namespace"] == "sample"
                })
            },
        );
    }
}

/// One failing case per cause, each repaired afterwards: a missing remote secret, the west
/// network's gateway removed, west given another root.
fn break_and_repair(sim: &Clusters, mesh_ws: &Workspace, check_ws: &Workspace) {
    // 1. East-1's istiod does not read west-1: only that pair fails, for that reason.
    mesh_apply(mesh_ws, &[&format!("skip_secret={EAST1}/{WEST1}")]);
    let text = failed_check(check_ws, "2");
    assert_eq!(
        failing_pairs(&text),
        [format!("{EAST1} → {WEST1}")],
        "{text}"
    );
    assert!(
        text.contains(&format!("there is no remote secret for {WEST1} in {EAST1}")),
        "{text}"
    );
    assert!(text.contains("(1 of 9 pairs failed)"), "{text}");
    sample_namespace_gone(sim);
    mesh_apply(mesh_ws, &[]);

    // 2. West's network has no east-west gateway: the east clients cannot reach west-1;
    //    west-1 still reaches the east network through its gateways.
    mesh_apply(mesh_ws, &["west_gateway=false"]);
    let text = failed_check(check_ws, "3");
    assert_eq!(
        failing_pairs(&text),
        [format!("{EAST1} → {WEST1}"), format!("{EAST2} → {WEST1}")],
        "{text}"
    );
    assert!(
        text.contains("no cluster of network network-west has one"),
        "{text}"
    );
    mesh_apply(mesh_ws, &[]);

    // 3. West is given another root: mutual TLS fails both ways between the networks.
    swap_west_root(sim, mesh_ws, "other");
    let text = failed_check(check_ws, "4");
    assert_eq!(
        failing_pairs(&text),
        [
            format!("{EAST1} → {WEST1}"),
            format!("{EAST2} → {WEST1}"),
            format!("{WEST1} → {EAST1}"),
            format!("{WEST1} → {EAST2}"),
        ],
        "{text}"
    );
    assert!(
        text.contains(&format!("mutual TLS fails between {EAST1} and {WEST1}")),
        "{text}"
    );
    assert!(!text.contains("no remote secret"), "{text}");
    swap_west_root(sim, mesh_ws, "root");
}

/// The seed's three clusters with the mesh applied, and the check's workspace configured
/// (not applied). Each test gets its own, so the two run side by side.
struct Scene {
    sim: Clusters,
    kc: String,
    mesh_ws: Workspace,
    check_ws: Workspace,
    // kube-sim's files: bind it (not `..`), or it is removed at once.
    _sim_dir: Workspace,
}

fn scene(name: &str) -> Scene {
    let sim_dir = Workspace::new(&format!("{name}-sim"));
    let sim = Clusters::start(&ALL, &sim_dir.dir);
    let kc = sim.kubeconfig.display().to_string();
    let mesh_ws = Workspace::new(&format!("{name}-mesh"));
    mesh_ws.config(&mesh(&kc));
    mesh_ws.apply();
    let check_ws = Workspace::new(&format!("{name}-check"));
    check_ws.config(&check(&kc));
    Scene {
        sim,
        kc,
        mesh_ws,
        check_ws,
        _sim_dir: sim_dir,
    }
}

#[test]
fn verification_proves_traffic_and_names_what_breaks_it() {
    if !enabled("verification_proves_traffic_and_names_what_breaks_it") {
        return;
    }
    let Scene {
        sim,
        mesh_ws,
        check_ws,
        _sim_dir: _kept,
        ..
    } = scene("verification");

    // The whole mesh works: every client hears every cluster's HelloWorld.
    check_ws.apply();
    let all = json!([EAST1, EAST2, WEST1]);
    assert_eq!(
        check_ws.output("reachability"),
        json!({EAST1: all, EAST2: all, WEST1: all})
    );
    check_ws.assert_empty_plan();
    sample_namespace_gone(&sim);
    // The requests went through pod exec, in every cluster.
    for c in ALL {
        let execs: u64 = sim
            .counters(c)
            .counts
            .iter()
            .filter(|((_, r), _)| r == "pods/exec")
            .map(|(_, n)| n)
            .sum();
        assert!(execs >= 10, "{c}: {execs} execs");
    }

    // One failing case per cause, on every client: a failed create must reach each client
    // as an error naming the pairs.
    break_and_repair(&sim, &mesh_ws, &check_ws);

    // A changed trigger runs the check again, in place.
    check_ws.ok(&["apply", "-auto-approve", "-no-color", "-var", "run=5"]);
    assert_eq!(check_ws.output("reachability")[WEST1], all);
    check_ws.destroy();
    mesh_ws.destroy();
    for c in ALL {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "{c} not clean");
    }
}

/// The staged root rotation keeps traffic flowing at every step; an existing namespace is
/// given back as it was; `keep_workloads` leaves them until destroy.
#[test]
fn verification_through_a_root_rotation_and_in_an_existing_namespace() {
    if !enabled("verification_through_a_root_rotation_and_in_an_existing_namespace") {
        return;
    }
    let Scene {
        sim,
        kc,
        mesh_ws,
        check_ws,
        _sim_dir: _kept,
        ..
    } = scene("verification-rotation");
    let all = json!([EAST1, EAST2, WEST1]);

    // The staged root rotation (docs/guides/root-rotation.md) keeps traffic flowing at every
    // step: trust both roots, sign with the new one, drop the old one.
    for (i, vars) in [
        ["signer=root", "extra_root=other"],
        ["signer=other", "extra_root=root"],
        ["signer=other", "extra_root="],
    ]
    .iter()
    .enumerate()
    {
        mesh_apply(&mesh_ws, vars);
        let run = format!("rotation-{i}");
        check_ws.ok(&[
            "apply",
            "-auto-approve",
            "-no-color",
            "-var",
            &format!("run={run}"),
        ]);
        assert_eq!(
            check_ws.output("reachability"),
            json!({EAST1: all, EAST2: all, WEST1: all}),
            "rotation step {}",
            i + 1
        );
    }

    // A namespace that exists already is used, and given back as it was: its own label
    // stays, the check's objects and labels go; where the check created it, it is deleted.
    sim.kubectl(EAST1, &["create", "namespace", "team-a"]);
    sim.kubectl(EAST1, &["label", "namespace", "team-a", "owner=team-a"]);
    check_ws.config(&check(&kc).replace(
        "triggers = { run = var.run }",
        "triggers = { run = var.run }\n  namespace = \"team-a\"",
    ));
    check_ws.apply();
    assert_eq!(check_ws.output("reachability")[EAST1], all);
    let ns = sim
        .find(EAST1, "Namespace", "", "team-a")
        .expect("the existing namespace stays");
    let labels = &ns["metadata"]["labels"];
    assert_eq!(labels["owner"], "team-a", "{ns}");
    for gone in ["istio-injection", "app.kubernetes.io/managed-by"] {
        assert!(labels[gone].is_null(), "{gone} left on the namespace: {ns}");
    }
    // Deleted with background propagation: the garbage collector removes the pods after.
    sim.wait_until(
        EAST1,
        "the check's objects to leave team-a",
        std::time::Duration::from_secs(10),
        |objects| {
            !objects.iter().any(|o| {
                o["metadata"]["namespace"] == "team-a"
                    && (o["metadata"]["labels"]["app.kubernetes.io/managed-by"]
                        == "terraform-provider-mesh"
                        || ["helloworld", "curl"]
                            .contains(&o["metadata"]["labels"]["app"].as_str().unwrap_or("")))
            })
        },
    );
    for c in [EAST2, WEST1] {
        sim.wait_until(
            c,
            "team-a to be gone",
            std::time::Duration::from_secs(10),
            |objects| {
                !objects
                    .iter()
                    .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "team-a")
            },
        );
    }

    // keep_workloads leaves them for a look; destroy removes them.
    let kept = check(&kc).replace(
        "triggers = { run = var.run }",
        "triggers = { run = var.run }\n  keep_workloads = true",
    );
    check_ws.config(&kept);
    check_ws.apply();
    for c in ALL {
        assert!(
            sim.find(c, "Deployment", "sample", &format!("helloworld-{c}"))
                .is_some(),
            "{c} keeps its HelloWorld"
        );
    }
    check_ws.destroy();
    sample_namespace_gone(&sim);
    // Destroy with the configuration last applied (the rotated root): a plan with another
    // root would be refused as a one-step root swap, as it should.
    mesh_ws.ok(&[
        "destroy",
        "-auto-approve",
        "-no-color",
        "-var",
        "signer=other",
    ]);
    for c in ALL {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "{c} not clean");
    }
}
