//! `mesh_cluster` with real Terraform against kube-sim: one-plan install with connection
//! details unknown at plan time (zero API requests while planning), trust verified with
//! openssl, in-place network change, drift repair, adoption of an existing namespace, destroy.

use mesh_acceptance::sim::{secret_data, Clusters};
use mesh_acceptance::{enabled, enabled_on_one_client, openssl, Workspace};

fn config(kubeconfig: &str, network: &str) -> String {
    config_with(kubeconfig, network, "")
}

/// [`config`] with extra lines in the `intermediate` block.
fn config_with(kubeconfig: &str, network: &str, intermediate: &str) -> String {
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
{intermediate}  }}
}}

output "ca_cert_pem" {{
  value = mesh_cluster.east.ca_cert_pem
}}
"#
    )
}

/// The four files of `cacerts` in cluster c1.
struct Bundle {
    ca: String,
    key: String,
    chain: String,
    root: String,
}

fn cacerts(sim: &Clusters) -> Bundle {
    let secret = sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .expect("cacerts");
    let get = |k: &str| secret_data(&secret, k).unwrap_or_else(|| panic!("cacerts lacks {k}"));
    Bundle {
        ca: get("ca-cert.pem"),
        key: get("ca-key.pem"),
        chain: get("cert-chain.pem"),
        root: get("root-cert.pem"),
    }
}

impl Bundle {
    fn ca_file(&self, ws: &Workspace, tag: &str) -> String {
        ws.write_file(&format!("{tag}-ca.pem"), &self.ca)
            .display()
            .to_string()
    }

    /// The intermediate chains to the root in the same secret, its key matches, and
    /// cert-chain.pem is intermediate then root.
    fn assert_chains(&self, ws: &Workspace, tag: &str) {
        assert_eq!(self.chain, format!("{}{}", self.ca, self.root), "{tag}");
        let ca = self.ca_file(ws, tag);
        let root = ws.write_file(&format!("{tag}-root.pem"), &self.root);
        let key = ws.write_file(&format!("{tag}-key.pem"), &self.key);
        assert!(
            openssl(&["verify", "-CAfile", root.to_str().unwrap(), &ca]).contains(": OK"),
            "{tag}"
        );
        assert_eq!(
            openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]),
            openssl(&["x509", "-in", &ca, "-pubkey", "-noout"]),
            "{tag}: key does not match"
        );
    }
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

    // Changed `intermediate` settings reissue the intermediate, from the same root.
    ws.config(&config_with(
        &kc,
        "net2",
        "    organization = \"Mesh Ops\"\n",
    ));
    ws.apply();
    let reissued = cacerts(&sim);
    assert_ne!(
        reissued.ca, ca,
        "intermediate not reissued after its settings changed"
    );
    assert_eq!(reissued.root, root, "same root");
    reissued.assert_chains(&ws, "reissued");
    let text = openssl(&[
        "x509",
        "-in",
        reissued.ca_file(&ws, "reissued").as_str(),
        "-noout",
        "-subject",
    ]);
    assert!(text.contains("O = Mesh Ops"), "{text}");
    ws.assert_empty_plan();

    // Replacing the root in one apply is refused at plan: istiod would reject the new bundle
    // and old and new workloads could not talk. The message gives the staged procedure.
    let refused = ws.run(&["plan", "-no-color", "-replace=mesh_root_ca.root"]);
    assert!(
        !refused.status.success(),
        "a one-step root swap was planned"
    );
    let text = flat(&[refused.stdout, refused.stderr].concat());
    for want in [
        "Unsafe change of the mesh's root of trust",
        "additional_roots_pem",
        "docs/guides/root-rotation.md",
        "allow_trust_break = true",
    ] {
        assert!(text.contains(want), "missing {want:?}: {text}");
    }

    // A throw-away mesh may break trust: a new mesh root reissues the intermediate, chaining to
    // the new root only.
    ws.config(
        &config_with(&kc, "net2", "    organization = \"Mesh Ops\"\n").replace(
            "  network      = ",
            "  allow_trust_break = true\n  network      = ",
        ),
    );
    ws.ok(&[
        "apply",
        "-auto-approve",
        "-no-color",
        "-replace=mesh_root_ca.root",
    ]);
    let rerooted = cacerts(&sim);
    assert_ne!(rerooted.root, root, "root not replaced");
    assert_ne!(
        rerooted.ca, reissued.ca,
        "intermediate not reissued for the new root"
    );
    rerooted.assert_chains(&ws, "rerooted");
    let old_root = ws.write_file("old-root.pem", &root);
    let stale = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&old_root)
        .arg(rerooted.ca_file(&ws, "rerooted"))
        .output()
        .expect("openssl");
    assert!(
        !stale.status.success(),
        "the new intermediate chains to the old root"
    );
    assert_eq!(
        ws.output("ca_cert_pem").as_str(),
        Some(rerooted.ca.as_str())
    );
    ws.assert_empty_plan();
    let (ca, key) = (rerooted.ca.clone(), rerooted.key.clone());

    // Drift: cacerts deleted and the label edited out of band → the plan repairs both. The
    // intermediate's key lived only in cacerts (never in state), so the repair issues a new
    // intermediate from the same root.
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
    let repaired = cacerts(&sim);
    assert_ne!(
        repaired.ca, ca,
        "the key was gone: a new intermediate is due"
    );
    assert_ne!(repaired.key, key);
    assert_eq!(repaired.root, rerooted.root, "from the same root");
    repaired.assert_chains(&ws, "repaired");
    let (ca, key) = (repaired.ca.clone(), repaired.key.clone());
    // The key is in no state file, private state included: only in the cluster.
    let raw = std::fs::read_to_string(ws.dir.join("terraform.tfstate")).expect("state file");
    let state: serde_json::Value = serde_json::from_str(&raw).expect("state JSON");
    let mut stored = raw.clone();
    for r in state["resources"].as_array().into_iter().flatten() {
        for i in r["instances"].as_array().into_iter().flatten() {
            if let Some(p) = i["private"].as_str() {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(p)
                    .unwrap_or_default();
                stored.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
    assert!(
        stored.contains("cacerts_digest"),
        "private state not decoded"
    );
    let key_line = key.lines().nth(1).expect("a key body line");
    assert!(
        !stored.contains(key_line),
        "the intermediate key is in the state"
    );
    let ns = sim.find("c1", "Namespace", "", "istio-system").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["topology.istio.io/network"],
        "net2"
    );
    ws.assert_empty_plan();

    // Drift: cacerts edited (not deleted) out of band → the plan shows the repair, apply puts
    // our bundle back.
    use base64::Engine;
    let bogus = base64::engine::general_purpose::STANDARD.encode(&root);
    sim.kubectl(
        "c1",
        &[
            "-n",
            "istio-system",
            "patch",
            "secret",
            "cacerts",
            "-p",
            &format!(r#"{{"data":{{"ca-cert.pem":"{bogus}"}}}}"#),
        ],
    );
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "edited cacerts not seen:\n{text}"
    );
    assert!(
        text.contains("ca_cert_pem") && text.contains("1 to change"),
        "{text}"
    );
    ws.apply();
    let repaired = cacerts(&sim);
    assert_eq!(repaired.ca, ca, "edited cacerts not repaired");
    assert_eq!(repaired.key, key);
    ws.assert_empty_plan();

    // The namespace deleted out of band: Read finds the resource gone, so the plan creates
    // it again and apply rebuilds namespace, label and trust.
    sim.kubectl(
        "c1",
        &["delete", "namespace", "istio-system", "--wait=true"],
    );
    let plan = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    let text = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "deleted namespace not seen:\n{text}"
    );
    assert!(
        text.contains("mesh_cluster.east will be created")
            && text.contains("1 to add, 0 to change, 0 to destroy"),
        "{text}"
    );
    ws.apply();
    let ns = sim
        .find("c1", "Namespace", "", "istio-system")
        .expect("namespace recreated");
    assert_eq!(
        ns["metadata"]["labels"]["topology.istio.io/network"],
        "net2"
    );
    let recreated = cacerts(&sim);
    recreated.assert_chains(&ws, "recreated");
    assert_eq!(recreated.root, rerooted.root);
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
    if !enabled_on_one_client("cluster_adopts_an_existing_namespace_and_gives_it_back") {
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

fn control_plane_config(kubeconfig: &str, version: &str, fail: bool) -> String {
    let annotations = if fail {
        r#"installer_pod_annotations = { "kube-sim.mesh.dev/fail" = "simulated: cannot pull image" }"#
    } else {
        ""
    };
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
  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}
  intermediate {{
    key_algorithm = "ECDSA"
  }}
  control_plane {{
    version         = "{version}"
    external_istiod = true
    values          = jsonencode({{ pilot = {{ env = {{ PILOT_TRACE_SAMPLING = "1" }} }}, global = {{ network = "not-mine" }} }})
    {annotations}
  }}
}}

