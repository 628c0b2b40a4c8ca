//! Crashes and interrupts at the slowest step of every resource that touches a cluster. kube-sim
//! holds the request of that step (the watch's initial list) so the signal lands there every
//! time; then the provider is SIGKILLed (an OOM kill, a lost CI runner: Terraform saves no
//! state for the operation) or Terraform gets Ctrl-C (it asks the provider to stop and saves
//! what it returns). In every case the next apply converges, the plan after it is empty, and
//! destroy leaves nothing of ours: what the provider created carries its mark in the cluster,
//! so destroy does not depend on the state the killed process never saved.
//!
//! `mesh_root_ca` has no cluster side: a killed create leaves nothing anywhere and is simply
//! created by the next apply; its Ctrl-C behaviour is tested in `root_ca.rs`.

use std::time::Duration;

use mesh_acceptance::hcl;
use mesh_acceptance::sim::Clusters;
use mesh_acceptance::{enabled, Background, Workspace};
use serde_json::{json, Value};

/// Bound on every wait for a held request, and on a signalled Terraform's exit.
const WAIT: Duration = Duration::from_secs(60);
const NS: &str = "istio-system";
const CREATED_BY: &str = "mesh.tfmesh.dev/created-by";

/// SIGKILLs the provider once `cluster` holds a request, lets Terraform fail, releases the hold.
fn kill_when_held(sim: &Clusters, cluster: &str, apply: Background, what: &str) -> String {
    sim.wait_held(cluster, what, WAIT);
    apply.kill_provider();
    let done = apply.finish(WAIT);
    sim.release(cluster);
    assert!(
        !done.status.success(),
        "apply succeeded though its provider was killed ({what}):\n{}",
        done.all()
    );
    done.all()
}

/// Ctrl-C once `cluster` holds a request; returns Terraform's output after it exited.
fn interrupt_when_held(sim: &Clusters, cluster: &str, apply: Background, what: &str) -> String {
    sim.wait_held(cluster, what, WAIT);
    apply.interrupt();
    let done = apply.finish(WAIT);
    sim.release(cluster);
    let all = done.all();
    assert!(
        all.contains("Terraform asked the provider to stop") || all.contains("Interrupt received"),
        "Terraform did not stop the provider ({what}):\n{all}"
    );
    all
}

fn background_apply(ws: &Workspace) -> Background {
    ws.spawn(&["apply", "-auto-approve", "-no-color"])
}

fn annotations(obj: &Value) -> Value {
    obj["metadata"]["annotations"].clone()
}

// ---------------------------------------------------------------------------------------------
// mesh_cluster: the installer Job wait

fn clusters_config(kubeconfig: &str, values: &str) -> String {
    let body = format!(
        "  control_plane {{\n    version = \"1.30.3\"\n    values  = jsonencode({{ pilot = {{ env = {{ CRASH_TEST = \"{values}\" }} }} }})\n  }}"
    );
    let one = |name: &str| hcl::mesh_cluster(name, &format!("net-{name}"), kubeconfig, &body);
    format!("{}{}{}", hcl::root_ca(), one("c1"), one("c2"))
}

/// The installer Job's wait in both clusters (the watch's initial list of Jobs).
fn hold_installer_waits(sim: &Clusters) {
    for c in ["c1", "c2"] {
        sim.hold(c, "list", &format!("/apis/batch/v1/namespaces/{NS}/jobs"));
    }
}

fn wait_both_held(sim: &Clusters, what: &str) {
    for c in ["c1", "c2"] {
        sim.wait_held(c, &format!("{what} in {c}"), WAIT);
    }
}

