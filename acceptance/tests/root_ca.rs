//! `mesh_root_ca` with real Terraform: lifecycle, certificate content checked by openssl,
//! validation errors at plan time, and Ctrl-C in the middle of an apply.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_acceptance::{enabled, openssl, provider_dir, Workspace};

const TWO_ROOTS: &str = r#"
resource "mesh_root_ca" "rsa" {
  common_name = "Mesh Root"
}

resource "mesh_root_ca" "ec" {
  key_algorithm         = "ECDSA"
  ecdsa_curve           = "P384"
  validity_period_hours = 1000
}

output "rsa" {
  value     = mesh_root_ca.rsa
  sensitive = true
}

output "ec" {
  value     = mesh_root_ca.ec
  sensitive = true
}
"#;

/// Writes a root's cert and key to files and returns `openssl x509 -text` of the cert.
fn inspect(ws: &Workspace, name: &str, root: &serde_json::Value) -> String {
    let cert = ws.write_file(&format!("{name}.crt"), root["cert_pem"].as_str().unwrap());
    let key = ws.write_file(
        &format!("{name}.key"),
        root["private_key_pem"].as_str().unwrap(),
    );
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    // The key belongs to the certificate.
    assert_eq!(
        openssl(&["pkey", "-in", key, "-pubout"]),
        openssl(&["x509", "-in", cert, "-pubkey", "-noout"]),
        "{name}: private key does not match the certificate"
    );
    openssl(&["x509", "-in", cert, "-noout", "-text"])
}

fn expires_within(ws: &Workspace, name: &str, hours: u64) -> bool {
    let cert = ws.dir.join(format!("{name}.crt"));
    let status = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-checkend",
            &(hours * 3600).to_string(),
            "-in",
        ])
        .arg(cert)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    !status.success()
}

#[test]
fn root_ca_lifecycle() {
    if !enabled("root_ca_lifecycle") {
        return;
    }
    let ws = Workspace::new("root-ca");
    ws.config(TWO_ROOTS);
    let applied = ws.apply();
    assert!(
        applied.contains("Apply complete! Resources: 2 added"),
        "{applied}"
    );
    assert!(
        !applied.contains("PRIVATE KEY"),
        "key material printed by apply"
    );
    ws.assert_empty_plan();

    let rsa = ws.output("rsa");
    let text = inspect(&ws, "rsa", &rsa);
    assert!(text.contains("Public-Key: (4096 bit)"), "{text}");
    assert!(
        text.contains("Subject: O = Istio, CN = Mesh Root"),
        "{text}"
    );
    assert!(
        text.contains("X509v3 Basic Constraints: critical\n                CA:TRUE"),
        "{text}"
    );
    assert!(text.contains("X509v3 Key Usage: critical\n                Digital Signature, Certificate Sign, CRL Sign"), "{text}");
    assert!(text.contains("X509v3 Subject Key Identifier"), "{text}");
    assert!(!text.contains("Extended Key Usage"), "{text}");
    // Default validity: 87600 hours (10 years).
    assert!(!expires_within(&ws, "rsa", 87_500));
    assert!(expires_within(&ws, "rsa", 87_700));
    assert_eq!(rsa["id"], rsa["fingerprint_sha256"]);
    assert_eq!(rsa["ready_for_renewal"], false);
    assert_eq!(
        rsa["not_after"].as_str().unwrap().len(),
        "2036-11-20T18:25:41Z".len()
    );

    let ec = ws.output("ec");
    let text = inspect(&ws, "ec", &ec);
    assert!(text.contains("ASN1 OID: secp384r1"), "{text}");
    assert!(text.contains("ecdsa-with-SHA384"), "{text}");
    assert!(!expires_within(&ws, "ec", 990));
    assert!(expires_within(&ws, "ec", 1010));

    // Any setting change replaces the root; the other one is untouched.
    ws.config(&TWO_ROOTS.replace("Mesh Root", "Mesh Root 2"));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(plan.contains("mesh_root_ca.rsa must be replaced"), "{plan}");
    assert!(plan.contains("# forces replacement"), "{plan}");
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 1 to destroy"),
        "{plan}"
    );
    ws.apply();
    ws.assert_empty_plan();
    let rsa2 = ws.output("rsa");
    assert_ne!(rsa2["fingerprint_sha256"], rsa["fingerprint_sha256"]);
    assert_eq!(
        ws.output("ec")["fingerprint_sha256"],
        ec["fingerprint_sha256"]
    );

    let destroyed = ws.destroy();
    assert!(destroyed.contains("Resources: 2 destroyed"), "{destroyed}");
    assert!(ws.state_list().is_empty());
}