resource "mesh_cluster" "remote" {{
  cluster_name = "c2"
  mesh_id      = "mesh1"
  network      = "net2"
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "c2"
  }}
  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}
  intermediate {{
    key_algorithm = "ECDSA"
  }}
  control_plane {{
    version              = "{version}"
    role                 = "remote"
    remote_pilot_address = "10.1.2.3"
    primary_cluster_name = mesh_cluster.primary.cluster_name
  }}
}}

output "versions" {{
  value = [mesh_cluster.primary.control_plane_version, mesh_cluster.remote.control_plane_version]
}}
"#
    )
}

/// Objects the installer made for IstioOperator `owner`, CRDs aside.
fn installed(sim: &Clusters, cluster: &str, owner: &str) -> Vec<String> {
    sim.dump(cluster)
        .iter()
        .filter(|o| o["metadata"]["labels"]["install.operator.istio.io/owning-resource"] == owner)
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Cluster-scoped objects carrying the owner label of IstioOperator `owner`, as
/// `Kind/name` with their `operator.istio.io/component`.
fn cluster_scoped_owned(sim: &Clusters, cluster: &str, owner: &str) -> Vec<(String, String)> {
    sim.dump(cluster)
        .iter()
        .filter(|o| o["metadata"]["namespace"].as_str().unwrap_or("").is_empty())
        .filter(|o| o["metadata"]["labels"]["install.operator.istio.io/owning-resource"] == owner)
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                ),
                o["metadata"]["labels"]["operator.istio.io/component"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn is_crd(kind_name: &str) -> bool {
    kind_name.starts_with("CustomResourceDefinition/")
}

/// Terraform wraps diagnostic text: compare with single spaces.
fn flat(text: &[u8]) -> String {
    String::from_utf8_lossy(text)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn installer_leftovers(sim: &Clusters, cluster: &str) -> Vec<String> {
    sim.dump(cluster)
        .iter()
        .filter(|o| {
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("-installer"))
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

#[test]
fn control_plane_primary_and_remote_install_upgrade_repair_uninstall() {
    if !enabled("control_plane_primary_and_remote_install_upgrade_repair_uninstall") {
        return;
    }
    let ws = Workspace::new("control-plane");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&control_plane_config(&kc, "1.30.3", false));
    sim.reset_requests("c1");
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    println!(
        "primary with control plane, create: {} API requests",
        sim.requests("c1")
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The user tried to set a multicluster key: ours wins, with a warning.
    assert!(
        stdout.contains("Value set by the provider") && stdout.contains("global.network"),
        "{stdout}"
    );
    assert_eq!(
        ws.output("versions"),
        serde_json::json!(["1.30.3", "1.30.3"])
    );

    // Primary: istiod carries the cluster's identity; the installer left nothing behind.
    let istiod = sim
        .find("c1", "Deployment", "istio-system", "istiod")
        .expect("istiod installed");
    let env = istiod["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(env.contains(r#""name":"CLUSTER_ID","value":"c1""#), "{env}");
    assert!(env.contains("EXTERNAL_ISTIOD"), "{env}");
    assert!(env.contains("PILOT_TRACE_SAMPLING"), "{env}");
    assert_eq!(
        istiod["metadata"]["labels"]["operator.istio.io/version"],
        "1.30.3"
    );
    assert_eq!(installer_leftovers(&sim, "c1"), Vec::<String>::new());
    // Remote: the injector webhook, and the namespace names its control plane.
    assert!(sim
        .find(
            "c2",
            "MutatingWebhookConfiguration",
            "",
            "istio-sidecar-injector"
        )
        .is_some());
    assert!(
        sim.find("c2", "Deployment", "istio-system", "istiod")
            .is_none(),
        "a remote runs no istiod"
    );
    let ns = sim.find("c2", "Namespace", "", "istio-system").unwrap();
    assert_eq!(
        ns["metadata"]["annotations"]["topology.istio.io/controlPlaneClusters"],
        "c1"
    );
    assert_eq!(installer_leftovers(&sim, "c2"), Vec::<String>::new());
    ws.assert_empty_plan();

    // istiod deleted out of band: the plan reinstalls it.
    sim.kubectl(
        "c1",
        &["-n", "istio-system", "delete", "deployment", "istiod"],
    );
    assert_eq!(ws.plan_exit_code(), 2);
    ws.apply();
    assert!(
        sim.find("c1", "Deployment", "istio-system", "istiod")
            .is_some(),
        "istiod not reinstalled"
    );
    ws.assert_empty_plan();

    // Upgrade in place.
    ws.config(&control_plane_config(&kc, "1.30.4", false));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 2 to change, 0 to destroy"),
        "{plan}"
    );
    ws.apply();
    let istiod = sim
        .find("c1", "Deployment", "istio-system", "istiod")
        .unwrap();
    assert_eq!(
        istiod["metadata"]["labels"]["operator.istio.io/version"],
        "1.30.4"
    );
    assert_eq!(
        ws.output("versions"),
        serde_json::json!(["1.30.4", "1.30.4"])
    );
    ws.assert_empty_plan();

    // Before destroy: Istio's base is among the owned cluster-scoped objects (what
    // `istioctl uninstall -f` without --purge would keep), next to the CRDs.
    let before = cluster_scoped_owned(&sim, "c1", "mesh-c1");
    assert!(
        before.iter().any(
            |(o, c)| o == "ValidatingWebhookConfiguration/istiod-default-validator" && c == "Base"
        ),
        "{before:?}"
    );
    assert!(before.iter().any(|(o, _)| is_crd(o)), "{before:?}");
    assert!(sim
        .find(
            "c1",
            "ServiceAccount",
            "istio-system",
            "istio-reader-service-account"
        )
        .is_some_and(|sa| sa["metadata"]["labels"]["operator.istio.io/component"] == "Base"));

    sim.reset_requests("c1");
    ws.destroy();
    println!(
        "primary with control plane, destroy: {} API requests",
        sim.requests("c1")
    );
    for (cluster, owner) in [("c1", "mesh-c1"), ("c2", "mesh-c2")] {
        // Nothing cluster-scoped of the install is left but the CRDs, which stay without
        // remove_crds_on_destroy.
        let left = cluster_scoped_owned(&sim, cluster, owner);
        let not_crds: Vec<_> = left.iter().filter(|(o, _)| !is_crd(o)).collect();
        assert_eq!(not_crds, Vec::<&(String, String)>::new(), "{cluster}");
        assert!(
            left.iter().any(|(o, _)| is_crd(o)),
            "{cluster}: CRDs removed without remove_crds_on_destroy"
        );
        assert_eq!(
            installed(&sim, cluster, owner),
            Vec::<String>::new(),
            "{cluster}: install left behind"
        );
        assert_eq!(sim.ours(cluster), Vec::<String>::new(), "{cluster}");
        assert!(
            sim.find(cluster, "Namespace", "", "istio-system").is_none(),
            "{cluster}: namespace left"
        );
    }
}

#[test]
fn installer_failure_shows_the_log_and_cleans_up() {
    if !enabled_on_one_client("installer_failure_shows_the_log_and_cleans_up") {
        return;
    }
    let ws = Workspace::new("control-plane-fail");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&control_plane_config(&kc, "1.30.3", true));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("the Istio installer (Job istio-system/mesh-c1-installer) failed"),
        "{stderr}"
    );
    assert!(stderr.contains("BackoffLimitExceeded"), "{stderr}");
    assert!(
        stderr.contains("simulated: cannot pull image"),
        "log tail missing:\n{stderr}"
    );
    // The pod's own status: phase and how its container ended.
    let text = flat(&out.stderr);
    assert!(
        text.contains("Pod status: pod mesh-c1-installer-")
            && text.contains(": Failed, container istioctl exited 1 (Error)"),
        "pod status missing:\n{stderr}"
    );
    assert_eq!(
        installer_leftovers(&sim, "c1"),
        Vec::<String>::new(),
        "installer objects left after a failure"
    );
    // The half-done cluster stays in state (tainted), so nothing is orphaned.
    assert!(ws
        .state_list()
        .contains(&"mesh_cluster.primary".to_string()));

    ws.config(&control_plane_config(&kc, "1.30.3", false));
    ws.apply();
    assert!(sim
        .find("c1", "Deployment", "istio-system", "istiod")
        .is_some());
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert_eq!(installed(&sim, "c1", "mesh-c1"), Vec::<String>::new());
}

fn single_primary(kubeconfig: &str, timeout: &str) -> String {
    single_primary_with(kubeconfig, timeout, "")
}

/// [`single_primary`] with extra lines in `control_plane`.
fn single_primary_with(kubeconfig: &str, timeout: &str, control_plane: &str) -> String {
    format!(
        r#"
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
{control_plane}  }}
  timeouts {{
    create = "{timeout}"
  }}
}}
"#
    )
}

