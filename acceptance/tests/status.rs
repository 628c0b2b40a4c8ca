//! Verification, part 1, with real Terraform: `mesh_remote_secret` waits until the target's
//! istiod reports the remote `synced` (read as istioctl reads it, through a port-forward to
//! istiod's port 15014), fails with a diagnosis when it does not, and the `mesh_status` data
//! source reports istiod's view — in outputs, and in a `check` block on clients that have them.
//!
//! Two kube-sim clusters with control planes: c1 is the target (its istiod reads the secret),
//! c2 the remote. kube-sim's simulated istiod decides sync from its own state: the secret's
//! server must be a sibling cluster that accepts the secret's token.

use std::time::{Duration, Instant};

use mesh_acceptance::hcl;
use mesh_acceptance::sim::Clusters;
use mesh_acceptance::{enabled, enabled_on_one_client, Workspace};
use serde_json::{json, Value};

const TARGET: &str = "c1";
const REMOTE: &str = "c2";

/// The mesh of two primaries and one remote secret (c2 read by c1), with `mesh_status` of c1
/// read after the secret. `secret_extra` goes into the remote secret's body.
fn config(kc: &str, server: Option<&str>, secret_extra: &str) -> String {
    let server = server
        .map(|s| format!("server = \"{s}\""))
        .unwrap_or_default();
    let cluster = |name: &str, network: &str| {
        hcl::mesh_cluster(
            name,
            network,
            kc,
            r#"  control_plane {
    version = "1.30.3"
    # istiod gives up its first sync of an unreachable remote after this long.
    values  = jsonencode({ pilot = { env = { PILOT_REMOTE_CLUSTER_TIMEOUT = "2s" } } })
  }"#,
        )
    };
    format!(
        r#"
resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}
{c1}
{c2}
resource "mesh_remote_secret" "c2_in_c1" {{
  namespace = mesh_cluster.c1.namespace
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  remote {{
    cluster_name = mesh_cluster.c2.cluster_name
    {server}
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{REMOTE}"
    }}
  }}
  {secret_extra}
}}

data "mesh_status" "c1" {{
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  depends_on = [mesh_remote_secret.c2_in_c1]
}}

output "sync_status" {{
  value = mesh_remote_secret.c2_in_c1.sync_status
}}

output "token_secret_name" {{
  value = mesh_remote_secret.c2_in_c1.token_secret_name
}}

output "status" {{
  value = {{
    cluster_id      = data.mesh_status.c1.cluster_id
    istiod          = data.mesh_status.c1.istiod
    remote_clusters = data.mesh_status.c1.remote_clusters
    healthy         = data.mesh_status.c1.healthy
    problems        = data.mesh_status.c1.problems
  }}
}}
"#,
        c1 = cluster(TARGET, "net1"),
        c2 = cluster(REMOTE, "net1"),
    )
}

/// A `check` block over `mesh_status` (Terraform >= 1.5): read on every plan.
fn check_block(kc: &str) -> String {
    format!(
        r#"
check "c1_mesh" {{
  data "mesh_status" "c1_check" {{
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{TARGET}"
    }}
  }}
  assert {{
    condition     = data.mesh_status.c1_check.healthy
    error_message = "c1 unhealthy: ${{join(" | ", data.mesh_status.c1_check.problems)}}"
  }}
}}
"#
    )
}

fn portforwards(sim: &Clusters, cluster: &str) -> u64 {
    sim.counters(cluster)
        .counts
        .iter()
        .filter(|((_, r), _)| r == "pods/portforward")
        .map(|(_, n)| n)
        .sum()
}