/// c1's istio-system is created by the provider; c2's existed before (and must survive).
#[test]
fn mesh_cluster_killed_or_interrupted_in_the_install_wait() {
    if !enabled("mesh_cluster_killed_or_interrupted_in_the_install_wait") {
        return;
    }
    let ws = Workspace::new("crash-cluster");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    sim.kubectl("c2", &["create", "namespace", NS]);
    ws.config(&clusters_config(&kc, "a"));

    // Create, killed while both installers run: nothing of either cluster is in state.
    hold_installer_waits(&sim);
    let apply = background_apply(&ws);
    wait_both_held(&sim, "the installer wait of the create");
    apply.kill_provider();
    let out = apply.finish(WAIT);
    for c in ["c1", "c2"] {
        sim.release(c);
    }
    assert!(!out.status.success(), "{}", out.all());
    assert!(
        !ws.state_list()
            .iter()
            .any(|r| r.starts_with("mesh_cluster.")),
        "a killed create saved state: {:?}",
        ws.state_list()
    );
    // The mark is in the cluster already: on the namespace the provider created, not on the
    // one it adopted.
    let c1_ns = sim.find("c1", "Namespace", "", NS).expect("c1 namespace");
    assert_eq!(annotations(&c1_ns)[CREATED_BY], "mesh-cluster.c1");
    let c2_ns = sim.find("c2", "Namespace", "", NS).expect("c2 namespace");
    assert!(annotations(&c2_ns).get(CREATED_BY).is_none(), "{c2_ns}");

    // The next apply adopts what the killed one made and converges.
    ws.apply();
    ws.assert_empty_plan();
    let c1_ns = sim.find("c1", "Namespace", "", NS).expect("c1 namespace");
    assert_eq!(
        annotations(&c1_ns)[CREATED_BY],
        "mesh-cluster.c1",
        "the adopting apply dropped the mark"
    );

    // Update (new values re-run the installer), killed in the installer wait.
    ws.config(&clusters_config(&kc, "b"));
    hold_installer_waits(&sim);
    let apply = background_apply(&ws);
    wait_both_held(&sim, "the installer wait of the update");
    apply.kill_provider();
    let out = apply.finish(WAIT);
    for c in ["c1", "c2"] {
        sim.release(c);
    }
    assert!(!out.status.success(), "{}", out.all());
    ws.apply();
    ws.assert_empty_plan();

    // Ctrl-C in the installer wait of another update: the resources stay in state.
    ws.config(&clusters_config(&kc, "c"));
    hold_installer_waits(&sim);
    let apply = background_apply(&ws);
    wait_both_held(&sim, "the installer wait before Ctrl-C");
    let out = {
        apply.interrupt();
        let done = apply.finish(WAIT);
        for c in ["c1", "c2"] {
            sim.release(c);
        }
        done.all()
    };
    assert!(
        out.contains("Terraform asked the provider to stop"),
        "{out}"
    );
    let state = ws.state_list();
    for r in ["mesh_cluster.c1", "mesh_cluster.c2"] {
        assert!(state.contains(&r.to_string()), "{r} lost: {state:?}\n{out}");
    }
    ws.apply();
    ws.assert_empty_plan();

    // Destroy: nothing of ours; the namespace we created is gone, the one we found stays.
    ws.destroy();
    for c in ["c1", "c2"] {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "left in {c}");
    }
    assert!(
        sim.find("c1", "Namespace", "", NS).is_none(),
        "the namespace created by the killed apply was kept"
    );
    let c2_ns = sim
        .find("c2", "Namespace", "", NS)
        .expect("the namespace that existed before must stay");
    assert!(
        c2_ns["metadata"]["labels"]
            .get("topology.istio.io/network")
            .is_none(),
        "our label left on the pre-existing namespace: {c2_ns}"
    );
}

/// Objects (CRDs aside) carrying the installer's owner label of IstioOperator `owner`, and
/// the installer's own objects.
fn install_leftovers(sim: &Clusters, cluster: &str, owner: &str) -> Vec<String> {
    sim.dump(cluster)
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .filter(|o| {
            o["metadata"]["labels"]["install.operator.istio.io/owning-resource"] == owner
                || o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(&format!("{owner}-installer")))
        })
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn revision_config(kubeconfig: &str, revision: &str) -> String {
    format!(
        r#"
resource "mesh_cluster" "c1" {{
  cluster_name = "c1"
  mesh_id      = "mesh1"
  network      = "net1"
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "c1"
  }}
  control_plane {{
    version  = "1.30.3"
    {revision}
  }}
}}
"#
    )
}

