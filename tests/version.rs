//! `terraform-provider-mesh --version`, and the version in the provider's start-up log.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_terraform-provider-mesh");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The commit build.rs should have recorded: HEAD of this checkout, "unknown" outside git.
fn expected_commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

#[test]
fn version_flag_prints_version_protocol_and_commit() {
    for flag in ["--version", "-version"] {
        // No magic cookie: --version works when a person runs the binary.
        let out = Command::new(BIN)
            .arg(flag)
            .env_remove("TF_PLUGIN_MAGIC_COOKIE")
            .output()
            .unwrap();
        assert!(out.status.success(), "{flag}: {out:?}");
        assert!(out.stderr.is_empty(), "{flag}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(format!("terraform-provider-mesh v{VERSION}").as_str()),
            "{stdout}"
        );
        assert!(
            lines.iter().any(|l| l.starts_with("plugin protocol 6.0")),
            "{stdout}"
        );
        assert_eq!(
            lines.last().copied(),
            Some(format!("commit {}", expected_commit()).as_str()),
            "{stdout}"
        );
    }
}

/// Started as Terraform starts it (cookie, protocol 6, TF_LOG), the provider logs its version
/// and commit when it starts serving.
#[test]
fn startup_log_names_version_and_commit() {
    let mut child = Command::new(BIN)
        .env(
            "TF_PLUGIN_MAGIC_COOKIE",
            "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2",
        )
        .env("PLUGIN_PROTOCOL_VERSIONS", "6")
        .env("TF_LOG_PROVIDER", "INFO")
        .env_remove("PLUGIN_CLIENT_CERT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut serving = None;
    // Bounded: the line comes right after the handshake, well within the limit.
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let entry: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if entry["@message"] == "provider serving" {
            serving = Some(entry);
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let entry = serving.expect("no \"provider serving\" line on stderr");
    assert_eq!(entry["@level"], "info", "{entry}");
    assert_eq!(entry["version"], VERSION, "{entry}");
    assert_eq!(entry["commit"], expected_commit().as_str(), "{entry}");
}
