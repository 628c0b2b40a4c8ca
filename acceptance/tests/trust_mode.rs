//! `mesh_cluster` switching a running control plane from istiod's own CA to `root_ca`: istiod
//! watches `cacerts` only when it started with it, so the provider restarts istiod (a rollout
//! of its Deployment) and the plan says so.

use mesh_acceptance::sim::{secret_data, Clusters};
use mesh_acceptance::{enabled, enabled_on_one_client, openssl, Workspace};

fn config(kubeconfig: &str, trust: &str) -> String {
    format!(
        r#"
resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}

resource "mesh_cluster" "primary" {{
  cluster_name = "c1"
  mesh_id      = "mesh1"
  network      = "net1"
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "c1"
  }}
  control_plane {{
    version = "1.30.3"
  }}
{trust}}}
"#
    )
}

const ROOT_CA: &str = r#"  root_ca {
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }
  intermediate {
    key_algorithm = "ECDSA"
  }
"#;

/// Names of the istiod pods in cluster c1, sorted.
fn istiod_pods(sim: &Clusters) -> Vec<String> {
    let mut names: Vec<String> = sim
        .dump("c1")
        .iter()
        .filter(|o| {
            o["kind"] == "Pod"
                && o["metadata"]["namespace"] == "istio-system"
                && o["metadata"]["labels"]["app"] == "istiod"
        })
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn restarted_at(sim: &Clusters) -> Option<String> {
    let d = sim
        .find("c1", "Deployment", "istio-system", "istiod")
        .expect("istiod Deployment");
    d["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .map(str::to_string)
}

#[test]
fn trust_mode_change_restarts_istiod_and_the_plan_says_so() {
    if !enabled("trust_mode_change_restarts_istiod_and_the_plan_says_so") {
        return;
    }
    let ws = Workspace::new("trust-mode-restart");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();

    ws.config(&config(&kc, ""));
    ws.apply();
    let before = istiod_pods(&sim);
    assert!(!before.is_empty(), "no istiod pods after the install");
    assert_eq!(restarted_at(&sim), None);
    assert!(sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .is_none());

    ws.config(&config(&kc, ROOT_CA));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("istiod will be restarted") && plan.contains("from none to root_ca"),
        "{plan}"
    );
    ws.apply();
    assert!(sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .is_some());
    assert!(restarted_at(&sim).is_some(), "istiod was not restarted");
    let after = istiod_pods(&sim);
    assert!(!after.is_empty(), "no istiod pods after the restart");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "old istiod pods remain: before {before:?}, after {after:?}"
    );
    ws.assert_empty_plan();

    // Same mode, nothing to restart: a second apply leaves the pods alone.
    let stamp = restarted_at(&sim);
    ws.apply();
    assert_eq!(restarted_at(&sim), stamp);
    assert_eq!(istiod_pods(&sim), after);

    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// A `ca {}` bundle as users paste it — indented heredocs, the key with openssl's EC
/// PARAMETERS block, the whole chain in `cert_pem` — is written to `cacerts` in the form
/// istiod reads, and the next plan is empty.
#[test]
fn ca_bundle_is_written_normalised() {
    if !enabled_on_one_client("ca_bundle_is_written_normalised") {
        return;
    }
    let ws = Workspace::new("ca-normalised");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let d = ws.dir.display().to_string();
    let p = |f: &str| format!("{d}/{f}");
    let read = |f: &str| std::fs::read_to_string(p(f)).unwrap();
    let (root_key, root_pem, int_key, int_csr, int_pem) = (
        p("root.key"),
        p("root.pem"),
        p("int.key"),
        p("int.csr"),
        p("int.pem"),
    );
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        &root_key,
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        &root_key,
        "-days",
        "30",
        "-subj",
        "/CN=Corp Root",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        &root_pem,
    ]);
    // `ecparam -genkey` writes an EC PARAMETERS block before the key.
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-out",
        &int_key,
    ]);
    assert!(read("int.key").starts_with("-----BEGIN EC PARAMETERS-----"));
    openssl(&[
        "req",
        "-new",
        "-key",
        &int_key,
        "-subj",
        "/CN=Corp Intermediate",
        "-out",
        &int_csr,
    ]);
    ws.write_file(
        "ext.cnf",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    let ext = p("ext.cnf");
    openssl(&[
        "x509", "-req", "-in", &int_csr, "-CA", &root_pem, "-CAkey", &root_key, "-days", "20",
        "-extfile", &ext, "-out", &int_pem,
    ]);
    let indent = |pem: &str| -> String { pem.lines().map(|l| format!("    {l}\n")).collect() };
    let full_chain = format!("{}{}", read("int.pem"), read("root.pem"));
    let config = format!(
        r#"
resource "mesh_cluster" "c1" {{
  cluster_name = "c1"
  mesh_id      = "mesh1"
  network      = "n1"
  kubernetes {{
    config_path    = "{kc}"
    config_context = "c1"
  }}
  ca {{
    cert_pem        = <<EOT
{chain}EOT
    private_key_pem = <<EOT
{key}EOT
    cert_chain_pem  = <<EOT
{int}EOT
    root_cert_pem   = <<EOT
{root}EOT
  }}
}}
"#,
        kc = sim.kubeconfig.display(),
        chain = indent(&full_chain),
        key = indent(&read("int.key")),
        int = indent(&read("int.pem")),
        root = indent(&read("root.pem")),
    );
    ws.config(&config);
    ws.apply();
    let secret = sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .expect("cacerts");
    let key = read("int.key");
    let key_block = &key[key.find("-----BEGIN EC PRIVATE KEY-----").unwrap()..];
    assert_eq!(secret_data(&secret, "ca-cert.pem"), Some(read("int.pem")));
    assert_eq!(
        secret_data(&secret, "ca-key.pem").as_deref(),
        Some(key_block),
        "ca-key.pem must hold the key block alone"
    );
    assert_eq!(secret_data(&secret, "cert-chain.pem"), Some(full_chain));
    assert_eq!(
        secret_data(&secret, "root-cert.pem"),
        Some(read("root.pem"))
    );
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}
