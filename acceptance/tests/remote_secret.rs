//! `mesh_remote_secret` with real Terraform against two kube-sim clusters: c1 is the target
//! (istiod reads the secret there), c2 the remote (the token is minted there). The secret's
//! content field by field, the token authenticating against c2, the loopback warning, server
//! override, drift repair, token revocation and re-mint, rotation without a gap, verify_token,
//! and destroy revoking the token and leaving nothing behind.

use std::path::Path;
use std::process::Command;

use mesh_acceptance::sim::{secret_data, Clusters};
use mesh_acceptance::{enabled, enabled_on_one_client, Workspace};
use serde_json::Value;

const TARGET: &str = "c1";
const REMOTE: &str = "c2";
const SECRET: &str = "istio-remote-secret-c2";

fn config(kubeconfig: &str, extra_remote: &str, extra: &str) -> String {
    format!(
        r#"
resource "mesh_remote_secret" "c2_in_c1" {{
  kubernetes {{
    config_path    = "{kubeconfig}"
    config_context = "{TARGET}"
  }}

  remote {{
    cluster_name           = "{REMOTE}"
    create_service_account = true
    {extra_remote}
    kubernetes {{
      config_path    = "{kubeconfig}"
      config_context = "{REMOTE}"
    }}
  }}
  {extra}
}}

output "token_secret_name" {{
  value = mesh_remote_secret.c2_in_c1.token_secret_name
}}

output "kubeconfig_sha256" {{
  value = mesh_remote_secret.c2_in_c1.kubeconfig_sha256
}}

output "server" {{
  value = mesh_remote_secret.c2_in_c1.server
}}
"#
    )
}

/// The kubeconfig held by the target secret, as `kubectl config view` parses it.
struct Written {
    raw: String,
    json: Value,
}

impl Written {
    fn token(&self) -> String {
        self.json["users"][0]["user"]["token"]
            .as_str()
            .expect("bearer token")
            .to_string()
    }

    fn server(&self) -> &str {
        self.json["clusters"][0]["cluster"]["server"]
            .as_str()
            .unwrap()
    }
}