/// A revision change killed in the new installer's wait loses the resource's private state
/// (Terraform keeps none from a provider that died), including which installs exist. Destroy,
/// run right away, still removes both installs and the installer's cluster-admin binding: the
/// namespace records them.
#[test]
fn destroy_right_after_a_killed_revision_change_removes_both_installs() {
    if !enabled("destroy_right_after_a_killed_revision_change_removes_both_installs") {
        return;
    }
    let ws = Workspace::new("crash-revision");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&revision_config(&kc, ""));
    ws.apply();
    assert!(!install_leftovers(&sim, "c1", "mesh-c1").is_empty());

    ws.config(&revision_config(&kc, "revision = \"canary\""));
    sim.hold(
        "c1",
        "list",
        &format!("/apis/batch/v1/namespaces/{NS}/jobs"),
    );
    kill_when_held(
        &sim,
        "c1",
        background_apply(&ws),
        "the installer wait of the canary",
    );
    let canary = install_leftovers(&sim, "c1", "mesh-c1-canary");
    assert!(
        canary.iter().any(|o| o.starts_with("ClusterRoleBinding/")),
        "the killed apply left no installer binding: {canary:?}"
    );

    ws.destroy();
    for owner in ["mesh-c1", "mesh-c1-canary"] {
        assert_eq!(
            install_leftovers(&sim, "c1", owner),
            Vec::<String>::new(),
            "{owner} left"
        );
    }
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert!(sim.find("c1", "Namespace", "", NS).is_none());
}

// ---------------------------------------------------------------------------------------------
// mesh_eastwest_gateway: the load balancer address wait

/// Istio's Gateway CRD (the control plane is not installed here).
const GATEWAY_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gateways.networking.istio.io
spec:
  group: networking.istio.io
  scope: Namespaced
  names: {kind: Gateway, plural: gateways, singular: gateway, listKind: GatewayList}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
";

fn gateway_config(kubeconfig: &str, service_type: &str) -> String {
    format!(
        r#"
resource "mesh_eastwest_gateway" "gw" {{
  network      = "net1"
  service_type = "{service_type}"
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "c1"
  }}
}}
"#
    )
}

fn hold_address_wait(sim: &Clusters) {
    sim.hold("c1", "list", &format!("/api/v1/namespaces/{NS}/services"));
}

#[test]
fn eastwest_gateway_killed_or_interrupted_in_the_address_wait() {
    if !enabled("eastwest_gateway_killed_or_interrupted_in_the_address_wait") {
        return;
    }
    let ws = Workspace::new("crash-eastwest");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    let crd = ws.write_file("crd.yaml", GATEWAY_CRD);
    sim.kubectl(
        "c1",
        &["apply", "--server-side", "-f", crd.to_str().unwrap()],
    );
    sim.kubectl("c1", &["create", "namespace", NS]);
    ws.config(&gateway_config(&kc, "LoadBalancer"));

    // Create, killed waiting for the address: objects in the cluster, nothing in state.
    hold_address_wait(&sim);
    kill_when_held(
        &sim,
        "c1",
        background_apply(&ws),
        "the address wait of the create",
    );
    assert!(ws.state_list().is_empty(), "{:?}", ws.state_list());
    assert!(
        sim.find("c1", "Service", NS, "istio-eastwestgateway")
            .is_some(),
        "the killed create made no Service: the kill did not land in the wait"
    );
    ws.apply();
    ws.assert_empty_plan();
    let address = ws.ok(&["state", "show", "-no-color", "mesh_eastwest_gateway.gw"]);
    assert!(address.contains("203.0.113."), "no address: {address}");

    // Update to a load balancer again (from NodePort), killed in the address wait.
    ws.config(&gateway_config(&kc, "NodePort"));
    ws.apply();
    ws.config(&gateway_config(&kc, "LoadBalancer"));
    hold_address_wait(&sim);
    kill_when_held(
        &sim,
        "c1",
        background_apply(&ws),
        "the address wait of the update",
    );
    ws.apply();
    ws.assert_empty_plan();

    // The same update interrupted: the gateway stays in state; the next apply finishes it.
    ws.config(&gateway_config(&kc, "NodePort"));
    ws.apply();
    ws.config(&gateway_config(&kc, "LoadBalancer"));
    hold_address_wait(&sim);
    let out = interrupt_when_held(
        &sim,
        "c1",
        background_apply(&ws),
        "the address wait before Ctrl-C",
    );
    assert_eq!(
        ws.state_list(),
        ["mesh_eastwest_gateway.gw"],
        "the interrupted update lost the gateway:\n{out}"
    );
    ws.apply();
    ws.assert_empty_plan();

    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert!(
        sim.find("c1", "Namespace", "", NS).is_some(),
        "the gateway's namespace is not the gateway's to delete"
    );
}

