//! `mesh_cluster`'s write-only root key (`root_ca.private_key_pem_wo`) with real Terraform:
//! on a client with write-only support (Terraform ≥ 1.11) the key signs the intermediate and no
//! copy of it reaches `mesh_cluster`'s state, including a root kept outside Terraform whose
//! key comes from an ephemeral variable and is in no state at all; on older clients (the pinned
//! 1.0.3) the same configuration is refused at plan, naming the attribute and its stored
//! alternative. Each scenario skips itself on the clients it does not concern.

use mesh_acceptance::sim::{secret_data, Clusters};
use mesh_acceptance::{enabled, openssl, Workspace};

/// Terraform with write-only attributes (plugin protocol 6.8).
const WRITE_ONLY_SINCE: (u32, u32, u32) = (1, 11, 0);

/// A mesh_root_ca and a mesh_cluster on cluster c1 whose `root_ca` block holds `key_lines`.
fn root_from_mesh_root_ca(kubeconfig: &str, key_lines: &str) -> String {
    format!(
        r#"
variable "key_version" {{
  type    = number
  default = 1
}}

resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}

resource "mesh_cluster" "east" {{
  cluster_name = "east"
  mesh_id      = "mesh1"
  network      = "net1"

  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "c1"
  }}

  root_ca {{
    cert_pem = mesh_root_ca.root.cert_pem
{key_lines}
  }}

  intermediate {{
    key_algorithm = "ECDSA"
  }}
}}
"#
    )
}

const STORED_KEY: &str = "    private_key_pem = mesh_root_ca.root.private_key_pem";
const WRITE_ONLY_KEY: &str = "    private_key_pem_wo         = mesh_root_ca.root.private_key_pem
    private_key_pem_wo_version = var.key_version";

/// The intermediate in c1's `cacerts`: certificate, key and root bundle.
fn cacerts(sim: &Clusters) -> (String, String, String) {
    let secret = sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .expect("cacerts");
    let get = |k: &str| secret_data(&secret, k).unwrap_or_else(|| panic!("cacerts lacks {k}"));
    (get("ca-cert.pem"), get("ca-key.pem"), get("root-cert.pem"))
}

/// The intermediate in `cacerts` verifies against `root_pem` (and only that root is trusted
/// there), and its key matches it.
fn assert_chains_to(ws: &Workspace, sim: &Clusters, tag: &str, root_pem: &str) {
    let (ca, key, root) = cacerts(sim);
    let file = |name: &str, text: &str| {
        ws.write_file(&format!("{tag}-{name}.pem"), text)
            .display()
            .to_string()
    };
    let (ca, key, root_file) = (file("ca", &ca), file("key", &key), file("root", root_pem));
    assert!(
        openssl(&["verify", "-CAfile", &root_file, &ca]).contains(": OK"),
        "{tag}: the intermediate does not chain to the root"
    );
    let fingerprint =
        |pem_file: &str| openssl(&["x509", "-in", pem_file, "-noout", "-fingerprint", "-sha256"]);
    assert_eq!(
        fingerprint(&file("bundle", &root)),
        fingerprint(&root_file),
        "{tag}: root-cert.pem is not the root"
    );
    assert_eq!(
        openssl(&["pkey", "-in", &key, "-pubout"]),
        openssl(&["x509", "-in", &ca, "-pubkey", "-noout"]),
        "{tag}: key does not match"
    );
}

/// The key's base64 body lines: what a copy of it anywhere would contain.
fn key_body(pem: &str) -> Vec<String> {
    let body: Vec<String> = pem
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .map(str::to_string)
        .collect();
    assert!(!body.is_empty(), "not a PEM key");
    body
}

/// Whether `text` holds any line of the key (never prints the key).
fn holds_key(text: &str, body: &[String]) -> bool {
    body.iter().any(|l| text.contains(l.as_str()))
}