fn failed_apply(ws: &Workspace) -> String {
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert!(!out.status.success(), "the apply should have failed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    unwrapped(&text)
}

/// Terraform wraps diagnostics to the terminal width: one line, single spaces, to match.
fn unwrapped(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn remote_secret_waits_for_istiod_and_mesh_status_reports_it() {
    if !enabled("remote_secret_waits_for_istiod_and_mesh_status_reports_it") {
        return;
    }
    let ws = Workspace::new("status");
    let sim = Clusters::start(&[TARGET, REMOTE], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    let newer = ws.terraform_version() >= (1, 5, 0);

    // 1. A server nothing listens on: istiod never syncs, the apply fails within the remote
    //    secret's timeout and says why.
    let wrong = "https://127.0.0.1:9";
    ws.config(&config(&kc, Some(wrong), r#"timeouts { create = "12s" }"#));
    let started = Instant::now();
    let out = failed_apply(&ws);
    let took = started.elapsed();
    println!("failed sync after {took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    for want in [
        "istiod did not sync the remote cluster",
        "does not report remote cluster \"c2\"",
        "secret istio-remote-secret-c2",
        &format!("server {wrong}"),
        "istiod-",
        "timeout",
        "is a loopback address",
        "The reader token authenticates when the provider presents it to cluster",
        "wait_for_sync = false",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }

    // 2. The right server, and an istiod that takes 1.5 s to sync: the apply waits for it,
    //    polling istiod through a port-forward, and records `synced`. The forward stays open
    //    between polls and serves mesh_status's reads after them: one per provider process
    //    that asks (the plan's refresh, the apply), where one per request would be 7 or more.
    sim.settings(TARGET, json!({"istiod": {"remote_sync_delay_ms": 1500}}));
    sim.reset_requests(TARGET);
    ws.config(&config(&kc, None, ""));
    let started = Instant::now();
    ws.apply();
    let took = started.elapsed();
    let reads = portforwards(&sim, TARGET);
    println!(
        "secret replaced and synced in {took:?}; {reads} port-forwards to c1's istiod; c1 requests: {}",
        sim.request_breakdown(TARGET)
    );
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(
        (1..=3).contains(&reads),
        "{reads} port-forwards opened to c1's istiod"
    );
    assert_eq!(ws.output("sync_status"), "synced");
    let status = ws.output("status");
    assert_eq!(status["healthy"], true, "{status}");
    assert_eq!(status["cluster_id"], TARGET, "{status}");
    assert_eq!(
        status["remote_clusters"],
        json!([{"cluster_id": REMOTE, "secret_name": "istio-system/istio-remote-secret-c2", "sync_status": "synced"}]),
        "{status}"
    );
    let istiod = &status["istiod"][0];
    assert_eq!(istiod["ready"], true, "{status}");
    assert_eq!(istiod["version"], "1.30.3", "{status}");
    ws.assert_empty_plan();

    // 3. On clients with check blocks, the check passes on every plan.
    if newer {
        std::fs::write(ws.dir.join("checks.tf"), check_block(&kc)).expect("write checks.tf");
        let out = ws.ok(&["plan", "-no-color"]);
        assert!(!out.contains("c1 unhealthy"), "{out}");
        assert!(!out.contains("Check block assertion failed"), "{out}");
        // A check's data source shows as read again at apply; nothing else changes.
        assert!(
            out.contains("No changes") || out.contains("Plan: 0 to add, 0 to change, 0 to destroy"),
            "{out}"
        );
    }

    // 4. The reader token revoked out of band (its token secret deleted in c2). istiod keeps
    //    its informers, so only the credential check sees it: mesh_status reports it.
    let token_secret = ws.output("token_secret_name");
    let token_secret = token_secret.as_str().expect("token secret name");
    sim.kubectl(
        REMOTE,
        &["-n", "istio-system", "delete", "secret", token_secret],
    );
    if newer {
        let out = unwrapped(&ws.ok(&["plan", "-no-color"]));
        assert!(out.contains("Check block assertion failed"), "{out}");
        assert!(out.contains("rejects the reader token"), "{out}");
        // A check's data source is planned as a read on every plan, which makes
        // `plan -detailed-exitcode` exit 2 (Terraform's behaviour): the empty-plan checks
        // below run without it.
        std::fs::remove_file(ws.dir.join("checks.tf")).expect("remove checks.tf");
    }
    ws.ok(&["apply", "-refresh-only", "-auto-approve", "-no-color"]);
    let status = ws.output("status");
    assert_eq!(status["healthy"], false, "{status}");
    let problems = status["problems"].to_string();
    assert!(
        problems.contains(
            "rejects the reader token in secret istio-system/istio-remote-secret-c2 (401)"
        ),
        "{status}"
    );
    // The next apply mints a new token and the mesh is healthy again.
    ws.apply();
    assert_eq!(ws.output("status")["healthy"], true);
    ws.assert_empty_plan();

    // 5. wait_for_sync = false: a broken server is written without waiting, and mesh_status
    //    tells what istiod makes of it.
    sim.settings(TARGET, json!({"istiod": {"remote_sync_delay_ms": 0}}));
    sim.reset_requests(TARGET);
    ws.config(&config(&kc, Some(wrong), "wait_for_sync = false"));
    ws.apply();
    // No wait: the only port-forwards are the refresh of the prior state's sync_status
    // (wait_for_sync was true) and mesh_status's clusterz and networkz.
    assert!(
        portforwards(&sim, TARGET) <= 3,
        "{}",
        sim.request_breakdown(TARGET)
    );
    assert_eq!(ws.output("sync_status"), Value::Null);
    let status = ws.output("status");
    assert_eq!(status["healthy"], false, "{status}");
    let sync = status["remote_clusters"][0]["sync_status"]
        .as_str()
        .unwrap_or("");
    assert!(sync == "syncing" || sync == "timeout", "{status}");

    ws.destroy();
    for c in [TARGET, REMOTE] {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "{c} not clean");
    }
}

/// A remote (no istiod of its own) read by a primary that does not serve remotes: the
/// primary's istiod syncs it, yet the remote's sidecars could never start. mesh_status says so.
#[test]
fn mesh_status_diagnoses_a_remote_whose_primary_does_not_serve_it() {
    if !enabled_on_one_client("mesh_status_diagnoses_a_remote_whose_primary_does_not_serve_it") {
        return;
    }
    let ws = Workspace::new("status-remote");
    let sim = Clusters::start(&[TARGET, REMOTE], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    let body = |external: bool| {
        format!(
            r#"
resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}

resource "mesh_cluster" "primary" {{
  cluster_name = "{TARGET}"
  mesh_id      = "mesh1"
  network      = "net1"
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}
  control_plane {{
    version         = "1.30.3"
    external_istiod = {external}
  }}
}}

# The remote's trust only: no control plane of its own here.
resource "mesh_cluster" "remote" {{
  cluster_name = "{REMOTE}"
  mesh_id      = "mesh1"
  network      = "net1"
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{REMOTE}"
  }}
  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}
}}

resource "mesh_remote_secret" "remote_in_primary" {{
  namespace = mesh_cluster.primary.namespace
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  remote {{
    cluster_name              = mesh_cluster.remote.cluster_name
    service_account_namespace = mesh_cluster.remote.namespace
    create_service_account    = true
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{REMOTE}"
    }}
  }}
}}

data "mesh_status" "primary" {{
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  # Read after anything in the primary changed, not at plan time.
  depends_on = [mesh_remote_secret.remote_in_primary, mesh_cluster.primary]
}}

output "problems" {{
  value = data.mesh_status.primary.problems
}}
"#
        )
    };
    ws.config(&body(false));
    ws.apply();
    let problems = ws.output("problems").to_string();
    assert!(
        problems.contains("Cluster c2 runs no istiod of its own (a remote)")
            && problems.contains("external_istiod = true"),
        "{problems}"
    );
    // With external_istiod the same mesh is healthy.
    ws.config(&body(true));
    ws.apply();
    assert_eq!(ws.output("problems"), json!([]));
    ws.destroy();
    for c in [TARGET, REMOTE] {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "{c} not clean");
    }
}