fn written(sim: &Clusters, ws: &Workspace) -> Written {
    let secret = sim
        .find(TARGET, "Secret", "istio-system", SECRET)
        .expect("remote secret in the target");
    let raw = secret_data(&secret, REMOTE).expect("data key named after the remote cluster");
    let path = ws.write_file("written-kubeconfig", &raw);
    let out = Command::new("kubectl")
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(&path)
        .output()
        .expect("kubectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&out.stdout).expect("kubeconfig as JSON");
    Written { raw, json }
}

/// HTTP status of a read in the remote cluster with `token` (200 valid, 401 revoked).
fn status_with_token(sim: &Clusters, ws: &Workspace, token: &str) -> u16 {
    status_in(sim, ws, REMOTE, token)
}

/// HTTP status of a read in `cluster` with `token`.
fn status_in(sim: &Clusters, ws: &Workspace, cluster: &str, token: &str) -> u16 {
    let ca = ws.write_file(&format!("{cluster}-ca.pem"), &sim.ca_pem(cluster));
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&ca)
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!(
            "{}/api/v1/namespaces/istio-system/pods",
            sim.url(cluster)
        ))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn sha256_of(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn plan_shows_changes(ws: &Workspace) -> String {
    let out = ws.run(&["plan", "-detailed-exitcode", "-no-color"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "drift not seen:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `wait_ms=N` from the provider's "token secret ... populated" log lines.
fn token_waits(log: &Path) -> Vec<u64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("populated"))
        .filter_map(|l| {
            let rest = &l[l.find("wait_ms=")? + "wait_ms=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn remote_secret_lifecycle() {
    if !enabled("remote_secret_lifecycle") {
        return;
    }
    let ws = Workspace::new("remote-secret");
    let log = ws.dir.join("provider.log");
    let ws = ws
        .env("TF_LOG_PROVIDER", "TRACE")
        .env("TF_LOG_PATH", log.to_str().unwrap());
    let sim = Clusters::start(&[TARGET, REMOTE], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    sim.kubectl(TARGET, &["create", "namespace", "istio-system"]);
    sim.kubectl(REMOTE, &["create", "namespace", "istio-system"]);
    ws.config(&config(&kc, "", ""));

    // Planning contacts neither cluster.
    sim.reset_requests(TARGET);
    sim.reset_requests(REMOTE);
    ws.ok(&["plan", "-no-color"]);
    assert_eq!(sim.requests(TARGET) + sim.requests(REMOTE), 0);

    let out = ws.apply();
    println!(
        "create: target {} requests ({}), remote {} requests ({})",
        sim.requests(TARGET),
        sim.request_breakdown(TARGET),
        sim.requests(REMOTE),
        sim.request_breakdown(REMOTE)
    );
    // kube-sim serves on 127.0.0.1: a warning, not an error.
    assert!(
        out.contains("Warning: The remote API server address is a loopback address"),
        "{out}"
    );
    assert!(out.contains("Apply complete! Resources: 1 added"), "{out}");
    // No control plane in the target: nothing reads the secret, so no wait for sync.
    assert!(
        out.contains("Warning: No istiod in the target cluster: not waiting for sync"),
        "{out}"
    );
    assert_eq!(
        sim.counters(TARGET)
            .counts
            .iter()
            .filter(|((_, r), _)| r == "pods/portforward")
            .count(),
        0
    );

    // The target secret, field by field.
    let secret = sim.find(TARGET, "Secret", "istio-system", SECRET).unwrap();
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["metadata"]["labels"]["istio/multiCluster"], "true");
    assert_eq!(
        secret["metadata"]["annotations"]["networking.istio.io/cluster"],
        REMOTE
    );
    assert_eq!(secret["data"].as_object().unwrap().len(), 1);
    let w = written(&sim, &ws);
    let kcj = &w.json;
    assert_eq!(kcj["current-context"], REMOTE);
    assert_eq!(kcj["clusters"].as_array().unwrap().len(), 1);
    assert_eq!(kcj["clusters"][0]["name"], REMOTE);
    assert_eq!(w.server(), sim.url(REMOTE));
    assert!(kcj["clusters"][0]["cluster"]
        .get("tls-server-name")
        .is_none());
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(
            kcj["clusters"][0]["cluster"]["certificate-authority-data"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(String::from_utf8(ca).unwrap(), sim.ca_pem(REMOTE));
    assert_eq!(kcj["contexts"][0]["name"], REMOTE);
    assert_eq!(kcj["contexts"][0]["context"]["cluster"], REMOTE);
    assert_eq!(kcj["contexts"][0]["context"]["user"], REMOTE);
    assert_eq!(kcj["users"][0]["name"], REMOTE);
    assert!(kcj["users"][0]["user"].get("exec").is_none());
    let token = w.token();

    // The kubeconfig works as istiod would use it: kubectl reads the remote with it.
    let kc_file = ws.write_file("written-kubeconfig", &w.raw);
    let pods = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc_file)
        .args(["get", "pods", "-A", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        pods.status.success(),
        "{}",
        String::from_utf8_lossy(&pods.stderr)
    );
    assert_eq!(status_with_token(&sim, &ws, &token), 200);

    // State: names and hash, never the kubeconfig or token.
    let token_secret = ws.output("token_secret_name").as_str().unwrap().to_string();
    assert_eq!(ws.output("server").as_str(), Some(sim.url(REMOTE).as_str()));
    assert_eq!(
        ws.output("kubeconfig_sha256").as_str(),
        Some(sha256_of(&kc_file).as_str())
    );
    let ts = sim
        .find(REMOTE, "Secret", "istio-system", &token_secret)
        .expect("token secret in the remote");
    assert_eq!(ts["type"], "kubernetes.io/service-account-token");
    assert_eq!(
        ts["metadata"]["annotations"]["kubernetes.io/service-account.name"],
        "istio-reader-service-account"
    );
    let state = std::fs::read_to_string(ws.dir.join("terraform.tfstate")).unwrap();
    assert!(!state.contains(&token), "token in state");
    assert!(
        !state.contains("certificate-authority-data"),
        "kubeconfig in state"
    );
    assert!(
        !std::fs::read_to_string(&log).unwrap().contains(&token),
        "token in the provider log"
    );
    let waits = token_waits(&log);
    println!("token population wait (ms): {waits:?}");
    ws.assert_empty_plan();

    // Drift 1: target secret deleted → repaired with the same token.
    sim.kubectl(TARGET, &["-n", "istio-system", "delete", "secret", SECRET]);
    plan_shows_changes(&ws);
    ws.apply();
    assert_eq!(written(&sim, &ws).token(), token);
    ws.assert_empty_plan();

    // Drift 2: label removed (istiod would no longer see it) and kubeconfig edited.
    sim.kubectl(
        TARGET,
        &[
            "-n",
            "istio-system",
            "label",
            "secret",
            SECRET,
            "istio/multiCluster-",
        ],
    );
    plan_shows_changes(&ws);
    ws.apply();
    let s = sim.find(TARGET, "Secret", "istio-system", SECRET).unwrap();
    assert_eq!(s["metadata"]["labels"]["istio/multiCluster"], "true");
    sim.kubectl(
        TARGET,
        &[
            "-n",
            "istio-system",
            "patch",
            "secret",
            SECRET,
            "-p",
            r#"{"data":{"c2":"ZWRpdGVk"}}"#,
        ],
    );
    plan_shows_changes(&ws);
    ws.apply();
    assert_eq!(written(&sim, &ws).token(), token);
    ws.assert_empty_plan();

    // Drift 3: the token secret deleted in the remote (token revoked) → a new one is minted.
    sim.kubectl(
        REMOTE,
        &["-n", "istio-system", "delete", "secret", &token_secret],
    );
    assert_eq!(status_with_token(&sim, &ws, &token), 401);
    let plan = plan_shows_changes(&ws);
    assert!(plan.contains("token_secret_name"), "{plan}");
    ws.apply();
    let token = written(&sim, &ws).token();
    assert_eq!(status_with_token(&sim, &ws, &token), 200);
    ws.assert_empty_plan();

    // The CA in the token secret changed (e.g. the remote's CA was rotated): rewritten.
    let other_ca = base64::engine::general_purpose::STANDARD.encode(sim.ca_pem(TARGET));
    sim.kubectl(
        REMOTE,
        &[
            "-n",
            "istio-system",
            "patch",
            "secret",
            &token_secret,
            "-p",
            &format!(r#"{{"data":{{"ca.crt":"{other_ca}"}}}}"#),
        ],
    );
    plan_shows_changes(&ws);
    ws.apply();
    let w = written(&sim, &ws);
    let ca_now = w.json["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ca_now, other_ca);
    assert_eq!(w.token(), token);
    ws.assert_empty_plan();

    // Server override: an in-place update, same token, no loopback warning.
    ws.config(&config(
        &kc,
        r#"server = "https://10.20.30.40:6443"
    tls_server_name = "api.c2.example""#,
        "",
    ));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(plan.contains("1 to change, 0 to destroy"), "{plan}");
    let out = ws.apply();
    assert!(!out.contains("loopback"), "{out}");
    let w = written(&sim, &ws);
    assert_eq!(w.server(), "https://10.20.30.40:6443");
    assert_eq!(
        w.json["clusters"][0]["cluster"]["tls-server-name"],
        "api.c2.example"
    );
    assert_eq!(w.token(), token);
    assert_eq!(
        ws.output("token_secret_name").as_str(),
        Some(token_secret.as_str())
    );
    ws.assert_empty_plan();
    ws.config(&config(&kc, "", ""));
    ws.apply();
    assert_eq!(written(&sim, &ws).server(), sim.url(REMOTE));

    // Rotation without a gap: while apply runs, every token seen in the target must
    // authenticate, unless the target moved on to another token meanwhile.
    let old_token = token;
    let old_secret = ws.output("token_secret_name").as_str().unwrap().to_string();
    ws.config(&config(&kc, "", r#"token_rotation = "2026-11""#));
    // Slow the writes down so the checks below see every step of the switch.
    let slow = |verb: &str| kube_sim::Fault {
        path: "*".into(),
        verb: Some(verb.into()),
        latency_ms: Some(300),
        ..Default::default()
    };
    sim.add_fault(TARGET, &slow("patch"));
    sim.add_fault(REMOTE, &slow("patch"));
    sim.add_fault(REMOTE, &slow("delete"));
    let apply = ws
        .command(&["apply", "-auto-approve", "-no-color"])
        .spawn()
        .unwrap();
    let mut apply = Some(apply);
    // Tokens in the order the checks saw them (repeats collapsed).
    let (mut checks, mut seen) = (0, Vec::<String>::new());
    loop {
        let done = apply.as_mut().unwrap().try_wait().unwrap().is_some();
        let before = written(&sim, &ws).token();
        let status = status_with_token(&sim, &ws, &before);
        let after = written(&sim, &ws).token();
        checks += 1;
        if seen.last() != Some(&before) {
            seen.push(before.clone());
        }
        assert!(
            status == 200 || before != after,
            "gap: the target held a token that did not authenticate ({status})"
        );
        if done {
            break;
        }
    }
    assert!(apply.take().unwrap().wait().unwrap().success());
    sim.clear_faults(TARGET);
    sim.clear_faults(REMOTE);
    let new_token = written(&sim, &ws).token();
    let new_secret = ws.output("token_secret_name").as_str().unwrap().to_string();
    println!(
        "rotation: {checks} checks, {} tokens seen in turn",
        seen.len()
    );
    assert_ne!(new_token, old_token);
    assert_ne!(new_secret, old_secret);
    // The loop saw the switch happen: several checks, the old token first, the new one last.
    assert!(checks > 1, "only {checks} check ran during the rotation");
    assert_eq!(
        seen.first(),
        Some(&old_token),
        "the first check did not see the old token"
    );
    assert_eq!(
        seen.last(),
        Some(&new_token),
        "the last check did not see the new token"
    );
    assert_eq!(seen.len(), 2, "tokens seen: {}", seen.len());
    assert_eq!(status_with_token(&sim, &ws, &new_token), 200);
    assert_eq!(status_with_token(&sim, &ws, &old_token), 401);
    assert!(sim
        .find(REMOTE, "Secret", "istio-system", &old_secret)
        .is_none());
    ws.assert_empty_plan();

    // verify_token: a token secret whose token no longer authenticates is replaced.
    ws.config(&config(
        &kc,
        "",
        "token_rotation = \"2026-11\"\n  verify_token = true",
    ));
    ws.apply();
    ws.assert_empty_plan();
    sim.kubectl(
        REMOTE,
        &[
            "-n",
            "istio-system",
            "patch",
            "secret",
            &new_secret,
            "-p",
            r#"{"data":{"token":"Ym9ndXM="}}"#,
        ],
    );
    assert_eq!(status_with_token(&sim, &ws, &new_token), 401);
    plan_shows_changes(&ws);
    ws.apply();
    let token = written(&sim, &ws).token();
    assert_ne!(token, new_token);
    assert_eq!(status_with_token(&sim, &ws, &token), 200);
    ws.assert_empty_plan();

    // Destroy: secret gone from the target, token revoked, nothing of ours anywhere.
    sim.reset_requests(TARGET);
    sim.reset_requests(REMOTE);
    ws.destroy();
    println!(
        "destroy: target {} requests ({}), remote {} requests ({})",
        sim.requests(TARGET),
        sim.request_breakdown(TARGET),
        sim.requests(REMOTE),
        sim.request_breakdown(REMOTE)
    );
    assert!(sim.find(TARGET, "Secret", "istio-system", SECRET).is_none());
    assert_eq!(status_with_token(&sim, &ws, &token), 401);
    assert_eq!(sim.ours(TARGET), Vec::<String>::new());
    assert_eq!(sim.ours(REMOTE), Vec::<String>::new());
    assert!(sim
        .find(
            REMOTE,
            "ServiceAccount",
            "istio-system",
            "istio-reader-service-account"
        )
        .is_none());
    println!(
        "token population waits over the scenario (ms): {:?}",
        token_waits(&log)
    );
}

#[test]
fn remote_secret_refuses_what_cannot_work() {
    if !enabled("remote_secret_refuses_what_cannot_work") {
        return;
    }
    let ws = Workspace::new("remote-secret-refuse");
    let sim = Clusters::start(&[TARGET, REMOTE], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    sim.kubectl(TARGET, &["create", "namespace", "istio-system"]);
    sim.kubectl(REMOTE, &["create", "namespace", "istio-system"]);

    // Static checks at plan: bad cluster name, the same cluster on both sides.
    ws.config(&format!(
        r#"
resource "mesh_remote_secret" "bad" {{
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  remote {{
    cluster_name = "C2_bad"
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{TARGET}"
    }}
  }}
}}
"#
    ));
    let out = ws.run(&["plan", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Invalid cluster_name") && err.contains("DNS-1123"),
        "{err}"
    );
    assert!(
        err.contains("Remote and target are the same cluster"),
        "{err}"
    );

    // The same cluster through another context (client certificate): caught at apply,
    // before anything is written.
    ws.config(&format!(
        r#"
resource "mesh_remote_secret" "same" {{
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  remote {{
    cluster_name = "c1"
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{TARGET}-cert"
    }}
  }}
}}
"#
    ));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Remote and target are the same cluster"),
        "{err}"
    );

    // No reader ServiceAccount and create_service_account unset: a clear error.
    ws.config(&format!(
        r#"
resource "mesh_remote_secret" "early" {{
  timeouts {{
    delete = "5s"
  }}
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{TARGET}"
  }}
  remote {{
    cluster_name = "{REMOTE}"
    kubernetes {{
      config_path    = "{kc}"
      config_context = "{REMOTE}"
    }}
  }}
}}
"#
    ));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("istio-reader-service-account") && err.contains("not installed"),
        "{err}"
    );
    assert_eq!(sim.ours(TARGET), Vec::<String>::new());
    assert_eq!(sim.ours(REMOTE), Vec::<String>::new());

    // With the ServiceAccount installed (as Istio's base chart does), it is found and used.
    sim.kubectl(
        REMOTE,
        &[
            "-n",
            "istio-system",
            "create",
            "serviceaccount",
            "istio-reader-service-account",
        ],
    );
    sim.reset_requests(TARGET);
    sim.reset_requests(REMOTE);
    ws.apply();
    println!(
        "create with an existing ServiceAccount: target {} requests ({}), remote {} requests ({})",
        sim.requests(TARGET),
        sim.request_breakdown(TARGET),
        sim.requests(REMOTE),
        sim.request_breakdown(REMOTE)
    );
    ws.assert_empty_plan();

    // Destroy with the remote unreachable: the target secret goes, the rest is a warning.
    sim.add_fault(
        REMOTE,
        &kube_sim::Fault {
            path: "*".into(),
            drop: Some(true),
            ..Default::default()
        },
    );
    let out = ws.run(&["destroy", "-auto-approve", "-no-color"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("token not revoked"), "{stdout}");
    assert!(sim.find(TARGET, "Secret", "istio-system", SECRET).is_none());
    assert!(ws.state_list().is_empty());
    sim.clear_faults(REMOTE);
    // The SA was not ours: it stays; our token secret is what the warning names.
    assert!(sim
        .find(
            REMOTE,
            "ServiceAccount",
            "istio-system",
            "istio-reader-service-account"
        )
        .is_some());
}

#[test]
fn two_targets_get_their_own_token_and_share_the_reader() {
    if !enabled_on_one_client("two_targets_get_their_own_token_and_share_the_reader") {
        return;
    }
    let ws = Workspace::new("remote-secret-two-targets");
    let sim = Clusters::start(&["c1", "c2", "c3"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    for c in ["c1", "c2", "c3"] {
        sim.kubectl(c, &["create", "namespace", "istio-system"]);
    }
    let one = |target: &str| {
        format!(
            r#"
resource "mesh_remote_secret" "c2_in_{target}" {{
  kubernetes {{
    config_path    = "{kc}"
    config_context = "{target}"
  }}
  remote {{
    cluster_name           = "c2"
    create_service_account = true
    kubernetes {{
      config_path    = "{kc}"
      config_context = "c2"
    }}
  }}
}}

output "token_{target}" {{
  value = mesh_remote_secret.c2_in_{target}.token_secret_name
}}
"#
        )
    };
    ws.config(&format!("{}{}", one("c1"), one("c3")));
    ws.apply();
    ws.assert_empty_plan();
    let (t1, t3) = (ws.output("token_c1"), ws.output("token_c3"));
    assert_ne!(t1, t3, "two targets share a token secret");
    let token_in = |target: &str| {
        let s = sim
            .find(target, "Secret", "istio-system", SECRET)
            .expect("remote secret");
        let raw = secret_data(&s, REMOTE).unwrap();
        raw.lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .map(|t| t.trim_matches('"').to_string())
            .expect("token line")
    };
    let (k1, k3) = (token_in("c1"), token_in("c3"));
    assert_ne!(k1, k3);
    assert_eq!(status_with_token(&sim, &ws, &k1), 200);
    assert_eq!(status_with_token(&sim, &ws, &k3), 200);

    // Removing one target revokes its token only; the shared reader stays for the other.
    ws.config(&one("c3"));
    ws.apply();
    assert_eq!(status_with_token(&sim, &ws, &k1), 401);
    assert_eq!(status_with_token(&sim, &ws, &k3), 200);
    assert!(sim.find("c1", "Secret", "istio-system", SECRET).is_none());
    ws.assert_empty_plan();

    // The last one removes the reader it shared.
    ws.destroy();
    assert_eq!(status_with_token(&sim, &ws, &k3), 401);
    for c in ["c1", "c2", "c3"] {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "{c}");
    }
}

/// The remote connection pointed at another cluster (same `cluster_name`): one in-place
/// update whose planned server matches what apply finds, the token minted in the new remote,
/// and the old remote's token and reader objects removed.
#[test]
fn retargeting_the_remote_moves_the_token() {
    if !enabled_on_one_client("retargeting_the_remote_moves_the_token") {
        return;
    }
    let ws = Workspace::new("remote-secret-retarget");
    let sim = Clusters::start(&["c1", "c2", "c3"], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    for c in ["c1", "c2", "c3"] {
        sim.kubectl(c, &["create", "namespace", "istio-system"]);
    }
    let config_for = |remote_context: &str| {
        config(&kc, "", "").replace(
            &format!("config_context = \"{REMOTE}\""),
            &format!("config_context = \"{remote_context}\""),
        )
    };
    ws.config(&config_for("c2"));
    ws.apply();
    let old_token = written(&sim, &ws).token();
    assert_eq!(status_in(&sim, &ws, "c2", &old_token), 200);
    assert_eq!(ws.output("server").as_str(), Some(sim.url("c2").as_str()));

    ws.config(&config_for("c3"));
    let plan = ws.ok(&["plan", "-no-color"]);
    assert!(
        plan.contains("Plan: 0 to add, 1 to change, 0 to destroy"),
        "{plan}"
    );
    // Where the server comes from the remote's kubeconfig, the plan cannot know it yet.
    assert!(
        plan.contains("server") && plan.contains("(known after apply)"),
        "{plan}"
    );
    let out = ws.apply();
    assert!(out.contains("Apply complete!"), "{out}");
    ws.assert_empty_plan();

    let now = written(&sim, &ws);
    assert_eq!(now.server(), sim.url("c3"));
    assert_eq!(ws.output("server").as_str(), Some(sim.url("c3").as_str()));
    assert_eq!(status_in(&sim, &ws, "c3", &now.token()), 200);
    // The old remote holds nothing of ours any more, and its token is revoked.
    assert_eq!(status_in(&sim, &ws, "c2", &old_token), 401);
    assert_eq!(sim.ours("c2"), Vec::<String>::new());

    ws.destroy();
    for c in ["c1", "c2", "c3"] {
        assert_eq!(sim.ours(c), Vec::<String>::new(), "{c} not clean");
    }
}

/// A create that fails after making objects in the remote (the token is never populated)
/// keeps a partial state: destroy removes the reader ServiceAccount, its RBAC and the token
/// secret instead of forgetting them.
#[test]
fn failed_create_is_destroyed_without_leftovers() {
    if !enabled("failed_create_is_destroyed_without_leftovers") {
        return;
    }
    let ws = Workspace::new("remote-secret-failed-create");
    let sim = Clusters::start(&[TARGET, REMOTE], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    sim.kubectl(TARGET, &["create", "namespace", "istio-system"]);
    sim.kubectl(REMOTE, &["create", "namespace", "istio-system"]);
    sim.settings(REMOTE, serde_json::json!({"tokens": {"enabled": false}}));
    ws.config(&config(&kc, "", "timeouts {\n    create = \"2s\"\n  }"));
    let out = ws.run(&["apply", "-auto-approve", "-no-color"]);
    assert!(!out.status.success());
    let made = sim.ours(REMOTE);
    assert!(
        made.iter().any(|o| o.starts_with("ServiceAccount/"))
            && made.iter().any(|o| o.starts_with("Secret/")),
        "nothing made in the remote: {made:?}"
    );
    // Terraform holds the failed instance (tainted), so destroy has something to remove.
    assert_eq!(ws.state_list(), ["mesh_remote_secret.c2_in_c1"]);
    ws.destroy();
    assert_eq!(sim.ours(REMOTE), Vec::<String>::new());
    assert_eq!(sim.ours(TARGET), Vec::<String>::new());
}

/// Two `mesh_cluster`s and the secret between them, whose connections are `kubernetes` blocks
/// (`blocks = true`) or the clusters' `connection` outputs.
fn connection_config(kc: &str, blocks: bool) -> String {
    // The remote's connection string sits beside `connection`; its block inside `remote`.
    let (target, remote) = if blocks {
        (
            format!("kubernetes {{\n    config_path    = \"{kc}\"\n    config_context = \"{TARGET}\"\n  }}"),
            format!("kubernetes {{\n      config_path    = \"{kc}\"\n      config_context = \"{REMOTE}\"\n    }}"),
        )
    } else {
        (
            format!("connection = mesh_cluster.{TARGET}.connection"),
            format!("remote_connection = mesh_cluster.{REMOTE}.connection"),
        )
    };
    // Without blocks, the remote's mesh_cluster takes its connection as a string too.
    let cluster = |name: &str| {
        let connection = if !blocks && name == REMOTE {
            format!("connection = jsonencode({{ config_path = \"{kc}\", config_context = \"{name}\" }})")
        } else {
            format!("kubernetes {{\n    config_path    = \"{kc}\"\n    config_context = \"{name}\"\n  }}")
        };
        format!(
            r#"
resource "mesh_cluster" "{name}" {{
  cluster_name = "{name}"
  mesh_id      = "mesh1"
  network      = "net1"
  {connection}
}}
"#
        )
    };
    let (remote_top, remote_block) = if blocks {
        (String::new(), remote)
    } else {
        (remote, String::new())
    };
    format!(
        r#"{}{}
resource "mesh_remote_secret" "c2_in_c1" {{
  namespace = mesh_cluster.{TARGET}.namespace
  {target}
  {remote_top}
  remote {{
    cluster_name           = mesh_cluster.{REMOTE}.cluster_name
    create_service_account = true
    {remote_block}
  }}
}}

output "token_secret_name" {{
  value = mesh_remote_secret.c2_in_c1.token_secret_name
}}

output "kubeconfig_sha256" {{
  value = mesh_remote_secret.c2_in_c1.kubeconfig_sha256
}}

output "target_connection" {{
  value     = mesh_cluster.{TARGET}.connection
  sensitive = true
}}
"#,
        cluster(TARGET),
        cluster(REMOTE),
    )
}

/// `connection = mesh_cluster.x.connection` in place of the blocks: an in-place update that
/// mints nothing and rewrites nothing; a state written before `connection` existed re-plans
/// empty; a bad or doubled connection fails the plan naming the attribute.
#[test]
fn connection_outputs_replace_blocks_in_place() {
    if !enabled("connection_outputs_replace_blocks_in_place") {
        return;
    }
    let ws = Workspace::new("remote-secret-connection");
    let sim = Clusters::start(&[TARGET, REMOTE], &ws.dir);
    let kc = sim.kubeconfig.display().to_string();
    ws.config(&connection_config(&kc, true));
    ws.apply();
    let before = ws.outputs();
    let token = written(&sim, &ws).token();
    assert_eq!(status_with_token(&sim, &ws, &token), 200);
    // The cluster's output is its block as the JSON the argument takes.
    let conn: Value =
        serde_json::from_str(before["target_connection"]["value"].as_str().unwrap()).unwrap();
    assert_eq!(
        conn,
        serde_json::json!({"config_path": kc, "config_context": TARGET})
    );

    ws.config(&connection_config(&kc, false));
    let plan = plan_shows_changes(&ws);
    for updated in [
        "mesh_remote_secret.c2_in_c1",
        &format!("mesh_cluster.{REMOTE}"),
    ] {
        assert!(
            plan.contains(&format!("{updated} will be updated in-place")),
            "{plan}"
        );
    }
    assert!(!plan.contains("must be replaced"), "{plan}");
    assert!(
        plan.contains("Plan: 0 to add, 2 to change, 0 to destroy."),
        "{plan}"
    );
    ws.apply();
    let after = ws.outputs();
    assert_eq!(after["token_secret_name"], before["token_secret_name"]);
    assert_eq!(after["kubeconfig_sha256"], before["kubeconfig_sha256"]);
    assert_eq!(written(&sim, &ws).token(), token);
    // The cluster given its connection as a string keeps it as given and holds no block.
    let state: Value =
        serde_json::from_slice(&std::fs::read(ws.dir.join("terraform.tfstate")).unwrap()).unwrap();
    let remote_cluster = state["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "mesh_cluster" && r["name"] == REMOTE)
        .unwrap();
    let attrs = &remote_cluster["instances"][0]["attributes"];
    assert_eq!(attrs["kubernetes"], serde_json::json!([]));
    let given: Value = serde_json::from_str(attrs["connection"].as_str().unwrap()).unwrap();
    assert_eq!(
        given,
        serde_json::json!({"config_path": kc, "config_context": REMOTE})
    );
    ws.assert_empty_plan();

    // State from before the attribute existed (so from a cluster with its block): refresh
    // fills it in, the plan stays empty.
    let path = ws.dir.join("terraform.tfstate");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut removed = 0;
    for r in state["resources"].as_array_mut().unwrap() {
        if r["type"] == "mesh_cluster" && r["name"] == TARGET {
            for i in r["instances"].as_array_mut().unwrap() {
                let attrs = i["attributes"].as_object_mut().unwrap();
                removed += usize::from(attrs.remove("connection").is_some());
            }
        }
    }
    assert_eq!(removed, 1);
    state["serial"] = serde_json::json!(state["serial"].as_u64().unwrap() + 1);
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    ws.assert_empty_plan();

    // Bad input fails the plan on the attribute.
    let good = connection_config(&kc, false);
    for (bad, want) in [
        (
            good.replace(
                &format!("remote_connection = mesh_cluster.{REMOTE}.connection"),
                "remote_connection = \"{\\\"config_context\\\": 1}\"",
            ),
            "`config_context` must be a string",
        ),
        (
            good.replace(
                &format!("connection = mesh_cluster.{TARGET}.connection"),
                &format!("connection = mesh_cluster.{TARGET}.connection\n  kubernetes {{\n    config_context = \"{TARGET}\"\n  }}"),
            ),
            "Conflicting connection settings",
        ),
    ] {
        ws.config(&bad);
        let out = ws.run(&["plan", "-no-color"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
        assert!(err.contains("connection ="), "the diagnostic points at the attribute: {err}");
    }

    ws.config(&good);
    ws.destroy();
    assert_eq!(status_with_token(&sim, &ws, &token), 401);
    assert!(sim.find(TARGET, "Secret", "istio-system", SECRET).is_none());
}
