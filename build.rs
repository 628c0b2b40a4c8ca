//! Generates the gRPC code for the plugin protocol from `proto/` with a pure-Rust protobuf
//! compiler (protox), so a fresh machine builds with cargo alone: no system `protoc`. Also
//! records the commit being built (`MESH_BUILD_COMMIT`) for `--version` and the start-up log.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    record_commit();
    let protos = [
        "proto/tfplugin6.proto",
        "proto/go_plugin.proto",
        "proto/health.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    // The client half is generated too: the protocol tests drive the server exactly as
    // Terraform does, through a real gRPC client.
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Sets `MESH_BUILD_COMMIT` to the checked-out commit, or "unknown" outside a git checkout
/// (a source tarball) or without git; a packager may set `MESH_BUILD_COMMIT` itself. A
/// rebuild follows a new commit or checkout.
fn record_commit() {
    let commit = std::env::var("MESH_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MESH_BUILD_COMMIT={commit}");
    // HEAD names the branch; the branch's ref (loose or packed) names the commit. Only
    // existing paths are watched: a missing one would rerun this script on every build.
    let mut watched: Vec<PathBuf> = Vec::new();
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(Path::new(&git_dir).join("HEAD"));
    }
    if let (Some(common), Some(head_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"]),
    ) {
        watched.push(Path::new(&common).join(&head_ref));
        watched.push(Path::new(&common).join("packed-refs"));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-env-changed=MESH_BUILD_COMMIT");
}

/// The trimmed stdout of a successful `git <args>` run in the crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