#[test]
fn install_wait_honours_the_timeout_and_cleans_up() {
    if !enabled_on_one_client("install_wait_honours_the_timeout_and_cleans_up") {
        return;
    }
    let ws = Workspace::new("control-plane-timeout");
    let sim = Clusters::start(&["c1"], &ws.dir);
    // The installer Job will not finish within the timeout.
    sim.settings("c1", serde_json::json!({"jobs": {"delay_ms": 600000}}));
    ws.config(&single_primary(&sim.kubeconfig.display().to_string(), "3s"));
    let started = std::time::Instant::now();
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("timed out after") && stderr.contains("mesh-c1-installer"),
        "{stderr}"
    );
    assert!(
        took < std::time::Duration::from_secs(30),
        "the 3s timeout took {took:?}"
    );
    // What the installer showed so far: Job and pod status, the (empty) log.
    let text = flat(&out.stderr);
    for needle in [
        "Job status: not finished (active 1, succeeded 0, failed 0)",
        "Pod status: pod mesh-c1-installer-",
        ": Running, no container status yet",
        "Last lines of the installer's log: (the installer printed nothing)",
    ] {
        assert!(text.contains(needle), "{needle}:\n{stderr}");
    }
    assert_eq!(
        installer_leftovers(&sim, "c1"),
        Vec::<String>::new(),
        "installer objects left after a timeout"
    );

    // With the installer working again, a re-apply completes the tainted resource; this time
    // destroy also removes Istio's CRDs.
    sim.settings("c1", serde_json::json!({"jobs": {"delay_ms": 0}}));
    ws.config(&single_primary_with(
        &sim.kubeconfig.display().to_string(),
        "5m",
        "    remove_crds_on_destroy = true\n",
    ));
    ws.apply();
    ws.assert_empty_plan();
    let crds = |sim: &Clusters| {
        cluster_scoped_owned(sim, "c1", "mesh-c1")
            .into_iter()
            .filter(|(o, _)| is_crd(o))
            .count()
    };
    assert!(crds(&sim) > 0, "the install made no CRDs");
    ws.destroy();
    assert_eq!(
        cluster_scoped_owned(&sim, "c1", "mesh-c1"),
        Vec::<(String, String)>::new(),
        "remove_crds_on_destroy left objects"
    );
    assert!(
        !sim.dump("c1")
            .iter()
            .any(|o| o["kind"] == "CustomResourceDefinition"
                && o["spec"]["group"]
                    .as_str()
                    .is_some_and(|g| g.ends_with("istio.io"))),
        "Istio CRDs left with remove_crds_on_destroy = true"
    );
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// istioctl applied everything but istiod never became Available: the create fails, and a
/// destroy of the (tainted) resource still uninstalls what the installer made.
#[test]
fn destroy_after_a_failed_install_removes_what_it_made() {
    if !enabled("destroy_after_a_failed_install_removes_what_it_made") {
        return;
    }
    let ws = Workspace::new("control-plane-never-ready");
    let sim = Clusters::start(&["c1"], &ws.dir);
    sim.settings("c1", serde_json::json!({"deployments": {"enabled": false}}));
    ws.config(&single_primary(&sim.kubeconfig.display().to_string(), "3s"));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert!(!out.status.success());
    let made = cluster_scoped_owned(&sim, "c1", "mesh-c1");
    assert!(
        made.iter()
            .any(|(o, _)| o.starts_with("MutatingWebhookConfiguration/")),
        "the installer made no injector webhook: {made:?}"
    );

    ws.destroy();
    let left: Vec<(String, String)> = cluster_scoped_owned(&sim, "c1", "mesh-c1")
        .into_iter()
        .filter(|(o, _)| !is_crd(o))
        .collect();
    assert_eq!(left, Vec::<(String, String)>::new(), "install left behind");
    assert!(sim.find("c1", "Namespace", "", "istio-system").is_none());
    assert_eq!(installer_leftovers(&sim, "c1"), Vec::<String>::new());
}