// ---------------------------------------------------------------------------------------------
// mesh_remote_secret: the wait for the token controller

fn remote_secret_config(kubeconfig: &str, rotation: &str) -> String {
    format!(
        r#"
resource "mesh_remote_secret" "c2_in_c1" {{
  token_rotation = "{rotation}"
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "c1"
  }}
  remote {{
    cluster_name           = "c2"
    create_service_account = true
    kubernetes {{
      config_path    = "{kubeconfig}"
      config_context = "c2"
    }}
  }}
}}
"#
    )
}

/// The token wait in the remote; with the token controller paused, the token cannot be in the
/// apply's answer already, so the provider always reaches the wait. Its watch is held, not its
/// initial list: the earlier token secrets are listed while the new one is written, and holding
/// that list could stop the provider before the token secret exists.
fn hold_token_wait(sim: &Clusters) {
    sim.settings("c2", json!({"tokens": {"enabled": false}}));
    sim.hold("c2", "watch", &format!("/api/v1/namespaces/{NS}/secrets"));
}

fn resume_tokens(sim: &Clusters) {
    sim.settings("c2", json!({"tokens": {"enabled": true}}));
}

#[test]
fn remote_secret_killed_or_interrupted_in_the_token_wait() {
    if !enabled("remote_secret_killed_or_interrupted_in_the_token_wait") {
        return;
    }
    let ws = Workspace::new("crash-remote-secret");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    for c in ["c1", "c2"] {
        sim.kubectl(c, &["create", "namespace", NS]);
    }
    ws.config(&remote_secret_config(&kc, "r0"));

    // Create, killed waiting for the token: reader and token secret made, no state.
    hold_token_wait(&sim);
    kill_when_held(
        &sim,
        "c2",
        background_apply(&ws),
        "the token wait of the create",
    );
    resume_tokens(&sim);
    assert!(ws.state_list().is_empty(), "{:?}", ws.state_list());
    let made = sim.ours("c2");
    assert!(
        made.iter().any(|o| o.starts_with("ServiceAccount/"))
            && made.iter().any(|o| o.starts_with("Secret/")),
        "the killed create made nothing in the remote: {made:?}"
    );
    ws.apply();
    ws.assert_empty_plan();

    // Rotation (a new token), killed in the token wait.
    ws.config(&remote_secret_config(&kc, "r1"));
    hold_token_wait(&sim);
    kill_when_held(
        &sim,
        "c2",
        background_apply(&ws),
        "the token wait of the rotation",
    );
    resume_tokens(&sim);
    ws.apply();
    ws.assert_empty_plan();

    // Another rotation interrupted: the resource stays in state; the next apply finishes it.
    ws.config(&remote_secret_config(&kc, "r2"));
    hold_token_wait(&sim);
    let out = interrupt_when_held(
        &sim,
        "c2",
        background_apply(&ws),
        "the token wait before Ctrl-C",
    );
    resume_tokens(&sim);
    assert_eq!(
        ws.state_list(),
        ["mesh_remote_secret.c2_in_c1"],
        "the interrupted rotation lost the resource:\n{out}"
    );
    ws.apply();
    ws.assert_empty_plan();
    let tokens: Vec<String> = sim
        .ours("c2")
        .into_iter()
        .filter(|o| o.starts_with("Secret/"))
        .collect();
    assert_eq!(tokens.len(), 1, "old tokens left valid: {tokens:?}");

    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert_eq!(sim.ours("c2"), Vec::<String>::new());
}