/// The `attributes` of `mesh_cluster.east` in the state file, and their JSON text.
fn cluster_state(ws: &Workspace) -> (serde_json::Value, String) {
    let text = std::fs::read_to_string(ws.dir.join("terraform.tfstate")).expect("state");
    let state: serde_json::Value = serde_json::from_str(&text).expect("state JSON");
    let attrs = state["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "mesh_cluster")
        .map(|r| r["instances"][0]["attributes"].clone())
        .expect("mesh_cluster in state");
    let text = attrs.to_string();
    (attrs, text)
}

/// `mesh_cluster.east`'s `root_ca` as `terraform show -json` reports it, and the key and
/// certificate of `mesh_root_ca.root` (when there is one).
fn shown(ws: &Workspace) -> (serde_json::Value, Option<(String, String)>) {
    let out = ws.ok(&["show", "-json"]);
    let show: serde_json::Value = serde_json::from_str(&out).expect("show -json");
    let resources = show["values"]["root_module"]["resources"]
        .as_array()
        .expect("resources")
        .clone();
    let of = |t: &str| {
        resources
            .iter()
            .find(|r| r["type"] == t)
            .map(|r| r["values"].clone())
    };
    let root_ca = of("mesh_cluster").expect("mesh_cluster")["root_ca"][0].clone();
    let root = of("mesh_root_ca").map(|v| {
        (
            v["private_key_pem"].as_str().expect("key").to_string(),
            v["cert_pem"].as_str().expect("cert").to_string(),
        )
    });
    (root_ca, root)
}

fn skip_unless_write_only(ws: &Workspace, test: &str) -> bool {
    let version = ws.terraform_version();
    if version < WRITE_ONLY_SINCE {
        eprintln!("skipping {test}: Terraform {version:?} has no write-only attributes (write_only_root_key_is_refused_by_clients_without_support covers it)");
        return true;
    }
    false
}

#[test]
fn write_only_root_key_signs_and_stays_out_of_the_cluster_state() {
    let name = "write_only_root_key_signs_and_stays_out_of_the_cluster_state";
    if !enabled(name) {
        return;
    }
    let ws = Workspace::new("wo-root-key");
    if skip_unless_write_only(&ws, name) {
        return;
    }
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();

    // Created with the stored key, as on any Terraform: mesh_cluster's state holds a copy.
    ws.config(&root_from_mesh_root_ca(&kc, STORED_KEY));
    ws.apply();
    let (_, root) = shown(&ws);
    let (key, root_cert) = root.expect("mesh_root_ca");
    let body = key_body(&key);
    assert!(holds_key(&cluster_state(&ws).1, &body));
    assert_chains_to(&ws, &sim, "stored", &root_cert);
    let (issued, _, _) = cacerts(&sim);

    // Switched to the write-only key: an in-place update that keeps the intermediate (same
    // root), and the copy in mesh_cluster's state is gone.
    ws.config(&root_from_mesh_root_ca(&kc, WRITE_ONLY_KEY));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    assert!(plan.contains("private_key_pem_wo_version"), "{plan}");
    ws.apply();
    let (attrs, text) = cluster_state(&ws);
    let in_state = &attrs["root_ca"][0];
    assert!(in_state["private_key_pem"].is_null(), "{in_state}");
    assert!(in_state["private_key_pem_wo"].is_null(), "{in_state}");
    assert_eq!(in_state["private_key_pem_wo_version"], 1);
    assert!(
        !holds_key(&text, &body),
        "the root key is still in mesh_cluster's state"
    );
    let (root_ca, _) = shown(&ws);
    assert!(root_ca["private_key_pem_wo"].is_null() && root_ca["private_key_pem"].is_null());
    assert_eq!(cacerts(&sim).0, issued, "the intermediate was reissued");
    ws.assert_empty_plan();

    // A new version alone: an in-place update, nothing reissued.
    let out = ws.ok(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        "key_version=2",
    ]);
    assert!(out.contains("0 added, 1 changed, 0 destroyed"), "{out}");
    assert_eq!(cacerts(&sim).0, issued);

    // A repair that needs the key: cacerts deleted, so apply issues a new intermediate from
    // the root, signed with the write-only key from the configuration.
    sim.kubectl("c1", &["-n", "istio-system", "delete", "secret", "cacerts"]);
    let out = ws.ok(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-var",
        "key_version=2",
    ]);
    assert!(out.contains("0 added, 1 changed, 0 destroyed"), "{out}");
    assert_ne!(cacerts(&sim).0, issued);
    assert_chains_to(&ws, &sim, "repaired", &root_cert);
    assert!(!holds_key(&cluster_state(&ws).1, &body));
    ws.destroy();
}