/// A revision change is a second install: the new control plane comes up, then the previous
/// one is removed; destroy removes the new one.
#[test]
fn revision_change_installs_the_new_and_removes_the_old() {
    if !enabled_on_one_client("revision_change_installs_the_new_and_removes_the_old") {
        return;
    }
    let ws = Workspace::new("control-plane-revision");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&single_primary(&kc, "5m"));
    ws.apply();
    assert!(sim
        .find("c1", "Deployment", "istio-system", "istiod")
        .is_some());
    let default_owned = cluster_scoped_owned(&sim, "c1", "mesh-c1");
    assert!(!default_owned.is_empty());

    ws.config(&single_primary_with(
        &kc,
        "5m",
        "    revision = \"canary\"\n",
    ));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    ws.apply();
    ws.assert_empty_plan();
    assert!(sim
        .find("c1", "Deployment", "istio-system", "istiod-canary")
        .is_some());
    assert!(
        sim.find("c1", "Deployment", "istio-system", "istiod")
            .is_none(),
        "the previous control plane is still there"
    );
    let left: Vec<(String, String)> = cluster_scoped_owned(&sim, "c1", "mesh-c1")
        .into_iter()
        .filter(|(o, _)| !is_crd(o))
        .collect();
    assert_eq!(
        left,
        Vec::<(String, String)>::new(),
        "previous install left"
    );

    ws.destroy();
    let left: Vec<(String, String)> = cluster_scoped_owned(&sim, "c1", "mesh-c1-canary")
        .into_iter()
        .filter(|(o, _)| !is_crd(o))
        .collect();
    assert_eq!(left, Vec::<(String, String)>::new(), "canary install left");
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// Ctrl-C during the install wait: Terraform sends StopProvider, the wait ends promptly, the
/// installer's cluster-admin binding is still removed, and the resource stays in state.
#[test]
fn stop_during_the_install_wait_ends_it_promptly() {
    if !enabled("stop_during_the_install_wait_ends_it_promptly") {
        return;
    }
    use std::io::{BufRead, BufReader};
    let ws = Workspace::new("control-plane-stop");
    let sim = Clusters::start(&["c1"], &ws.dir);
    sim.settings("c1", serde_json::json!({"jobs": {"delay_ms": 600000}}));
    ws.config(&single_primary(
        &sim.kubeconfig.display().to_string(),
        "10m",
    ));
    let mut cmd = ws.command(&["apply", "-auto-approve", "-no-color"]);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("mesh_cluster.primary: Creating...") {
            break;
        }
    }
    // Wait until the installer Job exists, i.e. the provider is in the install wait.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sim
        .find("c1", "Job", "istio-system", "mesh-c1-installer")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "installer Job never created"
        );
        std::thread::yield_now();
    }
    let stopped_at = std::time::Instant::now();
    // SAFETY: kill(2) on the process group we created.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait().unwrap();
    let took = stopped_at.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        took < std::time::Duration::from_secs(15),
        "stop took {took:?}"
    );
    assert!(
        stderr.contains("Terraform asked the provider to stop"),
        "{}\n{stderr}",
        rest.join("\n")
    );
    assert_eq!(
        installer_leftovers(&sim, "c1"),
        Vec::<String>::new(),
        "installer objects left after a stop"
    );
    assert!(
        ws.state_list()
            .contains(&"mesh_cluster.primary".to_string()),
        "the half-done install was forgotten"
    );

    sim.settings("c1", serde_json::json!({"jobs": {"delay_ms": 0}}));
    ws.apply();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// Bring your own intermediate: made with openssl, not by the provider; `cacerts` holds