#[test]
fn invalid_settings_fail_at_plan_naming_the_attribute() {
    if !enabled("invalid_settings_fail_at_plan_naming_the_attribute") {
        return;
    }
    let ws = Workspace::new("root-ca-invalid");
    ws.config(
        r#"
resource "mesh_root_ca" "bad" {
  rsa_bits            = 1024
  early_renewal_hours = 90000
}
"#,
    );
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Invalid rsa_bits"), "{err}");
    assert!(
        err.contains("unsupported RSA key size 1024: expected one of 2048, 3072, 4096"),
        "{err}"
    );
    assert!(
        err.contains("rsa_bits            = 1024"),
        "diagnostic does not point at the line:\n{err}"
    );
    assert!(err.contains("Invalid early_renewal_hours"), "{err}");
}

/// Ctrl-C reaches every process of the foreground group, the provider included. Terraform
/// answers it by stopping gracefully; the provider must not die under it, or the in-flight
/// create is lost from state.
///
/// "Creating..." does not prove the create reached the provider: Terraform prints it from its
/// UI hook and only then runs its stop hook, which halts the instance ("execution halted")
/// when the interrupt landed in between. So the provider itself records the creates it was
/// asked for (MESH_PROVIDER_TIMINGS), and each one must have completed and be in state.
#[test]
fn interrupt_mid_apply_keeps_the_provider_alive_and_state_saved() {
    if !enabled("interrupt_mid_apply_keeps_the_provider_alive_and_state_saved") {
        return;
    }
    let ws = Workspace::new("root-ca-sigint");
    ws.config(
        r#"
resource "mesh_root_ca" "r" {
  count       = 4
  common_name = "Root ${count.index}"
}
"#,
    );
    let received_log = ws.dir.join("rpcs.jsonl");
    let mut cmd = ws.command(&["apply", "-auto-approve", "-no-color", "-parallelism=1"]);
    cmd.env("MESH_PROVIDER_TIMINGS", &received_log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains(": Creating...") {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("Creating...")),
        "apply never started creating: {seen:?}"
    );
    // SIGINT to the whole process group, as a terminal does. (libc directly: procps-ng 4.0's
    // `kill` mis-parses negative process-group ids.)
    let pgid = i32::try_from(pgid).unwrap();
    // SAFETY: kill(2) with a negative pid signals exactly that process group.
    assert_eq!(unsafe { libc::kill(-pgid, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let all = format!("{}\n{}\n{stderr}", seen.join("\n"), rest.join("\n"));

    for bad in [
        "Request cancelled",
        "plugin exited",
        "connection is shut down",
        "Unavailable",
    ] {
        assert!(
            !all.contains(bad),
            "the provider died under SIGINT ({bad}):\n{all}"
        );
    }
    // Every create the provider was asked for finished and is in state.
    let received = std::fs::read_to_string(&received_log)
        .expect("the provider recorded no RPC")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["rpc"] == "ApplyResourceChange" && r["type"] == "mesh_root_ca")
        .count();
    let created = rest
        .iter()
        .filter(|l| l.contains("Creation complete"))
        .count();
    let in_state = ws.state_list();
    assert_eq!(
        created, received,
        "a create the provider received did not complete:\n{all}"
    );
    assert_eq!(
        in_state.len(),
        created,
        "state does not hold what was created:\n{all}"
    );
    assert!(
        created < 4 || status.success(),
        "interrupted apply exited {status} after creating everything"
    );

    // The next apply finishes the job and converges.
    ws.apply();
    assert_eq!(ws.state_list().len(), 4);
    ws.assert_empty_plan();
    ws.destroy();
}

#[test]
fn the_binary_refuses_to_run_by_hand() {
    if !enabled("the_binary_refuses_to_run_by_hand") {
        return;
    }
    let started = Instant::now();
    let out = Command::new(provider_dir().join("terraform-provider-mesh"))
        .env_remove("TF_PLUGIN_MAGIC_COOKIE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a plugin for Terraform"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
