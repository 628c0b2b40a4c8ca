//! `mesh_cluster` with real Terraform against kube-sim: one-plan install with connection
//! details unknown at plan time (zero API requests while planning), trust verified with
//! openssl, in-place network change, drift repair, adoption of an existing namespace, destroy.

use mesh_acceptance::sim::{secret_data, Clusters};
use mesh_acceptance::{enabled, openssl, Workspace};

fn config(kubeconfig: &str, network: &str) -> String {
    format!(
        r#"
resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}

resource "mesh_cluster" "east" {{
  cluster_name = "east"
  mesh_id      = "mesh1"
  network      = "{network}"

  kubernetes {{
    config_path = "{kubeconfig}"
    # Known only after apply, as when the cluster is created in the same plan.
    config_context = mesh_root_ca.root.id != "" ? "c1" : ""
  }}

  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}

  intermediate {{
    key_algorithm = "ECDSA"
  }}
}}

output "ca_cert_pem" {{
  value = mesh_cluster.east.ca_cert_pem
}}
"#
    )
}

#[test]
fn cluster_with_root_ca_in_one_plan() {
    if !enabled("cluster_with_root_ca_in_one_plan") {
        return;
    }
    let ws = Workspace::new("cluster");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&config(&kc, "net1"));

    // Planning contacts no cluster, even though the connection is not known yet.
    sim.reset_requests("c1");
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(plan.contains("Plan: 2 to add"), "{plan}");
    assert_eq!(sim.requests("c1"), 0, "terraform plan sent API requests");

    ws.apply();
    let create_requests = sim.requests("c1");
    println!("mesh_cluster create: {create_requests} API requests");
    let ns = sim
        .find("c1", "Namespace", "", "istio-system")
        .expect("namespace created");
    assert_eq!(
        ns["metadata"]["labels"]["topology.istio.io/network"],
        "net1"
    );
    let secret = sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .expect("cacerts written");
    assert_eq!(secret["type"], "Opaque");
    assert!(
        sim.find("c2", "Namespace", "", "istio-system").is_none(),
        "wrong cluster touched"
    );

    // The bundle is what istiod needs: the intermediate chains to the root, the key matches,
    // cert-chain.pem is intermediate then root.
    let get = |k: &str| secret_data(&secret, k).unwrap_or_else(|| panic!("cacerts lacks {k}"));
    let (ca, key, chain, root) = (
        get("ca-cert.pem"),
        get("ca-key.pem"),
        get("cert-chain.pem"),
        get("root-cert.pem"),
    );
    assert_eq!(chain, format!("{ca}{root}"));
    let ca_file = ws.write_file("ca-cert.pem", &ca);
    let root_file = ws.write_file("root-cert.pem", &root);
    let key_file = ws.write_file("ca-key.pem", &key);
    let (ca_file, root_file, key_file) = (
        ca_file.to_str().unwrap(),
        root_file.to_str().unwrap(),
        key_file.to_str().unwrap(),
    );
    assert!(openssl(&["verify", "-CAfile", root_file, ca_file]).contains(": OK"));
    assert_eq!(
        openssl(&["pkey", "-in", key_file, "-pubout"]),
        openssl(&["x509", "-in", ca_file, "-pubkey", "-noout"])
    );
    let text = openssl(&["x509", "-in", ca_file, "-noout", "-text"]);
    assert!(text.contains("CA:TRUE, pathlen:0"), "{text}");
    assert!(text.contains("L = east"), "{text}");
    assert!(text.contains("DNS:istiod.istio-system.svc"), "{text}");
    assert_eq!(ws.output("ca_cert_pem").as_str(), Some(ca.as_str()));
    ws.assert_empty_plan();

    // A network change is an in-place update of the label; the intermediate stays.
    ws.config(&config(&kc, "net2"));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    ws.apply();
    let ns = sim.find("c1", "Namespace", "", "istio-system").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["topology.istio.io/network"],
        "net2"
    );
    assert_eq!(
        secret_data(
            &sim.find("c1", "Secret", "istio-system", "cacerts").unwrap(),
            "ca-cert.pem"
        )
        .as_deref(),
        Some(ca.as_str())
    );
    ws.assert_empty_plan();

    // Drift: cacerts deleted and the label edited out of band → the plan repairs both, with
    // the same intermediate (no churn).
    sim.kubectl("c1", &["-n", "istio-system", "delete", "secret", "cacerts"]);
    sim.kubectl(
        "c1",
        &[
            "label",
            "namespace",
            "istio-system",
            "topology.istio.io/network=wrong",
            "--overwrite",
        ],
    );
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(plan.status.code(), Some(2), "drift not seen:\n{text}");
    assert!(
        text.contains(r#"~ network"#) && text.contains(r#""wrong" -> "net2""#),
        "{text}"
    );
    assert!(text.contains("ca_cert_pem"), "{text}");
    ws.apply();
    let repaired = sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .expect("cacerts repaired");
    assert_eq!(
        secret_data(&repaired, "ca-cert.pem").as_deref(),
        Some(ca.as_str())
    );
    assert_eq!(
        secret_data(&repaired, "ca-key.pem").as_deref(),
        Some(key.as_str())
    );
    let ns = sim.find("c1", "Namespace", "", "istio-system").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["topology.istio.io/network"],
        "net2"
    );
    ws.assert_empty_plan();

    sim.reset_requests("c1");
    ws.destroy();
    println!("mesh_cluster destroy: {} API requests", sim.requests("c1"));
    assert!(
        sim.find("c1", "Namespace", "", "istio-system").is_none(),
        "created namespace left behind"
    );
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