/// exactly it; a key that does not match is refused at plan, naming the attribute.
#[test]
fn cluster_with_its_own_intermediate_ca() {
    if !enabled_on_one_client("cluster_with_its_own_intermediate_ca") {
        return;
    }
    let ws = Workspace::new("cluster-byo");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let d = ws.dir.display().to_string();
    let p = |f: &str| format!("{d}/{f}");
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut root = vec!["req", "-x509"];
    root.extend(ec);
    let (root_key, root_pem) = (p("root.key"), p("root.pem"));
    root.extend([
        "-keyout",
        &root_key,
        "-out",
        &root_pem,
        "-days",
        "30",
        "-subj",
        "/O=Corp/CN=Corp Root",
    ]);
    root.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&root);
    let mut csr = vec!["req"];
    csr.extend(ec);
    let (int_key, int_csr, int_pem, other_key) =
        (p("int.key"), p("int.csr"), p("int.pem"), p("other.key"));
    csr.extend([
        "-keyout",
        &int_key,
        "-out",
        &int_csr,
        "-subj",
        "/O=Corp/CN=Vault Intermediate",
    ]);
    openssl(&csr);
    ws.write_file(
        "ext.cnf",
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    );
    let ext = p("ext.cnf");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &int_csr,
        "-CA",
        &root_pem,
        "-CAkey",
        &root_key,
        "-CAcreateserial",
        "-days",
        "20",
        "-extfile",
        &ext,
        "-out",
        &int_pem,
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &other_key,
    ]);

    let config = |key: &str| {
        format!(
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
    cert_pem        = file("{int_pem}")
    private_key_pem = file("{key}")
    cert_chain_pem  = "${{file("{int_pem}")}}${{file("{root_pem}")}}"
    root_cert_pem   = file("{root_pem}")
  }}
}}
"#,
            kc = sim.kubeconfig.display()
        )
    };
    ws.config(&config(&other_key));
    let out = ws.run(&["plan", "-no-color"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Invalid CA bundle") && err.contains("private_key_pem"),
        "{err}"
    );

    ws.config(&config(&int_key));
    ws.apply();
    ws.assert_empty_plan();
    let secret = sim
        .find("c1", "Secret", "istio-system", "cacerts")
        .expect("cacerts");
    let read = |f: &str| std::fs::read_to_string(p(f)).unwrap();
    assert_eq!(secret_data(&secret, "ca-cert.pem"), Some(read("int.pem")));
    assert_eq!(secret_data(&secret, "ca-key.pem"), Some(read("int.key")));
    assert_eq!(
        secret_data(&secret, "root-cert.pem"),
        Some(read("root.pem"))
    );
    assert_eq!(
        secret_data(&secret, "cert-chain.pem"),
        Some(format!("{}{}", read("int.pem"), read("root.pem")))
    );
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// Every resource type with its cluster connection unknown at plan time, as when the clusters
/// are created in the same apply: planning sends no request, one apply builds it all.
#[test]
fn one_plan_with_every_connection_unknown_at_plan_time() {
    if !enabled("one_plan_with_every_connection_unknown_at_plan_time") {
        return;
    }
    let ws = Workspace::new("unknown-connections");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display();
    let conn = |c: &str| {
        format!(
            "kubernetes {{\n    config_path    = \"{kc}\"\n    config_context = mesh_root_ca.root.id != \"\" ? \"{c}\" : \"\"\n  }}"
        )
    };
    let cluster = |c: &str, net: &str| {
        format!(
            r#"
resource "mesh_cluster" "{c}" {{
  cluster_name = "{c}"
  mesh_id      = "mesh1"
  network      = "{net}"
  {conn}
  root_ca {{
    cert_pem        = mesh_root_ca.root.cert_pem
    private_key_pem = mesh_root_ca.root.private_key_pem
  }}
  intermediate {{
    key_algorithm = "ECDSA"
  }}
  control_plane {{
    version = "1.30.3"
  }}
}}
"#,
            conn = conn(c)
        )
    };
    ws.config(&format!(
        r#"
resource "mesh_root_ca" "root" {{
  key_algorithm = "ECDSA"
}}
{c1}
{c2}
resource "mesh_eastwest_gateway" "c1" {{
  namespace = mesh_cluster.c1.namespace
  network   = mesh_cluster.c1.network
  {gw}
}}

resource "mesh_remote_secret" "c2_in_c1" {{
  namespace = mesh_cluster.c1.namespace
  {target}
  remote {{
    cluster_name = mesh_cluster.c2.cluster_name
    {remote}
  }}
}}
"#,
        c1 = cluster("c1", "n1"),
        c2 = cluster("c2", "n2"),
        gw = conn("c1"),
        target = conn("c1"),
        remote = conn("c2"),
    ));
    sim.reset_requests("c1");
    sim.reset_requests("c2");
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(plan.contains("Plan: 5 to add"), "{plan}");
    assert_eq!(
        sim.requests("c1") + sim.requests("c2"),
        0,
        "plan sent API requests"
    );
    ws.apply();
    ws.assert_empty_plan();
    assert!(sim
        .find("c1", "Secret", "istio-system", "istio-remote-secret-c2")
        .is_some());
    assert!(sim
        .find("c1", "Service", "istio-system", "istio-eastwestgateway")
        .is_some());
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert_eq!(sim.ours("c2"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------------------------
// Install details that must match Istio 1.30.3's charts, and namespaces being deleted

/// A primary serving remotes, and a remote whose control plane namespace is not
/// `istio-system`: the charts name its injector `istio-sidecar-injector-<namespace>`, and the
/// install is Ready once that exists. The reader the remote secret creates for itself carries
/// the rules Istio's reader gets on a remote, which the primary's EXTERNAL_ISTIOD uses.
#[test]
fn remote_in_its_own_namespace_installs_and_its_reader_can_serve_the_primary() {
    if !enabled_on_one_client(
        "remote_in_its_own_namespace_installs_and_its_reader_can_serve_the_primary",
    ) {
        return;
    }
    let ws = Workspace::new("remote-namespace");
    let sim = Clusters::start(&["c1", "c2"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&format!(
        r#"
resource "mesh_cluster" "primary" {{
  cluster_name = "c1"
  mesh_id      = "mesh1"
  network      = "net1"
  kubernetes {{
    config_path    = "{kc}"
    config_context = "c1"
  }}
  control_plane {{
    version         = "1.30.3"
    external_istiod = true
  }}
}}

resource "mesh_cluster" "remote" {{
  cluster_name = "c2"
  mesh_id      = "mesh1"
  network      = "net1"
  namespace    = "mesh-remote"
  kubernetes {{
    config_path    = "{kc}"
    config_context = "c2"
  }}
  control_plane {{
    version              = "1.30.3"
    role                 = "remote"
    remote_pilot_address = "10.1.2.3"
    primary_cluster_name = mesh_cluster.primary.cluster_name
  }}
  # A regression (waiting for the webhook under the wrong name) fails in a minute, not 20.
  timeouts {{
    create = "60s"
  }}
}}

resource "mesh_remote_secret" "c2_in_c1" {{
  kubernetes {{
    config_path    = "{kc}"
    config_context = "c1"
  }}
  remote {{
    cluster_name              = mesh_cluster.remote.cluster_name
    service_account           = "mesh-reader"
    service_account_namespace = "mesh-remote"
    create_service_account    = true
    kubernetes {{
      config_path    = "{kc}"
      config_context = "c2"
    }}
  }}
}}

output "remote_version" {{
  value = mesh_cluster.remote.control_plane_version
}}
"#
    ));
    ws.apply();
    assert_eq!(ws.output("remote_version"), "1.30.3");
    assert!(
        sim.find(
            "c2",
            "MutatingWebhookConfiguration",
            "",
            "istio-sidecar-injector-mesh-remote"
        )
        .is_some(),
        "the remote's injector, named as the chart names it outside istio-system"
    );
    // The reader's ClusterRole has what reader-clusterrole.yaml adds on a remote.
    let role = sim
        .dump("c2")
        .into_iter()
        .find(|o| {
            o["kind"] == "ClusterRole"
                && o["metadata"]["labels"]["app.kubernetes.io/managed-by"]
                    == "terraform-provider-mesh"
        })
        .expect("the reader ClusterRole mesh_remote_secret created");
    let rules = role["rules"].as_array().cloned().unwrap_or_default();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            let has = |k: &str, v: &str| r[k].as_array().is_some_and(|a| a.iter().any(|x| x == v));
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    for verb in ["create", "update"] {
        assert!(allows("", "configmaps", verb), "configmaps {verb}: {role}");
    }
    for verb in ["get", "list", "watch", "update", "patch"] {
        assert!(
            allows(
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                verb
            ),
            "mutatingwebhookconfigurations {verb}: {role}"
        );
    }
    for verb in ["get", "list", "watch", "update"] {
        assert!(
            allows(
                "admissionregistration.k8s.io",
                "validatingwebhookconfigurations",
                verb
            ),
            "validatingwebhookconfigurations {verb}: {role}"
        );
    }
    // Re-read through the renamed webhook: nothing to change.
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert_eq!(sim.ours("c2"), Vec::<String>::new());
    assert_eq!(installed(&sim, "c2", "mesh-c2"), Vec::<String>::new());
}

/// `revision = "default"` would install `istiod-default`: refused at plan, on the attribute,
/// before any cluster is contacted.
#[test]
fn revision_default_is_refused_at_plan() {
    if !enabled("revision_default_is_refused_at_plan") {
        return;
    }
    let ws = Workspace::new("revision-default");
    let sim = Clusters::start(&["c1"], &ws.dir);
    ws.config(&single_primary_with(
        &sim.kubeconfig.display().to_string(),
        "5m",
        "    revision = \"default\"\n",
    ));
    sim.reset_requests("c1");
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(err.contains("Invalid revision"), "{err}");
    assert!(err.contains(r#"revision = "default""#), "{err}");
    assert!(err.contains("Omit revision"), "{err}");
    assert_eq!(sim.requests("c1"), 0, "plan contacted the cluster");
}

/// A held ConfigMap keeps namespace `ns` of cluster c1 Terminating after it is deleted.
fn hold_namespace_terminating(sim: &Clusters, ws: &Workspace, ns: &str) -> String {
    let manifest = ws.write_file(
        &format!("{ns}-held.yaml"),
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: {ns}\n  finalizers: [\"example.com/hold\"]\n"
        ),
    );
    sim.kubectl("c1", &["apply", "-f", manifest.to_str().unwrap()]);
    let uid = sim.find("c1", "Namespace", "", ns).expect("namespace")["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    sim.kubectl("c1", &["delete", "namespace", ns, "--wait=false"]);
    let phase = sim.find("c1", "Namespace", "", ns).expect("held")["status"]["phase"].clone();
    assert_eq!(phase, "Terminating");
    uid
}

fn release_namespace(sim: &Clusters, ns: &str) {
    sim.kubectl(
        "c1",
        &[
            "-n",
            ns,
            "patch",
            "configmap",
            "held",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
    );
}

/// Apply while `istio-system` is still Terminating (as right after a destroy): first with a
/// timeout too short, which fails saying the namespace is being deleted (not RBAC); then the
/// wait is logged, the namespace is released, and the apply creates it anew and installs.
#[test]
fn apply_waits_out_a_terminating_namespace_and_says_so() {
    if !enabled_on_one_client("apply_waits_out_a_terminating_namespace_and_says_so") {
        return;
    }
    let ws = Workspace::new("namespace-terminating");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    let old_uid = hold_namespace_terminating(&sim, &ws, "istio-system");

    // Held beyond the timeout: the error says what is going on and what to do.
    ws.config(&single_primary(&kc, "3s"));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = flat(&out.stderr);
    assert!(
        err.contains("namespace istio-system is still being deleted"),
        "{err}"
    );
    assert!(err.contains("finalizers"), "{err}");
    assert!(!err.contains("RBAC"), "{err}");

    // Released while the apply waits: it goes on and creates the namespace again.
    ws.config(&single_primary(&kc, "5m"));
    let log = ws.dir.join("provider.log");
    let child = ws
        .command(&["apply", "-auto-approve", "-no-color"])
        .env("TF_LOG_PROVIDER", "INFO")
        .env("TF_LOG_PATH", log.to_str().unwrap())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let waiting = "namespace istio-system is being deleted (Terminating): waiting";
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains(waiting)) {
        assert!(
            std::time::Instant::now() < until,
            "the provider never said it waits for the namespace"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        sim.find("c1", "Job", "istio-system", "mesh-c1-installer")
            .is_none(),
        "nothing is created while the namespace is Terminating"
    );
    release_namespace(&sim, "istio-system");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("namespace istio-system finished terminating"),
        "no progress line in the provider log"
    );
    let ns = sim
        .find("c1", "Namespace", "", "istio-system")
        .expect("created again");
    assert_ne!(ns["metadata"]["uid"].as_str(), Some(old_uid.as_str()));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(
        ns["metadata"]["labels"]["topology.istio.io/network"],
        "net1"
    );
    assert!(sim
        .find("c1", "Deployment", "istio-system", "istiod")
        .is_some());
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
    assert!(
        sim.find("c1", "Namespace", "", "istio-system").is_none(),
        "the namespace this apply created is removed by destroy"
    );
}

/// `terraform <args>` with the provider's clock set to `now` (RFC 3339).
fn at_time(ws: &Workspace, now: &str, args: &[&str]) -> String {
    let out = ws
        .command(args)
        .env("MESH_PROVIDER_NOW", now)
        .output()
        .expect("run terraform");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "terraform {args:?} at {now}:\n{text}");
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An RFC 3339 time `hours` from now.
fn hours_from_now(hours: i64) -> String {
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("+{hours} hours"),
            "+%Y-%m-%dT%H:%M:%SZ",
        ])
        .output()
        .expect("date");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

#[test]
fn intermediate_renews_in_place_within_its_window() {
    if !enabled("intermediate_renews_in_place_within_its_window") {
        return;
    }
    let ws = Workspace::new("renewal");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    let window = "    validity_period_hours = 48\n    renew_before          = \"24h\"\n";
    ws.config(&config_with(&kc, "net1", window));
    ws.apply();
    let first = ws.output("ca_cert_pem");
    ws.assert_empty_plan();
    let later = hours_from_now(25);

    // A plan made before the window, applied inside it: applied as planned, no reissue, and
    // Terraform's apply-time re-plan agrees with the saved one.
    ws.config(&config_with(&kc, "net2", window));
    let saved = ws.ok(&["plan", "-no-color", "-out=before-window.tfplan"]);
    assert!(!saved.contains("due for renewal"), "{saved}");
    at_time(&ws, &later, &["apply", "-no-color", "before-window.tfplan"]);
    assert_eq!(ws.output("ca_cert_pem"), first);

    // Inside the window: an in-place update that reissues the intermediate from the same root.
    let plan = at_time(&ws, &later, &["plan", "-no-color"]);
    assert!(plan.contains("Intermediate CA due for renewal"), "{plan}");
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    let root_before = cacerts(&sim).root;
    at_time(&ws, &later, &["apply", "-auto-approve", "-no-color"]);
    let renewed = ws.output("ca_cert_pem");
    assert_ne!(renewed, first, "the intermediate was not reissued");
    let bundle = cacerts(&sim);
    assert_eq!(serde_json::Value::from(bundle.ca.clone()), renewed);
    assert_eq!(bundle.root, root_before, "same root");
    bundle.assert_chains(&ws, "renewed");

    // Back on the real clock the new intermediate is far from its window: nothing to do.
    ws.assert_empty_plan();
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}

/// A trust-only cluster for the rotation steps: `signer` is the root that issues the
/// intermediate, `extra` the `additional_roots_pem` expression (empty: none), `next` whether
/// `mesh_root_ca.next` exists and `old` whether `mesh_root_ca.root` does.
fn rotation_config(kc: &str, signer: &str, extra: &str, old: bool, next: bool) -> String {
    let root = |name: &str| {
        format!("resource \"mesh_root_ca\" \"{name}\" {{\n  key_algorithm = \"ECDSA\"\n}}\n\noutput \"{name}\" {{\n  value = mesh_root_ca.{name}.cert_pem\n}}\n")
    };
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("  additional_roots_pem = [{extra}]\n")
    };
    format!(
        r#"
{old}{next}
resource "mesh_cluster" "east" {{
  cluster_name = "east"
  mesh_id      = "mesh1"
  network      = "net1"
{extra}
  kubernetes {{
    config_path    = "{kc}"
    config_context = "c1"
  }}

  root_ca {{
    cert_pem        = mesh_root_ca.{signer}.cert_pem
    private_key_pem = mesh_root_ca.{signer}.private_key_pem
  }}

  intermediate {{
    key_algorithm = "ECDSA"
  }}

  # istiod must load each step's bundle: the apply waits for it.
  control_plane {{
    version = "1.30.3"
  }}

  timeouts {{
    update = "10s"
  }}
}}
"#,
        old = if old { root("root") } else { String::new() },
        next = if next { root("next") } else { String::new() },
    )
}

/// The roots in a PEM bundle, as their base64 bodies (encoding-independent enough here: both
/// sides come from the same PEM writer).
fn roots_in(bundle: &str) -> Vec<String> {
    bundle
        .split("-----END CERTIFICATE-----")
        .filter_map(|b| b.split("-----BEGIN CERTIFICATE-----").nth(1))
        .map(|b| b.split_whitespace().collect::<String>())
        .collect()
}

#[test]
fn root_rotation_in_three_applies_keeps_trust_at_every_step() {
    if !enabled("root_rotation_in_three_applies_keeps_trust_at_every_step") {
        return;
    }
    let ws = Workspace::new("rotation");
    let sim = Clusters::start(&["c1"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&rotation_config(&kc, "root", "", true, false));
    ws.apply();
    let a = roots_in(ws.output("root").as_str().unwrap());
    let first = cacerts(&sim);
    assert_eq!(roots_in(&first.root), a);

    // 1. Trust the next root too; still signing with the old one: same intermediate.
    ws.config(&rotation_config(
        &kc,
        "root",
        "mesh_root_ca.next.cert_pem",
        true,
        true,
    ));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 1 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    sim.reset_requests("c1");
    ws.apply();
    // A figure for the closing notes and the guide, not an assertion: run with --nocapture.
    eprintln!("rotation step 1: {} API requests", sim.requests("c1"));
    let b = roots_in(ws.output("next").as_str().unwrap());
    let step1 = cacerts(&sim);
    assert_eq!(roots_in(&step1.root), [a.clone(), b.clone()].concat());
    assert_eq!(
        step1.ca, first.ca,
        "the intermediate must not change in step 1"
    );
    ws.assert_empty_plan();

    // 2. Sign with the next root, still trusting the old one: intermediate reissued from B.
    ws.config(&rotation_config(
        &kc,
        "next",
        "mesh_root_ca.root.cert_pem",
        true,
        true,
    ));
    sim.reset_requests("c1");
    ws.apply();
    eprintln!("rotation step 2: {} API requests", sim.requests("c1"));
    let step2 = cacerts(&sim);
    assert_eq!(roots_in(&step2.root), [b.clone(), a.clone()].concat());
    assert_ne!(
        step2.ca, first.ca,
        "the intermediate must be reissued from the next root"
    );
    let next_root = ws.write_file("next-root.pem", ws.output("next").as_str().unwrap());
    let ca = step2.ca_file(&ws, "step2");
    assert!(
        openssl(&["verify", "-CAfile", next_root.to_str().unwrap(), &ca]).contains(": OK"),
        "step 2's intermediate does not chain to the next root"
    );
    ws.assert_empty_plan();

    // 3. Drop the old root: the bundle shrinks to B.
    ws.config(&rotation_config(&kc, "next", "", false, true));
    sim.reset_requests("c1");
    ws.apply();
    eprintln!("rotation step 3: {} API requests", sim.requests("c1"));
    let step3 = cacerts(&sim);
    assert_eq!(roots_in(&step3.root), b);
    assert_eq!(step3.ca, step2.ca, "step 3 keeps the intermediate");
    let published = |sim: &Clusters| {
        let cm = sim
            .find("c1", "ConfigMap", "istio-system", "istio-ca-root-cert")
            .expect("istiod publishes its roots");
        roots_in(cm["data"]["root-cert.pem"].as_str().unwrap_or(""))
    };
    assert_eq!(published(&sim), b, "istiod serves the rotated bundle");
    ws.assert_empty_plan();

    // A swap forced through with allow_trust_break: istiod keeps serving the old root, and the
    // apply says so instead of reporting success.
    let swap = rotation_config(&kc, "root", "", true, true).replace(
        "  network      = ",
        "  allow_trust_break = true\n  network      = ",
    );
    ws.config(&swap);
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    let text = flat(&[out.stdout, out.stderr].concat());
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("has not loaded the new trust bundle"),
        "{text}"
    );
    assert_eq!(
        published(&sim),
        b,
        "istiod must not have taken the swapped root"
    );
    ws.destroy();
    assert_eq!(sim.ours("c1"), Vec::<String>::new());
}