/// A root CA made outside Terraform (as an external CA or a secret store would hold it).
fn external_root(ws: &Workspace) -> (String, String) {
    let key = ws.dir.join("ext-root-key.pem");
    let cert = ws.dir.join("root.pem");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-days",
        "3650",
        "-subj",
        "/O=Istio/CN=External Root CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("openssl output");
    let pair = (read(&cert), read(&key));
    let _ = std::fs::remove_file(&key);
    pair
}

#[test]
fn root_key_from_an_ephemeral_variable_is_in_no_state() {
    let name = "root_key_from_an_ephemeral_variable_is_in_no_state";
    if !enabled(name) {
        return;
    }
    let ws = Workspace::new("wo-ephemeral-root");
    if skip_unless_write_only(&ws, name) {
        return;
    }
    let (root_cert, root_key) = external_root(&ws);
    let body = key_body(&root_key);
    let ws = ws.env("TF_VAR_root_key", &root_key);
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    // An ephemeral variable may only flow into write-only arguments: Terraform itself refuses
    // it anywhere it would be stored.
    ws.config(&format!(
        r#"
variable "root_key" {{
  type      = string
  sensitive = true
  ephemeral = true
}}

resource "mesh_cluster" "east" {{
  cluster_name = "east"
  mesh_id      = "mesh1"
  network      = "net1"

  kubernetes {{
    config_path    = "{kc}"
    config_context = "c1"
  }}

  root_ca {{
    cert_pem           = file("${{path.module}}/root.pem")
    private_key_pem_wo = var.root_key
  }}

  intermediate {{
    key_algorithm = "ECDSA"
  }}
}}
"#
    ));
    let plan = ws.ok(&["plan", "-no-color", "-out", "tfplan"]);
    assert!(plan.contains("Plan: 1 to add"), "{plan}");
    // The saved plan holds no copy either; applying it reads the key from the variable again.
    let saved = ws.ok(&["show", "-json", "tfplan"]);
    assert!(
        saved.contains("private_key_pem_wo"),
        "not the plan expected"
    );
    assert!(
        !holds_key(&saved, &body),
        "the root key is in the saved plan"
    );
    ws.ok(&["apply", "-no-color", "tfplan"]);
    assert_chains_to(&ws, &sim, "ephemeral", &root_cert);
    let state = std::fs::read_to_string(ws.dir.join("terraform.tfstate")).expect("state");
    assert!(!holds_key(&state, &body), "the root key is in the state");
    let (root_ca, _) = shown(&ws);
    assert!(root_ca["private_key_pem_wo"].is_null() && root_ca["private_key_pem"].is_null());
    ws.assert_empty_plan();
    ws.destroy();
}

#[test]
fn write_only_root_key_is_refused_by_clients_without_support() {
    if !enabled("write_only_root_key_is_refused_by_clients_without_support") {
        return;
    }
    let ws = Workspace::new("wo-root-key-old");
    if ws.terraform_version() >= WRITE_ONLY_SINCE {
        eprintln!(
            "skipping: Terraform {:?} supports write-only attributes",
            ws.terraform_version()
        );
        return;
    }
    ws.config(&root_from_mesh_root_ca(
        "/nonexistent/kubeconfig",
        WRITE_ONLY_KEY,
    ));
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Write-only attribute not supported by this Terraform"),
        "{err}"
    );
    // Terraform wraps the detail: compare it on one line.
    let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("`root_ca.private_key_pem_wo` is write-only")
            && flat.contains("Terraform 1.11 or later")
            && flat.contains("set `root_ca.private_key_pem` instead"),
        "{err}"
    );
    // Terraform points at the line that sets it.
    assert!(
        err.contains("private_key_pem_wo         = mesh_root_ca.root.private_key_pem"),
        "{err}"
    );
    assert!(!ws.dir.join("terraform.tfstate").exists());
    // The stored key keeps working on the same client.
    ws.config(&root_from_mesh_root_ca(
        "/nonexistent/kubeconfig",
        STORED_KEY,
    ));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(plan.contains("Plan: 2 to add"), "{plan}");
}