#[test]
fn cluster_adopts_an_existing_namespace_and_gives_it_back() {
    if !enabled("cluster_adopts_an_existing_namespace_and_gives_it_back") {
        return;
    }
    let ws = Workspace::new("cluster-adopt");
    let sim = Clusters::start(&["c1"], &ws.dir);
    sim.kubectl("c1", &["create", "namespace", "istio-system"]);
    ws.config(&format!(
        r#"
resource "mesh_cluster" "c1" {{
  cluster_name = "c1"
  mesh_id      = "mesh1"
  network      = "n1"
  kubernetes {{
    config_path    = "{}"
    config_context = "c1"
  }}
}}
"#,
        sim.kubeconfig.display()
    ));
    ws.apply();
    ws.assert_empty_plan();
    let ns = sim.find("c1", "Namespace", "", "istio-system").unwrap();
    assert_eq!(ns["metadata"]["labels"]["topology.istio.io/network"], "n1");
    assert!(
        sim.find("c1", "Secret", "istio-system", "cacerts")
            .is_none(),
        "no trust configured, yet cacerts exists"
    );

    ws.destroy();
    let ns = sim
        .find("c1", "Namespace", "", "istio-system")
        .expect("a namespace we did not create must stay");
    assert!(
        ns["metadata"]["labels"]
            .get("topology.istio.io/network")
            .is_none(),
        "our label left behind: {ns}"
    );
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

#[test]
fn bad_trust_fails_at_plan_naming_the_attribute() {
    if !enabled("bad_trust_fails_at_plan_naming_the_attribute") {
        return;
    }
    let ws = Workspace::new("cluster-invalid");
    ws.config(
        r#"
resource "mesh_root_ca" "a" {
  key_algorithm = "ECDSA"
}

resource "mesh_cluster" "bad" {
  cluster_name = "Bad_Name"
  mesh_id      = "mesh1"
  network      = "n1"
  root_ca {
    cert_pem        = "not a certificate"
    private_key_pem = mesh_root_ca.a.private_key_pem
  }
}
"#,
    );
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid cluster_name") && err.contains("DNS-1123"),
        "{err}"
    );
    assert!(err.contains("Invalid root CA"), "{err}");
    assert!(
        err.contains("cert_pem        = \"not a certificate\""),
        "{err}"
    );
}
